//! RBAC, PodDisruptionBudgets, HorizontalPodAutoscalers, Leases and
//! PriorityClasses.

use serde_json::Value;

use super::errors::{go_quote, go_repr, FieldError};
use super::meta::*;
use super::names::*;
use super::podspec::preemption_policy;
use super::util::*;
use super::workloads::meta_for;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn policy_rule(errs: &mut Errs, rule: &Value, namespaced: bool, path: &str) {
    if arr(rule, "verbs").is_empty() {
        errs.push(FieldError::required(
            child(path, "verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = arr(rule, "nonResourceURLs");
    if !urls.is_empty() {
        if namespaced {
            errs.push(FieldError::invalid(
                child(path, "nonResourceURLs"),
                urls.to_vec(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !arr(rule, "apiGroups").is_empty()
            || !arr(rule, "resources").is_empty()
            || !arr(rule, "resourceNames").is_empty()
        {
            errs.push(FieldError::invalid(
                child(path, "nonResourceURLs"),
                urls.to_vec(),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if arr(rule, "apiGroups").is_empty() {
        errs.push(FieldError::required(
            child(path, "apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if arr(rule, "resources").is_empty() {
        errs.push(FieldError::required(
            child(path, "resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

/// Role and ClusterRole.
pub(crate) fn validate_role(errs: &mut Errs, obj: &Value, old: Option<&Value>, namespaced: bool) {
    if old.is_some() {
        validate_object_meta(errs, obj, Some(namespaced), name_is_path_segment);
    }
    meta_for(errs, obj, old, namespaced, name_is_path_segment);
    for (i, rule) in arr(obj, "rules").iter().enumerate() {
        policy_rule(errs, rule, namespaced, &idx("rules", i));
    }
    if let Some(ar) = get(obj, "aggregationRule") {
        let sels = arr(ar, "clusterRoleSelectors");
        if sels.is_empty() {
            errs.push(FieldError::required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, sel) in sels.iter().enumerate() {
            validate_label_selector(
                errs,
                Some(sel),
                &idx("aggregationRule.clusterRoleSelectors", i),
            );
        }
    }
}

fn subject(errs: &mut Errs, sub: &Value, namespaced: bool, path: &str) {
    let name = s(sub, "name");
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    }
    let group = s(sub, "apiGroup");
    match s(sub, "kind") {
        "ServiceAccount" => {
            if !name.is_empty() {
                push_msgs(
                    errs,
                    &child(path, "name"),
                    name,
                    name_is_dns_subdomain(name, false),
                );
            }
            if !group.is_empty() {
                errs.push(FieldError::not_supported(
                    child(path, "apiGroup"),
                    group,
                    &[""],
                ));
            }
            if !namespaced && s(sub, "namespace").is_empty() {
                errs.push(FieldError::required(child(path, "namespace"), ""));
            }
        }
        "User" | "Group" => {
            if group != RBAC_GROUP {
                errs.push(FieldError::not_supported(
                    child(path, "apiGroup"),
                    group,
                    &[RBAC_GROUP],
                ));
            }
        }
        k => errs.push(FieldError::not_supported(
            child(path, "kind"),
            k,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

fn role_ref_repr(r: Option<&Value>) -> String {
    let null = Value::Null;
    let r = r.unwrap_or(&null);
    format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        go_quote(s(r, "apiGroup")),
        go_quote(s(r, "kind")),
        go_quote(s(r, "name"))
    )
}

/// RoleBinding and ClusterRoleBinding.
pub(crate) fn validate_role_binding(
    errs: &mut Errs,
    obj: &Value,
    old: Option<&Value>,
    namespaced: bool,
) {
    if old.is_some() {
        validate_object_meta(errs, obj, Some(namespaced), name_is_path_segment);
    }
    meta_for(errs, obj, old, namespaced, name_is_path_segment);
    let null = Value::Null;
    let rr = get(obj, "roleRef").unwrap_or(&null);
    let group = s(rr, "apiGroup");
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            group,
            &[RBAC_GROUP],
        ));
    }
    let kind = s(rr, "kind");
    if namespaced {
        if kind != "Role" && kind != "ClusterRole" {
            errs.push(FieldError::not_supported(
                "roleRef.kind",
                kind,
                &["Role", "ClusterRole"],
            ));
        }
    } else if kind != "ClusterRole" {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            kind,
            &["ClusterRole"],
        ));
    }
    let name = s(rr, "name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        push_msgs(errs, "roleRef.name", name, is_valid_path_segment_name(name));
    }
    for (i, sub) in arr(obj, "subjects").iter().enumerate() {
        subject(errs, sub, namespaced, &idx("subjects", i));
    }
    if let Some(o) = old {
        let orr = get(o, "roleRef");
        let same = ["apiGroup", "kind", "name"]
            .iter()
            .all(|f| s(rr, f) == orr.map(|r| s(r, f)).unwrap_or(""));
        if !same {
            errs.push(FieldError::invalid_repr(
                "roleRef",
                role_ref_repr(get(obj, "roleRef")),
                "cannot change roleRef",
            ));
        }
    }
}

fn int_or_percent(errs: &mut Errs, v: Option<&Value>, path: &str) {
    match v {
        Some(Value::String(p)) => {
            let msgs = is_valid_percent(p);
            let ok = msgs.is_empty();
            for m in msgs {
                errs.push(FieldError::invalid_repr(path, p.clone(), m));
            }
            if ok
                && p.trim_end_matches('%')
                    .parse::<i64>()
                    .map(|n| n > 100)
                    .unwrap_or(false)
            {
                errs.push(FieldError::invalid_repr(
                    path,
                    p.clone(),
                    "must not be greater than 100%",
                ));
            }
        }
        Some(Value::Number(n)) => nonneg_value(errs, n.as_i64().unwrap_or(0), path),
        _ => {}
    }
}

pub(crate) fn validate_pdb(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let (min, max) = (get(spec, "minAvailable"), get(spec, "maxUnavailable"));
    if min.is_some() && max.is_some() {
        let repr = format!(
            "policy.PodDisruptionBudgetSpec{{MinAvailable:{}, Selector:{}, MaxUnavailable:{}, UnhealthyPodEvictionPolicy:{}}}",
            go_ptr(min, "*intstr.IntOrString"),
            go_ptr(get(spec, "selector"), "*v1.LabelSelector"),
            go_ptr(max, "*intstr.IntOrString"),
            go_ptr(get(spec, "unhealthyPodEvictionPolicy"), "*policy.UnhealthyPodEvictionPolicyType"),
        );
        errs.push(FieldError::invalid(
            "spec",
            go_repr(repr),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    int_or_percent(errs, min, "spec.minAvailable");
    int_or_percent(errs, max, "spec.maxUnavailable");
    validate_label_selector(errs, get(spec, "selector"), "spec.selector");
    if let Some(p) = opt_s(spec, "unhealthyPodEvictionPolicy") {
        const P: &[&str] = &["AlwaysAllow", "IfHealthyBudget"];
        if !P.contains(&p) {
            errs.push(FieldError::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                P,
            ));
        }
    }
}

fn cross_version_ref(errs: &mut Errs, r: &Value, path: &str) {
    for f in ["kind", "name"] {
        let v = s(r, f);
        if v.is_empty() {
            errs.push(FieldError::required(child(path, f), ""));
        } else {
            push_msgs(errs, &child(path, f), v, is_valid_path_segment_name(v));
        }
    }
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

pub(crate) fn validate_hpa(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let min = int(spec, "minReplicas");
    if let Some(m) = min.filter(|m| *m < 1) {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            m,
            "must be greater than or equal to 1",
        ));
    }
    let max = int(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    cross_version_ref(
        errs,
        get(spec, "scaleTargetRef").unwrap_or(&null),
        "spec.scaleTargetRef",
    );
    for (i, m) in arr(spec, "metrics").iter().enumerate() {
        let p = idx("spec.metrics", i);
        let t = s(m, "type");
        if t.is_empty() {
            errs.push(FieldError::required(
                child(&p, "type"),
                "must specify a metric source type",
            ));
            continue;
        }
        if !METRIC_TYPES.contains(&t) {
            errs.push(FieldError::not_supported(
                child(&p, "type"),
                t,
                METRIC_TYPES,
            ));
            continue;
        }
        let field = match t {
            "ContainerResource" => "containerResource",
            "External" => "external",
            "Object" => "object",
            "Pods" => "pods",
            _ => "resource",
        };
        if get(m, field).is_none() {
            errs.push(FieldError::required(
                child(&p, field),
                format!("must populate information for the given metric source (type {t})"),
            ));
        }
    }
}

pub(crate) fn validate_lease(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    if let Some(d) = int(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = int(spec, "leaseTransitions").filter(|t| *t < 0) {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            t,
            "must be greater than or equal to 0",
        ));
    }
}

const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2000001000),
    ("system-cluster-critical", 2000000000),
];

pub(crate) fn validate_priority_class(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_subdomain);
    let name = at(obj, &["metadata", "name"])
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = int(obj, "value").unwrap_or(0);
    if old.is_none() {
        if name.starts_with("system-") {
            let known = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| *n == name);
            let err = match known {
                None => Some(format!("{name} is not a known system priority class")),
                Some((n, v)) if *v != value => {
                    Some(format!("value of {n} PriorityClass must be {v}"))
                }
                Some((n, _)) if boolean(obj, "globalDefault") => {
                    Some(format!("globalDefault of {n} PriorityClass must be false"))
                }
                _ => None,
            };
            if let Some(e) = err {
                errs.push(FieldError::forbidden(
                    "metadata.name",
                    format!("priority class names with 'system-' prefix are reserved for system use only. error: {e}"),
                ));
            }
        } else if value > 1_000_000_000 {
            errs.push(FieldError::forbidden(
                "value",
                "maximum allowed value of a user defined priority is 1000000000",
            ));
        }
    }
    if let Some(pp) = opt_s(obj, "preemptionPolicy") {
        preemption_policy(errs, pp, "preemptionPolicy");
    }
    if let Some(o) = old {
        if int(o, "value").unwrap_or(0) != value {
            errs.push(FieldError::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        immutable(
            errs,
            get(obj, "preemptionPolicy"),
            get(o, "preemptionPolicy"),
            "preemptionPolicy",
        );
    }
}

/// APIService: upstream names it by what it serves, `VERSION.GROUP` (`v1.`
/// for the core group), so only that name is allowed.
pub(crate) fn validate_api_service(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, |_, _| Vec::new());
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let (group, version) = (s(spec, "group"), s(spec, "version"));
    if version.is_empty() {
        errs.push(FieldError::required("spec.version", ""));
    }
    let name = s(get(obj, "metadata").unwrap_or(&null), "name");
    let want = format!("{version}.{group}");
    if !name.is_empty() && name != want {
        errs.push(FieldError::invalid("metadata.name", name, &format!("must be `spec.version+\".\"+spec.group`: {want:?}")));
    }
    for (field, min, max) in [("groupPriorityMinimum", 1, 20000), ("versionPriority", 1, 1000)] {
        match int(spec, field) {
            Some(v) if (min..=max).contains(&v) => {}
            Some(v) => errs.push(FieldError::invalid(format!("spec.{field}"), v, &format!("must be positive and less than {}", max + 1))),
            None => errs.push(FieldError::required(format!("spec.{field}"), "")),
        }
    }
}
