//! Host-side plumbing: the pod bridge, sysctls and MTU discovery.

use std::fs;
use std::net::Ipv4Addr;

use anyhow::{bail, Context};

use crate::netlink::Netlink;

/// Default MTU when the default-route interface cannot be found.
const FALLBACK_MTU: u32 = 1500;

/// Creates the bridge if needed, gives it a fixed MAC (otherwise it takes the
/// lowest port MAC and the gateway's MAC changes as pods come and go), sets
/// the MTU, the gateway address and brings it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8, mtu: u32) -> anyhow::Result<()> {
    let mac = stable_mac(name);
    let mut nl = Netlink::open().context("opening rtnetlink socket")?;
    nl.create_bridge(name, mac, mtu)
        .with_context(|| format!("creating bridge {name}"))?;
    let link = nl
        .link(name)?
        .with_context(|| format!("bridge {name} vanished after creation"))?;
    if link.kind.as_deref() != Some("bridge") {
        bail!(
            "interface {name} exists but is a {} device, not a bridge; delete it or choose another bridge name",
            link.kind.as_deref().unwrap_or("plain")
        );
    }
    nl.set_link_up(link.index, Some(mtu), None, Some(mac))
        .with_context(|| format!("bringing bridge {name} up"))?;
    nl.add_address(link.index, gateway, prefix)
        .with_context(|| format!("adding {gateway}/{prefix} to bridge {name}"))?;
    Ok(())
}

pub fn delete_link_named(name: &str) -> anyhow::Result<()> {
    let mut nl = Netlink::open().context("opening rtnetlink socket")?;
    if let Some(link) = nl.link(name)? {
        nl.delete_link(link.index)
            .with_context(|| format!("deleting link {name}"))?;
    }
    Ok(())
}

/// Forwarding on, and route_localnet on the bridge so hostPorts answer on
/// 127.0.0.1 (the DNAT'd packet keeps a loopback source until masqueraded).
pub fn enable_forwarding(bridge: &str) -> anyhow::Result<()> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )
}

/// Hairpin lets a pod reach itself through its own hostPort.
pub fn enable_hairpin(veth: &str) -> anyhow::Result<()> {
    write_sysctl(&format!("/sys/class/net/{veth}/brport/hairpin_mode"), "1")
}

fn write_sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    if fs::read_to_string(path)
        .map(|v| v.trim() == value)
        .unwrap_or(false)
    {
        return Ok(());
    }
    fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}

/// MTU of the interface that carries the default route.
pub fn default_route_mtu() -> u32 {
    default_route_iface()
        .and_then(|i| fs::read_to_string(format!("/sys/class/net/{i}/mtu")).ok())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(FALLBACK_MTU)
}

/// The interface that carries the default route.
pub fn default_route_iface() -> Option<String> {
    fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| {
            table.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
                (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
            })
        })
}

/// FNV-1a: a hash that never changes between builds, for names that must
/// be found again after a restart.
pub fn stable_hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A locally administered unicast MAC derived from the bridge name.
fn stable_mac(name: &str) -> [u8; 6] {
    let h = stable_hash(name).to_be_bytes();
    let g = stable_hash(&format!("{name}/mac")).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], g[0]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable() {
        assert_eq!(stable_hash(""), 0x811c_9dc5);
        assert_eq!(stable_hash("a"), 0xe40c_292c);
        assert_eq!(stable_mac("skiff0"), stable_mac("skiff0"));
        assert_eq!(stable_mac("skiff0")[0], 0x02);
    }

    #[test]
    fn default_mtu_is_sane() {
        let mtu = default_route_mtu();
        assert!((576..=65536).contains(&mtu), "{mtu}");
    }
}
