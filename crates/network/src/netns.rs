//! Running code inside another network namespace. setns(2) changes only the
//! calling thread, so the work happens on a short-lived dedicated thread and
//! no runtime worker ever leaves the host namespace.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` on a new thread that has joined the network namespace `netns`
/// (a namespace file such as /run/netns/NAME or /proc/PID/ns/net).
pub fn in_netns<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(netns)
        .map_err(|e| io::Error::new(e.kind(), format!("opening netns {}: {e}", netns.display())))?;
    let handle = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // SAFETY: ns is an open namespace file; setns affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("netns worker thread panicked"))?
        .map_err(|e| io::Error::new(e.kind(), format!("entering netns {}: {e}", netns.display())))
}

/// Opens a TCP connection to 127.0.0.1:port inside a network namespace
/// (kubectl port-forward). The socket stays in the pod's namespace.
pub fn connect_in_netns(netns: &Path, port: u16) -> io::Result<TcpStream> {
    in_netns(netns, move || {
        TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    })?
}
