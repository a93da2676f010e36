//! Layer unpacking: metadata kept, escapes refused, and OCI whiteouts turned
//! into overlayfs whiteouts that a real overlay mount honours. Needs root.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use runtime::images::unpack::unpack_layer;

fn entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, mode: u32, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, path, data).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    b.append_link(&mut h, path, target).unwrap();
}

fn read_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[test]
fn keeps_ownership_modes_links_and_mtimes() {
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Directory, "usr/", 0o750, &[]);
    entry(&mut b, tar::EntryType::Regular, "usr/tool", 0o4755, b"#!/bin/sh\n");
    link(&mut b, tar::EntryType::Symlink, "usr/alias", "tool");
    link(&mut b, tar::EntryType::Link, "usr/hard", "usr/tool");
    entry(&mut b, tar::EntryType::Regular, "deep/implicit/file", 0o600, b"x");
    let layer = flate2_gzip(&b.into_inner().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("layer");
    let diff_id = unpack_layer(&layer[..], &dest).unwrap();
    assert!(diff_id.starts_with("sha256:"));

    let tool = std::fs::symlink_metadata(dest.join("usr/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid bit survives chown");
    assert_eq!((tool.uid(), tool.gid()), (1234, 5678));
    assert_eq!(tool.mtime(), 1_600_000_000);
    let usr = std::fs::metadata(dest.join("usr")).unwrap();
    assert_eq!(usr.permissions().mode() & 0o777, 0o750);
    assert_eq!(usr.mtime(), 1_600_000_000, "directory mtime is set after its children");
    assert_eq!(std::fs::read_link(dest.join("usr/alias")).unwrap(), Path::new("tool"));
    let hard = std::fs::metadata(dest.join("usr/hard")).unwrap();
    assert_eq!(hard.ino(), tool.ino(), "hard link shares the inode");
    assert_eq!(std::fs::read(dest.join("deep/implicit/file")).unwrap(), b"x");
}

#[test]
fn refuses_paths_escaping_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    // `..` climbing out, written by hand since the tar crate refuses to build it.
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..12].copy_from_slice(b"../escaped-x");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(&[0u8; 1024]);
    let err = unpack_layer(&raw[..], &dir.path().join("l1")).unwrap_err();
    assert!(format!("{err:#}").contains("escapes"), "{err:#}");
    assert!(!dir.path().join("escaped-x").exists());

    // A symlink to outside, then a file "through" it.
    let mut b = tar::Builder::new(Vec::new());
    link(&mut b, tar::EntryType::Symlink, "etc", "/etc");
    entry(&mut b, tar::EntryType::Regular, "etc/skiff-should-not-exist", 0o644, b"x");
    let err = unpack_layer(&b.into_inner().unwrap()[..], &dir.path().join("l2")).unwrap_err();
    assert!(format!("{err:#}").contains("symlink"), "{err:#}");
    assert!(!Path::new("/etc/skiff-should-not-exist").exists());

    // A hard link to a host file.
    let mut b = tar::Builder::new(Vec::new());
    link(&mut b, tar::EntryType::Link, "passwd", "../../../../etc/passwd");
    assert!(unpack_layer(&b.into_inner().unwrap()[..], &dir.path().join("l3")).is_err());
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mounted<'a>(&'a Path);
impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn whiteouts_and_opaque_dirs_work_in_a_real_overlay() {
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Directory, "a/", 0o755, &[]);
    entry(&mut b, tar::EntryType::Regular, "a/keep", 0o644, b"keep");
    entry(&mut b, tar::EntryType::Regular, "a/gone", 0o644, b"gone");
    entry(&mut b, tar::EntryType::Directory, "d/", 0o755, &[]);
    entry(&mut b, tar::EntryType::Regular, "d/old", 0o644, b"old");
    entry(&mut b, tar::EntryType::Regular, "top", 0o644, b"top");
    let lower = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Regular, "a/.wh.gone", 0o644, &[]);
    entry(&mut b, tar::EntryType::Directory, "d/", 0o755, &[]);
    entry(&mut b, tar::EntryType::Regular, "d/.wh..wh..opq", 0o644, &[]);
    entry(&mut b, tar::EntryType::Regular, "d/new", 0o644, b"new");
    entry(&mut b, tar::EntryType::Regular, ".wh.top", 0o644, &[]);
    let upper = zstd::stream::encode_all(&b.into_inner().unwrap()[..], 3).unwrap();

    let dir = tempfile::Builder::new().prefix("skiff-overlay-test-").tempdir().unwrap();
    let (l1, l2, merged) = (dir.path().join("l1"), dir.path().join("l2"), dir.path().join("merged"));
    unpack_layer(&lower[..], &l1).unwrap();
    unpack_layer(&upper[..], &l2).unwrap();
    std::fs::create_dir(&merged).unwrap();

    let whiteout = std::fs::symlink_metadata(l2.join("a/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0, "whiteout is device 0:0");
    assert!(!l2.join("a/.wh.gone").exists());
    assert_eq!(read_xattr(&l2.join("d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!l2.join("d/.wh..wh..opq").exists());

    let opts = format!("lowerdir={}:{}", l2.display(), l1.display());
    let status = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&merged).status().unwrap();
    assert!(status.success(), "mounting overlay (needs root)");
    let _mounted = Mounted(&merged);
    assert_eq!(std::fs::read(merged.join("a/keep")).unwrap(), b"keep");
    assert!(!merged.join("a/gone").exists(), "whiteout hides the lower file");
    assert!(!merged.join("top").exists(), "whiteout at the root hides the lower file");
    assert!(!merged.join("d/old").exists(), "opaque dir hides lower contents");
    assert_eq!(std::fs::read(merged.join("d/new")).unwrap(), b"new");
}

fn flate2_gzip(data: &[u8]) -> Vec<u8> {
    runtime::images::testimage::gzip(data)
}
