//! The file payloads of configMap, secret, downwardAPI and projected
//! volumes (keys or items with their modes, optional sources), with
//! upstream's error messages, and service account tokens from the
//! TokenRequest API for projected volumes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, BoundObjectReference};
use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret, SecretVolumeSource, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};

use super::atomic_writer::{FileProjection, Payload};
use super::env::{field_value, resource_value, FieldContext};

const DEFAULT_MODE: i32 = 0o644;

/// Puts `data` (all keys, or the listed items) into `payload`.
fn project(payload: &mut Payload, data: &BTreeMap<String, Vec<u8>>, items: Option<&Vec<KeyToPath>>, mode: i32, optional: bool, missing: impl Fn(&str) -> String) -> Result<()> {
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(k.clone(), FileProjection { data: v.clone(), mode: mode as u32 });
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        payload.insert(it.path.clone(), FileProjection { data: v.clone(), mode: it.mode.unwrap_or(mode) as u32 });
                    }
                    None if optional => {}
                    None => bail!(missing(&it.key)),
                }
            }
        }
    }
    Ok(())
}

fn cm_bytes(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    out.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    out
}

fn secret_bytes(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

async fn add_config_map(client: &Client, ns: &str, payload: &mut Payload, name: &str, items: Option<&Vec<KeyToPath>>, optional: bool, mode: i32) -> Result<()> {
    match Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await? {
        Some(cm) => project(payload, &cm_bytes(&cm), items, mode, optional, |k| format!("configmap references non-existent config key: {k}")),
        None if optional => Ok(()),
        None => bail!("configmap \"{name}\" not found"),
    }
}

async fn add_secret(client: &Client, ns: &str, payload: &mut Payload, name: &str, items: Option<&Vec<KeyToPath>>, optional: bool, mode: i32) -> Result<()> {
    match Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await? {
        Some(s) => project(payload, &secret_bytes(&s), items, mode, optional, |k| format!("secret references non-existent secret key: {k}")),
        None if optional => Ok(()),
        None => bail!("secret \"{name}\" not found"),
    }
}

pub async fn config_map(client: &Client, ns: &str, src: &ConfigMapVolumeSource) -> Result<Payload> {
    let mut p = Payload::new();
    add_config_map(client, ns, &mut p, &src.name, src.items.as_ref(), src.optional == Some(true), src.default_mode.unwrap_or(DEFAULT_MODE)).await?;
    Ok(p)
}

pub async fn secret(client: &Client, ns: &str, src: &SecretVolumeSource) -> Result<Payload> {
    let mut p = Payload::new();
    let name = src.secret_name.clone().unwrap_or_default();
    add_secret(client, ns, &mut p, &name, src.items.as_ref(), src.optional == Some(true), src.default_mode.unwrap_or(DEFAULT_MODE)).await?;
    Ok(p)
}

/// Downward API files: fields of the pod and resources of its containers.
pub fn downward_api<'a>(pod: &Pod, ctx: &FieldContext, items: impl Iterator<Item = &'a DownwardAPIVolumeFile>, default_mode: Option<i32>) -> Result<Payload> {
    let mut p = Payload::new();
    add_downward(&mut p, pod, ctx, items, default_mode.unwrap_or(DEFAULT_MODE))?;
    Ok(p)
}

fn add_downward<'a>(p: &mut Payload, pod: &Pod, ctx: &FieldContext, items: impl Iterator<Item = &'a DownwardAPIVolumeFile>, mode: i32) -> Result<()> {
    let spec = pod.spec.clone().unwrap_or_default();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, ctx, &f.field_path)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name).ok_or_else(|| anyhow!("container {name:?} not found for resourceFieldRef"))?;
            resource_value(c, ctx, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))?
        } else {
            String::new()
        };
        p.insert(it.path.clone(), FileProjection { data: value.into_bytes(), mode: it.mode.unwrap_or(mode) as u32 });
    }
    Ok(())
}

/// Tokens issued for projected volumes, reused until 80% of their lifetime
/// or a day has passed, whichever is first (upstream's token manager).
static TOKENS: Mutex<Option<HashMap<String, (String, Instant)>>> = Mutex::new(None);
/// When the API server last said it has no TokenRequest: asked again only after a while.
static NO_TOKEN_API: Mutex<Option<Instant>> = Mutex::new(None);
const TOKEN_API_RECHECK: Duration = Duration::from_secs(300);

async fn service_account_token(client: &Client, pod: &Pod, key: &str, audience: Option<&str>, expiration: i64) -> Result<Option<String>> {
    if let Some((token, renew_at)) = TOKENS.lock().unwrap().get_or_insert_with(HashMap::new).get(key) {
        if Instant::now() < *renew_at {
            return Ok(Some(token.clone()));
        }
    }
    if NO_TOKEN_API.lock().unwrap().is_some_and(|t| t.elapsed() < TOKEN_API_RECHECK) {
        return Ok(None);
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.filter(|a| !a.is_empty()).map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference { api_version: Some("v1".into()), kind: Some("Pod".into()), name: pod.metadata.name.clone(), uid: pod.metadata.uid.clone() }),
        },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(client.clone(), &ns).create_token_request(&sa, &PostParams::default(), &req).await {
        Ok(tr) => {
            // The lifetime the server granted, which may differ from the one asked for.
            let lifetime = tr.spec.expiration_seconds.unwrap_or(expiration).max(600) as u64;
            let token = tr.status.map(|s| s.token).unwrap_or_default();
            let renew_at = Instant::now() + renew_after(lifetime);
            TOKENS.lock().unwrap().get_or_insert_with(HashMap::new).insert(key.to_string(), (token.clone(), renew_at));
            Ok(Some(token))
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => {
            *NO_TOKEN_API.lock().unwrap() = Some(Instant::now());
            tracing::warn!(pod = pod.metadata.name.as_deref().unwrap_or_default(), ns, "the API server has no TokenRequest for serviceaccount {sa}: {}; skipping the token", e.message);
            Ok(None)
        }
        Err(e) => Err(anyhow!("failed to fetch token: {e}")),
    }
}

/// When a token of `lifetime` seconds is fetched again.
fn renew_after(lifetime: u64) -> Duration {
    Duration::from_secs(lifetime * 8 / 10).min(MAX_TOKEN_AGE)
}
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

pub async fn projected(client: &Client, pod: &Pod, ctx: &FieldContext, volume: &str, src: &ProjectedVolumeSource) -> Result<Payload> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mode = src.default_mode.unwrap_or(DEFAULT_MODE);
    let mut p = Payload::new();
    for s in src.sources.iter().flatten() {
        if let Some(cm) = &s.config_map {
            add_config_map(client, &ns, &mut p, &cm.name, cm.items.as_ref(), cm.optional == Some(true), mode).await?;
        }
        if let Some(sec) = &s.secret {
            add_secret(client, &ns, &mut p, &sec.name, sec.items.as_ref(), sec.optional == Some(true), mode).await?;
        }
        if let Some(d) = &s.downward_api {
            add_downward(&mut p, pod, ctx, d.items.iter().flatten(), mode)?;
        }
        if let Some(t) = &s.service_account_token {
            let key = format!("{}/{volume}/{}", pod.metadata.uid.as_deref().unwrap_or_default(), t.path);
            if let Some(token) = service_account_token(client, pod, &key, t.audience.as_deref(), t.expiration_seconds.unwrap_or(3600)).await? {
                // Tokens are private to the pod's user unless fsGroup says otherwise (upstream: 0600).
                p.insert(t.path.clone(), FileProjection { data: token.into_bytes(), mode: src.default_mode.unwrap_or(0o600) as u32 });
            }
        }
    }
    Ok(p)
}

/// Forgets the tokens of a removed pod.
pub fn forget_tokens(uid: &str) {
    if let Some(m) = TOKENS.lock().unwrap().as_mut() {
        m.retain(|k, _| !k.starts_with(&format!("{uid}/")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_modes_and_missing_keys() {
        let data: BTreeMap<String, Vec<u8>> = [("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())].into();
        let mut p = Payload::new();
        project(&mut p, &data, None, 0o644, false, |k| k.to_string()).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        let items: Vec<KeyToPath> = serde_json::from_value(json!([{"key": "a", "path": "dir/x", "mode": 0o400}, {"key": "zz", "path": "y"}])).unwrap();
        let mut p = Payload::new();
        let err = project(&mut p, &data, Some(&items), 0o644, false, |k| format!("configmap references non-existent config key: {k}")).unwrap_err();
        assert_eq!(err.to_string(), "configmap references non-existent config key: zz");
        let mut p = Payload::new();
        project(&mut p, &data, Some(&items), 0o644, true, |k| k.to_string()).unwrap();
        assert_eq!(p["dir/x"], FileProjection { data: b"1".to_vec(), mode: 0o400 });
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn tokens_renew_at_80_percent_or_after_a_day() {
        assert_eq!(renew_after(3607), Duration::from_secs(2885));
        assert_eq!(renew_after(365 * 24 * 3600), Duration::from_secs(24 * 3600));
    }

    #[test]
    fn downward_files() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"k": "v"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}})).unwrap();
        let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(json!([
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o600},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
        ])).unwrap();
        let p = downward_api(&pod, &FieldContext::default(), items.iter(), None).unwrap();
        assert_eq!(p["labels"].data, b"k=\"v\"");
        assert_eq!((p["name"].data.as_slice(), p["name"].mode), (&b"p"[..], 0o600));
        assert_eq!(p["mem"].data, b"64");
    }
}
