//! Test support shared by every crate's tests: a busybox image built from
//! the host's static busybox, written as a layer, a `docker save` tar or an
//! OCI layout tar; a real upload to a registry; and a throwaway Debian
//! `docker-registry` on a free loopback port.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::oci::{self, sha256_digest};

/// Layer entries get this mtime so the same layer always has the same digest.
const FIXED_MTIME: u64 = 1_700_000_000;
const BUSYBOX: &str = "/bin/busybox";

/// A layer tar (uncompressed) holding `/bin/busybox` with a symlink per
/// applet, `/etc/passwd`, `/etc/group`, `/tmp` and `/root`. Deterministic.
pub fn busybox_layer_tar() -> Vec<u8> {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    LAYER.get_or_init(|| build_busybox_layer().expect("building the busybox test layer (is busybox-static installed?)")).clone()
}

fn build_busybox_layer() -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    add_busybox(&mut b)?;
    Ok(b.into_inner()?)
}

fn add_busybox(b: &mut tar::Builder<Vec<u8>>) -> anyhow::Result<()> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?;
    let list = std::process::Command::new(BUSYBOX).arg("--list").output().context("running busybox --list")?;
    for (dir, mode) in [("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)] {
        append(b, tar::EntryType::Directory, dir, mode, &[])?;
    }
    append(b, tar::EntryType::Regular, "bin/busybox", 0o755, &busybox)?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    append(b, tar::EntryType::Regular, "etc/passwd", 0o644, passwd.as_bytes())?;
    append(b, tar::EntryType::Regular, "etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n")?;
    Ok(())
}

/// The busybox layer plus the host's dynamically linked network clients
/// (`NET_TOOLS`), every library `ldd` lists for them, the glibc NSS modules
/// for `files` and `dns`, and an nsswitch.conf: the tools then resolve names
/// through the pod's resolv.conf as in any distribution image (busybox's
/// own tools do not). curl speaks HTTP; socat speaks UDP, which no busybox
/// applet serves.
pub fn busybox_net_tools_layer_tar() -> Vec<u8> {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    LAYER.get_or_init(|| build_busybox_net_tools_layer().expect("building the busybox+curl+socat test layer (are busybox-static, curl and socat installed?)")).clone()
}

const NET_TOOLS: [&str; 2] = ["/usr/bin/curl", "/usr/bin/socat"];

fn build_busybox_net_tools_layer() -> anyhow::Result<Vec<u8>> {
    let mut files: Vec<String> = Vec::new();
    for tool in NET_TOOLS {
        let ldd = std::process::Command::new("ldd").arg(tool).output().context("running ldd")?;
        anyhow::ensure!(ldd.status.success(), "ldd {tool} failed (is it installed?): {}", String::from_utf8_lossy(&ldd.stderr));
        // Lines are "name => /path (addr)" or "/path (addr)"; the vdso has no path.
        files.extend(String::from_utf8_lossy(&ldd.stdout).lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(str::to_string)));
        files.push(tool.into());
    }
    let libdir = Path::new(&files.iter().find(|f| f.contains("/libc.so")).cloned().context("ldd lists no libc")?)
        .parent()
        .context("libc's directory")?
        .to_path_buf();
    for nss in ["libnss_dns.so.2", "libnss_files.so.2", "libresolv.so.2"] {
        files.push(libdir.join(nss).display().to_string());
    }
    files.sort();
    files.dedup();
    let mut b = tar::Builder::new(Vec::new());
    add_busybox(&mut b)?;
    // busybox's layer made these already.
    let mut dirs: std::collections::BTreeSet<String> = ["bin", "etc", "root", "tmp"].map(String::from).into();
    for f in &files {
        let rel = f.trim_start_matches('/');
        let mut dir = Path::new(rel).parent();
        let mut chain = Vec::new();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(d.display().to_string());
            dir = d.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                append(&mut b, tar::EntryType::Directory, &d, 0o755, &[])?;
            }
        }
        // Symlinks are followed: the layer holds the file's contents under the path ldd names.
        let data = std::fs::read(f).with_context(|| format!("reading {f}"))?;
        append(&mut b, tar::EntryType::Regular, rel, 0o755, &data)?;
    }
    append(&mut b, tar::EntryType::Regular, "etc/nsswitch.conf", 0o644, b"hosts: files dns\npasswd: files\ngroup: files\n")?;
    Ok(b.into_inner()?)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXED_MTIME);
    h
}

fn append(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
    let mut h = header(kind, mode, data.len() as u64);
    b.append_data(&mut h, path, data)?;
    Ok(())
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("zstd to memory")
}

/// The digest of a layer's uncompressed tar (its diffID), whatever its compression.
pub fn diff_id(layer: &[u8]) -> anyhow::Result<String> {
    let mut plain = Vec::new();
    match super::unpack::Compression::detect(layer) {
        super::unpack::Compression::Gzip => flate2::read::MultiGzDecoder::new(layer).read_to_end(&mut plain)?,
        super::unpack::Compression::Zstd => zstd::stream::read::Decoder::new(layer)?.read_to_end(&mut plain)?,
        super::unpack::Compression::None => return Ok(sha256_digest(layer)),
    };
    Ok(sha256_digest(&plain))
}

/// A config for the busybox image: `sh` as command, a PATH, the layers' diffIDs.
pub fn busybox_config(layers: &[&[u8]]) -> Value {
    let mut config = json!({"config": {"Cmd": ["sh"]}});
    fill_config(&mut config, layers).expect("diffIDs of test layers");
    config
}

/// Adds what a config needs and the caller left out: platform, a PATH, rootfs diffIDs.
fn fill_config(config: &mut Value, layers: &[&[u8]]) -> anyhow::Result<()> {
    let (os, arch) = oci::host_platform();
    let obj = config.as_object_mut().context("image config must be a JSON object")?;
    obj.entry("architecture").or_insert(json!(arch));
    obj.entry("os").or_insert(json!(os));
    let run = obj.entry("config").or_insert(json!({}));
    if run.get("Env").is_none() {
        run["Env"] = json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    }
    if obj.get("rootfs").is_none() {
        let diff_ids = layers.iter().map(|l| diff_id(l)).collect::<anyhow::Result<Vec<_>>>()?;
        obj.insert("rootfs".into(), json!({"type": "layers", "diff_ids": diff_ids}));
    }
    Ok(())
}

fn layer_media_type(layer: &[u8]) -> &'static str {
    match super::unpack::Compression::detect(layer) {
        super::unpack::Compression::Gzip => oci::OCI_LAYER_GZIP,
        super::unpack::Compression::Zstd => oci::OCI_LAYER_ZSTD,
        super::unpack::Compression::None => oci::OCI_LAYER_TAR,
    }
}

/// `docker save` output for one image named `name` with one (uncompressed) layer.
pub fn docker_save_tar(name: &str, layer_tar: &[u8]) -> Vec<u8> {
    let config = serde_json::to_vec(&busybox_config(&[layer_tar])).expect("config JSON");
    let config_file = format!("{}.json", sha256_digest(&config).trim_start_matches("sha256:"));
    let layer_file = format!("{}/layer.tar", sha256_digest(layer_tar).trim_start_matches("sha256:"));
    let manifest = json!([{"Config": config_file, "RepoTags": [name], "Layers": [layer_file]}]);
    let mut b = tar::Builder::new(Vec::new());
    let files = [(config_file.as_str(), config), (layer_file.as_str(), layer_tar.to_vec()), ("manifest.json", manifest.to_string().into_bytes())];
    for (path, data) in files {
        append(&mut b, tar::EntryType::Regular, path, 0o644, &data).expect("tar to memory");
    }
    b.into_inner().expect("tar to memory")
}

/// An OCI image layout tar with one image (gzip layer) annotated
/// `org.opencontainers.image.ref.name: name`.
pub fn oci_layout_tar(name: &str, layer_tar: &[u8]) -> Vec<u8> {
    let layer = gzip(layer_tar);
    let config = serde_json::to_vec(&busybox_config(&[&layer])).expect("config JSON");
    let manifest = manifest_json(&config, &[&layer]);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [{
            "mediaType": oci::OCI_MANIFEST, "digest": sha256_digest(&manifest), "size": manifest.len(),
            "annotations": {oci::REF_NAME_ANNOTATION: name},
        }],
    });
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, tar::EntryType::Regular, "oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#).expect("tar");
    append(&mut b, tar::EntryType::Regular, "index.json", 0o644, index.to_string().as_bytes()).expect("tar");
    for blob in [&config, &manifest, &layer] {
        let path = format!("blobs/sha256/{}", sha256_digest(blob).trim_start_matches("sha256:"));
        append(&mut b, tar::EntryType::Regular, &path, 0o644, blob).expect("tar");
    }
    b.into_inner().expect("tar to memory")
}

/// An OCI image manifest for a config and layers (compression from their magic bytes).
pub fn manifest_json(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": layer_media_type(l), "digest": sha256_digest(l), "size": l.len()}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {"mediaType": oci::OCI_CONFIG, "digest": sha256_digest(config), "size": config.len()},
        "layers": layers,
    }))
    .expect("manifest JSON")
}

/// `Basic <base64(user:password)>`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// PUTs a manifest (or index) document under `reference` (tag or digest); returns its digest.
pub async fn put_manifest(registry: &str, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> anyhow::Result<String> {
    let resp = reqwest::Client::new()
        .put(format!("http://{registry}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("PUT manifest {repo}:{reference}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    Ok(sha256_digest(body))
}

/// Uploads an image with one layer (gzip, zstd or plain: detected) to a
/// plain-HTTP registry (`127.0.0.1:PORT`) with the distribution upload
/// protocol, and tags it. `config` gets platform, PATH and diffIDs filled
/// in when missing. Returns the manifest digest.
pub async fn push_to_registry(registry: &str, repo: &str, tag: &str, layer_tar_gz: &[u8], config: Value) -> anyhow::Result<String> {
    push_layers(registry, repo, tag, &[layer_tar_gz], config).await
}

/// As [`push_to_registry`] with any number of layers, bottom first.
pub async fn push_layers(registry: &str, repo: &str, tag: &str, layers: &[&[u8]], config: Value) -> anyhow::Result<String> {
    push_layers_as(registry, repo, tag, layers, config, None).await
}

/// As [`push_layers`], sending `authorization` (an `Authorization` header
/// value: see [`basic_authorization`], or `Bearer <token>`).
pub async fn push_layers_as(
    registry: &str,
    repo: &str,
    tag: &str,
    layers: &[&[u8]],
    mut config: Value,
    authorization: Option<&str>,
) -> anyhow::Result<String> {
    fill_config(&mut config, layers)?;
    let config = serde_json::to_vec(&config)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(reqwest::header::AUTHORIZATION, value.parse()?);
    }
    // `registry` is `host:port` (plain HTTP) or a URL (`https://127.0.0.1:PORT`, any certificate).
    let http = reqwest::Client::builder().default_headers(headers).danger_accept_invalid_certs(true).build()?;
    let base = if registry.contains("://") { format!("{registry}/v2/{repo}") } else { format!("http://{registry}/v2/{repo}") };
    for blob in layers.iter().copied().chain(std::iter::once(config.as_slice())) {
        upload_blob(&http, &base, blob).await?;
    }
    let manifest = manifest_json(&config, layers);
    let resp = http
        .put(format!("{base}/manifests/{tag}"))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("PUT manifest {repo}:{tag}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    Ok(sha256_digest(&manifest))
}

async fn upload_blob(http: &reqwest::Client, base: &str, blob: &[u8]) -> anyhow::Result<()> {
    let digest = sha256_digest(blob);
    let resp = http.post(format!("{base}/blobs/uploads/")).send().await?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        bail!("POST {base}/blobs/uploads/: {}", resp.status());
    }
    let location = resp.headers().get("Location").and_then(|l| l.to_str().ok()).context("upload without Location")?;
    let location = if location.starts_with('/') { format!("{}{location}", base.split("/v2/").next().unwrap_or(base)) } else { location.to_string() };
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = http
        .put(format!("{location}{sep}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await?;
    if resp.status() != reqwest::StatusCode::CREATED {
        bail!("PUT blob {digest}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Debian's `docker-registry` serving plain HTTP on a free 127.0.0.1 port,
/// storing into a temp dir. Dropping it kills the process (by PID) and
/// removes the dir.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`, usable as the registry part of image names.
    pub addr: String,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> anyhow::Result<TestRegistry> {
        TestRegistry::start_with_htpasswd(None)
    }

    /// With `htpasswd` (file content, bcrypt `user:$2b$...` lines) the
    /// registry demands basic auth.
    pub fn start_with_htpasswd(htpasswd: Option<&str>) -> anyhow::Result<TestRegistry> {
        let Some(lines) = htpasswd else { return TestRegistry::start_with_config(None, "") };
        let dir = tempfile::Builder::new().prefix("skiff-registry-").tempdir()?;
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, lines)?;
        let auth = format!("auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n", path.display());
        TestRegistry::start_with_config(Some(dir), &auth)
    }

    /// With `extra` YAML (e.g. an `auth:` section) appended to the config;
    /// `dir` is the temp dir to use (files the config names may be in it).
    pub fn start_with_config(dir: Option<tempfile::TempDir>, extra: &str) -> anyhow::Result<TestRegistry> {
        let dir = match dir {
            Some(d) => d,
            None => tempfile::Builder::new().prefix("skiff-registry-").tempdir()?,
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        config.push_str(extra);
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting /usr/bin/docker-registry (apt-get install docker-registry)")?;
        let registry = TestRegistry { addr, child, dir };
        registry.wait_ready()?;
        Ok(registry)
    }

    pub fn storage_dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(&self.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                // 401 when auth is on, 400 to plain HTTP when it serves TLS: up all the same.
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") || answer.contains(" 401 ") || answer.contains("HTTPS server") {
                    return Ok(());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        bail!("docker-registry on {} did not become ready: {log}", self.addr)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
