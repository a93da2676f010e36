//! The multi-node pod network, in the way of flannel's backends.
//!
//! - `vxlan` (default): one VXLAN device per node (VNI 1, UDP 8472, local =
//!   the node IP, no learning, MTU = uplink - 50) with a stable MAC and the
//!   node's podCIDR network address /32 on it. For every other node: an
//!   on-link route `podCIDR via <its .0> dev <vx> onlink`, a permanent
//!   neighbour `<its .0> lladdr <its VTEP MAC>` and an FDB entry
//!   `<its VTEP MAC> dst <its node IP>`. Nodes publish their VTEP MAC and IP
//!   in flannel's Node annotations.
//! - `host-gw`: a direct route `podCIDR via <node IP>` per other node; nodes
//!   must share one L2 segment. Routes carry protocol [`ROUTE_PROTO`], so
//!   a restart or `skiff cleanup` finds them again.
//!
//! Changes go through `ip`/`bridge` batches: they happen only when nodes
//! come and go, never per pod.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::cidr::Ipv4Cidr;
use crate::host::stable_hash;

pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// Bytes VXLAN adds to each packet (outer IPv4 + UDP + VXLAN + inner Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// rtm_protocol of host-gw routes (unassigned in iproute2's rt_protos).
pub const ROUTE_PROTO: u8 = 0x5a;

pub const ANNOTATION_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const ANNOTATION_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANNOTATION_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Vxlan,
    HostGw,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            _ => Err(format!("{s:?}: want vxlan or host-gw")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        })
    }
}

/// Another node, as its Node object describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub node_ip: Ipv4Addr,
    /// Its VTEP MAC (vxlan only).
    pub vtep_mac: Option<String>,
}

/// The VXLAN device's name for a node whose pod bridge is `bridge` (≤ 15 chars).
pub fn device_name(bridge: &str) -> String {
    let name = format!("{bridge}.vx");
    if name.len() <= 15 {
        name
    } else {
        format!("vx{:08x}", stable_hash(bridge))
    }
}

/// A locally administered unicast MAC derived from the node name: stable
/// across restarts and re-creations of the device, so peers' entries stay valid.
pub fn vtep_mac(node_name: &str) -> String {
    let h = stable_hash(&format!("{node_name}/vtep")).to_be_bytes();
    let g = stable_hash(node_name).to_be_bytes();
    format!("0e:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2], h[3], g[0])
}

/// MTU of the interface holding `node_ip` (the uplink; the default route's
/// when that is loopback or not found), 1500 if none.
pub fn uplink_mtu(node_ip: Ipv4Addr) -> u32 {
    uplink(node_ip)
        .filter(|i| i != "lo")
        .or_else(crate::host::default_route_iface)
        .and_then(|i| std::fs::read_to_string(format!("/sys/class/net/{i}/mtu")).ok())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

/// The VXLAN device's MTU: the uplink's less what VXLAN adds.
fn vxlan_mtu(node_ip: Ipv4Addr) -> u32 {
    uplink_mtu(node_ip).saturating_sub(VXLAN_OVERHEAD)
}

/// The pod MTU a backend needs: for vxlan the VXLAN device's. Blocking
/// (runs `ip` and reads sysfs).
pub fn pod_mtu(backend: Backend, node_ip: Ipv4Addr) -> Option<u32> {
    (backend == Backend::Vxlan).then(|| vxlan_mtu(node_ip))
}

fn uplink(node_ip: Ipv4Addr) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-4", "addr", "show"])
        .output()
        .ok()?;
    let links: Value = serde_json::from_slice(&out.stdout).ok()?;
    links.as_array()?.iter().find_map(|l| {
        let has = l["addr_info"]
            .as_array()?
            .iter()
            .any(|a| a["local"].as_str() == Some(&node_ip.to_string()));
        has.then(|| l["ifname"].as_str().map(String::from)).flatten()
    })
}

/// One node's side of the multi-node network.
pub struct Overlay {
    pub backend: Backend,
    pub device: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Cidr,
    pub mac: String,
}

impl Overlay {
    pub fn new(backend: Backend, bridge: &str, node_name: &str, node_ip: Ipv4Addr, pod_cidr: Ipv4Cidr) -> Overlay {
        Overlay { backend, device: device_name(bridge), node_ip, pod_cidr, mac: vtep_mac(node_name) }
    }

    /// The Node annotations that tell other nodes how to reach this one.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(ANNOTATION_BACKEND_TYPE.to_string(), self.backend.to_string());
        let data = match self.backend {
            Backend::Vxlan => serde_json::json!({"VNI": VNI, "VtepMAC": self.mac}).to_string(),
            Backend::HostGw => "null".to_string(),
        };
        a.insert(ANNOTATION_BACKEND_DATA.to_string(), data);
        a.insert(ANNOTATION_PUBLIC_IP.to_string(), self.node_ip.to_string());
        a
    }

    /// Creates (or fixes) the VXLAN device; nothing for host-gw. Idempotent.
    pub async fn ensure_device(&self) -> anyhow::Result<()> {
        if self.backend != Backend::Vxlan {
            return Ok(());
        }
        let dev = &self.device;
        let node_ip = self.node_ip;
        let mtu = tokio::task::spawn_blocking(move || vxlan_mtu(node_ip)).await.context("finding the uplink's MTU")?;
        if let Some(link) = ip_json(&["-d", "link", "show", "dev", dev]).await?.as_array().and_then(|a| a.first().cloned()) {
            let info = &link["linkinfo"];
            let data = &info["info_data"];
            let same = info["info_kind"] == "vxlan"
                && data["id"].as_u64() == Some(VNI.into())
                && data["port"].as_u64() == Some(VXLAN_PORT.into())
                && data["local"].as_str() == Some(&self.node_ip.to_string());
            if !same {
                tracing::info!(device = dev, "VXLAN device has other settings; making it again");
                ip_batch(&format!("link del dev {dev}\n")).await?;
            }
        }
        let script = format!(
            "link add {dev} type vxlan id {VNI} dstport {VXLAN_PORT} local {ip} nolearning\n",
            ip = self.node_ip
        );
        if let Err(e) = ip_batch(&script).await {
            if !format!("{e:#}").contains("File exists") {
                return Err(e.context(format!("creating VXLAN device {dev} (another VXLAN device with VNI {VNI} on port {VXLAN_PORT} in this network namespace makes this fail)")));
            }
        }
        ip_batch(&format!(
            "link set dev {dev} address {mac} mtu {mtu}\naddr replace {addr}/32 dev {dev}\nlink set dev {dev} up\n",
            mac = self.mac,
            addr = self.pod_cidr.network()
        ))
        .await
        .with_context(|| format!("configuring VXLAN device {dev}"))
    }

    /// Makes the kernel's routes (and for vxlan neighbour and FDB entries)
    /// match `peers` exactly: missing ones added, stale ones removed.
    pub async fn sync(&self, peers: &[Peer]) -> anyhow::Result<()> {
        let peers: Vec<&Peer> = peers.iter().filter(|p| p.pod_cidr != self.pod_cidr).collect();
        match self.backend {
            Backend::Vxlan => self.sync_vxlan(&peers).await,
            Backend::HostGw => self.sync_host_gw(&peers).await,
        }
    }

    async fn sync_vxlan(&self, peers: &[&Peer]) -> anyhow::Result<()> {
        let dev = &self.device;
        let peers: Vec<(&Peer, &str)> = peers.iter().filter_map(|p| Some((*p, p.vtep_mac.as_deref()?))).collect();
        let mut script = String::new();
        // Removals first: a peer whose podCIDR or MAC changed is added back below.
        let routes = ip_json(&["-4", "route", "show", "dev", dev]).await?;
        for r in routes.as_array().into_iter().flatten() {
            let (Some(dst), Some(via)) = (r["dst"].as_str(), r["gateway"].as_str()) else { continue };
            if !peers.iter().any(|(p, _)| p.pod_cidr.to_string() == dst && p.pod_cidr.network().to_string() == via) {
                script += &format!("route del {dst} via {via} dev {dev}\n");
            }
        }
        let neigh = ip_json(&["-4", "neigh", "show", "dev", dev]).await?;
        for n in neigh.as_array().into_iter().flatten() {
            let Some(dst) = n["dst"].as_str() else { continue };
            let mac = n["lladdr"].as_str().unwrap_or("");
            if !peers.iter().any(|(p, m)| p.pod_cidr.network().to_string() == dst && m.eq_ignore_ascii_case(mac)) {
                script += &format!("neigh del {dst} dev {dev}\n");
            }
        }
        let mut fdb_script = String::new();
        for f in json_of("bridge", &["-j", "fdb", "show", "dev", dev]).await?.as_array().into_iter().flatten() {
            let (Some(mac), Some(dst)) = (f["mac"].as_str(), f["dst"].as_str()) else { continue };
            if !peers.iter().any(|(p, m)| m.eq_ignore_ascii_case(mac) && p.node_ip.to_string() == dst) {
                fdb_script += &format!("fdb del {mac} dev {dev} dst {dst}\n");
            }
        }
        for (p, mac) in &peers {
            let gw = p.pod_cidr.network();
            fdb_script += &format!("fdb replace {mac} dev {dev} dst {} self permanent\n", p.node_ip);
            script += &format!("neigh replace {gw} lladdr {mac} dev {dev} nud permanent\n");
            script += &format!("route replace {} via {gw} dev {dev} onlink\n", p.pod_cidr);
        }
        // FDB before neighbours and routes: the first packet finds its tunnel end.
        run_batch("bridge", &fdb_script).await.with_context(|| format!("updating the FDB of {dev}"))?;
        ip_batch(&script).await.with_context(|| format!("updating routes and neighbours of {dev}"))
    }

    async fn sync_host_gw(&self, peers: &[&Peer]) -> anyhow::Result<()> {
        let mut script = String::new();
        for r in ip_json(&["-4", "route", "show", "proto", &ROUTE_PROTO.to_string()]).await?.as_array().into_iter().flatten() {
            let (Some(dst), Some(via)) = (r["dst"].as_str(), r["gateway"].as_str()) else { continue };
            if !peers.iter().any(|p| p.pod_cidr.to_string() == dst && p.node_ip.to_string() == via) {
                script += &format!("route del {dst} via {via} proto {ROUTE_PROTO}\n");
            }
        }
        for p in peers {
            script += &format!("route replace {} via {} proto {ROUTE_PROTO}\n", p.pod_cidr, p.node_ip);
        }
        ip_batch(&script).await.context("updating host-gw routes")
    }
}

/// Removes what either backend put on the host for the node whose bridge is
/// `bridge`: the VXLAN device (its routes, neighbour and FDB entries go with
/// it) and host-gw routes. Missing ones are fine.
pub async fn teardown(bridge: &str) -> anyhow::Result<()> {
    let dev = device_name(bridge);
    if ip_json(&["link", "show", "dev", &dev]).await?.as_array().is_some_and(|a| !a.is_empty()) {
        ip_batch(&format!("link del dev {dev}\n")).await?;
    }
    let mut script = String::new();
    for r in ip_json(&["-4", "route", "show", "proto", &ROUTE_PROTO.to_string()]).await?.as_array().into_iter().flatten() {
        if let Some(dst) = r["dst"].as_str() {
            script += &format!("route del {dst} proto {ROUTE_PROTO}\n");
        }
    }
    ip_batch(&script).await
}

/// `ip -j ARGS`; a missing device reads as an empty list.
async fn ip_json(args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    json_of("ip", &all).await
}

async fn json_of(program: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program} (is iproute2 installed?)"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("does not exist") || stderr.contains("Cannot find device") {
            return Ok(Value::Array(Vec::new()));
        }
        bail!("{program} {}: {}", args.join(" "), stderr.trim());
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("reading the output of {program} {}", args.join(" ")))
}

async fn ip_batch(script: &str) -> anyhow::Result<()> {
    run_batch("ip", script).await
}

/// `PROGRAM -batch -` with `script` on stdin; nothing to do for an empty one.
async fn run_batch(program: &str, script: &str) -> anyhow::Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = tokio::process::Command::new(program)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {program} (is iproute2 installed?)"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("{program} -batch failed: {}\nbatch:\n{script}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_are_stable() {
        assert_eq!(device_name("skiff0"), "skiff0.vx");
        let long = device_name("abcdefghijklmno");
        assert!(long.len() <= 15 && long.starts_with("vx"), "{long}");
        assert_eq!(vtep_mac("n1"), vtep_mac("n1"));
        assert_ne!(vtep_mac("n1"), vtep_mac("n2"));
        assert_eq!(vtep_mac("n1").len(), 17);
        // Locally administered, unicast.
        assert!(vtep_mac("n1").starts_with("0e:"));
    }

    #[test]
    fn backends_parse_and_annotate() {
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert!("udp".parse::<Backend>().is_err());
        let o = Overlay::new(Backend::Vxlan, "skiff0", "n1", Ipv4Addr::new(10, 0, 0, 1), "10.42.1.0/24".parse().unwrap());
        let a = o.annotations();
        assert_eq!(a[ANNOTATION_BACKEND_TYPE], "vxlan");
        assert_eq!(a[ANNOTATION_PUBLIC_IP], "10.0.0.1");
        let data: Value = serde_json::from_str(&a[ANNOTATION_BACKEND_DATA]).unwrap();
        assert_eq!(data["VNI"], 1);
        assert_eq!(data["VtepMAC"], vtep_mac("n1"));
    }
}
