//! Calls to the `runc` command line, all with `--root <runtime>/runc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Clone, Debug)]
pub struct Runc {
    root: PathBuf,
}

/// The part of `runc state` output we use.
#[derive(Clone, Debug, Deserialize)]
pub struct RuncState {
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    pub pid: i64,
}

impl Runc {
    pub fn new(root: PathBuf) -> Runc {
        Runc { root }
    }

    pub fn check(&self) -> Result<()> {
        let out = Command::new("runc")
            .arg("--version")
            .output()
            .context("running `runc --version`")?;
        if !out.status.success() {
            bail!(
                "`runc --version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A `runc --root <root>` command to add a subcommand to.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// Runs `runc <args>` to completion; an error carries runc's message.
    fn run(&self, args: &[&str]) -> Result<()> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running runc {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "runc {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The container's runc state, None when runc does not know it.
    pub fn state(&self, id: &str) -> Result<Option<RuncState>> {
        if !self.root.join(id).join("state.json").exists() {
            return Ok(None);
        }
        let out = self
            .command()
            .args(["state", id])
            .stdin(Stdio::null())
            .output()
            .context("running runc state")?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr);
            if msg.contains("does not exist") || msg.contains("not exist") {
                return Ok(None);
            }
            bail!("runc state {id}: {}", msg.trim());
        }
        Ok(Some(
            serde_json::from_slice(&out.stdout).context("parsing runc state output")?,
        ))
    }

    pub fn start(&self, id: &str) -> Result<()> {
        self.run(&["start", id])
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the init process, or with
    /// `all` to every process of the container.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<()> {
        if all {
            self.run(&["kill", "--all", id, signal])
        } else {
            self.run(&["kill", id, signal])
        }
    }

    /// `runc delete --force`: kills what is left and removes runc's state and
    /// the container cgroup. A container runc does not know is fine.
    pub fn delete(&self, id: &str) -> Result<()> {
        if !self.root.join(id).exists() {
            return Ok(());
        }
        match self.run(&["delete", "--force", id]) {
            Err(e) if e.to_string().contains("does not exist") => Ok(()),
            other => other,
        }
    }

    /// The last error runc wrote to a `--log-format json` log file.
    pub fn last_logged_error(log: &Path) -> Option<String> {
        let text = std::fs::read_to_string(log).ok()?;
        text.lines().rev().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_string())
        })
    }
}
