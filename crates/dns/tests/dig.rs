//! The DNS server over real sockets on 127.0.0.0/8, asked with `dig`
//! (package dnsutils): a fixed index, a fake upstream resolver of our own,
//! and an in-process API server whose Services and EndpointSlices the
//! server watches.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns::index::{Endpoint, Kind, Port, Proto, Service, Slice};
use dns::{DnsConfig, Index};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback address of our own for this test, so runs do not collide.
fn loopback() -> Ipv4Addr {
    let r: u32 = rand::random();
    Ipv4Addr::new(127, 53, (r >> 8) as u8, (r as u8).max(2))
}

fn free_port(ip: Ipv4Addr) -> u16 {
    // A port free for both UDP and TCP.
    loop {
        let t = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// `dig` with the answer, authority and header comments; panics if dig is missing.
fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+nocmd", "+noall", "+answer", "+authority", "+comments", "+nostats", "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is needed for this test: apt-get install dnsutils");
    assert!(out.status.success() || !out.stdout.is_empty(), "dig {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The record lines of dig's output (no comments), whitespace collapsed.
fn records(out: &str) -> Vec<String> {
    out.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn fixed_index() -> Arc<Index> {
    let ix = Index::new("cluster.local");
    let port = |name: &str, p: u16| Port { name: name.into(), proto: Proto::Tcp, port: p };
    ix.set_service("default", "web", Some(Service { kind: Kind::ClusterIp([ip("10.43.0.20")].into()), ports: [port("http", 80)].into(), publish_not_ready: false }));
    ix.set_service("default", "ext", Some(Service { kind: Kind::ExternalName("www.example.com".into()), ports: [].into(), publish_not_ready: false }));
    ix.set_service("default", "many", Some(Service { kind: Kind::Headless, ports: [].into(), publish_not_ready: false }));
    let endpoints: Vec<Endpoint> = (0..200u32).map(|i| Endpoint { ip: Ipv4Addr::from(0x0a2a_0000 + i + 10), hostname: Some(format!("m-{i}").into()), ready: true }).collect();
    ix.set_slice("default", "many-1", Some(("many", Slice { ports: [port("http", 8080)].into(), endpoints: endpoints.into() })));
    ix
}

/// A fake upstream: answers A 192.0.2.1 for any name over UDP, except
/// `tc.example.` which it truncates over UDP and answers over TCP with
/// 192.0.2.2.
async fn fake_upstream(addr: SocketAddr) {
    let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let answer = |q: &[u8], ip: [u8; 4], tc: bool| -> Vec<u8> {
        let dns::wire::Parsed::Query(q) = dns::wire::parse_query(q) else { return Vec::new() };
        let mut b = dns::wire::Builder::new(q.id, q.flags, 0, &q.qname_wire, q.qtype, q.qclass);
        if !tc {
            b.record(0, &dns::wire::Record { name: None, ttl: 300, data: dns::wire::Data::A(ip.into()) });
        }
        let mut m = b.finish(512);
        if tc {
            m[2] |= 0x02;
        }
        m
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else { return };
            let len = s.read_u16().await.unwrap() as usize;
            let mut q = vec![0; len];
            s.read_exact(&mut q).await.unwrap();
            let r = answer(&q, [192, 0, 2, 2], false);
            s.write_all(&(r.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&r).await.unwrap();
        }
    });
    let mut buf = vec![0; 4096];
    loop {
        let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
        let tc = dns::wire::parse_query(&buf[..n]);
        let tc = matches!(&tc, dns::wire::Parsed::Query(q) if q.name == "tc.example");
        let r = answer(&buf[..n], [192, 0, 2, 1], tc);
        udp.send_to(&r, peer).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_dig_from_a_fixed_index() {
    let host = loopback();
    let server = SocketAddr::from((host, free_port(host)));
    let upstream = SocketAddr::from((host, free_port(host)));
    tokio::spawn(fake_upstream(upstream));
    let config = DnsConfig { listen: vec![server], upstreams: Some(vec![upstream]), upstream_timeout: Duration::from_millis(500), ..Default::default() };
    let task = tokio::spawn(dns::serve_index(None, fixed_index(), config));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = |args: &'static [&'static str]| tokio::task::spawn_blocking(move || dig(server, args));

    let out = d(&["WEB.default.svc.cluster.local", "A"]).await.unwrap();
    assert_eq!(status(&out), "NOERROR");
    assert!(out.contains(" aa "), "authoritative: {out}");
    assert_eq!(records(&out), vec!["WEB.default.svc.cluster.local. 5 IN A 10.43.0.20"], "question echoed as asked");

    let out = d(&["_http._tcp.web.default.svc.cluster.local", "SRV"]).await.unwrap();
    assert_eq!(records(&out), vec!["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."]);

    let out = d(&["-x", "10.43.0.20"]).await.unwrap();
    assert_eq!(records(&out), vec!["20.0.43.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."]);

    let out = d(&["nope.default.svc.cluster.local", "A"]).await.unwrap();
    assert_eq!(status(&out), "NXDOMAIN");
    let soa = records(&out);
    assert_eq!(soa.len(), 1);
    assert!(soa[0].starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "), "{soa:?}");
    assert!(soa[0].ends_with(" 7200 1800 86400 5"), "{soa:?}");

    let out = d(&["dns-version.cluster.local", "TXT"]).await.unwrap();
    assert_eq!(records(&out), vec!["dns-version.cluster.local. 5 IN TXT \"1.1.0\""]);

    let out = d(&["10-42-3-4.default.pod.cluster.local", "A"]).await.unwrap();
    assert_eq!(records(&out), vec!["10-42-3-4.default.pod.cluster.local. 5 IN A 10.42.3.4"]);

    // ExternalName: the CNAME, then the target's address from upstream.
    let out = d(&["ext.default.svc.cluster.local", "A"]).await.unwrap();
    assert_eq!(records(&out), vec!["ext.default.svc.cluster.local. 5 IN CNAME www.example.com.", "www.example.com. 300 IN A 192.0.2.1"]);

    // 200 endpoints do not fit 512 bytes: truncated over UDP, dig retries over TCP.
    let out = d(&["many.default.svc.cluster.local", "A", "+noedns", "+ignore"]).await.unwrap();
    assert!(out.contains(" tc "), "truncated: {out}");
    let n = records(&out).len();
    assert!(n > 0 && n < 200 && n == (512 - 12 - 36) / 16, "whole records up to 512 bytes, got {n}");
    let out = d(&["many.default.svc.cluster.local", "A", "+noedns"]).await.unwrap();
    assert_eq!(records(&out).len(), 200, "all of them over TCP");
    let out = d(&["many.default.svc.cluster.local", "A", "+tcp"]).await.unwrap();
    assert_eq!(records(&out).len(), 200);
    assert!(records(&out).contains(&"many.default.svc.cluster.local. 5 IN A 10.42.0.209".to_string()));

    // Outside the zone: forwarded; a truncated upstream answer is asked again over TCP.
    let out = d(&["example.org", "A"]).await.unwrap();
    assert_eq!(records(&out), vec!["example.org. 300 IN A 192.0.2.1"]);
    let out = d(&["tc.example", "A"]).await.unwrap();
    assert_eq!(records(&out), vec!["tc.example. 300 IN A 192.0.2.2"]);
    let out = d(&["8.8.8.8.in-addr.arpa", "A"]).await.unwrap();
    assert_eq!(status(&out), "NOERROR", "unknown reverse names are forwarded: {out}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_when_no_upstream_answers() {
    let host = loopback();
    let server = SocketAddr::from((host, free_port(host)));
    // Bound, never answering.
    let silent = std::net::UdpSocket::bind((host, 0)).unwrap();
    let config = DnsConfig {
        listen: vec![server],
        upstreams: Some(vec![silent.local_addr().unwrap()]),
        upstream_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let task = tokio::spawn(dns::serve_index(None, Index::new("cluster.local"), config));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = tokio::task::spawn_blocking(move || dig(server, &["example.org", "A"])).await.unwrap();
    assert_eq!(status(&out), "SERVFAIL");
    // Binding a taken address fails at once, with the address in the error.
    let again = DnsConfig { listen: vec![server], upstreams: Some(vec![]), ..Default::default() };
    let err = dns::serve_index(None, Index::new("cluster.local"), again).await.unwrap_err();
    assert!(format!("{err:#}").contains(&server.to_string()), "{err:#}");
    task.abort();
}

/// Waits up to `within` for `dig` to print `want` as its records.
async fn eventually(server: SocketAddr, args: &'static [&'static str], want: Vec<&str>, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let out = tokio::task::spawn_blocking(move || dig(server, args)).await.unwrap();
        if records(&out) == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{args:?}: wanted {want:?}, got {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_api_and_publishes_the_node_endpoint() {
    use k8s_openapi::api::core::v1::{Node, Service as KubeService};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, DeleteParams, PostParams};

    let dir = std::env::temp_dir().join(format!("skiff-dns-test-{}", std::process::id()));
    let config = apiserver::Config {
        data_dir: dir.clone(),
        bind_address: "127.0.0.1".parse().unwrap(),
        port: 6443,
        kubeconfig: dir.join("kubeconfig.yaml"),
        service_cidr: apiserver::Cidr::parse("10.43.0.0/16").unwrap(),
        node_ports: (30000, 32767),
        event_ttl: Duration::from_secs(3600),
        cluster_dns: Some(ip("10.43.0.10")),
        authn: Default::default(),
    };
    let app = apiserver::build(Arc::new(store::MemoryStore::new()), &config, "127.0.0.1".parse().unwrap()).await.unwrap();
    let client = client::in_process(apiserver::router(app));
    let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "dns-test-node"}})).unwrap();
    let node = Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();

    let host = loopback();
    let server = SocketAddr::from((host, free_port(host)));
    // What the slice says (the API refuses loopback endpoint addresses).
    let published = ip("10.42.99.1");
    let dns_config = DnsConfig { listen: vec![server], upstreams: Some(vec![]), publish: Some(("dns-test-node".into(), published)), ..Default::default() };
    let task = tokio::spawn(dns::run(client.clone(), dns_config));

    // The API server's own kube-dns Service, and this node's endpoint of it.
    eventually(server, &["kube-dns.kube-system.svc.cluster.local", "A"], vec!["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.43.0.10"], Duration::from_secs(10)).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let start = Instant::now();
    let slice = loop {
        if let Some(s) = slices.get_opt("kube-dns-dns-test-node").await.unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no EndpointSlice published: {:?}", dns::publish::ensure(&client, "dns-test-node", published).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(slice.endpoints[0].addresses, vec![published.to_string()]);
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("dns-test-node"));
    assert_eq!(slice.metadata.owner_references.as_ref().unwrap()[0].uid, node.metadata.uid.clone().unwrap());
    assert_eq!(slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"], "kube-dns");
    let ports: Vec<_> = slice.ports.iter().flatten().map(|p| (p.name.clone().unwrap(), p.port, p.protocol.clone().unwrap())).collect();
    assert_eq!(ports, vec![("dns".into(), Some(53), "UDP".into()), ("dns-tcp".into(), Some(53), "TCP".into())]);
    // Idempotent.
    dns::publish::ensure(&client, "dns-test-node", published).await.unwrap();
    let again = slices.get("kube-dns-dns-test-node").await.unwrap();
    assert_eq!(again.metadata.resource_version, slice.metadata.resource_version, "nothing rewritten");

    // A new Service answers within a second; a headless one with its slice; deletion removes it.
    let services: Api<KubeService> = Api::namespaced(client.clone(), "default");
    let svc = |v: serde_json::Value| -> KubeService { serde_json::from_value(v).unwrap() };
    services.create(&PostParams::default(), &svc(serde_json::json!({"metadata": {"name": "api"}, "spec": {"clusterIP": "10.43.7.7", "ports": [{"name": "http", "port": 80}]}}))).await.unwrap();
    let took = eventually(server, &["api.default.svc.cluster.local", "A"], vec!["api.default.svc.cluster.local. 5 IN A 10.43.7.7"], Duration::from_secs(1)).await;
    eprintln!("a new Service answered after {took:?}");
    services.create(&PostParams::default(), &svc(serde_json::json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}))).await.unwrap();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), "default").create(&PostParams::default(), &slice).await.unwrap();
    eventually(server, &["db-0.db.default.svc.cluster.local", "A"], vec!["db-0.db.default.svc.cluster.local. 5 IN A 10.42.0.5"], Duration::from_secs(1)).await;
    eventually(
        server,
        &["_pg._tcp.db.default.svc.cluster.local", "SRV"],
        vec!["_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.default.svc.cluster.local."],
        Duration::from_secs(1),
    )
    .await;
    services.delete("api", &DeleteParams::default()).await.unwrap();
    let out = loop {
        let out = tokio::task::spawn_blocking(move || dig(server, &["api.default.svc.cluster.local", "A"])).await.unwrap();
        if status(&out) == "NXDOMAIN" || start.elapsed() > Duration::from_secs(20) {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status(&out), "NXDOMAIN");
    task.abort();
    let _ = std::fs::remove_dir_all(dir);
}
