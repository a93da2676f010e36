//! Air-gap image preloading, as k3s does from `agent/images/`: every image
//! archive (`*.tar`, `*.tar.gz`/`*.tgz`, `*.tar.zst`/`*.tzst`) lying in a
//! directory is imported when the node agent starts, pinned so garbage
//! collection leaves it. A small record (`.imported.json` in the directory)
//! skips archives imported before and unchanged since, as long as their
//! images are still in the store. A bad archive is logged and skipped.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::store::Store;

/// The record of archives already imported, kept in the scanned directory.
pub const IMPORT_RECORD: &str = ".imported.json";
const ARCHIVE_SUFFIXES: [&str; 5] = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

/// What [`Store::import_directory`] did.
#[derive(Clone, Debug, Default)]
pub struct PreloadReport {
    /// Archives imported now, with the image names each held.
    pub imported: Vec<(PathBuf, Vec<String>)>,
    /// Archives unchanged since an earlier import whose images are all present.
    pub unchanged: Vec<PathBuf>,
    /// Archives that could not be imported, with why.
    pub failed: Vec<(PathBuf, String)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    names: Vec<String>,
}

/// Whether a file name is an image archive k3s would import.
pub fn is_image_archive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s)) && !lower.starts_with('.')
}

impl Store {
    /// Imports every image archive directly in `dir` (not below it); a
    /// missing directory is nothing to import.
    pub async fn import_directory(&self, dir: &Path) -> anyhow::Result<PreloadReport> {
        let mut report = PreloadReport::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(e).with_context(|| format!("listing image archives in {}", dir.display())),
        };
        let mut archives: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| is_image_archive(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        archives.sort();
        let record_path = dir.join(IMPORT_RECORD);
        let mut record: BTreeMap<String, Stamp> = std::fs::read(&record_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let index = self.read_index()?;
        for path in archives {
            let file_name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let (size, mtime_ns) = (meta.len(), meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128);
            if let Some(stamp) = record.get(&file_name) {
                let present = stamp.names.iter().all(|n| Store::find_image(&index, n).is_some());
                if stamp.size == size && stamp.mtime_ns == mtime_ns && present && !stamp.names.is_empty() {
                    tracing::debug!(archive = %path.display(), "image archive unchanged since its import");
                    report.unchanged.push(path);
                    continue;
                }
            }
            let started = std::time::Instant::now();
            match self.import_archive(&path, true).await {
                Ok(names) => {
                    tracing::info!(archive = %path.display(), images = ?names, took = ?started.elapsed(), "imported image archive");
                    record.insert(file_name, Stamp { size, mtime_ns, names: names.clone() });
                    report.imported.push((path, names));
                }
                Err(e) => {
                    tracing::error!(archive = %path.display(), "importing image archive failed: {e:#}");
                    record.remove(&file_name);
                    report.failed.push((path, format!("{e:#}")));
                }
            }
        }
        // Forget archives that are gone; a failure to write the record only costs a re-import.
        let kept: Vec<String> = report
            .imported
            .iter()
            .map(|(p, _)| p)
            .chain(report.unchanged.iter())
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect();
        record.retain(|k, _| kept.contains(k));
        if let Err(e) = write_record(&record_path, &record) {
            tracing::warn!("writing {}: {e:#}", record_path.display());
        }
        Ok(report)
    }
}

fn write_record(path: &Path, record: &BTreeMap<String, Stamp>) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(record)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_image_archive;

    #[test]
    fn archive_names_as_k3s() {
        for ok in ["app.tar", "APP.TAR", "x.tar.gz", "x.tgz", "x.tar.zst", "x.tzst", "k3s-airgap-images-amd64.tar.zst"] {
            assert!(is_image_archive(ok), "{ok}");
        }
        for no in ["index.json", "blobs", "x.tar.lz4", "x.txt", ".imported.json", ".hidden.tar", "tar"] {
            assert!(!is_image_archive(no), "{no}");
        }
    }
}
