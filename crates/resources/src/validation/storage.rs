//! PersistentVolumes, PersistentVolumeClaims (and claim specs embedded in
//! ephemeral volumes) and StorageClasses.

use serde_json::Value;

use super::errors::{go_quote, go_repr, FieldError};
use super::meta::*;
use super::names::*;
use super::resource::{parse_qty, qty_of};
use super::scheduling::node_selector;
use super::util::*;
use super::volume::csi_driver_name;
use super::workloads::meta_for;

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

fn access_modes(errs: &mut Errs, spec: &Value, path: &str, required_detail: &str) {
    let modes = arr(spec, "accessModes");
    let p = child(path, "accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required(&p, required_detail));
    }
    let (mut rwop, mut other) = (false, false);
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported(&p, m, ACCESS_MODES));
        } else if m == "ReadWriteOncePod" {
            rwop = true;
        } else {
            other = true;
        }
    }
    if rwop && other {
        errs.push(FieldError::forbidden(
            &p,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn positive_quantity(errs: &mut Errs, v: &Value, path: &str) -> bool {
    match parse_qty(errs, v, path) {
        Some(q) if !q.is_positive() => {
            errs.push(FieldError::invalid(
                path,
                q.canonical(),
                "must be greater than zero",
            ));
            false
        }
        Some(_) => true,
        None => false,
    }
}

fn volume_mode(errs: &mut Errs, spec: &Value, path: &str) {
    if let Some(vm) = opt_s(spec, "volumeMode") {
        if !VOLUME_MODES.contains(&vm) {
            errs.push(FieldError::not_supported(
                child(path, "volumeMode"),
                vm,
                VOLUME_MODES,
            ));
        }
    }
}

fn class_name(errs: &mut Errs, spec: &Value, field: &str, path: &str) {
    if let Some(c) = opt_s(spec, field).filter(|c| !c.is_empty()) {
        push_msgs(
            errs,
            &child(path, field),
            c,
            name_is_dns_subdomain(c, false),
        );
    }
}

fn data_source(errs: &mut Errs, ds: &Value, path: &str) {
    if s(ds, "name").is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    }
    let kind = s(ds, "kind");
    if kind.is_empty() {
        errs.push(FieldError::required(child(path, "kind"), ""));
    }
    let group = s(ds, "apiGroup");
    if group.is_empty() && kind != "PersistentVolumeClaim" {
        errs.push(FieldError::invalid(
            path,
            kind,
            "must be 'PersistentVolumeClaim' when referencing the default apiGroup",
        ));
    }
    if !group.is_empty() {
        dns_subdomain(errs, &child(path, "apiGroup"), group);
    }
}

/// A PersistentVolumeClaimSpec.
pub(crate) fn validate_pvc_spec(errs: &mut Errs, spec: &Value, path: &str) {
    access_modes(errs, spec, path, "at least 1 access mode is required");
    validate_label_selector(errs, get(spec, "selector"), &child(path, "selector"));
    let sp = key(&child(path, "resources"), "storage");
    match at(spec, &["resources", "requests", "storage"]) {
        None => errs.push(FieldError::required(&sp, "")),
        Some(v) => {
            positive_quantity(errs, v, &sp);
        }
    }
    class_name(errs, spec, "storageClassName", path);
    volume_mode(errs, spec, path);
    if let Some(ds) = get(spec, "dataSource") {
        data_source(errs, ds, &child(path, "dataSource"));
    }
    if let Some(ds) = get(spec, "dataSourceRef") {
        data_source(errs, ds, &child(path, "dataSourceRef"));
    }
    class_name(errs, spec, "volumeAttributesClassName", path);
}

pub(crate) fn validate_pvc(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    if let Some(o) = old {
        validate_object_meta_update(errs, obj, o);
    }
    validate_object_meta(errs, obj, Some(true), name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    validate_pvc_spec(errs, spec, "spec");
    let Some(o) = old else { return };
    let os = get(o, "spec").unwrap_or(&null);
    let mut new_spec = spec.clone();
    let mut old_spec = os.clone();
    let bound = at(o, &["status", "phase"]).and_then(Value::as_str) == Some("Bound");
    if let (Some(n), Some(ol)) = (new_spec.as_object_mut(), old_spec.as_object_mut()) {
        if s(os, "volumeName").is_empty() {
            match n.get("volumeName") {
                Some(v) => ol.insert("volumeName".into(), v.clone()),
                None => ol.remove("volumeName"),
            };
        }
        if get(os, "storageClassName").is_none() {
            if let Some(v) = n.get("storageClassName") {
                ol.insert("storageClassName".into(), v.clone());
            }
        }
        if bound {
            let storage = at(os, &["resources", "requests", "storage"]).cloned();
            if let Some(req) = n
                .get_mut("resources")
                .and_then(|r| r.as_object_mut())
                .and_then(|r| r.get_mut("requests"))
                .and_then(|r| r.as_object_mut())
            {
                match storage {
                    Some(v) => req.insert("storage".into(), v),
                    None => req.remove("storage"),
                };
            }
            match ol.get("volumeAttributesClassName") {
                Some(v) => n.insert("volumeAttributesClassName".into(), v.clone()),
                None => n.remove("volumeAttributesClassName"),
            };
        }
    }
    if !sem_eq(Some(&new_spec), Some(&old_spec)) {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let new_size = qty_of(at(spec, &["resources", "requests", "storage"]));
    let old_size = qty_of(at(os, &["resources", "requests", "storage"]));
    let status_size = qty_of(at(o, &["status", "capacity", "storage"]));
    if let (Some(n), Some(ol)) = (new_size, old_size) {
        let at_most_status = match &status_size {
            Some(st) => n.cmp(st).is_le(),
            None => !n.is_positive(),
        };
        if n.cmp(&ol).is_lt() && at_most_status {
            errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        }
    }
    immutable(
        errs,
        get(spec, "volumeMode"),
        get(os, "volumeMode"),
        "volumeMode",
    );
}

/// (JSON key, path when it is a second source, required string fields).
const PV_SOURCES: &[(&str, &str, &[&str])] = &[
    ("hostPath", "hostPath", &["path"]),
    ("gcePersistentDisk", "gcePersistentDisk", &["pdName"]),
    (
        "awsElasticBlockStore",
        "awsElasticBlockStore",
        &["volumeID"],
    ),
    ("glusterfs", "glusterfs", &["endpoints", "path"]),
    ("flocker", "flocker", &[]),
    ("nfs", "nfs", &["server", "path"]),
    ("rbd", "rbd", &["image"]),
    ("quobyte", "quobyte", &["volume"]),
    ("cephfs", "cephFS", &[]),
    ("iscsi", "iscsi", &["targetPortal", "iqn"]),
    ("cinder", "cinder", &["volumeID"]),
    ("fc", "fc", &[]),
    ("flexVolume", "flexVolume", &["driver"]),
    ("azureFile", "azureFile", &["secretName", "shareName"]),
    ("vsphereVolume", "vsphereVolume", &["volumePath"]),
    ("photonPersistentDisk", "photonPersistentDisk", &["pdID"]),
    ("portworxVolume", "portworxVolume", &["volumeID"]),
    ("azureDisk", "azureDisk", &["diskName", "diskURI"]),
    ("scaleIO", "scaleIO", &["gateway", "system", "volumeName"]),
    ("local", "local", &["path"]),
    ("storageos", "storageos", &["volumeName"]),
    ("csi", "csi", &["volumeHandle"]),
];

fn capacity_repr(cap: &serde_json::Map<String, Value>) -> String {
    let mut keys: Vec<&String> = cap.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", go_quote(k), super::errors::render_value(&cap[*k])))
        .collect();
    format!(
        "map[core.ResourceName]resource.Quantity{{{}}}",
        parts.join(", ")
    )
}

pub(crate) fn validate_pv(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_subdomain);
    if old.is_some() {
        validate_object_meta(errs, obj, Some(false), name_is_dns_subdomain);
    }
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    access_modes(errs, spec, "spec", "");
    let empty = serde_json::Map::new();
    let cap = omap(spec, "capacity").unwrap_or(&empty);
    if cap.is_empty() {
        errs.push(FieldError::required("spec.capacity", ""));
    }
    if !cap.contains_key("storage") || cap.len() > 1 {
        errs.push(FieldError::not_supported(
            "spec.capacity",
            go_repr(capacity_repr(cap)),
            &["storage"],
        ));
    }
    for (name, v) in cap {
        positive_quantity(errs, v, &key("spec.capacity", name));
    }
    if let Some(rp) = opt_s(spec, "persistentVolumeReclaimPolicy").filter(|r| !r.is_empty()) {
        const RP: &[&str] = &["Delete", "Recycle", "Retain"];
        if !RP.contains(&rp) {
            errs.push(FieldError::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                rp,
                RP,
            ));
        }
    }
    let mut has_affinity = false;
    if let Some(na) = get(spec, "nodeAffinity") {
        has_affinity = true;
        match get(na, "required") {
            Some(req) => node_selector(errs, req, "spec.nodeAffinity.required"),
            None => errs.push(FieldError::required(
                "spec.nodeAffinity.required",
                "must specify required node constraints",
            )),
        }
    }
    let mut count = 0;
    for (json_key, second, required) in PV_SOURCES {
        let Some(src) = get(spec, json_key) else {
            continue;
        };
        if count > 0 && *json_key != "flexVolume" {
            errs.push(FieldError::forbidden(
                child("spec", second),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        count += 1;
        let p = child("spec", json_key);
        for f in *required {
            if s(src, f).is_empty() {
                errs.push(FieldError::required(child(&p, f), ""));
            }
        }
        match *json_key {
            "csi" => csi_driver_name(errs, s(src, "driver"), &child(&p, "driver")),
            "local" => {
                super::container::no_backsteps(errs, s(src, "path"), &child(&p, "path"));
                if !has_affinity {
                    errs.push(FieldError::required(
                        "spec.nodeAffinity",
                        "Local volume requires node affinity",
                    ));
                }
            }
            "hostPath" => super::container::no_backsteps(errs, s(src, "path"), &child(&p, "path")),
            "nfs" if !s(src, "path").starts_with('/') => {
                errs.push(FieldError::invalid(
                    child(&p, "path"),
                    s(src, "path"),
                    "must be an absolute path",
                ));
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required("spec", "must specify a volume type"));
    }
    if let Some(hp) = at(spec, &["hostPath", "path"]).and_then(Value::as_str) {
        if hp.trim_end_matches('/').is_empty()
            && s(spec, "persistentVolumeReclaimPolicy") == "Recycle"
        {
            errs.push(FieldError::forbidden(
                "spec.persistentVolumeReclaimPolicy",
                "may not be 'recycle' for a hostPath mount of '/'",
            ));
        }
    }
    class_name(errs, spec, "storageClassName", "spec");
    volume_mode(errs, spec, "spec");
    if let Some(o) = old {
        let os = get(o, "spec").unwrap_or(&null);
        let source_changed = PV_SOURCES.iter().any(|(k, _, _)| {
            let (mut n, mut ol) = (get(spec, k).cloned(), get(os, k).cloned());
            if *k == "csi" {
                // A controllerExpandSecretRef may be added later.
                if ol
                    .as_ref()
                    .map(|c| get(c, "controllerExpandSecretRef").is_none())
                    .unwrap_or(false)
                {
                    if let Some(Value::Object(m)) = n.as_mut() {
                        m.remove("controllerExpandSecretRef");
                    }
                    if let Some(Value::Object(m)) = ol.as_mut() {
                        m.remove("controllerExpandSecretRef");
                    }
                }
            }
            !sem_eq(n.as_ref(), ol.as_ref())
        });
        if source_changed {
            errs.push(FieldError::forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        immutable(
            errs,
            get(spec, "volumeMode"),
            get(os, "volumeMode"),
            "volumeMode",
        );
        if let Some(old_na) = get(os, "nodeAffinity") {
            if !sem_eq(get(spec, "nodeAffinity"), Some(old_na)) {
                errs.push(FieldError::invalid(
                    "nodeAffinity",
                    get(spec, "nodeAffinity").cloned().unwrap_or(Value::Null),
                    "field is immutable, except for updating from beta label to GA",
                ));
            }
        }
    }
}

pub(crate) fn validate_storage_class(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, false, name_is_dns_subdomain);
    if old.is_some() {
        validate_object_meta(errs, obj, Some(false), name_is_dns_subdomain);
    }
    let prov = s(obj, "provisioner");
    if prov.is_empty() {
        errs.push(FieldError::required("provisioner", ""));
    } else {
        qualified_name(errs, "provisioner", &prov.to_lowercase());
    }
    let params = str_map(get(obj, "parameters"));
    if params.len() > 512 {
        errs.push(FieldError::too_long("parameters", 512));
    } else {
        let total: usize = params.iter().map(|(k, v)| k.len() + v.len()).sum();
        for (k, _) in &params {
            if k.is_empty() {
                errs.push(FieldError::invalid(
                    "parameters",
                    *k,
                    "field can not be empty.",
                ));
            }
        }
        if total > 256 * 1024 {
            errs.push(FieldError::too_long("parameters", 256 * 1024));
        }
    }
    if let Some(rp) = opt_s(obj, "reclaimPolicy").filter(|r| !r.is_empty()) {
        if rp != "Delete" && rp != "Retain" {
            errs.push(FieldError::not_supported(
                "reclaimPolicy",
                rp,
                &["Delete", "Retain"],
            ));
        }
    }
    if let Some(m) = opt_s(obj, "volumeBindingMode") {
        if m != "Immediate" && m != "WaitForFirstConsumer" {
            errs.push(FieldError::not_supported(
                "volumeBindingMode",
                m,
                &["Immediate", "WaitForFirstConsumer"],
            ));
        }
    }
    for (i, term) in arr(obj, "allowedTopologies").iter().enumerate() {
        let p = idx("allowedTopologies", i);
        for (j, e) in arr(term, "matchLabelExpressions").iter().enumerate() {
            let ep = idx(&child(&p, "matchLabelExpressions"), j);
            if arr(e, "values").is_empty() {
                errs.push(FieldError::required(child(&ep, "values"), ""));
            }
            validate_label_name(errs, s(e, "key"), &child(&ep, "key"));
        }
    }
    if let Some(o) = old {
        if !sem_eq(get(obj, "parameters"), get(o, "parameters")) {
            errs.push(FieldError::forbidden(
                "parameters",
                "updates to parameters are forbidden.",
            ));
        }
        if prov != s(o, "provisioner") {
            errs.push(FieldError::forbidden(
                "provisioner",
                "updates to provisioner are forbidden.",
            ));
        }
        if opt_s(obj, "reclaimPolicy").unwrap_or("Delete")
            != opt_s(o, "reclaimPolicy").unwrap_or("Delete")
        {
            errs.push(FieldError::forbidden(
                "reclaimPolicy",
                "updates to reclaimPolicy are forbidden.",
            ));
        }
        immutable(
            errs,
            get(obj, "volumeBindingMode"),
            get(o, "volumeBindingMode"),
            "volumeBindingMode",
        );
    }
}
