//! Garbage collection: deleting blobs and layer directories no image uses,
//! and evicting least-recently-used images when the agent needs disk space.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::index::{now_unix, FileLock, Index};
use super::store::{remove_path, Store, CONTENT_LOCK};

/// What a GC run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// IDs of the images removed.
    pub removed_images: Vec<String>,
    pub freed_bytes: u64,
}

impl Store {
    /// Frees at least `target_free_bytes` (if it can) by removing images
    /// nobody needs, least recently used first. `keep` holds references or
    /// IDs of images in use (running containers); those stay, as do pinned
    /// ones (imported from the node's images directory) and images pulled,
    /// imported or used within `min_age` (a pod may be about to start from one). Unreferenced blobs and layers always go first.
    pub async fn gc(&self, keep: &HashSet<String>, target_free_bytes: u64, min_age: Duration) -> anyhow::Result<GcReport> {
        let _content = FileLock::acquire_async(self.locks_dir(), CONTENT_LOCK.into(), true).await?;
        let index = self.read_index()?;
        let mut report = GcReport { freed_bytes: self.collect_unreferenced(&index)?, ..Default::default() };
        let young_after = now_unix() - min_age.as_secs() as i64;
        let kept: HashSet<String> = keep.iter().filter_map(|k| Store::find_image(&index, k)).collect();
        let mut candidates: Vec<(i64, String)> = index
            .images
            .iter()
            .filter(|(id, r)| !kept.contains(*id) && !r.pinned && r.last_used <= young_after)
            .map(|(id, r)| (r.last_used, id.clone()))
            .collect();
        candidates.sort();
        for (_, id) in candidates {
            if report.freed_bytes >= target_free_bytes {
                break;
            }
            let index = self.update_index(|index| {
                index.names.retain(|_, r| r.image != id);
                index.images.remove(&id);
                Ok(index.clone())
            })?;
            report.freed_bytes += self.collect_unreferenced(&index)?;
            tracing::info!(id, "image garbage-collected");
            report.removed_images.push(id);
        }
        Ok(report)
    }

    /// Deletes blobs and layer directories `index` does not reference and
    /// returns the bytes freed. Call with the content lock held exclusively.
    /// A layer still mounted as an overlay lowerdir stays until a later run.
    pub(crate) fn collect_unreferenced(&self, index: &Index) -> anyhow::Result<u64> {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for (id, image) in &index.images {
            blobs.insert(hex_of(id).to_string());
            blobs.extend(image.manifests.iter().map(|d| hex_of(d).to_string()));
            for l in &image.layers {
                blobs.insert(hex_of(&l.digest).to_string());
                layers.insert(hex_of(&l.diff_id).to_string());
            }
        }
        let mounted = mounted_lowerdirs();
        let mut freed = 0;
        let blob_dir = self.blob_path("sha256:");
        for (dir, wanted, check_mounts) in [(blob_dir, &blobs, false), (self.layer_dir("sha256:"), &layers, true)] {
            let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if wanted.contains(&name) {
                    continue;
                }
                let path = entry.path();
                if check_mounts && mounted.iter().any(|m| m.contains(path.to_string_lossy().as_ref())) {
                    tracing::info!(layer = %path.display(), "unreferenced layer still mounted; keeping it for now");
                    continue;
                }
                let size = disk_usage(&path);
                remove_path(&path).with_context(|| format!("removing {}", path.display()))?;
                freed += size;
            }
        }
        Ok(freed)
    }
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Mount options of overlay mounts (they name their lowerdirs).
fn mounted_lowerdirs() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| l.contains(" - overlay "))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        .collect()
}

/// Bytes of disk used under `path` (allocated blocks, hard links once).
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}
