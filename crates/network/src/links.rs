//! Link, address and route operations on top of the rtnetlink client.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use crate::netlink::{
    attrs, u32_at, Message, Netlink, NlResult, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const IFF_UP: u32 = 1;
const IFINFOMSG_LEN: usize = 16;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// What attach needs to know about an existing interface.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub kind: Option<String>,
    pub master: Option<u32>,
    /// For a veth: the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut h = [0u8; IFINFOMSG_LEN];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

impl Netlink {
    /// The named interface, or None if it does not exist.
    pub fn link(&mut self, name: &str) -> NlResult<Option<Link>> {
        let mut m = Message::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        let replies = match self.request(RTM_GETLINK, 0, &m) {
            Ok(r) => r,
            Err(e) if e.errno == libc::ENODEV => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies
            .first()
            .filter(|b| b.len() >= IFINFOMSG_LEN)
            .map(|body| {
                let mut link = Link {
                    index: u32_at(body, 4),
                    kind: None,
                    master: None,
                    peer_index: None,
                };
                for (ty, data) in attrs(body, IFINFOMSG_LEN) {
                    match ty {
                        IFLA_MASTER if data.len() >= 4 => link.master = Some(u32_at(data, 0)),
                        IFLA_LINK if data.len() >= 4 => link.peer_index = Some(u32_at(data, 0)),
                        IFLA_LINKINFO => {
                            link.kind =
                                attrs(data, 0)
                                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                                    .map(|(_, k)| {
                                        String::from_utf8_lossy(k)
                                            .trim_end_matches('\0')
                                            .to_string()
                                    })
                        }
                        _ => {}
                    }
                }
                link
            }))
    }

    /// Creates a bridge; an existing one of that name is left alone.
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6], mtu: u32) -> NlResult<()> {
        let mut m = Message::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name)
            .attr(IFLA_ADDRESS, &mac)
            .attr_u32(IFLA_MTU, mtu);
        let info = m.begin_nest(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end_nest(info);
        ignore_exists(self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m))
    }

    /// Creates a veth pair whose peer is born inside the namespace `netns_fd`.
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        netns_fd: RawFd,
        mtu: u32,
    ) -> NlResult<()> {
        let mut m = Message::new(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, host_name).attr_u32(IFLA_MTU, mtu);
        let info = m.begin_nest(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin_nest(IFLA_INFO_DATA);
        let peer = m.begin_nest(VETH_INFO_PEER);
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, peer_name)
            .attr_u32(IFLA_MTU, mtu)
            .attr_u32(IFLA_NET_NS_FD, netns_fd as u32);
        m.end_nest(peer);
        m.end_nest(data);
        m.end_nest(info);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m)
            .map(drop)
    }

    /// Brings a link up, optionally setting its MTU, master and MAC.
    pub fn set_link_up(
        &mut self,
        index: u32,
        mtu: Option<u32>,
        master: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> NlResult<()> {
        let mut m = Message::new(&ifinfomsg(index, IFF_UP, IFF_UP));
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        if let Some(master) = master {
            m.attr_u32(IFLA_MASTER, master);
        }
        if let Some(mac) = mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        self.request(RTM_NEWLINK, 0, &m).map(drop)
    }

    /// Deletes a link; a missing one is not an error.
    pub fn delete_link(&mut self, index: u32) -> NlResult<()> {
        let m = Message::new(&ifinfomsg(index, 0, 0));
        match self.request(RTM_DELLINK, 0, &m) {
            Err(e) if e.errno == libc::ENODEV => Ok(()),
            r => r.map(drop),
        }
    }

    /// Adds (or refreshes) an IPv4 address with its prefix on a link.
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> NlResult<()> {
        let mut h = [0u8; 8];
        h[0] = libc::AF_INET as u8;
        h[1] = prefix;
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Message::new(&h);
        m.attr(IFA_LOCAL, &ip.octets())
            .attr(IFA_ADDRESS, &ip.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &m)
            .map(drop)
    }

    /// Sets the main table's default route to `gateway` via link `index`.
    pub fn replace_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> NlResult<()> {
        let h = [
            libc::AF_INET as u8,
            0, // dst_len: default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut m = Message::new(&h);
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr_u32(RTA_OIF, index);
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &m)
            .map(drop)
    }
}

fn ignore_exists(r: NlResult<Vec<Vec<u8>>>) -> NlResult<()> {
    match r {
        Err(e) if e.errno == libc::EEXIST => Ok(()),
        r => r.map(drop),
    }
}
