//! The ServiceAccount admission plugin, as upstream: a new pod runs as
//! `default` unless it names a ServiceAccount, which must exist; it gets the
//! ServiceAccount's image pull secrets when it has none; and unless the pod
//! or its ServiceAccount opts out (`automountServiceAccountToken: false`)
//! every container and init container mounts a projected `kube-api-access-*`
//! volume (a bound token, the cluster CA, the namespace) read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount`.

use resources::catalog::ResourceInfo;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::{name_of, Registry};

pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub async fn admit_new_pod(reg: &Registry, info: &ResourceInfo, pod: &mut Value) -> ApiResult<()> {
    // Mirror pods stand for static pods the API server does not run.
    if !pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return Ok(());
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    let name = match pod["spec"]["serviceAccountName"].as_str().filter(|s| !s.is_empty()) {
        Some(n) => n.to_string(),
        None => "default".to_string(),
    };
    pod["spec"]["serviceAccountName"] = json!(name);
    let sa = match crate::authn::cached(reg, "serviceaccounts", Some(&ns), &name).await {
        Some(c) => c.obj(),
        // Without a ServiceAccount controller (an API-only server) there is
        // no `default`: the pod is admitted without API credentials.
        None if name == "default" => return Ok(()),
        None => {
            let why = format!("error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found");
            return Err(ApiError::forbidden(info, name_of(pod), &why));
        }
    };
    if should_automount(pod, &sa) {
        mount_token(pod);
    }
    let has_pull_secrets = pod["spec"]["imagePullSecrets"].as_array().is_some_and(|a| !a.is_empty());
    if let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty() && !has_pull_secrets) {
        pod["spec"]["imagePullSecrets"] = json!(secrets.iter().map(|s| json!({"name": s["name"]})).collect::<Vec<_>>());
    }
    Ok(())
}

/// The pod's own setting wins, then the ServiceAccount's; mounted by default.
fn should_automount(pod: &Value, sa: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"].as_bool().or_else(|| sa["automountServiceAccountToken"].as_bool()).unwrap_or(true)
}

/// Adds the mount to each container without something at the mount path
/// already, and the volume when one of them needed it.
fn mount_token(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let existing = spec["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).find(|n| n.starts_with(VOLUME_PREFIX)).map(String::from);
    let volume = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", crate::registry::random_suffix()));
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let mounted = c["volumeMounts"].as_array().into_iter().flatten().any(|m| m["mountPath"] == MOUNT_PATH);
            if mounted {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            c["volumeMounts"].as_array_mut().unwrap().push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            needed = true;
        }
    }
    if existing.is_none() && needed {
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        spec["volumes"].as_array_mut().unwrap().push(json!({
            "name": volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            },
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_the_projected_volume_everywhere() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}, {"name": "b"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }});
        mount_token(&mut pod);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{name}");
        let sources = &vols[1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"], "metadata.namespace");
        for c in ["initContainers", "containers"].iter().flat_map(|l| pod["spec"][*l].as_array().unwrap()) {
            let last = c["volumeMounts"].as_array().unwrap().last().unwrap();
            assert_eq!(last, &json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH}));
        }
        // Admitting again (an update, a re-create from the same spec) adds nothing.
        let before = pod.clone();
        mount_token(&mut pod);
        assert_eq!(pod, before);
    }

    #[test]
    fn a_container_with_its_own_mount_keeps_it() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]}});
        mount_token(&mut pod);
        assert!(pod["spec"]["volumes"].is_null(), "no container needed the volume");
    }

    #[test]
    fn automount_opt_outs() {
        let (on, off) = (json!({"spec": {"automountServiceAccountToken": true}}), json!({"spec": {"automountServiceAccountToken": false}}));
        let sa_off = json!({"automountServiceAccountToken": false});
        assert!(should_automount(&json!({"spec": {}}), &json!({})));
        assert!(!should_automount(&off, &json!({})));
        assert!(!should_automount(&json!({"spec": {}}), &sa_off));
        assert!(should_automount(&on, &sa_off), "the pod's setting wins");
    }
}
