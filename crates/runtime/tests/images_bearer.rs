//! Bearer-token auth against a real `docker-registry` configured for token
//! auth: the registry answers 401 with a `WWW-Authenticate: Bearer` challenge,
//! the client gets a token (with basic credentials) from the token endpoint
//! this test serves on 127.0.0.1, and retries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use runtime::cri::{ImageService, RegistryAuth};
use runtime::images::testimage::{self, TestRegistry};
use runtime::images::{ImageResolver, Store};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "skiff-test-issuer";
const SERVICE: &str = "skiff-test-registry";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Issues ES256 JWTs the registry trusts through the cert in its bundle.
struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl Issuer {
    fn new() -> (Issuer, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["skiff-token-signer".into()]).unwrap().self_signed(&key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng).unwrap();
        (Issuer { key: signer, cert_der: cert.der().to_vec() }, cert.pem())
    }

    fn token(&self, repo: &str, actions: &[&str]) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"alg": "ES256", "typ": "JWT", "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let claims = json!({
            "iss": ISSUER, "sub": "puller", "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", std::process::id()),
            "access": [{"type": "repository", "name": repo, "actions": actions}],
        });
        let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig = self.key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", b64url(sig.as_ref()))
    }
}

/// A token endpoint: a pull token for the scope's repository when the basic
/// credentials are puller:s3cret, 401 otherwise. Counts the tokens issued.
async fn serve_tokens(listener: tokio::net::TcpListener, issuer: Arc<Issuer>, issued: Arc<AtomicUsize>) {
    let good = format!("authorization: {}", testimage::basic_authorization("puller", "s3cret")).to_ascii_lowercase();
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { return };
        let mut buf = vec![0u8; 8192];
        let mut len = 0;
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
            match conn.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
        let request = String::from_utf8_lossy(&buf[..len]).to_string();
        let repo = request
            .split("scope=repository%3A")
            .nth(1)
            .and_then(|s| s.split("%3A").next())
            .map(|r| r.replace("%2F", "/"))
            .unwrap_or_default();
        let authorized = request.to_ascii_lowercase().lines().any(|l| l.trim() == good);
        let (status, body) = if authorized {
            issued.fetch_add(1, Ordering::SeqCst);
            ("200 OK", json!({"token": issuer.token(&repo, &["pull"])}).to_string())
        } else {
            ("401 Unauthorized", "{}".to_string())
        };
        let response = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let _ = conn.write_all(response.as_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_with_a_bearer_token_from_the_registrys_token_endpoint() {
    let (issuer, cert_pem) = Issuer::new();
    let issuer = Arc::new(issuer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let issued = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(serve_tokens(listener, issuer.clone(), issued.clone()));

    let dir = tempfile::Builder::new().prefix("skiff-registry-").tempdir().unwrap();
    let bundle = dir.path().join("token-ca.pem");
    std::fs::write(&bundle, cert_pem).unwrap();
    let auth = format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        bundle.display()
    );
    let registry = TestRegistry::start_with_config(Some(dir), &auth).unwrap();
    let push_token = format!("Bearer {}", issuer.token("secure/app", &["pull", "push"]));
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    testimage::push_layers_as(&registry.addr, "secure/app", "v1", &[&layer], json!({}), Some(&push_token)).await.unwrap();

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path().join("images"), vec![]).unwrap();
    let name = format!("{}/secure/app:v1", registry.addr);
    assert!(store.pull_image(&name, &[]).await.is_err(), "anonymous token requests are refused");
    let wrong = RegistryAuth { username: Some("puller".into()), password: Some("wrong".into()), ..Default::default() };
    let good = RegistryAuth { username: Some("puller".into()), password: Some("s3cret".into()), ..Default::default() };
    // Credentials are tried in order: the wrong one fails at the token endpoint, the next works.
    let id = store.pull_image(&name, &[wrong, good]).await.unwrap();
    let layer_dir = &store.resolve(&id).unwrap().layers[0];
    assert!(layer_dir.join("bin/busybox").exists());
    assert_eq!(issued.load(Ordering::SeqCst), 1, "one token serves the whole pull");
    server.abort();
}
