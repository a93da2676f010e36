//! Image references normalised the way docker does: `busybox` is
//! `docker.io/library/busybox:latest`, a first component with a `.` or `:`
//! (or `localhost`) is a registry host, and `@sha256:` pins a manifest.

use anyhow::{bail, ensure};

pub const DOCKER_HUB: &str = "docker.io";
/// Where `docker.io` repositories are really served from.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host with optional port (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` manifest digest.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(input: &str) -> anyhow::Result<Reference> {
        let s = input.trim();
        ensure!(!s.is_empty(), "empty image reference");
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(|e| anyhow::anyhow!("image reference {input:?}: {e}"))?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_string())),
            None => (name, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|e| anyhow::anyhow!("image reference {input:?}: {e}"))?;
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !t.starts_with(['.', '-']);
            ensure!(ok, "image reference {input:?}: invalid tag {t:?}");
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The canonical name an image is stored under: `repo:tag` when tagged,
    /// else `repo@digest`.
    pub fn name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{t}", self.repo()),
            (None, Some(d)) => format!("{}@{d}", self.repo()),
            (None, None) => self.repo(),
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// Host to talk to for this registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, "{}:{t}@{d}", self.repo()),
            _ => f.write_str(&self.name()),
        }
    }
}

/// Checks `sha256:<64 lowercase hex>` (the only algorithm registries use).
pub fn validate_digest(d: &str) -> anyhow::Result<()> {
    let Some(hex) = d.strip_prefix("sha256:") else { bail!("unsupported digest {d:?}: want sha256:<hex>") };
    ensure!(is_sha256_hex(hex), "invalid digest {d:?}: want 64 lowercase hex digits after sha256:");
    Ok(())
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_repository(repo: &str) -> anyhow::Result<()> {
    ensure!(!repo.is_empty(), "empty repository name");
    for part in repo.split('/') {
        let ok = !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && part.as_bytes()[0].is_ascii_alphanumeric()
            && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric();
        ensure!(ok, "invalid repository name {repo:?}: components must be lowercase letters, digits and . _ - separators");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(Reference::parse("busybox").unwrap().name(), "docker.io/library/busybox:latest");
        assert_eq!(Reference::parse("busybox:1.36").unwrap().name(), "docker.io/library/busybox:1.36");
        assert_eq!(Reference::parse("bitnami/redis").unwrap().name(), "docker.io/bitnami/redis:latest");
        assert_eq!(Reference::parse("index.docker.io/library/nginx").unwrap().name(), "docker.io/library/nginx:latest");
        assert_eq!(Reference::parse("busybox").unwrap().api_host(), "registry-1.docker.io");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("localhost:5000", "x", Some("latest")));
        let r = Reference::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/team/app:v1");
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(Reference::parse("localhost/app").unwrap().registry, "localhost");
        assert_eq!(Reference::parse("quay.io/coreos/etcd:v3").unwrap().repo(), "quay.io/coreos/etcd");
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.name(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse(&format!("localhost:5000/app:v2@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("localhost:5000/app:v2@{D}"));
    }

    #[test]
    fn names_in_real_manifests_normalise_as_docker() {
        for (written, full) in [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.15.4", "docker.io/library/nginx:1.15.4"),
            ("busybox:stable", "docker.io/library/busybox:stable"),
            ("docker.io/library/alpine", "docker.io/library/alpine:latest"),
            ("docker.io/alpine:3.20", "docker.io/library/alpine:3.20"),
            ("user/img", "docker.io/user/img:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ] {
            assert_eq!(Reference::parse(written).unwrap().to_string(), full, "{written}");
        }
        let r = Reference::parse(&format!("nginx:1.27@{D}")).unwrap();
        assert_eq!((r.name(), r.repo()), ("docker.io/library/nginx:1.27".to_string(), "docker.io/library/nginx".to_string()));
    }

    #[test]
    fn invalid_references() {
        for bad in ["", "Busybox", "busybox@sha256:abc", "busybox@md5:0123", "a//b", "busybox:", "x/-y", "busybox:-tag"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
