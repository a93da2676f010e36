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
use network::proxy::{service_ports, Proxier, Runner, ServicePort};
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

/// A proxier programming the testbed node's table (through libnftables when it loads).
async fn proxier(bed: &Testbed) -> Proxier {
    proxier_with(bed, bed.runner()).await
}

async fn proxier_with(bed: &Testbed, runner: Runner) -> Proxier {
    runner.ensure_bridge_nf_call().await.unwrap();
    Proxier::new(TABLE, bed.cluster_cidr().parse().unwrap(), runner).with_node_ips(vec![bed.node_ip]).with_pod_cidr(Some(bed.pod_cidr()))
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
    assert_eq!(proxier.backend(), "libnftables", "libnftables1 comes with the nftables package");

    let web = service("web", vip(&bed, 10), json!({}));
    let web_slice = slice("web", &[&a, &b]);
    let started = Instant::now();
    let applied = proxier.sync_all(ports(&web, Some(&web_slice))).await.unwrap();
    println!("full sync of one service took {:?}", started.elapsed());
    assert!(applied.elements > 0, "the shared maps' elements went over netlink");
    assert_eq!(tables(&bed), [TABLE]);
    let web_addr = SocketAddrV4::new(vip(&bed, 10), 80);
    assert_eq!(answers(&client, web_addr, 30), set(&["a", "b"]), "both endpoints answer");

    // An established connection keeps working across a full re-sync (the
    // next table is built beside the live one and swapped in by one batch;
    // conntrack keeps its NAT).
    let mut kept = client.connect(web_addr, TIMEOUT).unwrap();
    let first = ask(&mut kept).unwrap();
    proxier.sync_all(ports(&web, Some(&web_slice))).await.unwrap();
    assert_eq!(ask(&mut kept).unwrap(), first, "same connection, same endpoint");
    assert_eq!(answers(&client, web_addr, 20), set(&["a", "b"]));
    let next = format!("{TABLE}_b");
    assert_eq!((proxier.table(), tables(&bed)), (next.as_str(), vec![next.clone()]));

    // A restarted proxy does not know which table is live; it builds the
    // other one all the same. The old proxier's picture is stale from here.
    drop(proxier);
    let mut proxier = self::proxier(&bed).await;
    proxier.sync_all(ports(&web, Some(&web_slice))).await.unwrap();
    assert_eq!((proxier.table(), tables(&bed)), (TABLE, vec![TABLE.to_string()]));
    assert_eq!(ask(&mut kept).unwrap(), first);
    assert_eq!(answers(&client, web_addr, 20), set(&["a", "b"]));

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
    let listing = nft_list(&bed, proxier.table());
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
    // The fallback: a new nft process for every batch.
    let mut proxier = proxier_with(&bed, bed.runner().spawning()).await;
    assert_eq!(proxier.backend(), "nft");

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

/// The proxy tables in the node namespace.
fn tables(bed: &Testbed) -> Vec<String> {
    let out = std::process::Command::new("ip").args(["netns", "exec", &bed.node_ns, "/usr/sbin/nft", "list", "tables", "ip"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().filter_map(|l| l.strip_prefix("table ip ")).filter(|t| t.starts_with(TABLE)).map(str::to_string).collect()
}

fn nft_list(bed: &Testbed, table: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.node_ns, "/usr/sbin/nft", "list", "table", "ip", table])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn load_balancer_source_ranges_drop_other_clients_of_the_load_balancer_ip_only() {
    let mut bed = bed(5);
    let (a, client) = (bed.add_pod("a").unwrap(), bed.add_pod("c").unwrap());
    let (outside, _) = bed.add_outside_client().unwrap();
    a.serve(8080).unwrap();
    let mut proxier = proxier(&bed).await;

    let (cluster_ip, lb_ip) = (vip(&bed, 60), vip(&bed, 61));
    let lb = |ranges: &[String]| -> Service {
        let mut s = service("lb", cluster_ip, json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ranges,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30060}]}));
        s.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": lb_ip.to_string()}]}})).unwrap();
        s
    };
    let lb_slice = slice("lb", &[&a]);
    let (to_lb, to_node_port, to_cluster_ip) =
        (SocketAddrV4::new(lb_ip, 80), SocketAddrV4::new(bed.node_ip, 30060), SocketAddrV4::new(cluster_ip, 80));
    let key = ("default".to_string(), "lb".to_string());

    // Only the outside client may use the load balancer IP.
    proxier.sync_all(ports(&lb(&[format!("{}/32", outside.ip)]), Some(&lb_slice))).await.unwrap();
    assert_eq!(answer(&outside, to_lb), "a");
    assert_dropped(&client, to_lb);
    assert_eq!(answer(&client, to_node_port), "a", "NodePorts are not filtered");
    assert_eq!(answer(&client, to_cluster_ip), "a", "nor ClusterIPs");

    // The pods' range instead (an incremental change): the other way round.
    let pods = vec![bed.pod_cidr().to_string()];
    proxier.update(std::collections::BTreeMap::from([(key.clone(), ports(&lb(&pods), Some(&lb_slice)))])).await.unwrap();
    assert_eq!(answer(&client, to_lb), "a");
    assert_dropped(&outside, to_lb);

    // No ranges: everyone, and the firewall chain is gone.
    proxier.update(std::collections::BTreeMap::from([(key, ports(&lb(&[]), Some(&lb_slice)))])).await.unwrap();
    assert_eq!(answer(&outside, to_lb), "a");
    assert_eq!(answer(&client, to_lb), "a");
    let listing = nft_list(&bed, proxier.table());
    assert!(!listing.contains("fw-"), "{listing}");
}

/// A connection from `from` to `to` gets no answer at all (dropped, not refused).
fn assert_dropped(from: &Pod, to: SocketAddrV4) {
    let err = from.connect(to, Duration::from_millis(700)).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{} -> {to}: {err}", from.name);
}

#[tokio::test]
async fn a_shared_map_about_to_outgrow_its_size_is_resized_by_a_full_sync() {
    let bed = bed(6);
    let mut proxier = proxier(&bed).await;
    // Endpoints at addresses nobody uses: only the map sizes matter here.
    let many = |name: &str, last: u8, n: u32| -> ServicePort {
        let endpoints = (0..n)
            .map(|i| network::proxy::Endpoint { ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, bed.octet, 4 + last, 0)) + i), port: 8080, ready: true, serving: true, terminating: false, local: false })
            .collect();
        ServicePort::tcp("default", name, vip(&bed, last), 80, endpoints)
    };
    proxier.sync_all([many("a", 1, 600)]).await.unwrap();
    let size = |p: &Proxier| {
        let listing = nft_list(&bed, p.table());
        let map = &listing[listing.find("map service-endpoints-tcp {").unwrap()..];
        map[map.find("size ").unwrap() + 5..].split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(size(&proxier), "2048", "room for twice the 600 elements");
    let first = proxier.table().to_string();

    // 600 + 1,500 elements do not fit in 2,048: the change becomes a full sync.
    let change = std::collections::BTreeMap::from([(("default".to_string(), "b".to_string()), vec![many("b", 2, 1500)])]);
    proxier.update(change).await.unwrap();
    assert_ne!(proxier.table(), first, "a new table");
    assert_eq!(size(&proxier), "8192");
    let listing = nft_list(&bed, proxier.table());
    assert_eq!(listing.matches(" : 10.").count(), 2100, "every endpoint of both Services");
}
