//! Containers: names, images, ports, env, mounts and resources (regular
//! and init containers); probes and security contexts live in `probes`.

use std::collections::HashSet;

use serde_json::Value;

use super::errors::FieldError;
use super::names::*;
use super::probes::{validate_lifecycle, validate_probe, validate_security_context};
use super::resource::validate_requirements;
use super::util::*;

/// Volume names that a container may mount, and whether each is a
/// claim-backed (block-capable) source.
pub(crate) type VolumeSet = Vec<(String, bool)>;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn validate_ports(errs: &mut Errs, ports: &[Value], path: &str) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = idx(path, i);
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                push_msgs(errs, &child(&p, "name"), name, msgs);
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), name));
            }
        }
        match int(port, "containerPort") {
            None | Some(0) => errs.push(FieldError::required(child(&p, "containerPort"), "")),
            Some(n) => {
                for m in is_valid_port_num(n) {
                    errs.push(FieldError::invalid(child(&p, "containerPort"), n, m));
                }
            }
        }
        if let Some(hp) = int(port, "hostPort").filter(|h| *h != 0) {
            for m in is_valid_port_num(hp) {
                errs.push(FieldError::invalid(child(&p, "hostPort"), hp, m));
            }
        }
        if let Some(proto) = opt_s(port, "protocol") {
            if proto.is_empty() {
                errs.push(FieldError::required(child(&p, "protocol"), ""));
            } else if !PROTOCOLS.contains(&proto) {
                errs.push(FieldError::not_supported(
                    child(&p, "protocol"),
                    proto,
                    PROTOCOLS,
                ));
            }
        }
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
pub(crate) const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];
const RESOURCE_FIELD_PATHS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

/// A downward-API `fieldRef`.
pub(crate) fn validate_field_selector(errs: &mut Errs, fs: &Value, allowed: &[&str], path: &str) {
    if s(fs, "apiVersion").is_empty() && fs.get("apiVersion").is_some() {
        errs.push(FieldError::required(child(path, "apiVersion"), ""));
        return;
    }
    let fp = s(fs, "fieldPath");
    if fp.is_empty() {
        errs.push(FieldError::required(child(path, "fieldPath"), ""));
        return;
    }
    if let Some((base, rest)) = fp.split_once('[') {
        let sub = rest.strip_suffix(']').unwrap_or(rest).trim_matches('\'');
        match base {
            "metadata.annotations" => qualified_name(errs, path, &sub.to_lowercase()),
            "metadata.labels" => qualified_name(errs, path, sub),
            _ => errs.push(FieldError::invalid(
                path,
                base,
                "does not support subscript",
            )),
        }
    } else if !allowed.contains(&fp) {
        errs.push(FieldError::not_supported(
            child(path, "fieldPath"),
            fp,
            allowed,
        ));
    }
}

/// A downward-API `resourceFieldRef`.
pub(crate) fn validate_resource_field_selector(
    errs: &mut Errs,
    rf: &Value,
    path: &str,
    volume: bool,
) {
    let res = s(rf, "resource");
    if volume && s(rf, "containerName").is_empty() {
        errs.push(FieldError::required(child(path, "containerName"), ""));
    } else if res.is_empty() {
        errs.push(FieldError::required(child(path, "resource"), ""));
    } else if !RESOURCE_FIELD_PATHS.contains(&res)
        && !res.starts_with("requests.hugepages-")
        && !res.starts_with("limits.hugepages-")
    {
        errs.push(FieldError::not_supported(
            child(path, "resource"),
            res,
            RESOURCE_FIELD_PATHS,
        ));
    }
}

fn validate_key_selector(errs: &mut Errs, sel: &Value, path: &str) {
    let name = s(sel, "name");
    push_msgs(
        errs,
        &child(path, "name"),
        name,
        name_is_dns_subdomain(name, false),
    );
    let k = s(sel, "key");
    if k.is_empty() {
        errs.push(FieldError::required(child(path, "key"), ""));
    } else {
        push_msgs(errs, &child(path, "key"), k, is_config_map_key(k));
    }
}

fn validate_env(errs: &mut Errs, env: &[Value], path: &str) {
    for (i, ev) in env.iter().enumerate() {
        let p = idx(path, i);
        let name = s(ev, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            push_msgs(errs, &child(&p, "name"), name, is_env_var_name(name));
        }
        let Some(vf) = get(ev, "valueFrom") else {
            continue;
        };
        let vp = child(&p, "valueFrom");
        let mut n = 0;
        if let Some(fr) = get(vf, "fieldRef") {
            n += 1;
            validate_field_selector(errs, fr, ENV_FIELD_PATHS, &child(&vp, "fieldRef"));
        }
        if let Some(rf) = get(vf, "resourceFieldRef") {
            n += 1;
            validate_resource_field_selector(errs, rf, &child(&vp, "resourceFieldRef"), false);
        }
        if let Some(c) = get(vf, "configMapKeyRef") {
            n += 1;
            validate_key_selector(errs, c, &child(&vp, "configMapKeyRef"));
        }
        if let Some(c) = get(vf, "secretKeyRef") {
            n += 1;
            validate_key_selector(errs, c, &child(&vp, "secretKeyRef"));
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(ev, "value").is_empty() {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn validate_env_from(errs: &mut Errs, list: &[Value], path: &str) {
    for (i, ef) in list.iter().enumerate() {
        let p = idx(path, i);
        let prefix = s(ef, "prefix");
        if !prefix.is_empty() {
            push_msgs(errs, &child(&p, "prefix"), prefix, is_env_var_name(prefix));
        }
        let mut n = 0;
        for k in ["configMapRef", "secretRef"] {
            if let Some(r) = get(ef, k) {
                n += 1;
                let name = s(r, "name");
                let np = child(&child(&p, k), "name");
                if name.is_empty() {
                    errs.push(FieldError::required(np, ""));
                } else {
                    push_msgs(errs, &np, name, name_is_dns_subdomain(name, true));
                }
            }
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                path,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

/// `must not contain '..'` for any `..` path element.
pub(crate) fn no_backsteps(errs: &mut Errs, value: &str, path: &str) {
    if value.replace('\\', "/").split('/').any(|p| p == "..") {
        errs.push(FieldError::invalid(path, value, "must not contain '..'"));
    }
}

/// A relative path without backsteps.
pub(crate) fn local_descending_path(errs: &mut Errs, value: &str, path: &str) {
    if value.starts_with('/') {
        errs.push(FieldError::invalid(path, value, "must be a relative path"));
    }
    no_backsteps(errs, value, path);
}

fn validate_mounts(errs: &mut Errs, ctr: &Value, vols: &VolumeSet, path: &str) {
    let devices: Vec<(&str, &str)> = arr(ctr, "volumeDevices")
        .iter()
        .map(|d| (s(d, "name"), s(d, "devicePath")))
        .collect();
    let mut points = HashSet::new();
    for (i, m) in arr(ctr, "volumeMounts").iter().enumerate() {
        let p = idx(path, i);
        let name = s(m, "name");
        let mp = s(m, "mountPath");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        if !vols.iter().any(|(n, _)| n == name) {
            errs.push(FieldError::not_found(child(&p, "name"), name));
        }
        if mp.is_empty() {
            errs.push(FieldError::required(child(&p, "mountPath"), ""));
        }
        if !points.insert(mp.to_string()) {
            errs.push(FieldError::invalid(
                child(&p, "mountPath"),
                mp,
                "must be unique",
            ));
        }
        if devices.iter().any(|(n, _)| *n == name) {
            errs.push(FieldError::invalid(
                child(&p, "name"),
                name,
                "must not already exist in volumeDevices",
            ));
        }
        if devices.iter().any(|(_, dp)| *dp == mp) {
            errs.push(FieldError::invalid(
                child(&p, "mountPath"),
                mp,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub = s(m, "subPath");
        if !sub.is_empty() {
            local_descending_path(errs, sub, &child(path, "subPath"));
        }
        let expr = s(m, "subPathExpr");
        if !expr.is_empty() {
            if !sub.is_empty() {
                errs.push(FieldError::invalid(
                    child(&p, "subPathExpr"),
                    expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(errs, expr, &child(path, "subPathExpr"));
        }
        if let Some(mprop) = opt_s(m, "mountPropagation") {
            const PROPS: &[&str] = &["Bidirectional", "HostToContainer", "None"];
            if !PROPS.contains(&mprop) {
                errs.push(FieldError::not_supported(
                    child(path, "mountPropagation"),
                    mprop,
                    PROPS,
                ));
            }
            let privileged = at(ctr, &["securityContext", "privileged"])
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if mprop == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    child(path, "mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
    let mounts: Vec<(&str, &str)> = arr(ctr, "volumeMounts")
        .iter()
        .map(|m| (s(m, "name"), s(m, "mountPath")))
        .collect();
    let dpath = path.replace("volumeMounts", "volumeDevices");
    let mut dnames = HashSet::new();
    let mut dpaths = HashSet::new();
    for (i, (name, dp)) in devices.iter().enumerate() {
        let p = idx(&dpath, i);
        let matched = vols.iter().find(|(n, _)| n == name);
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        if !dnames.insert(*name) {
            errs.push(FieldError::invalid(
                child(&p, "name"),
                *name,
                "must be unique",
            ));
        }
        match matched {
            Some((_, false)) => errs.push(FieldError::invalid(
                child(&p, "name"),
                *name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
            None => errs.push(FieldError::not_found(child(&p, "name"), *name)),
            _ => {}
        }
        if dp.is_empty() {
            errs.push(FieldError::required(child(&p, "devicePath"), ""));
        }
        if !dpaths.insert(*dp) {
            errs.push(FieldError::invalid(
                child(&p, "devicePath"),
                *dp,
                "must be unique",
            ));
        }
        if mounts.iter().any(|(n, _)| n == name) {
            errs.push(FieldError::invalid(
                child(&p, "name"),
                *name,
                "must not already exist in volumeMounts",
            ));
        }
        if mounts.iter().any(|(_, m)| m == dp) {
            errs.push(FieldError::invalid(
                child(&p, "devicePath"),
                *dp,
                "must not already exist as a path in volumeMounts",
            ));
        }
    }
}

/// An int-or-string port: a number in range or an IANA port name.
pub(crate) fn port_num_or_name(errs: &mut Errs, v: Option<&Value>, path: &str) {
    match v {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            for m in is_valid_port_num(n) {
                errs.push(FieldError::invalid(path, n, m));
            }
        }
        Some(Value::String(name)) => push_msgs(errs, path, name, is_valid_port_name(name)),
        _ => {
            for m in is_valid_port_num(0) {
                errs.push(FieldError::invalid(path, 0, m));
            }
        }
    }
}

/// Checks common to regular and init containers.
fn validate_container_common(
    errs: &mut Errs,
    ctr: &Value,
    vols: &VolumeSet,
    host_users: bool,
    path: &str,
) {
    let name = s(ctr, "name");
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else {
        dns_label(errs, &child(path, "name"), name);
    }
    if s(ctr, "image").is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    }
    if let Some(tmp) = opt_s(ctr, "terminationMessagePolicy") {
        const TMP: &[&str] = &["File", "FallbackToLogsOnError"];
        if tmp.is_empty() {
            errs.push(FieldError::required(
                child(path, "terminationMessagePolicy"),
                "",
            ));
        } else if !TMP.contains(&tmp) {
            errs.push(FieldError::not_supported(
                child(path, "terminationMessagePolicy"),
                tmp,
                TMP,
            ));
        }
    }
    validate_ports(errs, arr(ctr, "ports"), &child(path, "ports"));
    validate_env(errs, arr(ctr, "env"), &child(path, "env"));
    validate_env_from(errs, arr(ctr, "envFrom"), &child(path, "envFrom"));
    validate_mounts(errs, ctr, vols, &child(path, "volumeMounts"));
    if let Some(pp) = opt_s(ctr, "imagePullPolicy") {
        const PP: &[&str] = &["Always", "IfNotPresent", "Never"];
        if pp.is_empty() {
            errs.push(FieldError::required(child(path, "imagePullPolicy"), ""));
        } else if !PP.contains(&pp) {
            errs.push(FieldError::not_supported(
                child(path, "imagePullPolicy"),
                pp,
                PP,
            ));
        }
    }
    validate_requirements(errs, get(ctr, "resources"), &child(path, "resources"));
    validate_security_context(errs, ctr, host_users, path);
}

/// `TCP//8080`-keyed host port conflicts.
fn host_port_conflicts(errs: &mut Errs, ctrs: &[(usize, &Value)], path: &str) {
    let mut seen = HashSet::new();
    for (ci, c) in ctrs {
        for (pi, port) in arr(c, "ports").iter().enumerate() {
            let hp = int(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let proto = opt_s(port, "protocol").unwrap_or("TCP");
            let key = format!("{proto}/{}/{hp}", s(port, "hostIP"));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    child(&idx(&child(&idx(path, *ci), "ports"), pi), "hostPort"),
                    key,
                ));
            }
        }
    }
}

/// `spec.containers`.
pub(crate) fn validate_containers(
    errs: &mut Errs,
    ctrs: &[Value],
    vols: &VolumeSet,
    grace: Option<i64>,
    host_users: bool,
    path: &str,
) {
    if ctrs.is_empty() {
        errs.push(FieldError::required(path, ""));
        return;
    }
    let mut names = HashSet::new();
    for (i, c) in ctrs.iter().enumerate() {
        let p = idx(path, i);
        validate_container_common(errs, c, vols, host_users, &p);
        let name = s(c, "name");
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&p, "name"), name));
        }
        validate_lifecycle(errs, c, grace, &p);
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            validate_probe(errs, c, probe, grace, &p);
        }
        if get(c, "restartPolicy").is_some() {
            errs.push(FieldError::forbidden(
                child(&p, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    let all: Vec<(usize, &Value)> = ctrs.iter().enumerate().collect();
    host_port_conflicts(errs, &all, path);
}

/// `spec.initContainers` (names unique across regular and init containers).
pub(crate) fn validate_init_containers(
    errs: &mut Errs,
    inits: &[Value],
    regular: &[Value],
    vols: &VolumeSet,
    grace: Option<i64>,
    host_users: bool,
    path: &str,
) {
    let mut names: HashSet<String> = regular.iter().map(|c| s(c, "name").to_string()).collect();
    for (i, c) in inits.iter().enumerate() {
        let p = idx(path, i);
        validate_container_common(errs, c, vols, host_users, &p);
        let mut restart_always = false;
        if let Some(rp) = opt_s(c, "restartPolicy") {
            if rp != "Always" {
                errs.push(FieldError::not_supported(
                    child(&p, "restartPolicy"),
                    rp,
                    &["Always"],
                ));
            }
            restart_always = rp == "Always";
        }
        let name = s(c, "name");
        if names.contains(name) {
            errs.push(FieldError::duplicate(child(&p, "name"), name));
        } else if !name.is_empty() {
            names.insert(name.to_string());
        }
        // Upstream checks each init container alone, always at index 0.
        host_port_conflicts(errs, &[(0, c)], path);
        if restart_always {
            validate_lifecycle(errs, c, grace, &p);
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                validate_probe(errs, c, probe, grace, &p);
            }
        } else {
            for f in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if get(c, f).is_some() {
                    errs.push(FieldError::forbidden(
                        child(&p, f),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
}

/// Pods (not templates) reject images with surrounding whitespace.
pub(crate) fn image_whitespace(errs: &mut Errs, ctrs: &[Value], path: &str) {
    for (i, c) in ctrs.iter().enumerate() {
        let image = s(c, "image");
        if image.trim() != image {
            errs.push(FieldError::invalid(
                child(&idx(path, i), "image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
}

/// Fields an ephemeral container may not set (upstream's allow list, inverted).
const EPHEMERAL_FORBIDDEN: &[&str] = &[
    "ports", "resources", "resizePolicy", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "restartPolicy",
];

/// Go's zero value, looking into structs: `resources: {limits: {}}` is unset.
fn unset(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().all(unset),
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// `spec.ephemeralContainers` (kubectl debug): common container rules,
/// names unique across every container, a target that is a regular or init
/// container, and none of the fields that make a container part of the workload.
pub(crate) fn validate_ephemeral_containers(
    errs: &mut Errs,
    spec: &Value,
    vols: &VolumeSet,
    host_users: bool,
    path: &str,
) {
    let others: HashSet<&str> = arr(spec, "containers").iter().chain(arr(spec, "initContainers")).map(|c| s(c, "name")).collect();
    let mut names = others.clone();
    for (i, c) in arr(spec, "ephemeralContainers").iter().enumerate() {
        let p = idx(path, i);
        validate_container_common(errs, c, vols, host_users, &p);
        let name = s(c, "name");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(child(&p, "name"), name));
        }
        let target = s(c, "targetContainerName");
        if !target.is_empty() && !others.contains(target) {
            errs.push(FieldError::not_found(child(&p, "targetContainerName"), target));
        }
        for f in EPHEMERAL_FORBIDDEN {
            if get(c, f).is_some_and(|v| !unset(v)) {
                errs.push(FieldError::forbidden(child(&p, f), "cannot be set for an Ephemeral Container"));
            }
        }
        for (mi, m) in arr(c, "volumeMounts").iter().enumerate() {
            for f in ["subPath", "subPathExpr"] {
                if !s(m, f).is_empty() {
                    let mp = child(&idx(&child(&p, "volumeMounts"), mi), f);
                    errs.push(FieldError::forbidden(mp, "cannot be set for an Ephemeral Container"));
                }
            }
        }
    }
}
