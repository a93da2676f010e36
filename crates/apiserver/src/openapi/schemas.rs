//! Component schemas. They come from the k8s-openapi types through their
//! `schemars::JsonSchema` impls, which already name definitions like upstream
//! (`io.k8s.api.core.v1.Pod`) and carry the field descriptions. On top of
//! those this module adds what the Rust types cannot tell: the list and map
//! extensions (`x-kubernetes-list-type`, `x-kubernetes-patch-strategy`, ...,
//! from `extensions.txt`), the `x-kubernetes-group-version-kind` of every
//! kind, and the `*List` schemas.
//!
//! Definitions are kept in one canonical form: `$ref`s point at
//! `#/components/schemas/NAME` and may have sibling keys (a description).
//! [`to_v3`] and [`to_v2`] turn that into what each OpenAPI version wants.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api as k;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::gen::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use resources::catalog::{ResourceInfo, CATALOG};
use serde_json::{json, Map, Value};

pub(super) const REF_PREFIX: &str = "#/components/schemas/";
const V2_REF_PREFIX: &str = "#/definitions/";

pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(super) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(super) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(super) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

const API_VERSION_DESC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// The list, map and patch extensions of upstream's definitions:
/// `DEFINITION PROPERTY key=value...`, PROPERTY `-` for the definition itself.
pub(super) const EXTENSIONS: &str = include_str!("extensions.txt");

/// Every definition, in canonical form, and the definition of each served kind.
pub(super) struct Schemas {
    pub defs: BTreeMap<String, Value>,
    kinds: Vec<(&'static ResourceInfo, String)>,
}

impl Schemas {
    /// The definition name of a catalog entry's kind.
    pub fn kind_def(&self, r: &ResourceInfo) -> &str {
        self.kinds
            .iter()
            .find(|(e, _)| e.group == r.group && e.version == r.version && e.kind == r.kind)
            .map(|(_, d)| d.as_str())
            .expect("every catalog entry has a schema")
    }

    /// The definition name of a catalog entry's list kind.
    pub fn list_def(&self, r: &ResourceInfo) -> String {
        format!("{}List", self.kind_def(r))
    }

    /// The definitions reachable from `roots`, in canonical form.
    pub fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut todo: Vec<String> = roots.into_iter().map(str::to_string).collect();
        while let Some(name) = todo.pop() {
            if out.contains_key(&name) {
                continue;
            }
            let Some(def) = self.defs.get(&name) else { continue };
            let mut refs = BTreeSet::new();
            collect_refs(def, &mut refs);
            todo.extend(refs);
            out.insert(name, def.clone());
        }
        out
    }
}

/// Names of the definitions a schema refers to.
pub(super) fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let name = r
                            .strip_prefix(REF_PREFIX)
                            .or_else(|| r.strip_prefix(V2_REF_PREFIX))
                            .unwrap_or(r);
                        out.insert(name.to_string());
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

macro_rules! known_kinds {
    ($( $g:literal $v:literal $k:literal => $t:ty; )*) => {
        /// Registers the schema of a kind that k8s-openapi knows; returns its
        /// definition name.
        fn register_kind(gen: &mut SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
            match (group, version, kind) {
                $( ($g, $v, $k) => {
                    gen.subschema_for::<$t>();
                    Some(<$t as JsonSchema>::schema_name())
                } )*
                _ => None,
            }
        }
    };
}

// The catalog's kinds and the other GA kinds it may grow into.
known_kinds! {
    "" "v1" "Binding" => k::core::v1::Binding;
    "" "v1" "ComponentStatus" => k::core::v1::ComponentStatus;
    "" "v1" "ConfigMap" => k::core::v1::ConfigMap;
    "" "v1" "Endpoints" => k::core::v1::Endpoints;
    "" "v1" "Event" => k::core::v1::Event;
    "" "v1" "LimitRange" => k::core::v1::LimitRange;
    "" "v1" "Namespace" => k::core::v1::Namespace;
    "" "v1" "Node" => k::core::v1::Node;
    "" "v1" "PersistentVolume" => k::core::v1::PersistentVolume;
    "" "v1" "PersistentVolumeClaim" => k::core::v1::PersistentVolumeClaim;
    "" "v1" "Pod" => k::core::v1::Pod;
    "" "v1" "PodTemplate" => k::core::v1::PodTemplate;
    "" "v1" "ReplicationController" => k::core::v1::ReplicationController;
    "" "v1" "ResourceQuota" => k::core::v1::ResourceQuota;
    "" "v1" "Secret" => k::core::v1::Secret;
    "" "v1" "Service" => k::core::v1::Service;
    "" "v1" "ServiceAccount" => k::core::v1::ServiceAccount;
    "admissionregistration.k8s.io" "v1" "MutatingWebhookConfiguration" => k::admissionregistration::v1::MutatingWebhookConfiguration;
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicy" => k::admissionregistration::v1::ValidatingAdmissionPolicy;
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicyBinding" => k::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
    "admissionregistration.k8s.io" "v1" "ValidatingWebhookConfiguration" => k::admissionregistration::v1::ValidatingWebhookConfiguration;
    "apiextensions.k8s.io" "v1" "CustomResourceDefinition" => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    "apiregistration.k8s.io" "v1" "APIService" => k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    "apps" "v1" "ControllerRevision" => k::apps::v1::ControllerRevision;
    "apps" "v1" "DaemonSet" => k::apps::v1::DaemonSet;
    "apps" "v1" "Deployment" => k::apps::v1::Deployment;
    "apps" "v1" "ReplicaSet" => k::apps::v1::ReplicaSet;
    "apps" "v1" "StatefulSet" => k::apps::v1::StatefulSet;
    "autoscaling" "v1" "HorizontalPodAutoscaler" => k::autoscaling::v1::HorizontalPodAutoscaler;
    "autoscaling" "v2" "HorizontalPodAutoscaler" => k::autoscaling::v2::HorizontalPodAutoscaler;
    "batch" "v1" "CronJob" => k::batch::v1::CronJob;
    "batch" "v1" "Job" => k::batch::v1::Job;
    "certificates.k8s.io" "v1" "CertificateSigningRequest" => k::certificates::v1::CertificateSigningRequest;
    "coordination.k8s.io" "v1" "Lease" => k::coordination::v1::Lease;
    "discovery.k8s.io" "v1" "EndpointSlice" => k::discovery::v1::EndpointSlice;
    "events.k8s.io" "v1" "Event" => k::events::v1::Event;
    "flowcontrol.apiserver.k8s.io" "v1" "FlowSchema" => k::flowcontrol::v1::FlowSchema;
    "flowcontrol.apiserver.k8s.io" "v1" "PriorityLevelConfiguration" => k::flowcontrol::v1::PriorityLevelConfiguration;
    "networking.k8s.io" "v1" "IPAddress" => k::networking::v1::IPAddress;
    "networking.k8s.io" "v1" "Ingress" => k::networking::v1::Ingress;
    "networking.k8s.io" "v1" "IngressClass" => k::networking::v1::IngressClass;
    "networking.k8s.io" "v1" "NetworkPolicy" => k::networking::v1::NetworkPolicy;
    "networking.k8s.io" "v1" "ServiceCIDR" => k::networking::v1::ServiceCIDR;
    "node.k8s.io" "v1" "RuntimeClass" => k::node::v1::RuntimeClass;
    "policy" "v1" "PodDisruptionBudget" => k::policy::v1::PodDisruptionBudget;
    "rbac.authorization.k8s.io" "v1" "ClusterRole" => k::rbac::v1::ClusterRole;
    "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => k::rbac::v1::ClusterRoleBinding;
    "rbac.authorization.k8s.io" "v1" "Role" => k::rbac::v1::Role;
    "rbac.authorization.k8s.io" "v1" "RoleBinding" => k::rbac::v1::RoleBinding;
    "scheduling.k8s.io" "v1" "PriorityClass" => k::scheduling::v1::PriorityClass;
    "storage.k8s.io" "v1" "CSIDriver" => k::storage::v1::CSIDriver;
    "storage.k8s.io" "v1" "CSINode" => k::storage::v1::CSINode;
    "storage.k8s.io" "v1" "CSIStorageCapacity" => k::storage::v1::CSIStorageCapacity;
    "storage.k8s.io" "v1" "StorageClass" => k::storage::v1::StorageClass;
    "storage.k8s.io" "v1" "VolumeAttachment" => k::storage::v1::VolumeAttachment;
}

/// Whether k8s-openapi provides the schema of a kind (else it gets a
/// minimal schema that keeps unknown fields).
#[cfg(test)]
pub(super) fn is_known(group: &str, version: &str, kind: &str) -> bool {
    let mut gen = SchemaSettings::openapi3().into_generator();
    register_kind(&mut gen, group, version, kind).is_some()
}

/// Upstream's definition name for a kind k8s-openapi does not know:
/// `io.k8s.api.<first label of the group>.<version>.<Kind>` for built-in
/// groups, the reversed group for others (as upstream names CRD schemas).
fn fallback_name(r: &ResourceInfo) -> String {
    let pkg = if r.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else if r.group.ends_with(".k8s.io") || !r.group.contains('.') {
        format!("io.k8s.api.{}", r.group.split('.').next().unwrap_or(r.group))
    } else {
        r.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{pkg}.{}.{}", r.version, r.kind)
}

fn ref_to(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn with_desc(mut schema: Value, desc: &str) -> Value {
    schema["description"] = Value::String(desc.to_string());
    schema
}

fn type_meta_props(props: &mut Map<String, Value>) {
    props.insert("apiVersion".into(), json!({ "description": API_VERSION_DESC, "type": "string" }));
    props.insert("kind".into(), json!({ "description": KIND_DESC, "type": "string" }));
}

/// A schema for a kind without a typed schema: the object metadata is
/// described, every other field is kept as it comes.
fn fallback_schema(r: &ResourceInfo) -> Value {
    let mut props = Map::new();
    type_meta_props(&mut props);
    props.insert(
        "metadata".into(),
        with_desc(ref_to(OBJECT_META), "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"),
    );
    json!({
        "description": format!("{} is served by this server without a detailed schema.", r.kind),
        "type": "object",
        "properties": props,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The `<Kind>List` schema upstream generates for every kind.
fn list_schema(kind: &str, kind_def: &str) -> Value {
    let mut props = Map::new();
    type_meta_props(&mut props);
    props.insert(
        "items".into(),
        json!({
            "description": format!("items is the list of {kind} objects."),
            "type": "array",
            "items": ref_to(kind_def),
        }),
    );
    props.insert(
        "metadata".into(),
        with_desc(ref_to(LIST_META), "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"),
    );
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": props,
    })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn add_gvk(def: &mut Value, gvk: Value) {
    let Some(obj) = def.as_object_mut() else { return };
    let list = obj
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(a) = list {
        if !a.contains(&gvk) {
            a.push(gvk);
        }
    }
}

/// Applies `extensions.txt` to the definitions it names.
fn apply_extensions(defs: &mut BTreeMap<String, Value>) {
    for line in EXTENSIONS.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(def), Some(prop)) = (words.next(), words.next()) else { continue };
        let Some(schema) = defs.get_mut(def) else { continue };
        let target = if prop == "-" {
            Some(schema)
        } else {
            schema.get_mut("properties").and_then(|p| p.get_mut(prop))
        };
        let Some(Value::Object(target)) = target else { continue };
        for kv in words {
            let Some((key, value)) = kv.split_once('=') else { continue };
            let value = if key == "list-map-keys" {
                Value::Array(value.split(',').map(|s| Value::String(s.into())).collect())
            } else {
                Value::String(value.into())
            };
            target.insert(format!("x-kubernetes-{key}"), value);
        }
    }
}

/// Builds every definition the documents use.
pub(super) fn build() -> Schemas {
    let mut gen = SchemaSettings::openapi3().into_generator();
    gen.subschema_for::<meta::ObjectMeta>();
    gen.subschema_for::<meta::ListMeta>();
    gen.subschema_for::<meta::Status>();
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::Patch>();
    gen.subschema_for::<meta::APIResourceList>();
    gen.subschema_for::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>();
    gen.subschema_for::<k::autoscaling::v1::Scale>();

    let mut kinds = Vec::new();
    let mut fallbacks = Vec::new();
    for r in CATALOG {
        match register_kind(&mut gen, r.group, r.version, r.kind) {
            Some(name) => kinds.push((r, name)),
            None => {
                let name = fallback_name(r);
                fallbacks.push((name.clone(), fallback_schema(r)));
                kinds.push((r, name));
            }
        }
    }

    let mut defs: BTreeMap<String, Value> = gen
        .take_definitions()
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect();
    defs.extend(fallbacks);

    // Upstream describes IntOrString as a string of format int-or-string.
    if let Some(Value::Object(ios)) = defs.get_mut(INT_OR_STRING) {
        ios.remove("x-kubernetes-int-or-string");
        ios.insert("type".into(), "string".into());
        ios.insert("format".into(), "int-or-string".into());
    }

    for (r, name) in &kinds {
        let list = format!("{name}List");
        defs.entry(list.clone()).or_insert_with(|| list_schema(r.kind, name));
        if let Some(def) = defs.get_mut(name) {
            add_gvk(def, gvk(r.group, r.version, r.kind));
        }
        if let Some(def) = defs.get_mut(&list) {
            add_gvk(def, gvk(r.group, r.version, &format!("{}List", r.kind)));
        }
    }
    apply_extensions(&mut defs);

    // The meta kinds every group/version shares.
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    for r in CATALOG {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    gvs.sort();
    for (group, version) in gvs {
        for (def, kind) in [(DELETE_OPTIONS, "DeleteOptions"), (WATCH_EVENT, "WatchEvent")] {
            if let Some(d) = defs.get_mut(def) {
                add_gvk(d, gvk(group, version, kind));
            }
        }
    }
    for (def, group, kind) in [(STATUS, "", "Status"), (API_RESOURCE_LIST, "", "APIResourceList"), (SCALE, "autoscaling", "Scale")] {
        if let Some(d) = defs.get_mut(def) {
            add_gvk(d, gvk(group, "v1", kind));
        }
    }

    Schemas { defs, kinds }
}

/// OpenAPI 3.0 ignores the siblings of a `$ref`; upstream wraps such refs in
/// a one-element `allOf` so that descriptions survive. Same here.
pub(super) fn to_v3(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if m.len() > 1 {
                if let Some(r) = m.get("$ref") {
                    let mut out = Map::new();
                    out.insert("allOf".into(), json!([{ "$ref": r }]));
                    for (k, v) in m {
                        if k != "$ref" {
                            out.insert(k.clone(), to_v3(v));
                        }
                    }
                    return Value::Object(out);
                }
            }
            Value::Object(m.iter().map(|(k, v)| (k.clone(), to_v3(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

/// Swagger 2.0 keeps `$ref` siblings; only the prefix differs.
pub(super) fn to_v2(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => (
                        k.clone(),
                        Value::String(match r.strip_prefix(REF_PREFIX) {
                            Some(name) => format!("{V2_REF_PREFIX}{name}"),
                            None => r.clone(),
                        }),
                    ),
                    _ => (k.clone(), to_v2(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}
