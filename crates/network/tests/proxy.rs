//! Root-only tests of the service proxy on real namespaces and nftables:
//! each test builds a node namespace with a bridge and pod namespaces
//! (`network::proxy::testbed`), programs the proxy's table inside the node
//! namespace and connects from a pod. Names and addresses carry the process
//! id and a per-test slot; dropping the testbed deletes every namespace (and
//! with them the links and the table).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use network::proxy::testbed::{ask, Pod, Testbed};
use network::proxy::{service_ports, Proxier, ServicePort};
use serde_json::json;

const NODE: &str = "node-a";
const TABLE: &str = "skt_proxy";
const TIMEOUT: Duration = Duration::from_secs(3);

fn require_root() {
    assert!(unsafe { libc::geteuid() } == 0, "these tests need root (network namespaces and nftables)");
    assert!(std::path::Path::new("/usr/sbin/nft").exists(), "these tests need nft at /usr/sbin/nft");
}

fn bed(slot: u8) -> Testbed {
    require_root();
    let tag = format!("{:x}{slot}", std::process::id() % 0xfffff);
    Testbed::new(&tag, 150 + slot).unwrap()
}

/// A Service address outside every pod range (it exists only as a DNAT rule).
fn vip(bed: &Testbed, last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, bed.octet + 50, 0, last)
}

fn service(name: &str, ip: Ipv4Addr, spec: serde_json::Value) -> Service {
    let mut s = json!({"metadata": {"namespace": "default", "name": name},
        "spec": {"clusterIP": ip.to_string(), "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    for (k, v) in spec.as_object().unwrap() {
        s["spec"][k] = v.clone();
    }
    serde_json::from_value(s).unwrap()
}

fn slice(service: &str, pods: &[&Pod]) -> EndpointSlice {
    let endpoints: Vec<_> = pods
        .iter()
        .map(|p| json!({"addresses": [p.ip.to_string()], "nodeName": NODE, "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn ports(svc: &Service, slice: Option<&EndpointSlice>) -> Vec<ServicePort> {
    service_ports(svc, &slice.into_iter().collect::<Vec<_>>(), NODE)
}

/// Asks through a new connection from `from` to `to`.
fn answer(from: &Pod, to: SocketAddrV4) -> String {
    let mut c = from.connect(to, TIMEOUT).unwrap_or_else(|e| panic!("{} -> {to}: {e}", from.name));
    ask(&mut c).unwrap()
}

/// Pods `a` and `b` answering their names on 8080, and a client pod `c`.
fn servers_and_client(bed: &mut Testbed) -> (Pod, Pod, Pod) {
    let (a, b, client) = (bed.add_pod("a").unwrap(), bed.add_pod("b").unwrap(), bed.add_pod("c").unwrap());
    a.serve(8080).unwrap();
    b.serve(8080).unwrap();
    (a, b, client)
}

/// A proxier programming the testbed node's table.
async fn proxier(bed: &Testbed) -> Proxier {
    let runner = bed.runner();
    runner.ensure_bridge_nf_call().await.unwrap();
    Proxier::new(TABLE, bed.cluster_cidr().parse().unwrap(), runner)
}

fn answers(from: &Pod, to: SocketAddrV4, n: usize) -> BTreeSet<String> {
    (0..n).map(|_| answer(from, to)).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn cluster_ip_reaches_every_endpoint_and_survives_a_resync() {
    let mut bed = bed(1);
    let (a, b, client) = servers_and_client(&mut bed);
    let mut proxier = proxier(&bed).await;

    let web = service("web", vip(&bed, 10), json!({}));
    let web_slice = slice("web", &[&a, &b]);
    let started = Instant::now();
    proxier.sync_all(ports(&web, Some(&web_slice))).await.unwrap();
    println!("full sync of one service took {:?}", started.elapsed());
    let web_addr = SocketAddrV4::new(vip(&bed, 10), 80);
    assert_eq!(answers(&client, web_addr, 30), set(&["a", "b"]), "both endpoints answer");

    // An established connection keeps working across a full re-sync
    // (delete + re-create of the table in one batch; conntrack keeps its NAT).
    let mut kept = client.connect(web_addr, TIMEOUT).unwrap();
    let first = ask(&mut kept).unwrap();
    proxier.sync_all(ports(&web, Some(&web_slice))).await.unwrap();
    assert_eq!(ask(&mut kept).unwrap(), first, "same connection, same endpoint");
    assert_eq!(answers(&client, web_addr, 10).len() > 0, true);

    // Incremental: endpoint a leaves, then the Service goes.
    let started = Instant::now();
    let only_b = slice("web", &[&b]);
    let changed = std::collections::BTreeMap::from([(("default".to_string(), "web".to_string()), ports(&web, Some(&only_b)))]);
    let applied = proxier.update(changed).await.unwrap();
    println!("one endpoint change: {} lines in {:?}", applied.lines, started.elapsed());
    assert_eq!(answers(&client, web_addr, 20), set(&["b"]));
    assert_eq!(ask(&mut kept).unwrap(), first, "a change elsewhere leaves established connections alone");

    let gone = std::collections::BTreeMap::from([(("default".to_string(), "web".to_string()), Vec::new())]);
    proxier.update(gone).await.unwrap();
    let listing = nft_list(&bed);
    assert!(!listing.contains("svc-") && !listing.contains("ep-"), "the Service's chains are gone:\n{listing}");
    assert!(client.connect(web_addr, Duration::from_millis(500)).is_err());
}

#[tokio::test]
async fn no_endpoints_refuse_affinity_sticks_and_hairpin_works() {
    let mut bed = bed(2);
    let (a, b, client) = servers_and_client(&mut bed);
    let mut proxier = proxier(&bed).await;

    let empty = service("empty", vip(&bed, 20), json!({}));
    let sticky = service("sticky", vip(&bed, 21), json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}));
    let sticky_slice = slice("sticky", &[&a, &b]);
    let both = service("both", vip(&bed, 22), json!({}));
    let both_slice = slice("both", &[&a, &b]);
    let mut all = ports(&empty, None);
    all.extend(ports(&sticky, Some(&sticky_slice)));
    all.extend(ports(&both, Some(&both_slice)));
    proxier.sync_all(all).await.unwrap();

    // No endpoints: refused at once, not a timeout.
    let started = Instant::now();
    let err = client.connect(SocketAddrV4::new(vip(&bed, 20), 80), TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused after {:?}", started.elapsed());

    // ClientIP affinity: every connection of one client lands on one endpoint.
    let sticky_addr = SocketAddrV4::new(vip(&bed, 21), 80);
    let seen = answers(&client, sticky_addr, 20);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen.is_subset(&set(&["a", "b"])));

    // Hairpin: a pod reaches itself through the Service (masqueraded, so
    // the answer comes back through the node).
    let both_addr = SocketAddrV4::new(vip(&bed, 22), 80);
    assert_eq!(answers(&a, both_addr, 30), set(&["a", "b"]));
}

#[tokio::test]
async fn node_port_answers_on_the_node_address() {
    let mut bed = bed(3);
    let (a, b, client) = servers_and_client(&mut bed);
    let mut proxier = proxier(&bed).await;

    let np = service("np", vip(&bed, 30), json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}));
    let np_slice = slice("np", &[&a, &b]);
    let none = service("none", vip(&bed, 31), json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081}]}));
    let mut all = ports(&np, Some(&np_slice));
    all.extend(ports(&none, None));
    proxier.sync_all(all).await.unwrap();

    let node_port = SocketAddrV4::new(bed.node_ip, 30080);
    assert_eq!(answers(&client, node_port, 30), set(&["a", "b"]), "from a pod");
    let from_node = network::in_netns(&bed.node_netns(), move || {
        let mut c = std::net::TcpStream::connect_timeout(&node_port.into(), TIMEOUT)?;
        ask(&mut c)
    })
    .unwrap()
    .unwrap();
    assert!(from_node == "a" || from_node == "b", "from the node itself: {from_node}");
    assert_eq!(answer(&client, SocketAddrV4::new(vip(&bed, 30), 80)).len(), 1, "the ClusterIP too");

    let err = client.connect(SocketAddrV4::new(bed.node_ip, 30081), TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "a NodePort without endpoints: {err}");
}

#[tokio::test]
async fn external_traffic_policy_local_keeps_the_client_address() {
    let mut bed = bed(4);
    let (a, b) = (bed.add_pod("a").unwrap(), bed.add_pod("b").unwrap());
    let (outside, node_addr) = bed.add_outside_client().unwrap();
    for p in [&a, &b] {
        p.serve(8080).unwrap();
        p.serve_peer_address(8081).unwrap();
    }
    let mut proxier = proxier(&bed).await;

    // Endpoint a is on this node, b (as far as the API says) on another one.
    let endpoints = |port: u16, svc: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port}],
            "endpoints": [
                {"addresses": [a.ip.to_string()], "nodeName": NODE},
                {"addresses": [b.ip.to_string()], "nodeName": "node-b"},
            ],
        }))
        .unwrap()
    };
    let spec = |node_port: u16| json!({"type": "NodePort", "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "nodePort": node_port}]});
    let names = service("names", vip(&bed, 40), spec(30090));
    let peers = service("peers", vip(&bed, 41), spec(30091));
    let (names_slice, peers_slice) = (endpoints(8080, "names"), endpoints(8081, "peers"));
    let mut all = ports(&names, Some(&names_slice));
    all.extend(ports(&peers, Some(&peers_slice)));
    proxier.sync_all(all).await.unwrap();

    // From outside: only the local endpoint, and it sees the client's own address.
    assert_eq!(answers(&outside, SocketAddrV4::new(node_addr, 30090), 20), set(&["a"]));
    assert_eq!(answers(&outside, SocketAddrV4::new(node_addr, 30091), 5), set(&[&outside.ip.to_string()]));
    // From a pod: every endpoint, as upstream.
    assert_eq!(answers(&a, SocketAddrV4::new(bed.node_ip, 30090), 30), set(&["a", "b"]));
}

fn nft_list(bed: &Testbed) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.node_ns, "/usr/sbin/nft", "list", "table", "ip", TABLE])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
