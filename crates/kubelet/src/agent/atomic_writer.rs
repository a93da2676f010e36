//! Writes the files of configMap, secret, downwardAPI and projected volumes
//! so that a container sees either the old set or the new one, never a mix,
//! and sees updates in place — kubelet's AtomicWriter layout:
//!
//! ```text
//! <dir>/..2024_01_01_00_00_00.123456789/   the current payload
//! <dir>/..data -> ..2024_01_01_00_00_00.123456789
//! <dir>/key    -> ..data/key                (one link per top-level name)
//! ```
//!
//! An update writes a new timestamped directory, swaps `..data` by renaming
//! a new symlink over it, then fixes the top-level links and removes the
//! old payload.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of the payload: relative path, content, mode, and an optional group owner (fsGroup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

pub type Payload = BTreeMap<String, FileProjection>;

/// Rejects absolute paths, `..` components and names starting with `..`,
/// as upstream's validatePath does.
fn validate(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("invalid path: must not be empty");
    }
    if path.len() > 4096 {
        bail!("invalid path: must be less than or equal to 4096 characters");
    }
    let p = Path::new(path);
    if p.is_absolute() {
        bail!("invalid path: must be relative path: {path}");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) || path.split('/').any(|s| s == "..") {
        bail!("invalid path: must not contain '..': {path}");
    }
    if path.starts_with("..") {
        bail!("invalid path: must not start with '..': {path}");
    }
    Ok(())
}

fn read_current(dir: &Path) -> Option<(String, Payload)> {
    let target = std::fs::read_link(dir.join(DATA)).ok()?;
    let ts = target.to_str()?.to_string();
    let mut out = Payload::new();
    fn walk(base: &Path, rel: &str, out: &mut Payload) -> Option<()> {
        for e in std::fs::read_dir(base.join(rel)).ok()? {
            let e = e.ok()?;
            let name = e.file_name().to_str()?.to_string();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let md = e.metadata().ok()?;
            if md.is_dir() {
                walk(base, &r, out)?;
            } else {
                out.insert(r.clone(), FileProjection { data: std::fs::read(base.join(&r)).ok()?, mode: md.permissions().mode() & 0o7777 });
            }
        }
        Some(())
    }
    walk(&dir.join(&ts), "", &mut out)?;
    Some((ts, out))
}

fn top_level(payload: &Payload) -> BTreeSet<String> {
    payload.keys().filter_map(|k| k.split('/').next().map(str::to_string)).collect()
}

/// Makes `dir` hold exactly `payload`; returns whether anything changed.
/// `gid` (fsGroup) becomes the group of every file when set.
pub fn write(dir: &Path, payload: &Payload, gid: Option<u32>) -> Result<bool> {
    for path in payload.keys() {
        validate(path)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let old = read_current(dir);
    if let Some((_, current)) = &old {
        if current == payload {
            return Ok(false);
        }
    }
    let ts = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let ts_dir = dir.join(&ts);
    std::fs::create_dir(&ts_dir).with_context(|| format!("creating {}", ts_dir.display()))?;
    for (path, f) in payload {
        let file = ts_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, &f.data).with_context(|| format!("writing {}", file.display()))?;
        // With an fsGroup the group may read every file, as upstream's volume ownership does.
        let mode = if gid.is_some() { f.mode | 0o440 } else { f.mode };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&file, None, Some(gid))?;
        }
    }
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&ts_dir, None, Some(gid))?;
        std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o2755))?;
    }
    // Swap ..data atomically.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA)).context("swapping ..data")?;
    // Top-level links: add new names, drop vanished ones.
    let wanted = top_level(payload);
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("{DATA}/{name}"), &link)?;
        }
    }
    if let Some((old_ts, old_payload)) = old {
        for name in top_level(&old_payload).difference(&wanted) {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir_all(dir.join(old_ts));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> FileProjection {
        FileProjection { data: s.as_bytes().to_vec(), mode }
    }

    #[test]
    fn writes_swaps_and_prunes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let mut p = Payload::new();
        p.insert("a".into(), file("one", 0o644));
        p.insert("sub/b".into(), file("two", 0o600));
        assert!(write(&dir, &p, None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "two");
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(std::fs::metadata(dir.join("sub/b")).unwrap().permissions().mode() & 0o777, 0o600);
        let first = std::fs::read_link(dir.join(DATA)).unwrap();
        assert!(!write(&dir, &p, None).unwrap(), "same payload: nothing to do");
        assert_eq!(std::fs::read_link(dir.join(DATA)).unwrap(), first);

        // An update seen through a link opened before it, as a container would.
        let mut p2 = Payload::new();
        p2.insert("a".into(), file("uno", 0o644));
        p2.insert("c".into(), file("three", 0o644));
        assert!(write(&dir, &p2, None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "uno");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "three");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err(), "vanished names are removed");
        assert!(!dir.join(&first).exists(), "the old payload is removed");
        let entries: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(entries.iter().filter(|e| e.starts_with("..") && *e != DATA).count(), 1, "{entries:?}");
    }

    #[test]
    fn empty_payload_and_bad_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        assert!(write(&dir, &Payload::new(), None).unwrap());
        assert!(dir.join(DATA).exists());
        for bad in ["/abs", "../x", "a/../../b", "..hidden", ""] {
            let mut p = Payload::new();
            p.insert(bad.into(), file("x", 0o644));
            assert!(write(&dir, &p, None).is_err(), "{bad}");
        }
    }
}
