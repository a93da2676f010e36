//! Tests of the cluster PKI: files, reuse, SANs, node and kubelet certificates.
use super::*;
use std::os::unix::fs::PermissionsExt;

fn extra() -> Vec<String> {
    vec!["10.43.0.1".to_string()]
}

fn cert_sans(pem: &str) -> BTreeSet<San> {
    let der = parse_certs(pem).unwrap().remove(0);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    let mut out = BTreeSet::new();
    for n in &x
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match n {
            x509_parser::extensions::GeneralName::DNSName(d) => {
                out.insert(San::Dns(d.to_string()));
            }
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                out.insert(San::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())));
            }
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 16 => {
                out.insert(San::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())));
            }
            _ => {}
        }
    }
    out
}

fn subject(pem: &str) -> (Vec<String>, Vec<String>) {
    let der = parse_certs(pem).unwrap().remove(0);
    let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cn = x
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let o = x
        .subject()
        .iter_organization()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (cn, o)
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn ensure_twice_reuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server/tls");
    let a = ensure(&dir, &extra()).unwrap();
    let b = ensure(&dir, &extra()).unwrap();
    assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
    assert_eq!(a.ca_key_pem, b.ca_key_pem);
    assert_eq!(a.server_cert_pem, b.server_cert_pem);
    assert_eq!(a.server_key_pem, b.server_key_pem);
    assert_eq!(a.admin_cert_pem, b.admin_cert_pem);
    assert_eq!(a.admin_key_pem, b.admin_key_pem);
    let (cn, _) = subject(&a.ca_cert_pem);
    assert!(cn[0].starts_with("skiff-server-ca@"), "{cn:?}");
    for f in [
        "ca.crt",
        "ca.key",
        "serving.crt",
        "serving.key",
        "admin.crt",
        "admin.key",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert_eq!(fs::read_to_string(&a.ca_cert_path).unwrap(), a.ca_cert_pem);
    assert!(!dir.join("ca.key.tmp").exists());
}

#[test]
fn key_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &[]).unwrap();
    for p in [&pki.ca_key_path, &pki.server_key_path, &pki.admin_key_path] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    for p in [
        &pki.ca_cert_path,
        &pki.server_cert_path,
        &pki.admin_cert_path,
    ] {
        assert_eq!(mode(p), 0o644, "{}", p.display());
    }
}

#[test]
fn serving_cert_has_the_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(
        tmp.path(),
        &[
            "10.43.0.1".into(),
            "My.Example.COM".into(),
            "[fd00::1]".into(),
        ],
    )
    .unwrap();
    let sans = cert_sans(&pki.server_cert_pem);
    let want = [
        San::Dns("localhost".into()),
        San::Dns("kubernetes".into()),
        San::Dns("kubernetes.default".into()),
        San::Dns("kubernetes.default.svc".into()),
        San::Dns("kubernetes.default.svc.cluster.local".into()),
        San::Dns("my.example.com".into()),
        San::Ip("127.0.0.1".parse().unwrap()),
        San::Ip("::1".parse().unwrap()),
        San::Ip("10.43.0.1".parse().unwrap()),
        San::Ip("fd00::1".parse().unwrap()),
    ];
    for w in &want {
        assert!(sans.contains(w), "missing {w:?} in {sans:?}");
    }
    if let Some(h) = hostname() {
        assert!(
            sans.contains(&San::parse(&h).unwrap()),
            "hostname {h} missing"
        );
    }
    for ip in interface_addrs() {
        assert!(
            sans.contains(&San::Ip(ip)),
            "interface address {ip} missing"
        );
    }
    let (cn, o) = subject(&pki.admin_cert_pem);
    assert_eq!(cn, vec!["system:admin"]);
    assert_eq!(o, vec!["system:masters"]);
}

#[test]
fn new_san_reissues_only_the_serving_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ensure(tmp.path(), &extra()).unwrap();
    let b = ensure(tmp.path(), &["10.43.0.1".into(), "api.example.org".into()]).unwrap();
    assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
    assert_eq!(a.admin_cert_pem, b.admin_cert_pem);
    assert_ne!(a.server_cert_pem, b.server_cert_pem);
    assert_eq!(
        a.server_key_pem, b.server_key_pem,
        "the serving key is kept"
    );
    let sans = cert_sans(&b.server_cert_pem);
    assert!(sans.contains(&San::Dns("api.example.org".into())));
    assert!(sans.contains(&San::Ip("10.43.0.1".parse().unwrap())));
    // The re-issued cert is signed by the stored CA.
    let ca = CaSigner::load(&b.ca_cert_pem, &b.ca_key_pem).unwrap();
    check_leaf(&b.server_cert_pem, &b.server_key_pem, &ca).unwrap();
    // Dropping the extra name later keeps the cert (names are only added).
    let c = ensure(tmp.path(), &extra()).unwrap();
    assert_eq!(b.server_cert_pem, c.server_cert_pem);
    server_tls_config(&c).unwrap();
}

#[test]
fn foreign_serving_cert_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ensure(tmp.path(), &extra()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = ensure(other.path(), &extra()).unwrap();
    fs::copy(&o.server_cert_path, &a.server_cert_path).unwrap();
    fs::copy(&o.server_key_path, &a.server_key_path).unwrap();
    let b = ensure(tmp.path(), &extra()).unwrap();
    assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
    let ca = CaSigner::load(&b.ca_cert_pem, &b.ca_key_pem).unwrap();
    check_leaf(&b.server_cert_pem, &b.server_key_pem, &ca).unwrap();
    assert!(check_leaf(&o.server_cert_pem, &o.server_key_pem, &ca).is_err());
}

#[test]
fn ca_without_key_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ensure(tmp.path(), &[]).unwrap();
    fs::remove_file(&a.ca_key_path).unwrap();
    assert!(ensure(tmp.path(), &[]).is_err());
}

#[test]
fn kubeconfig_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &[]).unwrap();
    let text = kubeconfig(&pki, "https://[::1]:6443");
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(v["current-context"].as_str(), Some("default"));
    assert_eq!(v["clusters"][0]["name"].as_str(), Some("default"));
    assert_eq!(
        v["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://[::1]:6443")
    );
    assert_eq!(
        v["contexts"][0]["context"]["cluster"].as_str(),
        Some("default")
    );
    assert_eq!(
        v["contexts"][0]["context"]["user"].as_str(),
        Some("default")
    );
    let dec = |s: &serde_yaml::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        dec(&v["clusters"][0]["cluster"]["certificate-authority-data"]),
        pki.ca_cert_pem
    );
    assert_eq!(
        dec(&v["users"][0]["user"]["client-certificate-data"]),
        pki.admin_cert_pem
    );
    assert_eq!(
        dec(&v["users"][0]["user"]["client-key-data"]),
        pki.admin_key_pem
    );

    let path = tmp.path().join("a/b/kubeconfig.yaml");
    write_kubeconfig(&path, &text).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    // Replacing a looser existing file tightens it.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_kubeconfig(&path, &text).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn issued_client_cert_has_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure(tmp.path(), &[]).unwrap();
    let (cert, key) = pki.issue_client_cert("alice", &["devs"]).unwrap();
    let (cn, o) = subject(&cert);
    assert_eq!(cn, vec!["alice"]);
    assert_eq!(o, vec!["devs"]);
    assert!(pki.issue_client_cert("bob", &["a", "b"]).is_err());
    let ca = CaSigner::load(&pki.ca_cert_pem, &pki.ca_key_pem).unwrap();
    check_leaf(&cert, &key, &ca).unwrap();
}

#[test]
fn kubelet_client_cert_is_kept_and_node_certs_carry_the_node() {
    let tmp = tempfile::tempdir().unwrap();
    let a = ensure(tmp.path(), &[]).unwrap();
    let b = ensure(tmp.path(), &[]).unwrap();
    assert_eq!(a.kubelet_client_cert_pem, b.kubelet_client_cert_pem);
    assert_eq!(a.kubelet_client_key_pem, b.kubelet_client_key_pem);
    assert_eq!(mode(&tmp.path().join("kubelet-client.key")), 0o600);
    assert_eq!(subject(&a.kubelet_client_cert_pem), (vec![KUBELET_CLIENT_USER.to_string()], vec!["system:masters".to_string()]));
    kubelet_client_tls_config(&a).unwrap();

    let ip: IpAddr = "10.0.0.7".parse().unwrap();
    let (cert, key) = a.issue_node_serving_cert("node-1", &[ip]).unwrap();
    assert_eq!(subject(&cert), (vec!["system:node:node-1".to_string()], vec!["system:nodes".to_string()]));
    assert_eq!(cert_sans(&cert), BTreeSet::from([San::Dns("node-1".into()), San::Ip(ip)]));
    let ca = CaSigner::load(&a.ca_cert_pem, &a.ca_key_pem).unwrap();
    check_leaf(&cert, &key, &ca).unwrap();
}
