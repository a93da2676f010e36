//! What the answers are made from: per namespace, each Service's kind,
//! addresses and ports, and each of its EndpointSlices' endpoints (address,
//! hostname, readiness) and ports, plus a reverse map from address to the
//! Services naming it, for PTR. Only these fields are kept, not the objects.
//!
//! The tables sit behind one `RwLock`: a watch event takes the write lock
//! for the few map operations of that one object, a query takes the read
//! lock while it builds its answer (microseconds either way), so queries
//! never wait on the API and an update is visible as soon as it arrives.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Lower-cased; empty for an unnamed port.
    pub name: Box<str>,
    pub proto: Proto,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The Service's IPv4 ClusterIPs.
    ClusterIp(Box<[Ipv4Addr]>),
    Headless,
    /// The target, lower-cased, without a final dot.
    ExternalName(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub kind: Kind,
    pub ports: Box<[Port]>,
    pub publish_not_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// Lower-cased `hostname` of the slice endpoint, if set.
    pub hostname: Option<Box<str>>,
    pub ready: bool,
}

impl Endpoint {
    /// The label this endpoint is known by under its Service: its hostname,
    /// else its address with dashes (a-b-c-d), as CoreDNS does.
    pub fn label(&self) -> String {
        match &self.hostname {
            Some(h) => h.to_string(),
            None => dashed(self.ip),
        }
    }
}

pub fn dashed(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}-{}-{}-{}", o[0], o[1], o[2], o[3])
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slice {
    pub ports: Box<[Port]>,
    pub endpoints: Box<[Endpoint]>,
}

#[derive(Debug, Default)]
pub struct Namespace {
    pub services: HashMap<Box<str>, Service>,
    /// Service name -> slice name -> slice.
    pub slices: HashMap<Box<str>, HashMap<Box<str>, Slice>>,
    /// Slice name -> the Service it belongs to.
    slice_owner: HashMap<Box<str>, Box<str>>,
}

/// Whose address an IP is (for PTR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub ns: Arc<str>,
    pub service: Arc<str>,
    /// A ClusterIP (else an endpoint's address).
    pub cluster_ip: bool,
}

#[derive(Debug, Default)]
pub struct Tables {
    pub namespaces: HashMap<Box<str>, Namespace>,
    pub reverse: HashMap<Ipv4Addr, Vec<Owner>>,
    /// Bumped on every change; the SOA serial.
    pub serial: u32,
}

pub struct Index {
    /// Lower-case, without a final dot (e.g. cluster.local).
    pub zone: String,
    tables: RwLock<Tables>,
}

impl Index {
    pub fn new(zone: &str) -> Arc<Index> {
        let serial = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs() as u32);
        Arc::new(Index { zone: zone.trim_end_matches('.').to_ascii_lowercase(), tables: RwLock::new(Tables { serial, ..Default::default() }) })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a Service (`None` removes it).
    pub fn set_service(&self, ns: &str, name: &str, svc: Option<Service>) {
        let mut t = self.write();
        let t = &mut *t;
        let owner = |cluster_ip| Owner { ns: ns.into(), service: name.into(), cluster_ip };
        let old = match &svc {
            Some(s) => t.namespaces.entry(ns.into()).or_default().services.insert(name.into(), s.clone()),
            None => t.namespaces.get_mut(ns).and_then(|n| n.services.remove(name)),
        };
        if old == svc {
            return;
        }
        t.serial = t.serial.wrapping_add(1);
        if let Some(Kind::ClusterIp(ips)) = old.map(|s| s.kind) {
            ips.iter().for_each(|ip| unmap(&mut t.reverse, *ip, &owner(true)));
        }
        if let Some(Kind::ClusterIp(ips)) = svc.map(|s| s.kind) {
            ips.iter().for_each(|ip| t.reverse.entry(*ip).or_default().push(owner(true)));
        }
        prune(&mut t.namespaces, ns);
    }

    /// Adds or replaces an EndpointSlice of a Service (`None` removes it).
    pub fn set_slice(&self, ns: &str, slice_name: &str, entry: Option<(&str, Slice)>) {
        let (service, slice) = match entry {
            Some((service, slice)) => (service, Some(slice)),
            None => ("", None),
        };
        let mut t = self.write();
        let t = &mut *t;
        if slice.is_none() && !t.namespaces.get(ns).is_some_and(|n| n.slice_owner.contains_key(slice_name)) {
            return;
        }
        let n = t.namespaces.entry(ns.into()).or_default();
        // The slice may have moved to another Service (its label changed): take it from there.
        let old_service = n.slice_owner.remove(slice_name);
        let old = old_service.as_deref().and_then(|s| {
            let slices = n.slices.get_mut(s)?;
            let old = slices.remove(slice_name);
            if slices.is_empty() {
                n.slices.remove(s);
            }
            old
        });
        let unchanged = old_service.as_deref() == Some(service) && old == slice;
        if let Some(s) = &slice {
            n.slice_owner.insert(slice_name.into(), service.into());
            n.slices.entry(service.into()).or_default().insert(slice_name.into(), s.clone());
        }
        if unchanged {
            return;
        }
        t.serial = t.serial.wrapping_add(1);
        if let (Some(old), Some(old_service)) = (old, old_service) {
            let owner = Owner { ns: ns.into(), service: (*old_service).into(), cluster_ip: false };
            old.endpoints.iter().for_each(|e| unmap(&mut t.reverse, e.ip, &owner));
        }
        if let Some(s) = slice {
            let owner = Owner { ns: ns.into(), service: service.into(), cluster_ip: false };
            s.endpoints.iter().for_each(|e| t.reverse.entry(e.ip).or_default().push(owner.clone()));
        }
        prune(&mut t.namespaces, ns);
    }

    /// Every Service as (namespace, name), for dropping what a re-list no longer has.
    pub fn service_keys(&self) -> Vec<(String, String)> {
        let t = self.read();
        t.namespaces.iter().flat_map(|(ns, n)| n.services.keys().map(move |s| (ns.to_string(), s.to_string()))).collect()
    }

    /// Every EndpointSlice as (namespace, slice name, Service name).
    pub fn slice_keys(&self) -> Vec<(String, String, String)> {
        let t = self.read();
        t.namespaces
            .iter()
            .flat_map(|(ns, n)| n.slice_owner.iter().map(move |(s, svc)| (ns.to_string(), s.to_string(), svc.to_string())))
            .collect()
    }
}

fn unmap(reverse: &mut HashMap<Ipv4Addr, Vec<Owner>>, ip: Ipv4Addr, owner: &Owner) {
    if let Some(v) = reverse.get_mut(&ip) {
        if let Some(i) = v.iter().position(|o| o == owner) {
            v.swap_remove(i);
        }
        if v.is_empty() {
            reverse.remove(&ip);
        }
    }
}

fn prune(namespaces: &mut HashMap<Box<str>, Namespace>, ns: &str) {
    if namespaces.get(ns).is_some_and(|n| n.services.is_empty() && n.slices.is_empty()) {
        namespaces.remove(ns);
    }
}

fn ports<'a>(it: impl Iterator<Item = (Option<&'a str>, Option<&'a str>, Option<i32>)>) -> Box<[Port]> {
    it.filter_map(|(name, proto, port)| {
        Some(Port {
            name: name.unwrap_or_default().to_ascii_lowercase().into(),
            proto: Proto::parse(proto.unwrap_or("TCP"))?,
            port: u16::try_from(port?).ok()?,
        })
    })
    .collect()
}

/// The part of a Service DNS answers from.
pub fn service_entry(svc: &KubeService) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref().unwrap_or_default().trim_end_matches('.').to_ascii_lowercase();
        if target.is_empty() {
            return None;
        }
        Kind::ExternalName(target.into())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let mut ips: Vec<Ipv4Addr> = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()).filter_map(|s| s.parse().ok()).collect();
        ips.dedup();
        if ips.is_empty() {
            return None;
        }
        Kind::ClusterIp(ips.into())
    };
    let ports = ports(spec.ports.iter().flatten().map(|p| (p.name.as_deref(), p.protocol.as_deref(), Some(p.port))));
    Some(Service { kind, ports, publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false) })
}

/// The Service an EndpointSlice belongs to and the part DNS answers from
/// (IPv4 slices only).
pub fn slice_entry(s: &EndpointSlice) -> Option<(String, Slice)> {
    let service = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?.clone();
    if s.address_type != "IPv4" || service.is_empty() {
        return None;
    }
    let ports = ports(s.ports.iter().flatten().map(|p| (p.name.as_deref(), p.protocol.as_deref(), p.port)));
    let endpoints = s
        .endpoints
        .iter()
        .flat_map(|e| {
            // Unknown readiness counts as ready, as the API documents.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let hostname: Option<Box<str>> = e.hostname.as_deref().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase().into());
            e.addresses.iter().filter_map(move |a| a.parse().ok().map(|ip| Endpoint { ip, hostname: hostname.clone(), ready }))
        })
        .collect();
    Some((service, Slice { ports, endpoints }))
}
