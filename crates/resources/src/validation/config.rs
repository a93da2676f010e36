//! ConfigMaps, Secrets, ServiceAccounts, Namespaces, Nodes, LimitRanges,
//! ResourceQuotas and Events.

use serde_json::Value;

use super::errors::FieldError;
use super::meta::*;
use super::names::*;
use super::qty::Qty;
use super::resource::*;
use super::scheduling::taint_effect;
use super::util::*;
use super::workloads::meta_for;

pub(crate) const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// Decodes standard base64 (padding optional); None when malformed.
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\n' | b'\r' => continue,
            _ => return None,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A Secret's data after merging `stringData` (as upstream's conversion does):
/// key, decoded bytes.
fn secret_data(obj: &Value) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(d) = omap(obj, "data") {
        for (k, v) in d {
            out.push((
                k.clone(),
                v.as_str().and_then(b64_decode).unwrap_or_default(),
            ));
        }
    }
    if let Some(d) = omap(obj, "stringData") {
        for (k, v) in d {
            let bytes = v.as_str().unwrap_or("").as_bytes().to_vec();
            match out.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = bytes,
                None => out.push((k.clone(), bytes)),
            }
        }
    }
    out
}

fn immutable_object_rules(errs: &mut Errs, obj: &Value, old: &Value, data: &[(&str, bool)]) {
    if !boolean(old, "immutable") {
        return;
    }
    if !boolean(obj, "immutable") {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for (field, changed) in data {
        if *changed {
            errs.push(FieldError::forbidden(
                *field,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

pub(crate) fn validate_config_map(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    if let Some(o) = old {
        validate_object_meta_update(errs, obj, o);
        immutable_object_rules(
            errs,
            obj,
            o,
            &[
                ("data", !sem_eq(get(obj, "data"), get(o, "data"))),
                (
                    "binaryData",
                    !sem_eq(get(obj, "binaryData"), get(o, "binaryData")),
                ),
            ],
        );
    }
    validate_object_meta(errs, obj, Some(true), name_is_dns_subdomain);
    let mut total = 0usize;
    let binary = omap(obj, "binaryData");
    for (k, v) in omap(obj, "data").into_iter().flatten() {
        let p = key("data", k);
        push_msgs(errs, &p, k, is_config_map_key(k));
        if binary.map(|b| b.contains_key(k)).unwrap_or(false) {
            errs.push(FieldError::invalid(
                &p,
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += v.as_str().map(str::len).unwrap_or(0);
    }
    for (k, v) in binary.into_iter().flatten() {
        push_msgs(errs, &key("binaryData", k), k, is_config_map_key(k));
        total += v
            .as_str()
            .and_then(b64_decode)
            .map(|b| b.len())
            .unwrap_or(0);
    }
    if total > MAX_SECRET_SIZE {
        // Upstream reports this at the root path, which prints as "[]".
        errs.push(FieldError::too_long("[]", MAX_SECRET_SIZE));
    }
}

pub(crate) fn validate_secret(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    if let Some(o) = old {
        validate_object_meta_update(errs, obj, o);
        let (nt, ot) = (s(obj, "type"), s(o, "type"));
        if nt != ot && !nt.is_empty() {
            errs.push(FieldError::invalid("type", nt, FIELD_IMMUTABLE));
        }
        let changed = secret_data(obj) != secret_data(o);
        immutable_object_rules(errs, obj, o, &[("data", changed)]);
    }
    validate_object_meta(errs, obj, Some(true), name_is_dns_subdomain);
    let data = secret_data(obj);
    let mut total = 0;
    for (k, v) in &data {
        push_msgs(errs, &key("data", k), k, is_config_map_key(k));
        total += v.len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| {
        data.iter()
            .find(|(dk, _)| dk == k)
            .map(|(_, v)| v.as_slice())
    };
    let json_key = |errs: &mut Errs, k: &str| match has(k) {
        None => errs.push(FieldError::required(key("data", k), "")),
        Some(bytes) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(bytes) {
                errs.push(FieldError::invalid(
                    key("data", k),
                    "<secret contents redacted>",
                    e.to_string(),
                ));
            }
        }
    };
    match s(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let sa = at(
                obj,
                &[
                    "metadata",
                    "annotations",
                    "kubernetes.io/service-account.name",
                ],
            )
            .and_then(Value::as_str);
            if sa.unwrap_or("").is_empty() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => json_key(errs, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" => json_key(errs, ".dockerconfigjson"),
        "kubernetes.io/basic-auth" if has("username").is_none() && has("password").is_none() => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if has("ssh-privatekey").map(|v| v.is_empty()).unwrap_or(true) => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            if has("tls.crt").is_none() {
                errs.push(FieldError::required("data[tls.crt]", ""));
            }
            if has("tls.key").is_none() {
                errs.push(FieldError::required("data[tls.key]", ""));
            }
        }
        _ => {}
    }
}

pub(crate) fn validate_service_account(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    if let Some(o) = old {
        validate_object_meta_update(errs, obj, o);
    }
    validate_object_meta(errs, obj, Some(true), name_is_dns_subdomain);
}

pub(crate) fn validate_namespace(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_label);
    if old.is_none() {
        for f in arr(at(obj, &["spec"]).unwrap_or(&Value::Null), "finalizers") {
            let f = f.as_str().unwrap_or("");
            push_msgs(errs, "spec.finalizers", f, is_qualified_name(f));
            kube_finalizer_name(errs, f, "spec.finalizers");
        }
    }
}

pub(crate) fn validate_node(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let p = idx("metadata.taints", i);
        validate_label_name(errs, s(t, "key"), &child(&p, "key"));
        let v = s(t, "value");
        let msgs = is_label_value(v);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(child(&p, "value"), v, msgs.join(";")));
        }
        let effect = s(t, "effect");
        if effect.is_empty() {
            errs.push(FieldError::required(child(&p, "effect"), ""));
        } else {
            taint_effect(errs, effect, &child(&p, "effect"));
        }
        if seen.contains(&(s(t, "key"), effect)) {
            let mut e = FieldError::duplicate(&p, t.clone());
            e.detail = "taints must be unique by key and effect pair".into();
            errs.push(e);
            continue;
        }
        seen.push((s(t, "key"), effect));
    }
    let cidrs = arr(spec, "podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        is_valid_cidr(errs, &idx("spec.podCIDRs", i), c.as_str().unwrap_or(""));
    }
    if let Some(o) = old {
        let os = get(o, "spec").unwrap_or(&null);
        let old_cidrs = arr(os, "podCIDRs");
        if !old_cidrs.is_empty() && old_cidrs != cidrs {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let old_pid = s(os, "providerID");
        if !old_pid.is_empty() && old_pid != s(spec, "providerID") {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
}

const LIMIT_TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];

pub(crate) fn validate_limit_range(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let mut types = Vec::new();
    for (i, lim) in arr(spec, "limits").iter().enumerate() {
        let p = idx("spec.limits", i);
        let ty = s(lim, "type");
        let tp = child(&p, "type");
        let before = errs.len();
        push_msgs(errs, &tp, ty, is_qualified_name(ty));
        if errs.len() == before && !ty.contains('/') && !LIMIT_TYPES.contains(&ty) {
            errs.push(FieldError::invalid(
                &tp,
                ty,
                "must be a standard limit type or fully qualified",
            ));
        }
        if types.contains(&ty) {
            errs.push(FieldError::duplicate(&tp, ty));
        }
        types.push(ty);
        let mut parsed: Vec<(&str, String, Qty)> = Vec::new();
        for field in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            if ty == "Pod" && (field == "default" || field == "defaultRequest") {
                if omap(lim, field).map(|m| !m.is_empty()).unwrap_or(false) {
                    errs.push(FieldError::forbidden(
                        child(&p, field),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
                continue;
            }
            for (name, v) in omap(lim, field).into_iter().flatten() {
                let kp = key(&child(&p, field), name);
                validate_limit_range_resource_name(errs, ty, name, &kp);
                if let Some(q) = parse_qty(errs, v, &kp) {
                    parsed.push((field, name.clone(), q));
                }
            }
        }
        if ty == "PersistentVolumeClaim"
            && omap(lim, "min")
                .map(|m| !m.contains_key("storage"))
                .unwrap_or(true)
            && omap(lim, "max")
                .map(|m| !m.contains_key("storage"))
                .unwrap_or(true)
        {
            errs.push(FieldError::required(
                child(&p, "limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let find = |f: &str, n: &str| {
            parsed
                .iter()
                .find(|(pf, pn, _)| *pf == f && pn == n)
                .map(|(_, _, q)| q)
        };
        let mut names: Vec<&String> = parsed.iter().map(|(_, n, _)| n).collect();
        names.dedup();
        for n in names {
            let (min, max, def, defreq, ratio) = (
                find("min", n),
                find("max", n),
                find("default", n),
                find("defaultRequest", n),
                find("maxLimitRequestRatio", n),
            );
            let gt = |a: Option<&Qty>, b: Option<&Qty>| matches!((a, b), (Some(a), Some(b)) if a.cmp(b).is_gt());
            let c = |q: Option<&Qty>| q.map(|q| q.canonical()).unwrap_or_default();
            let mut push = |field: &str, shown: Option<&Qty>, msg: String| {
                errs.push(FieldError::invalid_repr(
                    key(&child(&p, field), n),
                    c(shown),
                    msg,
                ));
            };
            if gt(min, max) {
                push(
                    "min",
                    min,
                    format!("min value {} is greater than max value {}", c(min), c(max)),
                );
            }
            if gt(min, defreq) {
                push(
                    "defaultRequest",
                    defreq,
                    format!(
                        "min value {} is greater than default request value {}",
                        c(min),
                        c(defreq)
                    ),
                );
            }
            if gt(defreq, max) {
                push(
                    "defaultRequest",
                    defreq,
                    format!(
                        "default request value {} is greater than max value {}",
                        c(defreq),
                        c(max)
                    ),
                );
            }
            if gt(defreq, def) {
                push(
                    "defaultRequest",
                    defreq,
                    format!(
                        "default request value {} is greater than default limit value {}",
                        c(defreq),
                        c(def)
                    ),
                );
            }
            if gt(min, def) {
                push(
                    "default",
                    min,
                    format!(
                        "min value {} is greater than default value {}",
                        c(min),
                        c(def)
                    ),
                );
            }
            if gt(def, max) {
                push(
                    "default",
                    max,
                    format!(
                        "default value {} is greater than max value {}",
                        c(def),
                        c(max)
                    ),
                );
            }
            if let Some(r) = ratio {
                if r.is_below_one() {
                    push(
                        "maxLimitRequestRatio",
                        ratio,
                        format!("ratio {} is less than 1", c(ratio)),
                    );
                }
            }
        }
    }
}

const QUOTA_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

pub(crate) fn validate_resource_quota(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    for (name, v) in omap(spec, "hard").into_iter().flatten() {
        let p = key("spec.hard", name);
        validate_quota_resource_name(errs, name, &p);
        validate_quantity_value(errs, name, v, &p);
    }
    let scopes = arr(spec, "scopes");
    let names: Vec<&str> = scopes.iter().filter_map(Value::as_str).collect();
    for sc in &names {
        if !QUOTA_SCOPES.contains(sc) {
            errs.push(FieldError::invalid(
                "spec.scopes",
                scopes.to_vec(),
                "unsupported scope",
            ));
        }
    }
    for (a, b) in [
        ("BestEffort", "NotBestEffort"),
        ("Terminating", "NotTerminating"),
    ] {
        if names.contains(&a) && names.contains(&b) {
            errs.push(FieldError::invalid(
                "spec.scopes",
                scopes.to_vec(),
                "conflicting scopes",
            ));
        }
    }
    if let Some(o) = old {
        let mut a: Vec<&str> = names.clone();
        let mut b: Vec<&str> = at(o, &["spec", "scopes"])
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        if a != b {
            errs.push(FieldError::invalid(
                "spec.scopes",
                scopes.to_vec(),
                FIELD_IMMUTABLE,
            ));
        }
    }
}

/// Events: legacy (core/v1) rules, and the stricter events.k8s.io ones.
pub(crate) fn validate_event(
    errs: &mut Errs,
    obj: &Value,
    old: Option<&Value>,
    events_group: bool,
) {
    if let Some(o) = old {
        validate_object_meta_update(errs, obj, o);
    }
    let ns = at(obj, &["metadata", "namespace"])
        .and_then(Value::as_str)
        .unwrap_or("");
    let (involved, controller_field, message_field) = if events_group {
        ("regarding", "reportingController", "note")
    } else {
        ("involvedObject", "reportingComponent", "message")
    };
    let involved_ns = at(obj, &[involved, "namespace"])
        .and_then(Value::as_str)
        .unwrap_or("");
    let event_time = get(obj, "eventTime").is_some();
    let ns_path = format!("{involved}.namespace");
    if !event_time && !events_group {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(FieldError::invalid(
                    &ns_path,
                    involved_ns,
                    "does not match event.namespace",
                ));
            }
        } else if ns != involved_ns {
            errs.push(FieldError::invalid(
                &ns_path,
                involved_ns,
                "does not match event.namespace",
            ));
        }
    } else {
        if events_group && !event_time {
            errs.push(FieldError::required("eventTime", ""));
        }
        if involved_ns.is_empty() && ns != "kube-system" && !events_group {
            errs.push(FieldError::invalid(
                &ns_path,
                involved_ns,
                "does not match event.namespace",
            ));
        }
        let rc = s(obj, controller_field);
        if rc.is_empty() {
            errs.push(FieldError::required(controller_field, ""));
        }
        qualified_name(errs, controller_field, rc);
        for (f, limit) in [
            ("reportingInstance", 128usize),
            ("action", 128),
            ("reason", 128),
        ] {
            let v = s(obj, f);
            if v.is_empty() {
                errs.push(FieldError::required(f, ""));
            }
            if v.len() > limit {
                errs.push(FieldError::invalid(
                    f,
                    "",
                    format!("can have at most {limit} characters"),
                ));
            }
        }
        if s(obj, message_field).len() > 1024 {
            errs.push(FieldError::invalid(
                message_field,
                "",
                "can have at most 1024 characters",
            ));
        }
    }
    push_msgs(errs, "namespace", ns, is_dns1123_subdomain(ns));
}
