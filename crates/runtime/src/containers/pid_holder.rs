//! The holder of a pod's shared PID namespace (`shareProcessNamespace`),
//! upstream's pause container in this role: a process started by the shim
//! program (`pid-holder NSFILE`) that makes a new PID namespace, forks its
//! PID 1, which only reaps the orphans the pod's containers leave, and binds
//! the namespace to NSFILE for containers to join. Containers may then exit
//! and restart in any order without taking the namespace (and the other
//! containers) down with them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{mounts, ShimCommand};

pub const SUBCOMMAND: &str = "pid-holder";

/// Where a sandbox's shared PID namespace is bound.
pub fn ns_file(sandbox_dir: &Path) -> std::path::PathBuf {
    sandbox_dir.join("ns").join("pid")
}

/// The holder's side, in the shim program: prints PID 1's host PID.
pub fn main(args: &[String]) -> i32 {
    let Some(nsfile) = args.first() else {
        eprintln!("usage: pid-holder NSFILE");
        return 2;
    };
    // SAFETY: plain syscalls in a single-threaded process that started just now.
    unsafe {
        libc::setsid();
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            eprintln!("unshare(CLONE_NEWPID): {}", std::io::Error::last_os_error());
            return 1;
        }
        match libc::fork() {
            -1 => {
                eprintln!("fork: {}", std::io::Error::last_os_error());
                1
            }
            0 => reap_forever(),
            child => match mounts::bind_mount(Path::new(&format!("/proc/{child}/ns/pid")), Path::new(nsfile)) {
                Ok(()) => {
                    println!("{child}");
                    0
                }
                Err(e) => {
                    eprintln!("binding the PID namespace: {e:#}");
                    libc::kill(child, libc::SIGKILL);
                    1
                }
            },
        }
    }
}

/// PID 1 of the namespace: detached from the agent's pipes, it reaps
/// whatever is reparented to it and ends on SIGTERM or SIGINT (or SIGKILL).
fn reap_forever() -> ! {
    // SAFETY: fd and signal-mask syscalls on values this process owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        // Blocked signals reach a namespace's PID 1 from outside; ones left at
        // their default action would be dropped.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            if sig != libc::SIGCHLD {
                libc::_exit(0);
            }
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        }
    }
}

/// The agent's side: starts a holder bound to `nsfile`, returns its PID.
pub fn start(shim: &ShimCommand, nsfile: &Path) -> Result<u32> {
    std::fs::File::create(nsfile).with_context(|| format!("creating {}", nsfile.display()))?;
    let out = Command::new(&shim.program)
        .args(&shim.args_prefix)
        .arg(SUBCOMMAND)
        .arg(nsfile)
        .stdin(Stdio::null())
        .output()
        .context("starting the pod's PID namespace holder")?;
    if !out.status.success() {
        bail!("the pod's PID namespace holder failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().context("reading the PID namespace holder's PID")
}

/// Is `pid` still the PID 1 of the namespace bound at `nsfile`?
pub fn alive(pid: u32, nsfile: &Path) -> bool {
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    ino(Path::new(&format!("/proc/{pid}/ns/pid"))).is_some_and(|a| Some(a) == ino(nsfile))
}

/// Ends the holder (the kernel then kills whatever is left in the namespace).
pub fn stop(pid: u32, nsfile: &Path) {
    if alive(pid, nsfile) {
        // SAFETY: plain syscall; `alive` checked that the PID is still ours.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}
