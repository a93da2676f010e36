use super::*;

fn parse(yaml: &str) -> Registries {
    Registries::parse(yaml, Path::new("/")).unwrap()
}

fn parse_err(yaml: &str) -> String {
    match Registries::parse(yaml, Path::new("/")) {
        Ok(_) => panic!("{yaml:?} should be rejected"),
        Err(e) => format!("{e:#}"),
    }
}

/// (base, repository, mirror) of each endpoint for `image`.
fn endpoints(r: &Registries, image: &str) -> Vec<(String, String, bool)> {
    endpoints_insecure(r, image, &[])
}

fn endpoints_insecure(r: &Registries, image: &str, insecure: &[&str]) -> Vec<(String, String, bool)> {
    let insecure: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
    r.endpoints(&Reference::parse(image).unwrap(), &insecure).into_iter().map(|e| (e.base, e.repository, e.mirror)).collect()
}

fn ep(base: &str, repo: &str, mirror: bool) -> (String, String, bool) {
    (base.to_string(), repo.to_string(), mirror)
}

#[test]
fn no_file_or_empty_file_means_the_registry_itself() {
    let none = Registries::load(Path::new("/nonexistent/skiff/registries.yaml")).unwrap();
    assert!(none.is_empty() && none.source.is_none());
    for text in ["", "# nothing yet\n", "mirrors:\nconfigs:\n", "---\n"] {
        assert!(parse(text).is_empty(), "{text:?}");
    }
    assert_eq!(endpoints(&none, "nginx"), vec![ep("https://registry-1.docker.io/v2", "library/nginx", false)]);
    assert_eq!(endpoints(&none, "localhost:5000/x"), vec![ep("http://localhost:5000/v2", "x", false)]);
    assert_eq!(endpoints_insecure(&none, "reg.lan:5000/team/app:v1", &["reg.lan:5000"]), vec![ep("http://reg.lan:5000/v2", "team/app", false)]);
}

#[test]
fn mirrors_in_order_then_the_registry_with_rewrites_for_mirrors_only() {
    let r = parse(
        r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "https://mirror.example.com:8443"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
      "^rancher/mirrored-(.*)": "never-reached/$1"
"#,
    );
    assert_eq!(
        endpoints(&r, "rancher/mirrored-pause:3.6"),
        vec![
            ep("http://127.0.0.1:5000/v2", "mirrorproject/rancher-images/mirrored-pause", true),
            ep("https://mirror.example.com:8443/v2", "mirrorproject/rancher-images/mirrored-pause", true),
            ep("https://registry-1.docker.io/v2", "rancher/mirrored-pause", false),
        ]
    );
    // No rule matches: the repository as named, `library/` included.
    assert_eq!(endpoints(&r, "busybox:stable")[0], ep("http://127.0.0.1:5000/v2", "library/busybox", true));
    assert_eq!(endpoints(&r, "docker.io/library/alpine")[1].1, "library/alpine");
    // Another registry has no mirror.
    assert_eq!(endpoints(&r, "quay.io/coreos/etcd:v3"), vec![ep("https://quay.io/v2", "coreos/etcd", false)]);
}

#[test]
fn wildcard_applies_to_registries_without_their_own_entry() {
    let r = parse(
        r#"
mirrors:
  "*":
    endpoint: ["https://all.example.com"]
  registry.k8s.io:
    endpoint: ["https://k8s-mirror.example.com"]
"#,
    );
    assert_eq!(endpoints(&r, "quay.io/x/y")[0], ep("https://all.example.com/v2", "x/y", true));
    assert_eq!(endpoints(&r, "nginx")[0], ep("https://all.example.com/v2", "library/nginx", true));
    assert_eq!(endpoints(&r, "nginx")[1], ep("https://registry-1.docker.io/v2", "library/nginx", false));
    let k8s = endpoints(&r, "registry.k8s.io/pause:3.10");
    assert_eq!(k8s, vec![ep("https://k8s-mirror.example.com/v2", "pause", true), ep("https://registry.k8s.io/v2", "pause", false)]);
}

#[test]
fn endpoint_schemes_paths_and_docker_hub() {
    let r = parse(
        r#"
mirrors:
  a.example.com:
    endpoint:
      - "127.0.0.1:5000"
      - "localhost:443"
      - "mirror.lan:5000"
      - "https://m.example.com/some/path/"
      - "https://m2.example.com/v2/"
      - "HTTP://m3.example.com"
      - "docker.io"
      - "http://127.0.0.1:5000"
  docker.io:
    endpoint: ["https://registry-1.docker.io", "https://index.docker.io/v2"]
"#,
    );
    let bases: Vec<String> = endpoints_insecure(&r, "a.example.com/app", &["mirror.lan"]).into_iter().map(|e| e.0).collect();
    assert_eq!(
        bases,
        [
            "http://127.0.0.1:5000/v2",
            "https://localhost:443/v2",
            "http://mirror.lan:5000/v2",
            "https://m.example.com/some/path",
            "https://m2.example.com/v2",
            "http://m3.example.com/v2",
            "https://registry-1.docker.io/v2",
            "https://a.example.com/v2",
        ]
    );
    // Written as the registry itself: tried once, in its place.
    let hub = endpoints(&r, "busybox");
    assert_eq!(hub, vec![ep("https://registry-1.docker.io/v2", "library/busybox", true)]);
}

#[test]
fn configs_are_found_by_endpoint_host_then_registry_then_wildcard() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registries::parse(
        r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com:5000"]
configs:
  "mirror.example.com:5000":
    auth: {username: mirror-user, password: mirror-pass}
  docker.io:
    auth: {auth: aHViOnB3}
  "*":
    auth: {identitytoken: refresh-me}
"#,
        dir.path(),
    )
    .unwrap();
    let eps = r.endpoints(&Reference::parse("nginx").unwrap(), &[]);
    assert_eq!(eps[0].auth.as_ref().unwrap().username.as_deref(), Some("mirror-user"));
    assert_eq!(eps[1].auth.as_ref().unwrap().auth.as_deref(), Some("aHViOnB3"));
    let quay = r.endpoints(&Reference::parse("quay.io/a/b").unwrap(), &[]);
    assert_eq!(quay[0].auth.as_ref().unwrap().identity_token.as_deref(), Some("refresh-me"));
    assert!(eps.iter().all(|e| e.client.is_none()), "no tls section: the shared client");
}

#[test]
fn tls_settings_build_a_client_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mirror.example.com".into()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("client-key.pem"), key.serialize_pem()).unwrap();
    let yaml = r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com"]
configs:
  mirror.example.com:
    tls:
      ca_file: ca.pem
      cert_file: client.pem
      key_file: client-key.pem
  other.example.com:
    tls:
      insecure_skip_verify: true
"#;
    let r = Registries::parse(yaml, dir.path()).unwrap();
    let eps = r.endpoints(&Reference::parse("nginx").unwrap(), &[]);
    assert!(eps[0].client.is_some() && eps[1].client.is_none());
    assert!(r.endpoints(&Reference::parse("other.example.com/x").unwrap(), &[])[0].client.is_some());

    std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
    let err = format!("{:#}", Registries::parse(yaml, dir.path()).err().unwrap());
    assert!(err.contains(r#"configs."mirror.example.com""#) && err.contains("tls.ca_file") && err.contains("ca.pem"), "{err}");
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let err = format!("{:#}", Registries::parse(yaml, dir.path()).err().unwrap());
    assert!(err.contains("tls.ca_file"), "{err}");
}

#[test]
fn malformed_files_name_the_field() {
    let e = parse_err("mirrors:\n  docker.io:\n    endpoints: [\"http://x\"]\n");
    assert!(e.contains("mirrors") && e.contains("endpoints") && e.contains("unknown field"), "{e}");
    let e = parse_err("mirrors:\n  docker.io:\n    endpoint: \"http://x\"\n");
    assert!(e.contains("mirrors.docker.io.endpoint") && e.contains("invalid type"), "{e}");
    let e = parse_err("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n");
    assert!(e.contains(r#"mirrors."docker.io".endpoint[0]"#) && e.contains("ftp"), "{e}");
    let e = parse_err("mirrors:\n  docker.io:\n    rewrite:\n      \"^(unclosed\": \"x\"\n");
    assert!(e.contains(r#"mirrors."docker.io".rewrite."^(unclosed""#) && e.contains("regular expression"), "{e}");
    let e = parse_err("mirrors:\n  \"https://docker.io\":\n    endpoint: [\"x.example.com\"]\n");
    assert!(e.contains("host[:port]"), "{e}");
    let e = parse_err("configs:\n  r.example.com:\n    auth: {username: u}\n");
    assert!(e.contains(r#"configs."r.example.com""#) && e.contains("username and password"), "{e}");
    let e = parse_err("configs:\n  r.example.com:\n    auth: {auth: \"***\"}\n");
    assert!(e.contains("auth.auth") && e.contains("base64"), "{e}");
    let e = parse_err("configs:\n  r.example.com:\n    tls: {cert_file: /c.pem}\n");
    assert!(e.contains("key_file"), "{e}");
    let e = parse_err("mirrors: [1, 2]\n");
    assert!(e.contains("mirrors") && e.contains("invalid type"), "{e}");
    let e = parse_err("mirrors:\n  docker.io: {endpoint: [\"a\"]\n");
    assert!(e.contains("YAML"), "{e}");

    // Through load: the file's name comes first.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registries.yaml");
    std::fs::write(&path, "mirror:\n  docker.io: {}\n").unwrap();
    let e = format!("{:#}", Registries::load(&path).err().unwrap());
    assert!(e.starts_with(&format!("registries file {}", path.display())) && e.contains("unknown field `mirror`"), "{e}");
    std::fs::write(&path, "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\n").unwrap();
    let ok = Registries::load(&path).unwrap();
    assert_eq!(ok.source.as_deref(), Some(path.as_path()));
    assert_eq!(ok.describe(), vec!["docker.io -> [http://127.0.0.1:5000/v2] (0 rewrite rules)".to_string()]);
}
