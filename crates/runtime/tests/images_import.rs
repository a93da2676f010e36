//! Importing `docker save` and OCI layout archives, removing images and
//! garbage-collecting their blobs and layers.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use runtime::cri::ImageService;
use runtime::images::testimage;
use runtime::images::{ImageResolver, Store};

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A one-file layer, so images differ from the busybox one.
fn small_layer(content: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_data(&mut h, "data.txt", content.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

#[tokio::test]
async fn imports_docker_save_and_oci_layout_archives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images"), vec![]).unwrap();
    let layer = testimage::busybox_layer_tar();

    let docker = write(dir.path(), "docker.tar", &testimage::docker_save_tar("busybox:test", &layer));
    let names = store.import(&docker).await.unwrap();
    assert_eq!(names, vec!["docker.io/library/busybox:test"]);
    let resolved = store.resolve("busybox:test").unwrap();
    assert_eq!(resolved.cmd, vec!["sh"]);
    let busybox = resolved.layers[0].join("bin/busybox");
    assert_eq!(std::fs::read(&busybox).unwrap(), std::fs::read("/bin/busybox").unwrap());

    let oci = write(dir.path(), "oci.tar", &testimage::oci_layout_tar("localhost/skiff/busybox:v2", &layer));
    let names = store.import(&oci).await.unwrap();
    assert_eq!(names, vec!["localhost/skiff/busybox:v2"]);
    let resolved2 = store.resolve("localhost/skiff/busybox:v2").unwrap();
    // Same uncompressed layer: one unpacked directory serves both images.
    assert_eq!(resolved2.layers, resolved.layers);
    assert_eq!(count(&store.root().join("layers")), 1);
    // Both configs list the same diffIDs and command: the same image ID, two names.
    let images = store.list_images().await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].repo_tags.len(), 2);

    // Importing again changes nothing.
    assert_eq!(store.import(&oci).await.unwrap(), vec!["localhost/skiff/busybox:v2"]);
    assert_eq!(store.list_images().await.unwrap().len(), 1);

    let bad = write(dir.path(), "bad.tar", b"not a tar at all, just some bytes that go on and on");
    assert!(store.import(&bad).await.is_err());
    assert!(std::fs::read_dir(store.root().join("tmp")).unwrap().next().is_none(), "no temp leftovers");
}

#[tokio::test]
async fn remove_and_gc_delete_unreferenced_blobs_and_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("images"), vec![]).unwrap();
    let busybox = testimage::busybox_layer_tar();
    let base = write(dir.path(), "a.tar", &testimage::docker_save_tar("localhost/a:1", &busybox));
    let other = write(dir.path(), "b.tar", &testimage::docker_save_tar("localhost/b:1", &small_layer("b")));
    let third = write(dir.path(), "c.tar", &testimage::docker_save_tar("localhost/c:1", &small_layer("c")));
    for archive in [&base, &other, &third] {
        store.import(archive).await.unwrap();
    }
    let (blobs, layers) = (store.root().join("blobs/sha256"), store.root().join("layers"));
    assert_eq!(count(&layers), 3);
    assert_eq!(count(&blobs), 9, "config, manifest and layer of each image");
    let usage_before = store.fs_usage().await.unwrap();
    assert!(usage_before > 1_000_000, "busybox is in there: {usage_before}");

    store.remove_image("localhost/c:1").await.unwrap();
    assert!(store.image_status("localhost/c:1").await.unwrap().is_none());
    assert!(store.resolve("localhost/c:1").is_err());
    assert_eq!((count(&layers), count(&blobs)), (2, 6));
    store.remove_image("localhost/c:1").await.unwrap(); // absent: not an error, as CRI

    // GC keeps what is in use and frees only as much as asked.
    let report = store.gc(&HashSet::new(), 0, Duration::ZERO).await.unwrap();
    assert!(report.removed_images.is_empty());
    let keep: HashSet<String> = ["localhost/a:1".to_string()].into();
    let report = store.gc(&keep, u64::MAX, Duration::ZERO).await.unwrap();
    assert_eq!(report.removed_images.len(), 1);
    assert!(report.freed_bytes > 0);
    assert!(store.image_status("localhost/b:1").await.unwrap().is_none());
    assert!(store.resolve("localhost/a:1").is_ok());
    assert_eq!((count(&layers), count(&blobs)), (1, 3));

    store.remove_image("localhost/a:1").await.unwrap();
    assert_eq!((count(&layers), count(&blobs)), (0, 0));
    assert!(store.list_images().await.unwrap().is_empty());
    assert!(store.fs_usage().await.unwrap() < usage_before / 10);
}

#[tokio::test]
async fn gc_evicts_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    let store = Store::open(root.clone(), vec![]).unwrap();
    for name in ["old", "new"] {
        let archive = write(dir.path(), name, &testimage::docker_save_tar(&format!("localhost/{name}:1"), &small_layer(name)));
        store.import(&archive).await.unwrap();
    }
    // Both were just imported (younger than two minutes): nothing goes.
    let report = store.gc(&HashSet::new(), u64::MAX, Duration::from_secs(120)).await.unwrap();
    assert!(report.removed_images.is_empty(), "{report:?}");
    // Age "old" by editing its record, as if last used an hour ago.
    let index_path = root.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let old_id = index["names"]["localhost/old:1"]["image"].as_str().unwrap().to_string();
    let used = index["images"][&old_id]["last_used"].as_i64().unwrap();
    index["images"][&old_id]["last_used"] = (used - 3600).into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let report = store.gc(&HashSet::new(), 1, Duration::from_secs(120)).await.unwrap();
    assert_eq!(report.removed_images, vec![old_id]);
    assert!(store.resolve("localhost/new:1").is_ok());
}

/// Air-gap preloading: every archive in the images directory (plain, gzip
/// and zstd tars, docker save and OCI layout) is imported and pinned; a
/// bad one is reported, others are not archives; unchanged archives are
/// not imported again unless their images are gone.
#[tokio::test]
async fn preloads_the_archives_of_a_directory_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let store = Store::open(images.clone(), vec![]).unwrap();
    write(&images, "plain.tar", &testimage::docker_save_tar("airgap/plain:v1", &small_layer("plain")));
    write(&images, "gz.tar.gz", &testimage::gzip(&testimage::docker_save_tar("airgap/gz:v1", &small_layer("gz"))));
    write(&images, "oci.tar.zst", &testimage::zstd(&testimage::oci_layout_tar("docker.io/airgap/zst:v1", &small_layer("zst"))));
    write(&images, "broken.tar", b"not a tar at all");
    write(&images, "notes.txt", b"not an archive");

    let report = store.import_directory(&images).await.unwrap();
    let mut names: Vec<String> = report.imported.iter().flat_map(|(_, n)| n.clone()).collect();
    names.sort();
    assert_eq!(names, ["docker.io/airgap/gz:v1", "docker.io/airgap/plain:v1", "docker.io/airgap/zst:v1"]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].0.ends_with("broken.tar"));
    for n in &names {
        assert!(store.resolve(n).is_ok(), "{n}");
    }
    // Pinned: GC leaves them however much it is asked to free.
    let gc = store.gc(&HashSet::new(), u64::MAX, Duration::ZERO).await.unwrap();
    assert!(gc.removed_images.is_empty(), "{gc:?}");
    assert_eq!(store.list_images().await.unwrap().len(), 3);

    // A restart: nothing to import again.
    let again = store.import_directory(&images).await.unwrap();
    assert!(again.imported.is_empty() && again.unchanged.len() == 3, "{again:?}");
    // An image removed by hand comes back from its archive on the next start.
    store.remove_image("airgap/plain:v1").await.unwrap();
    let third = store.import_directory(&images).await.unwrap();
    assert_eq!(third.imported.len(), 1, "{third:?}");
    assert!(store.resolve("airgap/plain:v1").is_ok());
    // `skiff image import` of a compressed archive works the same way.
    let other = Store::open(dir.path().join("other"), vec![]).unwrap();
    assert_eq!(other.import(&images.join("gz.tar.gz")).await.unwrap(), ["docker.io/airgap/gz:v1"]);
    // A missing directory is nothing to do.
    assert!(store.import_directory(&dir.path().join("absent")).await.unwrap().imported.is_empty());
}
