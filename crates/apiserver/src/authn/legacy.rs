//! Legacy ServiceAccount tokens: `kubernetes.io/service-account-token`
//! Secrets (annotated `kubernetes.io/service-account.name`) get a
//! non-expiring token, `ca.crt` and `namespace` filled in, as upstream's
//! token controller does; such a token authenticates while its Secret holds
//! it and the ServiceAccount is the one it was issued for.
//!
//! The filler runs inside the API server because it signs with the
//! server's key; it reads the watch cache and writes through the registry.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::service_account::{identity, live, subject};
use super::{cached, meta_of, LEGACY_ISSUER};
use crate::cache::{Cached, EventType};
use crate::registry::{Registry, WriteOptions};
use crate::serve::Identity;

pub const SECRET_TYPE: &str = "kubernetes.io/service-account-token";
const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
const CLAIM: &str = "kubernetes.io/serviceaccount/";
/// How often Secrets still waiting for their ServiceAccount are looked at again.
const RESCAN: Duration = Duration::from_secs(5);

pub fn claims(ns: &str, secret: &str, sa: &str, sa_uid: &str) -> Value {
    json!({
        "iss": LEGACY_ISSUER,
        format!("{CLAIM}namespace"): ns,
        format!("{CLAIM}secret.name"): secret,
        format!("{CLAIM}service-account.name"): sa,
        format!("{CLAIM}service-account.uid"): sa_uid,
        "sub": subject(ns, sa),
    })
}

pub async fn authenticate(reg: &Registry, token: &str, claims: &Value) -> Result<Identity, String> {
    let claim = |k: &str| claims[format!("{CLAIM}{k}")].as_str().unwrap_or_default().to_string();
    let (ns, secret, sa, sa_uid) = (claim("namespace"), claim("secret.name"), claim("service-account.name"), claim("service-account.uid"));
    if ns.is_empty() || sa.is_empty() || claims["sub"] != subject(&ns, &sa).as_str() {
        return Err("legacy token claims disagree".into());
    }
    let Some(c) = cached(reg, "secrets", Some(&ns), &secret).await else { return Err(format!("secret {ns}/{secret} not found")) };
    if meta_of(&c).deletion_timestamp.is_some() {
        return Err(format!("secret {ns}/{secret} is being deleted"));
    }
    let stored = c.obj()["data"]["token"].as_str().and_then(|t| B64.decode(t).ok()).unwrap_or_default();
    if !super::same(&stored, token.as_bytes()) {
        return Err(format!("the token does not match secret {ns}/{secret}"));
    }
    live(reg, "serviceaccounts", Some(&ns), &sa, &sa_uid, chrono::Utc::now().timestamp()).await?;
    Ok(identity(&ns, &sa, &sa_uid, Default::default()))
}

/// Fills the tokens of legacy token Secrets, now and as they are written.
pub async fn run(reg: Arc<Registry>) {
    let secrets = reg.cache.prefix("secrets").clone();
    let (snapshot, mut live) = secrets.subscribe_with_snapshot("/registry/secrets/");
    for c in snapshot {
        fill(&reg, &c).await;
    }
    let mut tick = tokio::time::interval(RESCAN);
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(ev) if ev.kind != EventType::Deleted => fill(&reg, &ev.obj).await,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => rescan(&reg).await,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => rescan(&reg).await,
        }
    }
}

async fn rescan(reg: &Registry) {
    for c in reg.cache.all("secrets") {
        fill(reg, &c).await;
    }
}

/// Gives one Secret its token, when it is a legacy token Secret without
/// one and its ServiceAccount exists.
async fn fill(reg: &Registry, c: &Cached) {
    if c.field("type") != SECRET_TYPE {
        return;
    }
    let secret = c.obj();
    let meta = &secret["metadata"];
    if !secret["data"]["token"].is_null() || !meta["deletionTimestamp"].is_null() {
        return;
    }
    let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else { return };
    let Some(sa) = meta["annotations"][NAME_ANNOTATION].as_str() else { return };
    let Some(sa_cached) = cached(reg, "serviceaccounts", Some(ns), sa).await else { return };
    let sa_uid = meta_of(&sa_cached).uid;
    if meta["annotations"][UID_ANNOTATION].as_str().is_some_and(|u| !u.is_empty() && u != sa_uid) {
        return; // made for an earlier ServiceAccount of that name
    }
    let token = reg.authn.key.sign(&claims(ns, name, sa, &sa_uid));
    let ca = reg.authn.ca_pem.clone();
    let info = resources::catalog::lookup("", "v1", "secrets").unwrap();
    let result = reg
        .update(info, Some(ns), name, None, &WriteOptions::default(), |cur| {
            let mut next = cur.clone();
            if !next["data"].is_object() {
                next["data"] = json!({});
            }
            next["data"]["token"] = json!(B64.encode(&token));
            next["data"]["namespace"] = json!(B64.encode(ns));
            if !ca.is_empty() {
                next["data"]["ca.crt"] = json!(B64.encode(&ca));
            }
            next["metadata"]["annotations"][UID_ANNOTATION] = json!(sa_uid);
            Ok(next)
        })
        .await;
    if let Err(e) = result {
        tracing::debug!(namespace = ns, secret = name, "filling the service account token: {}", e.message);
    }
}
