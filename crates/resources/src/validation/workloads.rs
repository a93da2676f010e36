//! Controllers with pod templates: ReplicationController, ReplicaSet,
//! Deployment, StatefulSet, DaemonSet; and ControllerRevision.

use serde_json::Value;

use super::errors::{go_quote, FieldError};
use super::meta::*;
use super::names::*;
use super::podspec::validate_pod_template;
use super::util::*;

fn spec_of(obj: &Value) -> &Value {
    static NULL: Value = Value::Null;
    get(obj, "spec").unwrap_or(&NULL)
}

/// Meta on create, meta-update on update.
pub(crate) fn meta_for(
    errs: &mut Errs,
    obj: &Value,
    old: Option<&Value>,
    namespaced: bool,
    name_fn: NameFn,
) {
    match old {
        Some(o) => validate_object_meta_update(errs, obj, o),
        None => validate_object_meta(errs, obj, Some(namespaced), name_fn),
    }
}

/// The template of a long-running controller: it must match the selector,
/// be a valid pod template, restart Always and carry no active deadline.
fn controller_template(
    errs: &mut Errs,
    spec: &Value,
    selector_matches: Option<bool>,
    owner: &str,
    validate_spec: bool,
) {
    let tpl = get(spec, "template");
    let path = "spec.template";
    let empty = Value::Object(Default::default());
    // Only a ReplicationController's template is optional (a pointer);
    // elsewhere an absent template is an empty one.
    let t = match tpl {
        Some(t) => t,
        None if owner == "ReplicationController" => {
            errs.push(FieldError::required(path, ""));
            return;
        }
        None => &empty,
    };
    if selector_matches == Some(false) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            map_value(at(t, &["metadata", "labels"])),
            "`selector` does not match template `labels`",
        ));
    }
    if validate_spec {
        validate_pod_template(errs, Some(t), path);
    } else {
        validate_template_meta(errs, get(t, "metadata"), path);
    }
    if let Some(rp) = at(t, &["spec", "restartPolicy"]).and_then(Value::as_str) {
        if rp != "Always" {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                rp,
                &["Always"],
            ));
        }
    }
    if at(t, &["spec", "activeDeadlineSeconds"]).is_some() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
}

/// `spec.selector` (a LabelSelector) for apps workloads; returns whether it
/// matches the template labels (None when absent or unusable).
fn apps_selector(errs: &mut Errs, spec: &Value, what: &str, invalid_detail: &str) -> Selected {
    let Some(sel) = get(spec, "selector") else {
        errs.push(FieldError::required("spec.selector", ""));
        // A missing selector selects nothing, so it never matches.
        return Selected::Matches(false);
    };
    validate_label_selector(errs, Some(sel), "spec.selector");
    if selector_is_empty(sel) {
        errs.push(FieldError::invalid_repr(
            "spec.selector",
            label_selector_repr(Some(sel)),
            format!("empty selector is invalid for {what}"),
        ));
        return Selected::Everything;
    }
    match selector_matches(sel, at(spec, &["template", "metadata", "labels"])) {
        Some(m) => Selected::Matches(m),
        None => {
            errs.push(FieldError::invalid_repr(
                "spec.selector",
                label_selector_repr(Some(sel)),
                invalid_detail,
            ));
            Selected::Unusable
        }
    }
}

/// What a workload's selector says about its template.
#[derive(Clone, Copy, PartialEq)]
enum Selected {
    Matches(bool),
    /// An empty selector: no label check.
    Everything,
    /// The selector cannot be converted: upstream then skips the template.
    Unusable,
}

impl Selected {
    fn matches(self) -> Option<bool> {
        match self {
            Selected::Matches(m) => Some(m),
            _ => None,
        }
    }
}

fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => {
            let t = s.strip_suffix('%').unwrap_or(s);
            t.parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// An int-or-percent that must be non-negative and, as a percent, ≤ 100%.
fn positive_int_or_percent(errs: &mut Errs, v: Option<&Value>, path: &str, cap_100: bool) {
    let Some(v) = v else { return };
    match v {
        Value::String(s) => {
            let msgs = is_valid_percent(s);
            let ok = msgs.is_empty();
            for m in msgs {
                errs.push(FieldError::invalid_repr(path, s.clone(), m));
            }
            if ok && cap_100 && int_or_percent_value(Some(v)) > 100 {
                errs.push(FieldError::invalid_repr(
                    path,
                    s.clone(),
                    "must not be greater than 100%",
                ));
            }
        }
        Value::Number(n) => nonneg_value(errs, n.as_i64().unwrap_or(0), path),
        other => errs.push(FieldError::invalid(
            path,
            other.clone(),
            "must be an integer or percentage (e.g '5%%')",
        )),
    }
}

fn deployment_strategy(errs: &mut Errs, spec: &Value) {
    let Some(st) = get(spec, "strategy") else {
        return;
    };
    let path = "spec.strategy";
    match s(st, "type") {
        "Recreate" => {
            if get(st, "rollingUpdate").is_some() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let Some(ru) = get(st, "rollingUpdate") else {
                return;
            };
            let p = "spec.strategy.rollingUpdate";
            let mu = get(ru, "maxUnavailable");
            let ms = get(ru, "maxSurge");
            positive_int_or_percent(errs, mu, &child(p, "maxUnavailable"), false);
            positive_int_or_percent(errs, ms, &child(p, "maxSurge"), false);
            if mu.is_some()
                && ms.is_some()
                && int_or_percent_value(mu) == 0
                && int_or_percent_value(ms) == 0
            {
                errs.push(FieldError::invalid_repr(
                    child(p, "maxUnavailable"),
                    int_or_string_repr(mu.unwrap_or(&Value::Null)),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if let Some(Value::String(m)) = mu {
                if is_valid_percent(m).is_empty() && int_or_percent_value(mu) > 100 {
                    errs.push(FieldError::invalid_repr(
                        child(p, "maxUnavailable"),
                        m.clone(),
                        "must not be greater than 100%",
                    ));
                }
            }
        }
        t => {
            let repr = format!(
                "apps.DeploymentStrategy{{Type:{}, RollingUpdate:{}}}",
                go_quote(t),
                go_ptr(get(st, "rollingUpdate"), "*apps.RollingUpdateDeployment")
            );
            errs.push(FieldError::not_supported(
                path,
                super::errors::go_repr(repr),
                &["Recreate", "RollingUpdate"],
            ));
        }
    }
}

pub(crate) fn validate_deployment(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let spec = spec_of(obj);
    nonneg(errs, spec, "replicas", "spec");
    let sel = apps_selector(errs, spec, "deployment", "invalid label selector");
    if sel != Selected::Unusable {
        controller_template(errs, spec, sel.matches(), "ReplicaSet", true);
    }
    deployment_strategy(errs, spec);
    nonneg(errs, spec, "minReadySeconds", "spec");
    nonneg(errs, spec, "revisionHistoryLimit", "spec");
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        nonneg_value(errs, pds, "spec.progressDeadlineSeconds");
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(o) = old {
        selector_immutable(
            errs,
            get(spec, "selector"),
            get(spec_of(o), "selector"),
            "spec.selector",
        );
    }
}

pub(crate) fn validate_replica_set(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let spec = spec_of(obj);
    nonneg(errs, spec, "replicas", "spec");
    nonneg(errs, spec, "minReadySeconds", "spec");
    let sel = apps_selector(errs, spec, "deployment", "invalid label selector");
    if sel != Selected::Unusable {
        controller_template(errs, spec, sel.matches(), "ReplicaSet", true);
    }
    if let Some(o) = old {
        selector_immutable(
            errs,
            get(spec, "selector"),
            get(spec_of(o), "selector"),
            "spec.selector",
        );
    }
}

pub(crate) fn validate_replication_controller(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let spec = spec_of(obj);
    nonneg(errs, spec, "minReadySeconds", "spec");
    let selector = get(spec, "selector");
    let sel_map = str_map(selector);
    if sel_map.is_empty() {
        errs.push(FieldError::required("spec.selector", ""));
    }
    nonneg(errs, spec, "replicas", "spec");
    let matches = if sel_map.is_empty() {
        None
    } else {
        let labels = str_map(at(spec, &["template", "metadata", "labels"]));
        Some(sel_map.iter().all(|kv| labels.contains(kv)))
    };
    controller_template(errs, spec, matches, "ReplicationController", true);
}

pub(crate) fn validate_daemon_set(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let spec = spec_of(obj);
    let sel = get(spec, "selector");
    validate_label_selector(errs, sel, "spec.selector");
    // A missing selector selects nothing, so it never matches the template.
    let matches = match sel {
        Some(sel) => selector_matches(sel, at(spec, &["template", "metadata", "labels"])),
        None => Some(false),
    };
    if let Some(sel) = sel {
        if selector_is_empty(sel) {
            errs.push(FieldError::invalid_repr(
                "spec.selector",
                label_selector_repr(Some(sel)),
                "empty selector is invalid for daemonset",
            ));
        }
    }
    controller_template(errs, spec, matches, "DaemonSet", true);
    nonneg(errs, spec, "minReadySeconds", "spec");
    nonneg(errs, spec, "templateGeneration", "spec");
    if let Some(us) = get(spec, "updateStrategy") {
        let p = "spec.updateStrategy";
        match s(us, "type") {
            "OnDelete" => {}
            "RollingUpdate" => {
                if let Some(ru) = get(us, "rollingUpdate") {
                    let rp = "spec.updateStrategy.rollingUpdate";
                    let mu = get(ru, "maxUnavailable");
                    let ms = get(ru, "maxSurge");
                    positive_int_or_percent(errs, mu, &child(rp, "maxUnavailable"), true);
                    positive_int_or_percent(errs, ms, &child(rp, "maxSurge"), true);
                    let has_u = int_or_percent_value(mu) != 0;
                    let has_s = int_or_percent_value(ms) != 0;
                    if has_u && has_s {
                        errs.push(FieldError::invalid_repr(
                            child(rp, "maxSurge"),
                            int_or_string_repr(ms.unwrap_or(&Value::Null)),
                            "may not be set when maxUnavailable is non-zero",
                        ));
                    } else if !has_u && !has_s {
                        errs.push(FieldError::required(child(rp, "maxUnavailable"), "cannot be 0 when maxSurge is 0"));
                    }
                }
            }
            t => errs.push(FieldError::not_supported(
                p,
                super::errors::go_repr(format!(
                    "apps.DaemonSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}}",
                    go_quote(t)
                )),
                &["RollingUpdate", "OnDelete"],
            )),
        }
    }
    nonneg(errs, spec, "revisionHistoryLimit", "spec");
    if let Some(o) = old {
        selector_immutable(errs, sel, get(spec_of(o), "selector"), "spec.selector");
    }
}

pub(crate) fn validate_stateful_set(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_label);
    let spec = spec_of(obj);
    if let Some(pmp) = opt_s(spec, "podManagementPolicy") {
        if pmp != "OrderedReady" && pmp != "Parallel" {
            errs.push(FieldError::invalid(
                "spec.podManagementPolicy",
                pmp,
                "must be 'OrderedReady' or 'Parallel'",
            ));
        }
    }
    if let Some(us) = get(spec, "updateStrategy") {
        let ru = get(us, "rollingUpdate");
        match s(us, "type") {
            "OnDelete" => {
                if let Some(ru) = ru {
                    errs.push(FieldError::invalid(
                        "spec.updateStrategy.rollingUpdate",
                        ru.clone(),
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            "RollingUpdate" => {
                if let Some(ru) = ru {
                    nonneg(errs, ru, "partition", "spec.updateStrategy.rollingUpdate");
                    let mp = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                    if let Some(mu) = get(ru, "maxUnavailable") {
                        positive_int_or_percent(errs, Some(mu), mp, true);
                        if int_or_percent_value(Some(mu)) == 0 {
                            errs.push(FieldError::invalid_repr(mp, int_or_string_repr(mu), "cannot be 0"));
                        }
                    }
                }
            }
            t => errs.push(FieldError::invalid_repr(
                "spec.updateStrategy",
                format!(
                    "apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}",
                    go_quote(t)
                ),
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
    }
    if let Some(pol) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        for f in ["whenDeleted", "whenScaled"] {
            if let Some(v) = opt_s(pol, f) {
                if v != "Retain" && v != "Delete" {
                    errs.push(FieldError::not_supported(
                        format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                        v,
                        &["Retain", "Delete"],
                    ));
                }
            }
        }
    }
    nonneg(errs, spec, "replicas", "spec");
    nonneg(errs, spec, "minReadySeconds", "spec");
    if let Some(ord) = get(spec, "ordinals") {
        nonneg(errs, ord, "start", "spec.ordinals");
    }
    let sel = apps_selector(errs, spec, "statefulset", "");
    if sel != Selected::Unusable {
        // Upstream does not validate a StatefulSet's pod spec, only the
        // template's labels and annotations.
        controller_template(errs, spec, sel.matches(), "StatefulSet", false);
    }
    if let Some(o) = old {
        let mut a = spec.clone();
        let b = spec_of(o);
        if let Some(m) = a.as_object_mut() {
            for f in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ] {
                match b.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
        }
        if !sem_eq(Some(&a), Some(b)) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

pub(crate) fn validate_controller_revision(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    if get(obj, "data").is_none() {
        errs.push(FieldError::required("data", "data is mandatory"));
    }
    nonneg(errs, obj, "revision", "");
    if let Some(o) = old {
        immutable(errs, get(obj, "data"), get(o, "data"), "data");
    }
}

/// Replica counts in a workload's status.
pub(crate) fn validate_replica_status(errs: &mut Errs, obj: &Value, fields: &[&str]) {
    let null = Value::Null;
    let st = get(obj, "status").unwrap_or(&null);
    for f in fields {
        nonneg(errs, st, f, "status");
    }
    let replicas = int(st, "replicas").unwrap_or(0);
    for f in [
        "fullyLabeledReplicas",
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
    ] {
        if !fields.contains(&f) {
            continue;
        }
        if let Some(n) = int(st, f).filter(|n| *n > replicas) {
            errs.push(FieldError::invalid(
                child("status", f),
                n,
                "cannot be greater than status.replicas",
            ));
        }
    }
}
