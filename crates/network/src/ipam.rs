//! Pod address allocation for one node's pod CIDR, persisted as one JSON file
//! that is replaced atomically, so a crash leaves either the old or the new
//! state and an address is never handed out twice.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

const STATE_FILE: &str = "ipam.json";

/// A hostPort mapping in the form the nftables rules use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// nftables protocol name: tcp, udp or sctp.
    pub protocol: String,
    /// None = every local address of the node.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    /// Kept so detach can remove the rules without being told the ports again.
    #[serde(default)]
    pub ports: Vec<HostPort>,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Last address handed out; the next search starts after it so a freed
    /// address is not reused at once (stale conntrack/ARP entries).
    last: Option<Ipv4Addr>,
    allocations: BTreeMap<String, Allocation>,
}

pub struct Ipam {
    cidr: Ipv4Cidr,
    path: PathBuf,
    state: State,
}

impl Ipam {
    pub fn load(state_dir: &Path, cidr: Ipv4Cidr) -> anyhow::Result<Ipam> {
        cidr.pod_range()?;
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating IPAM state dir {}", state_dir.display()))?;
        let path = state_dir.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!("IPAM state {} is corrupt; fix or remove it", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Ipam { cidr, path, state })
    }

    pub fn get(&self, sandbox_id: &str) -> Option<&Allocation> {
        self.state.allocations.get(sandbox_id)
    }

    pub fn list(&self) -> Vec<(String, Ipv4Addr)> {
        self.state
            .allocations
            .iter()
            .map(|(id, a)| (id.clone(), a.ip))
            .collect()
    }

    /// The sandbox's address: the one it already holds (if inside the CIDR)
    /// or a new one, saved to disk before it is returned.
    pub fn allocate(&mut self, sandbox_id: &str) -> anyhow::Result<Ipv4Addr> {
        if let Some(a) = self.state.allocations.get(sandbox_id) {
            if self.cidr.contains(a.ip) {
                return Ok(a.ip);
            }
            tracing::warn!(sandbox_id, ip = %a.ip, cidr = %self.cidr, "allocation outside the pod CIDR; reallocating");
        }
        let ip = self.next_free()?;
        let ports = self
            .state
            .allocations
            .get(sandbox_id)
            .map(|a| a.ports.clone())
            .unwrap_or_default();
        self.state
            .allocations
            .insert(sandbox_id.to_string(), Allocation { ip, ports });
        self.state.last = Some(ip);
        self.save()?;
        Ok(ip)
    }

    pub fn set_ports(&mut self, sandbox_id: &str, ports: Vec<HostPort>) -> anyhow::Result<()> {
        let Some(a) = self.state.allocations.get_mut(sandbox_id) else {
            bail!("sandbox {sandbox_id} has no address allocated");
        };
        if a.ports != ports {
            a.ports = ports;
            self.save()?;
        }
        Ok(())
    }

    pub fn release(&mut self, sandbox_id: &str) -> anyhow::Result<Option<Allocation>> {
        let removed = self.state.allocations.remove(sandbox_id);
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    fn next_free(&self) -> anyhow::Result<Ipv4Addr> {
        let (first, last) = self.cidr.pod_range()?;
        let (first, last) = (u32::from(first), u32::from(last));
        let used: std::collections::HashSet<u32> = self
            .state
            .allocations
            .values()
            .map(|a| u32::from(a.ip))
            .collect();
        let start = match self.state.last.map(u32::from) {
            Some(l) if l >= first && l < last => l + 1,
            _ => first,
        };
        let size = last - first + 1;
        (0..size)
            .map(|i| first + (start - first + i) % size)
            .find(|ip| !used.contains(ip))
            .map(Ipv4Addr::from)
            .with_context(|| {
                format!(
                    "pod CIDR {} is full: all {size} pod addresses are allocated",
                    self.cidr
                )
            })
    }

    fn save(&self) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.state)?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename is only durable once the directory entry is synced.
            fs::File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        write().with_context(|| format!("saving IPAM state to {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, cidr: &str) -> Ipam {
        Ipam::load(dir, cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = ipam(dir.path(), "10.9.0.0/29");
        let ips: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("s{i}")).unwrap())
            .collect();
        let expect: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 9, 0, h)).collect();
        assert_eq!(ips, expect);
    }

    #[test]
    fn full_range_is_an_error_naming_the_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = ipam(dir.path(), "10.9.0.0/30");
        ipam.allocate("a").unwrap();
        let err = ipam.allocate("b").unwrap_err();
        assert!(format!("{err:#}").contains("10.9.0.0/30"), "{err:#}");
    }

    #[test]
    fn same_sandbox_same_ip_and_state_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = ipam(dir.path(), "10.9.0.0/24");
        let a = first.allocate("a").unwrap();
        let b = first.allocate("b").unwrap();
        assert_eq!(first.allocate("a").unwrap(), a);
        let port = HostPort {
            protocol: "tcp".into(),
            host_ip: None,
            host_port: 8080,
            container_port: 80,
        };
        first.set_ports("b", vec![port.clone()]).unwrap();

        let mut second = ipam(dir.path(), "10.9.0.0/24");
        assert_eq!(second.get("a").unwrap().ip, a);
        assert_eq!(second.get("b").unwrap().ports, vec![port]);
        assert_eq!(
            second.list(),
            vec![("a".to_string(), a), ("b".to_string(), b)]
        );
        let c = second.allocate("c").unwrap();
        assert!(c != a && c != b);
    }

    #[test]
    fn released_addresses_are_reused_only_after_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = ipam(dir.path(), "10.9.0.0/29");
        let a = ipam.allocate("a").unwrap();
        ipam.allocate("b").unwrap();
        assert_eq!(ipam.release("a").unwrap().unwrap().ip, a);
        assert!(ipam.release("a").unwrap().is_none());
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        ipam.allocate("d").unwrap();
        ipam.allocate("e").unwrap();
        // The search wraps around to the freed address last.
        assert_eq!(ipam.allocate("f").unwrap(), a);
        assert_eq!(ipam.list().len(), 5);
        assert!(ipam.allocate("g").is_err());
        ipam.release("f").unwrap();
        assert!(ipam.get("a").is_none());
    }

    #[test]
    fn changed_cidr_reallocates_inside_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        ipam(dir.path(), "10.9.0.0/24").allocate("a").unwrap();
        let mut moved = ipam(dir.path(), "10.9.1.0/24");
        assert_eq!(moved.allocate("a").unwrap(), Ipv4Addr::new(10, 9, 1, 2));
    }

    #[test]
    fn corrupt_state_is_reported_not_discarded() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = Ipam::load(dir.path(), "10.9.0.0/24".parse().unwrap())
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    }
}
