//! The `paths` of the documents: the REST operations of every served kind,
//! laid out, named and annotated like upstream's (operationIds such as
//! `patchCoreV1NamespacedPod`, `x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, the query parameters of each verb).
//! Operations are described once and rendered for OpenAPI 3 or Swagger 2.

use resources::catalog::ResourceInfo;
use serde_json::{json, Map, Value};

use super::schemas::{Schemas, API_RESOURCE_LIST, DELETE_OPTIONS, PATCH, REF_PREFIX, SCALE, STATUS};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    V3,
    V2,
}

/// The media types of patch request bodies.
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const PRODUCES: &[&str] = &["application/json", "application/yaml"];
const PRODUCES_LIST: &[&str] = &["application/json", "application/yaml", "application/json;stream=watch"];

const D_PRETTY: &str = "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).";
const D_NAMESPACE: &str = "object name and auth scope, such as for teams and projects";
const D_DRY_RUN: &str = "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed";
const D_FIELD_MANAGER: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.";
const D_FIELD_MANAGER_PATCH: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).";
const D_FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.";
const D_FORCE: &str = "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.";
const D_GRACE: &str = "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.";
const D_IGNORE_STORE_ERR: &str = "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it";
const D_ORPHAN: &str = "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.";
const D_PROPAGATION: &str = "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.";
const D_BOOKMARKS: &str = "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.";
const D_CONTINUE: &str = "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token.\n\nThis field is not supported when watch is true. Clients may start a watch from the last resourceVersion value returned by the server and not miss any modifications.";
const D_FIELD_SELECTOR: &str = "A selector to restrict the list of returned objects by their fields. Defaults to everything.";
const D_LABEL_SELECTOR: &str = "A selector to restrict the list of returned objects by their labels. Defaults to everything.";
const D_LIMIT: &str = "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results. Setting a limit may return fewer than the requested amount of items (up to zero items) in the event all requested objects are filtered out and clients should only use the presence of the continue field to determine whether more results are available. This field is not supported if watch is true.";
const D_RV: &str = "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset";
const D_RV_MATCH: &str = "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset";
const D_INITIAL_EVENTS: &str = "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event  will be sent. The bookmark will report the ResourceVersion (RV) corresponding to the set of objects, and be marked with `\"k8s.io/initial-events-end\": \"true\"` annotation. Afterwards, the watch stream will proceed as usual, sending watch events corresponding to changes (subsequent to the RV) to objects watched.";
const D_TIMEOUT: &str = "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.";
const D_WATCH: &str = "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.";

struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    desc: String,
    required: bool,
}

fn query(name: &'static str, ty: &'static str, desc: &str) -> Param {
    Param { name, location: "query", ty, desc: desc.to_string(), required: false }
}

fn path_param(name: &'static str, desc: String) -> Param {
    Param { name, location: "path", ty: "string", desc, required: true }
}

struct Op {
    method: &'static str,
    id: String,
    desc: String,
    action: &'static str,
    gvk: (String, String, String),
    params: Vec<Param>,
    /// Request body: media types, definition, required.
    body: Option<(&'static [&'static str], String, bool)>,
    /// Responses: code, description, definition.
    responses: Vec<(&'static str, &'static str, String)>,
    produces: &'static [&'static str],
    tag: String,
}

fn list_params() -> Vec<Param> {
    vec![
        query("allowWatchBookmarks", "boolean", D_BOOKMARKS),
        query("continue", "string", D_CONTINUE),
        query("fieldSelector", "string", D_FIELD_SELECTOR),
        query("labelSelector", "string", D_LABEL_SELECTOR),
        query("limit", "integer", D_LIMIT),
        query("resourceVersion", "string", D_RV),
        query("resourceVersionMatch", "string", D_RV_MATCH),
        query("sendInitialEvents", "boolean", D_INITIAL_EVENTS),
        query("timeoutSeconds", "integer", D_TIMEOUT),
        query("watch", "boolean", D_WATCH),
    ]
}

fn write_params(patch: bool) -> Vec<Param> {
    let mut p = vec![
        query("dryRun", "string", D_DRY_RUN),
        query("fieldManager", "string", if patch { D_FIELD_MANAGER_PATCH } else { D_FIELD_MANAGER }),
        query("fieldValidation", "string", D_FIELD_VALIDATION),
    ];
    if patch {
        p.push(query("force", "boolean", D_FORCE));
    }
    p
}

fn delete_params(collection: bool) -> Vec<Param> {
    let mut p = vec![
        query("dryRun", "string", D_DRY_RUN),
        query("gracePeriodSeconds", "integer", D_GRACE),
        query("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", D_IGNORE_STORE_ERR),
        query("orphanDependents", "boolean", D_ORPHAN),
        query("propagationPolicy", "string", D_PROPAGATION),
    ];
    if collection {
        p.extend(list_params().into_iter().filter(|q| !matches!(q.name, "allowWatchBookmarks" | "watch")));
        p.sort_by_key(|q| q.name);
    }
    p
}

/// The group as it appears in operationIds: `Core`, `Apps`,
/// `RbacAuthorization` (for rbac.authorization.k8s.io), ...
pub(super) fn op_group(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let g = group.strip_suffix(".k8s.io").unwrap_or(group);
    g.split(['.', '-']).map(capitalize).collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The tag upstream puts on a group/version's operations: `core_v1`, `apps_v1`, ...
pub(super) fn tag(group: &str, version: &str) -> String {
    let g = op_group(group);
    let mut c = g.chars();
    let lower: String = match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// The URL prefix of a group/version: `/api/v1` or `/apis/apps/v1`.
pub(super) fn gv_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

fn refs(name: &str, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V3 => json!({ "$ref": format!("{REF_PREFIX}{name}") }),
        Flavor::V2 => json!({ "$ref": format!("#/definitions/{name}") }),
    }
}

fn render_param(p: &Param, flavor: Flavor) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), p.desc.clone().into());
    m.insert("in".into(), p.location.into());
    m.insert("name".into(), p.name.into());
    if p.required {
        m.insert("required".into(), true.into());
    }
    match flavor {
        Flavor::V3 => {
            m.insert("schema".into(), json!({ "type": p.ty, "uniqueItems": true }));
        }
        Flavor::V2 => {
            m.insert("type".into(), p.ty.into());
            m.insert("uniqueItems".into(), true.into());
        }
    }
    Value::Object(m)
}

fn render_op(op: &Op, flavor: Flavor) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), op.desc.clone().into());
    m.insert("operationId".into(), op.id.clone().into());
    let mut params: Vec<Value> = op.params.iter().map(|p| render_param(p, flavor)).collect();
    match (flavor, &op.body) {
        (Flavor::V3, Some((types, def, required))) => {
            let content: Map<String, Value> =
                types.iter().map(|t| (t.to_string(), json!({ "schema": refs(def, flavor) }))).collect();
            let mut body = Map::new();
            body.insert("content".into(), Value::Object(content));
            if *required {
                body.insert("required".into(), true.into());
            }
            m.insert("requestBody".into(), Value::Object(body));
        }
        (Flavor::V2, Some((types, def, required))) => {
            let mut body = json!({ "in": "body", "name": "body", "schema": refs(def, flavor) });
            if *required {
                body["required"] = true.into();
            }
            params.insert(0, body);
            m.insert("consumes".into(), json!(types));
        }
        (Flavor::V2, None) => {
            m.insert("consumes".into(), json!(["*/*"]));
        }
        (Flavor::V3, None) => {}
    }
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    if flavor == Flavor::V2 {
        m.insert("produces".into(), json!(op.produces));
        m.insert("schemes".into(), json!(["https"]));
    }
    let mut responses = Map::new();
    for (code, desc, def) in &op.responses {
        let r = match flavor {
            Flavor::V3 => {
                let content: Map<String, Value> = op
                    .produces
                    .iter()
                    .map(|t| (t.to_string(), json!({ "schema": refs(def, flavor) })))
                    .collect();
                json!({ "content": content, "description": desc })
            }
            Flavor::V2 => json!({ "description": desc, "schema": refs(def, flavor) }),
        };
        responses.insert(code.to_string(), r);
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("tags".into(), json!([op.tag]));
    m.insert("x-kubernetes-action".into(), op.action.into());
    let (g, v, k) = &op.gvk;
    m.insert("x-kubernetes-group-version-kind".into(), json!({ "group": g, "kind": k, "version": v }));
    Value::Object(m)
}

fn render_path(params: &[Param], ops: &[Op], flavor: Flavor) -> Value {
    let mut m = Map::new();
    for op in ops {
        m.insert(op.method.into(), render_op(op, flavor));
    }
    m.insert("parameters".into(), Value::Array(params.iter().map(|p| render_param(p, flavor)).collect()));
    Value::Object(m)
}

/// The paths of one group/version: its resource list and every operation
/// of the catalog entries `kinds` (all of that group/version).
pub(super) fn group_version_paths(
    group: &str,
    version: &str,
    kinds: &[&ResourceInfo],
    schemas: &Schemas,
    flavor: Flavor,
) -> Vec<(String, Value)> {
    let prefix = gv_prefix(group, version);
    let g = op_group(group);
    let v = capitalize(version);
    let tag = tag(group, version);
    let mut out = Vec::new();

    out.push((
        format!("{prefix}/"),
        json!({ "get": render_op(
            &Op {
                method: "get",
                id: format!("get{g}{v}APIResources"),
                desc: "get available resources".into(),
                action: "get",
                gvk: (String::new(), "v1".into(), "APIResourceList".into()),
                params: vec![],
                body: None,
                responses: vec![("200", "OK", API_RESOURCE_LIST.into())],
                produces: PRODUCES,
                tag: tag.clone(),
            },
            flavor,
        ) }),
    ));
    // The resource list has no GVK upstream.
    if let Some(get) = out[0].1.get_mut("get").and_then(Value::as_object_mut) {
        get.remove("x-kubernetes-group-version-kind");
        get.remove("x-kubernetes-action");
    }

    for r in kinds {
        let kind_def = schemas.kind_def(r).to_string();
        let list_def = schemas.list_def(r);
        let verbs = r.verbs();
        let has = |v: &str| verbs.contains(&v);
        let gvk = (r.group.to_string(), r.version.to_string(), r.kind.to_string());
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let kind = r.kind;
        let op = |method, id: String, desc: String, action, params, body, responses: Vec<(&'static str, &'static str, String)>| Op {
            method,
            id,
            desc,
            action,
            gvk: gvk.clone(),
            params,
            body,
            responses,
            produces: if action == "list" { PRODUCES_LIST } else { PRODUCES },
            tag: tag.clone(),
        };
        let written = |def: &str| vec![("200", "OK", def.to_string()), ("201", "Created", def.to_string())];

        let base = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let scope_params = || {
            let mut p = Vec::new();
            if r.namespaced {
                p.push(path_param("namespace", D_NAMESPACE.into()));
            }
            p.push(query("pretty", "string", D_PRETTY));
            p
        };
        let item_params = || {
            let mut p = vec![path_param("name", format!("name of the {kind}"))];
            p.extend(scope_params());
            p
        };

        // The collection.
        let mut ops = Vec::new();
        if has("deletecollection") {
            ops.push(op("delete", format!("delete{g}{v}Collection{ns}{kind}"), format!("delete collection of {kind}"),
                "deletecollection", delete_params(true), Some((&["*/*"][..], DELETE_OPTIONS.to_string(), false)),
                vec![("200", "OK", STATUS.into())]));
        }
        if has("list") {
            ops.push(op("get", format!("list{g}{v}{ns}{kind}"), format!("list or watch objects of kind {kind}"),
                "list", list_params(), None, vec![("200", "OK", list_def.clone())]));
        }
        if has("create") {
            let mut resp = written(&kind_def);
            resp.push(("202", "Accepted", kind_def.clone()));
            ops.push(op("post", format!("create{g}{v}{ns}{kind}"), format!("create a {kind}"), "post",
                write_params(false), Some((&["*/*"][..], kind_def.clone(), true)), resp));
        }
        if !ops.is_empty() {
            out.push((base.clone(), render_path(&scope_params(), &ops, flavor)));
        }

        // Every namespace at once.
        if r.namespaced && has("list") {
            let ops = [op("get", format!("list{g}{v}{kind}ForAllNamespaces"), format!("list or watch objects of kind {kind}"),
                "list", vec![], None, vec![("200", "OK", list_def.clone())])];
            let mut params = list_params();
            params.push(query("pretty", "string", D_PRETTY));
            params.sort_by_key(|q| q.name);
            out.push((format!("{prefix}/{}", r.plural), render_path(&params, &ops, flavor)));
        }

        // The object.
        let item = format!("{base}/{{name}}");
        let mut ops = Vec::new();
        if has("delete") {
            ops.push(op("delete", format!("delete{g}{v}{ns}{kind}"), format!("delete a {kind}"), "delete",
                delete_params(false), Some((&["*/*"][..], DELETE_OPTIONS.to_string(), false)),
                vec![("200", "OK", STATUS.into()), ("202", "Accepted", STATUS.into())]));
        }
        if has("get") {
            ops.push(op("get", format!("read{g}{v}{ns}{kind}"), format!("read the specified {kind}"), "get",
                vec![], None, vec![("200", "OK", kind_def.clone())]));
        }
        if has("patch") {
            ops.push(op("patch", format!("patch{g}{v}{ns}{kind}"), format!("partially update the specified {kind}"),
                "patch", write_params(true), Some((PATCH_TYPES, PATCH.to_string(), true)), written(&kind_def)));
        }
        if has("update") {
            ops.push(op("put", format!("replace{g}{v}{ns}{kind}"), format!("replace the specified {kind}"), "put",
                write_params(false), Some((&["*/*"][..], kind_def.clone(), true)), written(&kind_def)));
        }
        if !ops.is_empty() {
            out.push((item.clone(), render_path(&item_params(), &ops, flavor)));
        }

        // Subresources: status has the kind's GVK, scale autoscaling/v1 Scale's.
        let mut subresources = Vec::new();
        if r.status {
            subresources.push(("status", "Status", kind_def.clone(), gvk.clone()));
        }
        if r.scale.is_some() {
            subresources.push(("scale", "Scale", SCALE.to_string(), ("autoscaling".into(), "v1".into(), "Scale".into())));
        }
        for (sub, suffix, def, sub_gvk) in subresources {
            let sub_op = |method, verb: &str, desc: String, action, params, body, responses| {
                let mut o = op(method, format!("{verb}{g}{v}{ns}{kind}{suffix}"), desc, action, params, body, responses);
                o.gvk = sub_gvk.clone();
                o
            };
            let ops = [
                sub_op("get", "read", format!("read {sub} of the specified {kind}"), "get", vec![], None,
                    vec![("200", "OK", def.clone())]),
                sub_op("patch", "patch", format!("partially update {sub} of the specified {kind}"), "patch",
                    write_params(true), Some((PATCH_TYPES, PATCH.to_string(), true)), written(&def)),
                sub_op("put", "replace", format!("replace {sub} of the specified {kind}"), "put",
                    write_params(false), Some((&["*/*"][..], def.clone(), true)), written(&def)),
            ];
            out.push((format!("{item}/{sub}"), render_path(&item_params(), &ops, flavor)));
        }
    }
    out
}
