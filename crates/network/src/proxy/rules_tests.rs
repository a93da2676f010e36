use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::*;
use crate::proxy::model::{Endpoint, ServicePort};

fn cidr() -> Ipv4Cidr {
    "10.42.0.0/16".parse().unwrap()
}

/// A node with the pod range 10.42.0.0/24 and the address 192.0.2.10.
fn node() -> NodeInfo {
    NodeInfo { cluster_cidr: cidr(), pod_cidr: Some("10.42.0.0/24".parse().unwrap()), node_ips: vec![Ipv4Addr::new(192, 0, 2, 10)] }
}

fn ep(last: u8, local: bool) -> Endpoint {
    Endpoint { ip: Ipv4Addr::new(10, 42, 0, last), port: 8080, ready: true, serving: true, terminating: false, local }
}

fn port(endpoints: Vec<Endpoint>) -> ServicePort {
    ServicePort::tcp("ns", "web", Ipv4Addr::new(10, 43, 0, 5), 80, endpoints)
}

/// The fragment as text with the hashes replaced by readable names.
fn render(sp: &ServicePort) -> String {
    let f = fragment(sp, &node());
    let mut text = Batch::new("t").tap(|b| b.change(None, Some(&f))).finish();
    let id = hash(&sp.key());
    text = text.replace(&id, "ID");
    for e in &sp.endpoints {
        let eid = endpoint_id(&sp.key(), e);
        text = text.replace(&eid, &format!("E{}", e.ip.octets()[3]));
    }
    text
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Batch {}

#[test]
fn names_are_short_and_stable() {
    assert_eq!(hash("ns/web/http/tcp"), hash("ns/web/http/tcp"));
    assert_ne!(hash("ns/web/http/tcp"), hash("ns/web/http/udp"));
    assert_eq!(hash("x").len(), 12);
}

#[test]
fn cluster_ip_with_two_endpoints() {
    let text = render(&port(vec![ep(3, true), ep(4, false)]));
    assert_eq!(
        text,
        "add chain ip t pick-2
add rule ip t pick-2 ip saddr != 10.42.0.0/16 jump mark-for-masquerade
add rule ip t pick-2 dnat ip to ip daddr . tcp dport . numgen random mod 2 map @service-endpoints-tcp
add rule ip t pick-2 dnat ip to ip daddr . udp dport . numgen random mod 2 map @service-endpoints-udp
add rule ip t pick-2 dnat ip to ip daddr . sctp dport . numgen random mod 2 map @service-endpoints-sctp
add element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 0 : 10.42.0.3 . 8080, 10.43.0.5 . 80 . 1 : 10.42.0.4 . 8080 }
add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto pick-2 }
"
    );
    let f = fragment(&port(vec![ep(3, true), ep(4, false)]), &node());
    assert!(f.chains.is_empty() && f.maps.is_empty() && f.sets.is_empty(), "no per-service objects: {f:?}");
    assert_eq!(f.hairpin, [Ipv4Addr::new(10, 42, 0, 3), Ipv4Addr::new(10, 42, 0, 4)]);
}

#[test]
fn shared_chains_are_declared_once() {
    let a = fragment(&port(vec![ep(3, true), ep(4, false)]), &node());
    let mut other = port(vec![ep(5, true), ep(6, false)]);
    other.name = "api".into();
    other.cluster_ips = vec![Ipv4Addr::new(10, 43, 0, 6)];
    let b = fragment(&other, &node());
    let mut batch = Batch::new("t");
    batch.change(None, Some(&a));
    batch.change(None, Some(&b));
    let text = batch.finish();
    assert_eq!(text.matches("add chain ip t pick-2\n").count(), 1, "{text}");
    let mut batch = Batch::with_shared("t", BTreeSet::from(["pick-2".to_string()]));
    batch.change(None, Some(&b));
    assert!(!batch.finish().contains("add chain"));
}

#[test]
fn no_endpoints_rejects() {
    let mut sp = port(vec![]);
    sp.node_port = Some(30080);
    sp.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    assert_eq!(
        render(&sp),
        "add element ip t no-endpoint-nodeports { tcp . 30080 : goto reject-chain }
add element ip t no-endpoint-services { 10.43.0.5 . tcp . 80 : goto reject-chain, 192.0.2.7 . tcp . 80 : goto reject-chain }
"
    );
}

#[test]
fn affinity_keeps_endpoint_chains_and_sets_before_the_random_choice() {
    let mut sp = port(vec![ep(3, true)]);
    sp.affinity_timeout = Some(60);
    let text = render(&sp);
    assert!(text.contains("add set ip t aff-E3-60 { type ipv4_addr; flags dynamic,timeout; timeout 60s; }\n"), "{text}");
    assert!(text.contains("add rule ip t ep-E3 ip saddr 10.42.0.3 jump mark-for-masquerade\n"), "{text}");
    assert!(text.contains("add rule ip t ep-E3 update @aff-E3-60 { ip saddr }\n"), "{text}");
    let lookup = text.find("add rule ip t svc-ID ip saddr @aff-E3-60 goto ep-E3").expect(&text);
    assert!(lookup < text.find("vmap @svceps-ID").unwrap());
    assert!(fragment(&sp, &node()).hairpin.is_empty(), "the endpoint chains mark hairpin themselves");
}

#[test]
fn external_traffic_policy_local() {
    let mut sp = port(vec![ep(3, true), ep(4, false)]);
    sp.node_port = Some(30080);
    sp.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    sp.external_local = true;
    let text = render(&sp);
    let ext: Vec<&str> = text.lines().filter(|l| l.starts_with("add rule ip t ext-local-2-1 ")).collect();
    assert_eq!(
        ext,
        [
            "add rule ip t ext-local-2-1 ip saddr 10.42.0.0/16 goto pick-2",
            "add rule ip t ext-local-2-1 fib saddr type local jump mark-for-masquerade",
            "add rule ip t ext-local-2-1 fib saddr type local goto pick-2",
            "add rule ip t ext-local-2-1 goto local-pick-1",
        ]
    );
    assert!(text.contains("add rule ip t np-local-2-1 goto np-local-pick-1\n"), "{text}");
    assert!(text.contains("add rule ip t local-pick-1 dnat ip to ip daddr . tcp dport . numgen random mod 1 map @local-endpoints-tcp\n"), "{text}");
    assert!(text.contains("add rule ip t np-pick-2 dnat ip to tcp dport . numgen random mod 2 map @nodeport-endpoints-tcp\n"), "{text}");
    assert!(text.contains("add element ip t local-endpoints-tcp { 192.0.2.1 . 80 . 0 : 10.42.0.3 . 8080 }\n"), "{text}");
    assert!(text.contains("add element ip t nodeport-local-endpoints-tcp { 30080 . 0 : 10.42.0.3 . 8080 }\n"), "{text}");
    assert!(text.contains("add element ip t service-nodeports { tcp . 30080 : goto np-local-2-1 }\n"), "{text}");
    assert!(text.contains("add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto pick-2, 192.0.2.1 . tcp . 80 : goto ext-local-2-1 }\n"), "{text}");
    for chain in ["pick-2", "local-pick-1", "np-pick-2", "np-local-pick-1", "ext-local-2-1", "np-local-2-1"] {
        assert!(text.contains(&format!("add chain ip t {chain}\n")), "{chain}: {text}");
    }

    // No local endpoint: outside clients are dropped, pods still get an answer.
    let mut remote = sp.clone();
    remote.endpoints = vec![ep(4, false)];
    let text = render(&remote);
    assert!(text.contains("add rule ip t ext-local-1-0 drop\n"), "{text}");
    assert!(!text.contains("local-pick-0"), "{text}");
}

#[test]
fn external_traffic_policy_cluster_masquerades() {
    let mut sp = port(vec![ep(3, false)]);
    sp.node_port = Some(30080);
    let text = render(&sp);
    assert!(text.contains("add rule ip t np-1 jump mark-for-masquerade\nadd rule ip t np-1 dnat ip to tcp dport . numgen random mod 1 map @nodeport-endpoints-tcp\n"), "{text}");
    assert!(text.contains("add element ip t nodeport-endpoints-tcp { 30080 . 0 : 10.42.0.3 . 8080 }\n"), "{text}");
}

#[test]
fn internal_traffic_policy_local() {
    let mut sp = port(vec![ep(3, true), ep(4, false)]);
    sp.internal_local = true;
    let text = render(&sp);
    assert!(text.contains("add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto pick-1 }\n"), "{text}");
    assert!(text.contains("add element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 0 : 10.42.0.3 . 8080 }\n"), "{text}");
    sp.endpoints = vec![ep(4, false)];
    let text = render(&sp);
    assert!(text.contains("add element ip t no-endpoint-services { 10.43.0.5 . tcp . 80 : drop }\n"), "{text}");
}

#[test]
fn an_endpoint_change_touches_only_what_differs() {
    let old = fragment(&port(vec![ep(3, true), ep(4, false)]), &node());
    let new = fragment(&port(vec![ep(3, true), ep(5, false)]), &node());
    let mut b = Batch::with_shared("t", BTreeSet::from(["pick-2".to_string()]));
    b.change(Some(&old), Some(&new));
    assert_eq!(
        b.finish(),
        "delete element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 1 }
add element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 1 : 10.42.0.5 . 8080 }
"
    );
    // One endpoint fewer: a new shared chain, the Service's element points to it.
    let fewer = fragment(&port(vec![ep(3, true)]), &node());
    let mut b = Batch::with_shared("t", BTreeSet::from(["pick-2".to_string()]));
    b.change(Some(&old), Some(&fewer));
    let text = b.finish();
    assert!(text.starts_with("add chain ip t pick-1\n"), "{text}");
    assert!(text.contains("delete element ip t service-ips { 10.43.0.5 . tcp . 80 }\ndelete element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 1 }\n")
        || text.contains("delete element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 1 }\ndelete element ip t service-ips { 10.43.0.5 . tcp . 80 }\n"), "{text}");
    assert!(text.contains("add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto pick-1 }\n"), "{text}");
    // Nothing changed: nothing to send.
    let mut b = Batch::with_shared("t", BTreeSet::from(["pick-2".to_string()]));
    b.change(Some(&old), Some(&old));
    assert!(b.is_empty());
}

#[test]
fn an_affinity_endpoint_change_touches_only_what_differs() {
    let sticky = |eps| {
        let mut sp = port(eps);
        sp.affinity_timeout = Some(60);
        sp
    };
    let old = fragment(&sticky(vec![ep(3, true), ep(4, false)]), &node());
    let new = fragment(&sticky(vec![ep(3, true), ep(5, false)]), &node());
    let mut b = Batch::new("t");
    b.change(Some(&old), Some(&new));
    let sp = port(vec![ep(3, true), ep(4, false), ep(5, false)]);
    let mut text = b.finish().replace(&hash(&sp.key()), "ID");
    for e in &sp.endpoints {
        text = text.replace(&endpoint_id(&sp.key(), e), &format!("E{}", e.ip.octets()[3]));
    }
    assert!(text.contains("add chain ip t ep-E5\n"), "{text}");
    assert!(text.contains("flush map ip t svceps-ID\n"), "{text}");
    assert!(text.ends_with("flush chain ip t ep-E4\ndelete chain ip t ep-E4\ndelete set ip t aff-E4-60\n"), "{text}");
}

#[test]
fn hairpin_pairs_are_added_and_removed() {
    let mut b = Batch::new("t");
    b.hairpin([Ipv4Addr::new(10, 42, 0, 3)], [Ipv4Addr::new(10, 42, 0, 4)]);
    assert_eq!(
        b.finish(),
        "delete element ip t hairpin { 10.42.0.4 . 10.42.0.4 }\nadd element ip t hairpin { 10.42.0.3 . 10.42.0.3 }\n"
    );
}

#[test]
fn a_removed_service_is_unlinked_before_its_chains_go() {
    let mut sp = port(vec![ep(3, true)]);
    sp.affinity_timeout = Some(60);
    let old = fragment(&sp, &node());
    let mut b = Batch::new("t");
    b.change(Some(&old), None);
    let text = b.finish();
    let unlink = text.find("delete element ip t service-ips { 10.43.0.5 . tcp . 80 }").expect(&text);
    let map = text.find("delete map").unwrap();
    let chain = text.find("delete chain").unwrap();
    assert!(unlink < map && map < chain, "{text}");

    let old = fragment(&port(vec![ep(3, true)]), &node());
    let mut b = Batch::with_shared("t", BTreeSet::from(["pick-1".to_string()]));
    b.change(Some(&old), None);
    assert_eq!(
        b.finish(),
        "delete element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 0 }\ndelete element ip t service-ips { 10.43.0.5 . tcp . 80 }\n"
    );
}

#[test]
fn a_full_sync_recreates_the_table_atomically() {
    let f = fragment(&port(vec![ep(3, true)]), &node());
    let text = full("skiff_proxy", &Sizes::new(), [&f]).0;
    assert!(text.starts_with("add table ip skiff_proxy\ndelete table ip skiff_proxy\nadd table ip skiff_proxy\n"));
    assert!(text.contains("add chain ip skiff_proxy filter-prerouting { type filter hook prerouting priority -110; policy accept; }\n"));
    assert!(text.contains("add rule ip skiff_proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n"));
    assert!(text.contains("add rule ip skiff_proxy masquerading masquerade fully-random\n"));
    assert!(text.contains("add element ip skiff_proxy service-ips"));
    assert!(text.contains("add rule ip skiff_proxy masquerading ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade\n"));
    assert!(text.contains("add element ip skiff_proxy hairpin { 10.42.0.3 . 10.42.0.3 }\n"), "{text}");
    assert!(text.find("add chain ip skiff_proxy pick-1").unwrap() < text.find("add rule ip skiff_proxy pick-1").unwrap());
}

/// A LoadBalancer service port: ClusterIP 10.43.0.5, load balancer IP 192.0.2.1, NodePort 30080.
fn load_balancer(ranges: &[&str]) -> ServicePort {
    let mut sp = port(vec![ep(3, true)]);
    sp.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    sp.node_port = Some(30080);
    sp.source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    sp
}

#[test]
fn source_ranges_filter_the_load_balancer_ips_in_a_chain_of_their_own() {
    assert_eq!(
        render(&load_balancer(&["198.51.100.7/32", "203.0.113.0/24"])),
        "add chain ip t ext-1
add chain ip t np-1
add chain ip t pick-1
add chain ip t fw-ID
add rule ip t ext-1 jump mark-for-masquerade
add rule ip t ext-1 dnat ip to ip daddr . tcp dport . numgen random mod 1 map @service-endpoints-tcp
add rule ip t ext-1 dnat ip to ip daddr . udp dport . numgen random mod 1 map @service-endpoints-udp
add rule ip t ext-1 dnat ip to ip daddr . sctp dport . numgen random mod 1 map @service-endpoints-sctp
add rule ip t np-1 jump mark-for-masquerade
add rule ip t np-1 dnat ip to tcp dport . numgen random mod 1 map @nodeport-endpoints-tcp
add rule ip t np-1 dnat ip to udp dport . numgen random mod 1 map @nodeport-endpoints-udp
add rule ip t np-1 dnat ip to sctp dport . numgen random mod 1 map @nodeport-endpoints-sctp
add rule ip t pick-1 ip saddr != 10.42.0.0/16 jump mark-for-masquerade
add rule ip t pick-1 dnat ip to ip daddr . tcp dport . numgen random mod 1 map @service-endpoints-tcp
add rule ip t pick-1 dnat ip to ip daddr . udp dport . numgen random mod 1 map @service-endpoints-udp
add rule ip t pick-1 dnat ip to ip daddr . sctp dport . numgen random mod 1 map @service-endpoints-sctp
add rule ip t fw-ID ip saddr != { 198.51.100.7/32, 203.0.113.0/24 } drop
add element ip t firewall-ips { 192.0.2.1 . tcp . 80 : goto fw-ID }
add element ip t nodeport-endpoints-tcp { 30080 . 0 : 10.42.0.3 . 8080 }
add element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 0 : 10.42.0.3 . 8080, 192.0.2.1 . 80 . 0 : 10.42.0.3 . 8080 }
add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto pick-1, 192.0.2.1 . tcp . 80 : goto ext-1 }
add element ip t service-nodeports { tcp . 30080 : goto np-1 }
"
    );
    // Without source ranges, or without load balancer IPs, there is nothing to filter.
    assert!(!render(&load_balancer(&[])).contains("fw-"));
    let mut no_ingress = load_balancer(&["203.0.113.0/24"]);
    no_ingress.load_balancer_ips.clear();
    assert!(!render(&no_ingress).contains("fw-"));
}

#[test]
fn a_range_holding_the_node_lets_the_node_reach_the_load_balancer_ips() {
    let text = render(&load_balancer(&["192.0.2.0/24"]));
    assert!(text.contains("add rule ip t fw-ID ip saddr != { 192.0.2.0/24, 192.0.2.1 } drop\n"), "{text}");
}

#[test]
fn source_ranges_survive_affinity_and_go_with_the_service() {
    let mut sp = load_balancer(&["203.0.113.0/24"]);
    sp.affinity_timeout = Some(60);
    let text = render(&sp);
    assert!(text.contains("add rule ip t fw-ID ip saddr != { 203.0.113.0/24 } drop\n"), "{text}");
    assert!(text.contains("add element ip t firewall-ips { 192.0.2.1 . tcp . 80 : goto fw-ID }\n"), "{text}");

    // New ranges: only the firewall chain's rule changes.
    let old = fragment(&load_balancer(&["203.0.113.0/24"]), &node());
    let new = fragment(&load_balancer(&["203.0.113.0/25"]), &node());
    let mut b = Batch::with_shared("t", old.shared.keys().cloned().collect());
    b.change(Some(&old), Some(&new));
    let id = hash(&load_balancer(&[]).key());
    assert_eq!(
        b.finish().replace(&id, "ID"),
        "flush chain ip t fw-ID\nadd rule ip t fw-ID ip saddr != { 203.0.113.0/25 } drop\n"
    );

    // Removed: the map element goes before the chain it points to.
    let mut b = Batch::with_shared("t", old.shared.keys().cloned().collect());
    b.change(Some(&old), Some(&fragment(&load_balancer(&[]), &node())));
    assert_eq!(
        b.finish().replace(&id, "ID"),
        "delete element ip t firewall-ips { 192.0.2.1 . tcp . 80 }\nflush chain ip t fw-ID\ndelete chain ip t fw-ID\n"
    );
}

#[test]
fn only_endpoints_in_the_pod_range_can_hairpin() {
    let mut far = ep(3, false);
    far.ip = Ipv4Addr::new(10, 42, 1, 3);
    let sp = port(vec![ep(4, true), far]);
    assert_eq!(fragment(&sp, &node()).hairpin, [Ipv4Addr::new(10, 42, 0, 4)]);
    let unknown = NodeInfo { pod_cidr: None, ..node() };
    assert_eq!(fragment(&sp, &unknown).hairpin, [Ipv4Addr::new(10, 42, 0, 4), Ipv4Addr::new(10, 42, 1, 3)]);
}

#[test]
fn shared_maps_can_be_declared_with_a_size() {
    let sizes = Sizes::from([("service-ips".to_string(), 1024), ("service-endpoints-tcp".to_string(), 4096), ("hairpin".to_string(), 1024)]);
    let text = full("t", &sizes, []).0;
    assert!(text.contains("add map ip t service-ips { type ipv4_addr . inet_proto . inet_service : verdict; size 1024; }\n"), "{text}");
    assert!(text.contains("add map ip t service-endpoints-tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport; size 4096; }\n"), "{text}");
    assert!(text.contains("add set ip t hairpin { type ipv4_addr . ipv4_addr; size 1024; }\n"), "{text}");
    assert!(text.contains("add map ip t service-nodeports { type inet_proto . inet_service : verdict; }\n"), "{text}");
}

#[test]
fn a_staged_table_gets_its_hooks_and_elements_apart() {
    let f = fragment(&port(vec![ep(3, true)]), &node());
    let plan = staged("t", &Sizes::new(), [&f]);
    assert_eq!(
        plan.hooks,
        "add chain ip t nat-prerouting { type nat hook prerouting priority -100; policy accept; }
add chain ip t nat-output { type nat hook output priority -100; policy accept; }
add chain ip t nat-postrouting { type nat hook postrouting priority 100; policy accept; }
add chain ip t filter-prerouting { type filter hook prerouting priority -110; policy accept; }
add chain ip t filter-output { type filter hook output priority -110; policy accept; }
add rule ip t nat-prerouting jump services
add rule ip t nat-output jump services
add rule ip t nat-postrouting jump masquerading
add rule ip t filter-prerouting ct state new jump firewall-check
add rule ip t filter-output ct state new jump firewall-check
add rule ip t filter-prerouting ct state new jump no-endpoints
add rule ip t filter-output ct state new jump no-endpoints
"
    );
    assert!(!plan.build.contains(" hook ") && !plan.build.contains("add element"), "{}", plan.build);
    assert!(plan.build.starts_with("add table ip t\ndelete table ip t\nadd table ip t\n"));
    assert!(plan.build.contains("add rule ip t pick-1 ip saddr != 10.42.0.0/16 jump mark-for-masquerade\n"));
    let elements: Vec<(&str, &str, Option<&str>)> =
        plan.elements.iter().flat_map(|(m, items)| items.iter().map(move |(k, v)| (m.as_str(), k.as_str(), v.as_deref()))).collect();
    assert_eq!(
        elements,
        [
            ("hairpin", "10.42.0.3 . 10.42.0.3", None),
            ("service-endpoints-tcp", "10.43.0.5 . 80 . 0", Some("10.42.0.3 . 8080")),
            ("service-ips", "10.43.0.5 . tcp . 80", Some("goto pick-1")),
        ]
    );
}
