//! Pod network: a Linux bridge with the node's pod CIDR, a veth per pod,
//! IPAM that survives restarts, masquerade and hostPort DNAT in nftables.
//!
//! Links, addresses and routes are configured over rtnetlink directly (no
//! `ip` processes on the attach path); nftables changes go through `nft -f -`
//! batches, and only when a pod has hostPorts.

mod cidr;
mod host;
mod ipam;
mod links;
mod netlink;
mod netns;
mod nft;
pub mod proxy;
pub mod overlay;
mod veth;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context};

pub use cidr::Ipv4Cidr;
pub use netns::{connect_in_netns, in_netns};
pub use veth::host_veth_name;

use ipam::{HostPort, Ipam};
use nft::Nft;
use veth::PodLink;

pub struct NetConfig {
    /// Bridge name, e.g. "skiff0".
    pub bridge: String,
    /// The node's podCIDR, e.g. "10.42.0.0/24"; its first host address is
    /// the gateway on the bridge.
    pub pod_cidr: String,
    /// e.g. "10.42.0.0/16": pod traffic leaving it is masqueraded.
    pub cluster_cidr: String,
    /// None = MTU of the host's default-route interface (fallback 1500).
    pub mtu: Option<u32>,
    /// IPAM state, survives restarts.
    pub state_dir: PathBuf,
    /// nftables table (family ip), e.g. "skiff".
    pub nft_table: String,
}

#[derive(Clone, Debug)]
pub struct PortMapping {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: Option<IpAddr>,
}

pub struct PodNetwork {
    bridge: String,
    pod_cidr: Ipv4Cidr,
    cluster_cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    mtu: u32,
    ipam: Mutex<Ipam>,
    nft: Nft,
}

impl PodNetwork {
    pub fn new(config: NetConfig) -> anyhow::Result<PodNetwork> {
        // Both names end up in nft scripts, so only plain identifiers pass.
        let plain = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if config.bridge.is_empty() || config.bridge.len() > 15 || !plain(&config.bridge) {
            bail!(
                "bridge name {:?} must be 1 to 15 letters, digits, '-', '_' or '.'",
                config.bridge
            );
        }
        let table = &config.nft_table;
        if !table.starts_with(|c: char| c.is_ascii_alphabetic())
            || !plain(table)
            || table.contains('-')
        {
            bail!("nftables table name {table:?} must start with a letter and hold only letters, digits, '_' or '.'");
        }
        let pod_cidr: Ipv4Cidr = config
            .pod_cidr
            .parse()
            .context("parsing the node's pod CIDR")?;
        let cluster_cidr: Ipv4Cidr = config
            .cluster_cidr
            .parse()
            .context("parsing the cluster CIDR")?;
        let gateway = pod_cidr.gateway()?;
        let ipam = Ipam::load(&config.state_dir, pod_cidr)?;
        Ok(PodNetwork {
            mtu: config.mtu.unwrap_or_else(host::default_route_mtu),
            bridge: config.bridge,
            pod_cidr,
            cluster_cidr,
            gateway,
            ipam: Mutex::new(ipam),
            nft: Nft::new(&config.nft_table),
        })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The multi-node side of this node's pod network (see `overlay`).
    pub fn overlay(&self, backend: overlay::Backend, node_name: &str, node_ip: Ipv4Addr) -> overlay::Overlay {
        overlay::Overlay::new(backend, &self.bridge, node_name, node_ip, self.pod_cidr)
    }

    /// Bridge up with the gateway address, ip_forward on, nftables table with
    /// masquerade + hostport chains. Idempotent; also fixes a half-set-up host.
    pub async fn ensure_host(&self) -> anyhow::Result<()> {
        let (bridge, gateway, prefix, mtu) = (
            self.bridge.clone(),
            self.gateway,
            self.pod_cidr.prefix(),
            self.mtu,
        );
        tokio::task::spawn_blocking(move || {
            host::ensure_bridge(&bridge, gateway, prefix, mtu)?;
            host::enable_forwarding(&bridge)
        })
        .await??;
        self.nft
            .ensure_table(&self.bridge, self.pod_cidr, self.cluster_cidr)
            .await?;
        nft::warn_about_dropping_forward_chains(self.nft.table()).await;
        tracing::info!(bridge = %self.bridge, gateway = %self.gateway, pod_cidr = %self.pod_cidr, mtu = self.mtu, "pod network host setup done");
        Ok(())
    }

    /// Connects the pod's namespace to the bridge and returns its address.
    /// Idempotent: the same sandbox always gets the same IP (saved before use).
    pub async fn attach(
        &self,
        sandbox_id: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> anyhow::Result<Ipv4Addr> {
        let started = std::time::Instant::now();
        let new_ports =
            host_ports(ports).with_context(|| format!("hostPorts of sandbox {sandbox_id}"))?;
        let (ip, old_ports) = {
            let mut ipam = self.ipam()?;
            let ip = ipam.allocate(sandbox_id)?;
            let old = ipam
                .get(sandbox_id)
                .map(|a| a.ports.clone())
                .unwrap_or_default();
            // Record every port that may get a rule before touching nftables,
            // so a crash in between still lets detach remove them.
            let mut union = old.clone();
            union.extend(new_ports.iter().filter(|p| !old.contains(p)).cloned());
            ipam.set_ports(sandbox_id, union)?;
            (ip, old)
        };

        let link = PodLink {
            host_veth: host_veth_name(sandbox_id),
            bridge: self.bridge.clone(),
            netns: netns.to_path_buf(),
            ip,
            prefix: self.pod_cidr.prefix(),
            gateway: self.gateway,
            mtu: self.mtu,
        };
        tokio::task::spawn_blocking(move || link.attach())
            .await?
            .with_context(|| format!("attaching sandbox {sandbox_id} to the pod network"))?;

        if let Err(e) = self.nft.replace_hostports(ip, &old_ports, &new_ports).await {
            // The batch is atomic: the old ports are still the installed ones.
            self.ipam()?.set_ports(sandbox_id, old_ports)?;
            return Err(e.context(format!("attaching sandbox {sandbox_id}")));
        }
        self.ipam()?.set_ports(sandbox_id, new_ports)?;
        tracing::debug!(sandbox_id, %ip, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "pod attached");
        Ok(ip)
    }

    /// Removes the veth, hostPort rules and frees the IP. Idempotent.
    pub async fn detach(&self, sandbox_id: &str) -> anyhow::Result<()> {
        let veth = host_veth_name(sandbox_id);
        tokio::task::spawn_blocking(move || host::delete_link_named(&veth))
            .await?
            .with_context(|| format!("detaching sandbox {sandbox_id}"))?;
        let allocation = self.ipam()?.get(sandbox_id).cloned();
        if let Some(a) = allocation {
            if let Err(e) = self.nft.remove_hostports(a.ip, &a.ports).await {
                // A missing table means there is nothing left to remove.
                if !format!("{e:#}").contains("No such file or directory") {
                    return Err(e.context(format!("removing hostPorts of sandbox {sandbox_id}")));
                }
            }
            self.ipam()?.release(sandbox_id)?;
        }
        Ok(())
    }

    pub fn ip_of(&self, sandbox_id: &str) -> Option<Ipv4Addr> {
        self.ipam.lock().ok()?.get(sandbox_id).map(|a| a.ip)
    }

    /// Sandbox ids holding addresses (the agent frees those whose sandbox is gone).
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.ipam.lock().map(|i| i.list()).unwrap_or_default()
    }

    /// Deletes the bridge and the nftables table (tests, uninstall).
    pub async fn teardown_host(&self) -> anyhow::Result<()> {
        let bridge = self.bridge.clone();
        tokio::task::spawn_blocking(move || host::delete_link_named(&bridge)).await??;
        self.nft.delete_table().await
    }

    fn ipam(&self) -> anyhow::Result<MutexGuard<'_, Ipam>> {
        self.ipam
            .lock()
            .map_err(|_| anyhow::anyhow!("IPAM lock poisoned by a panic"))
    }
}

/// Validates the pod's port mappings and turns them into nftables form.
/// hostPort 0 means "no host port" in Kubernetes and is skipped.
fn host_ports(ports: &[PortMapping]) -> anyhow::Result<Vec<HostPort>> {
    let mut out: Vec<HostPort> = Vec::new();
    for p in ports.iter().filter(|p| p.host_port != 0) {
        let protocol = p.protocol.to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            bail!(
                "hostPort {} has protocol {:?}; use TCP, UDP or SCTP",
                p.host_port,
                p.protocol
            );
        }
        let host_ip = match p.host_ip {
            None => None,
            Some(ip) if ip.is_unspecified() => None,
            Some(IpAddr::V4(ip)) => Some(ip),
            Some(IpAddr::V6(ip)) => {
                bail!(
                    "hostPort {} asks for IPv6 hostIP {ip}; this pod network is IPv4 only",
                    p.host_port
                )
            }
        };
        let port = HostPort {
            protocol,
            host_ip,
            host_port: p.host_port,
            container_port: p.container_port,
        };
        if !out.contains(&port) {
            out.push(port);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(protocol: &str, host_port: u16, host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            protocol: protocol.into(),
            container_port: 80,
            host_port,
            host_ip: host_ip.map(|i| i.parse().unwrap()),
        }
    }

    #[test]
    fn host_ports_are_normalised() {
        let ports = host_ports(&[
            mapping("TCP", 8080, None),
            mapping("TCP", 8080, None),
            mapping("UDP", 0, None),
            mapping("SCTP", 9000, Some("0.0.0.0")),
            mapping("UDP", 53, Some("127.0.0.1")),
        ])
        .unwrap();
        let summary: Vec<_> = ports
            .iter()
            .map(|p| (p.protocol.as_str(), p.host_port, p.host_ip))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("tcp", 8080, None),
                ("sctp", 9000, None),
                ("udp", 53, Some(Ipv4Addr::LOCALHOST))
            ]
        );
    }

    #[test]
    fn unsafe_names_are_rejected() {
        let config = |bridge: &str, table: &str| NetConfig {
            bridge: bridge.into(),
            pod_cidr: "10.42.0.0/24".into(),
            cluster_cidr: "10.42.0.0/16".into(),
            mtu: Some(1500),
            state_dir: std::env::temp_dir().join("skiff-network-unit-never-created"),
            nft_table: table.into(),
        };
        for (bridge, table) in [
            ("", "skiff"),
            ("br\"x", "skiff"),
            ("much-too-long-name", "skiff"),
            ("skiff0", "1x"),
            ("skiff0", "a b"),
        ] {
            let err = PodNetwork::new(config(bridge, table))
                .err()
                .expect("accepted a bad name");
            assert!(format!("{err}").contains("name"), "{err}");
        }
    }

    #[test]
    fn bad_host_ports_are_rejected() {
        assert!(host_ports(&[mapping("ICMP", 1, None)]).is_err());
        assert!(host_ports(&[mapping("TCP", 1, Some("fd00::1"))]).is_err());
        assert!(host_ports(&[mapping("TCP", 1, Some("::"))]).unwrap()[0]
            .host_ip
            .is_none());
    }
}
