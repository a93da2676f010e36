//! This node's endpoint of `kube-system/kube-dns`: an EndpointSlice
//! `kube-dns-<node>` with the address the node's DNS server listens on,
//! owned by the Node so the garbage collector removes it with the node.
//! The Service has `internalTrafficPolicy: Local`, so the service proxy
//! sends each pod's queries to its own node's server.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

pub const NAMESPACE: &str = "kube-system";
pub const SERVICE: &str = "kube-dns";
/// (A label value may not hold a `/`, so not `skiff.dev/agent`.)
pub const MANAGED_BY: &str = "agent.skiff.dev";
/// How often the slice is checked again (someone may have deleted or changed it).
const RECHECK: Duration = Duration::from_secs(60);

pub fn slice_name(node: &str) -> String {
    format!("{SERVICE}-{node}")
}

/// The slice for `node` (with the Node's UID) listening on `address`.
pub fn desired(node: &str, node_uid: &str, address: Ipv4Addr) -> EndpointSlice {
    let labels = BTreeMap::from([
        ("kubernetes.io/service-name".to_string(), SERVICE.to_string()),
        ("endpointslice.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string()),
    ]);
    let port = |name: &str, protocol: &str| EndpointPort { name: Some(name.into()), port: Some(53), protocol: Some(protocol.into()), app_protocol: None };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(node)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.into(),
                uid: node_uid.into(),
                controller: None,
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![address.to_string()],
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
            ..Default::default()
        }],
        ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
    }
}

/// Creates the slice, or brings an existing one back to what it should be.
pub async fn ensure(client: &kube::Client, node: &str, address: Ipv4Addr) -> anyhow::Result<()> {
    let uid = Api::<Node>::all(client.clone()).get(node).await?.metadata.uid.unwrap_or_default();
    let want = desired(node, &uid, address);
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let name = slice_name(node);
    match api.get_opt(&name).await? {
        None => drop(api.create(&PostParams::default(), &want).await?),
        Some(cur) => {
            let same = cur.endpoints == want.endpoints
                && cur.ports == want.ports
                && cur.metadata.owner_references == want.metadata.owner_references
                && want.metadata.labels.iter().flatten().all(|(k, v)| cur.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
            if !same {
                let mut next = cur.clone();
                next.metadata.labels.get_or_insert_with(Default::default).extend(want.metadata.labels.clone().unwrap_or_default());
                next.metadata.owner_references = want.metadata.owner_references;
                next.endpoints = want.endpoints;
                next.ports = want.ports;
                next.address_type = want.address_type;
                api.replace(&name, &PostParams::default(), &next).await?;
            }
        }
    }
    Ok(())
}

/// Keeps the slice in place until the task is aborted: retries while the
/// API fails, then checks it again every minute.
pub async fn keep(client: kube::Client, node: String, address: Ipv4Addr) {
    let mut failures = 0u32;
    loop {
        match ensure(&client, &node, address).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(node, %address, "cluster DNS endpoint published");
                }
                failures = 0;
                tokio::time::sleep(RECHECK).await;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(node, "publishing the cluster DNS endpoint {NAMESPACE}/{}: {e:#}; retrying", slice_name(&node));
                }
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(10)))).await;
            }
        }
    }
}
