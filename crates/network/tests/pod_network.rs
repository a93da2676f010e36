//! Root-only tests on real namespaces, veths, bridges and nftables. Every
//! test uses its own bridge, table, netns names and pod CIDR (derived from
//! the process id), and the `TestNet` guard removes all of them on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use network::{connect_in_netns, host_veth_name, in_netns, NetConfig, PodNetwork, PortMapping};

const TIMEOUT: Duration = Duration::from_secs(5);

struct TestNet {
    net: PodNetwork,
    bridge: String,
    table: String,
    state: tempfile::TempDir,
    pod_cidr: String,
    cluster_cidr: String,
    tag: String,
    netns: Vec<String>,
    /// Links to delete on drop (host veths of sandboxes, test-made links).
    links: Vec<String>,
}

impl TestNet {
    /// `slot` keeps the pod CIDRs of tests in one run apart.
    fn new(slot: u8) -> TestNet {
        let pid = std::process::id();
        let tag = format!("{pid:x}{slot}");
        let state = tempfile::tempdir().unwrap();
        let pod_cidr = format!("10.{}.{}.0/24", 100 + slot, pid % 250);
        let cluster_cidr = format!("10.{}.0.0/16", 100 + slot);
        let bridge = format!("skt{tag}");
        let table = format!("skiff_test_{tag}");
        let net = PodNetwork::new(config(
            &bridge,
            &pod_cidr,
            &cluster_cidr,
            state.path(),
            &table,
        ))
        .unwrap();
        TestNet {
            net,
            bridge,
            table,
            state,
            pod_cidr,
            cluster_cidr,
            tag,
            netns: Vec::new(),
            links: Vec::new(),
        }
    }

    /// A fresh PodNetwork on the same bridge, table and state dir (a restart).
    fn reopen(&self) -> PodNetwork {
        PodNetwork::new(config(
            &self.bridge,
            &self.pod_cidr,
            &self.cluster_cidr,
            self.state.path(),
            &self.table,
        ))
        .unwrap()
    }

    /// Creates a named netns and returns (sandbox id, netns path).
    fn add_netns(&mut self, n: usize) -> (String, PathBuf) {
        let name = format!("skt-{}-{n}", self.tag);
        run("ip", &["netns", "add", &name]);
        self.netns.push(name.clone());
        let sandbox_id = format!("sandbox-{}-{n}", self.tag);
        self.links.push(host_veth_name(&sandbox_id));
        (sandbox_id, PathBuf::from(format!("/run/netns/{name}")))
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Best effort: most of these are already gone when the test passed.
        let quiet = |cmd: &str, args: &[&str]| {
            let _ = Command::new(cmd)
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        for link in &self.links {
            quiet("ip", &["link", "del", link]);
        }
        for ns in &self.netns {
            quiet("ip", &["netns", "del", ns]);
        }
        quiet("ip", &["link", "del", &self.bridge]);
        quiet("nft", &["delete", "table", "ip", &self.table]);
    }
}

fn config(
    bridge: &str,
    pod_cidr: &str,
    cluster_cidr: &str,
    state: &Path,
    table: &str,
) -> NetConfig {
    NetConfig {
        bridge: bridge.into(),
        pod_cidr: pod_cidr.into(),
        cluster_cidr: cluster_cidr.into(),
        mtu: None,
        state_dir: state.to_path_buf(),
        nft_table: table.into(),
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn nft_table(table: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// A TCP listener inside `netns` that answers each line with "<name>:<line>".
fn echo_server_in(netns: &Path, addr: SocketAddrV4, name: &'static str) -> u16 {
    let listener = in_netns(netns, move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    serve_echo(listener, name)
}

fn serve_echo(listener: TcpListener, name: &'static str) -> u16 {
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_ok() {
                    let _ = write!(conn, "{name}:{line}");
                }
            });
        }
    });
    port
}

/// Sends one line and returns the answer.
fn talk(mut conn: TcpStream) -> String {
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(b"ping\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&conn).read_line(&mut answer).unwrap();
    answer.trim().to_string()
}

fn connect(addr: SocketAddrV4) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::V4(addr), TIMEOUT)
}

fn connect_from(netns: &Path, addr: SocketAddrV4) -> TcpStream {
    in_netns(netns, move || connect(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

#[tokio::test]
async fn pods_reach_each_other_the_host_and_the_gateway() {
    let mut t = TestNet::new(1);
    t.net.ensure_host().await.unwrap();
    let (a_id, a_ns) = t.add_netns(1);
    let (b_id, b_ns) = t.add_netns(2);

    let started = Instant::now();
    let a_ip = t.net.attach(&a_id, &a_ns, &[]).await.unwrap();
    println!("attach took {:?}", started.elapsed());
    let b_ip = t.net.attach(&b_id, &b_ns, &[]).await.unwrap();
    assert_ne!(a_ip, b_ip);
    assert!(a_ip != t.net.gateway() && b_ip != t.net.gateway());
    assert!(link_exists(&host_veth_name(&a_id)));

    let port = echo_server_in(&a_ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), "a");
    assert_eq!(
        talk(connect_from(&b_ns, SocketAddrV4::new(a_ip, port))),
        "a:ping",
        "pod to pod"
    );
    assert_eq!(
        talk(connect(SocketAddrV4::new(a_ip, port)).unwrap()),
        "a:ping",
        "host to pod"
    );

    let gw_port = serve_echo(TcpListener::bind((t.net.gateway(), 0)).unwrap(), "host");
    let gw = SocketAddrV4::new(t.net.gateway(), gw_port);
    assert_eq!(talk(connect_from(&b_ns, gw)), "host:ping", "pod to gateway");

    // Re-attaching is idempotent and keeps the pod reachable.
    assert_eq!(t.net.attach(&a_id, &a_ns, &[]).await.unwrap(), a_ip);
    assert_eq!(
        talk(connect_from(&b_ns, SocketAddrV4::new(a_ip, port))),
        "a:ping"
    );

    // A restarted agent remembers the allocations.
    let reopened = t.reopen();
    assert_eq!(reopened.ip_of(&a_id), Some(a_ip));
    let mut allocs = reopened.allocations();
    allocs.sort();
    let mut expected = vec![(a_id.clone(), a_ip), (b_id.clone(), b_ip)];
    expected.sort();
    assert_eq!(allocs, expected);

    reopened.detach(&b_id).await.unwrap();
    reopened.detach(&b_id).await.unwrap();
    assert!(!link_exists(&host_veth_name(&b_id)));
    assert_eq!(reopened.ip_of(&b_id), None);
    assert_eq!(reopened.allocations(), vec![(a_id.clone(), a_ip)]);
    assert!(connect_in_b_fails(&b_ns, SocketAddrV4::new(a_ip, port)));
}

fn connect_in_b_fails(netns: &Path, addr: SocketAddrV4) -> bool {
    in_netns(netns, move || {
        TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_millis(300))
    })
    .unwrap()
    .is_err()
}

#[tokio::test]
async fn traffic_leaving_the_cluster_cidr_is_masqueraded() {
    let mut t = TestNet::new(6);
    t.net.ensure_host().await.unwrap();
    let (id, ns) = t.add_netns(1);
    let pod_ip = t.net.attach(&id, &ns, &[]).await.unwrap();

    // An "outside" host: a netns behind a point-to-point veth from the node.
    let (_, outside_ns) = t.add_netns(2);
    let outside_name = outside_ns
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (node_end, node_ip, outside_ip) = (
        format!("skx{}", t.tag),
        format!("10.200.{}.1", std::process::id() % 250),
        format!("10.200.{}.2", std::process::id() % 250),
    );
    t.links.push(node_end.clone());
    run(
        "ip",
        &[
            "link",
            "add",
            &node_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside_name,
        ],
    );
    run(
        "ip",
        &["addr", "add", &format!("{node_ip}/30"), "dev", &node_end],
    );
    run("ip", &["link", "set", &node_end, "up"]);
    run(
        "ip",
        &[
            "-n",
            &outside_name,
            "addr",
            "add",
            &format!("{outside_ip}/30"),
            "dev",
            "eth0",
        ],
    );
    run("ip", &["-n", &outside_name, "link", "set", "eth0", "up"]);

    let listener = in_netns(&outside_ns, move || TcpListener::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let outside: SocketAddrV4 = format!("{outside_ip}:{port}").parse().unwrap();
    let _client = connect_from(&ns, outside);
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        node_ip,
        "pod {pod_ip} was not masqueraded"
    );
    t.net.detach(&id).await.unwrap();
}

#[tokio::test]
async fn host_ports_are_reachable_from_the_host_and_the_pod_itself() {
    let mut t = TestNet::new(2);
    t.net.ensure_host().await.unwrap();
    let (id, ns) = t.add_netns(1);
    // Two ports per process id, so concurrent runs never share one.
    let base = 20000 + (std::process::id() % 10000) as u16 * 2;
    let (any_port, local_port) = (base, base + 1);
    let ports = [
        PortMapping {
            protocol: "TCP".into(),
            container_port: 80,
            host_port: any_port,
            host_ip: None,
        },
        PortMapping {
            protocol: "TCP".into(),
            container_port: 80,
            host_port: local_port,
            host_ip: Some("127.0.0.1".parse().unwrap()),
        },
    ];
    let ip = t.net.attach(&id, &ns, &ports).await.unwrap();
    echo_server_in(&ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), "pod");

    let localhost = SocketAddrV4::new(Ipv4Addr::LOCALHOST, any_port);
    assert_eq!(
        talk(connect(localhost).unwrap()),
        "pod:ping",
        "host via 127.0.0.1"
    );
    let node = SocketAddrV4::new(t.net.gateway(), any_port);
    assert_eq!(
        talk(connect(node).unwrap()),
        "pod:ping",
        "host via a node address"
    );
    assert_eq!(
        talk(connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port)).unwrap()),
        "pod:ping"
    );
    assert_eq!(
        talk(connect_from(&ns, node)),
        "pod:ping",
        "hairpin: the pod through its own hostPort"
    );

    // Re-attaching with the same ports is fine; the rules are replaced.
    assert_eq!(t.net.attach(&id, &ns, &ports).await.unwrap(), ip);
    assert_eq!(talk(connect(localhost).unwrap()), "pod:ping");

    t.net.detach(&id).await.unwrap();
    let rules = nft_table(&t.table).unwrap();
    assert!(
        !rules.contains(&ip.to_string()),
        "hostPort elements left behind:\n{rules}"
    );
    assert!(
        connect(localhost).is_err(),
        "hostPort still forwarded after detach"
    );
}

#[tokio::test]
async fn a_host_port_owned_by_another_pod_is_refused() {
    let mut t = TestNet::new(3);
    t.net.ensure_host().await.unwrap();
    let (a, a_ns) = t.add_netns(1);
    let (b, b_ns) = t.add_netns(2);
    let port = 40000 + (std::process::id() % 20000) as u16;
    let ports = [PortMapping {
        protocol: "UDP".into(),
        container_port: 53,
        host_port: port,
        host_ip: None,
    }];
    t.net.attach(&a, &a_ns, &ports).await.unwrap();
    let err = t.net.attach(&b, &b_ns, &ports).await.unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("udp/{port}")),
        "{err:#}"
    );
    t.net.detach(&b).await.unwrap();
    t.net.detach(&a).await.unwrap();
    // Once freed, the port can be used by the other pod.
    t.net.attach(&b, &b_ns, &ports).await.unwrap();
    t.net.detach(&b).await.unwrap();
    assert!(t.net.allocations().is_empty());
}

#[tokio::test]
async fn connect_in_netns_reaches_the_pods_localhost() {
    let mut t = TestNet::new(4);
    t.net.ensure_host().await.unwrap();
    let (id, ns) = t.add_netns(1);
    t.net.attach(&id, &ns, &[]).await.unwrap();
    let port = echo_server_in(&ns, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), "lo");
    assert_eq!(talk(connect_in_netns(&ns, port).unwrap()), "lo:ping");
    // The host's own 127.0.0.1 does not have that listener.
    assert!(
        connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
            .map(talk)
            .ok()
            != Some("lo:ping".into())
    );
    t.net.detach(&id).await.unwrap();
}

#[tokio::test]
async fn ensure_host_repairs_and_teardown_removes_everything() {
    let mut t = TestNet::new(5);
    t.net.ensure_host().await.unwrap();
    t.net.ensure_host().await.unwrap();
    let table = nft_table(&t.table).unwrap();
    assert!(
        table.contains("masquerade") && table.contains("hostports"),
        "{table}"
    );

    // Break the host half-way: table gone, bridge down.
    run("nft", &["delete", "table", "ip", &t.table]);
    run("ip", &["link", "set", &t.bridge, "down"]);
    t.net.ensure_host().await.unwrap();
    assert!(nft_table(&t.table).unwrap().contains("masquerade"));
    let (id, ns) = t.add_netns(1);
    let ip = t.net.attach(&id, &ns, &[]).await.unwrap();
    let port = echo_server_in(&ns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), "pod");
    assert_eq!(
        talk(connect(SocketAddrV4::new(ip, port)).unwrap()),
        "pod:ping"
    );

    t.net.detach(&id).await.unwrap();
    t.net.teardown_host().await.unwrap();
    t.net.teardown_host().await.unwrap();
    assert!(!link_exists(&t.bridge));
    assert!(!link_exists(&host_veth_name(&id)));
    assert!(nft_table(&t.table).is_none());
}

#[tokio::test]
async fn many_pods_get_distinct_addresses_and_attach_quickly() {
    let mut t = TestNet::new(7);
    t.net.ensure_host().await.unwrap();
    let pods: Vec<(String, PathBuf)> = (0..10).map(|n| t.add_netns(n)).collect();
    let mut timings = Vec::new();
    let mut ips = std::collections::BTreeSet::new();
    for (id, ns) in &pods {
        let started = Instant::now();
        ips.insert(t.net.attach(id, ns, &[]).await.unwrap());
        timings.push(started.elapsed());
    }
    assert_eq!(ips.len(), pods.len());
    timings.sort();
    // Reported, not asserted: timing depends on the machine's load.
    println!(
        "attach latency over {} pods: min {:?}, median {:?}, max {:?}",
        timings.len(),
        timings[0],
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );
    for (id, _) in &pods {
        t.net.detach(id).await.unwrap();
    }
    assert!(t.net.allocations().is_empty());
}
