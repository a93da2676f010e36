//! Thin wrappers over mount(2)/umount2(2) with errors that name the paths.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("path contains a NUL byte")
}

fn mount_raw(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    let src = CString::new(source)?;
    let tgt = cstr(target)?;
    let fst = CString::new(fstype)?;
    let dat = CString::new(data)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                fst.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                dat.as_ptr() as *const libc::c_void
            },
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "mounting {source} ({fstype}) on {}: {err}",
            target.display()
        );
    }
    Ok(())
}

/// Mounts an overlay of `lower` (top layer first) with `upper`/`work` on `target`.
pub fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    if lower.is_empty() {
        bail!("image has no layers");
    }
    let lowerdir = lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if data.len() >= 4096 {
        bail!(
            "overlay mount options exceed one page ({} layers); too many image layers",
            lower.len()
        );
    }
    mount_raw("overlay", target, "overlay", 0, &data)
}

pub fn mount_tmpfs(target: &Path, data: &str) -> Result<()> {
    mount_raw(
        "tmpfs",
        target,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data,
    )
}

pub fn bind_mount(source: &Path, target: &Path) -> Result<()> {
    mount_raw(&source.display().to_string(), target, "", libc::MS_BIND, "")
}

pub fn make_private(target: &Path) -> Result<()> {
    mount_raw("none", target, "", libc::MS_PRIVATE, "")
}

/// Lazily unmounts `target` until nothing is mounted there; a path that is
/// not mounted (or does not exist) is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    let tgt = cstr(target)?;
    for _ in 0..16 {
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(err).with_context(|| format!("unmounting {}", target.display())),
            };
        }
    }
    Ok(())
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Unmounts everything at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        unmount_all(&point)?;
    }
    Ok(())
}
