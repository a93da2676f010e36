//! The image store on disk:
//!
//! ```text
//! <root>/blobs/sha256/<hex>   content-addressed blobs (manifests, configs, layer archives)
//! <root>/layers/<hex>/        each layer unpacked once, named by its diffID; overlayfs lowerdirs
//! <root>/index.json           names -> images -> layers, replaced atomically
//! <root>/locks/               flock files: per layer, the index, and pull-vs-GC
//! <root>/tmp/                 downloads and unpacks in progress (`<pid>-...`)
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use async_trait::async_trait;

use super::index::{now_unix, FileLock, ImageRecord, Index};
use super::mirrors::Registries;
use super::oci::ImageConfig;
use super::reference::{is_sha256_hex, Reference};
use super::unpack::unpack_layer_file;
use super::{ImageResolver, ResolvedImage};
use crate::cri::{ImageInfo, ImageService, RegistryAuth};

/// Lock shared by writers of new content and taken exclusively by removal
/// and GC, so GC never deletes a blob a pull has fetched but not yet recorded.
pub(crate) const CONTENT_LOCK: &str = "content";
const INDEX_LOCK: &str = "index";
/// Resolving refreshes an image's last-used time at most this often (seconds).
const LAST_USED_GRANULARITY: i64 = 60;

pub struct Store {
    root: PathBuf,
    pub(crate) insecure_registries: Vec<String>,
    pub(crate) http: reqwest::Client,
    /// Mirrors, rewrites and per-host credentials and TLS (registries.yaml).
    pub(crate) registries: Registries,
}

/// Where a layer blob comes from when it is not in the store yet.
#[async_trait]
pub(crate) trait BlobSource: Send {
    /// Writes blob `digest` to `dest`, verifying it.
    async fn fetch(&mut self, digest: &str, size: Option<u64>, dest: &Path) -> anyhow::Result<()>;
}

impl Store {
    pub fn open(root: PathBuf, insecure_registries: Vec<String>) -> anyhow::Result<Store> {
        for dir in ["blobs/sha256", "layers", "locks", "tmp"] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).with_context(|| format!("creating image store directory {}", d.display()))?;
        }
        let store = Store { root, insecure_registries, http: super::registry::http_client()?, registries: Registries::default() };
        store.remove_stale_tmp();
        Ok(store)
    }

    /// Pulls through these mirrors and with these per-host settings.
    pub fn with_registries(mut self, registries: Registries) -> Store {
        self.registries = registries;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    /// The unpacked directory of the layer with this diffID.
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(diff_id.trim_start_matches("sha256:"))
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// A fresh path under `<root>/tmp`, named so stale ones can be told apart.
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{}-{n}-{what}", std::process::id()))
    }

    /// Removes leftovers of processes that died mid-pull.
    fn remove_stale_tmp(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or("");
            if pid.is_empty() || !Path::new("/proc").join(pid).exists() {
                let _ = remove_path(&entry.path());
            }
        }
    }

    pub(crate) fn read_index(&self) -> anyhow::Result<Index> {
        let _lock = FileLock::acquire(&self.locks_dir(), INDEX_LOCK, false)?;
        Index::load(&self.index_path())
    }

    /// Read-modify-write of the index under its exclusive lock.
    pub(crate) fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let _lock = FileLock::acquire(&self.locks_dir(), INDEX_LOCK, true)?;
        let mut index = Index::load(&self.index_path())?;
        let out = f(&mut index)?;
        index.save(&self.index_path())?;
        Ok(out)
    }

    /// Writes a small blob (manifest, config) unless it is already there.
    pub(crate) fn put_blob(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let actual = super::oci::sha256_digest(bytes);
        anyhow::ensure!(actual == digest, "content has digest {actual}, expected {digest}");
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.tmp_path("blob");
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("storing blob {digest}"))?;
        Ok(())
    }

    /// Reads a blob, fetching it into the store first if missing.
    pub(crate) async fn blob_bytes(&self, digest: &str, size: Option<u64>, source: &mut dyn BlobSource) -> anyhow::Result<Vec<u8>> {
        let path = self.blob_path(digest);
        if !path.exists() {
            let tmp = self.tmp_path("blob");
            let fetched = source.fetch(digest, size, &tmp).await;
            if let Err(e) = fetched.and_then(|_| Ok(std::fs::rename(&tmp, &path)?)) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::read(&path).with_context(|| format!("reading blob {}", path.display()))
    }

    /// Makes sure the layer with `diff_id` is unpacked, fetching blob
    /// `digest` only when neither the layer nor the blob is present. One
    /// unpack per layer, even with concurrent pulls (per-layer lock).
    pub(crate) async fn ensure_layer(&self, digest: &str, size: Option<u64>, diff_id: &str, source: &mut dyn BlobSource) -> anyhow::Result<()> {
        super::reference::validate_digest(diff_id).with_context(|| format!("layer diffID {diff_id:?}"))?;
        super::reference::validate_digest(digest).with_context(|| format!("layer digest {digest:?}"))?;
        let dir = self.layer_dir(diff_id);
        let lock_name = format!("layer-{}", diff_id.trim_start_matches("sha256:"));
        let _lock = FileLock::acquire_async(self.locks_dir(), lock_name, true).await?;
        if dir.exists() {
            return Ok(());
        }
        let blob = self.blob_path(digest);
        if !blob.exists() {
            let tmp = self.tmp_path("layer-blob");
            let fetched = source.fetch(digest, size, &tmp).await;
            if let Err(e) = fetched.and_then(|_| Ok(std::fs::rename(&tmp, &blob)?)) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let unpack_dir = self.tmp_path("unpack");
        let (blob_c, unpack_c) = (blob.clone(), unpack_dir.clone());
        let unpacked = tokio::task::spawn_blocking(move || unpack_layer_file(&blob_c, &unpack_c)).await?;
        let result = unpacked.and_then(|got| {
            if got != diff_id {
                bail!("layer {digest} unpacks to diffID {got}, but the image config says {diff_id}: refusing a corrupted image");
            }
            std::fs::rename(&unpack_dir, &dir).with_context(|| format!("moving unpacked layer to {}", dir.display()))
        });
        if let Err(e) = result {
            let _ = remove_path(&unpack_dir);
            return Err(e);
        }
        tracing::info!(layer = diff_id, "layer unpacked");
        Ok(())
    }

    /// Records `image_id` under `names`, moving a name off any image it named before.
    pub(crate) fn record_image(&self, image_id: &str, record: ImageRecord, names: &[(String, String)]) -> anyhow::Result<()> {
        self.update_index(|index| {
            let mut record = record;
            record.last_used = now_unix();
            // The same image reached another way (index, import) keeps the manifests it had.
            if let Some(existing) = index.images.get(image_id) {
                record.pinned |= existing.pinned;
                for m in &existing.manifests {
                    if !record.manifests.contains(m) {
                        record.manifests.push(m.clone());
                    }
                }
            }
            index.images.insert(image_id.to_string(), record);
            for (name, manifest) in names {
                let r = super::index::NameRecord { manifest: manifest.clone(), image: image_id.to_string() };
                index.names.insert(name.clone(), r);
            }
            Ok(())
        })
    }

    /// The image a reference, name or (prefix of an) ID denotes.
    pub(crate) fn find_image(index: &Index, image: &str) -> Option<String> {
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        if is_sha256_hex(hex) && index.images.contains_key(&format!("sha256:{hex}")) {
            return Some(format!("sha256:{hex}"));
        }
        if let Ok(r) = Reference::parse(image) {
            if let Some(rec) = index.names.get(&r.name()) {
                return Some(rec.image.clone());
            }
            if let Some(digest) = &r.digest {
                let repo = r.repo();
                let by_digest = index.names.iter().find(|(name, rec)| &rec.manifest == digest && name_repo(name) == repo);
                if let Some((_, rec)) = by_digest {
                    return Some(rec.image.clone());
                }
            }
        }
        // A unique prefix of an image ID, as `crictl rmi 3f57d9401f8d` takes.
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches = index.images.keys().filter(|id| id.trim_start_matches("sha256:").starts_with(hex));
            if let (Some(id), None) = (matches.next(), matches.next()) {
                return Some(id.clone());
            }
        }
        None
    }

    pub(crate) fn image_info(index: &Index, id: &str) -> Option<ImageInfo> {
        let record = index.images.get(id)?;
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for (name, rec) in index.names_of(id) {
            if !name.contains('@') {
                repo_tags.push(name.clone());
            }
            let digest = format!("{}@{}", name_repo(name), rec.manifest);
            if !repo_digests.contains(&digest) {
                repo_digests.push(digest);
            }
        }
        Some(ImageInfo { id: id.to_string(), repo_tags, repo_digests, size: record.size() })
    }

    /// Removes an image (every name it has) and then its blobs and layers
    /// that no other image uses. Absent images are not an error, as in CRI.
    pub async fn remove(&self, image: &str) -> anyhow::Result<()> {
        let _content = FileLock::acquire_async(self.locks_dir(), CONTENT_LOCK.into(), true).await?;
        let removed = self.update_index(|index| {
            let Some(id) = Store::find_image(index, image) else { return Ok(None) };
            index.names.retain(|_, r| r.image != id);
            index.images.remove(&id);
            Ok(Some(id))
        })?;
        match removed {
            Some(id) => {
                tracing::info!(image, id, "image removed");
                let index = self.read_index()?;
                self.collect_unreferenced(&index)?;
            }
            None => tracing::debug!(image, "image to remove is not present"),
        }
        Ok(())
    }
}

/// `repo@sha256:<manifest>` for `image` (a reference, name or ID) of image
/// `id`: the digest its own name resolved to, else that of any name it has.
fn repo_digest(index: &Index, image: &str, id: &str) -> Option<String> {
    if let Ok(r) = Reference::parse(image) {
        if let Some(d) = &r.digest {
            return Some(format!("{}@{d}", r.repo()));
        }
        if let Some(rec) = index.names.get(&r.name()).filter(|rec| rec.image == id) {
            return Some(format!("{}@{}", r.repo(), rec.manifest));
        }
    }
    index.names_of(id).next().map(|(name, rec)| format!("{}@{}", name_repo(name), rec.manifest))
}

/// `registry/repo` of a stored name (`repo:tag` or `repo@digest`).
pub(crate) fn name_repo(name: &str) -> &str {
    if let Some((repo, _)) = name.split_once('@') {
        return repo;
    }
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}

pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl ImageResolver for Store {
    fn resolve(&self, image: &str) -> anyhow::Result<ResolvedImage> {
        let index = self.read_index()?;
        let id = Store::find_image(&index, image).with_context(|| format!("image {image:?} is not present in the image store; pull it first"))?;
        let record = &index.images[&id];
        let config_path = self.blob_path(&id);
        let config_bytes = std::fs::read(&config_path).with_context(|| format!("reading config of image {image}: {}", config_path.display()))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).with_context(|| format!("image {image}: config {id} is not valid JSON"))?;
        let mut layers = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            let dir = self.layer_dir(&layer.diff_id);
            anyhow::ensure!(dir.is_dir(), "image {image}: layer {} is missing from {}; pull the image again", layer.diff_id, dir.display());
            layers.push(dir);
        }
        if now_unix() - record.last_used > LAST_USED_GRANULARITY {
            let id = id.clone();
            self.update_index(|index| {
                if let Some(r) = index.images.get_mut(&id) {
                    r.last_used = now_unix();
                }
                Ok(())
            })?;
        }
        let run = config.config.unwrap_or_default();
        Ok(ResolvedImage {
            repo_digest: repo_digest(&index, image, &id).unwrap_or_default(),
            id,
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
            layers,
        })
    }
}

#[async_trait]
impl ImageService for Store {
    async fn pull_image(&self, image: &str, auths: &[RegistryAuth]) -> anyhow::Result<String> {
        self.pull(image, auths).await
    }

    async fn image_status(&self, image: &str) -> anyhow::Result<Option<ImageInfo>> {
        let index = self.read_index()?;
        Ok(Store::find_image(&index, image).and_then(|id| Store::image_info(&index, &id)))
    }

    async fn list_images(&self) -> anyhow::Result<Vec<ImageInfo>> {
        let index = self.read_index()?;
        Ok(index.images.keys().filter_map(|id| Store::image_info(&index, id)).collect())
    }

    async fn remove_image(&self, image: &str) -> anyhow::Result<()> {
        self.remove(image).await
    }

    async fn fs_usage(&self) -> anyhow::Result<u64> {
        let root = self.root.clone();
        Ok(tokio::task::spawn_blocking(move || super::gc::disk_usage(&root)).await?)
    }

    async fn garbage_collect(&self, in_use: &std::collections::HashSet<String>, bytes_to_free: u64, min_age: std::time::Duration) -> anyhow::Result<u64> {
        Ok(self.gc(in_use, bytes_to_free, min_age).await?.freed_bytes)
    }
}
