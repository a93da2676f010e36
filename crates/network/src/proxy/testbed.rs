//! A throwaway node for the proxy's tests and benchmark (root only): a
//! "node" network namespace with a bridge, and "pod" namespaces on veths
//! with a TCP responder each. Everything lives inside namespaces this
//! creates, and dropping the `Testbed` deletes them (links go with them).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::runner::Runner;

pub struct Testbed {
    pub tag: String,
    /// 10.<octet>.0.0/16 is the cluster CIDR, 10.<octet>.1.0/24 the pods'.
    pub octet: u8,
    pub node_ns: String,
    pub node_ip: Ipv4Addr,
    namespaces: Vec<String>,
    next_pod: u8,
}

pub struct Pod {
    pub name: String,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
}

impl Testbed {
    /// `tag` keeps runs apart (it is in every name; at most 8 characters);
    /// `octet` picks the address range.
    pub fn new(tag: &str, octet: u8) -> anyhow::Result<Testbed> {
        if tag.len() > 8 || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("testbed tag {tag:?} must be at most 8 letters or digits");
        }
        let node_ns = format!("skp-{tag}-node");
        let mut bed = Testbed {
            tag: tag.into(),
            octet,
            node_ip: Ipv4Addr::new(10, octet, 1, 1),
            namespaces: Vec::new(),
            node_ns: node_ns.clone(),
            next_pod: 2,
        };
        ip(&["netns", "add", &node_ns])?;
        bed.namespaces.push(node_ns.clone());
        let n = ["-n", node_ns.as_str()];
        ip(&[&n[..], &["link", "set", "lo", "up"]].concat())?;
        ip(&[&n[..], &["link", "add", "br0", "type", "bridge"]].concat())?;
        ip(&[&n[..], &["addr", "add", &format!("{}/24", bed.node_ip), "dev", "br0"]].concat())?;
        ip(&[&n[..], &["link", "set", "br0", "up"]].concat())?;
        crate::in_netns(&bed.node_netns(), || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))??;
        Ok(bed)
    }

    pub fn node_netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.node_ns))
    }

    pub fn cluster_cidr(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    /// The node's pod range, 10.<octet>.1.0/24 (its pods' addresses).
    pub fn pod_cidr(&self) -> crate::cidr::Ipv4Cidr {
        crate::cidr::Ipv4Cidr::new(Ipv4Addr::new(10, self.octet, 1, 0), 24).expect("a /24 is valid")
    }

    /// Runs nft inside the node namespace.
    pub fn runner(&self) -> Runner {
        Runner::in_netns(self.node_netns())
    }

    /// A pod namespace on the bridge, with the next free address.
    pub fn add_pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        let pod_ns = format!("skp-{}-{name}", self.tag);
        let addr = Ipv4Addr::new(10, self.octet, 1, self.next_pod);
        let host_end = format!("v{}{}", self.tag, self.next_pod);
        self.next_pod += 1;
        ip(&["netns", "add", &pod_ns])?;
        self.namespaces.push(pod_ns.clone());
        let n = ["-n", self.node_ns.as_str()];
        let p = ["-n", pod_ns.as_str()];
        ip(&[&n[..], &["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &pod_ns]].concat())?;
        ip(&[&n[..], &["link", "set", &host_end, "master", "br0", "up"]].concat())?;
        // As the pod network does: a pod reaching itself through a Service
        // leaves and re-enters its own bridge port.
        ip(&[&n[..], &["link", "set", &host_end, "type", "bridge_slave", "hairpin", "on"]].concat())?;
        ip(&[&p[..], &["link", "set", "lo", "up"]].concat())?;
        ip(&[&p[..], &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]].concat())?;
        ip(&[&p[..], &["link", "set", "eth0", "up"]].concat())?;
        ip(&[&p[..], &["route", "add", "default", "via", &self.node_ip.to_string()]].concat())?;
        Ok(Pod { name: name.into(), netns: PathBuf::from(format!("/run/netns/{pod_ns}")), ip: addr })
    }
}

impl Testbed {
    /// A client outside the cluster: a namespace behind a point-to-point
    /// veth from the node (10.<octet + 100>.0.2, the node side .1). Returns
    /// the client and the node's address on that link.
    pub fn add_outside_client(&mut self) -> anyhow::Result<(Pod, Ipv4Addr)> {
        let ns = format!("skp-{}-out", self.tag);
        let (node_addr, addr) = (Ipv4Addr::new(10, self.octet + 100, 0, 1), Ipv4Addr::new(10, self.octet + 100, 0, 2));
        let node_end = format!("x{}", self.tag);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let n = ["-n", self.node_ns.as_str()];
        let o = ["-n", ns.as_str()];
        ip(&[&n[..], &["link", "add", &node_end, "type", "veth", "peer", "name", "eth0", "netns", &ns]].concat())?;
        ip(&[&n[..], &["addr", "add", &format!("{node_addr}/24"), "dev", &node_end]].concat())?;
        ip(&[&n[..], &["link", "set", &node_end, "up"]].concat())?;
        ip(&[&o[..], &["link", "set", "lo", "up"]].concat())?;
        ip(&[&o[..], &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]].concat())?;
        ip(&[&o[..], &["link", "set", "eth0", "up"]].concat())?;
        ip(&[&o[..], &["route", "add", "default", "via", &node_addr.to_string()]].concat())?;
        Ok((Pod { name: "outside".into(), netns: PathBuf::from(format!("/run/netns/{ns}")), ip: addr }, node_addr))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Deleting a namespace deletes its links and nftables tables too.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

impl Pod {
    /// A TCP server on `port` in the pod that answers every line with the
    /// pod's name (and a newline). It lives until the namespace goes.
    pub fn serve(&self, port: u16) -> anyhow::Result<()> {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let listener = crate::in_netns(&self.netns, move || TcpListener::bind(addr))??;
        let name = self.name.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let name = name.clone();
                std::thread::spawn(move || answer(conn, &name));
            }
        });
        Ok(())
    }

    /// A TCP server on `port` that answers every line with the client's address.
    pub fn serve_peer_address(&self, port: u16) -> anyhow::Result<()> {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        let listener = crate::in_netns(&self.netns, move || TcpListener::bind(addr))??;
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let Ok(peer) = conn.peer_addr() else { continue };
                std::thread::spawn(move || answer(conn, &peer.ip().to_string()));
            }
        });
        Ok(())
    }

    /// Connects from inside the pod.
    pub fn connect(&self, to: SocketAddrV4, timeout: Duration) -> std::io::Result<TcpStream> {
        crate::in_netns(&self.netns, move || TcpStream::connect_timeout(&to.into(), timeout))?
    }
}

fn answer(conn: TcpStream, name: &str) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut writer = conn;
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if writeln!(writer, "{name}").is_err() {
            return;
        }
        line.clear();
    }
}

/// Sends a line on `conn` and returns the answer without its newline.
pub fn ask(conn: &mut TcpStream) -> std::io::Result<String> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"who\n")?;
    let mut answer = String::new();
    BufReader::new(&*conn).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
