//! The answers of the Kubernetes DNS specification (schema 1.1.0), made
//! from the index: Service A and SRV records, headless Services' endpoint
//! records, pod records, ExternalName CNAMEs, PTR, the schema version TXT
//! and the zone's SOA/NS. Names outside the zone, and reverse names that
//! are not a Service's or an endpoint's, are forwarded.

use std::net::Ipv4Addr;

use crate::index::{dashed, Endpoint, Index, Kind, Proto, Service, Tables};
use crate::wire::{self, Data, Record};

/// TTL of every record we answer, as CoreDNS's kubernetes plugin.
pub const TTL: u32 = 5;
pub const SCHEMA_VERSION: &str = "1.1.0";
const REVERSE_ZONE: &str = "in-addr.arpa";
/// CNAMEs followed inside the zone before giving up.
const MAX_CHAIN: usize = 8;

#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub rcode: u8,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// A CNAME target outside the zone: its records are looked up upstream
    /// and appended to the answers.
    pub chase: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Ours: answered authoritatively.
    Local(Answer),
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// Answers `name` (lower-case, dotted, no final dot) for `qtype`.
pub fn answer(ix: &Index, name: &str, qtype: u16) -> Outcome {
    let t = ix.read();
    let zone = ix.zone.as_str();
    if let Some(rel) = relative(name, REVERSE_ZONE) {
        return match reverse(ix, &t, rel, qtype) {
            Some(a) => Outcome::Local(a),
            None => Outcome::Forward,
        };
    }
    let Some(rel) = relative(name, zone) else { return Outcome::Forward };
    let mut a = Answer::default();
    let mut current = rel.to_string();
    for step in 0..MAX_CHAIN {
        let owner = (step > 0).then(|| join(&current, zone));
        let before = a.answers.len();
        let target = in_zone(ix, &t, &current, qtype, owner, &mut a);
        if a.answers.len() == before {
            // NXDOMAIN or no data for this name: the zone's SOA says for how long.
            a.authority.push(soa(zone, t.serial));
        }
        match target.filter(|_| qtype != wire::TYPE_CNAME) {
            Some(target) => match relative(&target, zone) {
                Some(inside) => current = inside.to_string(),
                None => {
                    a.chase = Some(target);
                    break;
                }
            },
            None => break,
        }
    }
    Outcome::Local(a)
}

/// `name` without `.zone` ("" for the zone itself); None when outside it.
fn relative<'a>(name: &'a str, zone: &str) -> Option<&'a str> {
    if name == zone {
        return Some("");
    }
    name.strip_suffix(zone)?.strip_suffix('.')
}

fn join(rel: &str, zone: &str) -> String {
    if rel.is_empty() {
        zone.to_string()
    } else {
        format!("{rel}.{zone}")
    }
}

pub fn soa(zone: &str, serial: u32) -> Record {
    Record {
        name: Some(zone.to_string()),
        ttl: TTL,
        data: Data::Soa { mname: format!("ns.dns.{zone}"), rname: format!("hostmaster.{zone}"), serial, refresh: 7200, retry: 1800, expire: 86400, minimum: TTL },
    }
}

fn rec(owner: &Option<String>, data: Data) -> Record {
    Record { name: owner.clone(), ttl: TTL, data }
}

/// Answers one name inside the zone into `a`; returns an ExternalName's
/// target when the answer is a CNAME to follow. `owner` is None for the
/// question's own name.
fn in_zone(ix: &Index, t: &Tables, rel: &str, qtype: u16, owner: Option<String>, a: &mut Answer) -> Option<String> {
    let zone = ix.zone.as_str();
    let labels: Vec<&str> = if rel.is_empty() { Vec::new() } else { rel.split('.').collect() };
    let is = |ty: u16| qtype == ty || qtype == wire::TYPE_ANY;
    match labels.as_slice() {
        [] => {
            if is(wire::TYPE_SOA) {
                a.answers.push(Record { name: owner.clone(), ..soa(zone, t.serial) });
            }
            if is(wire::TYPE_NS) {
                a.answers.push(rec(&owner, Data::Ns(format!("ns.dns.{zone}"))));
                if let Some(ip) = dns_service_ip(t) {
                    a.additional.push(Record { name: Some(format!("ns.dns.{zone}")), ttl: TTL, data: Data::A(ip) });
                }
            }
        }
        ["dns-version"] => {
            if is(wire::TYPE_TXT) {
                a.answers.push(rec(&owner, Data::Txt(SCHEMA_VERSION.into())));
            }
        }
        ["ns", "dns"] => {
            if let Some(ip) = dns_service_ip(t).filter(|_| is(wire::TYPE_A)) {
                a.answers.push(rec(&owner, Data::A(ip)));
            }
        }
        ["dns"] | ["svc"] | ["pod"] | [_, "pod"] => {}
        [ns, "svc"] => {
            if !t.namespaces.contains_key(*ns) {
                a.rcode = wire::NXDOMAIN;
            }
        }
        [svc, ns, "svc"] => return service(t, zone, ns, svc, qtype, owner, a),
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => srv(t, zone, ns, svc, &port[1..], &proto[1..], qtype, owner, a),
        [host, svc, ns, "svc"] => endpoint(t, ns, svc, host, qtype, owner, a),
        [ip, _ns, "pod"] => match parse_dashed(ip) {
            Some(ip) if is(wire::TYPE_A) => a.answers.push(rec(&owner, Data::A(ip))),
            Some(_) => {}
            None => a.rcode = wire::NXDOMAIN,
        },
        _ => a.rcode = wire::NXDOMAIN,
    }
    None
}

fn lookup<'t>(t: &'t Tables, ns: &str, svc: &str) -> Option<&'t Service> {
    t.namespaces.get(ns)?.services.get(svc)
}

/// The endpoints a headless Service answers with: the ready ones, or all
/// with publishNotReadyAddresses; each address once.
fn endpoints<'t>(t: &'t Tables, ns: &str, name: &str, svc: &Service) -> Vec<(&'t Endpoint, &'t [crate::index::Port])> {
    let mut out: Vec<(&Endpoint, &[crate::index::Port])> = Vec::new();
    let Some(slices) = t.namespaces.get(ns).and_then(|n| n.slices.get(name)) else { return out };
    for s in slices.values() {
        for e in s.endpoints.iter().filter(|e| e.ready || svc.publish_not_ready) {
            if !out.iter().any(|(o, _)| o.ip == e.ip) {
                out.push((e, &s.ports));
            }
        }
    }
    out.sort_by_key(|(e, _)| e.ip);
    out
}

fn dns_service_ip(t: &Tables) -> Option<Ipv4Addr> {
    match &lookup(t, "kube-system", "kube-dns")?.kind {
        Kind::ClusterIp(ips) => ips.first().copied(),
        _ => None,
    }
}

fn weight(n: usize) -> u16 {
    (100 / n.max(1)).max(1) as u16
}

fn service(t: &Tables, zone: &str, ns: &str, name: &str, qtype: u16, owner: Option<String>, a: &mut Answer) -> Option<String> {
    let Some(svc) = lookup(t, ns, name) else {
        a.rcode = wire::NXDOMAIN;
        return None;
    };
    let fqdn = format!("{name}.{ns}.svc.{zone}");
    let is = |ty: u16| qtype == ty || qtype == wire::TYPE_ANY;
    match &svc.kind {
        Kind::ExternalName(target) => {
            a.answers.push(rec(&owner, Data::Cname(target.to_string())));
            return Some(target.to_string());
        }
        Kind::ClusterIp(ips) => {
            if is(wire::TYPE_A) {
                a.answers.extend(ips.iter().map(|ip| rec(&owner, Data::A(*ip))));
            }
            if qtype == wire::TYPE_SRV {
                // Every port, on the bare Service name, as CoreDNS answers.
                let w = weight(svc.ports.len());
                for p in svc.ports.iter() {
                    a.answers.push(rec(&owner, Data::Srv { priority: 0, weight: w, port: p.port, target: fqdn.clone() }));
                }
                if !svc.ports.is_empty() {
                    a.additional.extend(ips.iter().map(|ip| Record { name: Some(fqdn.clone()), ttl: TTL, data: Data::A(*ip) }));
                }
            }
        }
        Kind::Headless => {
            let eps = endpoints(t, ns, name, svc);
            if eps.is_empty() {
                a.rcode = wire::NXDOMAIN;
                return None;
            }
            if is(wire::TYPE_A) {
                a.answers.extend(eps.iter().map(|(e, _)| rec(&owner, Data::A(e.ip))));
            }
            if qtype == wire::TYPE_SRV {
                let n: usize = eps.iter().map(|(_, ports)| ports.len()).sum();
                for (e, ports) in &eps {
                    let target = format!("{}.{fqdn}", e.label());
                    for p in ports.iter() {
                        a.answers.push(rec(&owner, Data::Srv { priority: 0, weight: weight(n), port: p.port, target: target.clone() }));
                    }
                    if !ports.is_empty() {
                        a.additional.push(Record { name: Some(target), ttl: TTL, data: Data::A(e.ip) });
                    }
                }
            }
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn srv(t: &Tables, zone: &str, ns: &str, name: &str, port: &str, proto: &str, qtype: u16, owner: Option<String>, a: &mut Answer) {
    let (Some(svc), Some(proto)) = (lookup(t, ns, name), Proto::parse(proto)) else {
        a.rcode = wire::NXDOMAIN;
        return;
    };
    let fqdn = format!("{name}.{ns}.svc.{zone}");
    let matches = |p: &&crate::index::Port| !p.name.is_empty() && &*p.name == port && p.proto == proto;
    let want = qtype == wire::TYPE_SRV || qtype == wire::TYPE_ANY;
    match &svc.kind {
        Kind::ClusterIp(ips) => {
            let ports: Vec<_> = svc.ports.iter().filter(matches).collect();
            if ports.is_empty() {
                a.rcode = wire::NXDOMAIN;
            } else if want {
                for p in &ports {
                    a.answers.push(rec(&owner, Data::Srv { priority: 0, weight: weight(ports.len()), port: p.port, target: fqdn.clone() }));
                }
                a.additional.extend(ips.iter().map(|ip| Record { name: Some(fqdn.clone()), ttl: TTL, data: Data::A(*ip) }));
            }
        }
        Kind::Headless => {
            let found: Vec<(&Endpoint, u16)> =
                endpoints(t, ns, name, svc).into_iter().flat_map(|(e, ports)| ports.iter().filter(matches).map(move |p| (e, p.port))).collect();
            if found.is_empty() {
                a.rcode = wire::NXDOMAIN;
            } else if want {
                for (e, port) in &found {
                    let target = format!("{}.{fqdn}", e.label());
                    a.answers.push(rec(&owner, Data::Srv { priority: 0, weight: weight(found.len()), port: *port, target: target.clone() }));
                    if !a.additional.iter().any(|r| r.name.as_deref() == Some(target.as_str())) {
                        a.additional.push(Record { name: Some(target), ttl: TTL, data: Data::A(e.ip) });
                    }
                }
            }
        }
        Kind::ExternalName(_) => a.rcode = wire::NXDOMAIN,
    }
}

/// `host.svc.ns.svc.zone`: the endpoints with that hostname (or dashed address).
fn endpoint(t: &Tables, ns: &str, name: &str, host: &str, qtype: u16, owner: Option<String>, a: &mut Answer) {
    let Some(svc) = lookup(t, ns, name).filter(|s| !matches!(s.kind, Kind::ExternalName(_))) else {
        a.rcode = wire::NXDOMAIN;
        return;
    };
    let found: Vec<Ipv4Addr> = endpoints(t, ns, name, svc)
        .into_iter()
        .filter(|(e, _)| e.hostname.as_deref() == Some(host) || dashed(e.ip) == host)
        .map(|(e, _)| e.ip)
        .collect();
    if found.is_empty() {
        a.rcode = wire::NXDOMAIN;
    } else if qtype == wire::TYPE_A || qtype == wire::TYPE_ANY {
        a.answers.extend(found.into_iter().map(|ip| rec(&owner, Data::A(ip))));
    }
}

/// `a-b-c-d` as an address.
fn parse_dashed(label: &str) -> Option<Ipv4Addr> {
    octets(label.split('-'))
}

/// Exactly four decimal octets (1 to 3 digits each, no signs) as an address.
fn octets<'a>(parts: impl Iterator<Item = &'a str>) -> Option<Ipv4Addr> {
    let mut o = [0u8; 4];
    let mut n = 0;
    for p in parts {
        if n == 4 || p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[n] = p.parse().ok()?;
        n += 1;
    }
    (n == 4).then(|| Ipv4Addr::from(o))
}

/// `d.c.b.a.in-addr.arpa` PTR for a ClusterIP or a ready endpoint's
/// address; None (forward) for anything else.
fn reverse(ix: &Index, t: &Tables, rel: &str, qtype: u16) -> Option<Answer> {
    let ip = octets(rel.split('.').rev())?;
    let owners = t.reverse.get(&ip)?;
    let zone = ix.zone.as_str();
    let mut target = None;
    if let Some(o) = owners.iter().find(|o| o.cluster_ip) {
        target = Some(format!("{}.{}.svc.{zone}", o.service, o.ns));
    }
    for o in owners.iter().filter(|o| !o.cluster_ip) {
        if target.is_some() {
            break;
        }
        let Some(svc) = lookup(t, &o.ns, &o.service) else { continue };
        if let Some((e, _)) = endpoints(t, &o.ns, &o.service, svc).into_iter().find(|(e, _)| e.ip == ip) {
            target = Some(format!("{}.{}.{}.svc.{zone}", e.label(), o.service, o.ns));
        }
    }
    let target = target?;
    let mut a = Answer::default();
    if qtype == wire::TYPE_PTR || qtype == wire::TYPE_ANY {
        a.answers.push(Record { name: None, ttl: TTL, data: Data::Ptr(target) });
    } else {
        a.authority.push(soa(zone, t.serial));
    }
    Some(a)
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
