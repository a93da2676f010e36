//! runc's `--console-socket`: runc connects to a unix socket we listen on and
//! sends the pty master of the new process with SCM_RIGHTS.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A listening console socket with a short path (sun_path holds 108 bytes,
/// too few for paths under a container directory); removed on drop.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let path = socket_path(&format!("console-{}", &super::new_id()?[..16]))?;
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Waits for runc (`child`) to send the pty master; fails if runc exits first.
    pub fn receive(&self, child: &mut Child, timeout: Duration) -> Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    return recv_fd(stream.as_raw_fd())
                        .context("receiving the pty master from runc");
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting on the console socket"),
            }
            if let Some(status) = child.try_wait()? {
                // runc may have connected just before exiting.
                if let Ok((stream, _)) = self.listener.accept() {
                    stream.set_nonblocking(false)?;
                    return recv_fd(stream.as_raw_fd())
                        .context("receiving the pty master from runc");
                }
                bail!("runc exited ({status}) without sending a terminal");
            }
            if Instant::now() > deadline {
                bail!("runc did not send a terminal within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `/run/skiff-runtime/<name>.sock`: short enough for sun_path, and only root may use it.
pub fn socket_path(name: &str) -> Result<PathBuf> {
    let dir = Path::new("/run/skiff-runtime");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{name}.sock")))
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one descriptor with a one-byte message over a unix socket.
pub fn send_fd(sock: libc::c_int, fd: libc::c_int) -> Result<()> {
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; the CMSG macros write inside `control`, which
    // is large enough for one descriptor.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

pub fn recv_fd(sock: libc::c_int) -> Result<OwnedFd> {
    // One byte: a stream may carry more data after the descriptor's message.
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // u64 array: cmsg buffers must be aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; zeroed is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel filled msg; CMSG_* walk the control buffer it describes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            bail!("no file descriptor in the console socket message");
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
