//! Pulls through registries.yaml mirrors against real Debian
//! `docker-registry` processes on 127.0.0.1: Docker Hub names served by a
//! mirror, endpoints tried in order, repository rewrites, mirror
//! credentials, a TLS mirror trusted through `ca_file`, and imageRef-style
//! repo digests under the name the pod used.

use std::path::Path;

use runtime::cri::ImageService;
use runtime::images::testimage::{self, TestRegistry};
use runtime::images::{ImageResolver, Registries, Store};
use serde_json::json;

/// bcrypt of "s3cret" (as in images_pull.rs).
const HTPASSWD: &str = "puller:$2b$05$iawHsoxuUwVYGT9FeRp6Wu53uDciH/NBSaqfyhEmiLImDAtrrsZ3u\n";

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn store(dir: &Path, yaml: &str) -> Store {
    let registries = Registries::parse(yaml, dir).unwrap();
    Store::open(dir.join("images"), vec![]).unwrap().with_registries(registries)
}

async fn push_busybox(registry: &str, repo: &str, tag: &str) -> String {
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    testimage::push_to_registry(registry, repo, tag, &layer, json!({"config": {"Cmd": ["sh"]}})).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_names_come_from_the_mirror_in_order_with_rewrites() {
    let mirror = TestRegistry::start().unwrap();
    let busybox = push_busybox(&mirror.addr, "library/busybox", "latest").await;
    let nginx = push_busybox(&mirror.addr, "mirrored/nginx", "1.15.4").await;
    let dir = tempfile::tempdir().unwrap();
    // A dead endpoint first: the next one serves.
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://127.0.0.1:{}\"\n      - \"http://{}\"\n    rewrite:\n      \"^library/nginx$\": \"mirrored/nginx\"\n",
        closed_port(),
        mirror.addr
    );
    let store = store(dir.path(), &yaml);

    let id = store.pull_image("busybox", &[]).await.unwrap();
    let info = store.image_status("docker.io/library/busybox:latest").await.unwrap().expect("stored under the Docker Hub name");
    assert_eq!(info.id, id);
    assert_eq!(info.repo_tags, vec!["docker.io/library/busybox:latest".to_string()]);
    assert_eq!(info.repo_digests, vec![format!("docker.io/library/busybox@{busybox}")]);
    let resolved = store.resolve("busybox").unwrap();
    assert_eq!(resolved.repo_digest, format!("docker.io/library/busybox@{busybox}"));

    // Rewritten for the mirror, stored under the name the pod used.
    store.pull_image("nginx:1.15.4", &[]).await.unwrap();
    let resolved = store.resolve("docker.io/library/nginx:1.15.4").unwrap();
    assert_eq!(resolved.repo_digest, format!("docker.io/library/nginx@{nginx}"));
    assert_eq!(resolved.id, id, "the same image under two names");
    // By digest through the mirror.
    let dir2 = tempfile::tempdir().unwrap();
    let other = self::store(dir2.path(), &yaml);
    other.pull_image(&format!("busybox@{busybox}"), &[]).await.unwrap();
    assert_eq!(other.resolve(&format!("docker.io/library/busybox@{busybox}")).unwrap().id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mirror_with_credentials_and_the_registry_as_fallback() {
    let locked = TestRegistry::start_with_htpasswd(Some(HTPASSWD)).unwrap();
    let auth = testimage::basic_authorization("puller", "s3cret");
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    testimage::push_layers_as(&locked.addr, "team/app", "v1", &[&layer], json!({}), Some(&auth)).await.unwrap();
    let origin = TestRegistry::start().unwrap();
    push_busybox(&origin.addr, "only/origin", "v1").await;

    let dir = tempfile::tempdir().unwrap();
    let with_auth = format!(
        "mirrors:\n  \"*\":\n    endpoint: [\"http://{0}\"]\nconfigs:\n  \"{0}\":\n    auth:\n      username: puller\n      password: s3cret\n",
        locked.addr
    );
    let store = store(dir.path(), &with_auth);
    // Any registry's name, served by the wildcard mirror with its configured credentials.
    store.pull_image("registry.invalid:5000/team/app:v1", &[]).await.unwrap();
    assert!(store.image_status("registry.invalid:5000/team/app:v1").await.unwrap().is_some());
    // Not on the mirror: the registry itself.
    store.pull_image(&format!("{}/only/origin:v1", origin.addr), &[]).await.unwrap();

    // Without the credentials the mirror refuses, and the (unreachable) registry is tried last.
    let dir2 = tempfile::tempdir().unwrap();
    let without = store_no_auth(dir2.path(), &locked.addr);
    let err = format!("{:#}", without.pull_image("registry.invalid:5000/team/app:v1", &[]).await.unwrap_err());
    assert!(err.contains("basic auth") && err.contains("https://registry.invalid:5000/v2/team/app"), "{err}");
}

fn store_no_auth(dir: &Path, mirror: &str) -> Store {
    store(dir, &format!("mirrors:\n  \"*\":\n    endpoint: [\"http://{mirror}\"]\n"))
}

/// A CA and a serving certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn tls_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "skiff test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_mirror_trusted_through_ca_file_or_skip_verify() {
    let reg_dir = tempfile::Builder::new().prefix("skiff-registry-").tempdir().unwrap();
    let (ca, cert, key) = tls_files(reg_dir.path());
    let tls = format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
    let mirror = TestRegistry::start_with_config(Some(reg_dir), &tls).unwrap();
    let url = format!("https://{}", mirror.addr);
    push_busybox(&url, "library/busybox", "stable").await;

    let mirrors = format!("mirrors:\n  docker.io:\n    endpoint: [\"{url}\"]\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, dir.path().join("mirror-ca.pem")).unwrap();
    let trusted = store(dir.path(), &format!("{mirrors}configs:\n  \"{}\":\n    tls:\n      ca_file: mirror-ca.pem\n", mirror.addr));
    trusted.pull_image("busybox:stable", &[]).await.unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    let untrusted = store(dir2.path(), &mirrors);
    let err = format!("{:#}", untrusted.pull_image("busybox:stable", &[]).await.unwrap_err());
    assert!(err.contains(&url), "{err}");
    assert!(untrusted.image_status("busybox:stable").await.unwrap().is_none());

    let dir3 = tempfile::tempdir().unwrap();
    let skip = store(dir3.path(), &format!("{mirrors}configs:\n  \"{}\":\n    tls:\n      insecure_skip_verify: true\n", mirror.addr));
    skip.pull_image("busybox:stable", &[]).await.unwrap();
}
