//! What a benchmark's node agent does to the host: the unique names it is
//! given (so it cannot collide with a real install or a test), its
//! container shims, and removing everything it leaves behind afterwards
//! with the runtime's and the network's own removal code, then checking
//! that nothing is left.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use runtime::containers::{Runtime, ShimCommand};
use runtime::cri::RuntimeService;
use runtime::images::{ImageResolver, Store};

use super::server;

/// The agent's host-level names, unique to this benchmark process.
pub struct HostNames {
    pub node: String,
    pub bridge: String,
    pub nft_table: String,
    pub kubelet_port: u16,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub cluster_dns: String,
}

impl HostNames {
    pub fn for_this_process() -> Result<HostNames> {
        let pid = std::process::id();
        // A 10.x.0.0/16 from 10.128.0.0/9 that no route on the host uses yet.
        let used = routed_second_octets();
        let free = |start: u32, not: Option<u32>| {
            (0..128).map(|i| 128 + (start + i) % 128).find(|x| !used.contains(x) && Some(*x) != not)
        };
        let pods = free(pid, None).context("every 10.x.0.0/16 with x in 128..255 is routed on this host")?;
        let services = free(pid + 64, Some(pods)).context("no second 10.x.0.0/16 left for services")?;
        Ok(HostNames {
            node: format!("skiff-bench-{pid}"),
            bridge: format!("skb{pid:x}"),
            nft_table: format!("skiff_bench_{pid}"),
            kubelet_port: server::free_port()?,
            cluster_cidr: format!("10.{pods}.0.0/16"),
            service_cidr: format!("10.{services}.0.0/16"),
            cluster_dns: format!("10.{services}.0.10"),
        })
    }

    pub fn server_flags(&self) -> Vec<String> {
        [
            ("--node-name", self.node.clone()),
            ("--bridge", self.bridge.clone()),
            ("--nft-table", self.nft_table.clone()),
            ("--kubelet-port", self.kubelet_port.to_string()),
            ("--cluster-cidr", self.cluster_cidr.clone()),
            ("--service-cidr", self.service_cidr.clone()),
            ("--cluster-dns", self.cluster_dns.clone()),
            // One node: no VXLAN device, which would collide with an installed node's.
            ("--flannel-backend", "host-gw".to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }
}

/// Second octets x of the 10.x.y.z destinations in the host's routing table.
fn routed_second_octets() -> BTreeSet<u32> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
        // /proc/net/route prints addresses in host (little-endian) byte order.
        .map(|a| a.to_le_bytes())
        .filter(|b| b[0] == 10)
        .map(|b| b[1] as u32)
        .collect()
}

/// A container shim's PID, RSS and PSS (KiB). RSS counts the binary's
/// shared pages in full for every shim; PSS splits them among the sharers.
pub struct Shim {
    pub pid: u32,
    pub rss_kb: u64,
    pub pss_kb: u64,
}

/// The container shims of the server using `data_dir`: this binary
/// re-executed as `container-shim`, with a bundle under the data dir.
pub fn shims(data_dir: &Path) -> Vec<Shim> {
    let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = data_dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let ours = argv.first() == Some(&exe) && argv.get(1).map(String::as_str) == Some(crate::agent::SHIM_SUBCOMMAND) && argv.iter().any(|a| a.contains(&dir));
        if ours {
            out.push(Shim { pid, rss_kb: server::memory(pid).map_or(0, |m| m.rss_kb), pss_kb: pss_kb(pid) });
        }
    }
    out
}

fn pss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("Pss:")).unwrap_or_default();
    line.trim_start_matches("Pss:").trim().trim_end_matches("kB").trim().parse().unwrap_or(0)
}

/// What the agent made for one sandbox, remembered while the pods run so
/// the host can be checked for it after cleanup.
pub struct SandboxTrace {
    pub id: String,
    pub uid: String,
    pub netns: Option<PathBuf>,
}

/// The sandboxes the runtime under `data_dir` knows of now.
pub async fn sandboxes(data_dir: &Path) -> Result<Vec<SandboxTrace>> {
    let list = open_runtime(data_dir)?.list_pod_sandboxes().await?;
    Ok(list.into_iter().map(|s| SandboxTrace { id: s.id, uid: s.uid, netns: s.netns_path }).collect())
}

fn open_runtime(data_dir: &Path) -> Result<Runtime> {
    let root = data_dir.join("agent");
    let images: Arc<dyn ImageResolver> = Arc::new(Store::open(root.join("images"), vec![])?);
    let shim = ShimCommand { program: std::env::current_exe()?, args_prefix: vec![crate::agent::SHIM_SUBCOMMAND.into()] };
    Runtime::open(root, images, shim).context("opening the agent's runtime state")
}

/// After the server is gone: removes leftover sandboxes (containers,
/// mounts, netns, cgroups), veths, the bridge and the nft table; then
/// returns what is still there, one line each (empty when the host is clean).
pub async fn remove(data_dir: &Path, names: &HostNames, pod_cidr: Option<&str>, seen: &[SandboxTrace]) -> Vec<String> {
    let mut problems = Vec::new();
    let root = data_dir.join("agent");
    if root.join("images").exists() {
        match open_runtime(data_dir) {
            Ok(rt) => {
                for sandbox in rt.list_pod_sandboxes().await.unwrap_or_default() {
                    if let Err(e) = rt.remove_pod_sandbox(&sandbox.id).await {
                        problems.push(format!("removing sandbox {}: {e:#}", sandbox.id));
                    }
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    // The IPAM state only needs a valid range to open; the agent's own is best.
    let fallback = format!("{}/24", names.cluster_cidr.split('/').next().unwrap_or_default());
    let config = network::NetConfig {
        bridge: names.bridge.clone(),
        pod_cidr: pod_cidr.filter(|c| !c.is_empty()).map_or(fallback, str::to_string),
        cluster_cidr: names.cluster_cidr.clone(),
        mtu: None,
        state_dir: root.join("network"),
        nft_table: names.nft_table.clone(),
    };
    match network::PodNetwork::new(config) {
        Ok(net) => {
            for (sandbox, _) in net.allocations() {
                if let Err(e) = net.detach(&sandbox).await {
                    problems.push(format!("detaching sandbox {sandbox}: {e:#}"));
                }
            }
            if let Err(e) = net.teardown_host().await {
                problems.push(format!("removing bridge {} and table {}: {e:#}", names.bridge, names.nft_table));
            }
        }
        Err(e) => problems.push(format!("opening the pod network state: {e:#}")),
    }
    problems.extend(leftovers(data_dir, names, seen).await);
    problems
}

/// Checks the host for anything of this run: processes, mounts, netns,
/// veths, the bridge, the nft table, pod cgroups.
async fn leftovers(data_dir: &Path, names: &HostNames, seen: &[SandboxTrace]) -> Vec<String> {
    let mut left = Vec::new();
    for shim in shims(data_dir) {
        left.push(format!("container shim process {}", shim.pid));
    }
    let dir = data_dir.to_string_lossy().into_owned();
    let netns: Vec<String> = seen.iter().filter_map(|s| s.netns.as_ref()).map(|p| p.to_string_lossy().into_owned()).collect();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let point = line.split(' ').nth(4).unwrap_or_default();
        if point.starts_with(&dir) || netns.iter().any(|n| n == point) {
            left.push(format!("mount {point}"));
        }
    }
    for path in &netns {
        if Path::new(path).exists() {
            left.push(format!("network namespace {path}"));
        }
    }
    let links = seen.iter().map(|s| network::host_veth_name(&s.id)).chain([names.bridge.clone()]);
    for link in links {
        if Path::new("/sys/class/net").join(&link).exists() {
            left.push(format!("network link {link}"));
        }
    }
    let nft = tokio::process::Command::new("nft").args(["list", "table", "ip", &names.nft_table]).output().await;
    if nft.is_ok_and(|o| o.status.success()) {
        left.push(format!("nftables table ip {}", names.nft_table));
    }
    left.extend(pod_cgroups(seen));
    left
}

/// Pod cgroup directories (`skiff/[qos/]pod<uid>`) of the sandboxes seen, in any hierarchy.
fn pod_cgroups(seen: &[SandboxTrace]) -> Vec<String> {
    let mut left = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let base = hierarchy.path().join("skiff");
        for s in seen {
            for qos in ["", "besteffort", "burstable"] {
                let dir = base.join(qos).join(format!("pod{}", s.uid));
                if dir.exists() {
                    left.push(format!("cgroup {}", dir.display()));
                }
            }
        }
    }
    left
}
