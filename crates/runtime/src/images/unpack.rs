//! Unpacks one layer tar into its own directory, ready to be stacked as an
//! overlayfs lowerdir. Layers are separate lowerdirs (not applied onto each
//! other), so OCI whiteouts become overlayfs whiteouts: `.wh.NAME` turns
//! into a 0:0 character device `NAME`, and `.wh..wh..opq` into the
//! `trusted.overlay.opaque=y` xattr on its directory.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};

use super::oci::HashingReader;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// Recognises the compression by magic bytes: media types lie more often than headers.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Unpacks the layer blob at `blob` (gzip, zstd or plain tar) into `dest`
/// (created, should not exist yet) and returns the layer's diffID: the
/// digest of the uncompressed tar.
pub fn unpack_layer_file(blob: &Path, dest: &Path) -> anyhow::Result<String> {
    let file = fs::File::open(blob).with_context(|| format!("opening layer blob {}", blob.display()))?;
    unpack_layer(file, dest).with_context(|| format!("unpacking layer {} into {}", blob.display(), dest.display()))
}

/// As [`unpack_layer_file`], from any reader.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path) -> anyhow::Result<String> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let compression = Compression::detect(buffered.fill_buf()?);
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    };
    let mut archive = tar::Archive::new(HashingReader::new(decompressed));
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut dir_times = Vec::new();
    for entry in archive.entries().context("reading the layer tar")? {
        let entry = entry.context("reading a layer tar entry")?;
        if let Some(dir_time) = unpack_entry(entry, dest)? {
            dir_times.push(dir_time);
        }
    }
    // Directory mtimes last: creating their children changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    Ok(archive.into_inner().finish()?)
}

/// Unpacks one entry; returns a directory and its mtime to set at the end.
fn unpack_entry<R: Read>(mut entry: tar::Entry<R>, dest: &Path) -> anyhow::Result<Option<(PathBuf, u64)>> {
    use tar::EntryType as T;
    let raw_path = entry.path()?.into_owned();
    let rel = clean_path(&raw_path)?;
    let kind = entry.header().entry_type();
    if matches!(kind, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
        return Ok(None);
    }
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent_dir = ensure_parents(dest, &rel)?;
        if name == OPAQUE_MARKER {
            set_xattr(&parent_dir, "trusted.overlay.opaque", b"y")
                .with_context(|| format!("marking {} opaque", parent.display()))?;
        } else if !hidden.starts_with(WHITEOUT_PREFIX) {
            let target = parent_dir.join(hidden);
            remove_existing(&target)?;
            mknod(&target, libc::S_IFCHR, 0, 0).with_context(|| format!("creating whiteout {}", target.display()))?;
        }
        // Other `.wh..wh.` names are aufs bookkeeping, meaningless here.
        return Ok(None);
    }
    let target = if rel.as_os_str().is_empty() { dest.to_path_buf() } else { ensure_parents(dest, &rel)?.join(&name) };
    let header = entry.header().clone();
    let mode = header.mode()? & 0o7777;
    match kind {
        T::Directory => {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_existing(&target)?;
                    fs::create_dir(&target)?;
                }
                Err(_) => fs::create_dir(&target).with_context(|| format!("creating {}", target.display()))?,
            }
        }
        T::Regular | T::Continuous | T::GNUSparse => {
            remove_existing(&target)?;
            let mut file = fs::File::create(&target).with_context(|| format!("creating {}", target.display()))?;
            std::io::copy(&mut entry, &mut file).with_context(|| format!("writing {}", target.display()))?;
        }
        T::Symlink => {
            let link = entry.link_name()?.context("symlink without a target")?;
            remove_existing(&target)?;
            symlink(&link, &target).with_context(|| format!("creating symlink {}", target.display()))?;
        }
        T::Link => {
            let link = entry.link_name()?.context("hard link without a target")?;
            let source_rel = clean_path(&link)?;
            let source = ensure_parents(dest, &source_rel)?.join(source_rel.file_name().unwrap_or_default());
            fs::symlink_metadata(&source)
                .with_context(|| format!("hard link {} -> {}: target not in this layer", rel.display(), link.display()))?;
            remove_existing(&target)?;
            fs::hard_link(&source, &target).with_context(|| format!("linking {} to {}", target.display(), source.display()))?;
            // The inode already carries its owner, mode and times.
            return Ok(None);
        }
        T::Char | T::Block | T::Fifo => {
            let file_type = match kind {
                T::Char => libc::S_IFCHR,
                T::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let major = header.device_major()?.unwrap_or(0);
            let minor = header.device_minor()?.unwrap_or(0);
            remove_existing(&target)?;
            mknod(&target, file_type | mode, major, minor).with_context(|| format!("creating device {}", target.display()))?;
        }
        other => {
            tracing::debug!(path = %rel.display(), kind = ?other, "skipping unsupported tar entry");
            return Ok(None);
        }
    }
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(attr) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                if let Err(e) = set_xattr(&target, attr, ext.value_bytes()) {
                    tracing::warn!(path = %rel.display(), attr, error = %e, "cannot set xattr from layer");
                }
            }
        }
    }
    chown(&target, header.uid()? as u32, header.gid()? as u32)?;
    if kind != T::Symlink {
        // After chown: chown clears setuid/setgid bits.
        chmod(&target, mode)?;
    }
    let mtime = header.mtime().unwrap_or(0);
    if kind == T::Directory {
        return Ok(Some((target, mtime)));
    }
    set_mtime(&target, mtime)?;
    Ok(None)
}

/// The entry's path relative to the layer root, without `.`/`..`; an error
/// if `..` would climb out of the layer.
pub fn clean_path(path: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    bail!("layer entry {:?} escapes the layer directory", path);
                }
            }
        }
    }
    Ok(out)
}

/// Makes sure every ancestor of `rel` under `dest` is a real directory
/// (creating missing ones) and returns the parent directory's path. A
/// symlink among the ancestors is refused: following it could write
/// outside the layer.
fn ensure_parents(dest: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let mut dir = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for part in parent.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                bail!("layer entry {} goes through the symlink {}", rel.display(), dir.display())
            }
            Ok(_) => bail!("layer entry {} is below {}, which is not a directory", rel.display(), dir.display()),
            Err(_) => fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?,
        }
    }
    Ok(dir)
}

/// Removes whatever is at `path` (a later entry replaces an earlier one).
fn remove_existing(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).with_context(|| format!("replacing {}", path.display())),
        Ok(_) => fs::remove_file(path).with_context(|| format!("replacing {}", path.display())),
        Err(_) => Ok(()),
    }
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).with_context(|| format!("path {} contains a NUL byte", path.display()))
}

fn check(rc: libc::c_int, what: &str, path: &Path) -> anyhow::Result<()> {
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("{what} {}", path.display()));
    }
    Ok(())
}

fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> anyhow::Result<()> {
    let p = c_path(path)?;
    // SAFETY: p is a valid NUL-terminated path.
    check(unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) }, "mknod", path)
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> anyhow::Result<()> {
    let p = c_path(path)?;
    let n = CString::new(name)?;
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check(rc, &format!("setting xattr {name} on"), path)
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let p = c_path(path)?;
    // SAFETY: p is a valid NUL-terminated path.
    let rc = unsafe { libc::lchown(p.as_ptr(), uid, gid) };
    // SAFETY: geteuid has no preconditions.
    if rc < 0 && unsafe { libc::geteuid() } != 0 {
        return Ok(()); // unprivileged unpack keeps our own ownership
    }
    check(rc, "chown", path)
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    let p = c_path(path)?;
    // SAFETY: p is a valid NUL-terminated path.
    check(unsafe { libc::chmod(p.as_ptr(), mode) }, "chmod", path)
}

fn set_mtime(path: &Path, mtime: u64) -> anyhow::Result<()> {
    let p = c_path(path)?;
    let t = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array, as utimensat wants.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    check(rc, "setting mtime of", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(Path::new("./a/b/../c")).unwrap(), PathBuf::from("a/c"));
        assert_eq!(clean_path(Path::new("/etc/passwd")).unwrap(), PathBuf::from("etc/passwd"));
        assert!(clean_path(Path::new("../x")).is_err());
        assert!(clean_path(Path::new("a/../../x")).is_err());
    }

    #[test]
    fn detects_compression() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::detect(b"etc/"), Compression::None);
    }
}
