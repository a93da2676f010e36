//! cgroup paths on either layout: v1 (one hierarchy per controller, plus the
//! hybrid `unified` v2 mount) or v2 (`/sys/fs/cgroup/cgroup.controllers`).
//! runc creates and configures container cgroups; this module makes pod
//! cgroups, removes what is left and reads the OOM kill counter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub fn is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Every mounted cgroup hierarchy (v1 controllers, named and v2 mounts), deduplicated.
pub fn hierarchies() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        // Only hierarchies mounted at their root, so paths below are cgroup paths.
        let mut fields = left.split(' ');
        let root = fields.nth(3).unwrap_or("");
        let point = PathBuf::from(fields.next().unwrap_or(""));
        if root == "/" && !out.contains(&point) {
            out.push(point);
        }
    }
    out
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Creates `path` in every hierarchy (runc fills in controller settings for containers).
pub fn create(path: &str) -> Result<()> {
    for h in hierarchies() {
        let dir = h.join(relative(path));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating cgroup {}", dir.display()))?;
    }
    Ok(())
}

/// Limits the processes in `path` and below (pids.max). On cgroup v2 the
/// pids controller is enabled on the way down from the root first.
pub fn set_pids_max(path: &str, max: i64) -> Result<()> {
    let rel = relative(path);
    for h in hierarchies() {
        let file = h.join(rel).join("pids.max");
        if !file.exists() && h.join("cgroup.controllers").exists() {
            let mut dir = h.clone();
            for part in Path::new(rel).parent().into_iter().flat_map(|p| p.components()) {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+pids");
                dir = dir.join(part);
            }
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+pids");
        }
        if file.exists() {
            return std::fs::write(&file, max.to_string()).with_context(|| format!("writing {}", file.display()));
        }
    }
    anyhow::bail!("no pids controller for cgroup {path}")
}

/// Writes a container's cpu and memory limits into its cgroup, for either
/// layout (the files runc writes at create, with the same conversions).
pub fn set_limits(path: &str, r: &crate::cri::LinuxResources) -> Result<()> {
    let period = r.cpu_period.unwrap_or(100_000);
    let v2_quota = r.cpu_quota.map_or_else(|| format!("max {period}"), |q| format!("{q} {period}"));
    // runc's shares -> weight conversion (1..10000 from 2..262144).
    let weight = r.cpu_shares.map(|s| 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142);
    let files: Vec<(&str, String)> = vec![
        ("cpu.max", v2_quota),
        ("cpu.weight", weight.map(|w| w.to_string()).unwrap_or_default()),
        ("memory.max", r.memory_limit.map_or_else(|| "max".into(), |m| m.to_string())),
        ("cpu.cfs_period_us", period.to_string()),
        ("cpu.cfs_quota_us", r.cpu_quota.unwrap_or(-1).to_string()),
        ("cpu.shares", r.cpu_shares.map(|s| s.to_string()).unwrap_or_default()),
        ("memory.limit_in_bytes", r.memory_limit.unwrap_or(-1).to_string()),
    ];
    let rel = relative(path);
    let mut written = false;
    for h in hierarchies() {
        let dir = h.join(rel);
        for (file, value) in files.iter().filter(|(_, v)| !v.is_empty()) {
            let f = dir.join(file);
            if f.exists() {
                std::fs::write(&f, value).with_context(|| format!("writing {value} to {}", f.display()))?;
                written = true;
            }
        }
    }
    anyhow::ensure!(written, "no cpu or memory controller for cgroup {path}");
    Ok(())
}

/// Removes `path` (and any cgroups below it) from every hierarchy. A cgroup
/// still holding processes cannot be removed; we retry briefly, since the
/// kernel frees a cgroup a moment after its last task exits.
pub fn remove(path: &str) -> Result<()> {
    let rel = relative(path);
    if rel.is_empty() {
        return Ok(());
    }
    let mut last_err = None;
    for h in hierarchies() {
        let dir = h.join(rel);
        for attempt in 0..50 {
            match remove_tree(&dir) {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    last_err = Some(e);
                    if attempt < 49 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        if let Some(e) = last_err.take() {
            return Err(e).with_context(|| format!("removing cgroup {}", dir.display()));
        }
    }
    Ok(())
}

/// rmdir of a cgroup directory, children first (cgroup dirs only contain
/// control files, which rmdir ignores).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// How often the kernel's OOM killer fired in the cgroup (`oom_kill` counter).
pub fn oom_kills(path: &str) -> u64 {
    let rel = relative(path);
    let file = if is_v2() {
        PathBuf::from("/sys/fs/cgroup")
            .join(rel)
            .join("memory.events")
    } else {
        match memory_hierarchy() {
            Some(h) => h.join(rel).join("memory.oom_control"),
            None => return 0,
        }
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|v| v.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// The v1 hierarchy with the memory controller.
fn memory_hierarchy() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        if r.next()? != "cgroup" {
            return None;
        }
        let opts = r.nth(1)?;
        opts.split(',')
            .any(|o| o == "memory")
            .then(|| PathBuf::from(left.split(' ').nth(4).unwrap_or("")))
    })
}

/// CPU time used (nanoseconds, cumulative) and the memory working set
/// (bytes: usage minus inactive page cache, what the kubelet and
/// metrics-server report and the OOM killer weighs) of cgroup `path`.
/// None when the cgroup is gone or unreadable.
pub fn usage(path: &str) -> Option<(u64, u64)> {
    let rel = relative(path);
    if is_v2() {
        let dir = PathBuf::from("/sys/fs/cgroup").join(rel);
        let cpu_usec = stat_field(&std::fs::read_to_string(dir.join("cpu.stat")).ok()?, "usage_usec")?;
        let current: u64 = std::fs::read_to_string(dir.join("memory.current")).ok()?.trim().parse().ok()?;
        let inactive = stat_field(&std::fs::read_to_string(dir.join("memory.stat")).ok()?, "inactive_file").unwrap_or(0);
        return Some((cpu_usec * 1000, current.saturating_sub(inactive)));
    }
    let cpu_dir = hierarchies().into_iter().find(|h| h.join("cpuacct.usage").exists())?;
    let cpu_ns: u64 = std::fs::read_to_string(cpu_dir.join(rel).join("cpuacct.usage")).ok()?.trim().parse().ok()?;
    let mem = memory_hierarchy()?.join(rel);
    let usage: u64 = std::fs::read_to_string(mem.join("memory.usage_in_bytes")).ok()?.trim().parse().ok()?;
    let inactive = stat_field(&std::fs::read_to_string(mem.join("memory.stat")).ok()?, "total_inactive_file").unwrap_or(0);
    Some((cpu_ns, usage.saturating_sub(inactive)))
}

/// `name value` lines (cpu.stat, memory.stat).
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn reads_stat_fields_by_exact_name() {
        let text = "total_inactive_file 40\ninactive_file 7\nusage_usec 1500\n";
        assert_eq!(stat_field(text, "inactive_file"), Some(7));
        assert_eq!(stat_field(text, "total_inactive_file"), Some(40));
        assert_eq!(stat_field(text, "usage_usec"), Some(1500));
        assert_eq!(stat_field(text, "usage"), None);
    }

    #[test]
    fn this_process_cgroup_has_usage() {
        // The root cgroup always exists; its counters are readable on either layout
        // (v2's root has no memory.current, so only v1 is checked there).
        if !is_v2() {
            let (cpu, _) = usage("/").expect("root cgroup usage");
            assert!(cpu > 0);
        }
    }
}
