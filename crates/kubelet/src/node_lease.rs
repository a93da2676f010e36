//! The node heartbeat Lease in kube-node-lease, shared by the real agent
//! and simulated nodes: holder = node name, 40 s, owned by the Node.

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_SECONDS: i32 = 40;
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Renews (or creates) the node's Lease; failures are logged, the next renewal retries.
pub async fn renew(client: &Client, node: &str, node_uid: Option<String>) {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renew_time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew_time});
    let patch = Patch::Merge(json!({"spec": spec}));
    let mut result = api.patch(node, &PatchParams::default(), &patch).await;
    for _ in 0..3 {
        match &result {
            Err(kube::Error::Api(e)) if e.code == 409 => result = api.patch(node, &PatchParams::default(), &patch).await,
            _ => break,
        }
    }
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let mut lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": LEASE_NAMESPACE}, "spec": spec});
            if let Some(uid) = node_uid {
                lease["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
            }
            match serde_json::from_value::<Lease>(lease) {
                Ok(lease) => {
                    if let Err(e) = api.create(&PostParams::default(), &lease).await {
                        tracing::warn!(node, "creating lease: {e}");
                    }
                }
                Err(e) => tracing::warn!("lease: {e}"),
            }
        }
        Err(e) => tracing::warn!(node, "renewing lease: {e}"),
    }
}
