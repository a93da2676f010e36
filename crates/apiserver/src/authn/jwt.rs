//! ServiceAccount JSON Web Tokens: signed ES256 with the server's own P-256
//! key; verification is pinned to that key and that algorithm, so `alg:
//! none`, HMAC tricks and tokens of other keys are all refused.

use anyhow::{anyhow, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

pub const ALG: &str = "ES256";
/// Clock skew tolerated on `exp` and `nbf`, as upstream's validator.
pub const LEEWAY_SECONDS: i64 = 60;

/// The ServiceAccount signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// Upstream's key id: unpadded base64url of the SHA-256 of the public key's DER (PKIX).
    pub kid: String,
}

impl SigningKey {
    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as the PKI writes it).
    pub fn from_pem(pem: &str) -> Result<SigningKey> {
        let der = rustls_pemfile::private_key(&mut pem.as_bytes())
            .context("reading the service account key")?
            .ok_or_else(|| anyhow!("no private key in the service account key file"))?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_der(), &rng)
            .map_err(|e| anyhow!("the service account key must be an ECDSA P-256 PKCS#8 key: {e}"))?;
        let spki = rcgen::KeyPair::from_pem(pem).context("reading the service account public key")?.public_key_der();
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(SigningKey { pair, rng, kid })
    }

    /// A fresh key, PKCS#8 PEM.
    pub fn generate_pem() -> Result<String> {
        Ok(rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_pem())
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": ALG, "kid": self.kid});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.pair.sign(&self.rng, signing_input.as_bytes()).expect("ECDSA signing does not fail");
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// The claims of a token this key signed with ES256; checks nothing else.
    pub fn verify(&self, token: &str) -> Result<Value, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("not a JWS compact token");
        };
        let header: Value = decode_part(h)?;
        if header["alg"] != ALG {
            return Err("unexpected signing algorithm");
        }
        if header.get("kid").is_some_and(|k| k != self.kid.as_str()) {
            return Err("token signed by another key");
        }
        let sig = B64.decode(s).map_err(|_| "bad signature encoding")?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "invalid signature")?;
        decode_part(p)
    }

    /// The public key as a JSON Web Key (for `/openid/v1/jwks`).
    pub fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.pair.public_key().as_ref();
        json!({"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": ALG,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
    }
}

fn decode_part(part: &str) -> Result<Value, &'static str> {
    let bytes = B64.decode(part).map_err(|_| "bad base64url")?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| "bad JSON")?;
    if v.is_object() { Ok(v) } else { Err("not a JSON object") }
}

/// Whether `token` looks like a JWT at all (three parts, a JSON header), so
/// other bearer tokens are not reported as bad JWTs.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    matches!((parts.next(), parts.next(), parts.next(), parts.next()), (Some(h), Some(_), Some(_), None) if decode_part(h).is_ok())
}

/// The time, issuer and audience checks on verified claims, with leeway on
/// the times. `audiences`: the token must name at least one of them.
pub fn check_claims(claims: &Value, now: i64, issuers: &[&str], audiences: &[String]) -> Result<(), &'static str> {
    if !claims["iss"].as_str().is_some_and(|iss| issuers.contains(&iss)) {
        return Err("token issuer is not accepted");
    }
    // Legacy Secret tokens never expire and carry no audience.
    let legacy = claims["iss"] == super::LEGACY_ISSUER;
    match claims["exp"].as_i64() {
        Some(exp) if now > exp + LEEWAY_SECONDS => return Err("token has expired"),
        None if !legacy => return Err("token has no expiry"),
        _ => {}
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
        return Err("token is not valid yet");
    }
    if legacy {
        return Ok(());
    }
    let aud: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !aud.iter().any(|a| audiences.iter().any(|w| w == a)) {
        return Err("token audiences are not accepted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pem(&SigningKey::generate_pem().unwrap()).unwrap()
    }

    const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    fn claims(now: i64) -> Value {
        json!({"iss": ISS, "aud": [ISS], "sub": "system:serviceaccount:default:default", "iat": now, "nbf": now, "exp": now + 3600})
    }

    #[test]
    fn signs_and_verifies() {
        let k = key();
        let c = claims(1000);
        let token = k.sign(&c);
        assert!(looks_like_jwt(&token));
        assert_eq!(k.verify(&token).unwrap(), c);
        assert!(check_claims(&c, 1000, &[ISS], &[ISS.to_string()]).is_ok());
        let jwk = k.jwk();
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["kid"].as_str()), (Some("EC"), Some("P-256"), Some(k.kid.as_str())));
    }

    #[test]
    fn refuses_bad_tokens() {
        let (k, other) = (key(), key());
        let c = claims(1000);
        assert_eq!(k.verify(&other.sign(&c)), Err("token signed by another key"), "another key");
        // Another key with our kid: the signature still fails.
        let forged = other.sign(&c);
        let mut parts: Vec<&str> = forged.split('.').collect();
        let header = B64.encode(json!({"alg": ALG, "kid": k.kid}).to_string());
        parts[0] = &header;
        assert_eq!(k.verify(&parts.join(".")), Err("invalid signature"));
        // alg none, unsigned.
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode(c.to_string()));
        assert_eq!(k.verify(&none), Err("unexpected signing algorithm"));
        let hs = format!("{}.{}.c2ln", B64.encode(r#"{"alg":"HS256"}"#), B64.encode(c.to_string()));
        assert_eq!(k.verify(&hs), Err("unexpected signing algorithm"));
        // A tampered payload.
        let token = k.sign(&c);
        let parts: Vec<&str> = token.split('.').collect();
        let mut evil = c.clone();
        evil["sub"] = json!("system:serviceaccount:kube-system:admin");
        let tampered = format!("{}.{}.{}", parts[0], B64.encode(evil.to_string()), parts[2]);
        assert_eq!(k.verify(&tampered), Err("invalid signature"));
        assert!(k.verify("a.b").is_err() && k.verify("").is_err());
        assert!(!looks_like_jwt("abcdef.0123456789abcdef"));
    }

    #[test]
    fn checks_time_issuer_and_audience() {
        let c = claims(1000);
        let aud = [ISS.to_string()];
        assert_eq!(check_claims(&c, 1000 + 3600 + LEEWAY_SECONDS + 1, &[ISS], &aud), Err("token has expired"));
        assert!(check_claims(&c, 1000 + 3600 + 30, &[ISS], &aud).is_ok(), "within the leeway");
        assert_eq!(check_claims(&c, 1000 - LEEWAY_SECONDS - 1, &[ISS], &aud), Err("token is not valid yet"));
        assert_eq!(check_claims(&c, 1000, &[ISS], &["vault".to_string()]), Err("token audiences are not accepted"));
        assert_eq!(check_claims(&c, 1000, &["https://other"], &aud), Err("token issuer is not accepted"));
        let mut no_exp = c.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check_claims(&no_exp, 1000, &[ISS], &aud), Err("token has no expiry"));
    }
}
