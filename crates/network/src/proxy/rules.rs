//! From the model to nftables text. Verdict maps keyed by
//! (address . protocol . port) and (protocol . port) send a new connection
//! to a chain shared by all service ports with the same endpoint count,
//! which DNATs with `numgen random mod N` straight from a shared map of
//! (address . port . i) -> endpoint; hairpin pairs are one shared set. So a
//! Service is only map elements, and the table's chains and sets stay few
//! (nft loads them all before every batch). Service ports with ClientIP
//! affinity keep upstream's shape: their own chain picks an endpoint chain
//! that updates the affinity set and DNATs. Pure; `apply` decides which of
//! this text goes to the kernel. A service port with
//! loadBalancerSourceRanges also owns a firewall chain (upstream's shape),
//! reached before DNAT through the shared `firewall-ips` map.
//!
//! Names are `<kind>-<12 hex digits of a hash>` so they are short and the
//! same on every node and every run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;

use super::model::{Endpoint, ServicePort};

/// The mark bit set on connections to masquerade (upstream's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// What the rules need to know about the node they run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// This node's pod range. Only an endpoint inside it can be the client
    /// of its own connection (hairpin), so only those go in the hairpin
    /// set; None puts every endpoint there.
    pub pod_cidr: Option<Ipv4Cidr>,
    /// The node's addresses: a source range holding one lets the node
    /// itself through to the load balancer IPs (as upstream).
    pub node_ips: Vec<Ipv4Addr>,
}

impl NodeInfo {
    pub fn new(cluster_cidr: Ipv4Cidr) -> NodeInfo {
        NodeInfo { cluster_cidr, pod_cidr: None, node_ips: Vec::new() }
    }
}

/// Everything one service port owns in the table: its own chains, maps and
/// sets, and its elements in the shared maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// chain name -> its rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// map name -> its elements (`key : verdict`), all `typeof numgen ... : verdict`.
    pub maps: BTreeMap<String, Vec<String>>,
    /// affinity set name -> timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// (shared map, key) -> verdict or value.
    pub elements: BTreeMap<(&'static str, String), String>,
    /// Shared chains it jumps to (chain -> rules); created on first use, never deleted by a change.
    pub shared: BTreeMap<String, Vec<String>>,
    /// Endpoint addresses whose traffic to themselves is masqueraded (hairpin), via the shared set.
    pub hairpin: Vec<std::net::Ipv4Addr>,
}

/// The shared verdict maps.
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// The shared endpoint maps: (address . protocol . port . n) or (protocol . port . n) -> endpoint address . port.
pub const SERVICE_ENDPOINTS: &str = "service-endpoints";
pub const LOCAL_ENDPOINTS: &str = "local-endpoints";
pub const NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
pub const NODEPORT_LOCAL_ENDPOINTS: &str = "nodeport-local-endpoints";
/// The shared set of (endpoint . endpoint) pairs: a packet from an endpoint to itself is hairpin.
pub const HAIRPIN: &str = "hairpin";
/// (load balancer IP . protocol . port) -> goto the service port's firewall chain.
pub const FIREWALL_IPS: &str = "firewall-ips";

/// FNV-1a, 64 bits: stable across runs and Rust versions (std's hasher is not promised to be).
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

fn endpoint_id(sp_key: &str, ep: &Endpoint) -> String {
    hash(&format!("{sp_key}/{}:{}", ep.ip, ep.port))
}

/// The chains hooked into the kernel: while a table has none of them it
/// sees no packet (a full sync builds the next table that way).
pub const HOOK_CHAINS: [&str; 5] = ["nat-prerouting", "nat-output", "nat-postrouting", "filter-prerouting", "filter-output"];

/// Shared map or set -> the number of elements it is declared to hold
/// (`size`): the kernel then picks a hash table of that size instead of one
/// that grows, which halves the cost of a full sync's inserts. The size is
/// also a limit; `apply` re-syncs with larger sizes before reaching it.
pub type Sizes = BTreeMap<String, usize>;

/// The shared maps and sets declared with a size.
pub fn sized_maps() -> impl Iterator<Item = &'static str> {
    [SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, FIREWALL_IPS, HAIRPIN].into_iter().chain(ENDPOINT_MAPS)
}

/// The fixed part of the table: hooks, shared maps, masquerade and reject.
pub fn base(table: &str, sizes: &Sizes) -> String {
    let mut s = String::new();
    for line in base_unsized(table).lines() {
        let name = line.split_whitespace().nth(4).unwrap_or("");
        let declares = line.starts_with("add map ") || line.starts_with("add set ");
        match sizes.get(name) {
            Some(n) if declares => {
                let _ = writeln!(s, "{} size {n}; }}", line.trim_end_matches('}').trim_end());
            }
            _ => {
                let _ = writeln!(s, "{line}");
            }
        }
    }
    s
}

fn base_unsized(table: &str) -> String {
    let t = format!("ip {table}");
    let mut s = String::new();
    let lines = [
        // Chains hooked into the kernel. The filter chains run just before
        // DNAT (as upstream's filter-prerouting/filter-output) so a service
        // without endpoints is refused before NAT could pick nothing.
        "add chain T nat-prerouting { type nat hook prerouting priority -100; policy accept; }".to_string(),
        "add chain T nat-output { type nat hook output priority -100; policy accept; }".to_string(),
        "add chain T nat-postrouting { type nat hook postrouting priority 100; policy accept; }".to_string(),
        "add chain T filter-prerouting { type filter hook prerouting priority -110; policy accept; }".to_string(),
        "add chain T filter-output { type filter hook output priority -110; policy accept; }".to_string(),
        "add chain T services".to_string(),
        "add chain T firewall-check".to_string(),
        "add chain T no-endpoints".to_string(),
        "add chain T mark-for-masquerade".to_string(),
        "add chain T masquerading".to_string(),
        "add chain T reject-chain".to_string(),
        format!("add map T {SERVICE_IPS} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"),
        format!("add map T {SERVICE_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}"),
        format!("add map T {NO_ENDPOINT_SERVICES} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"),
        format!("add map T {NO_ENDPOINT_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}"),
        format!("add map T {FIREWALL_IPS} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"),
        format!("add set T {HAIRPIN} {{ type ipv4_addr . ipv4_addr; }}"),
        "add rule T nat-prerouting jump services".to_string(),
        "add rule T nat-output jump services".to_string(),
        "add rule T nat-postrouting jump masquerading".to_string(),
        // Source ranges first: a client that may not connect is dropped, not refused.
        "add rule T filter-prerouting ct state new jump firewall-check".to_string(),
        "add rule T filter-output ct state new jump firewall-check".to_string(),
        "add rule T filter-prerouting ct state new jump no-endpoints".to_string(),
        "add rule T filter-output ct state new jump no-endpoints".to_string(),
        format!("add rule T firewall-check ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"),
        format!("add rule T no-endpoints ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
        // NodePorts answer on every local address but loopback (as upstream's nftables mode).
        format!("add rule T no-endpoints fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
        format!("add rule T services ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
        format!("add rule T services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        format!("add rule T mark-for-masquerade meta mark set meta mark | {MASQUERADE_MARK:#x}"),
        // Hairpin: a connection DNATed back to the client itself.
        format!("add rule T masquerading ct status dnat ip saddr . ip daddr @{HAIRPIN} jump mark-for-masquerade"),
        format!("add rule T masquerading meta mark & {MASQUERADE_MARK:#x} == 0 return"),
        format!("add rule T masquerading meta mark set meta mark ^ {MASQUERADE_MARK:#x}"),
        "add rule T masquerading masquerade fully-random".to_string(),
        "add rule T reject-chain meta l4proto tcp reject with tcp reset".to_string(),
        "add rule T reject-chain reject".to_string(),
    ];
    for l in lines {
        let _ = writeln!(s, "{}", l.replacen(" T ", &format!(" {t} "), 1));
    }
    // One endpoint map per kind and protocol: nft 1.0.6 cannot add a rule
    // using a map typed `... meta l4proto . th dport ...` once the map is in
    // the kernel ("conflicting protocols"), so the protocol is in the name.
    for p in PROTOCOLS {
        for map in [SERVICE_ENDPOINTS, LOCAL_ENDPOINTS] {
            let _ = writeln!(s, "add map {t} {map}-{p} {{ typeof ip daddr . {p} dport . numgen random mod 1 : ip daddr . {p} dport; }}");
        }
        for map in [NODEPORT_ENDPOINTS, NODEPORT_LOCAL_ENDPOINTS] {
            let _ = writeln!(s, "add map {t} {map}-{p} {{ typeof {p} dport . numgen random mod 1 : ip daddr . {p} dport; }}");
        }
    }
    s
}

const PROTOCOLS: [&str; 3] = ["tcp", "udp", "sctp"];

/// The name of a shared endpoint map for one protocol.
fn endpoint_map(kind: &str, proto: &str) -> &'static str {
    let name = format!("{kind}-{proto}");
    ENDPOINT_MAPS.iter().copied().find(|m| *m == name).unwrap_or_else(|| unreachable!("no endpoint map {name}"))
}

const ENDPOINT_MAPS: [&str; 12] = [
    "service-endpoints-tcp",
    "service-endpoints-udp",
    "service-endpoints-sctp",
    "local-endpoints-tcp",
    "local-endpoints-udp",
    "local-endpoints-sctp",
    "nodeport-endpoints-tcp",
    "nodeport-endpoints-udp",
    "nodeport-endpoints-sctp",
    "nodeport-local-endpoints-tcp",
    "nodeport-local-endpoints-udp",
    "nodeport-local-endpoints-sctp",
];

/// The objects and shared-map elements of one service port. Without
/// ClientIP affinity a service port owns no chain, map or set: only elements
/// in the shared maps, which send it through shared chains (one per endpoint
/// count) that DNAT with `numgen random mod N` straight from the shared
/// endpoint maps. With affinity it gets its own chains (`fragment_with_affinity`).
/// Either way loadBalancerSourceRanges add a firewall chain of its own.
pub fn fragment(sp: &ServicePort, node: &NodeInfo) -> Fragment {
    let mut f = if sp.affinity_timeout.is_some() { fragment_with_affinity(sp, node.cluster_cidr) } else { fragment_shared(sp, node) };
    firewall(&mut f, sp, node);
    f
}

fn fragment_shared(sp: &ServicePort, node: &NodeInfo) -> Fragment {
    let cluster_cidr = node.cluster_cidr;
    let proto = sp.protocol.nft();
    let mut f = Fragment::default();
    let cluster = sp.cluster_endpoints();
    let local = sp.local_endpoints();
    let mut hairpin: Vec<Ipv4Addr> = cluster.iter().chain(local.iter()).map(|e| e.ip).collect();
    hairpin.retain(|ip| node.pod_cidr.is_none_or(|c| c.contains(*ip)));
    hairpin.sort();
    hairpin.dedup();
    f.hairpin = hairpin;
    let eps = |f: &mut Fragment, kind: &str, key: &str, eps: &[&Endpoint]| {
        let map = endpoint_map(kind, proto);
        // The endpoint maps are per protocol: their keys leave it out.
        let key = key.replacen(&format!(" {proto} . "), " ", 1);
        let key = key.strip_prefix(&format!("{proto} . ")).unwrap_or(&key);
        for (i, ep) in eps.iter().enumerate() {
            f.elements.insert((map, format!("{key} . {i}")), format!("{} . {}", ep.ip, ep.port));
        }
    };
    let shared = |f: &mut Fragment, chain: String| -> String {
        for c in shared_deps(&chain).into_iter().chain([chain.clone()]) {
            let rules = shared_chain(&c, cluster_cidr);
            f.shared.insert(c, rules);
        }
        format!("goto {chain}")
    };

    // ClusterIP traffic: to the cluster-wide or (internalTrafficPolicy Local) the local endpoints.
    let internal = if sp.internal_local { &local } else { &cluster };
    for ip in &sp.cluster_ips {
        let k = format!("{ip} . {proto} . {}", sp.port);
        let v = match (internal.is_empty(), cluster.is_empty()) {
            (false, _) => {
                eps(&mut f, SERVICE_ENDPOINTS, &k, internal);
                Ok(shared(&mut f, format!("pick-{}", internal.len())))
            }
            // Endpoints elsewhere only: internalTrafficPolicy Local drops, as upstream.
            (true, false) => Err("drop"),
            (true, true) => Err("goto reject-chain"),
        };
        insert_element(&mut f, v, SERVICE_IPS, NO_ENDPOINT_SERVICES, k);
    }

    // Traffic from outside (externalIPs, load balancer IPs, NodePorts): every
    // endpoint, or under externalTrafficPolicy Local the node's own, through
    // the shared chain `<chain>-N` or `<chain>-local-N-M`.
    let (n, m) = (cluster.len(), local.len());
    let external = |f: &mut Fragment, key: String, (all_eps, local_eps): (&str, &str), chain: &str, (map, no_ep_map): (&'static str, &'static str)| {
        let v = if cluster.is_empty() {
            Err("goto reject-chain")
        } else {
            eps(f, all_eps, &key, &cluster);
            if sp.external_local {
                eps(f, local_eps, &key, &local);
                Ok(shared(f, format!("{chain}-local-{n}-{m}")))
            } else {
                Ok(shared(f, format!("{chain}-{n}")))
            }
        };
        insert_element(f, v, map, no_ep_map, key);
    };
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        let key = format!("{ip} . {proto} . {}", sp.port);
        external(&mut f, key, (SERVICE_ENDPOINTS, LOCAL_ENDPOINTS), "ext", (SERVICE_IPS, NO_ENDPOINT_SERVICES));
    }
    if let Some(np) = sp.node_port {
        let key = format!("{proto} . {np}");
        external(&mut f, key, (NODEPORT_ENDPOINTS, NODEPORT_LOCAL_ENDPOINTS), "np", (SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS));
    }
    f
}

/// The rules of a shared chain, from its name (`<kind>-<N>[-<M>]`). Every
/// chain it jumps to is one of these too; they are created in one batch.
fn shared_chain(name: &str, cluster_cidr: Ipv4Cidr) -> Vec<String> {
    let (kind, n, m) = parse_shared(name);
    // One rule per protocol (`tcp dport` implies `meta l4proto tcp`); DNAT ends the chain.
    let dnat = |kind: &str, vip: bool, n: usize| -> Vec<String> {
        PROTOCOLS
            .iter()
            .map(|p| {
                let key = if vip { format!("ip daddr . {p} dport") } else { format!("{p} dport") };
                format!("dnat ip to {key} . numgen random mod {n} map @{kind}-{p}")
            })
            .collect()
    };
    let with = |first: String, rest: Vec<String>| [vec![first], rest].concat();
    match kind {
        // ClusterIP (and the cluster-wide choice of every other path):
        // traffic from outside the cluster CIDR (the node, hostNetwork pods) is masqueraded.
        "pick" => with(format!("ip saddr != {cluster_cidr} jump mark-for-masquerade"), dnat(SERVICE_ENDPOINTS, true, n)),
        "ext" => with("jump mark-for-masquerade".to_string(), dnat(SERVICE_ENDPOINTS, true, n)),
        "np" => with("jump mark-for-masquerade".to_string(), dnat(NODEPORT_ENDPOINTS, false, n)),
        "np-pick" => dnat(NODEPORT_ENDPOINTS, false, n),
        "local-pick" => dnat(LOCAL_ENDPOINTS, true, n),
        "np-local-pick" => dnat(NODEPORT_LOCAL_ENDPOINTS, false, n),
        // externalTrafficPolicy Local: pods and the node itself may use every
        // endpoint; clients from outside reach only this node's, with their address kept.
        "ext-local" | "np-local" => {
            let (all, loc) = if kind == "ext-local" { (format!("pick-{n}"), format!("local-pick-{m}")) } else { (format!("np-pick-{n}"), format!("np-local-pick-{m}")) };
            vec![
                format!("ip saddr {cluster_cidr} goto {all}"),
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local goto {all}"),
                if m == 0 { "drop".to_string() } else { format!("goto {loc}") },
            ]
        }
        _ => unreachable!("unknown shared chain {name}"),
    }
}

/// `<kind>-<N>[-<M>]` -> (kind, N, M).
fn parse_shared(name: &str) -> (&str, usize, usize) {
    let i = name.find(|c: char| c.is_ascii_digit()).unwrap_or(name.len());
    let mut nums = name[i..].split('-').filter_map(|x| x.parse::<usize>().ok());
    (name[..i].trim_end_matches('-'), nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// The shared chains a shared chain jumps to (they must exist first).
fn shared_deps(name: &str) -> Vec<String> {
    let (kind, n, m) = parse_shared(name);
    let prefix = match kind {
        "ext-local" => "",
        "np-local" => "np-",
        _ => return Vec::new(),
    };
    let mut v = vec![format!("{prefix}pick-{n}")];
    if m != 0 {
        v.push(format!("{prefix}local-pick-{m}"));
    }
    v
}

/// A service port with ClientIP affinity: per-endpoint chains (they update
/// the affinity sets), chosen at random through a per-service named map.
fn fragment_with_affinity(sp: &ServicePort, cluster_cidr: Ipv4Cidr) -> Fragment {
    let key = sp.key();
    let id = hash(&key);
    let proto = sp.protocol.nft();
    let mut f = Fragment::default();
    let cluster = sp.cluster_endpoints();
    let local = sp.local_endpoints();

    // Endpoint chains, shared by the cluster-wide and the node-local choice.
    let mut ep_chain = BTreeMap::new();
    for ep in cluster.iter().chain(local.iter()) {
        let eid = endpoint_id(&key, ep);
        let chain = format!("ep-{eid}");
        if f.chains.contains_key(&chain) {
            continue;
        }
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
        if let Some(timeout) = sp.affinity_timeout {
            // The timeout is in the name: a new timeout is a new set.
            let set = format!("aff-{eid}-{timeout}");
            rules.push(format!("update @{set} {{ ip saddr }}"));
            f.sets.insert(set, timeout);
        }
        rules.push(format!("meta l4proto {proto} dnat to {}:{}", ep.ip, ep.port));
        f.chains.insert(chain.clone(), rules);
        ep_chain.insert((ep.ip, ep.port), eid);
    }

    // ClusterIP traffic from outside the cluster CIDR (the node itself,
    // hostNetwork pods) is masqueraded so the answer comes back through us.
    let masq_cluster_ips: Vec<String> = sp
        .cluster_ips
        .iter()
        .map(|ip| format!("ip daddr {ip} meta l4proto {proto} th dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade", sp.port))
        .collect();
    // A chain that picks one of `eps` at random (after any affinity hit).
    let dispatch = |f: &mut Fragment, kind: &str, eps: &[&Endpoint]| -> String {
        let chain = format!("{kind}-{id}");
        let map = format!("{kind}eps-{id}");
        let mut rules = masq_cluster_ips.clone();
        if sp.affinity_timeout.is_some() {
            for ep in eps {
                let eid = &ep_chain[&(ep.ip, ep.port)];
                let timeout = sp.affinity_timeout.unwrap_or_default();
                rules.push(format!("ip saddr @aff-{eid}-{timeout} goto ep-{eid}"));
            }
        }
        rules.push(format!("numgen random mod {} vmap @{map}", eps.len()));
        let elements = eps.iter().enumerate().map(|(i, ep)| format!("{i} : goto ep-{}", ep_chain[&(ep.ip, ep.port)])).collect();
        f.maps.insert(map, elements);
        f.chains.insert(chain.clone(), rules);
        chain
    };
    let cluster_chain = (!cluster.is_empty()).then(|| dispatch(&mut f, "svc", &cluster));
    let needs_local = sp.internal_local || sp.external_local;
    let local_chain = (needs_local && !local.is_empty()).then(|| dispatch(&mut f, "loc", &local));

    // Where ClusterIP traffic goes.
    let internal = if sp.internal_local { local_chain.clone() } else { cluster_chain.clone() };
    let internal_verdict = match (&internal, &cluster_chain) {
        (Some(c), _) => Ok(format!("goto {c}")),
        // Endpoints elsewhere only: internalTrafficPolicy Local drops, as upstream.
        (None, Some(_)) => Err("drop"),
        (None, None) => Err("goto reject-chain"),
    };
    for ip in &sp.cluster_ips {
        let k = format!("{ip} . {proto} . {}", sp.port);
        insert_element(&mut f, internal_verdict.clone(), SERVICE_IPS, NO_ENDPOINT_SERVICES, k);
    }

    // Where traffic from outside goes (externalIPs, load balancer IPs, NodePorts).
    let has_external = !sp.external_ips.is_empty() || !sp.load_balancer_ips.is_empty() || sp.node_port.is_some();
    let external_verdict = match &cluster_chain {
        None => Err("goto reject-chain"),
        Some(_) if !has_external => Err("unused"),
        Some(cluster_chain) => {
            let chain = format!("ext-{id}");
            let rules = if sp.external_local {
                // Pods and the node itself may use every endpoint; clients from
                // outside reach only this node's, with their address kept.
                let mut r = vec![
                    format!("ip saddr {cluster_cidr} goto {cluster_chain}"),
                    "fib saddr type local jump mark-for-masquerade".to_string(),
                    format!("fib saddr type local goto {cluster_chain}"),
                ];
                r.push(match &local_chain {
                    Some(l) => format!("goto {l}"),
                    None => "drop".to_string(),
                });
                r
            } else {
                vec!["jump mark-for-masquerade".to_string(), format!("goto {cluster_chain}")]
            };
            f.chains.insert(chain.clone(), rules);
            Ok(format!("goto {chain}"))
        }
    };
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        let k = format!("{ip} . {proto} . {}", sp.port);
        insert_element(&mut f, external_verdict.clone(), SERVICE_IPS, NO_ENDPOINT_SERVICES, k);
    }
    if let Some(np) = sp.node_port {
        let k = format!("{proto} . {np}");
        insert_element(&mut f, external_verdict, SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS, k);
    }
    f
}

/// loadBalancerSourceRanges: a new connection to a load balancer IP from
/// outside the ranges is dropped, before DNAT. NodePorts and ClusterIPs
/// are not filtered (as upstream).
fn firewall(f: &mut Fragment, sp: &ServicePort, node: &NodeInfo) {
    if sp.load_balancer_ips.is_empty() || sp.source_ranges.is_empty() {
        return;
    }
    let chain = format!("fw-{}", hash(&sp.key()));
    let mut allowed: Vec<String> = sp.source_ranges.iter().map(|c| c.to_string()).collect();
    // The node reaching a load balancer IP that is local to it sends from
    // that IP; upstream lets it through when a range holds the node's address.
    if sp.source_ranges.iter().any(|r| node.node_ips.iter().any(|ip| r.contains(*ip))) {
        allowed.extend(sp.load_balancer_ips.iter().map(|ip| ip.to_string()));
    }
    f.chains.insert(chain.clone(), vec![format!("ip saddr != {{ {} }} drop", allowed.join(", "))]);
    for ip in &sp.load_balancer_ips {
        f.elements.insert((FIREWALL_IPS, format!("{ip} . {} . {}", sp.protocol.nft(), sp.port)), format!("goto {chain}"));
    }
}

fn insert_element(f: &mut Fragment, verdict: Result<String, &str>, map: &'static str, no_ep_map: &'static str, key: String) {
    match verdict {
        Ok(v) => f.elements.insert((map, key), v),
        Err(v) => f.elements.insert((no_ep_map, key), v.to_string()),
    };
}

pub use super::batch::{full, staged, Batch, Elements, Staged};

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
