//! The scheduler's writes: the binding, the PodScheduled condition,
//! nominatedNodeName, victims' deletion, and core/v1 Events.

use chrono::Utc;
use client::eventlog::Report;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

pub const COMPONENT: &str = "default-scheduler";

pub enum BindError {
    /// The pod is gone or already bound: forget it.
    Gone,
    /// Try again later.
    Retry(kube::Error),
}

pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), BindError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let body = serde_json::to_vec(&binding).expect("binding serializes");
    match api.create_subresource::<serde_json::Value>("binding", name, &PostParams::default(), body).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Err(BindError::Gone),
        Err(e) => Err(BindError::Retry(e)),
    }
}

/// Sets PodScheduled=False/Unschedulable with `message` (and, when
/// preempting, status.nominatedNodeName).
pub async fn mark_unschedulable(client: &Client, pod: &Pod, message: &str, nominated: Option<&str>) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut status = json!({"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }]});
    if let Some(n) = nominated {
        status["nominatedNodeName"] = json!(n);
    }
    let patch = json!({"status": status});
    if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        tracing::debug!(pod = name, "setting PodScheduled=False: {e}");
    }
}

pub async fn delete_victim(client: &Client, victim: &Pod, preemptor: &Pod, node: &str) {
    let ns = victim.metadata.namespace.as_deref().unwrap_or("default");
    let name = victim.metadata.name.as_deref().unwrap_or("");
    let msg = format!("Preempted by pod {} on node {node}", preemptor.metadata.uid.as_deref().unwrap_or(""));
    event(client, victim, "Normal", "Preempted", "Preempting", &msg, "").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api.delete(name, &DeleteParams::default()).await {
        tracing::debug!(pod = name, "deleting preemption victim: {e}");
    }
}

/// Records a core/v1 Event about `pod` from the default-scheduler.
pub async fn event(client: &Client, pod: &Pod, type_: &str, reason: &str, action: &str, message: &str, instance: &str) {
    let about = client::eventlog::reference(pod);
    let instance = if instance.is_empty() { COMPONENT } else { instance };
    let report = Report { component: COMPONENT, instance, host: None, about, type_, reason, action: Some(action), message: message.into() };
    client::eventlog::emit(client, report).await
}
