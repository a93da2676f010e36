//! core/v1 Events about pods from `kubelet` on this node (source host = the
//! node name), through `client::eventlog` and so with upstream's
//! correlation: repeats bump `count`, similar events combine, and each
//! object is rate limited.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;

const COMPONENT: &str = "kubelet";

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    host: String,
}

/// The reference an event about a pod (or one of its containers) points at.
pub fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let spec = pod.spec.clone().unwrap_or_default();
    let field_path = container.map(|name| {
        if spec.init_containers.iter().flatten().any(|c| c.name == name) {
            format!("spec.initContainers{{{name}}}")
        } else if spec.ephemeral_containers.iter().flatten().any(|c| c.name == name) {
            format!("spec.ephemeralContainers{{{name}}}")
        } else {
            format!("spec.containers{{{name}}}")
        }
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

impl Recorder {
    pub fn new(client: Client, host: String) -> Recorder {
        Recorder { client, host }
    }

    pub fn normal(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Normal", reason, message);
    }

    pub fn warning(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Warning", reason, message);
    }

    /// Records in the background; failures are only logged.
    pub fn record(&self, about: ObjectReference, type_: &str, reason: &str, message: String) {
        let (client, host, type_, reason) = (self.client.clone(), self.host.clone(), type_.to_string(), reason.to_string());
        tokio::spawn(async move {
            let report = client::eventlog::Report {
                component: COMPONENT,
                instance: &host,
                host: Some(&host),
                about,
                type_: &type_,
                reason: &reason,
                action: None,
                message,
            };
            client::eventlog::emit(&client, report).await
        });
    }
}
