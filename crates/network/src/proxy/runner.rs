//! Where batches go: a libnftables context in this process when the
//! library loads (`nftlib`), else one `nft -f -` run per batch. Either runs
//! in the host's network namespace or, for tests and the benchmark, in
//! another one. With the library, a full sync's bulk elements go over
//! netlink from the same thread (`netlink`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;

use super::{netlink, nftlib};

/// Runs nft batches, in the host's network namespace or in `netns`.
/// Clones share one libnftables context.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    netns: Option<PathBuf>,
    /// Never load libnftables (measurements, and tests of the fallback).
    spawn_only: bool,
    /// Send every element as nft text (measurements).
    no_netlink: bool,
    /// Started on first use; None when the library cannot be used.
    lib: Arc<OnceLock<Option<nftlib::Context>>>,
}

impl Runner {
    pub fn host() -> Runner {
        Runner::default()
    }

    /// `path` is a namespace file such as /run/netns/NAME.
    pub fn in_netns(path: impl Into<PathBuf>) -> Runner {
        Runner { netns: Some(path.into()), ..Runner::default() }
    }

    /// The same namespace, but every batch through a new `nft` process.
    pub fn spawning(self) -> Runner {
        Runner { spawn_only: true, lib: Arc::default(), ..self }
    }

    /// The same, but full syncs send their elements as nft text too.
    pub fn without_netlink(self) -> Runner {
        Runner { no_netlink: true, ..self }
    }

    /// "libnftables" or "nft": what batches go through (starts the context if due).
    pub fn backend(&self) -> &'static str {
        if self.context().is_some() { "libnftables" } else { "nft" }
    }

    /// Whether `add_elements` can be used.
    pub fn has_netlink(&self) -> bool {
        !self.no_netlink && self.context().is_some()
    }

    /// Adds elements in one transaction over netlink (see `has_netlink`).
    pub(crate) async fn add_elements(&self, elements: netlink::Elements) -> anyhow::Result<()> {
        match self.context() {
            Some(lib) if !self.no_netlink => lib.add_elements(elements).await,
            _ => bail!("no netlink path to the kernel here"),
        }
    }

    fn context(&self) -> Option<&nftlib::Context> {
        if self.spawn_only {
            return None;
        }
        self.lib
            .get_or_init(|| match nftlib::Context::start(self.netns.as_deref()) {
                Ok(c) => {
                    tracing::info!(netns = ?self.netns, "service proxy: programming nftables through libnftables, in process");
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!(netns = ?self.netns, "service proxy: libnftables unusable ({e:#}); running nft for every batch");
                    None
                }
            })
            .as_ref()
    }

    pub async fn run(&self, script: &str) -> anyhow::Result<()> {
        self.output(script).await.map(drop)
    }

    /// Runs a batch and returns what nft printed (for `list` commands).
    pub async fn output(&self, script: &str) -> anyhow::Result<String> {
        match self.context() {
            Some(lib) => lib.run(script).await.map_err(shorten),
            None => self.spawn(script).await.map_err(shorten),
        }
    }

    async fn spawn(&self, script: &str) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new(nft_binary());
        cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        if let Some(path) = &self.netns {
            let ns = File::open(path).with_context(|| format!("opening netns {}", path.display()))?;
            // SAFETY: only setns(2), which is async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().context("running nft (is the nftables package installed?)")?;
        let mut stdin = child.stdin.take().context("nft stdin")?;
        stdin.write_all(script.as_bytes()).await.context("writing to nft")?;
        drop(stdin);
        let out = child.wait_with_output().await.context("waiting for nft")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let short: Vec<&str> = err.lines().take(6).collect();
            bail!("nft failed: {}", short.join("\n"));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Bridged pod-to-service traffic needs br_netfilter's call into the IP
    /// hooks (so replies from a pod on the same bridge are un-NATed). Turns
    /// it on when it is off; loads nothing.
    pub async fn ensure_bridge_nf_call(&self) -> anyhow::Result<()> {
        const KEY: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
        let check = || -> anyhow::Result<()> {
            match std::fs::read_to_string(KEY) {
                Err(_) => {
                    tracing::warn!("{KEY} is missing (br_netfilter not loaded): pods on one bridge may not reach each other through Services");
                }
                Ok(v) if v.trim() == "0" => {
                    tracing::info!("setting {KEY} to 1 so bridged pod traffic passes the service rules");
                    std::fs::write(KEY, "1").with_context(|| format!("writing {KEY}"))?;
                }
                Ok(_) => {}
            }
            Ok(())
        };
        match &self.netns {
            None => check(),
            Some(path) => crate::in_netns(path, check)?,
        }
    }
}

/// nft quotes the offending line, which can hold 2,000 elements: cut long lines.
fn shorten(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    let lines: Vec<String> = text
        .lines()
        .map(|l| if l.chars().count() > 400 { format!("{}...", l.chars().take(400).collect::<String>()) } else { l.to_string() })
        .collect();
    anyhow::anyhow!(lines.join("\n"))
}

pub(crate) fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("nft")
}
