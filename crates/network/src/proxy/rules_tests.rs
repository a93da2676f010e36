use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::*;
use crate::proxy::model::{Endpoint, ServicePort};

fn cidr() -> Ipv4Cidr {
    "10.42.0.0/16".parse().unwrap()
}

fn ep(last: u8, local: bool) -> Endpoint {
    Endpoint { ip: Ipv4Addr::new(10, 42, 0, last), port: 8080, ready: true, serving: true, terminating: false, local }
}

fn port(endpoints: Vec<Endpoint>) -> ServicePort {
    ServicePort::tcp("ns", "web", Ipv4Addr::new(10, 43, 0, 5), 80, endpoints)
}

/// The fragment as text with the hashes replaced by readable names.
fn render(sp: &ServicePort) -> String {
    let f = fragment(sp, cidr());
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
    let f = fragment(&port(vec![ep(3, true), ep(4, false)]), cidr());
    assert!(f.chains.is_empty() && f.maps.is_empty() && f.sets.is_empty(), "no per-service objects: {f:?}");
    assert_eq!(f.hairpin, [Ipv4Addr::new(10, 42, 0, 3), Ipv4Addr::new(10, 42, 0, 4)]);
}

#[test]
fn shared_chains_are_declared_once() {
    let a = fragment(&port(vec![ep(3, true), ep(4, false)]), cidr());
    let mut other = port(vec![ep(5, true), ep(6, false)]);
    other.name = "api".into();
    other.cluster_ips = vec![Ipv4Addr::new(10, 43, 0, 6)];
    let b = fragment(&other, cidr());
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
    assert!(fragment(&sp, cidr()).hairpin.is_empty(), "the endpoint chains mark hairpin themselves");
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
    let old = fragment(&port(vec![ep(3, true), ep(4, false)]), cidr());
    let new = fragment(&port(vec![ep(3, true), ep(5, false)]), cidr());
    let mut b = Batch::with_shared("t", BTreeSet::from(["pick-2".to_string()]));
    b.change(Some(&old), Some(&new));
    assert_eq!(
        b.finish(),
        "delete element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 1 }
add element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 1 : 10.42.0.5 . 8080 }
"
    );
    // One endpoint fewer: a new shared chain, the Service's element points to it.
    let fewer = fragment(&port(vec![ep(3, true)]), cidr());
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
    let old = fragment(&sticky(vec![ep(3, true), ep(4, false)]), cidr());
    let new = fragment(&sticky(vec![ep(3, true), ep(5, false)]), cidr());
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
    let old = fragment(&sp, cidr());
    let mut b = Batch::new("t");
    b.change(Some(&old), None);
    let text = b.finish();
    let unlink = text.find("delete element ip t service-ips { 10.43.0.5 . tcp . 80 }").expect(&text);
    let map = text.find("delete map").unwrap();
    let chain = text.find("delete chain").unwrap();
    assert!(unlink < map && map < chain, "{text}");

    let old = fragment(&port(vec![ep(3, true)]), cidr());
    let mut b = Batch::with_shared("t", BTreeSet::from(["pick-1".to_string()]));
    b.change(Some(&old), None);
    assert_eq!(
        b.finish(),
        "delete element ip t service-endpoints-tcp { 10.43.0.5 . 80 . 0 }\ndelete element ip t service-ips { 10.43.0.5 . tcp . 80 }\n"
    );
}

#[test]
fn a_full_sync_recreates_the_table_atomically() {
    let f = fragment(&port(vec![ep(3, true)]), cidr());
    let text = full("skiff_proxy", [&f]).0;
    assert!(text.starts_with("add table ip skiff_proxy\ndelete table ip skiff_proxy\nadd table ip skiff_proxy\n"));
    assert!(text.contains("add chain ip skiff_proxy filter-prerouting { type filter hook prerouting priority -110; policy accept; }\n"));
    assert!(text.contains("add rule ip skiff_proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n"));
    assert!(text.contains("add rule ip skiff_proxy masquerading masquerade fully-random\n"));
    assert!(text.contains("add element ip skiff_proxy service-ips"));
    assert!(text.contains("add rule ip skiff_proxy masquerading ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade\n"));
    assert!(text.contains("add element ip skiff_proxy hairpin { 10.42.0.3 . 10.42.0.3 }\n"), "{text}");
    assert!(text.find("add chain ip skiff_proxy pick-1").unwrap() < text.find("add rule ip skiff_proxy pick-1").unwrap());
}
