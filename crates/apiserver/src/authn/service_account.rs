//! ServiceAccount tokens: the claims we issue (upstream's `kubernetes.io`
//! private claim) and the authenticator that accepts them while the
//! ServiceAccount, and the Pod, Secret or Node a token is bound to, still
//! exist with the uid the token names.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{cached, jwt, meta_of, Authenticator, LEGACY_ISSUER};
use crate::registry::Registry;
use crate::serve::Identity;

/// An object a token names: (name, uid).
pub type Ref = (String, String);

/// What a bound token is for.
pub struct Binding {
    pub namespace: String,
    pub service_account: Ref,
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    pub node: Option<Ref>,
}

/// The claims of a token issued at `now` for `lifetime` seconds;
/// `warn_after` marks a token whose lifetime was extended (see TokenRequest).
pub fn claims(issuer: &str, audiences: &[String], b: &Binding, now: i64, lifetime: i64, warn_after: Option<i64>) -> Value {
    let named = |r: &Ref| json!({"name": r.0, "uid": r.1});
    let mut private = json!({"namespace": b.namespace, "serviceaccount": named(&b.service_account)});
    for (k, r) in [("pod", &b.pod), ("secret", &b.secret), ("node", &b.node)] {
        if let Some(r) = r {
            private[k] = named(r);
        }
    }
    if let Some(w) = warn_after {
        private["warnafter"] = json!(w);
    }
    json!({
        "aud": audiences, "exp": now + lifetime, "iat": now, "iss": issuer,
        "jti": uuid::Uuid::new_v4().to_string(), "nbf": now,
        "sub": subject(&b.namespace, &b.service_account.0),
        "kubernetes.io": private,
    })
}

pub fn subject(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// The user a ServiceAccount's token authenticates as.
pub fn identity(ns: &str, name: &str, uid: &str, extra: BTreeMap<String, Vec<String>>) -> Identity {
    Identity {
        user: subject(ns, name),
        uid: uid.to_string(),
        groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), super::AUTHENTICATED.into()],
        extra,
    }
}

pub async fn authenticate(auth: &Authenticator, reg: &Registry, token: &str) -> Result<Identity, String> {
    let claims = auth.key.verify(token)?;
    let now = chrono::Utc::now().timestamp();
    jwt::check_claims(&claims, now, &[auth.issuer.as_str(), LEGACY_ISSUER], &auth.audiences)?;
    if claims["iss"] == LEGACY_ISSUER {
        return super::legacy::authenticate(reg, token, &claims).await;
    }
    let k = &claims["kubernetes.io"];
    let str_at = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let ns = str_at(&k["namespace"]);
    let (sa, sa_uid) = (str_at(&k["serviceaccount"]["name"]), str_at(&k["serviceaccount"]["uid"]));
    if ns.is_empty() || sa.is_empty() || claims["sub"] != subject(&ns, &sa).as_str() {
        return Err("token subject and private claims disagree".into());
    }
    live(reg, "serviceaccounts", Some(&ns), &sa, &sa_uid, now).await?;
    let mut extra = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        extra.insert(format!("authentication.kubernetes.io/{k}"), vec![v]);
    };
    if let Some(pod) = k["pod"].as_object() {
        let (name, uid) = (str_at(&pod["name"]), str_at(&pod["uid"]));
        live(reg, "pods", Some(&ns), &name, &uid, now).await?;
        put("pod-name", name);
        put("pod-uid", uid);
    }
    if let Some(secret) = k["secret"].as_object() {
        live(reg, "secrets", Some(&ns), &str_at(&secret["name"]), &str_at(&secret["uid"]), now).await?;
    }
    if let Some(node) = k["node"].as_object() {
        let (name, uid) = (str_at(&node["name"]), str_at(&node["uid"]));
        live(reg, "nodes", None, &name, &uid, now).await?;
        put("node-name", name);
        put("node-uid", uid);
    }
    if let Some(jti) = claims["jti"].as_str() {
        put("credential-id", format!("JTI={jti}"));
    }
    Ok(identity(&ns, &sa, &sa_uid, extra))
}

/// The object exists with `uid` and was not deleted more than a minute ago
/// (upstream's grace for a pod's containers to finish with their token).
pub(super) async fn live(reg: &Registry, plural: &str, ns: Option<&str>, name: &str, uid: &str, now: i64) -> Result<(), String> {
    let what = || match ns {
        Some(ns) => format!("{plural} {ns}/{name}"),
        None => format!("{plural} {name}"),
    };
    let Some(c) = cached(reg, plural, ns, name).await else { return Err(format!("{} not found", what())) };
    let meta = meta_of(&c);
    if !uid.is_empty() && meta.uid != uid {
        return Err(format!("{} has uid {}, the token names {uid}", what(), meta.uid));
    }
    let deleted = meta.deletion_timestamp.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    if deleted.is_some_and(|t| t.timestamp() < now - 60) {
        return Err(format!("{} has been deleted", what()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_claims() {
        let b = Binding {
            namespace: "ns".into(),
            service_account: ("sa".into(), "u1".into()),
            pod: Some(("web".into(), "u2".into())),
            secret: None,
            node: Some(("n1".into(), "u3".into())),
        };
        let c = claims("https://iss", &["https://iss".to_string()], &b, 100, 3600, None);
        assert_eq!(c["sub"], "system:serviceaccount:ns:sa");
        assert_eq!((c["iat"].as_i64(), c["nbf"].as_i64(), c["exp"].as_i64()), (Some(100), Some(100), Some(3700)));
        assert_eq!(c["kubernetes.io"], json!({"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u1"},
            "pod": {"name": "web", "uid": "u2"}, "node": {"name": "n1", "uid": "u3"}}));
        assert!(c["jti"].as_str().is_some_and(|j| j.len() == 36));
        let id = identity("ns", "sa", "u1", BTreeMap::new());
        assert_eq!(id.groups, ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"]);
    }
}
