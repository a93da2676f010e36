//! `kubectl attach`: the shim holds the container's stdin (a pipe, or the
//! pty master) and serves `/run/skiff-runtime/attach-<id>.sock`. Whoever
//! connects gets the pty master by SCM_RIGHTS first (tty containers, for
//! resize), then the container's output as frames `[stream u8][len u32 BE][bytes]`
//! (1 = stdout, 2 = stderr); bytes it sends go to the container's stdin. With
//! `stdinOnce` the container's stdin is closed when the first client closes its side.
//! The connection ends when the container exits.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::console::{recv_fd, send_fd, socket_path};
use super::logs::LogStream;
use super::meta::{self, ExitRecord};
use super::Runtime;
use crate::cri::{ContainerState, ExecProcess};

pub fn attach_socket(id: &str) -> Result<PathBuf> {
    socket_path(&format!("attach-{id}"))
}

/// The shim's side: attached clients and the container's stdin.
pub struct AttachServer {
    clients: Mutex<Vec<UnixStream>>,
    stdin: Mutex<Option<std::fs::File>>,
    pty: Option<OwnedFd>,
    stdin_once: bool,
    path: PathBuf,
}

impl AttachServer {
    pub fn start(
        id: &str,
        stdin: Option<OwnedFd>,
        pty: Option<OwnedFd>,
        stdin_once: bool,
    ) -> Result<Arc<AttachServer>> {
        let path = attach_socket(id)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        let server = Arc::new(AttachServer {
            clients: Mutex::new(Vec::new()),
            stdin: Mutex::new(stdin.map(std::fs::File::from)),
            pty,
            stdin_once,
            path,
        });
        let accepting = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepting.serve(stream);
            }
        });
        Ok(server)
    }

    fn serve(self: &Arc<Self>, stream: UnixStream) {
        if let Some(pty) = &self.pty {
            if send_fd(stream.as_raw_fd(), pty.as_raw_fd()).is_err() {
                return;
            }
        }
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        if let Ok(mut clients) = self.clients.lock() {
            clients.push(stream);
        }
        let server = self.clone();
        std::thread::spawn(move || server.forward_input(reader));
    }

    fn forward_input(&self, mut client: UnixStream) {
        let mut buf = [0u8; 8192];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut stdin = self.stdin.lock().unwrap();
            if let Some(file) = stdin.as_mut() {
                if file.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        if self.stdin_once {
            // Dropping our descriptor gives the container EOF (a pty master stays open for output).
            self.stdin.lock().unwrap().take();
        }
    }

    /// Sends a piece of container output to every attached client.
    pub fn broadcast(&self, stream: LogStream, data: &[u8]) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if clients.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(data.len() + 5);
        frame.push(if stream == LogStream::Stderr { 2 } else { 1 });
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        clients.retain_mut(|c| c.write_all(&frame).is_ok());
    }

    /// Ends every attach session (the container exited).
    pub fn close(&self) {
        if let Ok(mut clients) = self.clients.lock() {
            for c in clients.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A reader that shows everything it reads to the attach server too.
pub struct Tee<R> {
    pub inner: R,
    pub stream: LogStream,
    pub server: Arc<AttachServer>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.server.broadcast(self.stream, &buf[..n]);
        }
        Ok(n)
    }
}

fn pipe_pair() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = std::io::pipe().context("creating a pipe")?;
    Ok((
        std::fs::File::from(OwnedFd::from(r)),
        std::fs::File::from(OwnedFd::from(w)),
    ))
}

impl Runtime {
    pub(super) fn attach_to(&self, id: &str, want_stdin: bool) -> Result<ExecProcess> {
        let status = self.status(id)?;
        if status.state != ContainerState::Running {
            anyhow::bail!(
                "container {} is not running (state {:?})",
                status.id,
                status.state
            );
        }
        let meta = self.load_container(&status.id)?;
        let path = attach_socket(&meta.id)?;
        let stream = UnixStream::connect(&path)
            .with_context(|| format!("connecting to the container shim at {}", path.display()))?;
        let pty = if meta.tty {
            Some(recv_fd(stream.as_raw_fd()).context("receiving the container's terminal")?)
        } else {
            None
        };
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = if meta.tty {
            (None, None)
        } else {
            pipe_pair().map(|(r, w)| (Some(r), Some(w)))?
        };
        let reader = stream.try_clone()?;
        let exit_file = self.container_dir(&meta.id).join("exit.json");
        let (tx, exit) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            copy_frames(reader, out_w, err_w);
            // The shim closes us when the container exits; its record follows at once.
            let deadline = Instant::now() + Duration::from_secs(5);
            let code = loop {
                if let Ok(Some(rec)) = meta::read_json_opt::<ExitRecord>(&exit_file) {
                    break rec.exit_code;
                }
                if Instant::now() > deadline {
                    break 255;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let _ = tx.send(code);
        });
        let stdin = if want_stdin && meta.stdin {
            let (in_r, in_w) = pipe_pair()?;
            let mut writer = stream;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut { in_r }, &mut writer);
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
            Some(tokio::fs::File::from_std(in_w))
        } else {
            None
        };
        Ok(ExecProcess {
            stdin,
            stdout: Some(tokio::fs::File::from_std(out_r)),
            stderr: err_r.map(tokio::fs::File::from_std),
            pty,
            exit,
        })
    }
}

/// Splits the shim's frames onto the stdout/stderr pipes until the shim closes.
fn copy_frames(mut from: UnixStream, mut out: std::fs::File, mut err: Option<std::fs::File>) {
    let mut header = [0u8; 5];
    while from.read_exact(&mut header).is_ok() {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut data = vec![0u8; len];
        if from.read_exact(&mut data).is_err() {
            break;
        }
        let target = match (header[0], err.as_mut()) {
            (2, Some(e)) => e,
            _ => &mut out,
        };
        if target.write_all(&data).is_err() {
            break;
        }
    }
}
