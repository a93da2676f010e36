//! The node's nftables table: masquerade for pod egress, hostPort DNAT via
//! maps (one element per port, so attach/detach never rewrites rules), and
//! hairpin/localhost masquerade. Changes go through `nft -f -` batches, which
//! the kernel applies atomically.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;

use crate::cidr::Ipv4Cidr;
use crate::ipam::HostPort;

pub struct Nft {
    table: String,
}

impl Nft {
    pub fn new(table: &str) -> Nft {
        Nft {
            table: table.to_string(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates whatever is missing and rewrites the rules of every chain;
    /// the hostPort maps (running pods' state) are kept.
    pub async fn ensure_table(
        &self,
        bridge: &str,
        pod_cidr: Ipv4Cidr,
        cluster_cidr: Ipv4Cidr,
    ) -> anyhow::Result<()> {
        let t = format!("ip {}", self.table);
        let sources = if cluster_cidr.covers(&pod_cidr) {
            cluster_cidr.to_string()
        } else {
            format!("{pod_cidr}, {cluster_cidr}")
        };
        let script = format!(
            "add table {t}
add map {t} hostports {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
add map {t} hostip_ports {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
add set {t} hairpin {{ type ipv4_addr . ipv4_addr; }}
add chain {t} hostports_dnat
add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}
add chain {t} output {{ type nat hook output priority -100; policy accept; }}
add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}
add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}
flush chain {t} hostports_dnat
flush chain {t} prerouting
flush chain {t} output
flush chain {t} postrouting
flush chain {t} forward
add rule {t} hostports_dnat dnat ip to ip daddr . meta l4proto . th dport map @hostip_ports
add rule {t} hostports_dnat dnat ip to meta l4proto . th dport map @hostports
add rule {t} prerouting fib daddr type local jump hostports_dnat
add rule {t} output fib daddr type local jump hostports_dnat
add rule {t} postrouting ct status dnat ip saddr . ip daddr @hairpin masquerade
add rule {t} postrouting ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade
add rule {t} postrouting ip saddr {{ {sources} }} ip daddr != {cluster_cidr} masquerade
add rule {t} forward iifname \"{bridge}\" accept
add rule {t} forward oifname \"{bridge}\" accept
add rule {t} forward iifname \"{vxlan}\" accept
add rule {t} forward oifname \"{vxlan}\" accept
",
            vxlan = crate::overlay::device_name(bridge)
        );
        run(&script)
            .await
            .with_context(|| format!("setting up nftables table {t}"))
    }

    /// Replaces a pod's hostPort elements: `old` are removed (missing ones
    /// are fine), `new` are added; one atomic batch, so on error nothing
    /// changed.
    pub async fn replace_hostports(
        &self,
        pod_ip: Ipv4Addr,
        old: &[HostPort],
        new: &[HostPort],
    ) -> anyhow::Result<()> {
        if old.is_empty() && new.is_empty() {
            return Ok(());
        }
        let mut script = self.removal_script(pod_ip, old);
        for port in new {
            let _ = writeln!(script, "add element {}", self.element(pod_ip, port));
        }
        if !new.is_empty() {
            let _ = writeln!(script, "add element {}", self.hairpin_element(pod_ip));
        }
        run(&script).await.with_context(|| {
            let ports: Vec<String> =
                new.iter().map(|p| format!("{}/{}", p.protocol, p.host_port)).collect();
            format!(
                "installing hostPorts [{}] for pod {pod_ip} ('File exists' means another pod holds one of them)",
                ports.join(", ")
            )
        })
    }

    /// Removes a pod's hostPort elements. A port whose element now maps to
    /// another pod (possible after a crash mid-attach) is left to its owner.
    pub async fn remove_hostports(
        &self,
        pod_ip: Ipv4Addr,
        ports: &[HostPort],
    ) -> anyhow::Result<()> {
        if ports.is_empty() || run(&self.removal_script(pod_ip, ports)).await.is_ok() {
            return Ok(());
        }
        // Slow path: one batch per element, so a foreign one does not block the rest.
        for port in ports {
            let element = self.element(pod_ip, port);
            if let Err(e) = run(&format!(
                "add element {element}\ndelete element {element}\n"
            ))
            .await
            {
                let text = format!("{e:#}");
                if !text.contains("File exists") {
                    return Err(e).with_context(|| format!("removing hostPort element {element}"));
                }
            }
        }
        run(&self.removal_script(pod_ip, &[]))
            .await
            .context("removing the hairpin element")
    }

    /// Batch lines that delete the given elements and the pod's hairpin
    /// element; each is added first so that deleting a missing one is no error.
    fn removal_script(&self, pod_ip: Ipv4Addr, ports: &[HostPort]) -> String {
        let mut elements: Vec<String> = ports.iter().map(|p| self.element(pod_ip, p)).collect();
        elements.push(self.hairpin_element(pod_ip));
        let mut script = String::new();
        for e in &elements {
            let _ = writeln!(script, "add element {e}");
        }
        for e in &elements {
            let _ = writeln!(script, "delete element {e}");
        }
        script
    }

    pub async fn delete_table(&self) -> anyhow::Result<()> {
        match run(&format!("delete table ip {}\n", self.table)).await {
            Err(e) if format!("{e:#}").contains("No such file or directory") => Ok(()),
            r => r.with_context(|| format!("deleting nftables table ip {}", self.table)),
        }
    }

    fn element(&self, pod_ip: Ipv4Addr, p: &HostPort) -> String {
        let value = format!("{pod_ip} . {}", p.container_port);
        match p.host_ip {
            Some(host) => format!(
                "ip {} hostip_ports {{ {host} . {} . {} : {value} }}",
                self.table, p.protocol, p.host_port
            ),
            None => format!(
                "ip {} hostports {{ {} . {} : {value} }}",
                self.table, p.protocol, p.host_port
            ),
        }
    }

    fn hairpin_element(&self, pod_ip: Ipv4Addr) -> String {
        format!("ip {} hairpin {{ {pod_ip} . {pod_ip} }}", self.table)
    }
}

/// Logs a warning when br_netfilter sends bridged pod traffic through a
/// forward hook whose policy drops it (e.g. a firewall's filter table): an
/// accept in our table cannot override a drop in another one.
pub async fn warn_about_dropping_forward_chains(own_table: &str) {
    let calls_iptables = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    if !calls_iptables {
        return;
    }
    let Ok(out) = tokio::process::Command::new(nft_binary())
        .args(["-j", "list", "chains"])
        .output()
        .await
    else {
        return;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    let items = json["nftables"].as_array().cloned().unwrap_or_default();
    for chain in items.iter().filter_map(|i| i.get("chain")) {
        if chain["hook"] == "forward" && chain["policy"] == "drop" && chain["table"] != own_table {
            tracing::warn!(
                table = %chain["table"], chain = %chain["name"],
                "br_netfilter is active and this forward chain drops by default: bridged pod traffic \
                 will be dropped unless it accepts traffic on the pod bridge"
            );
        }
    }
}

fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}

async fn run(script: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(nft_binary())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running nft (is the nftables package installed?)")?;
    let mut stdin = child.stdin.take().context("nft stdin")?;
    stdin
        .write_all(script.as_bytes())
        .await
        .context("writing to nft")?;
    drop(stdin);
    let out = child.wait_with_output().await.context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
