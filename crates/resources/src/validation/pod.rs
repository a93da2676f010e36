//! Pods: create, the narrow set of mutable fields on update, and status
//! updates; PodTemplate objects.

use serde_json::Value;

use super::container::image_whitespace;
use super::errors::FieldError;
use super::meta::{validate_object_meta, validate_object_meta_update};
use super::names::*;
use super::podspec::{validate_pod_spec, validate_pod_template, PodOpts};
use super::scheduling::validate_tolerations;
use super::util::*;

const UPDATABLE_POD_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// The message of the catch-all Forbidden error on `spec` (upstream appends a
/// diff after a newline; we stop at the sentence).
pub(crate) fn pod_update_forbidden_message() -> String {
    format!(
        "pod updates may not change fields other than {}",
        UPDATABLE_POD_FIELDS.join(",")
    )
}

fn pod_meta_and_spec(errs: &mut Errs, pod: &Value) {
    validate_object_meta(errs, pod, Some(true), name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(pod, "spec").unwrap_or(&null);
    validate_pod_spec(errs, spec, "spec", PodOpts { is_pod: true });
    if s(spec, "serviceAccountName").is_empty() {
        for (vi, vol) in arr(spec, "volumes").iter().enumerate() {
            let Some(proj) = get(vol, "projected") else {
                continue;
            };
            for (si, src) in arr(proj, "sources").iter().enumerate() {
                if get(src, "serviceAccountToken").is_some() {
                    errs.push(FieldError::forbidden(
                        format!("spec.volumes[{vi}].projected.sources[{si}].serviceAccountToken"),
                        "must not be specified when serviceAccountName is not set",
                    ));
                }
            }
        }
    }
    image_whitespace(errs, arr(spec, "containers"), "spec.containers");
    image_whitespace(errs, arr(spec, "initContainers"), "spec.initContainers");
}

pub(crate) fn validate_pod_create(errs: &mut Errs, pod: &Value) {
    pod_meta_and_spec(errs, pod);
    let null = Value::Null;
    let spec = get(pod, "spec").unwrap_or(&null);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    if !s(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.nodeName",
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
}

fn container_updates(errs: &mut Errs, new: &[Value], old: &[Value], path: &str) -> bool {
    if new.len() != old.len() {
        errs.push(FieldError::forbidden(
            path,
            "pod updates may not add or remove containers",
        ));
        return true;
    }
    for (i, c) in new.iter().enumerate() {
        let image = s(c, "image");
        if image.is_empty() {
            errs.push(FieldError::required(child(&idx(path, i), "image"), ""));
        }
        if image.trim() != image {
            errs.push(FieldError::invalid(
                child(&idx(path, i), "image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    false
}

fn only_added_tolerations(errs: &mut Errs, new: &[Value], old: &[Value], path: &str) {
    for o in old {
        let found = new.iter().any(|n| {
            let mut oc = o.clone();
            if let Some(m) = oc.as_object_mut() {
                match n.get("tolerationSeconds") {
                    Some(ts) => m.insert("tolerationSeconds".into(), ts.clone()),
                    None => m.remove("tolerationSeconds"),
                };
            }
            sem_eq(Some(&oc), Some(n))
        });
        if !found {
            errs.push(FieldError::forbidden(
                path,
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            return;
        }
    }
    validate_tolerations(errs, new, path);
}

pub(crate) fn validate_pod_update(errs: &mut Errs, new: &Value, old: &Value) {
    validate_object_meta_update(errs, new, old);
    pod_meta_and_spec(errs, new);
    let null = Value::Null;
    let ns = get(new, "spec").unwrap_or(&null);
    let os = get(old, "spec").unwrap_or(&null);
    if container_updates(
        errs,
        arr(ns, "containers"),
        arr(os, "containers"),
        "spec.containers",
    ) {
        return;
    }
    if container_updates(
        errs,
        arr(ns, "initContainers"),
        arr(os, "initContainers"),
        "spec.initContainers",
    ) {
        return;
    }
    match (
        int(ns, "activeDeadlineSeconds"),
        int(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), old_ads) => {
            if n < 0 || n > i32::MAX as i64 {
                errs.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    n,
                    inclusive_range_error(0, i32::MAX as i64),
                ));
                return;
            }
            if let Some(o) = old_ads {
                if o < n {
                    errs.push(FieldError::invalid(
                        "spec.activeDeadlineSeconds",
                        n,
                        "must be less than or equal to previous value",
                    ));
                    return;
                }
            }
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        (None, None) => {}
    }
    only_added_tolerations(
        errs,
        arr(ns, "tolerations"),
        arr(os, "tolerations"),
        "spec.tolerations",
    );
    let old_gates: Vec<&str> = arr(os, "schedulingGates")
        .iter()
        .map(|g| s(g, "name"))
        .collect();
    for (i, g) in arr(ns, "schedulingGates").iter().enumerate() {
        if !old_gates.contains(&s(g, "name")) {
            errs.push(FieldError::forbidden(
                format!("spec.schedulingGates[{i}].name"),
                format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    s(g, "name")
                ),
            ));
        }
    }
    if sem_eq(Some(ns), Some(os)) {
        return;
    }
    // Overwrite the mutable fields with their old values and compare the rest.
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(items)) = m.get_mut(list) {
                for (i, c) in items.iter_mut().enumerate() {
                    let old_image = arr(os, list).get(i).and_then(|o| o.get("image")).cloned();
                    if let (Some(cm), Some(img)) = (c.as_object_mut(), old_image) {
                        cm.insert("image".into(), img);
                    }
                }
            }
        }
        for f in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match os.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        let old_grace = int(os, "terminationGracePeriodSeconds");
        if old_grace.map(|g| g < 0).unwrap_or(false)
            && int(ns, "terminationGracePeriodSeconds") == Some(1)
        {
            m.insert(
                "terminationGracePeriodSeconds".into(),
                os["terminationGracePeriodSeconds"].clone(),
            );
        }
        if !arr(os, "schedulingGates").is_empty() {
            // Gated pods may add node selectors and node affinity.
            for f in ["nodeSelector", "affinity"] {
                match os.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
        }
    }
    if !sem_eq(Some(&munged), Some(os)) {
        errs.push(FieldError::forbidden(
            "spec",
            pod_update_forbidden_message(),
        ));
    }
}

pub(crate) fn validate_pod_status_update(errs: &mut Errs, new: &Value, old: &Value) {
    validate_object_meta_update(errs, new, old);
    let null = Value::Null;
    if s(get(new, "spec").unwrap_or(&null), "nodeName")
        != s(get(old, "spec").unwrap_or(&null), "nodeName")
    {
        errs.push(FieldError::forbidden(
            "status.nodeName",
            "may not be changed directly",
        ));
    }
    let status = get(new, "status").unwrap_or(&null);
    let nominated = s(status, "nominatedNodeName");
    if !nominated.is_empty()
        && at(old, &["status", "nominatedNodeName"]).and_then(Value::as_str) != Some(nominated)
    {
        push_msgs(
            errs,
            "status.nominatedNodeName",
            nominated,
            name_is_dns_subdomain(nominated, false),
        );
    }
    for (i, ip) in arr(status, "podIPs").iter().enumerate() {
        is_valid_ip(errs, &idx("status.podIPs", i), s(ip, "ip"));
    }
    for (i, ip) in arr(status, "hostIPs").iter().enumerate() {
        is_valid_ip(errs, &idx("status.hostIPs", i), s(ip, "ip"));
    }
}

/// The PodTemplate kind: metadata and `template`.
pub(crate) fn validate_pod_template_object(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    match old {
        Some(o) => validate_object_meta_update(errs, obj, o),
        None => validate_object_meta(errs, obj, Some(true), name_is_dns_subdomain),
    }
    validate_pod_template(errs, get(obj, "template"), "template");
}

const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// `pods/ephemeralcontainers`: the pod as a whole stays valid, and ephemeral
/// containers may only be added, never changed or removed.
pub(crate) fn validate_pod_ephemeral_update(errs: &mut Errs, new: &Value, old: &Value) {
    validate_object_meta_update(errs, new, old);
    pod_meta_and_spec(errs, new);
    if at(old, &["metadata", "annotations", MIRROR_POD]).is_some() {
        *errs = vec![FieldError::forbidden("", "static pods do not support ephemeral containers")];
        return;
    }
    let path = "spec.ephemeralContainers";
    let added = arr(get(new, "spec").unwrap_or(&Value::Null), "ephemeralContainers");
    for o in arr(get(old, "spec").unwrap_or(&Value::Null), "ephemeralContainers") {
        let name = s(o, "name");
        match added.iter().find(|n| s(n, "name") == name) {
            None => errs.push(FieldError::forbidden(path, format!("existing ephemeral containers {name:?} may not be removed\n"))),
            Some(n) if !sem_eq(Some(n), Some(o)) => {
                errs.push(FieldError::forbidden(path, format!("existing ephemeral containers {name:?} may not be changed")))
            }
            Some(_) => {}
        }
    }
}

/// `pods/resize`: only the cpu and memory of regular containers change,
/// none is removed, and the pod keeps its QoS class.
pub(crate) fn validate_pod_resize(errs: &mut Errs, new: &Value, old: &Value) {
    validate_object_meta_update(errs, new, old);
    pod_meta_and_spec(errs, new);
    if at(old, &["metadata", "annotations", MIRROR_POD]).is_some() {
        *errs = vec![FieldError::forbidden("", "static pods cannot be resized")];
        return;
    }
    let null = Value::Null;
    let (ns, os) = (get(new, "spec").unwrap_or(&null), get(old, "spec").unwrap_or(&null));
    let old_qos = at(old, &["status", "qosClass"]).and_then(Value::as_str).unwrap_or_else(|| crate::strategy::qos_class(os));
    if crate::strategy::qos_class(ns) != old_qos {
        errs.push(FieldError::invalid("spec", old_qos, "Pod QOS Class may not change as a result of resizing"));
    }
    let (nc, oc) = (arr(ns, "containers"), arr(os, "containers"));
    if nc.len() != oc.len() || nc.iter().zip(oc).any(|(n, o)| s(n, "name") != s(o, "name")) {
        errs.push(FieldError::forbidden("spec.containers", "containers may not be added, removed or reordered"));
        return;
    }
    let mut munged = ns.clone();
    for (i, (n, o)) in nc.iter().zip(oc).enumerate() {
        for list in ["requests", "limits"] {
            let had = at(o, &["resources", list]).and_then(Value::as_object);
            let has = at(n, &["resources", list]).and_then(Value::as_object);
            if had.into_iter().flatten().any(|(k, _)| !has.is_some_and(|h| h.contains_key(k))) {
                let what = if list == "requests" { "resource requests" } else { "resource limits" };
                errs.push(FieldError::forbidden(format!("spec.containers[{i}].resources.{list}"), format!("{what} cannot be removed")));
            }
            if had.is_none() && has.is_none() {
                continue;
            }
            // cpu and memory may change: compare the rest with them put back.
            let target = &mut munged["containers"][i]["resources"][list];
            for res in ["cpu", "memory"] {
                match at(o, &["resources", list, res]) {
                    Some(v) => target[res] = v.clone(),
                    None => {
                        target.as_object_mut().map(|m| m.remove(res));
                    }
                }
            }
        }
        munged["containers"][i]["resizePolicy"] = o.get("resizePolicy").cloned().unwrap_or(Value::Null);
    }
    if !sem_eq(Some(&munged), Some(os)) {
        errs.push(FieldError::forbidden("spec", "only cpu and memory resources are mutable"));
    }
}
