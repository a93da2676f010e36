//! A sandbox's network, IPC and UTS namespaces, made in-process: one short
//! thread unshares them (these three may be unshared by a single thread of a
//! multi-threaded process), sets the hostname and brings `lo` up inside,
//! and bind-mounts each onto its file, which keeps it alive after the thread
//! ends. This replaces `ip netns add`, `ip link set lo up` and `unshare`
//! process starts: a burst of pods is bound by process starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::mounts;

/// Where each new namespace is bound (None: share the host's).
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    /// The UTS namespace file and the pod's hostname in it.
    pub uts: Option<(PathBuf, String)>,
}

impl PodNamespaces {
    /// The files the namespaces are (to be) bound to.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [self.net.as_deref(), self.ipc.as_deref(), self.uts.as_ref().map(|(p, _)| p.as_path())].into_iter().flatten()
    }

    pub fn create(&self) -> Result<()> {
        let wanted = [
            ("net", libc::CLONE_NEWNET, self.net.as_deref()),
            ("ipc", libc::CLONE_NEWIPC, self.ipc.as_deref()),
            ("uts", libc::CLONE_NEWUTS, self.uts.as_ref().map(|(p, _)| p.as_path())),
        ];
        let mut flags = 0;
        let mut bind: Vec<(&'static str, PathBuf)> = Vec::new();
        for (kind, flag, file) in wanted {
            let Some(file) = file else { continue };
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
            flags |= flag;
            bind.push((kind, file.to_path_buf()));
        }
        if flags == 0 {
            return Ok(());
        }
        let hostname = self.uts.as_ref().map(|(_, h)| h.clone());
        let made = std::thread::Builder::new().name("pod-namespaces".into()).spawn(move || -> Result<()> {
            // SAFETY: unshare only changes this thread's namespaces.
            if unsafe { libc::unshare(flags) } != 0 {
                return Err(std::io::Error::last_os_error()).context("unshare");
            }
            if let Some(h) = &hostname {
                // SAFETY: a valid buffer and its length.
                if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("setting the hostname {h:?}"));
                }
            }
            if flags & libc::CLONE_NEWNET != 0 {
                loopback_up().context("bringing lo up")?;
            }
            for (kind, file) in &bind {
                mounts::bind_mount(Path::new(&format!("/proc/thread-self/ns/{kind}")), file)?;
            }
            Ok(())
        })?;
        made.join().map_err(|_| anyhow::anyhow!("the pod-namespaces thread panicked"))?
    }
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a socket we own, and an ifreq sized and NUL-terminated as the ioctls expect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(())
}
