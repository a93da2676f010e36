use std::net::Ipv4Addr;

use super::*;
use crate::proxy::model::{Endpoint, Protocol, ServicePort};

fn cidr() -> Ipv4Cidr {
    "10.42.0.0/16".parse().unwrap()
}

fn ep(last: u8, local: bool) -> Endpoint {
    Endpoint { ip: Ipv4Addr::new(10, 42, 0, last), port: 8080, ready: true, serving: true, terminating: false, local }
}

fn port(endpoints: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        namespace: "ns".into(),
        name: "web".into(),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ips: vec![Ipv4Addr::new(10, 43, 0, 5)],
        external_ips: vec![],
        load_balancer_ips: vec![],
        node_port: None,
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        health_check_node_port: None,
        endpoints,
    }
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
        "add chain ip t ep-E4
add chain ip t ep-E3
add chain ip t svc-ID
add map ip t svceps-ID { typeof numgen random mod 1 : verdict; }
add rule ip t ep-E4 ip saddr 10.42.0.4 jump mark-for-masquerade
add rule ip t ep-E4 meta l4proto tcp dnat to 10.42.0.4:8080
add rule ip t ep-E3 ip saddr 10.42.0.3 jump mark-for-masquerade
add rule ip t ep-E3 meta l4proto tcp dnat to 10.42.0.3:8080
add rule ip t svc-ID ip daddr 10.43.0.5 meta l4proto tcp th dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade
add rule ip t svc-ID numgen random mod 2 vmap @svceps-ID
add element ip t svceps-ID { 0 : goto ep-E3, 1 : goto ep-E4 }
add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto svc-ID }
"
    );
}

#[test]
fn no_endpoints_rejects() {
    let mut sp = port(vec![]);
    sp.node_port = Some(30080);
    sp.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    assert_eq!(
        render(&sp),
        "add element ip t no-endpoint-nodeports { tcp . 30080 : goto reject-chain }
add element ip t no-endpoint-services { 10.43.0.5 . tcp . 80 : goto reject-chain }
add element ip t no-endpoint-services { 192.0.2.7 . tcp . 80 : goto reject-chain }
"
    );
}

#[test]
fn affinity_sets_come_before_the_random_choice() {
    let mut sp = port(vec![ep(3, true)]);
    sp.affinity_timeout = Some(60);
    let text = render(&sp);
    assert!(text.contains("add set ip t aff-E3-60 { type ipv4_addr; flags dynamic,timeout; timeout 60s; }\n"), "{text}");
    assert!(text.contains("add rule ip t ep-E3 update @aff-E3-60 { ip saddr }\n"), "{text}");
    let lookup = text.find("add rule ip t svc-ID ip saddr @aff-E3-60 goto ep-E3").expect(&text);
    assert!(lookup < text.find("vmap @svceps-ID").unwrap());
}

#[test]
fn external_traffic_policy_local() {
    let mut sp = port(vec![ep(3, true), ep(4, false)]);
    sp.node_port = Some(30080);
    sp.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    sp.external_local = true;
    let text = render(&sp);
    let ext: Vec<&str> = text.lines().filter(|l| l.starts_with("add rule ip t ext-ID ")).collect();
    assert_eq!(
        ext,
        [
            "add rule ip t ext-ID ip saddr 10.42.0.0/16 goto svc-ID",
            "add rule ip t ext-ID fib saddr type local jump mark-for-masquerade",
            "add rule ip t ext-ID fib saddr type local goto svc-ID",
            "add rule ip t ext-ID goto loc-ID",
        ]
    );
    assert!(text.contains("add element ip t loceps-ID { 0 : goto ep-E3 }\n"), "{text}");
    assert!(text.contains("add element ip t service-nodeports { tcp . 30080 : goto ext-ID }\n"));
    assert!(text.contains("add element ip t service-ips { 192.0.2.1 . tcp . 80 : goto ext-ID }\n"));
    assert!(text.contains("add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto svc-ID }\n"));

    // No local endpoint: outside clients are dropped, pods still get an answer.
    let mut remote = sp.clone();
    remote.endpoints = vec![ep(4, false)];
    assert!(render(&remote).contains("add rule ip t ext-ID drop\n"));
}

#[test]
fn external_traffic_policy_cluster_masquerades() {
    let mut sp = port(vec![ep(3, false)]);
    sp.node_port = Some(30080);
    let text = render(&sp);
    assert!(text.contains("add rule ip t ext-ID jump mark-for-masquerade\nadd rule ip t ext-ID goto svc-ID\n"), "{text}");
}

#[test]
fn internal_traffic_policy_local() {
    let mut sp = port(vec![ep(3, true), ep(4, false)]);
    sp.internal_local = true;
    let text = render(&sp);
    assert!(text.contains("add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto loc-ID }\n"), "{text}");
    sp.endpoints = vec![ep(4, false)];
    let text = render(&sp);
    assert!(text.contains("add element ip t no-endpoint-services { 10.43.0.5 . tcp . 80 : drop }\n"), "{text}");
}

#[test]
fn an_endpoint_change_touches_only_what_differs() {
    let old = fragment(&port(vec![ep(3, true), ep(4, false)]), cidr());
    let new = fragment(&port(vec![ep(3, true), ep(5, false)]), cidr());
    let mut b = Batch::new("t");
    b.change(Some(&old), Some(&new));
    let sp = port(vec![ep(3, true), ep(4, false), ep(5, false)]);
    let mut text = b.finish().replace(&hash(&sp.key()), "ID");
    for e in &sp.endpoints {
        text = text.replace(&endpoint_id(&sp.key(), e), &format!("E{}", e.ip.octets()[3]));
    }
    assert_eq!(
        text,
        "add chain ip t ep-E5
flush map ip t svceps-ID
add rule ip t ep-E5 ip saddr 10.42.0.5 jump mark-for-masquerade
add rule ip t ep-E5 meta l4proto tcp dnat to 10.42.0.5:8080
add element ip t svceps-ID { 0 : goto ep-E3, 1 : goto ep-E5 }
flush chain ip t ep-E4
delete chain ip t ep-E4
"
    );
    // Nothing changed: nothing to send.
    let mut b = Batch::new("t");
    b.change(Some(&old), Some(&old));
    assert!(b.is_empty());
}

#[test]
fn a_removed_service_is_unlinked_before_its_chains_go() {
    let old = fragment(&port(vec![ep(3, true)]), cidr());
    let mut b = Batch::new("t");
    b.change(Some(&old), None);
    let text = b.finish();
    let unlink = text.find("delete element ip t service-ips { 10.43.0.5 . tcp . 80 }").expect(&text);
    let map = text.find("delete map").unwrap();
    let chain = text.find("delete chain").unwrap();
    assert!(unlink < map && map < chain, "{text}");
}

#[test]
fn a_full_sync_recreates_the_table_atomically() {
    let f = fragment(&port(vec![ep(3, true)]), cidr());
    let text = full("skiff_proxy", [&f]);
    assert!(text.starts_with("add table ip skiff_proxy\ndelete table ip skiff_proxy\nadd table ip skiff_proxy\n"));
    assert!(text.contains("add chain ip skiff_proxy filter-prerouting { type filter hook prerouting priority -110; policy accept; }\n"));
    assert!(text.contains("add rule ip skiff_proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n"));
    assert!(text.contains("add rule ip skiff_proxy masquerading masquerade fully-random\n"));
    assert!(text.contains("add element ip skiff_proxy service-ips"));
}
