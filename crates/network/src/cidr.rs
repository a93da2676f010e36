//! IPv4 CIDR arithmetic used by IPAM and the nftables rules.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{bail, Context};

/// An IPv4 network such as `10.42.0.0/24` (host bits are cleared on parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> anyhow::Result<Ipv4Cidr> {
        if prefix > 32 {
            bail!("prefix length /{prefix} is larger than 32");
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        Ok(Ipv4Cidr { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// True when every address of `other` is inside `self`.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// The first host address, which the node puts on the bridge.
    pub fn gateway(&self) -> anyhow::Result<Ipv4Addr> {
        self.first_host()
            .with_context(|| format!("CIDR {self} has no host address for the gateway"))
    }

    /// Addresses pods may get: all hosts except the gateway (network and
    /// broadcast are never hosts).
    pub fn pod_range(&self) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
        let gateway = u32::from(self.gateway()?);
        let last = u32::from(self.last_host().context("no last host")?);
        if gateway >= last {
            bail!("CIDR {self} is too small for pods: it has no address beside the gateway");
        }
        Ok((Ipv4Addr::from(gateway + 1), Ipv4Addr::from(last)))
    }

    fn first_host(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| Ipv4Addr::from(u32::from(self.network) + 1))
    }

    fn last_host(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| Ipv4Addr::from(u32::from(self.broadcast()) - 1))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Ipv4Cidr> {
        let (addr, prefix) = s
            .split_once('/')
            .with_context(|| format!("CIDR {s:?} must look like 10.42.0.0/24"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("CIDR {s:?} does not start with an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .with_context(|| format!("CIDR {s:?} has no valid prefix length"))?;
        Ipv4Cidr::new(addr, prefix).with_context(|| format!("invalid CIDR {s:?}"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_clears_host_bits() {
        let c: Ipv4Cidr = "10.42.3.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 42, 3, 255));
        assert_eq!(c.gateway().unwrap(), Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(
            c.pod_range().unwrap(),
            (Ipv4Addr::new(10, 42, 3, 2), Ipv4Addr::new(10, 42, 3, 254))
        );
    }

    #[test]
    fn containment() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        let pods: Ipv4Cidr = "10.42.5.0/24".parse().unwrap();
        assert!(cluster.covers(&pods));
        assert!(!pods.covers(&cluster));
        assert!(cluster.contains(Ipv4Addr::new(10, 42, 255, 255)));
        assert!(!cluster.contains(Ipv4Addr::new(10, 43, 0, 1)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn rejects_bad_input_with_the_value_in_the_message() {
        for bad in ["10.42.0.0", "10.42.0/24", "10.42.0.0/33", "x/8"] {
            let err = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(format!("{err:#}").contains(bad), "{err:#}");
        }
    }

    #[test]
    fn tiny_networks_have_no_pod_range() {
        let c: Ipv4Cidr = "10.0.0.0/30".parse().unwrap();
        assert_eq!(
            c.pod_range().unwrap(),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert!("10.0.0.0/31"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .gateway()
            .is_err());
        assert!("10.0.0.0/32"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .pod_range()
            .is_err());
    }
}
