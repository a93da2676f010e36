//! libnftables in process: one long-lived context on its own OS thread,
//! so a batch costs what nft's parser and the kernel need and no process
//! start (~8 ms per `nft -f`, more than a one-element change itself). The
//! library is opened at run time (`libnftables.so.1`, from the package
//! the `nft` binary comes from), so a host without it still works through
//! `nft -f -`.
//!
//! The context's netlink socket is opened in the thread's network
//! namespace, so the thread joins the target namespace before creating it.
//! A context is not thread-safe; only its thread touches it. The same
//! thread sends `netlink` element batches (from the same namespace).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{mpsc, OnceLock};

use anyhow::{anyhow, Context as _};
use tokio::sync::oneshot;

use super::netlink;

type Ctx = *mut c_void;

/// The few entry points used, resolved once per process.
struct Api {
    ctx_new: unsafe extern "C" fn(u32) -> Ctx,
    ctx_free: unsafe extern "C" fn(Ctx),
    buffer_output: unsafe extern "C" fn(Ctx) -> c_int,
    buffer_error: unsafe extern "C" fn(Ctx) -> c_int,
    output_buffer: unsafe extern "C" fn(Ctx) -> *const c_char,
    error_buffer: unsafe extern "C" fn(Ctx) -> *const c_char,
    run_cmd: unsafe extern "C" fn(Ctx, *const c_char) -> c_int,
}

const LIBRARY: &CStr = c"libnftables.so.1";

/// The library, or why it could not be loaded (the same answer all process long).
fn api() -> Result<&'static Api, &'static str> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(String::as_str)
}

fn load() -> Result<Api, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never
    // closed, so the resolved pointers stay valid for the process.
    unsafe {
        let handle = libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return Err(dl_error());
        }
        let sym = |name: &CStr| -> Result<*mut c_void, String> {
            let p = libc::dlsym(handle, name.as_ptr());
            if p.is_null() {
                Err(format!("{} has no {}", LIBRARY.to_string_lossy(), name.to_string_lossy()))
            } else {
                Ok(p)
            }
        };
        Ok(Api {
            ctx_new: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(u32) -> Ctx>(sym(c"nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx)>(sym(c"nft_ctx_free")?),
            buffer_output: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx) -> c_int>(sym(c"nft_ctx_buffer_output")?),
            buffer_error: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx) -> c_int>(sym(c"nft_ctx_buffer_error")?),
            output_buffer: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx) -> *const c_char>(sym(c"nft_ctx_get_output_buffer")?),
            error_buffer: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx) -> *const c_char>(sym(c"nft_ctx_get_error_buffer")?),
            run_cmd: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Ctx, *const c_char) -> c_int>(sym(c"nft_run_cmd_from_buffer")?),
        })
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        format!("cannot load {}", LIBRARY.to_string_lossy())
    } else {
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

enum Work {
    /// nft text; the answer is what nft printed.
    Text(CString),
    Elements(netlink::Elements),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<String, String>>,
}

/// A libnftables context living on its own thread; dropping the last
/// handle ends the thread and frees the context.
pub struct Context {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("libnftables::Context")
    }
}

impl Context {
    /// Loads the library (once per process) and starts a context in
    /// `netns` (None: the namespace of the calling process).
    pub fn start(netns: Option<&Path>) -> anyhow::Result<Context> {
        let api = api().map_err(|e| anyhow!("{e}"))?;
        let ns = netns.map(|p| File::open(p).with_context(|| format!("opening netns {}", p.display()))).transpose()?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("nft".into())
            .spawn(move || {
                if let Some(ns) = ns {
                    // SAFETY: ns is an open namespace file; setns affects only this thread.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        let _ = ready_tx.send(Err(format!("entering the netns: {}", std::io::Error::last_os_error())));
                        return;
                    }
                }
                // SAFETY: the context is created, used and freed on this thread only.
                let ctx = unsafe { (api.ctx_new)(0) };
                if ctx.is_null() {
                    let _ = ready_tx.send(Err("nft_ctx_new failed".into()));
                    return;
                }
                unsafe {
                    (api.buffer_output)(ctx);
                    (api.buffer_error)(ctx);
                }
                let _ = ready_tx.send(Ok(()));
                let mut socket: Option<netlink::Socket> = None;
                for job in rx {
                    let answer = match job.work {
                        Work::Text(script) => run(api, ctx, &script),
                        Work::Elements(elements) => add_elements(&mut socket, elements),
                    };
                    let _ = job.reply.send(answer);
                }
                unsafe { (api.ctx_free)(ctx) };
            })
            .context("starting the nft thread")?;
        ready_rx.recv().map_err(|_| anyhow!("the nft thread ended"))?.map_err(|e| anyhow!("{e}"))?;
        Ok(Context { jobs })
    }

    /// Runs one batch (the text `nft -f` reads), atomically like `nft -f`,
    /// and returns what nft printed (listings).
    pub async fn run(&self, script: &str) -> anyhow::Result<String> {
        let script = CString::new(script).context("the nft batch contains a NUL byte")?;
        self.ask(Work::Text(script)).await.map_err(|e| anyhow!("nft failed: {e}"))
    }

    /// Adds elements in one transaction, over netlink.
    pub async fn add_elements(&self, elements: netlink::Elements) -> anyhow::Result<()> {
        self.ask(Work::Elements(elements)).await.map(drop).map_err(|e| anyhow!("{e}"))
    }

    async fn ask(&self, work: Work) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { work, reply }).map_err(|_| "the nft thread ended".to_string())?;
        answer.await.map_err(|_| "the nft thread ended".to_string())?
    }
}

fn add_elements(socket: &mut Option<netlink::Socket>, elements: netlink::Elements) -> Result<String, String> {
    if socket.is_none() {
        *socket = Some(netlink::Socket::open().map_err(|e| format!("opening a netfilter netlink socket: {e}"))?);
    }
    let s = socket.as_ref().expect("opened above");
    s.send(elements).map(|()| String::new()).map_err(|e| format!("{e:#}"))
}

fn run(api: &Api, ctx: Ctx, script: &CStr) -> Result<String, String> {
    // SAFETY: ctx belongs to this thread; the buffers are owned by the
    // context and read before the next call.
    unsafe {
        let rc = (api.run_cmd)(ctx, script.as_ptr());
        let out = (api.output_buffer)(ctx);
        let out = if out.is_null() { String::new() } else { CStr::from_ptr(out).to_string_lossy().into_owned() };
        let err = (api.error_buffer)(ctx);
        let err = if err.is_null() { String::new() } else { CStr::from_ptr(err).to_string_lossy().into_owned() };
        if rc == 0 {
            Ok(out)
        } else {
            // nft repeats the offending line; a few lines are enough.
            Err(err.lines().take(6).collect::<Vec<_>>().join("\n"))
        }
    }
}
