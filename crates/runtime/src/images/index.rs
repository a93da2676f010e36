//! The store's small JSON index (image names -> image -> layers) and the
//! file locks that keep pulls, imports, removals and GC from racing, also
//! between processes (the agent and `skiff image` on the same data dir).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    /// Image names (`repo:tag`, or `repo@sha256:` for images pulled by digest).
    #[serde(default)]
    pub names: BTreeMap<String, NameRecord>,
    /// Images by ID (the config digest).
    #[serde(default)]
    pub images: BTreeMap<String, ImageRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NameRecord {
    /// Digest the name resolved to in its registry (index or manifest): the repo digest.
    pub manifest: String,
    /// Image ID.
    pub image: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageRecord {
    pub config_size: u64,
    /// Manifest (and index) blobs kept for this image.
    #[serde(default)]
    pub manifests: Vec<String>,
    pub layers: Vec<LayerRecord>,
    /// Unix seconds of the last pull or resolve, for LRU garbage collection.
    #[serde(default)]
    pub last_used: i64,
    /// Imported from the node's images directory (air-gap): garbage
    /// collection leaves it, as containerd's pinned images under k3s.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

impl ImageRecord {
    /// Size as upstream reports it: config plus (compressed) layers.
    pub fn size(&self) -> u64 {
        self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed, or the tar itself).
    pub digest: String,
    /// Digest of the uncompressed tar: names the unpacked directory.
    pub diff_id: String,
    pub size: u64,
}

impl Index {
    pub fn load(path: &Path) -> anyhow::Result<Index> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("image index {} is not valid JSON; move it aside to start an empty store", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the index so a crash leaves either the old or the new file:
    /// temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().context("index path has no directory")?;
        let tmp = dir.join(format!(".index.json.{}.tmp", std::process::id()));
        let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Names that point at `image_id`.
    pub fn names_of<'a>(&'a self, image_id: &'a str) -> impl Iterator<Item = (&'a String, &'a NameRecord)> + 'a {
        self.names.iter().filter(move |(_, r)| r.image == image_id)
    }
}

/// An advisory `flock` on `<root>/locks/<name>`; released on drop.
pub struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// Blocks until the lock is held (exclusive or shared).
    pub fn acquire(locks_dir: &Path, name: &str, exclusive: bool) -> anyhow::Result<FileLock> {
        let path = locks_dir.join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
    }

    /// As [`FileLock::acquire`] without blocking the async runtime's workers.
    pub async fn acquire_async(locks_dir: PathBuf, name: String, exclusive: bool) -> anyhow::Result<FileLock> {
        tokio::task::spawn_blocking(move || FileLock::acquire(&locks_dir, &name, exclusive)).await?
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
