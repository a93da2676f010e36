use std::collections::BTreeSet;

use super::*;

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

fn v3_doc(group: &str, version: &str) -> Value {
    parse(v3_group_version(&gv_key(group, version)).expect("served group/version"))
}

/// The PATCH operations whose `x-kubernetes-group-version-kind` is the
/// given one, as kubectl's query-param verifier looks for them.
fn patch_ops<'a>(doc: &'a Value, group: &str, version: &str, kind: &str) -> Vec<&'a Value> {
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p.get("patch"))
        .filter(|op| op["x-kubernetes-group-version-kind"] == json!({"group": group, "version": version, "kind": kind}))
        .collect()
}

/// Follows kubectl's strategicpatch.PatchMetaFromOpenAPIV3: a one-element
/// allOf, then a $ref into components/schemas.
fn resolve<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    if let Some(first) = s.get("allOf").and_then(|a| a.get(0)) {
        s = first;
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/components/schemas/").expect("local ref");
        s = &doc["components"]["schemas"][name];
    }
    s
}

#[test]
fn index_lists_every_served_group_version() {
    let index = parse(v3_index());
    let paths = index["paths"].as_object().unwrap();
    for (group, versions) in resources::catalog::group_versions() {
        for version in versions {
            let key = gv_key(group, version);
            let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
            assert_eq!(url, format!("/openapi/v3/{key}?hash={}", v3_hash(&key).unwrap()));
            assert!(v3_group_version(&key).is_some());
        }
    }
    assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
    assert_eq!(v3_group_version("/apis/apps/v1"), v3_group_version("apis/apps/v1"));
    assert!(v3_group_version("apis/nope/v1").is_none());
}

#[test]
fn every_document_parses_and_every_ref_resolves() {
    for key in v3_built().docs.keys() {
        let doc = parse(v3_group_version(key).unwrap());
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = BTreeSet::new();
        schemas::collect_refs(&doc, &mut refs);
        for r in &refs {
            assert!(schemas.contains_key(r), "{key}: dangling ref {r}");
        }
        let text = std::str::from_utf8(v3_group_version(key).unwrap()).unwrap();
        assert!(!text.contains("#/definitions/"), "{key}");
    }
    let v2 = parse(v2());
    assert_eq!(v2["swagger"], "2.0");
    let defs = v2["definitions"].as_object().unwrap();
    let mut refs = BTreeSet::new();
    schemas::collect_refs(&v2, &mut refs);
    for r in &refs {
        assert!(defs.contains_key(r), "v2: dangling ref {r}");
    }
    assert!(!std::str::from_utf8(super::v2()).unwrap().contains("#/components/"));
}

#[test]
fn every_kind_patch_operation_has_field_validation_and_its_gvk() {
    for r in CATALOG {
        assert!(schemas::is_known(r.group, r.version, r.kind), "{} has no typed schema", r.kind);
        if !r.verbs().contains(&"patch") {
            continue; // read-only kinds (componentstatuses)
        }
        let doc = v3_doc(r.group, r.version);
        let ops = patch_ops(&doc, r.group, r.version, r.kind);
        assert_eq!(ops.len(), 1 + usize::from(r.status), "{}: patch operations", r.kind);
        for op in ops {
            let names: Vec<&str> = op["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
            for p in ["fieldValidation", "dryRun", "fieldManager", "force"] {
                assert!(names.contains(&p), "{}: {p} missing", r.kind);
            }
            let content = op["requestBody"]["content"].as_object().unwrap();
            for t in paths::PATCH_TYPES {
                assert!(content.contains_key(*t), "{}: {t}", r.kind);
            }
            assert_eq!(op["x-kubernetes-action"], "patch");
        }
        if r.scale.is_some() {
            assert_eq!(patch_ops(&doc, "autoscaling", "v1", "Scale").len(), doc["paths"].as_object().unwrap().keys().filter(|p| p.ends_with("/scale")).count());
        }
        // kubectl finds the kind's schema by its GVK.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        assert_eq!(schemas.values().filter(|s| s["x-kubernetes-group-version-kind"] == gvk).count(), 1, "{}", r.kind);
    }
    let v2 = parse(v2());
    let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    assert_eq!(patch["x-kubernetes-group-version-kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
}

#[test]
fn paths_and_operation_ids_follow_upstream() {
    let core = v3_doc("", "v1");
    let paths = &core["paths"];
    assert_eq!(paths["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]["operationId"], "patchCoreV1NamespacedPod");
    assert_eq!(paths["/api/v1/namespaces/{namespace}/pods"]["get"]["operationId"], "listCoreV1NamespacedPod");
    assert_eq!(paths["/api/v1/namespaces/{namespace}/pods"]["delete"]["operationId"], "deleteCoreV1CollectionNamespacedPod");
    assert_eq!(paths["/api/v1/pods"]["get"]["operationId"], "listCoreV1PodForAllNamespaces");
    assert_eq!(paths["/api/v1/nodes/{name}/status"]["get"]["operationId"], "readCoreV1NodeStatus");
    assert_eq!(paths["/api/v1/namespaces/{name}"]["put"]["x-kubernetes-action"], "put");
    assert!(paths["/api/v1/namespaces"].get("delete").is_none(), "namespaces have no deletecollection");
    assert_eq!(paths["/api/v1/"]["get"]["operationId"], "getCoreV1APIResources");
    let apps = v3_doc("apps", "v1");
    let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["put"];
    assert_eq!(scale["operationId"], "replaceAppsV1NamespacedDeploymentScale");
    assert_eq!(scale["x-kubernetes-group-version-kind"], json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
    let rbac = v3_doc("rbac.authorization.k8s.io", "v1");
    let op = &rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["delete"];
    assert_eq!(op["operationId"], "deleteRbacAuthorizationV1CollectionClusterRole");
    assert_eq!(op["tags"], json!(["rbacAuthorization_v1"]));
    let params = rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}"]["parameters"].clone();
    let names: Vec<&str> = params.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["name", "namespace", "pretty"]);
    for key in v3_built().docs.keys() {
        let doc = parse(v3_group_version(key).unwrap());
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for (method, op) in item.as_object().unwrap() {
                if method != "parameters" {
                    assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "{key}: duplicate {}", op["operationId"]);
                }
            }
        }
    }
}

#[test]
fn pod_schema_has_fields_descriptions_and_extensions() {
    let doc = v3_doc("", "v1");
    let schemas = &doc["components"]["schemas"];
    let pod = &schemas["io.k8s.api.core.v1.Pod"];
    assert!(pod["description"].as_str().unwrap().contains("collection of containers"));
    for f in ["metadata", "spec", "status"] {
        assert!(pod["properties"][f]["description"].as_str().is_some_and(|d| !d.is_empty()), "{f}");
        assert!(pod["properties"][f]["allOf"][0]["$ref"].as_str().is_some(), "{f}");
    }
    assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "version": "v1", "kind": "Pod"}]));
    assert_eq!(schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"][0]["kind"], "PodList");
    assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["labels"].is_object());
    assert_eq!(schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"], "int-or-string");
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"], "atomic");
}

#[test]
fn strategic_merge_metadata_is_reachable_the_way_kubectl_walks_it() {
    let doc = v3_doc("apps", "v1");
    let mut s = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    for field in ["spec", "template", "spec"] {
        s = resolve(&doc, &s["properties"][field]);
    }
    let ports = resolve(&doc, &s["properties"]["containers"]["items"]);
    let ports = &ports["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["containerPort", "protocol"]));
    assert_eq!(s["properties"]["volumes"]["x-kubernetes-patch-strategy"], "merge,retainKeys");
}

#[test]
fn every_extension_line_names_an_existing_field() {
    let defs = &schemas().defs;
    for line in schemas::EXTENSIONS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (def, prop) = (words.next().unwrap(), words.next().unwrap());
        let Some(schema) = defs.get(def) else { continue };
        if prop != "-" {
            assert!(schema["properties"].get(prop).is_some(), "{def}.{prop}");
        }
    }
}

#[test]
fn accept_negotiation() {
    assert!(accepts_json(None));
    assert!(accepts_json(Some("")));
    assert!(accepts_json(Some("application/json")));
    assert!(accepts_json(Some("application/json, */*")));
    assert!(accepts_json(Some("*/*")));
    assert!(accepts_json(Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json;q=0.9")));
    assert!(!accepts_json(Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")));
    assert!(!accepts_json(Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")));
    assert!(!accepts_json(Some("application/com.github.proto-openapi.spec.v3@v1.0+protobuf")));
    assert!(!accepts_json(Some("application/json;q=0")));
}

#[test]
fn hashes_are_stable_and_distinct() {
    assert_eq!(hash_hex(b"abc"), hash_hex(b"abc"));
    assert_ne!(hash_hex(b"abc"), hash_hex(b"abd"));
    assert_eq!(hash_hex(b"").len(), 32);
}
