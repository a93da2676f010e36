use std::net::Ipv4Addr;
use std::sync::Arc;

use super::*;
use crate::index::{Endpoint, Port, Proto, Service, Slice};
use crate::wire::{Data, NOERROR, NXDOMAIN, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn port(name: &str, proto: Proto, port: u16) -> Port {
    Port { name: name.into(), proto, port }
}

fn ep(addr: &str, hostname: Option<&str>, ready: bool) -> Endpoint {
    Endpoint { ip: ip(addr), hostname: hostname.map(Into::into), ready }
}

/// default/web (ClusterIP, ports http/80 and an unnamed 81/UDP), default/db
/// (headless: db-0 ready, db-1 not ready, one ready without hostname),
/// default/ext (ExternalName to example.com), default/alias (ExternalName
/// to web inside the zone), default/empty (headless, no endpoints),
/// kube-system/kube-dns.
fn index() -> Arc<Index> {
    let ix = Index::new("cluster.local");
    let svc = |kind, ports: Vec<Port>| Some(Service { kind, ports: ports.into(), publish_not_ready: false });
    ix.set_service("default", "web", svc(Kind::ClusterIp([ip("10.43.0.20")].into()), vec![port("http", Proto::Tcp, 80), port("", Proto::Udp, 81)]));
    ix.set_service("default", "db", svc(Kind::Headless, vec![port("pg", Proto::Tcp, 5432)]));
    ix.set_slice(
        "default",
        "db-abc",
        Some((
            "db",
            Slice {
                ports: [port("pg", Proto::Tcp, 5432)].into(),
                endpoints: [ep("10.42.0.5", Some("db-0"), true), ep("10.42.1.6", Some("db-1"), false), ep("10.42.2.7", None, true)].into(),
            },
        )),
    );
    ix.set_slice("default", "web-1", Some(("web", Slice { ports: [port("http", Proto::Tcp, 8080)].into(), endpoints: [ep("10.42.0.9", None, true)].into() })));
    ix.set_service("default", "ext", svc(Kind::ExternalName("example.com".into()), vec![]));
    ix.set_service("default", "alias", svc(Kind::ExternalName("web.default.svc.cluster.local".into()), vec![]));
    ix.set_service("default", "empty", svc(Kind::Headless, vec![]));
    ix.set_service("kube-system", "kube-dns", svc(Kind::ClusterIp([ip("10.43.0.10")].into()), vec![port("dns", Proto::Udp, 53)]));
    ix
}

fn local(ix: &Index, name: &str, qtype: u16) -> Answer {
    match answer(ix, name, qtype) {
        Outcome::Local(a) => a,
        Outcome::Forward => panic!("{name} was forwarded"),
    }
}

fn data(a: &Answer) -> Vec<Data> {
    a.answers.iter().map(|r| r.data.clone()).collect()
}

fn is_negative(a: &Answer, rcode: u8) -> bool {
    a.rcode == rcode && a.answers.is_empty() && matches!(a.authority[..], [Record { data: Data::Soa { .. }, .. }])
}

#[test]
fn cluster_ip_services() {
    let ix = index();
    let a = local(&ix, "web.default.svc.cluster.local", TYPE_A);
    assert_eq!((a.rcode, data(&a)), (NOERROR, vec![Data::A(ip("10.43.0.20"))]));
    assert_eq!(a.answers[0].name, None, "owner is the question as asked");
    assert_eq!(a.answers[0].ttl, 5);
    assert!(is_negative(&local(&ix, "web.default.svc.cluster.local", TYPE_AAAA), NOERROR), "IPv4 only: NODATA");
    assert!(is_negative(&local(&ix, "nope.default.svc.cluster.local", TYPE_A), NXDOMAIN));
    assert!(is_negative(&local(&ix, "web.other.svc.cluster.local", TYPE_A), NXDOMAIN));
}

#[test]
fn srv_for_named_ports() {
    let ix = index();
    let a = local(&ix, "_http._tcp.web.default.svc.cluster.local", TYPE_SRV);
    let target = "web.default.svc.cluster.local".to_string();
    assert_eq!(data(&a), vec![Data::Srv { priority: 0, weight: 100, port: 80, target: target.clone() }]);
    assert_eq!(a.additional, vec![Record { name: Some(target), ttl: 5, data: Data::A(ip("10.43.0.20")) }]);
    assert!(is_negative(&local(&ix, "_http._udp.web.default.svc.cluster.local", TYPE_SRV), NXDOMAIN), "wrong protocol");
    assert!(is_negative(&local(&ix, "_http._tcp.web.default.svc.cluster.local", TYPE_A), NOERROR), "exists, no A");
    // Headless: one per ready endpoint, targets by hostname or dashed address, ports from the slice.
    let a = local(&ix, "_pg._tcp.db.default.svc.cluster.local", TYPE_SRV);
    assert_eq!(
        data(&a),
        vec![
            Data::Srv { priority: 0, weight: 50, port: 5432, target: "db-0.db.default.svc.cluster.local".into() },
            Data::Srv { priority: 0, weight: 50, port: 5432, target: "10-42-2-7.db.default.svc.cluster.local".into() },
        ]
    );
    assert_eq!(a.additional.len(), 2);
    // SRV on the bare Service name: every port.
    assert_eq!(local(&ix, "web.default.svc.cluster.local", TYPE_SRV).answers.len(), 2);
}

#[test]
fn headless_services_and_endpoint_names() {
    let ix = index();
    let a = local(&ix, "db.default.svc.cluster.local", TYPE_A);
    assert_eq!(data(&a), vec![Data::A(ip("10.42.0.5")), Data::A(ip("10.42.2.7"))], "ready endpoints only");
    assert_eq!(data(&local(&ix, "db-0.db.default.svc.cluster.local", TYPE_A)), vec![Data::A(ip("10.42.0.5"))]);
    assert_eq!(data(&local(&ix, "10-42-2-7.db.default.svc.cluster.local", TYPE_A)), vec![Data::A(ip("10.42.2.7"))]);
    assert!(is_negative(&local(&ix, "db-1.db.default.svc.cluster.local", TYPE_A), NXDOMAIN), "not ready");
    assert!(is_negative(&local(&ix, "empty.default.svc.cluster.local", TYPE_A), NXDOMAIN), "no ready endpoints");
    // publishNotReadyAddresses: every endpoint.
    ix.set_service("default", "db", Some(Service { kind: Kind::Headless, ports: [].into(), publish_not_ready: true }));
    assert_eq!(local(&ix, "db.default.svc.cluster.local", TYPE_A).answers.len(), 3);
    assert_eq!(data(&local(&ix, "db-1.db.default.svc.cluster.local", TYPE_A)), vec![Data::A(ip("10.42.1.6"))]);
}

#[test]
fn external_names_are_cnames() {
    let ix = index();
    let a = local(&ix, "ext.default.svc.cluster.local", TYPE_A);
    assert_eq!(data(&a), vec![Data::Cname("example.com".into())]);
    assert_eq!(a.chase.as_deref(), Some("example.com"), "the target is looked up upstream");
    let a = local(&ix, "ext.default.svc.cluster.local", TYPE_CNAME);
    assert_eq!(a.chase, None);
    // A target inside the zone is followed here.
    let a = local(&ix, "alias.default.svc.cluster.local", TYPE_A);
    assert_eq!(data(&a), vec![Data::Cname("web.default.svc.cluster.local".into()), Data::A(ip("10.43.0.20"))]);
    assert_eq!(a.answers[1].name.as_deref(), Some("web.default.svc.cluster.local"));
}

#[test]
fn pods_ptr_version_and_zone() {
    let ix = index();
    assert_eq!(data(&local(&ix, "10-42-1-5.default.pod.cluster.local", TYPE_A)), vec![Data::A(ip("10.42.1.5"))]);
    assert!(is_negative(&local(&ix, "10-42-1.default.pod.cluster.local", TYPE_A), NXDOMAIN));
    assert!(is_negative(&local(&ix, "10-42-1-500.default.pod.cluster.local", TYPE_A), NXDOMAIN));
    assert_eq!(data(&local(&ix, "20.0.43.10.in-addr.arpa", TYPE_PTR)), vec![Data::Ptr("web.default.svc.cluster.local".into())]);
    assert_eq!(data(&local(&ix, "5.0.42.10.in-addr.arpa", TYPE_PTR)), vec![Data::Ptr("db-0.db.default.svc.cluster.local".into())]);
    assert_eq!(data(&local(&ix, "7.2.42.10.in-addr.arpa", TYPE_PTR)), vec![Data::Ptr("10-42-2-7.db.default.svc.cluster.local".into())]);
    assert_eq!(answer(&ix, "6.1.42.10.in-addr.arpa", TYPE_PTR), Outcome::Forward, "not ready: not ours");
    assert_eq!(answer(&ix, "8.8.8.8.in-addr.arpa", TYPE_PTR), Outcome::Forward);
    assert_eq!(answer(&ix, "example.com", TYPE_A), Outcome::Forward);
    assert_eq!(answer(&ix, "notcluster.local", TYPE_A), Outcome::Forward);
    assert_eq!(data(&local(&ix, "dns-version.cluster.local", TYPE_TXT)), vec![Data::Txt("1.1.0".into())]);
    assert!(matches!(data(&local(&ix, "cluster.local", TYPE_SOA))[..], [Data::Soa { minimum: 5, .. }]));
    let ns = local(&ix, "cluster.local", TYPE_NS);
    assert_eq!(data(&ns), vec![Data::Ns("ns.dns.cluster.local".into())]);
    assert_eq!(ns.additional[0].data, Data::A(ip("10.43.0.10")));
    // Names that exist without records of their own: NODATA; others NXDOMAIN.
    for name in ["svc.cluster.local", "default.svc.cluster.local", "pod.cluster.local", "cluster.local"] {
        assert!(is_negative(&local(&ix, name, TYPE_A), NOERROR), "{name}");
    }
    for name in ["nope.cluster.local", "a.b.c.d.e.svc.cluster.local", "other.svc.cluster.local"] {
        assert!(is_negative(&local(&ix, name, TYPE_A), NXDOMAIN), "{name}");
    }
}

#[test]
fn updates_and_removals_show_at_once() {
    let ix = index();
    ix.set_service("default", "web", Some(Service { kind: Kind::ClusterIp([ip("10.43.0.21")].into()), ports: [].into(), publish_not_ready: false }));
    assert_eq!(data(&local(&ix, "web.default.svc.cluster.local", TYPE_A)), vec![Data::A(ip("10.43.0.21"))]);
    assert_eq!(answer(&ix, "20.0.43.10.in-addr.arpa", TYPE_PTR), Outcome::Forward, "old ClusterIP unmapped");
    ix.set_service("default", "web", None);
    assert!(is_negative(&local(&ix, "web.default.svc.cluster.local", TYPE_A), NXDOMAIN));
    assert!(ix.read().reverse.get(&ip("10.43.0.21")).is_none());
    ix.set_slice("default", "db-abc", None);
    assert!(is_negative(&local(&ix, "db.default.svc.cluster.local", TYPE_A), NXDOMAIN));
    assert_eq!(answer(&ix, "5.0.42.10.in-addr.arpa", TYPE_PTR), Outcome::Forward);
}

#[test]
fn objects_become_entries() {
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"], "ports": [{"name": "HTTP", "port": 80}, {"port": 81, "protocol": "UDP"}]}
    }))
    .unwrap();
    let e = crate::index::service_entry(&svc).unwrap();
    assert_eq!(e.kind, Kind::ClusterIp([ip("10.43.0.20")].into()));
    assert_eq!(&e.ports[..], &[port("http", Proto::Tcp, 80), port("", Proto::Udp, 81)]);
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"], "hostname": "DB-0"}, {"addresses": ["10.42.0.6"], "conditions": {"ready": false}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    }))
    .unwrap();
    let (service, s) = crate::index::slice_entry(&slice).unwrap();
    assert_eq!(service, "db");
    assert_eq!(&s.endpoints[..], &[ep("10.42.0.5", Some("db-0"), true), ep("10.42.0.6", None, false)]);
}
