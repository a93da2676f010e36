//! The built-in service load balancer, in the way of k3s's ServiceLB: a
//! `LoadBalancer` Service without a `loadBalancerClass` is given the nodes'
//! addresses as `status.loadBalancer.ingress`, and every node's service
//! proxy answers on them (the proxy treats ingress IPs like externalIPs).
//! A Service with a `loadBalancerClass` is left to that class's controller,
//! and one that stops being a LoadBalancer has its ingress cleared, as
//! upstream's service controller does.

use std::time::Duration;

use client::informer::{benign, ready, Watched};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

/// Node label that keeps a node out of external load balancers (upstream's).
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Changes are gathered this long: node heartbeats arrive all the time, and
/// one pass per period covers any number of them.
const PERIOD: Duration = Duration::from_secs(1);

pub async fn run(client: Client, (nodes, node_events): Watched<Node>, (services, service_events): Watched<Service>) {
    let mut events = futures::stream::select(node_events.map(drop), service_events.map(drop));
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    loop {
        tokio::select! {
            e = events.next() => match e {
                Some(()) => dirty = true,
                None => return,
            },
            _ = tick.tick(), if dirty => {
                if !(ready(&nodes) && ready(&services)) {
                    continue;
                }
                dirty = false;
                let ingress = ingress_for(&nodes.state());
                for svc in services.state() {
                    if let Some(want) = wanted_status(&svc, &ingress) {
                        write_status(&client, &svc, want).await;
                    }
                }
            }
        }
    }
}

/// The ingress entries for the current nodes: each Ready node's ExternalIP,
/// else its InternalIP, sorted so the status only changes with the nodes.
pub fn ingress_for(nodes: &[std::sync::Arc<Node>]) -> Vec<Value> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| !n.labels().contains_key(EXCLUDE_LABEL) && is_ready(n))
        .filter_map(|n| node_address(n))
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect()
}

fn is_ready(n: &Node) -> bool {
    let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn node_address(n: &Node) -> Option<String> {
    let addresses = n.status.as_ref()?.addresses.as_ref()?;
    let of = |t: &str| addresses.iter().find(|a| a.type_ == t).map(|a| a.address.clone());
    of("ExternalIP").or_else(|| of("InternalIP"))
}

/// The `status.loadBalancer` this Service should have, when it differs from
/// what it has; None when there is nothing to write.
pub fn wanted_status(svc: &Service, ingress: &[Value]) -> Option<Value> {
    let spec = svc.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    let current: Vec<Value> = current.iter().map(|i| json!({"ip": i.ip, "ipMode": i.ip_mode})).collect();
    let want: Vec<Value> = if spec.type_.as_deref() == Some("LoadBalancer") { ingress.to_vec() } else { Vec::new() };
    (current != want).then(|| json!({"ingress": want}))
}

async fn write_status(client: &Client, svc: &Service, load_balancer: Value) {
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    // A merge patch replaces the ingress list whole; the resourceVersion
    // makes a write from a stale cache fail instead of undoing a newer one.
    let patch = json!({"metadata": {"resourceVersion": svc.resource_version()}, "status": {"loadBalancer": load_balancer}});
    match api.patch_status(&svc.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(service = format!("{ns}/{}", svc.name_any()), "service load balancer: ingress {}", load_balancer["ingress"]),
        Err(e) if benign(&e) => {}
        Err(e) => tracing::warn!(service = format!("{ns}/{}", svc.name_any()), "service load balancer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(name: &str, ip: &str, ready: bool, labels: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap(),
        )
    }

    fn service(spec: Value, ingress: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress}}}))
        .unwrap()
    }

    #[test]
    fn ready_nodes_not_excluded_give_the_ingress() {
        let nodes = [
            node("b", "10.0.0.2", true, json!({})),
            node("a", "10.0.0.1", true, json!({})),
            node("c", "10.0.0.3", false, json!({})),
            node("d", "10.0.0.4", true, json!({EXCLUDE_LABEL: ""})),
        ];
        let ingress = ingress_for(&nodes);
        assert_eq!(ingress, vec![json!({"ip": "10.0.0.1", "ipMode": "VIP"}), json!({"ip": "10.0.0.2", "ipMode": "VIP"})]);
    }

    #[test]
    fn status_follows_the_type_and_class() {
        let ingress = vec![json!({"ip": "10.0.0.1", "ipMode": "VIP"})];
        let lb = service(json!({"type": "LoadBalancer"}), json!([]));
        assert_eq!(wanted_status(&lb, &ingress), Some(json!({"ingress": ingress})));
        let done = service(json!({"type": "LoadBalancer"}), json!(ingress));
        assert_eq!(wanted_status(&done, &ingress), None, "nothing to write when it is current");
        let classed = service(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}), json!([]));
        assert_eq!(wanted_status(&classed, &ingress), None, "another controller's Service is left alone");
        let was_lb = service(json!({"type": "ClusterIP"}), json!(ingress));
        assert_eq!(wanted_status(&was_lb, &ingress), Some(json!({"ingress": []})), "no longer a LoadBalancer: cleared");
        let plain = service(json!({"type": "ClusterIP"}), json!([]));
        assert_eq!(wanted_status(&plain, &ingress), None);
    }
}
