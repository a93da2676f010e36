//! Services, Endpoints and EndpointSlices.

use std::collections::HashSet;

use serde_json::Value;

use super::container::port_num_or_name;
use super::errors::{go_quote, FieldError};
use super::meta::validate_labels;
use super::names::*;
use super::util::*;
use super::workloads::meta_for;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn protocol(errs: &mut Errs, v: &Value, path: &str) {
    if let Some(p) = opt_s(v, "protocol") {
        if p.is_empty() {
            errs.push(FieldError::required(child(path, "protocol"), ""));
        } else if !PROTOCOLS.contains(&p) {
            errs.push(FieldError::not_supported(
                child(path, "protocol"),
                p,
                PROTOCOLS,
            ));
        }
    }
}

/// `spec.clusterIPs` as stored, or `[clusterIP]` when only that is set.
fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips: Vec<String> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    match s(spec, "clusterIP") {
        "" => Vec::new(),
        ip => vec![ip.to_string()],
    }
}

fn is_headless(spec: &Value) -> bool {
    let ips = cluster_ips(spec);
    ips.len() == 1 && ips[0] == "None"
}

fn service_port_repr(proto: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        go_quote(proto)
    )
}

fn validate_cluster_ips(errs: &mut Errs, spec: &Value) {
    let cip = s(spec, "clusterIP");
    let listed: Vec<&str> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !cip.is_empty() && !listed.is_empty() && listed[0] != cip {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            arr(spec, "clusterIPs").to_vec(),
            "first value must match `clusterIP`",
        ));
    }
    if cip.is_empty() && !listed.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            arr(spec, "clusterIPs").to_vec(),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = HashSet::new();
    for (i, fam) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = fam.as_str().unwrap_or("");
        let p = idx("spec.ipFamilies", i);
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(&p, f, &["IPv4", "IPv6"]));
        }
        if !seen.insert(f) {
            errs.push(FieldError::duplicate(&p, f));
        }
    }
    if let Some(pol) = opt_s(spec, "ipFamilyPolicy") {
        const POL: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !POL.contains(&pol) {
            errs.push(FieldError::not_supported("spec.ipFamilyPolicy", pol, POL));
        }
    }
    let ips = cluster_ips(spec);
    let all: Vec<Value> = ips.iter().map(|s| Value::String(s.clone())).collect();
    let mut bad = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                bad = true;
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    all.clone(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        bad |= !is_valid_ip(errs, &idx("spec.clusterIPs", i), ip);
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            all.clone(),
            "may only hold up to 2 values",
        ));
    }
    if bad {
        return;
    }
    if ips.len() == 2 {
        let v6: Vec<bool> = ips.iter().map(|ip| ip.contains(':')).collect();
        if v6[0] == v6[1] {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                all,
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        let fams: Vec<&str> = arr(spec, "ipFamilies")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for (i, ip) in ips.iter().enumerate() {
            let Some(fam) = fams.get(i) else { break };
            if *fam == "IPv4" && ip.contains(':') {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if *fam == "IPv6" && !ip.contains(':') {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
}

pub(crate) fn validate_service(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns1035_label);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let ty = opt_s(spec, "type").unwrap_or("ClusterIP");
    let ports = arr(spec, "ports");
    let headless = is_headless(spec);
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let first_ip = cluster_ips(spec).first().cloned().unwrap_or_default();
    match ty {
        "LoadBalancer" | "NodePort" if headless => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            first_ip.as_str(),
            format!("may not be set to 'None' for {ty} services"),
        )),
        "ExternalName" => {
            if !cluster_ips(spec).is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                dns_subdomain(errs, "spec.externalName", cname);
            }
        }
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = idx("spec.ports", i);
        let name = s(port, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else if !name.is_empty() {
            dns_label(errs, &child(&p, "name"), name);
            if !names.insert(name) {
                errs.push(FieldError::duplicate(child(&p, "name"), name));
            }
        }
        let num = int(port, "port").unwrap_or(0);
        for m in is_valid_port_num(num) {
            errs.push(FieldError::invalid(child(&p, "port"), num, m));
        }
        protocol(errs, port, &p);
        if let Some(tp) = get(port, "targetPort") {
            port_num_or_name(errs, Some(tp), &child(&p, "targetPort"));
        }
        if let Some(ap) = opt_s(port, "appProtocol") {
            qualified_name(errs, &child(&p, "appProtocol"), ap);
        }
    }
    validate_labels(errs, get(spec, "selector"), "spec.selector");
    if let Some(sa) = opt_s(spec, "sessionAffinity") {
        if sa.is_empty() {
            errs.push(FieldError::required("spec.sessionAffinity", ""));
        } else if sa != "ClientIP" && sa != "None" {
            errs.push(FieldError::not_supported(
                "spec.sessionAffinity",
                sa,
                &["ClientIP", "None"],
            ));
        } else if sa == "ClientIP" {
            if let Some(t) = at(
                spec,
                &["sessionAffinityConfig", "clientIP", "timeoutSeconds"],
            )
            .and_then(Value::as_i64)
            {
                if t <= 0 || t > 86400 {
                    errs.push(FieldError::invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        t,
                        "must be greater than 0 and less than 86400",
                    ));
                }
            }
        } else if get(spec, "sessionAffinityConfig").is_some() {
            errs.push(FieldError::forbidden(
                "spec.sessionAffinityConfig",
                "must not be set when session affinity is None",
            ));
        }
    }
    if ty != "ExternalName" {
        validate_cluster_ips(errs, spec);
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let p = idx("spec.externalIPs", i);
        let ip = ip.as_str().unwrap_or("");
        if is_valid_ip(errs, &p, ip) {
            non_special_ip(errs, &p, ip);
        }
    }
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SERVICE_TYPES));
    }
    // A ClusterIP service may not carry node ports (on update only when it
    // already was ClusterIP: a type change clears them).
    let old_ty = old
        .and_then(|o| at(o, &["spec", "type"]))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if ty == "ClusterIP" && (old.is_none() || old_ty == "ClusterIP") {
        for (i, port) in ports.iter().enumerate() {
            if int(port, "nodePort").unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    child(&idx("spec.ports", i), "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let proto = opt_s(port, "protocol").unwrap_or("TCP");
        let np = int(port, "nodePort").unwrap_or(0);
        if np != 0 && !node_ports.insert((proto, np)) {
            errs.push(FieldError::duplicate(
                child(&idx("spec.ports", i), "nodePort"),
                np,
            ));
        }
        let num = int(port, "port").unwrap_or(0);
        if !port_keys.insert((proto, num)) {
            errs.push(FieldError::duplicate(
                idx("spec.ports", i),
                super::errors::go_repr(service_port_repr(proto, num)),
            ));
        }
    }
    let ranges = arr(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                "spec.LoadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            is_valid_cidr(
                errs,
                &idx("spec.LoadBalancerSourceRanges", i),
                r.as_str().unwrap_or("").trim(),
            );
        }
    }
    if get(spec, "allocateLoadBalancerNodePorts").is_some() && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    match (ty, opt_s(spec, "loadBalancerClass")) {
        ("LoadBalancer", Some(c)) => qualified_name(errs, "spec.loadBalancerClass", c),
        (_, Some(_)) => errs.push(FieldError::forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        )),
        _ => {}
    }
    for (f, allowed) in [
        ("externalTrafficPolicy", ["Cluster", "Local"]),
        ("internalTrafficPolicy", ["Cluster", "Local"]),
    ] {
        if let Some(v) = opt_s(spec, f).filter(|v| !v.is_empty()) {
            if !allowed.contains(&v) {
                errs.push(FieldError::not_supported(child("spec", f), v, &allowed));
            }
        }
    }
    if let Some(td) = opt_s(spec, "trafficDistribution") {
        if td != "PreferClose" {
            errs.push(FieldError::not_supported(
                "spec.trafficDistribution",
                td,
                &["PreferClose"],
            ));
        }
    }
    if let Some(o) = old {
        validate_service_update(errs, spec, get(o, "spec").unwrap_or(&null));
    }
}

fn validate_service_update(errs: &mut Errs, spec: &Value, old: &Value) {
    let ty = opt_s(spec, "type").unwrap_or("ClusterIP");
    let old_ty = opt_s(old, "type").unwrap_or("ClusterIP");
    if ty == "ExternalName" || old_ty == "ExternalName" || (is_headless(spec) && is_headless(old)) {
        return;
    }
    let new_ips = cluster_ips(spec);
    let old_ips = cluster_ips(old);
    // An update that omits the cluster IPs keeps the allocated ones.
    if new_ips.is_empty() {
        return;
    }
    let all: Vec<Value> = new_ips.iter().map(|s| Value::String(s.clone())).collect();
    if new_ips.len() == old_ips.len() {
        for (i, ip) in old_ips.iter().enumerate() {
            if *ip != new_ips[i] {
                errs.push(FieldError::invalid(
                    idx("spec.clusterIPs", i),
                    all.clone(),
                    "may not change once set",
                ));
            }
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            all,
            "may not change once set",
        ));
    }
    if ty == "LoadBalancer"
        && old_ty == "LoadBalancer"
        && opt_s(spec, "loadBalancerClass") != opt_s(old, "loadBalancerClass")
    {
        errs.push(FieldError::invalid(
            "spec.loadBalancerClass",
            get(spec, "loadBalancerClass")
                .cloned()
                .unwrap_or(Value::Null),
            "may not change once set",
        ));
    }
}

fn endpoint_port(errs: &mut Errs, port: &Value, require_name: bool, path: &str) {
    let name = s(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else if !name.is_empty() {
        dns_label(errs, &child(path, "name"), name);
    }
    let n = int(port, "port").unwrap_or(0);
    for m in is_valid_port_num(n) {
        errs.push(FieldError::invalid(child(path, "port"), n, m));
    }
    protocol(errs, port, path);
    if let Some(ap) = opt_s(port, "appProtocol") {
        qualified_name(errs, &child(path, "appProtocol"), ap);
    }
}

pub(crate) fn validate_endpoints(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    for (i, ss) in arr(obj, "subsets").iter().enumerate() {
        let p = idx("subsets", i);
        let (addrs, not_ready) = (arr(ss, "addresses"), arr(ss, "notReadyAddresses"));
        if addrs.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (field, list) in [("addresses", addrs), ("notReadyAddresses", not_ready)] {
            for (j, a) in list.iter().enumerate() {
                let ap = idx(&child(&p, field), j);
                let ip = s(a, "ip");
                is_valid_ip(errs, &child(&ap, "ip"), ip);
                let host = s(a, "hostname");
                if !host.is_empty() {
                    dns_label(errs, &child(&ap, "hostname"), host);
                }
                if let Some(nn) = opt_s(a, "nodeName") {
                    push_msgs(
                        errs,
                        &child(&ap, "nodeName"),
                        nn,
                        name_is_dns_subdomain(nn, false),
                    );
                }
                non_special_ip(errs, &child(&ap, "ip"), ip);
            }
        }
        let ports = arr(ss, "ports");
        for (j, port) in ports.iter().enumerate() {
            endpoint_port(errs, port, ports.len() > 1, &idx(&child(&p, "ports"), j));
        }
    }
}

pub(crate) fn validate_endpoint_slice(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let at_ = s(obj, "addressType");
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    if at_.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !TYPES.contains(&at_) {
        errs.push(FieldError::not_supported("addressType", at_, TYPES));
    }
    let eps = arr(obj, "endpoints");
    if eps.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", eps.len(), 1000));
    } else {
        for (i, ep) in eps.iter().enumerate() {
            let p = idx("endpoints", i);
            let ap = child(&p, "addresses");
            let addrs = arr(ep, "addresses");
            if addrs.is_empty() {
                errs.push(FieldError::required(&ap, "must contain at least 1 address"));
            } else if addrs.len() > 100 {
                errs.push(FieldError::too_many(&ap, addrs.len(), 100));
            }
            for (j, a) in addrs.iter().enumerate() {
                let a = a.as_str().unwrap_or("");
                let jp = idx(&ap, j);
                let parsed = parse_ip_sloppy(a);
                match at_ {
                    "IPv4" => match parsed {
                        Some(std::net::IpAddr::V4(_)) => non_special_ip(errs, &jp, a),
                        _ => errs.push(FieldError::invalid(&jp, a, "must be a valid IPv4 address")),
                    },
                    "IPv6" => match parsed {
                        Some(std::net::IpAddr::V6(_)) => non_special_ip(errs, &jp, a),
                        _ => errs.push(FieldError::invalid(&jp, a, "must be a valid IPv6 address")),
                    },
                    "FQDN" => {
                        let fq = a.strip_suffix('.').unwrap_or(a);
                        if fq.is_empty() {
                            errs.push(FieldError::required(&jp, ""));
                        } else if let Some(m) = is_dns1123_subdomain(fq).into_iter().next() {
                            errs.push(FieldError::invalid(&jp, fq, m));
                        } else if !fq.contains('.') {
                            errs.push(FieldError::invalid(
                                &jp,
                                fq,
                                "should be a domain with at least two segments separated by dots",
                            ));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(nn) = opt_s(ep, "nodeName") {
                push_msgs(
                    errs,
                    &child(&p, "nodeName"),
                    nn,
                    name_is_dns_subdomain(nn, false),
                );
            }
            if let Some(h) = opt_s(ep, "hostname") {
                dns_label(errs, &child(&p, "hostname"), h);
            }
        }
    }
    let ports = arr(obj, "ports");
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = idx("ports", i);
        let name = s(port, "name");
        if !name.is_empty() {
            dns_label(errs, &child(&p, "name"), name);
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(child(&p, "name"), name));
        }
        protocol(errs, port, &p);
        if let Some(ap) = opt_s(port, "appProtocol") {
            qualified_name(errs, &child(&p, "appProtocol"), ap);
        }
    }
    if let Some(o) = old {
        immutable(
            errs,
            get(obj, "addressType"),
            get(o, "addressType"),
            "addressType",
        );
    }
}
