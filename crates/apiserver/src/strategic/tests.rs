use serde_json::{json, Value};

use super::{apply, error_code};

fn deploy(original: Value, patch: Value) -> Value {
    apply("apps", "v1", "Deployment", &original, &patch).unwrap()
}

fn pod(original: Value, patch: Value) -> Value {
    apply("", "v1", "Pod", &original, &patch).unwrap()
}

fn pod_err(original: Value, patch: Value) -> String {
    apply("", "v1", "Pod", &original, &patch).unwrap_err()
}

/// A Pod whose spec has these containers.
fn with_containers(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

fn names(list: &Value, key: &str) -> Vec<Value> {
    list.as_array().unwrap().iter().map(|v| v[key].clone()).collect()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.0", "ports": [{"containerPort": 80}],
                         "env": [{"name": "A", "value": "1"}]},
                        {"name": "sidecar", "image": "busybox", "args": ["sleep", "1d"]},
                    ],
                    "tolerations": [{"key": "k1", "operator": "Exists"}],
                }
            }
        }
    })
}

#[test]
fn deployment_image_change_merges_containers_by_name() {
    // What `kubectl set image deployment/web web=nginx:1.1` sends.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.1"}]}}}});
    let out = deploy(deployment(), patch);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers, "name"), [json!("web"), json!("sidecar")]);
    assert_eq!(containers[0]["image"], "nginx:1.1");
    assert_eq!(containers[0]["ports"], json!([{"containerPort": 80}]));
    assert_eq!(containers[1]["image"], "busybox");
    assert_eq!(out["spec"]["replicas"], 2);
}

#[test]
fn env_var_add_with_and_without_set_element_order() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"name": "web", "$setElementOrder/env": [{"name": "A"}, {"name": "B"}], "env": [{"name": "B", "value": "2"}]}],
    }}}});
    let out = deploy(deployment(), patch);
    let c = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(c[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    assert_eq!(names(c, "name"), [json!("web"), json!("sidecar")]);
    // Without the directive upstream puts a new item before the original's.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}});
    let out = deploy(deployment(), patch);
    assert_eq!(names(&out["spec"]["template"]["spec"]["containers"][0]["env"], "name"), [json!("B"), json!("A")]);
}

#[test]
fn port_add_merges_by_container_port() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web",
        "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
        "ports": [{"containerPort": 443, "name": "https"}]}]}}}});
    let out = deploy(deployment(), patch);
    let ports = &out["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports, &json!([{"containerPort": 80}, {"containerPort": 443, "name": "https"}]));
    // Changing a field of an existing port.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80, "name": "http"}]}]}}}});
    let out = deploy(deployment(), patch);
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["ports"], json!([{"containerPort": 80, "name": "http"}]));
}

#[test]
fn patch_delete_removes_a_container() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [{"name": "sidecar", "$patch": "delete"}],
    }}}});
    let out = deploy(deployment(), patch);
    assert_eq!(names(&out["spec"]["template"]["spec"]["containers"], "name"), [json!("web")]);
    let err = pod_err(with_containers(json!([{"name": "a"}])), json!({"spec": {"containers": [{"$patch": "delete"}]}}));
    assert_eq!(err, "map: map[$patch:delete] does not contain declared merge key: name");
}

#[test]
fn finalizers_merge_as_a_set() {
    let out = deploy(deployment(), json!({"metadata": {"finalizers": ["c", "a"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = deploy(deployment(), json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
    // Deleting from a list the object lacks changes nothing.
    let out = deploy(json!({"metadata": {"name": "x"}}), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}));
    assert_eq!(out, json!({"metadata": {"name": "x"}}));
    let err = apply("apps", "v1", "Deployment", &deployment(), &json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}));
    assert_eq!(err.unwrap_err(), "invalid patch format of primitive list");
}

#[test]
fn null_removes_a_label_and_maps_merge() {
    let out = deploy(deployment(), json!({"metadata": {"labels": {"tier": null, "new": "x"}}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
    // `kubectl rollout restart`: an annotation on the pod template.
    let at = "kubectl.kubernetes.io/restartedAt";
    let out = deploy(deployment(), json!({"spec": {"template": {"metadata": {"annotations": {at: "2025-01-01T00:00:00Z"}}}}}));
    assert_eq!(out["spec"]["template"]["metadata"], json!({"labels": {"app": "web"}, "annotations": {at: "2025-01-01T00:00:00Z"}}));
    // Nulls for keys the original lacks vanish, also in new maps.
    let out = deploy(json!({"metadata": {"name": "x"}}), json!({"metadata": {"labels": {"a": null, "b": "1"}, "annotations": null}}));
    assert_eq!(out, json!({"metadata": {"name": "x", "labels": {"b": "1"}}}));
}

#[test]
fn atomic_and_unknown_lists_are_replaced() {
    let patch = json!({"spec": {"template": {"spec": {
        "tolerations": [{"key": "k2", "operator": "Exists"}],
        "containers": [{"name": "sidecar", "args": ["sleep", "2d"]}],
    }}}});
    let out = deploy(deployment(), patch);
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(spec["tolerations"], json!([{"key": "k2", "operator": "Exists"}]));
    assert_eq!(spec["containers"][1]["args"], json!(["sleep", "2d"]));
    // Fields the schema does not know: maps merge, lists are replaced.
    let orig = json!({"spec": {"extra": {"a": 1, "list": [{"name": "x", "v": 1}]}}});
    let out = deploy(orig, json!({"spec": {"extra": {"b": 2, "list": [{"name": "y"}]}}}));
    assert_eq!(out["spec"]["extra"], json!({"a": 1, "list": [{"name": "y"}], "b": 2}));
    // A kind without a schema merges the same way.
    let out = apply("example.com", "v1", "Widget", &json!({"spec": {"l": [1, 2], "m": {"a": 1}}}), &json!({"spec": {"l": [3], "m": {"b": 2}}}));
    assert_eq!(out.unwrap(), json!({"spec": {"l": [3], "m": {"a": 1, "b": 2}}}));
}

#[test]
fn retain_keys_clears_the_other_union_members() {
    // `kubectl apply` switching the strategy from RollingUpdate to Recreate.
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let out = deploy(deployment(), patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // Upstream's documented example: fields not listed are cleared.
    let orig = json!({"spec": {"strategy": {"foo": "a", "other": "b"}}});
    let out = deploy(orig, json!({"spec": {"strategy": {"$retainKeys": ["another", "bar"], "another": "d", "bar": "c"}}}));
    assert_eq!(out["spec"]["strategy"], json!({"another": "d", "bar": "c"}));
    // On the elements of a merge,retainKeys list (volumes).
    let orig = json!({"spec": {"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]}});
    let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}}]}});
    assert_eq!(pod(orig, patch)["spec"]["volumes"], json!([{"name": "v", "configMap": {"name": "cm"}}]));
    // A patched key must be listed.
    let err = apply("apps", "v1", "Deployment", &deployment(), &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}));
    assert_eq!(err.unwrap_err(), "invalid patch format of retainKeys");
    let err = apply("apps", "v1", "Deployment", &deployment(), &json!({"spec": {"strategy": {"$retainKeys": "type"}}}));
    assert_eq!(err.unwrap_err(), "invalid patch format of retainKeys");
}

#[test]
fn set_element_order_upstream_examples() {
    // Items the directive lists but the list lacks are ignored.
    let out = pod(
        with_containers(json!([{"name": "1"}, {"name": "3"}])),
        json!({"spec": {"$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
                        "containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]}}),
    );
    assert_eq!(out["spec"]["containers"], json!([{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]));
    // Reordering only, of a primitive list.
    let orig = json!({"metadata": {"finalizers": ["1", "3"]}, "spec": {}});
    let out = pod(orig, json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["3", "1"]));
    // The patch list must follow the directive's order.
    let err = pod_err(
        with_containers(json!([{"name": "1"}, {"name": "3"}, {"name": "2"}])),
        json!({"spec": {"$setElementOrder/containers": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
                        "containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]}}),
    );
    assert!(err.contains("doesn't match $setElementOrder list"), "{err}");
    // Merge lists of maps: new items placed where the directive says.
    let out = pod(
        with_containers(json!([{"name": "1", "other": "a"}, {"name": "2", "image": "2", "other": "b"}])),
        json!({"spec": {"$setElementOrder/containers": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                        "containers": [{"name": "4", "image": "4"}, {"name": "3", "image": "3"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"], "name"), [json!("4"), json!("1"), json!("2"), json!("3")]);
    assert_eq!(out["spec"]["containers"][1], json!({"name": "1", "other": "a"}));
    // Delete and reorder in one list, reorder in another.
    let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "c"}, {"name": "d"}]}});
    let out = pod(orig, json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}],
        "$setElementOrder/initContainers": [{"name": "d"}, {"name": "c"}],
        "containers": [{"$patch": "delete", "name": "a"}],
    }}));
    assert_eq!(out["spec"], json!({"containers": [{"name": "b"}], "initContainers": [{"name": "d"}, {"name": "c"}]}));
}

#[test]
fn set_element_order_interleaves_server_only_items() {
    // The design proposal's env example (the reference implementation's
    // interleaving: server-only items keep their places relative to the
    // original items of the patch).
    let env = |names: &[&str]| Value::Array(names.iter().map(|n| json!({"name": n})).collect());
    let orig = with_containers(json!([{"name": "c", "env": env(&["ENV2", "ENV5", "ENV1", "ENV3", "ENV4"])}]));
    let out = pod(orig, json!({"spec": {"containers": [{"name": "c",
        "$setElementOrder/env": env(&["ENV1", "ENV2", "ENV6"]),
        "env": [{"name": "ENV3", "$patch": "delete"}, {"name": "ENV6", "value": "new"}]}]}}));
    let got = names(&out["spec"]["containers"][0]["env"], "name");
    assert_eq!(got, ["ENV5", "ENV1", "ENV2", "ENV6", "ENV4"].map(|n| json!(n)));
    // The finalizers example.
    let orig = json!({"metadata": {"finalizers": ["b", "e", "a", "c", "d"]}});
    let out = pod(orig, json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "f"],
        "$deleteFromPrimitiveList/finalizers": ["c"], "finalizers": ["f"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["e", "a", "b", "f", "d"]));
    // Without the directive the patch's order wins, server-only items first.
    let orig = with_containers(json!([{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]));
    let out = pod(orig, json!({"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"}]}}));
    assert_eq!(names(&out["spec"]["containers"], "name"), [json!("2"), json!("3"), json!("1")]);
    let out = pod(json!({"metadata": {"finalizers": ["1", "2", "3"]}}), json!({"metadata": {"finalizers": ["3", "1"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["2", "3", "1"]));
}

#[test]
fn patch_replace_and_delete_directives() {
    // `$patch: replace` in a merge list: the list becomes the patch's items.
    let orig = with_containers(json!([{"name": "a", "image": "x"}, {"name": "b"}]));
    let out = pod(orig.clone(), json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}));
    assert_eq!(out["spec"]["containers"], json!([{"name": "c"}]));
    let out = pod(orig.clone(), json!({"spec": {"containers": [{"$patch": "replace"}]}}));
    assert_eq!(out["spec"]["containers"], json!([]));
    // On a map: the map becomes the patch's content.
    let out = deploy(deployment(), json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}}));
    assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
    // `$patch: delete` on a map empties it.
    let out = deploy(deployment(), json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}));
    assert_eq!(out["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {}}));
    // `$patch: merge` is the default on a map, an error in a list.
    let out = deploy(deployment(), json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "tier": "front", "x": "y"}));
    let err = pod_err(orig.clone(), json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}));
    assert_eq!(err, "merging lists cannot yet be specified in the patch");
    let err = pod_err(orig, json!({"spec": {"$patch": "bogus"}}));
    assert_eq!(err, "unknown patch type: bogus in map: map[$patch:bogus]");
    // Deleting duplicates deletes every match.
    let orig = with_containers(json!([{"name": "1"}, {"name": "1"}, {"name": "2", "image": "a"}]));
    let out = pod(orig, json!({"spec": {"containers": [{"name": "1", "$patch": "delete"}]}}));
    assert_eq!(out["spec"]["containers"], json!([{"name": "2", "image": "a"}]));
}

#[test]
fn merge_key_errors_and_odd_input() {
    let err = pod_err(with_containers(json!([{"name": "1", "image": "a"}])), json!({"spec": {"containers": [{"image": "b"}]}}));
    assert_eq!(err, "map: map[image:b] does not contain declared merge key: name");
    let err = pod_err(with_containers(json!([{"name": "1"}])), json!({"spec": {"containers": ["x"]}}));
    assert!(err.starts_with("list element types are not identical"), "{err}");
    let err = apply("", "v1", "Pod", &with_containers(json!([])), &json!([1])).unwrap_err();
    assert_eq!(err, "json: cannot unmarshal array into Go value of type map[string]interface {}");
    let err = pod_err(with_containers(json!([])), json!({"spec": {"$setElementOrder/containers": {"name": "x"}}}));
    assert_eq!(err, "expected a []interface {}, but received a map[string]interface {}");
    assert_eq!(error_code(&err), 500);
    assert_eq!(error_code("invalid patch format of retainKeys"), 400);
    let err = pod_err(with_containers(json!([])), json!({"spec": {"containers": [["x"]]}}));
    assert_eq!((err.as_str(), error_code(&err)), ("lists of lists are not supported", 422));
    // A null patch changes nothing; so does an empty one.
    let orig = with_containers(json!([{"name": "a"}]));
    assert_eq!(pod(orig.clone(), Value::Null), orig);
    assert_eq!(pod(orig.clone(), json!({})), orig);
}

#[test]
fn service_ports_merge_by_port_and_selector_merges() {
    let orig = json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    let patch = json!({"spec": {"selector": {"tier": "b"}, "ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}});
    let out = apply("", "v1", "Service", &orig, &patch).unwrap();
    assert_eq!(out["spec"]["ports"], json!([{"port": 80, "targetPort": 9090}, {"port": 443}]));
    assert_eq!(out["spec"]["selector"], json!({"app": "a", "tier": "b"}));
    // A replace-strategy map (PodDisruptionBudget's selector) is replaced.
    let orig = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let out = apply("policy", "v1", "PodDisruptionBudget", &orig, &json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}));
    assert_eq!(out.unwrap()["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
}

#[test]
fn kubectl_apply_update_patch() {
    // The shape of a client-side apply update: new image, one env var
    // removed, a container added, the annotation refreshed.
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}, {"name": "log"}],
            "containers": [
                {"name": "web", "image": "nginx:1.27", "$setElementOrder/env": [{"name": "C"}],
                 "env": [{"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}]},
                {"name": "log", "image": "fluentbit"},
            ],
        }}},
    });
    let out = deploy(deployment(), patch);
    let c = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(c, "name"), [json!("web"), json!("sidecar"), json!("log")]);
    assert_eq!(c[0]["image"], "nginx:1.27");
    assert_eq!(c[0]["env"], json!([{"name": "C", "value": "3"}]));
    assert_eq!(c[2], json!({"name": "log", "image": "fluentbit"}));
    assert_eq!(out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"], "{}");
    assert!(out["metadata"]["labels"].is_object());
}
