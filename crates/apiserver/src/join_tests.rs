use std::os::unix::fs::PermissionsExt;

use super::*;

fn pki() -> (tempfile::TempDir, Pki) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&tmp.path().join("tls"), &[]).unwrap();
    (tmp, pki)
}

fn x509(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
}

/// (CN, O, IP SANs, DNS SANs, public key) of a certificate.
fn describe(pem: &str) -> (String, Vec<String>, Vec<IpAddr>, Vec<String>, Vec<u8>) {
    let der = x509(pem);
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cn = c.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
    let o = c.subject().iter_organization().map(|a| a.as_str().unwrap().to_string()).collect();
    let (mut ips, mut dns) = (vec![], vec![]);
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    (cn, o, ips, dns, c.public_key().raw.to_vec())
}

fn signed_by_ca(cert_pem: &str, ca_pem: &str) -> bool {
    let (ca_der, der) = (x509(ca_pem), x509(cert_pem));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    c.verify_signature(Some(ca.public_key())).is_ok()
}

#[test]
fn token_round_trips_and_pins_the_ca() {
    let (_tmp, pki) = pki();
    let token = JoinToken::new(&pki.ca_cert_pem, "s3cret").unwrap();
    let text = token.to_string();
    assert!(text.starts_with("K10") && text.ends_with("::server:s3cret"), "{text}");
    assert_eq!(text.len(), 3 + 64 + "::server:s3cret".len());
    let parsed = JoinToken::parse(&format!("  {text}\n")).unwrap();
    assert_eq!(parsed, token);
    assert!(parsed.pins(pki.ca_cert_pem.as_bytes()));
    let (_tmp2, other) = self::pki();
    assert!(!parsed.pins(other.ca_cert_pem.as_bytes()));
    // Upper-case hex (hand-edited) still pins.
    let upper = format!("K10{}::server:s3cret", token.ca_hash.to_uppercase());
    assert!(JoinToken::parse(&upper).unwrap().pins(pki.ca_cert_pem.as_bytes()));
}

#[test]
fn malformed_tokens_say_what_is_wanted() {
    let hash = "a".repeat(64);
    for (bad, says) in [
        ("0123456789abcdef", "does not pin the cluster CA"),
        (&format!("K10{hash}"), "malformed join token"),
        (&format!("K10abc::server:x"), "64 hex digits"),
        (&format!("K10{}::server:x", "g".repeat(64)), "64 hex digits"),
        (&format!("K10{hash}::node:x"), "no `server:`"),
        (&format!("K10{hash}::server:"), "non-empty"),
        (&format!("K10{hash}::server:a b"), "without spaces"),
    ] {
        let err = format!("{:#}", JoinToken::parse(bad).unwrap_err());
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

#[test]
fn token_file_is_created_private_reused_and_replaced_by_the_flag() {
    let (tmp, pki) = pki();
    let path = tmp.path().join("server/token");
    let first = ensure_token(&path, None, &pki.ca_cert_pem).unwrap();
    assert_eq!(first.secret.len(), 32);
    assert!(first.pins(pki.ca_cert_pem.as_bytes()));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{first}\n"));
    assert_eq!(ensure_token(&path, None, &pki.ca_cert_pem).unwrap(), first, "reused on restart");

    let chosen = ensure_token(&path, Some("my-own-secret"), &pki.ca_cert_pem).unwrap();
    assert_eq!(chosen.secret, "my-own-secret");
    assert_eq!(JoinToken::parse(&std::fs::read_to_string(&path).unwrap()).unwrap(), chosen);
    // A whole token is accepted for this CA, refused for another.
    let whole = JoinToken::new(&pki.ca_cert_pem, "whole").unwrap().to_string();
    assert_eq!(ensure_token(&path, Some(&whole), &pki.ca_cert_pem).unwrap().secret, "whole");
    let (_tmp2, other) = self::pki();
    let foreign = JoinToken::new(&other.ca_cert_pem, "whole").unwrap().to_string();
    assert!(format!("{:#}", ensure_token(&path, Some(&foreign), &pki.ca_cert_pem).unwrap_err()).contains("another cluster CA"));
    // A damaged file is an error, not silently replaced.
    std::fs::write(&path, "garbage").unwrap();
    assert!(ensure_token(&path, None, &pki.ca_cert_pem).is_err());
}

#[test]
fn csrs_are_signed_with_the_servers_subject_and_the_agents_key() {
    let (_tmp, pki) = pki();
    // The CSR asks for more than a node may have: only its key is used.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "system:admin");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let client = pki.sign_node_csr(&csr, "node-a", None).unwrap();
    let (cn, o, ips, dns, public_key) = describe(&client);
    assert_eq!((cn.as_str(), o), ("system:node:node-a", vec!["system:nodes".to_string()]));
    assert!(ips.is_empty() && dns.is_empty(), "{ips:?} {dns:?}");
    assert_eq!(public_key, key.public_key_der());
    assert!(signed_by_ca(&client, &pki.ca_cert_pem));

    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let serving = pki.sign_node_csr(&csr, "node-a", Some(&[ip])).unwrap();
    let (cn, _, ips, dns, public_key) = describe(&serving);
    assert_eq!(cn, "system:node:node-a");
    assert_eq!((ips, dns), (vec![ip], vec!["node-a".to_string()]));
    assert_eq!(public_key, key.public_key_der());
    assert!(signed_by_ca(&serving, &pki.ca_cert_pem));

    assert!(pki.sign_node_csr("not a csr", "node-a", None).is_err());
}

fn joiner(pki: &Pki) -> Joiner {
    Joiner { secret: "right".into(), cluster_cidr: "10.42.0.0/16".into(), pki: pki.clone() }
}

fn join_request(bearer: Option<&str>, body: &JoinRequest) -> Request {
    let mut req = http::Request::post(JOIN_PATH);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    req.body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
}

async fn answer(joiner: Option<&Joiner>, req: Request) -> (u16, serde_json::Value) {
    let response = handle(joiner, req).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into())))
}

#[tokio::test]
async fn the_endpoint_checks_the_token_and_signs_for_the_node() {
    let (_tmp, pki) = pki();
    let joiner = joiner(&pki);
    let (client_key, client_csr) = new_key_and_csr("node-b").unwrap();
    let (_serving_key, serving_csr) = new_key_and_csr("node-b").unwrap();
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let request = JoinRequest { node_name: "node-b".into(), addresses: vec![ip], client_csr, serving_csr };

    for bearer in [None, Some("wrong"), Some("righ"), Some("right2")] {
        let (status, body) = answer(Some(&joiner), join_request(bearer, &request)).await;
        assert_eq!(status, 401, "{bearer:?}");
        assert_eq!((body["kind"].as_str(), body["reason"].as_str()), (Some("Status"), Some("Unauthorized")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("join token"), "{body}");
    }

    let (status, body) = answer(Some(&joiner), join_request(Some("right"), &request)).await;
    assert_eq!(status, 200, "{body}");
    let response: JoinResponse = serde_json::from_value(body).unwrap();
    assert_eq!(response.ca_cert, pki.ca_cert_pem);
    assert_eq!(response.cluster_cidr, "10.42.0.0/16");
    let (cn, o, _, _, public_key) = describe(&response.client_cert);
    assert_eq!((cn.as_str(), o), ("system:node:node-b", vec!["system:nodes".to_string()]));
    assert_eq!(public_key, rcgen::KeyPair::from_pem(&client_key).unwrap().public_key_der());
    assert_eq!(describe(&response.serving_cert).2, vec![ip]);
    assert!(signed_by_ca(&response.serving_cert, &pki.ca_cert_pem));

    let bad_name = JoinRequest { node_name: "Node_B".into(), ..request.clone() };
    let (status, body) = answer(Some(&joiner), join_request(Some("right"), &bad_name)).await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("BadRequest")), "{body}");
    let bad_csr = JoinRequest { client_csr: "nope".into(), ..request.clone() };
    assert_eq!(answer(Some(&joiner), join_request(Some("right"), &bad_csr)).await.0, 400);
    assert_eq!(answer(None, join_request(Some("right"), &request)).await.0, 503);
}

#[tokio::test]
async fn cacerts_serves_the_pem_the_token_pins() {
    let (_tmp, pki) = pki();
    let joiner = joiner(&pki);
    let response = handle(Some(&joiner), http::Request::get(CACERTS_PATH).body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    assert!(JoinToken::new(&pki.ca_cert_pem, "x").unwrap().pins(&bytes));
    let (status, _) = answer(Some(&joiner), http::Request::delete(CACERTS_PATH).body(Body::empty()).unwrap()).await;
    assert_eq!(status, 405);
}

#[test]
fn node_names_are_dns_subdomains() {
    for ok in ["a", "node-1", "n1.example.com"] {
        assert!(is_node_name(ok), "{ok}");
    }
    for bad in ["", "Node", "-a", "a-", "a..b", "a_b", &"a".repeat(64)] {
        assert!(!is_node_name(bad), "{bad}");
    }
}
