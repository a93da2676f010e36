//! Pod and pod-spec defaults: the v1 defaulter every pod template gets, and
//! what only pods get (SetDefaults_Pod and the pod admission plugins).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::{json, Value};

use super::{
    canonical_quantity, default_int, default_str, default_value, each_obj, ensure_obj, existing_obj, is_unset_str,
    non_empty, round_resource_list, str_of, template_metadata, Obj,
};

/// Pod-only defaults, then the pod-spec ones.
pub(super) fn pod(pod: &mut Obj) {
    let mirror = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .is_some();
    let Some(spec) = ensure_obj(pod, "spec") else { return };
    for key in ["containers", "initContainers"] {
        each_obj(spec, key, requests_from_limits);
    }
    default_value(spec, "enableServiceLinks", true.into());
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            each_obj(spec, key, |c| {
                each_obj(c, "ports", |p| {
                    let container_port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                    default_int(p, "hostPort", container_port);
                })
            });
        }
    }
    pod_spec(spec);
    // ServiceAccount admission; mirror pods of static manifests are exempt.
    if !mirror {
        default_str(spec, "serviceAccountName", "default");
        sync_service_account(spec);
    }
    default_tolerations(spec);
    if let Some(status) = existing_obj(pod, "status") {
        sync_ips(status, "podIP", "podIPs");
        sync_ips(status, "hostIP", "hostIPs");
    }
}

/// A pod template: printed metadata plus the pod-spec defaults.
pub(super) fn pod_template(template: &mut Obj) {
    template_metadata(template);
    if let Some(spec) = ensure_obj(template, "spec") {
        pod_spec(spec);
    }
}

/// The v1 PodSpec defaults, shared by pods and every template.
pub(super) fn pod_spec(spec: &mut Obj) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_value(spec, "securityContext", json!({}));
    default_value(spec, "terminationGracePeriodSeconds", 30.into());
    default_str(spec, "schedulerName", "default-scheduler");
    sync_service_account(spec);
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        each_obj(spec, key, container);
    }
    each_obj(spec, "volumes", volume);
    round_resource_list(spec, "overhead");
    if let Some(resources) = existing_obj(spec, "resources") {
        round_resource_list(resources, "limits");
        round_resource_list(resources, "requests");
    }
}

/// The deprecated `serviceAccount` mirrors `serviceAccountName`, which wins
/// when both are set (v1 conversion).
fn sync_service_account(spec: &mut Obj) {
    if is_unset_str(spec.get("serviceAccountName")) && !is_unset_str(spec.get("serviceAccount")) {
        spec.insert("serviceAccountName".into(), spec["serviceAccount"].clone());
    }
    if !is_unset_str(spec.get("serviceAccountName")) {
        spec.insert("serviceAccount".into(), spec["serviceAccountName"].clone());
    }
}

/// A pod's containers request what they limit unless they say otherwise.
fn requests_from_limits(c: &mut Obj) {
    let Some(resources) = existing_obj(c, "resources") else { return };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else { return };
    let Some(requests) = ensure_obj(resources, "requests") else { return };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
    if requests.is_empty() {
        resources.remove("requests");
    }
}

fn container(c: &mut Obj) {
    if is_unset_str(c.get("imagePullPolicy")) {
        let policy = image_pull_policy(str_of(c, "image"));
        c.insert("imagePullPolicy".into(), policy.into());
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    // Go prints the resources struct even when empty.
    if let Some(resources) = ensure_obj(c, "resources") {
        round_resource_list(resources, "limits");
        round_resource_list(resources, "requests");
    }
    each_obj(c, "ports", |p| default_str(p, "protocol", "TCP"));
    each_obj(c, "env", |e| {
        if let Some(field_ref) = existing_obj(e, "valueFrom").and_then(|v| existing_obj(v, "fieldRef")) {
            default_str(field_ref, "apiVersion", "v1");
        }
    });
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing_obj(c, key) {
            probe(p);
        }
    }
    if let Some(lifecycle) = existing_obj(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(handler) = existing_obj(lifecycle, key) {
                http_get(handler);
            }
        }
    }
}

fn probe(p: &mut Obj) {
    default_int(p, "timeoutSeconds", 1);
    default_int(p, "periodSeconds", 10);
    default_int(p, "successThreshold", 1);
    default_int(p, "failureThreshold", 3);
    http_get(p);
    if let Some(grpc) = existing_obj(p, "grpc") {
        default_value(grpc, "service", "".into());
    }
}

fn http_get(handler: &mut Obj) {
    if let Some(h) = existing_obj(handler, "httpGet") {
        default_str(h, "path", "/");
        default_str(h, "scheme", "HTTP");
    }
}

fn volume(v: &mut Obj) {
    // A volume naming no source is an emptyDir.
    if v.iter().all(|(k, val)| k == "name" || val.is_null()) {
        v.insert("emptyDir".into(), json!({}));
    }
    volume_source(v);
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing_obj(v, key) {
            default_value(source, "defaultMode", 420.into());
        }
    }
    if let Some(d) = existing_obj(v, "downwardAPI") {
        each_obj(d, "items", field_ref_api_version);
    }
    if let Some(p) = existing_obj(v, "projected") {
        each_obj(p, "sources", |s| {
            if let Some(d) = existing_obj(s, "downwardAPI") {
                each_obj(d, "items", field_ref_api_version);
            }
            if let Some(t) = existing_obj(s, "serviceAccountToken") {
                default_value(t, "expirationSeconds", 3600.into());
            }
        });
    }
    if let Some(e) = existing_obj(v, "emptyDir") {
        canonical_quantity(e, "sizeLimit");
    }
    if let Some(t) = existing_obj(v, "ephemeral").and_then(|e| existing_obj(e, "volumeClaimTemplate")) {
        template_metadata(t);
        if let Some(spec) = existing_obj(t, "spec") {
            claim_spec(spec);
        }
    }
}

/// Defaults of the volume sources a pod volume and a PersistentVolume share.
pub(super) fn volume_source(v: &mut Obj) {
    if let Some(h) = existing_obj(v, "hostPath") {
        default_value(h, "type", "".into());
    }
    if let Some(i) = existing_obj(v, "iscsi") {
        default_str(i, "iscsiInterface", "default");
    }
    if let Some(r) = existing_obj(v, "rbd") {
        default_str(r, "pool", "rbd");
        default_str(r, "user", "admin");
        default_str(r, "keyring", "/etc/ceph/keyring");
    }
    if let Some(a) = existing_obj(v, "azureDisk") {
        default_value(a, "cachingMode", "ReadWrite".into());
        default_value(a, "fsType", "ext4".into());
        default_value(a, "readOnly", false.into());
        default_value(a, "kind", "Shared".into());
    }
    if let Some(s) = existing_obj(v, "scaleIO") {
        default_str(s, "storageMode", "ThinProvisioned");
        default_str(s, "fsType", "xfs");
    }
}

fn field_ref_api_version(item: &mut Obj) {
    if let Some(f) = existing_obj(item, "fieldRef") {
        default_str(f, "apiVersion", "v1");
    }
}

/// PersistentVolumeClaimSpec defaults, also used in claim templates.
pub(super) fn claim_spec(spec: &mut Obj) {
    default_value(spec, "volumeMode", "Filesystem".into());
    if let Some(resources) = ensure_obj(spec, "resources") {
        round_resource_list(resources, "limits");
        round_resource_list(resources, "requests");
    }
}

/// The node-condition tolerations DefaultTolerationSeconds admission adds,
/// unless the pod already tolerates those taints for NoExecute.
fn default_tolerations(spec: &mut Obj) {
    let tolerations = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let tolerates = |taint: &str| {
        tolerations.iter().any(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    let missing: Vec<Value> = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .into_iter()
        .filter(|taint| !tolerates(taint))
        .map(|taint| json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}))
        .collect();
    if missing.is_empty() {
        return;
    }
    if !spec.get("tolerations").is_some_and(Value::is_array) {
        spec.insert("tolerations".into(), json!([]));
    }
    if let Some(list) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        list.extend(missing);
    }
}

/// The singular IP field is the first of the plural list (v1 conversion).
fn sync_ips(status: &mut Obj, single: &str, plural: &str) {
    let first = status
        .get(plural)
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|ip| ip.get("ip"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match first {
        Some(ip) => {
            status.insert(single.into(), ip.into());
        }
        None if !is_unset_str(status.get(single)) && !non_empty(status, plural) => {
            let ip = status[single].clone();
            status.insert(plural.into(), json!([{"ip": ip}]));
        }
        None => {}
    }
}

/// Always for `:latest` or an untagged image, IfNotPresent otherwise
/// (including digests and references that do not parse).
pub fn image_pull_policy(image: &str) -> &'static str {
    match image_tag(image) {
        Some(tag) if tag == "latest" => "Always",
        _ => "IfNotPresent",
    }
}

/// The tag of an image reference as upstream reads it: "latest" when it has
/// neither tag nor digest, "" for a digest alone, None when it does not
/// parse as a reference.
pub fn image_tag(image: &str) -> Option<String> {
    static REFERENCE: OnceLock<Regex> = OnceLock::new();
    let re = REFERENCE.get_or_init(|| {
        let domain_part = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"(?:{domain_part}(?:\.{domain_part})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?");
        let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let name = format!(r"(?:{domain}/)?{component}(?:/{component})*");
        let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        Regex::new(&format!(r"^({name})(?::({tag}))?(?:@({digest}))?$")).expect("image reference pattern")
    });
    let caps = re.captures(image)?;
    let name = caps.get(1)?.as_str();
    // Too long, or a bare 64-hex image ID, is not a name.
    if name.len() > 255
        || (image.len() == 64 && image.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return None;
    }
    match (caps.get(2), caps.get(3)) {
        (Some(tag), _) => Some(tag.as_str().to_string()),
        (None, Some(_)) => Some(String::new()),
        (None, None) => Some("latest".to_string()),
    }
}
