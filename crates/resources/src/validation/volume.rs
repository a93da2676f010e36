//! Pod volumes: unique DNS-label names and exactly one source each, with
//! the per-source required fields upstream checks.

use std::collections::HashSet;

use serde_json::Value;

use super::container::{
    local_descending_path, no_backsteps, validate_field_selector, validate_resource_field_selector,
    VolumeSet, VOLUME_FIELD_PATHS,
};
use super::errors::FieldError;
use super::names::*;
use super::resource::qty_of;
use super::util::*;

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// (JSON key, path used when it is a second source, path of its own
/// errors, required string fields) in upstream's checking order.
const SOURCES: &[(&str, &str, &str, &[&str])] = &[
    ("emptyDir", "emptyDir", "emptyDir", &[]),
    ("hostPath", "hostPath", "hostPath", &[]),
    ("gitRepo", "gitRepo", "gitRepo", &["repository"]),
    (
        "gcePersistentDisk",
        "gcePersistentDisk",
        "persistentDisk",
        &["pdName"],
    ),
    (
        "awsElasticBlockStore",
        "awsElasticBlockStore",
        "awsElasticBlockStore",
        &["volumeID"],
    ),
    ("secret", "secret", "secret", &["secretName"]),
    ("nfs", "nfs", "nfs", &["server", "path"]),
    ("iscsi", "iscsi", "iscsi", &["targetPortal", "iqn"]),
    (
        "glusterfs",
        "glusterfs",
        "glusterfs",
        &["endpoints", "path"],
    ),
    ("flocker", "flocker", "flocker", &[]),
    (
        "persistentVolumeClaim",
        "persistentVolumeClaim",
        "persistentVolumeClaim",
        &["claimName"],
    ),
    ("rbd", "rbd", "rbd", &["image"]),
    ("cinder", "cinder", "cinder", &["volumeID"]),
    ("cephfs", "cephFS", "cephfs", &[]),
    ("quobyte", "quobyte", "quobyte", &["volume"]),
    ("downwardAPI", "downwarAPI", "downwardAPI", &[]),
    ("fc", "fc", "fc", &[]),
    ("flexVolume", "flexVolume", "flexVolume", &["driver"]),
    ("configMap", "configMap", "configMap", &["name"]),
    (
        "azureFile",
        "azureFile",
        "azureFile",
        &["secretName", "shareName"],
    ),
    (
        "vsphereVolume",
        "vsphereVolume",
        "vsphereVolume",
        &["volumePath"],
    ),
    (
        "photonPersistentDisk",
        "photonPersistentDisk",
        "photonPersistentDisk",
        &["pdID"],
    ),
    (
        "portworxVolume",
        "portworxVolume",
        "portworxVolume",
        &["volumeID"],
    ),
    (
        "azureDisk",
        "azureDisk",
        "azureDisk",
        &["diskName", "diskURI"],
    ),
    ("storageos", "storageos", "storageos", &["volumeName"]),
    ("projected", "projected", "projected", &[]),
    (
        "scaleIO",
        "scaleIO",
        "scaleIO",
        &["gateway", "system", "volumeName"],
    ),
    ("csi", "csi", "csi", &[]),
    ("ephemeral", "ephemeral", "ephemeral", &[]),
    ("image", "image", "image", &[]),
];

fn file_mode(errs: &mut Errs, v: &Value, k: &str, path: &str) {
    if let Some(m) = int(v, k) {
        if !(0..=0o777).contains(&m) {
            errs.push(FieldError::invalid(child(path, k), m, FILE_MODE_MSG));
        }
    }
}

/// A relative path without `..` elements that does not start with `..`.
fn local_non_reserved_path(errs: &mut Errs, value: &str, path: &str) {
    local_descending_path(errs, value, path);
    if value.starts_with("..") && !value.starts_with("../") {
        errs.push(FieldError::invalid(path, value, "must not start with '..'"));
    }
}

fn key_to_paths(errs: &mut Errs, items: &[Value], path: &str) {
    for (i, kp) in items.iter().enumerate() {
        let p = idx(path, i);
        if s(kp, "key").is_empty() {
            errs.push(FieldError::required(child(&p, "key"), ""));
        }
        let kpath = s(kp, "path");
        if kpath.is_empty() {
            errs.push(FieldError::required(child(&p, "path"), ""));
        }
        local_non_reserved_path(errs, kpath, &child(&p, "path"));
        file_mode(errs, kp, "mode", &p);
    }
}

fn downward_file(errs: &mut Errs, file: &Value, path: &str) {
    let fpath = s(file, "path");
    if fpath.is_empty() {
        errs.push(FieldError::required(child(path, "path"), ""));
    }
    local_non_reserved_path(errs, fpath, &child(path, "path"));
    match (get(file, "fieldRef"), get(file, "resourceFieldRef")) {
        (Some(fr), rf) => {
            validate_field_selector(errs, fr, VOLUME_FIELD_PATHS, &child(path, "fieldRef"));
            if rf.is_some() {
                errs.push(FieldError::invalid(
                    path,
                    "resource",
                    "fieldRef and resourceFieldRef can not be specified simultaneously",
                ));
            }
        }
        (None, Some(rf)) => {
            validate_resource_field_selector(errs, rf, &child(path, "resourceFieldRef"), true)
        }
        (None, None) => errs.push(FieldError::required(
            path,
            "one of fieldRef and resourceFieldRef is required",
        )),
    }
    file_mode(errs, file, "mode", path);
}

fn projected(errs: &mut Errs, src: &Value, path: &str) {
    file_mode(errs, src, "defaultMode", path);
    let mut all_paths = HashSet::new();
    for (i, source) in arr(src, "sources").iter().enumerate() {
        let sp = idx(&child(path, "sources"), i);
        let mut n = 0;
        for k in ["secret", "configMap"] {
            let Some(x) = get(source, k) else { continue };
            n += 1;
            let pp = child(&sp, k);
            if s(x, "name").is_empty() {
                errs.push(FieldError::required(child(&pp, "name"), ""));
            }
            key_to_paths(errs, arr(x, "items"), &child(&pp, "items"));
            for kp in arr(x, "items") {
                let kpath = s(kp, "path");
                if !kpath.is_empty() && !all_paths.insert(kpath.to_string()) {
                    errs.push(FieldError::invalid(
                        path,
                        s(x, "name"),
                        "conflicting duplicate paths",
                    ));
                }
            }
        }
        if let Some(x) = get(source, "downwardAPI") {
            n += 1;
            for file in arr(x, "items") {
                downward_file(errs, file, &child(&sp, "downwardAPI"));
                let fpath = s(file, "path");
                if !fpath.is_empty() && !all_paths.insert(fpath.to_string()) {
                    errs.push(FieldError::invalid(
                        path,
                        fpath,
                        "conflicting duplicate paths",
                    ));
                }
            }
        }
        if let Some(x) = get(source, "serviceAccountToken") {
            n += 1;
            let pp = child(&sp, "serviceAccountToken");
            if let Some(exp) = int(x, "expirationSeconds") {
                if exp < 600 {
                    errs.push(FieldError::invalid(
                        child(&pp, "expirationSeconds"),
                        exp,
                        "may not specify a duration less than 10 minutes",
                    ));
                }
                if exp > 1 << 32 {
                    errs.push(FieldError::invalid(
                        child(&pp, "expirationSeconds"),
                        exp,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
            let tp = s(x, "path");
            if tp.is_empty() {
                errs.push(FieldError::required(child(path, "path"), ""));
            } else {
                local_non_reserved_path(errs, tp, &child(path, "path"));
            }
        }
        if get(source, "clusterTrustBundle").is_some() {
            n += 1;
        }
        if n > 1 {
            errs.push(FieldError::forbidden(
                sp,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}

/// Source-specific checks beyond the required string fields.
fn source_details(errs: &mut Errs, kind: &str, src: &Value, path: &str, is_pod: bool) {
    match kind {
        "emptyDir" => {
            if let Some(q) = qty_of(get(src, "sizeLimit")) {
                if q.is_negative() {
                    errs.push(FieldError::forbidden(
                        child(path, "sizeLimit"),
                        "SizeLimit field must be a valid resource quantity",
                    ));
                }
            }
        }
        "hostPath" => {
            let hp = s(src, "path");
            if hp.is_empty() {
                errs.push(FieldError::required(child(path, "path"), ""));
                return;
            }
            no_backsteps(errs, hp, &child(path, "path"));
            if let Some(t) = opt_s(src, "type") {
                const TYPES: &[&str] = &[
                    "",
                    "BlockDevice",
                    "CharDevice",
                    "Directory",
                    "DirectoryOrCreate",
                    "File",
                    "FileOrCreate",
                    "Socket",
                ];
                if !TYPES.contains(&t) {
                    errs.push(FieldError::not_supported(child(path, "type"), t, TYPES));
                }
            }
        }
        "gitRepo" => local_descending_path(errs, s(src, "directory"), &child(path, "directory")),
        "persistentDisk" | "awsElasticBlockStore" => {
            if let Some(p) = int(src, "partition").filter(|p| !(0..=255).contains(p)) {
                errs.push(FieldError::invalid(
                    child(path, "partition"),
                    p,
                    inclusive_range_error(1, 255),
                ));
            }
        }
        "secret" | "configMap" => {
            file_mode(errs, src, "defaultMode", path);
            key_to_paths(errs, arr(src, "items"), &child(path, "items"));
        }
        "nfs" if !s(src, "path").starts_with('/') => {
            errs.push(FieldError::invalid(
                child(path, "path"),
                s(src, "path"),
                "must be an absolute path",
            ));
        }
        "iscsi" => {
            if let Some(l) = int(src, "lun").filter(|l| !(0..=255).contains(l)) {
                errs.push(FieldError::invalid(
                    child(path, "lun"),
                    l,
                    inclusive_range_error(0, 255),
                ));
            }
        }
        "flocker" => {
            let (n, u) = (s(src, "datasetName"), s(src, "datasetUUID"));
            if n.is_empty() && u.is_empty() {
                errs.push(FieldError::required(
                    path,
                    "one of datasetName and datasetUUID is required",
                ));
            }
            if !n.is_empty() && !u.is_empty() {
                errs.push(FieldError::invalid(
                    path,
                    "resource",
                    "datasetName and datasetUUID can not be specified simultaneously",
                ));
            }
        }
        "rbd" | "cephfs" if arr(src, "monitors").is_empty() => {
            errs.push(FieldError::required(child(path, "monitors"), ""));
        }
        "downwardAPI" => {
            file_mode(errs, src, "defaultMode", path);
            for file in arr(src, "items") {
                downward_file(errs, file, path);
            }
        }
        "fc" => {
            let (w, ids) = (arr(src, "targetWWNs"), arr(src, "wwids"));
            if w.is_empty() && ids.is_empty() {
                errs.push(FieldError::required(
                    child(path, "targetWWNs"),
                    "must specify either targetWWNs or wwids, but not both",
                ));
            }
            if !w.is_empty() && !ids.is_empty() {
                errs.push(FieldError::invalid(
                    child(path, "targetWWNs"),
                    w.to_vec(),
                    "targetWWNs and wwids can not be specified simultaneously",
                ));
            }
            if !w.is_empty() && get(src, "lun").is_none() {
                errs.push(FieldError::required(
                    child(path, "lun"),
                    "lun is required if targetWWNs is specified",
                ));
            }
        }
        "projected" => projected(errs, src, path),
        "csi" => csi_driver_name(errs, s(src, "driver"), &child(path, "driver")),
        "ephemeral" => match get(src, "volumeClaimTemplate") {
            None => errs.push(FieldError::required(child(path, "volumeClaimTemplate"), "")),
            Some(t) => {
                let tp = child(path, "volumeClaimTemplate");
                super::meta::validate_template_meta(
                    errs,
                    get(t, "metadata"),
                    &child(&tp, "metadata"),
                );
                let null = Value::Null;
                super::storage::validate_pvc_spec(
                    errs,
                    get(t, "spec").unwrap_or(&null),
                    &child(&tp, "spec"),
                );
            }
        },
        "image" => {
            if is_pod && s(src, "reference").is_empty() {
                errs.push(FieldError::required(child(path, "reference"), ""));
            }
            if let Some(pp) = opt_s(src, "pullPolicy") {
                const PP: &[&str] = &["Always", "IfNotPresent", "Never"];
                if !PP.contains(&pp) {
                    errs.push(FieldError::not_supported(child(path, "pullPolicy"), pp, PP));
                }
            }
        }
        _ => {}
    }
}

/// A CSI driver name: required, ≤63 chars, a (lowercased) DNS subdomain.
pub(crate) fn csi_driver_name(errs: &mut Errs, driver: &str, path: &str) {
    if driver.is_empty() {
        errs.push(FieldError::required(path, ""));
    }
    if driver.len() > 63 {
        errs.push(FieldError::too_long(path, 63));
    }
    for m in is_dns1123_subdomain(&driver.to_lowercase()) {
        errs.push(FieldError::invalid(path, driver, m));
    }
}

/// `spec.volumes`; returns the volumes containers may reference.
pub(crate) fn validate_volumes(
    errs: &mut Errs,
    volumes: &[Value],
    path: &str,
    is_pod: bool,
) -> VolumeSet {
    let mut set: VolumeSet = Vec::new();
    let mut names = HashSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = idx(path, i);
        let mut el = Vec::new();
        let mut count = 0;
        for (json_key, second_name, inner_name, required) in SOURCES {
            let Some(src) = get(vol, json_key) else {
                continue;
            };
            if count > 0 {
                el.push(FieldError::forbidden(
                    child(&p, second_name),
                    "may not specify more than 1 volume type",
                ));
                continue;
            }
            count += 1;
            let sp = child(&p, inner_name);
            for f in *required {
                if s(src, f).is_empty() {
                    el.push(FieldError::required(child(&sp, f), ""));
                }
            }
            source_details(&mut el, inner_name, src, &sp, is_pod);
        }
        if count == 0 {
            el.push(FieldError::required(&p, "must specify a volume type"));
        }
        let name = s(vol, "name");
        let np = child(&p, "name");
        if name.is_empty() {
            el.push(FieldError::required(&np, ""));
        } else {
            dns_label(&mut el, &np, name);
        }
        if names.contains(name) {
            el.push(FieldError::duplicate(&np, name));
        }
        if el.is_empty() {
            names.insert(name.to_string());
            let claim =
                get(vol, "persistentVolumeClaim").is_some() || get(vol, "ephemeral").is_some();
            set.push((name.to_string(), claim));
        } else {
            errs.extend(el);
        }
    }
    set
}
