//! Registry credentials for image pulls from the pod's imagePullSecrets
//! (kubernetes.io/dockerconfigjson and the older dockercfg), matched to the
//! image's registry as the docker keyring does.

use base64::Engine;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use kube::{Api, Client};
use runtime::cri::RegistryAuth;
use serde_json::Value;

/// The registry host of an image reference (`docker.io` for Docker Hub names).
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `localhost:5000` stays.
fn key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn same_registry(key: &str, host: &str) -> bool {
    let k = key_host(key);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    k == host || (hub(k) && hub(host))
}

/// Credentials for `image` from a docker config (`{"auths": {...}}` or the bare dockercfg map).
pub fn auths_from_docker_config(cfg: &Value, image: &str) -> Vec<RegistryAuth> {
    let host = registry_host(image);
    let auths = cfg.get("auths").unwrap_or(cfg);
    let Some(map) = auths.as_object() else { return Vec::new() };
    map.iter()
        .filter(|(k, _)| same_registry(k, &host))
        .map(|(_, v)| {
            let s = |f: &str| v.get(f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            let mut a = RegistryAuth { username: s("username"), password: s("password"), auth: s("auth"), identity_token: s("identitytoken") };
            // Fill user/password from `auth` so either form works for the puller.
            if a.username.is_none() {
                if let Some(decoded) = a.auth.as_ref().and_then(|x| base64::engine::general_purpose::STANDARD.decode(x).ok()) {
                    if let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':') {
                        a.username = Some(u.to_string());
                        a.password = Some(p.to_string());
                    }
                }
            }
            a
        })
        .collect()
}

/// Credentials from every imagePullSecret of the pod that has some for the image's registry.
pub async fn pull_auths(client: &Client, ns: &str, secrets: &[LocalObjectReference], image: &str) -> Vec<RegistryAuth> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for r in secrets {
        let Ok(Some(secret)) = api.get_opt(&r.name).await else {
            tracing::debug!(ns, secret = r.name, "imagePullSecret not found");
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let raw = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg"));
        if let Some(cfg) = raw.and_then(|b| serde_json::from_slice::<Value>(&b.0).ok()) {
            out.extend(auths_from_docker_config(&cfg, image));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registries_and_matching() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(registry_host("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_host("quay.io/x/y"), "quay.io");
        let cfg = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:pw")},
            "localhost:5000": {"username": "u", "password": "p"},
        }});
        let a = auths_from_docker_config(&cfg, "busybox");
        assert_eq!((a.len(), a[0].username.as_deref(), a[0].password.as_deref()), (1, Some("hub"), Some("pw")));
        let a = auths_from_docker_config(&cfg, "localhost:5000/app:1");
        assert_eq!((a.len(), a[0].username.as_deref()), (1, Some("u")));
        assert!(auths_from_docker_config(&cfg, "quay.io/x").is_empty());
        let old = json!({"localhost:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("a:b")}});
        assert_eq!(auths_from_docker_config(&old, "localhost:5000/app")[0].password.as_deref(), Some("b"));
    }
}
