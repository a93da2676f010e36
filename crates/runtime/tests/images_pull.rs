//! Pulls from a real Debian `docker-registry` on 127.0.0.1: gzip and zstd
//! layers, indexes, re-pulls, digest verification, basic auth, concurrency.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime::cri::{ImageService, RegistryAuth};
use runtime::images::testimage::{self, TestRegistry};
use runtime::images::{ImageResolver, Store};
use serde_json::json;

fn sha256_file(path: &Path) -> String {
    runtime::images::oci::sha256_digest(&std::fs::read(path).unwrap())
}

/// Checks the unpacked busybox is the host's and actually runs.
fn assert_busybox_layer(layer: &Path) {
    let bin = layer.join("bin/busybox");
    let meta = std::fs::metadata(&bin).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(sha256_file(&bin), sha256_file(Path::new("/bin/busybox")));
    assert_eq!(std::fs::read_link(layer.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert!(std::fs::read_to_string(layer.join("etc/passwd")).unwrap().starts_with("root:x:0:0:"));
    let out = std::process::Command::new(layer.join("bin/sh")).args(["-c", "echo hello from $((6 * 7))"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello from 42");
}

fn store_in(dir: &Path) -> Store {
    Store::open(dir.join("images"), vec![]).unwrap()
}

fn layer_dirs(store: &Store) -> Vec<PathBuf> {
    std::fs::read_dir(store.root().join("layers")).unwrap().map(|e| e.unwrap().path()).collect()
}

/// The file holding blob `digest` in the registry's filesystem storage.
fn registry_blob(registry: &TestRegistry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry.storage_dir().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_gzip_image_and_repull_fetches_nothing() {
    let registry = TestRegistry::start().unwrap();
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    let digest = testimage::push_to_registry(&registry.addr, "test/busybox", "v1", &layer, json!({"config": {"Cmd": ["sh"], "WorkingDir": "/tmp"}}))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let name = format!("{}/test/busybox:v1", registry.addr);
    let id = store.pull_image(&name, &[]).await.unwrap();
    assert!(id.starts_with("sha256:"));

    let resolved = store.resolve(&name).unwrap();
    assert_eq!(resolved.id, id);
    assert_eq!(resolved.cmd, vec!["sh"]);
    assert_eq!(resolved.working_dir, "/tmp");
    assert!(resolved.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(resolved.layers.len(), 1);
    assert_busybox_layer(&resolved.layers[0]);

    let info = store.image_status(&name).await.unwrap().expect("image present");
    assert_eq!(info.repo_tags, vec![name.clone()]);
    assert_eq!(info.repo_digests, vec![format!("{}/test/busybox@{digest}", registry.addr)]);
    assert!(info.size >= layer.len() as u64);
    // Found by ID, short ID and digest too.
    assert!(store.image_status(&id).await.unwrap().is_some());
    assert!(store.image_status(&id["sha256:".len()..][..12]).await.unwrap().is_some());
    let by_digest = format!("{}/test/busybox@{digest}", registry.addr);
    assert_eq!(store.resolve(&by_digest).unwrap().id, id);

    // Re-pull: the layer blob is gone from the registry, so any attempt to fetch it would fail.
    let inode = std::fs::metadata(&resolved.layers[0]).unwrap().ino();
    std::fs::remove_file(registry_blob(&registry, &runtime::images::oci::sha256_digest(&layer))).unwrap();
    assert_eq!(store.pull_image(&name, &[]).await.unwrap(), id);
    assert_eq!(std::fs::metadata(&resolved.layers[0]).unwrap().ino(), inode, "layer not unpacked again");
    // Pinned by digest and present: no registry needed at all.
    drop(registry);
    assert_eq!(store.pull_image(&by_digest, &[]).await.unwrap(), id);
    assert_eq!(store.list_images().await.unwrap().len(), 1);
    assert!(std::fs::read_dir(store.root().join("tmp")).unwrap().next().is_none(), "no temp leftovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_zstd_layers_and_picks_amd64_from_an_index() {
    let registry = TestRegistry::start().unwrap();
    let tar = testimage::busybox_layer_tar();
    let zst = testimage::zstd(&tar);
    let amd64 = testimage::push_to_registry(&registry.addr, "test/multi", "amd64", &zst, json!({})).await.unwrap();
    let other = testimage::push_layers(&registry.addr, "test/multi", "arm64", &[&zst], json!({"architecture": "arm64", "config": {"Cmd": ["other"]}}))
        .await
        .unwrap();
    let manifest_size = |tag_digest: &str| -> u64 {
        std::fs::metadata(registry_blob(&registry, tag_digest)).unwrap().len()
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other, "size": manifest_size(&other),
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd64, "size": manifest_size(&amd64),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = testimage::put_manifest(&registry.addr, "test/multi", "latest", "application/vnd.oci.image.index.v1+json", &index_bytes)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let name = format!("{}/test/multi", registry.addr);
    let id = store.pull_image(&name, &[]).await.unwrap();
    let resolved = store.resolve(&format!("{name}:latest")).unwrap();
    assert_eq!(resolved.id, id);
    assert_eq!(resolved.cmd, Vec::<String>::new(), "the amd64 image, not the arm64 one");
    assert_busybox_layer(&resolved.layers[0]);
    let info = store.image_status(&name).await.unwrap().unwrap();
    assert_eq!(info.repo_digests, vec![format!("{name}@{index_digest}")], "repo digest is the index's, as docker reports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_refused() {
    let registry = TestRegistry::start().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
    let layer = testimage::gzip(&b.into_inner().unwrap());
    testimage::push_to_registry(&registry.addr, "test/corrupt", "v1", &layer, json!({})).await.unwrap();
    // Flip bytes in the stored blob, keeping its size: the registry serves it as is.
    let blob = registry_blob(&registry, &runtime::images::oci::sha256_digest(&layer));
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let err = store.pull_image(&format!("{}/test/corrupt:v1", registry.addr), &[]).await.unwrap_err();
    assert!(format!("{err:#}").contains("refusing corrupted"), "{err:#}");
    assert!(store.list_images().await.unwrap().is_empty());
    assert!(layer_dirs(&store).is_empty());
    assert!(std::fs::read_dir(store.root().join("tmp")).unwrap().next().is_none(), "no temp leftovers");
    // A wrong digest pin is an error too.
    let wrong = format!("{}/test/corrupt@sha256:{}", registry.addr, "0".repeat(64));
    assert!(store.pull_image(&wrong, &[]).await.is_err());
}

/// bcrypt of "s3cret" (`python3 -c 'import crypt; crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))'`).
const HTPASSWD: &str = "puller:$2b$05$iawHsoxuUwVYGT9FeRp6Wu53uDciH/NBSaqfyhEmiLImDAtrrsZ3u\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_registry_auth_entries() {
    let registry = TestRegistry::start_with_htpasswd(Some(HTPASSWD)).unwrap();
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    testimage::push_layers_as(&registry.addr, "private/app", "v1", &[&layer], json!({}), Some(&testimage::basic_authorization("puller", "s3cret")))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let name = format!("{}/private/app:v1", registry.addr);
    let err = store.pull_image(&name, &[]).await.unwrap_err();
    assert!(format!("{err:#}").contains("credentials"), "{err:#}");
    let wrong = RegistryAuth { username: Some("puller".into()), password: Some("nope".into()), ..Default::default() };
    assert!(store.pull_image(&name, &[wrong]).await.is_err());
    // dockerconfigjson `auth` form: base64("user:password").
    let good = RegistryAuth { auth: Some("cHVsbGVyOnMzY3JldA==".into()), ..Default::default() };
    let id = store.pull_image(&name, &[good]).await.unwrap();
    assert_busybox_layer(&store.resolve(&id).unwrap().layers[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_unpack_each_layer_once() {
    let registry = TestRegistry::start().unwrap();
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    testimage::push_to_registry(&registry.addr, "test/race", "v1", &layer, json!({})).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two stores on one root behave like two processes (agent and CLI).
    let a = Arc::new(store_in(dir.path()));
    let b = Arc::new(store_in(dir.path()));
    let name = format!("{}/test/race:v1", registry.addr);
    let pulls: Vec<_> = [a.clone(), a.clone(), b.clone(), b]
        .into_iter()
        .map(|s| {
            let name = name.clone();
            tokio::spawn(async move { s.pull_image(&name, &[]).await })
        })
        .collect();
    let mut ids = Vec::new();
    for p in pulls {
        ids.push(p.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(layer_dirs(&a).len(), 1);
    assert_busybox_layer(&a.resolve(&name).unwrap().layers[0]);
}
