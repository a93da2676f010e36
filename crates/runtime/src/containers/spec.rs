//! The OCI runtime spec (`config.json`) for one container, with the
//! Kubernetes semantics for command/args/env/user and containerd's defaults
//! for capabilities, mounts and masked/readonly `/proc` paths.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::meta::SandboxMeta;
use super::user::ResolvedUser;
use crate::cri::ContainerConfig;
use crate::images::ResolvedImage;

/// The default capability set of docker and containerd.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability of Linux up to 5.9 (what runc 1.1 knows), for privileged containers.
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct SpecInput<'a> {
    pub config: &'a ContainerConfig,
    pub image: &'a ResolvedImage,
    pub sandbox: &'a SandboxMeta,
    pub sandbox_dir: &'a Path,
    pub user: &'a ResolvedUser,
    pub cgroups_path: &'a str,
    /// PID namespace to join (shareProcessNamespace), if any.
    pub pid_ns: Option<PathBuf>,
}

/// Kubernetes' rule: `command` replaces ENTRYPOINT and drops CMD; `args` alone replace CMD.
pub fn process_args(config: &ContainerConfig, image: &ResolvedImage) -> Result<Vec<String>> {
    let args: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else if !config.args.is_empty() {
        image
            .entrypoint
            .iter()
            .chain(&config.args)
            .cloned()
            .collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    };
    if args.is_empty() {
        bail!("no command specified: the image has no ENTRYPOINT or CMD and the container sets no command");
    }
    Ok(args)
}

/// HOSTNAME, then image ENV, then the container's env; a later value of a
/// name replaces the earlier one in place. PATH is defaulted like containerd.
pub fn process_env(input: &SpecInput) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set("PATH", &DEFAULT_PATH[5..]);
    set("HOSTNAME", &input.sandbox.hostname);
    for entry in &input.image.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(k, v);
    }
    if input.config.tty {
        set("TERM", "xterm");
    }
    if let Some(home) = &input.user.home {
        if !input.image.env.iter().any(|e| e.starts_with("HOME=")) {
            set("HOME", home);
        }
    }
    for (k, v) in &input.config.envs {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn cap_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// containerd's order: default caps, emptied by drop `ALL`, then `add`
/// (`ALL` = every cap), then the named drops. So `drop: [ALL], add: [X]` is just X.
pub fn capabilities(add: &[String], drop: &[String], privileged: bool) -> Vec<String> {
    let all = || ALL_CAPS.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    if privileged {
        return all();
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if drop.iter().any(is_all) {
        Vec::new()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if add.iter().any(is_all) {
        caps = all();
    }
    for c in add.iter().filter(|c| !is_all(c)).map(|c| cap_name(c)) {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    let drop: Vec<String> = drop
        .iter()
        .filter(|c| !is_all(c))
        .map(|c| cap_name(c))
        .collect();
    caps.retain(|c| !drop.contains(c));
    caps
}

fn bind(destination: &str, source: &Path, readonly: bool, propagation: &str) -> Value {
    let mut options = vec!["rbind".to_string(), propagation.to_string()];
    options.push(if readonly { "ro" } else { "rw" }.to_string());
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

fn mounts(input: &SpecInput) -> Vec<Value> {
    let c = input.config;
    let sb = input.sandbox_dir;
    let mut out = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    let user_paths: Vec<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    let shm = if input.sandbox.host_ipc {
        PathBuf::from("/dev/shm")
    } else {
        sb.join("shm")
    };
    let pod_files = [
        ("/dev/shm", shm),
        ("/etc/hosts", sb.join("hosts")),
        ("/etc/resolv.conf", sb.join("resolv.conf")),
        ("/etc/hostname", sb.join("hostname")),
    ];
    for (dest, source) in pod_files {
        if !user_paths.contains(&dest) {
            let ro = c.security.readonly_rootfs && dest != "/dev/shm";
            out.push(bind(dest, &source, ro, "rprivate"));
        }
    }
    for m in &c.mounts {
        let propagation = match m.propagation.as_str() {
            "rshared" | "Bidirectional" => "rshared",
            "rslave" | "HostToContainer" => "rslave",
            _ => "rprivate",
        };
        out.push(bind(
            &m.container_path,
            &m.host_path,
            m.readonly,
            propagation,
        ));
    }
    out
}

fn namespaces(input: &SpecInput) -> Vec<Value> {
    let sb = input.sandbox;
    let mut ns = vec![json!({"type": "mount"})];
    match (&input.pid_ns, sb.host_pid) {
        (_, true) => {}
        (Some(path), false) => ns.push(json!({"type": "pid", "path": path})),
        (None, false) => ns.push(json!({"type": "pid"})),
    }
    if let Some(netns) = &sb.netns_path {
        ns.push(json!({"type": "network", "path": netns}));
        ns.push(json!({"type": "uts", "path": input.sandbox_dir.join("ns/uts")}));
    }
    if !sb.host_ipc {
        ns.push(json!({"type": "ipc", "path": input.sandbox_dir.join("ns/ipc")}));
    }
    ns
}

fn resources(input: &SpecInput) -> Value {
    let r = &input.config.resources;
    let devices = if input.config.security.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        json!([{"allow": false, "access": "rwm"}])
    };
    let mut res = json!({"devices": devices});
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
    }
    if let Some(period) = r.cpu_period {
        cpu.insert("period".into(), json!(period));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        res["memory"] = json!({"limit": limit});
    }
    if let Some(pids) = r.pids_limit {
        res["pids"] = json!({"limit": pids});
    }
    res
}

/// Host device nodes directly under /dev, for privileged containers.
fn host_devices() -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(md) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = if md.file_type().is_char_device() {
            "c"
        } else if md.file_type().is_block_device() {
            "b"
        } else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["console", "ptmx", "tty"].contains(&name.as_str()) {
            continue;
        }
        let rdev = md.rdev();
        out.push(json!({
            "path": entry.path(), "type": kind,
            "major": libc::major(rdev), "minor": libc::minor(rdev),
            "fileMode": md.mode() & 0o777, "uid": md.uid(), "gid": md.gid(),
        }));
    }
    out
}

pub fn build(input: &SpecInput) -> Result<Value> {
    let c = input.config;
    let sec = &c.security;
    let caps = capabilities(
        &sec.capabilities_add,
        &sec.capabilities_drop,
        sec.privileged,
    );
    let cwd = [c.working_dir.as_str(), input.image.working_dir.as_str()]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string();
    let user = input.user;
    let mut linux = json!({
        "namespaces": namespaces(input),
        "cgroupsPath": input.cgroups_path,
        "resources": resources(input),
    });
    if sec.privileged {
        linux["devices"] = Value::Array(host_devices());
    } else {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    let propagations: Vec<&str> = c.mounts.iter().map(|m| m.propagation.as_str()).collect();
    if propagations
        .iter()
        .any(|p| *p == "rshared" || *p == "Bidirectional")
    {
        linux["rootfsPropagation"] = json!("rshared");
    } else if propagations
        .iter()
        .any(|p| *p == "rslave" || *p == "HostToContainer")
    {
        linux["rootfsPropagation"] = json!("rslave");
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": c.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": process_args(c, input.image)?,
            "env": process_env(input),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sec.no_new_privs && !sec.privileged,
        },
        "root": {"path": "rootfs", "readonly": sec.readonly_rootfs},
        "hostname": if input.sandbox.host_network { Value::Null } else { json!(input.sandbox.hostname) },
        "mounts": mounts(input),
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_args_follow_kubernetes() {
        let image = ResolvedImage {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["c1".into()],
            ..Default::default()
        };
        let mut c = ContainerConfig::default();
        assert_eq!(process_args(&c, &image).unwrap(), ["/ep", "c1"]);
        c.args = vec!["a".into()];
        assert_eq!(process_args(&c, &image).unwrap(), ["/ep", "a"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(process_args(&c, &image).unwrap(), ["/cmd", "a"]);
        c.args.clear();
        assert_eq!(process_args(&c, &image).unwrap(), ["/cmd"]);
        assert!(process_args(&ContainerConfig::default(), &ResolvedImage::default()).is_err());
    }

    #[test]
    fn capability_add_and_drop() {
        let caps = capabilities(
            &["NET_ADMIN".into()],
            &["chown".into(), "CAP_KILL".into()],
            false,
        );
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(
            !caps.contains(&"CAP_CHOWN".to_string()) && !caps.contains(&"CAP_KILL".to_string())
        );
        assert_eq!(caps.len(), 13);
        assert!(capabilities(&[], &["ALL".into()], false).is_empty());
        assert_eq!(
            capabilities(&["NET_BIND_SERVICE".into()], &["ALL".into()], false),
            ["CAP_NET_BIND_SERVICE"]
        );
        assert_eq!(capabilities(&[], &[], true).len(), ALL_CAPS.len());
    }
}
