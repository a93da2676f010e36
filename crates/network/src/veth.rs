//! The veth pair that connects one pod to the bridge.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::Context;

use crate::host::{enable_hairpin, stable_hash};
use crate::netlink::{Netlink, NlError, NlResult};
use crate::netns::in_netns;

/// Name of the pod's interface inside its namespace.
pub const POD_IFNAME: &str = "eth0";

/// Host-side veth name, derived from the sandbox id alone so it can be found
/// again after a restart.
pub fn host_veth_name(sandbox_id: &str) -> String {
    format!("veth{:08x}", stable_hash(sandbox_id))
}

pub struct PodLink {
    pub host_veth: String,
    pub bridge: String,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl PodLink {
    /// Creates (or repairs) the pair and configures both ends. An existing,
    /// correctly paired veth is reused so re-attaching a running pod does
    /// not cut its connections.
    pub fn attach(&self) -> anyhow::Result<()> {
        let mut nl = Netlink::open().context("opening rtnetlink socket")?;
        let bridge = nl.link(&self.bridge)?.with_context(|| {
            format!(
                "bridge {} does not exist; call ensure_host first",
                self.bridge
            )
        })?;
        let host = nl.link(&self.host_veth)?;
        let pod = self.in_pod(|nl| nl.link(POD_IFNAME))?;
        let paired = match (&host, &pod) {
            (Some(h), Some(p)) => p.peer_index == Some(h.index) && h.peer_index == Some(p.index),
            _ => false,
        };
        if !paired {
            if let Some(h) = host {
                nl.delete_link(h.index)
                    .with_context(|| format!("deleting stale {}", self.host_veth))?;
            }
            if let Some(p) = pod {
                self.in_pod(move |nl| nl.delete_link(p.index))?;
            }
            let ns = File::open(&self.netns)
                .with_context(|| format!("opening netns {}", self.netns.display()))?;
            nl.create_veth(&self.host_veth, POD_IFNAME, ns.as_raw_fd(), self.mtu)
                .with_context(|| format!("creating veth {}", self.host_veth))?;
        }
        let host = nl
            .link(&self.host_veth)?
            .with_context(|| format!("veth {} vanished after creation", self.host_veth))?;
        nl.set_link_up(host.index, Some(self.mtu), Some(bridge.index), None)
            .with_context(|| format!("attaching {} to bridge {}", self.host_veth, self.bridge))?;
        enable_hairpin(&self.host_veth)?;

        let (ip, prefix, gateway, mtu) = (self.ip, self.prefix, self.gateway, self.mtu);
        self.in_pod(move |nl| {
            let lo = nl.link("lo")?.map(|l| l.index).unwrap_or(1);
            nl.set_link_up(lo, None, None, None)?;
            let eth0 = nl
                .link(POD_IFNAME)?
                .map(|l| l.index)
                .ok_or_else(|| NlError {
                    errno: libc::ENODEV,
                    message: Some(format!("{POD_IFNAME} is missing in the pod netns")),
                })?;
            nl.add_address(eth0, ip, prefix)?;
            nl.set_link_up(eth0, Some(mtu), None, None)?;
            nl.replace_default_route(eth0, gateway)
        })
        .with_context(|| format!("configuring {POD_IFNAME} with {ip}/{prefix} via {gateway}"))
    }

    /// Runs netlink requests inside the pod's namespace.
    fn in_pod<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Netlink) -> NlResult<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let r = in_netns(&self.netns, move || {
            Netlink::open().and_then(|mut nl| f(&mut nl))
        })?;
        r.with_context(|| format!("netlink request in netns {}", self.netns.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_fit_ifnamsiz_and_are_stable() {
        let a = host_veth_name("0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), 12);
        assert_eq!(a, host_veth_name("0123456789abcdef0123456789abcdef"));
        assert_ne!(a, host_veth_name("0123456789abcdef0123456789abcdee"));
    }
}
