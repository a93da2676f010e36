//! Pod volumes under `<data_dir>/pods/<uid>/volumes/<plugin>/<name>`, in
//! upstream's plugin directory names: emptyDir (tmpfs for medium Memory),
//! hostPath (with type checks), configMap, secret, downwardAPI and projected
//! (files through the atomic writer; secret-bearing ones on tmpfs), and
//! persistentVolumeClaims bound to hostPath/local volumes. Setting up is
//! idempotent, so the worker calls it again to refresh contents in place.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kube::{Api, Client};
use runtime::cri::Mount;

use super::atomic_writer::{self, Payload};
use super::env::{expand, FieldContext};
use super::volume_sources;

/// A volume ready to be mounted into containers.
#[derive(Clone, Debug)]
pub struct VolumeDir {
    pub path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are read-only.
    pub readonly: bool,
}

pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

fn plugin_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(plugin).join(name)
}

/// An error naming the volume, as upstream's FailedMount events read.
pub struct MountError {
    pub volume: String,
    pub message: String,
}

impl MountError {
    pub fn event_message(&self) -> String {
        format!("MountVolume.SetUp failed for volume \"{}\" : {}", self.volume, self.message)
    }
}

/// Sets up (or refreshes) every volume of the pod.
pub async fn setup(client: &Client, pod: &Pod, ctx: &FieldContext, pod_dir: &Path) -> Result<HashMap<String, VolumeDir>, MountError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for v in spec.volumes.iter().flatten() {
        let dir = setup_one(client, pod, ctx, pod_dir, v).await.map_err(|e| MountError { volume: v.name.clone(), message: format!("{e:#}") })?;
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec.as_ref()?.security_context.as_ref()?.fs_group.map(|g| g as u32)
}

async fn setup_one(client: &Client, pod: &Pod, ctx: &FieldContext, pod_dir: &Path, v: &Volume) -> Result<VolumeDir> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let gid = fs_group(pod);
    let files = |plugin: &str, payload: Payload, tmpfs: bool| -> Result<VolumeDir> {
        let dir = plugin_dir(pod_dir, plugin, &v.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if tmpfs {
            mount_tmpfs(&dir, None)?;
        }
        atomic_writer::write(&dir, &payload, gid)?;
        Ok(VolumeDir { path: dir, readonly: true })
    };
    if let Some(e) = &v.empty_dir {
        let dir = plugin_dir(pod_dir, "kubernetes.io~empty-dir", &v.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if e.medium.as_deref() == Some("Memory") {
            let size = e.size_limit.as_ref().and_then(|q| resources::quantity::Quantity::parse(&q.0).ok()).map(|q| q.value());
            mount_tmpfs(&dir, size)?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        if let Some(g) = gid {
            // Files made in it inherit the group (setgid), as upstream's volume ownership does.
            std::os::unix::fs::chown(&dir, None, Some(g))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2777))?;
        }
        return Ok(VolumeDir { path: dir, readonly: false });
    }
    if let Some(h) = &v.host_path {
        check_host_path(&h.path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(VolumeDir { path: PathBuf::from(&h.path), readonly: false });
    }
    if let Some(cm) = &v.config_map {
        let payload = volume_sources::config_map(client, &ns, cm).await?;
        return files("kubernetes.io~configmap", payload, false);
    }
    if let Some(s) = &v.secret {
        let payload = volume_sources::secret(client, &ns, s).await?;
        return files("kubernetes.io~secret", payload, true);
    }
    if let Some(d) = &v.downward_api {
        let payload = volume_sources::downward_api(pod, ctx, d.items.iter().flatten(), d.default_mode)?;
        return files("kubernetes.io~downward-api", payload, true);
    }
    if let Some(p) = &v.projected {
        let payload = volume_sources::projected(client, pod, ctx, &v.name, p).await?;
        return files("kubernetes.io~projected", payload, true);
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let path = claim_path(client, &ns, &claim.claim_name).await?;
        return Ok(VolumeDir { path, readonly: claim.read_only == Some(true) });
    }
    bail!("volume type is not supported by this node")
}

/// The host directory of a claim bound to a hostPath or local PersistentVolume.
async fn claim_path(client: &Client, ns: &str, claim: &str) -> Result<PathBuf> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await?
        .ok_or_else(|| anyhow!("persistentvolumeclaim \"{claim}\" not found"))?;
    let pv_name = pvc.spec.and_then(|s| s.volume_name).filter(|n| !n.is_empty()).ok_or_else(|| anyhow!("PVC {ns}/{claim} has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"))?;
    let pv = Api::<PersistentVolume>::all(client.clone()).get_opt(&pv_name).await?.ok_or_else(|| anyhow!("persistentvolume \"{pv_name}\" not found"))?;
    let local_path = pv.metadata.annotations.as_ref().and_then(|a| a.get(resources::local_path::PROVISIONED_BY)).map(String::as_str) == Some(resources::local_path::PROVISIONER);
    let spec = pv.spec.unwrap_or_default();
    if let (true, Some(h)) = (local_path, &spec.host_path) {
        // Writable by any pod user, as rancher's provisioner makes them.
        if !Path::new(&h.path).exists() {
            std::fs::create_dir_all(&h.path).with_context(|| format!("creating {}", h.path))?;
            std::fs::set_permissions(&h.path, std::fs::Permissions::from_mode(0o777))?;
        }
    }
    let path = if let Some(h) = spec.host_path {
        check_host_path(&h.path, h.type_.as_deref().unwrap_or("DirectoryOrCreate"))?;
        h.path
    } else if let Some(l) = spec.local {
        l.path
    } else {
        bail!("persistentvolume \"{pv_name}\" is neither hostPath nor local, which this node cannot mount");
    };
    Ok(PathBuf::from(path))
}

/// hostPath `type` checks, with upstream's messages.
pub fn check_host_path(path: &str, ty: &str) -> Result<()> {
    let p = Path::new(path);
    let md = std::fs::metadata(p);
    let fail = |what: &str| Err(anyhow!("hostPath type check failed: {path} is not a {what}"));
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" => match md {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("directory"),
            Err(_) => {
                std::fs::create_dir_all(p).with_context(|| format!("creating {path}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
                Ok(())
            }
        },
        "FileOrCreate" => match md {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("file"),
            Err(_) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::OpenOptions::new().create(true).append(true).open(p).with_context(|| format!("creating {path}"))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))?;
                Ok(())
            }
        },
        "Directory" => match md {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("directory"),
            Err(_) => bail!("hostPath type check failed: {path} is not a directory"),
        },
        "File" => match md {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match md {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("socket file"),
        },
        "CharDevice" => match md {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match md {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => bail!("hostPath type {other:?} is not supported"),
    }
}

fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(|m| PathBuf::from(m.replace("\\040", " "))).collect()
}

fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<()> {
    if mount_points().iter().any(|m| m == dir) {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in mount arguments");
    let target = c(dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", dir.display()))?);
    let opts = match size {
        Some(s) if s > 0 => format!("mode=0755,size={s}"),
        _ => "mode=0755".to_string(),
    };
    let (src, fstype, data) = (c("tmpfs"), c("tmpfs"), c(&opts));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, data.as_ptr() as *const libc::c_void) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("mounting tmpfs on {}", dir.display()));
    }
    Ok(())
}

/// Unmounts everything below the pod directory (deepest first) and removes it.
pub fn teardown(pod_dir: &Path) -> Result<()> {
    let mut mounts: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(pod_dir)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        let target = std::ffi::CString::new(m.to_string_lossy().as_bytes()).expect("no NUL in path");
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(mount = %m.display(), "unmounting: {e}");
        }
    }
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", pod_dir.display())),
    }
}

/// The container's mounts: its volumeMounts (with subPath / subPathExpr)
/// and, separately, the termination-message file.
pub fn container_mounts(c: &Container, vols: &HashMap<String, VolumeDir>, env: &[(String, String)]) -> Result<Vec<Mount>> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = vols.get(&m.name).ok_or_else(|| anyhow!("cannot find volume \"{}\" to mount into container \"{}\"", m.name, c.name))?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(e)) if !e.is_empty() => expand(e, &|n| vars.get(n).map(|v| v.to_string())),
            _ => String::new(),
        };
        let host_path = if sub.is_empty() {
            v.path.clone()
        } else {
            if m.sub_path_expr.as_deref().is_some_and(|e| !e.is_empty()) && sub.contains('`') {
                bail!("subpath {sub:?} must not contain backticks");
            }
            let rel = Path::new(&sub);
            if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                bail!("subPath {sub:?} must be a relative path without '..'");
            }
            let p = v.path.join(rel);
            if std::fs::symlink_metadata(&p).is_err() {
                std::fs::create_dir_all(&p).with_context(|| format!("creating subPath {}", p.display()))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))?;
            }
            // Resolve links (configMap keys are links into ..data), refusing escapes.
            let real = std::fs::canonicalize(&p)?;
            let base = std::fs::canonicalize(&v.path)?;
            if !real.starts_with(&base) {
                bail!("subPath {sub:?} resolves outside volume {}", m.name);
            }
            real
        };
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => "rslave",
            Some("Bidirectional") => "rshared",
            _ => "private",
        };
        out.push(Mount { container_path: m.mount_path.clone(), host_path, readonly: m.read_only == Some(true) || v.readonly, propagation: propagation.into() });
    }
    Ok(out)
}

/// The per-attempt termination-message file the container gets at its terminationMessagePath.
pub fn termination_log_path(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir.join("containers").join(container).join(format!("termination-log-{attempt}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_types() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        let f = tmp.path().join("f");
        let ds = d.to_str().unwrap();
        let fs = f.to_str().unwrap();
        assert_eq!(check_host_path(ds, "Directory").unwrap_err().to_string(), format!("hostPath type check failed: {ds} is not a directory"));
        check_host_path(ds, "DirectoryOrCreate").unwrap();
        assert!(d.is_dir());
        check_host_path(ds, "Directory").unwrap();
        assert_eq!(check_host_path(ds, "File").unwrap_err().to_string(), format!("hostPath type check failed: {ds} is not a file"));
        check_host_path(fs, "FileOrCreate").unwrap();
        assert!(f.is_file());
        assert_eq!(check_host_path(fs, "DirectoryOrCreate").unwrap_err().to_string(), format!("hostPath type check failed: {fs} is not a directory"));
        assert_eq!(check_host_path(fs, "Socket").unwrap_err().to_string(), format!("hostPath type check failed: {fs} is not a socket file"));
        assert_eq!(check_host_path(fs, "CharDevice").unwrap_err().to_string(), format!("hostPath type check failed: {fs} is not a character device"));
        assert_eq!(check_host_path(fs, "BlockDevice").unwrap_err().to_string(), format!("hostPath type check failed: {fs} is not a block device"));
        check_host_path("/dev/null", "CharDevice").unwrap();
        check_host_path("/nonexistent-for-sure", "").unwrap();
    }

    #[test]
    fn mounts_with_sub_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("v");
        std::fs::create_dir_all(&vol).unwrap();
        let vols: HashMap<String, VolumeDir> = [("data".to_string(), VolumeDir { path: vol.clone(), readonly: false }), ("cfg".to_string(), VolumeDir { path: tmp.path().to_path_buf(), readonly: true })].into();
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/logs", "subPathExpr": "$(POD)/logs", "mountPropagation": "HostToContainer"},
            {"name": "cfg", "mountPath": "/etc/cfg"},
        ]}))
        .unwrap();
        let m = container_mounts(&c, &vols, &[("POD".into(), "web-1".into())]).unwrap();
        assert_eq!(m[0].host_path, vol);
        assert!(!m[0].readonly);
        assert_eq!(m[1].host_path, std::fs::canonicalize(vol.join("web-1/logs")).unwrap());
        assert_eq!(m[1].propagation, "rslave");
        assert!(m[2].readonly, "configMap-like volumes are read-only");
        let bad: Container = serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../etc"}]})).unwrap();
        assert!(container_mounts(&bad, &vols, &[]).is_err());
        let missing: Container = serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]})).unwrap();
        assert!(container_mounts(&missing, &vols, &[]).is_err());
    }
}
