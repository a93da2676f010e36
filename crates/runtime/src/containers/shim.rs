//! The container shim: the skiff binary re-executed (`skiff container-shim`)
//! to own one container for its whole life, independent of the agent.
//!
//! `run`: fork (the parent exits at once, so the agent never has to reap
//! us), `setsid`, become a child subreaper, `runc create` with pipes (or a
//! pty from `--console-socket` for tty containers) as the container's
//! stdio, report `ok`/`error: ...` on stdout to the agent, then copy the
//! container's output into the CRI log, reap the container's init and write
//! `exit.json` (exit code, finish time, OOM kill) before exiting.
//!
//! `exec-wait`: a subreaper around `runc exec --detach` so the exit code of a
//! detached (tty) exec process can still be collected.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::attach::{AttachServer, Tee};
use super::console::ConsoleSocket;
use super::logs::{self, LogRotation, LogStream, LogWriter};
use super::meta::{self, ExitRecord};
use super::{cgroups, runc::Runc};

/// Entry point of the shim process; `args` are the arguments after the
/// shim command's prefix (e.g. after `skiff container-shim`). Never returns.
pub fn shim_main(args: Vec<String>) -> ! {
    let code = match args.first().map(String::as_str) {
        Some("run") => match ShimArgs::parse(&args[1..]) {
            Ok(a) => run(a),
            Err(e) => {
                eprintln!("container-shim: {e:#}");
                2
            }
        },
        Some("exec-wait") => exec_wait(&args[1..]),
        Some(super::pid_holder::SUBCOMMAND) => super::pid_holder::main(&args[1..]),
        _ => {
            eprintln!("usage: container-shim run --runc-root DIR --id ID ... | exec-wait PIDFILE RUNC-ARGS... | pid-holder NSFILE");
            2
        }
    };
    std::process::exit(code)
}

/// The agent's side: the arguments of `shim run`.
#[derive(Clone, Debug)]
pub struct ShimArgs {
    pub runc_root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub log_path: PathBuf,
    pub cgroups_path: String,
    pub rotation: LogRotation,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

impl ShimArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![
            "run".to_string(),
            "--runc-root".into(),
            self.runc_root.display().to_string(),
            "--id".into(),
            self.id.clone(),
            "--bundle".into(),
            self.bundle.display().to_string(),
            "--log".into(),
            self.log_path.display().to_string(),
            "--cgroup".into(),
            self.cgroups_path.clone(),
            "--log-max-size".into(),
            self.rotation.max_size.to_string(),
            "--log-max-files".into(),
            self.rotation.max_files.to_string(),
        ];
        if self.tty {
            out.push("--tty".into());
        }
        if self.stdin {
            out.push("--stdin".into());
        }
        if self.stdin_once {
            out.push("--stdin-once".into());
        }
        out
    }

    fn parse(args: &[String]) -> Result<ShimArgs> {
        let mut a = ShimArgs {
            runc_root: PathBuf::new(),
            id: String::new(),
            bundle: PathBuf::new(),
            log_path: PathBuf::new(),
            cgroups_path: String::new(),
            rotation: LogRotation::default(),
            tty: false,
            stdin: false,
            stdin_once: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--runc-root" => a.runc_root = value()?.into(),
                "--id" => a.id = value()?,
                "--bundle" => a.bundle = value()?.into(),
                "--log" => a.log_path = value()?.into(),
                "--cgroup" => a.cgroups_path = value()?,
                "--log-max-size" => a.rotation.max_size = value()?.parse()?,
                "--log-max-files" => a.rotation.max_files = value()?.parse()?,
                "--tty" => a.tty = true,
                "--stdin" => a.stdin = true,
                "--stdin-once" => a.stdin_once = true,
                other => bail!("unknown flag {other}"),
            }
        }
        if a.id.is_empty() || a.bundle.as_os_str().is_empty() {
            bail!("--id and --bundle are required");
        }
        Ok(a)
    }
}

fn run(args: ShimArgs) -> i32 {
    // SAFETY: called before any thread is started in this process.
    match unsafe { libc::fork() } {
        -1 => {
            println!("error: fork: {}", std::io::Error::last_os_error());
            return 1;
        }
        0 => {}
        _ => return 0,
    }
    // SAFETY: plain syscalls without pointers.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let _ = std::fs::write(args.bundle.join("shim.pid"), std::process::id().to_string());
    let started = match start_container(&args) {
        Ok(s) => s,
        Err(e) => {
            println!("error: {e:#}");
            return 1;
        }
    };
    println!("ok");
    let _ = std::io::stdout().flush();
    detach_stdout();
    supervise(&args, started)
}

struct Started {
    init_pid: i32,
    /// Output streams to copy into the log (pipes, or the pty master).
    outputs: Vec<(OwnedFd, LogStream)>,
    /// The container's stdin (pipe write end or pty master), handed to attach clients.
    stdin: Option<OwnedFd>,
    /// The pty master of a tty container.
    pty: Option<OwnedFd>,
    writer: Arc<Mutex<LogWriter>>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn start_container(args: &ShimArgs) -> Result<Started> {
    let writer = Arc::new(Mutex::new(LogWriter::open(&args.log_path, args.rotation)?));
    let runc_log = args.bundle.join("runc.log");
    let pid_file = args.bundle.join("init.pid");
    let mut cmd = Runc::new(args.runc_root.clone()).command();
    cmd.arg("--log")
        .arg(&runc_log)
        .args(["--log-format", "json", "create", "--bundle"]);
    cmd.arg(&args.bundle).arg("--pid-file").arg(&pid_file);
    let mut outputs = Vec::new();
    let mut stdin_keep = None;
    let mut pty = None;
    let console = if args.tty {
        Some(ConsoleSocket::new()?)
    } else {
        None
    };
    if let Some(console) = &console {
        cmd.arg("--console-socket").arg(&console.path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        if args.stdin {
            let (in_r, in_w) = pipe()?;
            cmd.stdin(Stdio::from(in_r));
            stdin_keep = Some(in_w);
        } else {
            cmd.stdin(Stdio::null());
        }
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        outputs.push((out_r, LogStream::Stdout));
        outputs.push((err_r, LogStream::Stderr));
    }
    cmd.arg(&args.id);
    let mut child = cmd.spawn().context("starting runc create")?;
    // Our copies of the write ends live in `cmd`; drop them so EOF arrives
    // once the container's processes are gone.
    drop(cmd);
    if let Some(console) = &console {
        let master = console.receive(&mut child, Duration::from_secs(30))?;
        stdin_keep = Some(master.try_clone()?);
        pty = Some(master.try_clone()?);
        outputs.push((master, LogStream::Stdout));
    }
    let status = child.wait().context("waiting for runc create")?;
    if !status.success() {
        let msg = Runc::last_logged_error(&runc_log)
            .unwrap_or_else(|| format!("runc create exited with {status}"));
        bail!("{msg}");
    }
    let pid_text = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?;
    let init_pid = pid_text
        .trim()
        .parse()
        .with_context(|| format!("bad pid in {}", pid_file.display()))?;
    Ok(Started {
        init_pid,
        outputs,
        stdin: stdin_keep,
        pty,
        writer,
    })
}

/// Points stdout at /dev/null so a gone agent cannot hurt us through the pipe.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 with a valid open descriptor.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

fn supervise(args: &ShimArgs, started: Started) -> i32 {
    let (done_tx, done_rx) = mpsc::channel();
    let copiers = started.outputs.len();
    let attach = match AttachServer::start(&args.id, started.stdin, started.pty, args.stdin_once) {
        Ok(server) => Some(server),
        Err(e) => {
            eprintln!(
                "container-shim: attach will not work for {}: {e:#}",
                args.id
            );
            None
        }
    };
    for (fd, stream) in started.outputs {
        let writer = started.writer.clone();
        let done = done_tx.clone();
        let attach = attach.clone();
        std::thread::spawn(move || {
            let input = std::fs::File::from(fd);
            match attach {
                Some(server) => logs::copy_stream(
                    Tee {
                        inner: input,
                        stream,
                        server,
                    },
                    stream,
                    &writer,
                ),
                None => logs::copy_stream(input, stream, &writer),
            }
            let _ = done.send(());
        });
    }
    let exit_code = reap_until(started.init_pid);
    // Let the copiers drain what the container wrote before it exited; a
    // pty or a leaked descriptor may never see EOF, so only wait briefly.
    for _ in 0..copiers {
        if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
            break;
        }
    }
    if let Some(server) = &attach {
        server.close();
    }
    let record = ExitRecord {
        exit_code,
        finished_at: meta::now_nanos(),
        oom_killed: cgroups::oom_kills(&args.cgroups_path) > 0,
    };
    if let Err(e) = meta::write_json(&args.bundle.join("exit.json"), &record) {
        eprintln!("container-shim: recording exit of {}: {e:#}", args.id);
        return 1;
    }
    0
}

/// Reaps children until `pid` exits; returns its exit code (128 + signal when killed).
fn reap_until(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == pid {
            return decode_status(status);
        }
        if got < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Not our child after all: watch /proc until it is gone.
            while Path::new(&format!("/proc/{pid}")).exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
            return 255;
        }
    }
}

fn decode_status(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// `exec-wait PIDFILE runc-args...`: runs runc (which detaches the process),
/// then waits for the process it started and exits with its exit code.
fn exec_wait(args: &[String]) -> i32 {
    let Some((pid_file, runc_args)) = args.split_first() else {
        eprintln!("exec-wait needs a pid file and runc arguments");
        return 2;
    };
    // SAFETY: plain syscall.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let status = match Command::new("runc").args(runc_args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("running runc: {e}");
            return 255;
        }
    };
    if !status.success() {
        return status.code().unwrap_or(255);
    }
    match std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    {
        Some(pid) => reap_until(pid),
        None => {
            eprintln!("runc exec wrote no pid to {pid_file}");
            255
        }
    }
}
