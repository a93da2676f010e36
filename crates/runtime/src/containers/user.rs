//! Which uid/gid/groups a container process runs as: the pod's
//! securityContext first, else the image's USER, with names looked up in the
//! container's own `/etc/passwd` and `/etc/group` (as containerd does).

use std::path::Path;

use anyhow::{bail, Result};

use crate::cri::SecurityConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, for `HOME`.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) of each group in the rootfs.
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

pub fn resolve(rootfs: &Path, image_user: &str, security: &SecurityConfig) -> Result<ResolvedUser> {
    let users = passwd(rootfs);
    let groups = groups(rootfs);
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let entry = match security.run_as_user {
        Some(uid) => users.iter().find(|e| i64::from(e.uid) == uid),
        None if user_part.is_empty() => users.iter().find(|e| e.uid == 0),
        None => match user_part.parse::<u32>() {
            Ok(uid) => users.iter().find(|e| e.uid == uid),
            Err(_) => match users.iter().find(|e| e.name == user_part) {
                Some(e) => Some(e),
                None => {
                    bail!("unable to find user {user_part}: no matching entries in passwd file")
                }
            },
        },
    };
    let uid = match security.run_as_user {
        Some(uid) => {
            u32::try_from(uid).map_err(|_| anyhow::anyhow!("runAsUser {uid} is out of range"))?
        }
        None => match user_part.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) => entry.map(|e| e.uid).unwrap_or(0),
        },
    };
    let gid = match (security.run_as_group, group_part) {
        (Some(gid), _) => {
            u32::try_from(gid).map_err(|_| anyhow::anyhow!("runAsGroup {gid} is out of range"))?
        }
        (None, Some(g)) if security.run_as_user.is_none() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match groups.iter().find(|(name, _, _)| name == g) {
                Some((_, gid, _)) => *gid,
                None => bail!("unable to find group {g}: no matching entries in group file"),
            },
        },
        _ => entry.map(|e| e.gid).unwrap_or(0),
    };
    if security.run_as_non_root && uid == 0 {
        bail!("container has runAsNonRoot and image will run as root");
    }
    let mut additional_gids: Vec<u32> = Vec::new();
    if let Some(e) = entry {
        for (_, g, members) in &groups {
            if members.contains(&e.name) && *g != gid && !additional_gids.contains(g) {
                additional_gids.push(*g);
            }
        }
    }
    for g in &security.supplemental_groups {
        if let Ok(g) = u32::try_from(*g) {
            if !additional_gids.contains(&g) {
                additional_gids.push(g);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\nwheel:x:10:nobody\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn image_user_by_name_and_number() {
        let r = rootfs();
        let sec = SecurityConfig::default();
        let u = resolve(r.path(), "nobody", &sec).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (65534, 65534, vec![10])
        );
        let u = resolve(r.path(), "1000:nogroup", &sec).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 65534));
        let u = resolve(r.path(), "", &sec).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_deref()), (0, 0, Some("/root")));
        assert!(resolve(r.path(), "missing", &sec).is_err());
    }

    #[test]
    fn security_context_wins() {
        let r = rootfs();
        let sec = SecurityConfig {
            run_as_user: Some(65534),
            supplemental_groups: vec![5],
            ..Default::default()
        };
        let u = resolve(r.path(), "root", &sec).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (65534, 65534, vec![10, 5])
        );
        let sec = SecurityConfig {
            run_as_non_root: true,
            ..Default::default()
        };
        assert!(resolve(r.path(), "", &sec)
            .unwrap_err()
            .to_string()
            .contains("runAsNonRoot"));
    }
}
