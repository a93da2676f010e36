//! Scheduling constraints: node selectors and affinity, pod (anti-)affinity,
//! tolerations and taint effects.

use serde_json::Value;

use super::errors::FieldError;
use super::meta::{validate_label_name, validate_label_selector};
use super::names::*;
use super::util::*;

/// Node selector requirements (affinity and PV node affinity).
pub(crate) fn node_selector_requirement(
    errs: &mut Errs,
    rq: &Value,
    allow_bad_values: bool,
    path: &str,
) {
    let values = arr(rq, "values");
    match s(rq, "operator") {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(FieldError::required(
                    child(path, "values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(FieldError::forbidden(
                    child(path, "values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                errs.push(FieldError::required(
                    child(path, "values"),
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                ));
            }
        }
        op => errs.push(FieldError::invalid(
            child(path, "operator"),
            op,
            "not a valid selector operator",
        )),
    }
    validate_label_name(errs, s(rq, "key"), &child(path, "key"));
    if !allow_bad_values {
        for (i, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            push_msgs(errs, &idx(&child(path, "values"), i), v, is_label_value(v));
        }
    }
}

pub(crate) fn node_selector_term(
    errs: &mut Errs,
    term: &Value,
    allow_bad_values: bool,
    path: &str,
) {
    for (i, rq) in arr(term, "matchExpressions").iter().enumerate() {
        node_selector_requirement(
            errs,
            rq,
            allow_bad_values,
            &idx(&child(path, "matchExpressions"), i),
        );
    }
    for (i, rq) in arr(term, "matchFields").iter().enumerate() {
        let p = idx(&child(path, "matchFields"), i);
        match s(rq, "operator") {
            "In" | "NotIn" => {
                if arr(rq, "values").len() != 1 {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                child(&p, "operator"),
                op,
                "not a valid selector operator",
            )),
        }
        if s(rq, "key") != "metadata.name" {
            errs.push(FieldError::invalid(
                child(&p, "key"),
                s(rq, "key"),
                "not a valid field selector key",
            ));
        } else {
            for (j, v) in arr(rq, "values").iter().enumerate() {
                let v = v.as_str().unwrap_or("");
                push_msgs(
                    errs,
                    &idx(&child(&p, "values"), j),
                    v,
                    name_is_dns_subdomain(v, false),
                );
            }
        }
    }
}

pub(crate) fn node_selector(errs: &mut Errs, ns: &Value, path: &str) {
    let tp = child(path, "nodeSelectorTerms");
    let terms = arr(ns, "nodeSelectorTerms");
    if terms.is_empty() {
        errs.push(FieldError::required(
            tp,
            "must have at least one node selector term",
        ));
        return;
    }
    for (i, t) in terms.iter().enumerate() {
        node_selector_term(errs, t, false, &idx(&tp, i));
    }
}

fn weight(errs: &mut Errs, v: &Value, path: &str) {
    let w = int(v, "weight").unwrap_or(0);
    if w <= 0 || w > 100 {
        errs.push(FieldError::invalid(
            child(path, "weight"),
            w,
            "must be in the range 1-100",
        ));
    }
}

fn pod_affinity_term(errs: &mut Errs, term: &Value, path: &str) {
    validate_label_selector(
        errs,
        get(term, "labelSelector"),
        &child(path, "labelSelector"),
    );
    validate_label_selector(
        errs,
        get(term, "namespaceSelector"),
        &child(path, "namespaceSelector"),
    );
    for ns in arr(term, "namespaces") {
        let ns = ns.as_str().unwrap_or("");
        push_msgs(
            errs,
            &child(path, "namespace"),
            ns,
            name_is_dns_label(ns, false),
        );
    }
    let tk = s(term, "topologyKey");
    if tk.is_empty() {
        errs.push(FieldError::required(
            child(path, "topologyKey"),
            "can not be empty",
        ));
    }
    validate_label_name(errs, tk, &child(path, "topologyKey"));
}

pub(crate) fn validate_affinity(errs: &mut Errs, aff: &Value, path: &str) {
    if let Some(na) = get(aff, "nodeAffinity") {
        let p = child(path, "nodeAffinity");
        if let Some(req) = get(na, "requiredDuringSchedulingIgnoredDuringExecution") {
            node_selector(
                errs,
                req,
                &child(&p, "requiredDuringSchedulingIgnoredDuringExecution"),
            );
        }
        let pp = child(&p, "preferredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in arr(na, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            let tp = idx(&pp, i);
            weight(errs, t, &tp);
            if let Some(pref) = get(t, "preference") {
                node_selector_term(errs, pref, true, &child(&tp, "preference"));
            }
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = get(aff, kind) else { continue };
        let p = child(path, kind);
        let rp = child(&p, "requiredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in arr(pa, "requiredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            pod_affinity_term(errs, t, &idx(&rp, i));
        }
        let wp = child(&p, "preferredDuringSchedulingIgnoredDuringExecution");
        for (i, t) in arr(pa, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            let tp = idx(&wp, i);
            weight(errs, t, &tp);
            let null = Value::Null;
            pod_affinity_term(
                errs,
                get(t, "podAffinityTerm").unwrap_or(&null),
                &child(&tp, "podAffinityTerm"),
            );
        }
    }
}

/// Tolerations (also used for only-additions checks on pod update).
pub(crate) fn validate_tolerations(errs: &mut Errs, tols: &[Value], path: &str) {
    for (i, t) in tols.iter().enumerate() {
        let p = idx(path, i);
        let k = s(t, "key");
        let op = s(t, "operator");
        let effect = s(t, "effect");
        if !k.is_empty() {
            validate_label_name(errs, k, &child(&p, "key"));
        }
        if k.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                child(&p, "operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                child(&p, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = s(t, "value");
        match op {
            "Equal" | "" => {
                let msgs = is_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&p, "operator"),
                        value,
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&p, "operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                child(&p, "operator"),
                op,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            taint_effect(errs, effect, &child(&p, "effect"));
        }
    }
}

pub(crate) fn taint_effect(errs: &mut Errs, effect: &str, path: &str) {
    const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
    if !EFFECTS.contains(&effect) {
        errs.push(FieldError::not_supported(path, effect, EFFECTS));
    }
}
