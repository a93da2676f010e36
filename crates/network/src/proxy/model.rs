//! What the proxy programs, computed from API objects and nothing else: one
//! `ServicePort` per port of a Service, with its addresses, policies and the
//! endpoints its EndpointSlices give that port. Pure; no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::cidr::Ipv4Cidr;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The older form of `spec.loadBalancerSourceRanges`: comma-separated CIDRs,
/// used when the field is empty (as cloud providers read it).
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `None` (unset) means TCP, as the API defaults it.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name nftables uses (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (`nodeName` is ours).
    pub local: bool,
}

/// One port of one Service, with everything the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name ("" for an unnamed single port).
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_ips: Vec<Ipv4Addr>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `loadBalancerSourceRanges` (IPv4 ones): when set, only these sources
    /// may connect to the load balancer IPs.
    pub source_ranges: Vec<Ipv4Cidr>,
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` (on a NodePort or LoadBalancer Service).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    pub health_check_node_port: Option<u16>,
    /// Every endpoint of this port, in a stable order (by address).
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A TCP ClusterIP service port named `http`, with nothing else set
    /// (for tests and the bench, which vary the rest field by field).
    pub fn tcp(namespace: &str, name: &str, cluster_ip: Ipv4Addr, port: u16, endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: namespace.into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port,
            cluster_ips: vec![cluster_ip],
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            node_port: None,
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            health_check_node_port: None,
            endpoints,
        }
    }

    /// `ns/name/port-name/protocol`: unique per service port, the seed of its chain names.
    pub fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.namespace, self.name, self.port_name, self.protocol.nft())
    }

    /// Endpoints for traffic that may go anywhere in the cluster.
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// Endpoints on this node (for the Local traffic policies).
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter().filter(|e| e.local))
    }
}

/// Ready endpoints; when none is ready, the serving ones that are
/// terminating (upstream's fallback, so a rolling restart of the last pods
/// does not turn connections away).
fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

/// The service ports of `svc` given the EndpointSlices that name it. Headless
/// and ExternalName Services have none (the proxy does not handle them).
pub fn service_ports(svc: &Service, slices: &[&EndpointSlice], node_name: &str) -> Vec<ServicePort> {
    let (Some(spec), Some(name)) = (svc.spec.as_ref(), svc.metadata.name.as_ref()) else {
        return Vec::new();
    };
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Vec::new();
    }
    let mut cluster_ips: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).collect();
    if cluster_ips.is_empty() {
        cluster_ips.extend(spec.cluster_ip.as_deref());
    }
    if cluster_ips.is_empty() || cluster_ips.iter().any(|ip| *ip == "None") {
        return Vec::new();
    }
    let cluster_ips = ipv4s(cluster_ips.into_iter());
    let external_ips = ipv4s(spec.external_ips.iter().flatten().map(String::as_str));
    let load_balancer_ips = if svc_type == "LoadBalancer" {
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        // ipMode Proxy: the load balancer proxies, packets never carry the VIP.
        ipv4s(ingress.into_iter().flatten().filter(|i| i.ip_mode.as_deref() != Some("Proxy")).filter_map(|i| i.ip.as_deref()))
    } else {
        Vec::new()
    };
    let source_ranges = if svc_type == "LoadBalancer" { source_ranges(svc) } else { Vec::new() };
    let externally_reachable = matches!(svc_type, "NodePort" | "LoadBalancer");
    let external_local = externally_reachable && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let health_check_node_port = (svc_type == "LoadBalancer" && external_local)
        .then_some(spec.health_check_node_port)
        .flatten()
        .and_then(port_u16);

    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let (Some(protocol), Some(port)) = (Protocol::parse(p.protocol.as_deref()), port_u16(p.port)) else {
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        out.push(ServicePort {
            namespace: namespace.clone(),
            name: name.clone(),
            endpoints: endpoints_for(slices, &port_name, protocol, node_name),
            port_name,
            protocol,
            port,
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            source_ranges: source_ranges.clone(),
            node_port: if externally_reachable { p.node_port.and_then(port_u16) } else { None },
            affinity_timeout,
            external_local,
            internal_local,
            health_check_node_port,
        });
    }
    out
}

/// The endpoints of one service port: each slice's port of the same name
/// and protocol, resolved per slice (a named targetPort may differ between pods).
fn endpoints_for(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol, node_name: &str) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let port = slice.ports.iter().flatten().find(|sp| {
            sp.name.as_deref().unwrap_or("") == port_name && Protocol::parse(sp.protocol.as_deref()) == Some(protocol)
        });
        let Some(port) = port.and_then(|p| p.port).and_then(port_u16) else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // Unset conditions: ready and serving mean "assume yes", terminating "no".
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node_name);
            // Only the first address counts, as upstream does.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let new = Endpoint { ip, port, ready, serving, terminating, local };
            // The same address in two slices (a move between slices): the readier wins.
            match by_addr.get(&(ip, port)) {
                Some(old) if (old.ready, old.serving) >= (ready, serving) => {}
                _ => {
                    by_addr.insert((ip, port), new);
                }
            }
        }
    }
    by_addr.into_values().collect()
}

/// The field, else the annotation; blanks trimmed (validation lets padding
/// through). IPv6 ranges are an IPv6 proxy's business and are left out.
fn source_ranges(svc: &Service) -> Vec<Ipv4Cidr> {
    let field = svc.spec.as_ref().and_then(|s| s.load_balancer_source_ranges.as_ref()).filter(|v| !v.is_empty());
    let raw: Vec<&str> = match field {
        Some(v) => v.iter().map(String::as_str).collect(),
        None => svc.metadata.annotations.as_ref().and_then(|a| a.get(SOURCE_RANGES_ANNOTATION)).map(|s| s.split(',').collect()).unwrap_or_default(),
    };
    let mut out: Vec<Ipv4Cidr> = raw.iter().filter_map(|r| r.trim().parse().ok()).collect();
    out.sort_by_key(|c| (u32::from(c.network()), c.prefix()));
    out.dedup();
    out
}

fn ipv4s<'a>(it: impl Iterator<Item = &'a str>) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = it.filter_map(|s| s.parse().ok()).collect();
    v.dedup();
    v
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    pub fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        service(json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"],
                "externalIPs": ["192.0.2.7"],
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "sessionAffinity": "ClientIP",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}
                ]
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}}
        }))
    }

    fn web_slice() -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "ns", "name": "web-abc", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.42.0.3"], "nodeName": "me", "conditions": {"ready": true}},
                {"addresses": ["10.42.1.3"], "nodeName": "other"},
                {"addresses": ["10.42.0.4"], "nodeName": "me", "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.1.9"], "nodeName": "other", "conditions": {"ready": false, "serving": false}}
            ]
        }))
    }

    #[test]
    fn a_load_balancer_service_becomes_one_port_each() {
        let s = web_slice();
        let ports = service_ports(&web(), &[&s], "me");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.key(), "ns/web/http/tcp");
        assert_eq!((http.port, http.node_port, http.protocol), (80, Some(30080), Protocol::Tcp));
        assert_eq!(http.cluster_ips, vec![Ipv4Addr::new(10, 43, 0, 5)]);
        assert_eq!(http.external_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert_eq!(http.load_balancer_ips, vec![Ipv4Addr::new(192, 0, 2, 1)], "ipMode Proxy and hostnames are skipped");
        assert_eq!(http.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert!(http.external_local && !http.internal_local);
        assert_eq!(http.health_check_node_port, Some(32000));
        let addrs: Vec<String> = http.endpoints.iter().map(|e| format!("{}:{}", e.ip, e.port)).collect();
        assert_eq!(addrs, ["10.42.0.3:8080", "10.42.0.4:8080", "10.42.1.3:8080", "10.42.1.9:8080"]);
        let used: Vec<Ipv4Addr> = http.cluster_endpoints().iter().map(|e| e.ip).collect();
        assert_eq!(used, [Ipv4Addr::new(10, 42, 0, 3), Ipv4Addr::new(10, 42, 1, 3)], "only ready ones");
        let local: Vec<Ipv4Addr> = http.local_endpoints().iter().map(|e| e.ip).collect();
        assert_eq!(local, [Ipv4Addr::new(10, 42, 0, 3)]);
        assert_eq!(ports[1].protocol, Protocol::Udp);
        assert_eq!(ports[1].endpoints[0].port, 5353, "the slice's port of the same name and protocol");
    }

    #[test]
    fn terminating_serving_endpoints_are_the_fallback() {
        let s = slice(json!({
            "metadata": {"namespace": "ns", "name": "web-x"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.0.4"], "nodeName": "me", "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.42.0.5"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": false}}
            ]
        }));
        let ports = service_ports(&web(), &[&s], "me");
        let used: Vec<Ipv4Addr> = ports[0].cluster_endpoints().iter().map(|e| e.ip).collect();
        assert_eq!(used, [Ipv4Addr::new(10, 42, 0, 4)]);
        assert_eq!(ports[0].local_endpoints().len(), 1);
        assert!(ports[1].endpoints.is_empty(), "no port named dns in this slice");
    }

    #[test]
    fn headless_external_name_and_policies() {
        let headless = service(json!({"metadata": {"namespace": "a", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        assert!(service_ports(&headless, &[], "me").is_empty());
        let external = service(json!({"metadata": {"namespace": "a", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(service_ports(&external, &[], "me").is_empty());

        let plain = service(json!({"metadata": {"namespace": "a", "name": "p"},
            "spec": {"clusterIP": "10.43.0.9", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                     "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                     "ports": [{"port": 80, "nodePort": 30001}]}}));
        let p = &service_ports(&plain, &[], "me")[0];
        assert_eq!(p.key(), "a/p//tcp");
        assert!(!p.external_local, "externalTrafficPolicy only applies to NodePort and LoadBalancer");
        assert!(p.internal_local);
        assert_eq!(p.node_port, None, "a ClusterIP Service has no node port");
        assert_eq!(p.affinity_timeout, Some(60));
        assert_eq!(p.health_check_node_port, None);
    }

    #[test]
    fn duplicate_addresses_across_slices_keep_the_readiest() {
        let a = slice(json!({"metadata": {"name": "a"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.42.0.4"], "conditions": {"ready": false}}]}));
        let b = slice(json!({"metadata": {"name": "b"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.42.0.4"], "conditions": {"ready": true}}]}));
        let v6 = slice(json!({"metadata": {"name": "c"}, "addressType": "IPv6", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["fd00::1"]}]}));
        let svc = service(json!({"metadata": {"namespace": "a", "name": "p"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80}]}}));
        let p = &service_ports(&svc, &[&a, &b, &v6], "me")[0];
        assert_eq!(p.endpoints.len(), 1);
        assert!(p.endpoints[0].ready);
    }

    #[test]
    fn source_ranges_come_from_the_field_else_the_annotation() {
        let lb = |spec: serde_json::Value, annotation: Option<&str>| {
            let mut v = json!({"metadata": {"namespace": "a", "name": "lb"},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30001}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
            for (k, x) in spec.as_object().unwrap() {
                v["spec"][k] = x.clone();
            }
            if let Some(a) = annotation {
                v["metadata"]["annotations"] = json!({SOURCE_RANGES_ANNOTATION: a});
            }
            let ranges: Vec<String> = service_ports(&service(v), &[], "me")[0].source_ranges.iter().map(|c| c.to_string()).collect();
            ranges
        };
        // Padded, unsorted, repeated, with an IPv6 range for the IPv6 proxy.
        let field = json!({"loadBalancerSourceRanges": [" 203.0.113.0/24", "198.51.100.9/24 ", "fd00::/8", "203.0.113.0/24"]});
        assert_eq!(lb(field.clone(), Some("10.0.0.0/8")), ["198.51.100.0/24", "203.0.113.0/24"], "the field wins");
        assert_eq!(lb(json!({}), Some(" 10.0.0.0/8, 192.168.0.0/16 ,")), ["10.0.0.0/8", "192.168.0.0/16"]);
        assert!(lb(json!({}), None).is_empty());
        assert!(lb(json!({"type": "NodePort"}), Some("10.0.0.0/8")).is_empty(), "only LoadBalancer Services have them");
    }
}
