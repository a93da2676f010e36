//! Ingresses, IngressClasses and NetworkPolicies.

use serde_json::Value;

use super::errors::{go_repr, FieldError};
use super::meta::validate_label_selector;
use super::names::*;
use super::util::*;
use super::workloads::meta_for;

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];

fn backend(errs: &mut Errs, b: &Value, path: &str) {
    let resource = get(b, "resource");
    let service = get(b, "service");
    match (resource, service) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => {
            let rp = child(path, "resource");
            if let Some(g) = opt_s(r, "apiGroup") {
                dns_subdomain(errs, &child(&rp, "apiGroup"), g);
            }
            for f in ["kind", "name"] {
                let v = s(r, f);
                if v.is_empty() {
                    errs.push(FieldError::required(
                        child(&rp, f),
                        format!("{f} is required"),
                    ));
                } else {
                    push_msgs(errs, &child(&rp, f), v, is_valid_path_segment_name(v));
                }
            }
        }
        (None, Some(svc)) => {
            let np = child(&child(path, "service"), "name");
            let name = s(svc, "name");
            if name.is_empty() {
                errs.push(FieldError::required(np, ""));
            } else {
                push_msgs(errs, &np, name, name_is_dns1035_label(name, false));
            }
            let null = Value::Null;
            let port = get(svc, "port").unwrap_or(&null);
            let pname = s(port, "name");
            let pnum = int(port, "number").unwrap_or(0);
            let pp = child(&child(path, "service"), "port");
            if !pname.is_empty() && pnum != 0 {
                errs.push(FieldError::invalid(
                    path,
                    "",
                    "cannot set both port name & port number",
                ));
            } else if !pname.is_empty() {
                push_msgs(errs, &child(&pp, "name"), pname, is_valid_port_name(pname));
            } else if pnum != 0 {
                for m in is_valid_port_num(pnum) {
                    errs.push(FieldError::invalid(child(&pp, "number"), pnum, m));
                }
            } else {
                errs.push(FieldError::required(
                    path,
                    "port name or number is required",
                ));
            }
        }
        (None, None) => errs.push(FieldError::invalid(
            path,
            "",
            "resource or service backend is required",
        )),
    }
}

fn http_path(errs: &mut Errs, p: &Value, path: &str) {
    let Some(pt) = opt_s(p, "pathType") else {
        errs.push(FieldError::required(
            child(path, "pathType"),
            "pathType must be specified",
        ));
        return;
    };
    let value = s(p, "path");
    let vp = child(path, "path");
    match pt {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(FieldError::invalid(&vp, value, "must be an absolute path"));
            }
            if !value.is_empty() {
                for seq in INVALID_PATH_SEQUENCES {
                    if value.contains(seq) {
                        errs.push(FieldError::invalid(
                            &vp,
                            value,
                            format!("must not contain '{seq}'"),
                        ));
                    }
                }
                for suf in INVALID_PATH_SUFFIXES {
                    if value.ends_with(suf) {
                        errs.push(FieldError::invalid(
                            &vp,
                            value,
                            format!("cannot end with '{suf}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(FieldError::invalid(&vp, value, "must be an absolute path"));
            }
        }
        other => errs.push(FieldError::not_supported(
            child(path, "pathType"),
            other,
            PATH_TYPES,
        )),
    }
    let null = Value::Null;
    backend(
        errs,
        get(p, "backend").unwrap_or(&null),
        &child(path, "backend"),
    );
}

fn host(errs: &mut Errs, h: &str, path: &str) {
    if parse_ip_sloppy(h).is_some() {
        errs.push(FieldError::invalid(
            path,
            h,
            "must be a DNS name, not an IP address",
        ));
    }
    if h.contains('*') {
        push_msgs(errs, path, h, is_wildcard_dns1123_subdomain(h));
    } else {
        push_msgs(errs, path, h, is_dns1123_subdomain(h));
    }
}

pub(crate) fn validate_ingress(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    if old.is_some() {
        super::meta::validate_object_meta(errs, obj, Some(true), name_is_dns_subdomain);
    }
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let rules = arr(spec, "rules");
    if rules.is_empty() && get(spec, "defaultBackend").is_none() {
        errs.push(FieldError::invalid(
            "spec",
            go_repr("[]networking.IngressRule(nil)"),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(db) = get(spec, "defaultBackend") {
        backend(errs, db, "spec.defaultBackend");
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = idx("spec.rules", i);
        let h = s(rule, "host");
        if !h.is_empty() {
            host(errs, h, &child(&rp, "host"));
        }
        if let Some(http) = get(rule, "http") {
            let hp = child(&rp, "http");
            let paths = arr(http, "paths");
            if paths.is_empty() {
                errs.push(FieldError::required(child(&hp, "paths"), ""));
            }
            for (j, p) in paths.iter().enumerate() {
                http_path(errs, p, &idx(&child(&hp, "paths"), j));
            }
        }
    }
    for tls in arr(spec, "tls") {
        for (i, h) in arr(tls, "hosts").iter().enumerate() {
            let h = h.as_str().unwrap_or("");
            let p = child(&idx("spec.tls", i), "hosts");
            if h.contains('*') {
                push_msgs(errs, &p, h, is_wildcard_dns1123_subdomain(h));
            } else {
                push_msgs(errs, &p, h, is_dns1123_subdomain(h));
            }
        }
    }
    if let Some(c) = opt_s(spec, "ingressClassName") {
        push_msgs(
            errs,
            "spec.ingressClassName",
            c,
            name_is_dns_subdomain(c, false),
        );
    }
    if old.is_none() {
        let ann = at(
            obj,
            &["metadata", "annotations", "kubernetes.io/ingress.class"],
        )
        .and_then(Value::as_str);
        if let (Some(a), Some(_)) = (ann, opt_s(spec, "ingressClassName")) {
            errs.push(FieldError::invalid(
                "annotations.kubernetes.io/ingress.class",
                a,
                "can not be set when the class field is also set",
            ));
        }
    }
}

pub(crate) fn validate_ingress_class(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let controller = s(spec, "controller");
    if controller.len() > 250 {
        errs.push(FieldError::too_long("spec.controller", 250));
    }
    is_domain_prefixed_path(errs, "spec.controller", controller);
    if let Some(p) = get(spec, "parameters") {
        let pp = "spec.parameters";
        if s(p, "kind").is_empty() {
            errs.push(FieldError::required(child(pp, "kind"), ""));
        }
        if s(p, "name").is_empty() {
            errs.push(FieldError::required(child(pp, "name"), ""));
        }
        match opt_s(p, "scope") {
            Some("Namespace") => {
                if s(p, "namespace").is_empty() {
                    errs.push(FieldError::required(
                        child(pp, "namespace"),
                        "`parameters.scope` is set to 'Namespace'",
                    ));
                }
            }
            Some("Cluster") | None => {
                if get(p, "namespace").is_some() {
                    errs.push(FieldError::forbidden(
                        child(pp, "namespace"),
                        "`parameters.scope` is set to 'Cluster'",
                    ));
                }
            }
            Some(other) => errs.push(FieldError::not_supported(
                child(pp, "scope"),
                other,
                &["Cluster", "Namespace"],
            )),
        }
    }
    if let Some(o) = old {
        let oc = at(o, &["spec", "controller"])
            .and_then(Value::as_str)
            .unwrap_or("");
        if oc != controller {
            errs.push(FieldError::invalid(
                "spec.controller",
                controller,
                FIELD_IMMUTABLE,
            ));
        }
    }
}

fn np_port(errs: &mut Errs, port: &Value, path: &str) {
    if let Some(p) = opt_s(port, "protocol") {
        if !matches!(p, "TCP" | "UDP" | "SCTP") {
            errs.push(FieldError::not_supported(
                child(path, "protocol"),
                p,
                &["TCP", "UDP", "SCTP"],
            ));
        }
    }
    let end = int(port, "endPort");
    match get(port, "port") {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            for m in is_valid_port_num(n) {
                errs.push(FieldError::invalid(child(path, "port"), n, m));
            }
            if let Some(end) = end.filter(|e| *e < n) {
                errs.push(FieldError::invalid(
                    child(path, "endPort"),
                    end,
                    "must be greater than or equal to `port`",
                ));
            }
        }
        Some(Value::String(name)) => {
            push_msgs(errs, &child(path, "port"), name, is_valid_port_name(name));
            if end.is_some() {
                errs.push(FieldError::forbidden(
                    child(path, "endPort"),
                    "may not be specified when `port` is non-numeric",
                ));
            }
        }
        _ => {
            if end.is_some() {
                errs.push(FieldError::required(
                    child(path, "port"),
                    "must specify when `endPort` is specified",
                ));
            }
        }
    }
}

fn np_peer(errs: &mut Errs, peer: &Value, path: &str) {
    let mut n = 0;
    for k in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = get(peer, k) {
            n += 1;
            validate_label_selector(errs, Some(sel), &child(path, k));
        }
    }
    let ipb = get(peer, "ipBlock");
    if let Some(ipb) = ipb {
        n += 1;
        let p = child(path, "ipBlock");
        let cidr = s(ipb, "cidr");
        if cidr.is_empty() {
            errs.push(FieldError::required(child(&p, "cidr"), ""));
        } else if is_valid_cidr(errs, &child(&p, "cidr"), cidr) {
            let (net, bits) = parse_cidr_sloppy(cidr).expect("validated");
            for (i, ex) in arr(ipb, "except").iter().enumerate() {
                let ex = ex.as_str().unwrap_or("");
                let ep = idx(&child(&p, "except"), i);
                if !is_valid_cidr(errs, &ep, ex) {
                    continue;
                }
                let (eip, ebits) = parse_cidr_sloppy(ex).expect("validated");
                if !cidr_contains(net, bits, eip) || bits >= ebits {
                    errs.push(FieldError::invalid(
                        &ep,
                        ex,
                        "must be a strict subset of `cidr`",
                    ));
                }
            }
        }
    }
    if n == 0 {
        errs.push(FieldError::required(path, "must specify a peer"));
    } else if n > 1 && ipb.is_some() {
        errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
}

fn cidr_contains(net: std::net::IpAddr, bits: u8, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr::*;
    match (net, ip) {
        (V4(n), V4(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits as u32)
            };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (V6(n), V6(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits as u32)
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

pub(crate) fn validate_network_policy(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    validate_label_selector(errs, get(spec, "podSelector"), "spec.podSelector");
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr(spec, dir).iter().enumerate() {
            let rp = idx(&child("spec", dir), i);
            for (j, port) in arr(rule, "ports").iter().enumerate() {
                np_port(errs, port, &idx(&child(&rp, "ports"), j));
            }
            for (j, peer) in arr(rule, peers).iter().enumerate() {
                np_peer(errs, peer, &idx(&child(&rp, peers), j));
            }
        }
    }
    let types = arr(spec, "policyTypes");
    if types.len() > 2 {
        let items: Vec<String> = types
            .iter()
            .map(|t| super::errors::go_quote(t.as_str().unwrap_or("")))
            .collect();
        errs.push(FieldError::invalid_repr(
            "spec.policyTypes",
            format!("[]networking.PolicyType{{{}}}", items.join(", ")),
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if t != "Ingress" && t != "Egress" {
            errs.push(FieldError::not_supported(
                idx("spec.policyTypes", i),
                t,
                &["Ingress", "Egress"],
            ));
        }
    }
}
