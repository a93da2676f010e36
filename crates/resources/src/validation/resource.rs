//! Compute-resource names and quantities: container requirements (requests
//! vs limits), quota and limit-range resource names, quantity values.

use serde_json::Value;

use super::errors::FieldError;
use super::names::{is_qualified_name, push_msgs};
use super::qty::Qty;
use super::util::*;

/// Parses a quantity string, reporting a malformed one at `path`.
pub(crate) fn parse_qty(errs: &mut Errs, v: &Value, path: &str) -> Option<Qty> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            errs.push(FieldError::invalid(
                path,
                other.clone(),
                super::qty::QUANTITY_FORMAT_ERR,
            ));
            return None;
        }
    };
    match Qty::parse(&text) {
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(FieldError::invalid(path, text, e));
            None
        }
    }
}

/// Parses without reporting.
pub(crate) fn qty_of(v: Option<&Value>) -> Option<Qty> {
    match v? {
        Value::String(s) => Qty::parse(s).ok(),
        Value::Number(n) => Qty::parse(&n.to_string()).ok(),
        _ => None,
    }
}

fn is_native(name: &str) -> bool {
    match name.split_once('/') {
        None => true,
        Some((domain, _)) => domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"),
    }
}

pub(crate) fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_extended(name: &str) -> bool {
    if is_native(name) || name.starts_with("requests.") {
        return false;
    }
    is_qualified_name(&format!("requests.{name}")).is_empty()
}

/// Resources whose requests must equal their limits.
fn overcommit_allowed(name: &str) -> bool {
    is_native(name) && !is_hugepages(name)
}

fn is_integer_resource(name: &str) -> bool {
    const INTEGER: &[&str] = &[
        "pods",
        "services",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
    ];
    INTEGER.contains(&name) || is_extended(name) || name.starts_with("count/")
}

fn is_standard_resource(name: &str) -> bool {
    const STANDARD: &[&str] = &[
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "pods",
        "services",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "persistentvolumeclaims",
        "configmaps",
        "storage",
        "requests.storage",
        "services.nodeports",
        "services.loadbalancers",
    ];
    STANDARD.contains(&name)
        || is_hugepages(name)
        || name.starts_with("requests.hugepages-")
        || name.starts_with("limits.hugepages-")
}

/// A resource name: qualified, and standard unless domain-prefixed.
fn validate_resource_name(errs: &mut Errs, name: &str, path: &str) -> bool {
    let before = errs.len();
    push_msgs(errs, path, name, is_qualified_name(name));
    if errs.len() != before {
        return false;
    }
    if !name.contains('/') && !is_standard_resource(name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be a standard resource type or fully qualified",
        ));
        return false;
    }
    true
}

fn validate_container_resource_name(errs: &mut Errs, name: &str, path: &str) {
    validate_resource_name(errs, name, path);
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && !is_extended(name) {
        errs.push(FieldError::invalid(
            path,
            name,
            "doesn't follow extended resource name standard",
        ));
    }
}

/// Quota resource names.
pub(crate) fn validate_quota_resource_name(errs: &mut Errs, name: &str, path: &str) {
    validate_resource_name(errs, name, path);
    if !name.contains('/') {
        let quota_ok = matches!(
            name,
            "cpu"
                | "memory"
                | "ephemeral-storage"
                | "requests.cpu"
                | "requests.memory"
                | "requests.storage"
                | "requests.ephemeral-storage"
                | "limits.cpu"
                | "limits.memory"
                | "limits.ephemeral-storage"
                | "pods"
                | "resourcequotas"
                | "services"
                | "replicationcontrollers"
                | "secrets"
                | "persistentvolumeclaims"
                | "configmaps"
                | "services.nodeports"
                | "services.loadbalancers"
        ) || name.starts_with("requests.hugepages-");
        if !quota_ok {
            errs.push(FieldError::invalid(
                path,
                name,
                "must be a standard resource for quota",
            ));
        }
    }
}

/// Limit-range resource names (container rules for Pod/Container types).
pub(crate) fn validate_limit_range_resource_name(
    errs: &mut Errs,
    limit_type: &str,
    name: &str,
    path: &str,
) {
    if limit_type == "Pod" || limit_type == "Container" {
        validate_container_resource_name(errs, name, path);
    } else {
        validate_resource_name(errs, name, path);
    }
}

/// A resource quantity: well-formed, not negative, integral where required.
pub(crate) fn validate_quantity_value(
    errs: &mut Errs,
    name: &str,
    v: &Value,
    path: &str,
) -> Option<Qty> {
    let q = parse_qty(errs, v, path)?;
    if q.is_negative() {
        errs.push(FieldError::invalid(
            path,
            q.canonical(),
            "must be greater than or equal to 0",
        ));
    }
    if is_integer_resource(name) && !q.is_integer() {
        errs.push(FieldError::invalid_repr(
            path,
            q.canonical(),
            "must be an integer",
        ));
    }
    Some(q)
}

/// A container's `resources`: names, quantities, requests ≤ limits.
pub(crate) fn validate_requirements(errs: &mut Errs, res: Option<&Value>, path: &str) {
    let Some(res) = res else { return };
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let limits = omap(res, "limits");
    let mut lim_cpu_mem = false;
    let mut req_cpu_mem = false;
    let mut hugepages = false;
    if let Some(limits) = limits {
        for (name, v) in limits {
            let p = key(&lim_path, name);
            validate_container_resource_name(errs, name, &p);
            validate_quantity_value(errs, name, v, &p);
            hugepages |= is_hugepages(name);
            lim_cpu_mem |= name == "cpu" || name == "memory";
        }
    }
    if let Some(requests) = omap(res, "requests") {
        for (name, v) in requests {
            let p = key(&req_path, name);
            validate_container_resource_name(errs, name, &p);
            let q = validate_quantity_value(errs, name, v, &p);
            match (q, limits.and_then(|l| l.get(name))) {
                (Some(q), Some(lv)) => {
                    if let Some(l) = qty_of(Some(lv)) {
                        if q.cmp(&l) != std::cmp::Ordering::Equal && !overcommit_allowed(name) {
                            errs.push(FieldError::invalid(
                                &req_path,
                                q.canonical(),
                                format!("must be equal to {name} limit of {}", l.canonical()),
                            ));
                        } else if q.cmp(&l) == std::cmp::Ordering::Greater {
                            errs.push(FieldError::invalid(
                                &req_path,
                                q.canonical(),
                                format!(
                                    "must be less than or equal to {name} limit of {}",
                                    l.canonical()
                                ),
                            ));
                        }
                    }
                }
                (_, None) if !overcommit_allowed(name) => {
                    errs.push(FieldError::required(
                        &lim_path,
                        "Limit must be set for non overcommitable resources",
                    ));
                }
                _ => {}
            }
            hugepages |= is_hugepages(name);
            req_cpu_mem |= name == "cpu" || name == "memory";
        }
    }
    if hugepages && !lim_cpu_mem && !req_cpu_mem {
        errs.push(FieldError::forbidden(
            path,
            "HugePages require cpu or memory",
        ));
    }
}
