use resources::catalog::{by_kind, ResourceInfo};
use serde_json::{json, Value};

use super::fieldpath::{Pe, Set};
use super::*;

const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";
const T2: &str = "2025-01-01T00:02:00Z";

fn deployments() -> &'static ResourceInfo {
    by_kind("apps", "Deployment").unwrap()
}

fn deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn apply_ok(live: Option<&Value>, applied: &Value, manager: &str, force: bool, now: &str) -> Value {
    match apply(deployments(), None, live, applied, manager, force, now) {
        Ok(v) => v,
        Err(e) => panic!("apply failed: {e:?}"),
    }
}

fn conflicts(live: &Value, applied: &Value, manager: &str) -> Vec<Conflict> {
    match apply(deployments(), None, Some(live), applied, manager, false, T2) {
        Err(ApplyError::Conflicts(c)) => c,
        other => panic!("expected conflicts, got {other:?}"),
    }
}

/// The managedFields entry of a manager.
fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager && e["operation"] == operation))
        .unwrap_or_else(|| panic!("no {operation} entry for {manager} in {:#}", obj["metadata"]["managedFields"]))
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().map(|e| format!("{}/{}", e["manager"].as_str().unwrap(), e["operation"].as_str().unwrap())).collect())
        .unwrap_or_default()
}

#[test]
fn create_by_apply_records_upstream_shape() {
    let obj = apply_ok(None, &deployment(2), "kubectl", false, T0);
    assert_eq!(
        obj["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            }
        }])
    );
    assert_eq!(obj["spec"]["replicas"], 2);
    assert_eq!(obj["metadata"]["name"], "web");
}

#[test]
fn reapplying_the_same_config_changes_nothing() {
    let first = apply_ok(None, &deployment(2), "kubectl", false, T0);
    let again = apply_ok(Some(&first), &deployment(2), "kubectl", false, T1);
    assert_eq!(again, first);
}

#[test]
fn conflict_with_an_updater_has_upstreams_message() {
    let mut created = deployment(1);
    record_update(deployments(), None, None, &mut created, "kubectl-client-side-apply", T0);
    let c = conflicts(&created, &deployment(3), "kubectl");
    assert_eq!(c.len(), 1);
    assert_eq!(
        conflict_message(&c),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    let e = conflict_error(&c);
    assert_eq!((e.code, e.reason), (409, "Conflict"));
    assert_eq!(
        e.details.unwrap()["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-client-side-apply\" using apps/v1", "field": ".spec.replicas"}])
    );
    // The same values as the updater's are no conflict.
    assert!(apply(deployments(), None, Some(&created), &deployment(1), "kubectl", false, T2).is_ok());
}

#[test]
fn second_applier_conflicts_and_force_takes_ownership() {
    let a = apply_ok(None, &deployment(2), "team-a", false, T0);
    let mut mine = deployment(5);
    mine["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let c = conflicts(&a, &mine, "team-b");
    assert_eq!(
        conflict_message(&c),
        "Apply failed with 2 conflicts: conflicts with \"team-a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
    let forced = apply_ok(Some(&a), &mine, "team-b", true, T1);
    assert_eq!(forced["spec"]["replicas"], 5);
    assert_eq!(forced["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.28");
    let a_fields = &entry(&forced, "team-a", "Apply")["fieldsV1"];
    assert!(a_fields["f:spec"].get("f:replicas").is_none());
    assert!(a_fields["f:spec"].get("f:selector").is_some(), "shared fields stay shared");
    assert!(entry(&forced, "team-b", "Apply")["fieldsV1"]["f:spec"].get("f:replicas").is_some());
    assert_eq!(managers(&forced), ["team-a/Apply", "team-b/Apply"]);
}

#[test]
fn fields_no_longer_applied_are_removed_unless_owned_elsewhere() {
    let mut v1 = deployment(2);
    v1["metadata"]["labels"] = json!({"app": "web", "tier": "front", "team": "x"});
    let a = apply_ok(None, &v1, "team-a", false, T0);
    // Another manager co-owns the "team" label.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"team": "x"}}});
    let b = apply_ok(Some(&a), &other, "team-b", false, T1);
    let mut v2 = deployment(2);
    v2["metadata"]["labels"] = json!({"app": "web"});
    v2["spec"].as_object_mut().unwrap().remove("replicas");
    let out = apply_ok(Some(&b), &v2, "team-a", false, T2);
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "team": "x"}));
    assert!(out["spec"].get("replicas").is_none());
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
}

#[test]
fn containers_merge_by_name_across_managers() {
    let a = apply_ok(None, &deployment(2), "team-a", false, T0);
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "log", "image": "busybox"}]}}}});
    let b = apply_ok(Some(&a), &sidecar, "team-b", false, T1);
    let names: Vec<&str> =
        b["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["nginx", "log"]);
    assert_eq!(b["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
    let b_fields = &entry(&b, "team-b", "Apply")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"];
    assert_eq!(b_fields, &json!({"k:{\"name\":\"log\"}": {".": {}, "f:image": {}, "f:name": {}}}));
    // team-a re-applies without knowing about the sidecar: it stays.
    let again = apply_ok(Some(&b), &deployment(2), "team-a", false, T2);
    assert_eq!(again["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 2);
    // team-b stops applying it: it goes.
    let empty = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let gone = apply_ok(Some(&again), &empty, "team-b", false, T2);
    assert_eq!(gone["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
    assert_eq!(managers(&gone), ["team-a/Apply"]);
}

#[test]
fn record_update_moves_ownership() {
    let a = apply_ok(None, &deployment(2), "kubectl", false, T0);
    let mut edited = a.clone();
    edited["spec"]["replicas"] = json!(4);
    edited["metadata"]["labels"]["env"] = json!("prod");
    record_update(deployments(), None, Some(&a), &mut edited, "kubectl-edit", T1);
    assert_eq!(managers(&edited), ["kubectl/Apply", "kubectl-edit/Update"]);
    let e = entry(&edited, "kubectl-edit", "Update");
    assert_eq!(e["time"], T1);
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsV1"], json!({"f:metadata": {"f:labels": {"f:env": {}}}, "f:spec": {"f:replicas": {}}}));
    assert!(entry(&edited, "kubectl", "Apply")["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    // Applying the old value back now conflicts with the editor.
    let c = conflicts(&edited, &deployment(2), "kubectl");
    assert_eq!(conflict_message(&c), "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas");
    // A scale through the subresource gets an entry of its own.
    let mut scaled = edited.clone();
    scaled["spec"]["replicas"] = json!(6);
    record_update(deployments(), Some("scale"), Some(&edited), &mut scaled, "kubectl", T2);
    let s = entry(&scaled, "kubectl", "Update");
    assert_eq!(s["subresource"], "scale");
    assert_eq!(s["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    assert!(entry(&scaled, "kubectl-edit", "Update")["fieldsV1"].get("f:spec").is_none());
}

#[test]
fn create_update_owns_what_the_create_set() {
    let mut obj = deployment(1);
    obj["spec"]["template"]["metadata"]["creationTimestamp"] = Value::Null;
    obj["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    obj["status"] = json!({"replicas": 0});
    record_update(deployments(), None, None, &mut obj, "kubectl-create", T0);
    let e = entry(&obj, "kubectl-create", "Update");
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    );
    // An existing object without managed fields stays untracked by updates.
    let mut plain = deployment(1);
    let mut next = plain.clone();
    next["spec"]["replicas"] = json!(2);
    record_update(deployments(), None, Some(&plain), &mut next, "kubectl-edit", T1);
    assert!(next["metadata"].get("managedFields").is_none());
    // Managed fields sent as [] clear them.
    record_update(deployments(), None, None, &mut plain, "kubectl-create", T0);
    let mut cleared = plain.clone();
    cleared["metadata"]["managedFields"] = json!([]);
    record_update(deployments(), None, Some(&plain), &mut cleared, "kubectl-edit", T1);
    assert!(cleared["metadata"].get("managedFields").is_none());
}

#[test]
fn status_is_not_owned_through_the_main_resource() {
    let mut cfg = deployment(2);
    cfg["status"] = json!({"replicas": 7});
    let obj = apply_ok(None, &cfg, "kubectl", false, T0);
    assert!(obj.get("status").is_none());
    assert!(entry(&obj, "kubectl", "Apply")["fieldsV1"].get("f:status").is_none());
    let mut with_status = obj.clone();
    with_status["status"] = json!({"replicas": 2});
    record_update(deployments(), Some("status"), Some(&obj), &mut with_status, "kube-controller-manager", T1);
    let e = entry(&with_status, "kube-controller-manager", "Update");
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {".": {}, "f:replicas": {}}}));
}

#[test]
fn first_apply_to_an_untracked_object_credits_before_first_apply() {
    let plain = deployment(1);
    let c = conflicts(&plain, &deployment(3), "ci");
    assert_eq!(conflict_message(&c), "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas");
    let forced = apply_ok(Some(&plain), &deployment(3), "ci", true, T1);
    assert_eq!(managers(&forced), ["ci/Apply", "before-first-apply/Update"]);
}

#[test]
fn kubectl_takes_over_from_client_side_apply() {
    let mut csa = deployment(1);
    let annotation = last_applied(&deployment(1));
    csa["metadata"]["annotations"] = json!({ (LAST_APPLIED): annotation });
    record_update(deployments(), None, None, &mut csa, "kubectl-client-side-apply", T0);
    let out = apply_ok(Some(&csa), &deployment(3), "kubectl", false, T1);
    assert_eq!(out["spec"]["replicas"], 3);
    let kept: Value = serde_json::from_str(out["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap()).unwrap();
    assert_eq!(kept["spec"]["replicas"], 3);
    // Another manager name gets the conflict.
    assert!(matches!(apply(deployments(), None, Some(&csa), &deployment(3), "other", false, T1), Err(ApplyError::Conflicts(_))));
}

#[test]
fn fields_v1_round_trip_and_keys() {
    let mut s = Set::new();
    let port = Pe::key(vec![("protocol".into(), json!("TCP")), ("containerPort".into(), json!(80))]);
    let c = Pe::key(vec![("name".into(), json!("a<b"))]);
    let spec = |rest: &[Pe]| {
        let mut p = vec![Pe::Field("spec".into()), Pe::Field("containers".into()), c.clone()];
        p.extend_from_slice(rest);
        p
    };
    s.insert(&spec(&[]));
    s.insert(&spec(&[Pe::Field("ports".into()), port.clone()]));
    s.insert(&spec(&[Pe::Field("ports".into()), port.clone(), Pe::Field("containerPort".into())]));
    s.insert(&[Pe::Field("metadata".into()), Pe::Field("finalizers".into()), Pe::value(&json!("x"))]);
    let v1 = s.to_fields_v1();
    assert_eq!(
        v1,
        json!({
            "f:metadata": {"f:finalizers": {"v:\"x\"": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"a\\u003cb\"}": {".": {}, "f:ports": {
                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}
            }}}}
        })
    );
    assert_eq!(Set::from_fields_v1(&v1).unwrap(), s);
    let paths: Vec<String> = s.paths().iter().map(|p| fieldpath::path_string(p)).collect();
    assert!(paths.contains(&".spec.containers[name=\"a<b\"].ports[containerPort=80,protocol=\"TCP\"]".to_string()), "{paths:?}");
    assert!(paths.contains(&".metadata.finalizers[=\"x\"]".to_string()));
}

#[test]
fn apply_errors() {
    let bad = |v: Value| match apply(deployments(), None, None, &v, "m", false, T0) {
        Err(ApplyError::BadRequest(m)) => m,
        other => panic!("expected a bad request, got {other:?}"),
    };
    let mut wrong = deployment(1);
    wrong["apiVersion"] = json!("apps/v1beta1");
    assert_eq!(bad(wrong), "invalid object type: apps/v1beta1, Kind=Deployment");
    let mut with_managed = deployment(1);
    with_managed["metadata"]["managedFields"] = json!([]);
    assert_eq!(bad(with_managed), "metadata.managedFields must be nil");
    let mut dup = deployment(1);
    dup["spec"]["template"]["spec"]["containers"] = json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]);
    assert_eq!(
        bad(dup),
        "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
    );
    let e = check_patch_options(true, None, false).unwrap_err();
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert_eq!(e.message, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
    let e = check_patch_options(false, Some("kubectl-patch"), true).unwrap_err();
    assert_eq!(e.message, "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch");
    assert!(check_patch_options(true, Some("kubectl"), true).is_ok());
}

#[test]
fn sets_union_and_atomic_lists_replace() {
    let cm = by_kind("", "Pod").unwrap();
    let pod = |finalizers: Value, args: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": finalizers},
            "spec": {"containers": [{"name": "c", "image": "busybox", "args": args}]}})
    };
    let a = apply(cm, None, None, &pod(json!(["a.io/x"]), json!(["sleep", "1"])), "one", false, T0).unwrap();
    let b = apply(cm, None, Some(&a), &pod(json!(["b.io/y"]), json!(["sleep", "1"])), "two", false, T1).unwrap();
    assert_eq!(b["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
    let fin = &entry(&b, "two", "Apply")["fieldsV1"]["f:metadata"]["f:finalizers"];
    assert_eq!(fin, &json!({"v:\"b.io/y\"": {}}));
    let args = &entry(&b, "two", "Apply")["fieldsV1"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:args"];
    assert_eq!(args, &json!({}), "an atomic list is one field, shared by both");
    let c = apply(cm, None, Some(&b), &pod(json!(["b.io/y"]), json!(["sleep", "2"])), "two", false, T2);
    assert!(matches!(c, Err(ApplyError::Conflicts(ref c)) if c[0].field == ".spec.containers[name=\"c\"].args"), "{c:?}");
}

#[test]
fn managers_from_query_or_user_agent() {
    assert_eq!(manager_or_user_agent(Some("kubectl-edit"), Some("kubectl/v1.32.0 (linux/amd64)")), "kubectl-edit");
    assert_eq!(manager_or_user_agent(None, Some("kubectl/v1.32.0 (linux/amd64) kubernetes/abc")), "kubectl");
    assert_eq!(manager_or_user_agent(Some(""), Some("kube-controller-manager/v1.33.0")), "kube-controller-manager");
    assert_eq!(manager_or_user_agent(None, None), "");
}

#[test]
fn apply_to_status_owns_only_the_status() {
    let obj = apply_ok(None, &deployment(2), "kubectl", false, T0);
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 9}, "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]}});
    let out = apply(deployments(), Some("status"), Some(&obj), &cfg, "ctl", false, T1).unwrap();
    assert_eq!(out["spec"]["replicas"], 2);
    let e = entry(&out, "ctl", "Apply");
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
    );
}
