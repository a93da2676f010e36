//! Bootstrap tokens: `ID.SECRET` bearer tokens backed by
//! `bootstrap.kubernetes.io/token` Secrets named `bootstrap-token-ID` in
//! kube-system, as upstream's bootstrap authenticator reads them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use crate::registry::Registry;
use crate::serve::Identity;

const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const GROUP: &str = "system:bootstrappers";

/// `None` when `token` is not shaped like a bootstrap token (other
/// authenticators may take it); else whether it authenticates.
pub async fn authenticate(reg: &Registry, token: &str) -> Option<Result<Identity, String>> {
    let (id, secret) = parse(token)?;
    let name = format!("bootstrap-token-{id}");
    let Some(cached) = super::cached(reg, "secrets", Some("kube-system"), &name).await else {
        return Some(Err(format!("no bootstrap token Secret kube-system/{name}")));
    };
    Some(check(&cached.obj(), id, secret, chrono::Utc::now()))
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`, split.
fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn check(secret_obj: &Value, id: &str, secret: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Identity, String> {
    if secret_obj["type"] != SECRET_TYPE {
        return Err("the Secret is not a bootstrap token".into());
    }
    if !secret_obj["metadata"]["deletionTimestamp"].is_null() {
        return Err("the bootstrap token is being deleted".into());
    }
    let data: BTreeMap<String, String> = secret_obj["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?).ok()?)))
        .collect();
    let get = |k: &str| data.get(k).map(String::as_str).unwrap_or_default();
    // Compared in constant time: the secret is the credential.
    if get("token-id") != id || !super::same(get("token-secret").as_bytes(), secret.as_bytes()) {
        return Err("bootstrap token id or secret does not match".into());
    }
    if let Some(exp) = data.get("expiration") {
        match chrono::DateTime::parse_from_rfc3339(exp) {
            Ok(t) if t > now => {}
            _ => return Err(format!("bootstrap token expired at {exp}")),
        }
    }
    if get("usage-bootstrap-authentication") != "true" {
        return Err("bootstrap token is not for authentication".into());
    }
    let mut groups = vec![GROUP.to_string()];
    for g in get("auth-extra-groups").split(',').map(str::trim).filter(|g| !g.is_empty()) {
        if !g.starts_with("system:bootstrappers:") {
            return Err(format!("bootstrap token has an invalid extra group {g:?}"));
        }
        if !groups.iter().any(|have| have == g) {
            groups.push(g.to_string());
        }
    }
    groups.push(super::AUTHENTICATED.to_string());
    Ok(Identity { user: format!("system:bootstrap:{id}"), uid: String::new(), groups, extra: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(extra: &[(&str, &str)]) -> Value {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = json!({"token-id": b("abcdef"), "token-secret": b("0123456789abcdef"), "usage-bootstrap-authentication": b("true")});
        for (k, v) in extra {
            data[*k] = json!(b(v));
        }
        json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}, "data": data})
    }

    #[test]
    fn token_shape() {
        assert_eq!(parse("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcdef.0123456789abcde"), None);
        assert_eq!(parse("a.b.c"), None);
    }

    #[test]
    fn rules() {
        let now = chrono::Utc::now();
        let id = check(&secret(&[("auth-extra-groups", "system:bootstrappers:kubeadm:default-node-token")]), "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(id.user, "system:bootstrap:abcdef");
        assert_eq!(id.groups, ["system:bootstrappers", "system:bootstrappers:kubeadm:default-node-token", "system:authenticated"]);
        assert!(check(&secret(&[]), "abcdef", "fedcba9876543210", now).is_err(), "wrong secret");
        assert!(check(&secret(&[("expiration", "2000-01-01T00:00:00Z")]), "abcdef", "0123456789abcdef", now).unwrap_err().contains("expired"));
        assert!(check(&secret(&[("expiration", "2999-01-01T00:00:00Z")]), "abcdef", "0123456789abcdef", now).is_ok());
        assert!(check(&secret(&[("usage-bootstrap-authentication", "false")]), "abcdef", "0123456789abcdef", now).is_err());
        assert!(check(&secret(&[("auth-extra-groups", "system:masters")]), "abcdef", "0123456789abcdef", now).is_err(), "only system:bootstrappers:* groups");
        let mut opaque = secret(&[]);
        opaque["type"] = json!("Opaque");
        assert!(check(&opaque, "abcdef", "0123456789abcdef", now).is_err());
    }
}
