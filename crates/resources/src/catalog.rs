//! The resource catalog: one entry per served kind. Everything the generic
//! REST path needs to know about a kind lives here (names, scope, discovery
//! facts, subresources, selectable fields, the typed schema) so that no kind
//! needs a handler of its own.

use k8s_openapi::api as k;
use serde_json::Value;

/// Where the `/scale` subresource reads and writes its numbers.
#[derive(Clone, Copy, Debug)]
pub struct ScaleSpec {
    /// The selector as a metav1.LabelSelector (`spec.selector`) or, for
    /// ReplicationControllers, a plain label map.
    pub selector_is_map: bool,
}

/// A selectable field: the name clients use in `fieldSelector`, the JSON
/// path it reads (they differ for e.g. events' `source`), and the text an
/// unset field compares as: upstream reads Go values, so an unset bool is
/// "false" and an unset count "0".
pub type SelectableField = (&'static str, &'static str, &'static str);

pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource (and the main resource ignores status).
    pub status: bool,
    pub scale: Option<ScaleSpec>,
    /// `metadata.generation` is set on create and bumped on spec changes.
    pub generation: bool,
    /// Field selectors beyond metadata.name and metadata.namespace.
    pub fields: &'static [SelectableField],
    /// Kinds served in several versions share one storage prefix.
    pub storage: &'static str,
    /// Decode into the k8s-openapi type and encode again: checks types and
    /// drops unknown fields, exactly like upstream's decode into Go structs.
    pub typed: fn(&Value) -> Result<Value, String>,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.kind == "Namespace" {
            &["create", "delete", "get", "list", "patch", "update", "watch"]
        } else if self.kind == "ComponentStatus" {
            &["get", "list"]
        } else if self.kind == "Binding" {
            &["create"]
        } else {
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        }
    }

    /// A DELETE that removes the object answers with the object instead of
    /// a Success Status: upstream's `ReturnDeletedObject` stores.
    pub fn returns_deleted_object(&self) -> bool {
        const KINDS: &[(&str, &str)] = &[
            ("", "pods"), ("", "podtemplates"), ("", "services"), ("", "serviceaccounts"),
            ("", "persistentvolumes"), ("", "persistentvolumeclaims"), ("", "resourcequotas"), ("", "namespaces"),
            ("storage.k8s.io", "storageclasses"), ("storage.k8s.io", "volumeattachments"),
            ("storage.k8s.io", "csinodes"), ("storage.k8s.io", "csidrivers"), ("storage.k8s.io", "volumeattributesclasses"),
        ];
        KINDS.contains(&(self.group, self.plural))
    }

    /// A delete that names no propagation policy orphans the dependents, kept
    /// by upstream for these kinds' v1 API (`DefaultGarbageCollectionPolicy`).
    pub fn orphans_by_default(&self) -> bool {
        matches!((self.group, self.plural), ("", "replicationcontrollers") | ("batch", "jobs"))
    }

    /// The path of a selectable field and the text it has when unset, or
    /// None when the kind does not support it.
    pub fn field_path(&self, name: &str) -> Option<(&'static str, &'static str)> {
        match name {
            "metadata.name" => Some(("metadata.name", "")),
            "metadata.namespace" if self.namespaced => Some(("metadata.namespace", "")),
            _ => self.fields.iter().find(|(n, _, _)| *n == name).map(|(_, p, unset)| (*p, *unset)),
        }
    }
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
    let obj: T = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.inner().to_string()
        } else {
            format!("{}: {}", path, e.inner())
        }
    })?;
    serde_json::to_value(obj).map_err(|e| e.to_string())
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const SCALE_SEL: Option<ScaleSpec> = Some(ScaleSpec { selector_is_map: false });

const POD_FIELDS: &[SelectableField] = &[
    ("spec.nodeName", "spec.nodeName", ""),
    ("spec.restartPolicy", "spec.restartPolicy", ""),
    ("spec.schedulerName", "spec.schedulerName", ""),
    ("spec.serviceAccountName", "spec.serviceAccountName", ""),
    ("spec.hostNetwork", "spec.hostNetwork", "false"),
    ("status.phase", "status.phase", ""),
    ("status.podIP", "status.podIP", ""),
    ("status.nominatedNodeName", "status.nominatedNodeName", ""),
];
const EVENT_FIELDS: &[SelectableField] = &[
    ("involvedObject.kind", "involvedObject.kind", ""),
    ("involvedObject.namespace", "involvedObject.namespace", ""),
    ("involvedObject.name", "involvedObject.name", ""),
    ("involvedObject.uid", "involvedObject.uid", ""),
    ("involvedObject.apiVersion", "involvedObject.apiVersion", ""),
    ("involvedObject.resourceVersion", "involvedObject.resourceVersion", ""),
    ("involvedObject.fieldPath", "involvedObject.fieldPath", ""),
    ("reason", "reason", ""),
    ("reportingComponent", "reportingComponent", ""),
    ("source", "source.component", ""),
    ("type", "type", ""),
];

macro_rules! entry {
    ($group:expr, $version:expr, $kind:tt, $plural:literal, $ty:ty, ns=$ns:expr,
     short=$short:expr, cat=$cat:expr, status=$status:expr, scale=$scale:expr, gen=$gen:expr,
     fields=$fields:expr, storage=$storage:literal) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: const_lower!($kind),
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            status: $status,
            scale: $scale,
            generation: $gen,
            fields: $fields,
            storage: $storage,
            typed: typed::<$ty>,
        }
    };
}

// Singular names are the lower-cased kind; spelled out to stay const.
macro_rules! const_lower {
    ("Pod") => { "pod" }; ("Service") => { "service" }; ("Endpoints") => { "endpoints" };
    ("ConfigMap") => { "configmap" }; ("Secret") => { "secret" };
    ("ServiceAccount") => { "serviceaccount" }; ("Node") => { "node" }; ("Event") => { "event" };
    ("Namespace") => { "namespace" }; ("PersistentVolume") => { "persistentvolume" };
    ("PersistentVolumeClaim") => { "persistentvolumeclaim" };
    ("ReplicationController") => { "replicationcontroller" }; ("LimitRange") => { "limitrange" };
    ("ResourceQuota") => { "resourcequota" }; ("PodTemplate") => { "podtemplate" };
    ("Deployment") => { "deployment" }; ("ReplicaSet") => { "replicaset" };
    ("StatefulSet") => { "statefulset" }; ("DaemonSet") => { "daemonset" };
    ("ControllerRevision") => { "controllerrevision" }; ("Job") => { "job" };
    ("CronJob") => { "cronjob" }; ("HorizontalPodAutoscaler") => { "horizontalpodautoscaler" };
    ("PodDisruptionBudget") => { "poddisruptionbudget" }; ("Ingress") => { "ingress" };
    ("IngressClass") => { "ingressclass" }; ("NetworkPolicy") => { "networkpolicy" };
    ("EndpointSlice") => { "endpointslice" }; ("Lease") => { "lease" }; ("Role") => { "role" };
    ("RoleBinding") => { "rolebinding" }; ("ClusterRole") => { "clusterrole" };
    ("ClusterRoleBinding") => { "clusterrolebinding" }; ("StorageClass") => { "storageclass" };
    ("PriorityClass") => { "priorityclass" }; ("ComponentStatus") => { "componentstatus" };
    ("APIService") => { "apiservice" }; ("Binding") => { "binding" };
    ("RuntimeClass") => { "runtimeclass" };
}

/// Every served kind, in the order discovery lists them.
pub static CATALOG: &[ResourceInfo] = &[
    // core/v1
    entry!("", "v1", "Pod", "pods", k::core::v1::Pod, ns=true, short=&["po"], cat=ALL, status=true, scale=None, gen=true, fields=POD_FIELDS, storage="pods"),
    entry!("", "v1", "Service", "services", k::core::v1::Service, ns=true, short=&["svc"], cat=ALL, status=true, scale=None, gen=false, fields=&[("spec.clusterIP", "spec.clusterIP", ""), ("spec.type", "spec.type", "")], storage="services"),
    entry!("", "v1", "Endpoints", "endpoints", k::core::v1::Endpoints, ns=true, short=&["ep"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="endpoints"),
    entry!("", "v1", "ConfigMap", "configmaps", k::core::v1::ConfigMap, ns=true, short=&["cm"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="configmaps"),
    entry!("", "v1", "Secret", "secrets", k::core::v1::Secret, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[("type", "type", "")], storage="secrets"),
    entry!("", "v1", "ServiceAccount", "serviceaccounts", k::core::v1::ServiceAccount, ns=true, short=&["sa"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="serviceaccounts"),
    entry!("", "v1", "Node", "nodes", k::core::v1::Node, ns=false, short=&["no"], cat=NONE, status=true, scale=None, gen=false, fields=&[("spec.unschedulable", "spec.unschedulable", "false")], storage="minions"),
    entry!("", "v1", "Event", "events", k::core::v1::Event, ns=true, short=&["ev"], cat=NONE, status=false, scale=None, gen=false, fields=EVENT_FIELDS, storage="events"),
    entry!("", "v1", "Namespace", "namespaces", k::core::v1::Namespace, ns=false, short=&["ns"], cat=NONE, status=true, scale=None, gen=false, fields=&[("status.phase", "status.phase", "")], storage="namespaces"),
    entry!("", "v1", "PersistentVolume", "persistentvolumes", k::core::v1::PersistentVolume, ns=false, short=&["pv"], cat=NONE, status=true, scale=None, gen=false, fields=&[], storage="persistentvolumes"),
    entry!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", k::core::v1::PersistentVolumeClaim, ns=true, short=&["pvc"], cat=NONE, status=true, scale=None, gen=false, fields=&[], storage="persistentvolumeclaims"),
    entry!("", "v1", "ReplicationController", "replicationcontrollers", k::core::v1::ReplicationController, ns=true, short=&["rc"], cat=ALL, status=true, scale=Some(ScaleSpec { selector_is_map: true }), gen=true, fields=&[("status.replicas", "status.replicas", "0")], storage="controllers"),
    entry!("", "v1", "LimitRange", "limitranges", k::core::v1::LimitRange, ns=true, short=&["limits"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="limitranges"),
    entry!("", "v1", "ResourceQuota", "resourcequotas", k::core::v1::ResourceQuota, ns=true, short=&["quota"], cat=NONE, status=true, scale=None, gen=false, fields=&[], storage="resourcequotas"),
    // Answered live, never stored (see the API server's components module).
    entry!("", "v1", "ComponentStatus", "componentstatuses", k::core::v1::ComponentStatus, ns=false, short=&["cs"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="componentstatuses"),
    // The legacy form of pods/binding: create only, never stored (see pods.rs).
    entry!("", "v1", "Binding", "bindings", k::core::v1::Binding, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="bindings"),
    entry!("", "v1", "PodTemplate", "podtemplates", k::core::v1::PodTemplate, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="podtemplates"),
    // apps/v1
    entry!("apps", "v1", "Deployment", "deployments", k::apps::v1::Deployment, ns=true, short=&["deploy"], cat=ALL, status=true, scale=SCALE_SEL, gen=true, fields=&[], storage="deployments"),
    entry!("apps", "v1", "ReplicaSet", "replicasets", k::apps::v1::ReplicaSet, ns=true, short=&["rs"], cat=ALL, status=true, scale=SCALE_SEL, gen=true, fields=&[], storage="replicasets"),
    entry!("apps", "v1", "StatefulSet", "statefulsets", k::apps::v1::StatefulSet, ns=true, short=&["sts"], cat=ALL, status=true, scale=SCALE_SEL, gen=true, fields=&[], storage="statefulsets"),
    entry!("apps", "v1", "DaemonSet", "daemonsets", k::apps::v1::DaemonSet, ns=true, short=&["ds"], cat=ALL, status=true, scale=None, gen=true, fields=&[], storage="daemonsets"),
    entry!("apps", "v1", "ControllerRevision", "controllerrevisions", k::apps::v1::ControllerRevision, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="controllerrevisions"),
    // batch/v1
    entry!("batch", "v1", "Job", "jobs", k::batch::v1::Job, ns=true, short=NONE, cat=ALL, status=true, scale=None, gen=true, fields=&[("status.successful", "status.succeeded", "0")], storage="jobs"),
    entry!("batch", "v1", "CronJob", "cronjobs", k::batch::v1::CronJob, ns=true, short=&["cj"], cat=ALL, status=true, scale=None, gen=true, fields=&[], storage="cronjobs"),
    // autoscaling: v2 is the storage form; v1 is converted (see conversion.rs).
    entry!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", k::autoscaling::v2::HorizontalPodAutoscaler, ns=true, short=&["hpa"], cat=ALL, status=true, scale=None, gen=true, fields=&[], storage="horizontalpodautoscalers"),
    entry!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", k::autoscaling::v1::HorizontalPodAutoscaler, ns=true, short=&["hpa"], cat=ALL, status=true, scale=None, gen=true, fields=&[], storage="horizontalpodautoscalers"),
    // policy/v1
    entry!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", k::policy::v1::PodDisruptionBudget, ns=true, short=&["pdb"], cat=NONE, status=true, scale=None, gen=true, fields=&[], storage="poddisruptionbudgets"),
    // networking.k8s.io/v1
    entry!("networking.k8s.io", "v1", "Ingress", "ingresses", k::networking::v1::Ingress, ns=true, short=&["ing"], cat=NONE, status=true, scale=None, gen=true, fields=&[], storage="ingress"),
    entry!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", k::networking::v1::IngressClass, ns=false, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="ingressclasses"),
    entry!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", k::networking::v1::NetworkPolicy, ns=true, short=&["netpol"], cat=NONE, status=false, scale=None, gen=true, fields=&[], storage="networkpolicies"),
    // discovery.k8s.io/v1
    entry!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", k::discovery::v1::EndpointSlice, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="endpointslices"),
    // coordination.k8s.io/v1
    entry!("coordination.k8s.io", "v1", "Lease", "leases", k::coordination::v1::Lease, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="leases"),
    // events.k8s.io/v1: same objects as core events (see conversion.rs).
    entry!("events.k8s.io", "v1", "Event", "events", k::events::v1::Event, ns=true, short=&["ev"], cat=NONE, status=false, scale=None, gen=false, fields=EVENT_FIELDS, storage="events"),
    // rbac.authorization.k8s.io/v1
    entry!("rbac.authorization.k8s.io", "v1", "Role", "roles", k::rbac::v1::Role, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="roles"),
    entry!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", k::rbac::v1::RoleBinding, ns=true, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="rolebindings"),
    entry!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", k::rbac::v1::ClusterRole, ns=false, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="clusterroles"),
    entry!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", k::rbac::v1::ClusterRoleBinding, ns=false, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="clusterrolebindings"),
    // storage.k8s.io/v1
    entry!("storage.k8s.io", "v1", "StorageClass", "storageclasses", k::storage::v1::StorageClass, ns=false, short=&["sc"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="storageclasses"),
    // scheduling.k8s.io/v1
    entry!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", k::scheduling::v1::PriorityClass, ns=false, short=&["pc"], cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="priorityclasses"),
    // node.k8s.io/v1
    entry!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", k::node::v1::RuntimeClass, ns=false, short=NONE, cat=NONE, status=false, scale=None, gen=false, fields=&[], storage="runtimeclasses"),
    // apiregistration.k8s.io/v1: the API server registers its own group versions.
    entry!("apiregistration.k8s.io", "v1", "APIService", "apiservices", k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService, ns=false, short=NONE, cat=&["api-extensions"], status=true, scale=None, gen=false, fields=&[], storage="apiservices"),
];

/// The group/versions served, in discovery order (preferred version first).
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in CATALOG {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// The entry for a group/version/plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    CATALOG
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The entry that stores a kind (its preferred version), for references by kind.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    CATALOG.iter().find(|r| r.group == group && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_roundtrip_drops_unknown_and_checks_types() {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "bogus": 1}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let out = (lookup("", "v1", "pods").unwrap().typed)(&pod).unwrap();
        assert!(out["metadata"].get("bogus").is_none());
        assert_eq!(out["spec"]["containers"][0]["image"], "i");
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5}});
        let err = (lookup("", "v1", "pods").unwrap().typed)(&bad).unwrap_err();
        assert!(err.contains("metadata.name"), "{err}");
    }

    #[test]
    fn every_entry_is_unique_and_has_a_singular_name() {
        for (i, a) in CATALOG.iter().enumerate() {
            for b in &CATALOG[i + 1..] {
                assert!(!(a.group == b.group && a.version == b.version && a.plural == b.plural));
            }
            assert_eq!(a.singular, a.kind.to_lowercase());
        }
    }
}
