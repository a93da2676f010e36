//! Keeps the multi-node pod network (`network::overlay`) in step with the
//! Nodes: this node's VTEP MAC and IP go on its Node object as flannel's
//! annotations; a Node watch turns every other node's podCIDR, IP and MAC
//! into routes (and for vxlan neighbour and FDB entries). The first full
//! listing reconciles, so entries of nodes deleted while the agent was
//! down are removed as well.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use network::overlay::{Overlay, Peer, ANNOTATION_BACKEND_DATA, ANNOTATION_PUBLIC_IP};

const RETRY: Duration = Duration::from_secs(2);

/// Runs until aborted; errors are logged and retried.
pub async fn run(client: kube::Client, node_name: String, overlay: Overlay) {
    loop {
        match overlay.ensure_device().await {
            Ok(()) => break,
            Err(e) => tracing::error!(device = overlay.device, "setting up the {} overlay: {e:#}; retrying", overlay.backend),
        }
        tokio::time::sleep(RETRY * 5).await;
    }
    let api: Api<Node> = Api::all(client);
    let wanted = overlay.annotations();
    let mut peers: BTreeMap<String, Peer> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, Peer>> = None;
    let mut published = false;
    let mut dirty = false;
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(backend = %overlay.backend, device = overlay.device, "multi-node pod network starting");
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => init = Some(BTreeMap::new()),
                    Ok(watcher::Event::InitApply(n)) => {
                        published &= !is_own_unannotated(&n, &node_name, &wanted);
                        if let (Some(init), Some(p)) = (init.as_mut(), peer(&n, &node_name)) {
                            init.insert(p.name.clone(), p);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        peers = init.take().unwrap_or_default();
                        dirty = true;
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        published &= !is_own_unannotated(&n, &node_name, &wanted);
                        let name = n.metadata.name.clone().unwrap_or_default();
                        let new = peer(&n, &node_name);
                        if peers.get(&name) != new.as_ref() {
                            match new {
                                Some(p) => peers.insert(name, p),
                                None => peers.remove(&name),
                            };
                            dirty = true;
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        dirty |= peers.remove(n.metadata.name.as_deref().unwrap_or_default()).is_some();
                    }
                    Err(e) => tracing::warn!("watching Nodes for the pod network: {e}"),
                }
            }
            _ = retry.tick() => {}
        }
        if !published {
            let patch = Patch::Merge(serde_json::json!({"metadata": {"annotations": wanted}}));
            match api.patch(&node_name, &PatchParams::default(), &patch).await {
                Ok(_) => published = true,
                Err(e) => tracing::debug!(node = node_name, "publishing the VTEP annotations: {e}"),
            }
        }
        if dirty && init.is_none() {
            let list: Vec<Peer> = peers.values().cloned().collect();
            match overlay.sync(&list).await {
                Ok(()) => {
                    dirty = false;
                    tracing::info!(peers = list.len(), "pod network routes to other nodes updated");
                }
                Err(e) => {
                    tracing::warn!("updating routes to other nodes: {e:#}; retrying");
                    // The device may have been deleted under us.
                    if let Err(e) = overlay.ensure_device().await {
                        tracing::warn!("{e:#}");
                    }
                }
            }
        }
    }
}

/// Is `n` this node without (the current) annotations? Then they are written again.
fn is_own_unannotated(n: &Node, node_name: &str, wanted: &BTreeMap<String, String>) -> bool {
    if n.metadata.name.as_deref() != Some(node_name) {
        return false;
    }
    let have = n.metadata.annotations.as_ref();
    wanted.iter().any(|(k, v)| have.and_then(|a| a.get(k)) != Some(v))
}

/// Another node as a peer, once it has a podCIDR and its annotations.
fn peer(n: &Node, own: &str) -> Option<Peer> {
    let name = n.metadata.name.clone()?;
    if name == own {
        return None;
    }
    let pod_cidr = n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    let annotations = n.metadata.annotations.as_ref()?;
    let node_ip: Ipv4Addr = annotations.get(ANNOTATION_PUBLIC_IP)?.parse().ok()?;
    let vtep_mac = annotations
        .get(ANNOTATION_BACKEND_DATA)
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|d| d["VtepMAC"].as_str().map(String::from));
    Some(Peer { name, pod_cidr, node_ip, vtep_mac })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peers_come_from_annotations() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "b", "annotations": {
                ANNOTATION_PUBLIC_IP: "10.0.0.2",
                ANNOTATION_BACKEND_DATA: "{\"VNI\":1,\"VtepMAC\":\"0e:01:02:03:04:05\"}",
            }},
            "spec": {"podCIDR": "10.42.1.0/24"},
        }))
        .unwrap();
        let p = peer(&n, "a").unwrap();
        assert_eq!(p.node_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.pod_cidr.to_string(), "10.42.1.0/24");
        assert_eq!(p.vtep_mac.as_deref(), Some("0e:01:02:03:04:05"));
        assert!(peer(&n, "b").is_none(), "not its own peer");
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": {"podCIDR": "10.42.2.0/24"}})).unwrap();
        assert!(peer(&bare, "a").is_none());
    }
}
