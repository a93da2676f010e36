//! networking.k8s.io and discovery.k8s.io kinds.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, cells| Some(Printer { columns, cells });
    match (group, kind) {
        ("networking.k8s.io", "Ingress") => p(ingress_columns, ingress_cells),
        ("networking.k8s.io", "IngressClass") => p(ingressclass_columns, ingressclass_cells),
        ("networking.k8s.io", "NetworkPolicy") => p(netpol_columns, netpol_cells),
        ("discovery.k8s.io", "EndpointSlice") => p(slice_columns, slice_cells),
        _ => None,
    }
}

fn ingress_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
        col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
        col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
        col("Ports", "string", "Ports of TLS configurations that open"),
        age_col(),
    ]
}

/// `formatHosts`: at most three hosts, `*` when none, `+ N more...`.
pub(crate) fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, "host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".into();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len() - MAX)
    } else {
        ret
    }
}

fn ingress_cells(ing: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let class = at(ing, "spec.ingressClassName")
        .as_str()
        .unwrap_or("<none>");
    let ports = if arr_at(ing, "spec.tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name_cell(ing),
        s(class),
        s(format_hosts(arr_at(ing, "spec.rules"))),
        s(super::core_v1::lb_ingress_string(arr_at(
            ing,
            "status.loadBalancer.ingress",
        ))),
        s(ports),
        s(obj_age(ing, now)),
    ]
}

fn ingressclass_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        col(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        age_col(),
    ]
}

fn ingressclass_cells(ic: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let params = at(ic, "spec.parameters");
    let parameters = if params.is_null() {
        "<none>".to_string()
    } else {
        let mut p = str_at(params, "kind").to_string();
        if let Some(group) = at(params, "apiGroup").as_str() {
            p = format!("{p}.{group}");
        }
        format!("{p}/{}", str_at(params, "name"))
    };
    vec![
        name_cell(ic),
        s(str_at(ic, "spec.controller")),
        s(parameters),
        s(obj_age(ic, now)),
    ]
}

fn netpol_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Pod-Selector",
            "string",
            "Selects the pods to which this NetworkPolicy object applies.",
        ),
        age_col(),
    ]
}

fn netpol_cells(np: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(np),
        s(format_label_selector(at(np, "spec.podSelector"))),
        s(obj_age(np, now)),
    ]
}

fn slice_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "AddressType",
            "string",
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        col(
            "Ports",
            "string",
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        ),
        col(
            "Endpoints",
            "string",
            "endpoints is a list of unique endpoints in this slice.",
        ),
        age_col(),
    ]
}

/// `formatDiscoveryPorts`: port number, else name, else `*`.
pub(crate) fn discovery_ports(ports: &[Value]) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|p| match opt_int(at(p, "port")) {
            Some(num) => num.to_string(),
            None => at(p, "name").as_str().unwrap_or("*").to_string(),
        })
        .collect();
    list_with_more(&list, ports.len(), 3)
}

/// `formatDiscoveryEndpoints`: every address of every endpoint.
pub(crate) fn discovery_endpoints(endpoints: &[Value]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .flat_map(|e| arr_at(e, "addresses").iter())
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    let total = list.len();
    list_with_more(&list, total, 3)
}

fn slice_cells(es: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(es),
        s(str_at(es, "addressType")),
        s(discovery_ports(arr_at(es, "ports"))),
        s(discovery_endpoints(arr_at(es, "endpoints"))),
        s(obj_age(es, now)),
    ]
}
