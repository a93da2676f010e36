//! What the index costs: 10,000 Services, each with an EndpointSlice of two
//! endpoints, built from the API objects the watch delivers; the process's
//! RSS before and after (printed; the bound is generous).

use dns::index::{service_entry, slice_entry};
use dns::Index;

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ten_thousand_services_in_the_index() {
    let before = rss_kb();
    let ix = Index::new("cluster.local");
    for i in 0..10_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a2b_0100 + i);
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
            "spec": {"clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))
        .unwrap();
        ix.set_service("bench", &format!("svc-{i}"), service_entry(&svc));
        let ep = |k: u32| std::net::Ipv4Addr::from(0x0a2a_0000 + 2 * i + k).to_string();
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench", "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ep(0)], "conditions": {"ready": true}}, {"addresses": [ep(1)], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let (service, s) = slice_entry(&slice).unwrap();
        ix.set_slice("bench", &format!("svc-{i}-1"), Some((&service, s)));
    }
    let after = rss_kb();
    let t = ix.read();
    assert_eq!(t.namespaces["bench"].services.len(), 10_000);
    assert_eq!(t.reverse.len(), 30_000);
    eprintln!("index with 10,000 Services + 10,000 EndpointSlices: RSS {before} kB -> {after} kB (+{:.1} MiB)", (after - before) as f64 / 1024.0);
    assert!(after - before < 64 * 1024, "the index should stay far below 64 MiB");
}
