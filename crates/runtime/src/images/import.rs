//! Importing image archives: an OCI image layout tar (`index.json` +
//! `blobs/`) or a `docker save` tar (`manifest.json` with RepoTags).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use async_trait::async_trait;
use serde::Deserialize;

use super::index::{FileLock, ImageRecord};
use super::oci::{self, Descriptor, HashingWriter, Manifest};
use super::reference::{validate_digest, Reference};
use super::store::{remove_path, BlobSource, Store, CONTENT_LOCK};

/// containerd names images in OCI archives with this annotation (full reference).
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Blobs lying in an unpacked archive, by digest.
struct ArchiveBlobs {
    /// The extracted archive, canonical: no blob may come from outside it.
    root: PathBuf,
    files: BTreeMap<String, PathBuf>,
}

#[async_trait]
impl BlobSource for ArchiveBlobs {
    async fn fetch(&mut self, digest: &str, _size: Option<u64>, dest: &Path) -> anyhow::Result<()> {
        let src = self.files.get(digest).with_context(|| format!("blob {digest} is not in the archive"))?;
        // Old docker save archives symlink identical layers; never follow one out of the archive.
        let real = src.canonicalize().with_context(|| format!("resolving {}", src.display()))?;
        anyhow::ensure!(real.starts_with(&self.root), "archive entry {} points outside the archive", src.display());
        let got = file_digest(&real)?;
        anyhow::ensure!(got == digest, "archive file {} has digest {got}, expected {digest}", src.display());
        // Same filesystem (the store's tmp): moving is enough, unless others link to it.
        if real != *src || std::fs::rename(&real, dest).is_err() {
            std::fs::copy(&real, dest).with_context(|| format!("copying {}", src.display()))?;
        }
        Ok(())
    }
}

fn file_digest(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finish().0)
}

impl Store {
    /// Imports every image in the archive at `path` (a tar, or a gzip or
    /// zstd compressed one) and returns the names imported (an image
    /// without a name is returned as its ID).
    pub async fn import(&self, path: &Path) -> anyhow::Result<Vec<String>> {
        self.import_archive(path, false).await
    }

    /// As [`Store::import`]; `pinned` images are left alone by garbage collection.
    pub async fn import_archive(&self, path: &Path, pinned: bool) -> anyhow::Result<Vec<String>> {
        let _content = FileLock::acquire_async(self.locks_dir(), CONTENT_LOCK.into(), false).await?;
        let dir = self.tmp_path("import");
        let (archive, dir_c) = (path.to_path_buf(), dir.clone());
        let extracted = tokio::task::spawn_blocking(move || extract(&archive, &dir_c)).await?;
        let result = match extracted {
            Ok(()) if dir.join("manifest.json").exists() => self.import_docker_save(&dir, pinned).await,
            Ok(()) if dir.join("index.json").exists() => self.import_oci_layout(&dir, pinned).await,
            Ok(()) => Err(anyhow::anyhow!("neither manifest.json (docker save) nor index.json (OCI layout) found")),
            Err(e) => Err(e),
        };
        let _ = remove_path(&dir);
        result.with_context(|| format!("importing {}", path.display()))
    }

    async fn import_docker_save(&self, dir: &Path, pinned: bool) -> anyhow::Result<Vec<String>> {
        let entries: Vec<DockerSaveEntry> = read_json(&dir.join("manifest.json"))?;
        let mut imported = Vec::new();
        for entry in entries {
            let mut blobs = ArchiveBlobs { root: dir.canonicalize()?, files: BTreeMap::new() };
            let config = describe(dir, &entry.config, oci::DOCKER_CONFIG, &mut blobs)?;
            let layers = entry
                .layers
                .iter()
                .map(|l| describe(dir, l, oci::OCI_LAYER_TAR, &mut blobs))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // docker save has no manifest: make the one a registry would have served.
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::OCI_MANIFEST.to_string()),
                config: Some(config),
                layers,
                manifests: Vec::new(),
            };
            let manifest_bytes = serde_json::to_vec(&manifest)?;
            let manifest_digest = oci::sha256_digest(&manifest_bytes);
            let names: Vec<String> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t).map(|r| r.name()))
                .collect::<anyhow::Result<_>>()?;
            imported.extend(self.store_imported(&manifest, &[(manifest_digest, manifest_bytes)], names, &mut blobs, pinned).await?);
        }
        Ok(imported)
    }

    async fn import_oci_layout(&self, dir: &Path, pinned: bool) -> anyhow::Result<Vec<String>> {
        let index: Manifest = read_json(&dir.join("index.json"))?;
        let blob_dir = dir.join("blobs/sha256");
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&blob_dir).with_context(|| format!("listing {}", blob_dir.display()))?.flatten() {
            files.insert(format!("sha256:{}", entry.file_name().to_string_lossy()), entry.path());
        }
        let mut imported = Vec::new();
        for top in &index.manifests {
            let read = |d: &Descriptor| -> anyhow::Result<(Vec<u8>, Manifest)> {
                validate_digest(&d.digest)?;
                let bytes = std::fs::read(blob_dir.join(d.digest.trim_start_matches("sha256:")))
                    .with_context(|| format!("manifest {} is not in the archive", d.digest))?;
                anyhow::ensure!(oci::sha256_digest(&bytes) == d.digest, "manifest {} does not match its digest", d.digest);
                let doc = serde_json::from_slice(&bytes).with_context(|| format!("manifest {} is not valid JSON", d.digest))?;
                Ok((bytes, doc))
            };
            let (top_bytes, top_doc) = read(top)?;
            let mut manifests = vec![(top.digest.clone(), top_bytes)];
            let manifest = if top_doc.is_index(&top.media_type) {
                let (bytes, doc) = read(top_doc.pick_platform()?)?;
                manifests.push((oci::sha256_digest(&bytes), bytes));
                doc
            } else {
                top_doc
            };
            let names = oci_layout_name(top).into_iter().collect();
            let mut blobs = ArchiveBlobs { root: dir.canonicalize()?, files: files.clone() };
            imported.extend(self.store_imported(&manifest, &manifests, names, &mut blobs, pinned).await?);
        }
        Ok(imported)
    }

    /// Stores one image's content and records it under `names`.
    async fn store_imported(
        &self,
        manifest: &Manifest,
        manifests: &[(String, Vec<u8>)],
        names: Vec<String>,
        blobs: &mut ArchiveBlobs,
        pinned: bool,
    ) -> anyhow::Result<Vec<String>> {
        let label = names.first().cloned().unwrap_or_else(|| "image".to_string());
        let (id, layers) = self.store_manifest_content(&label, manifest, blobs).await?;
        for (digest, bytes) in manifests {
            self.put_blob(digest, bytes)?;
        }
        let config_size = manifest.config.as_ref().map(|c| c.size).unwrap_or(0);
        let record = ImageRecord { config_size, manifests: manifests.iter().map(|(d, _)| d.clone()).collect(), layers, last_used: 0, pinned };
        let top = manifests[0].0.clone();
        let name_records: Vec<(String, String)> = names.iter().map(|n| (n.clone(), top.clone())).collect();
        self.record_image(&id, record, &name_records)?;
        tracing::info!(id, names = ?names, "image imported");
        Ok(if names.is_empty() { vec![id] } else { names })
    }
}

/// The name of an OCI layout entry: containerd's full-name annotation, or
/// `org.opencontainers.image.ref.name` when it is a full reference (a bare
/// tag like `latest` names no repository).
fn oci_layout_name(desc: &Descriptor) -> Option<String> {
    if let Some(n) = desc.annotations.get(CONTAINERD_NAME_ANNOTATION) {
        return Reference::parse(n).ok().map(|r| r.name());
    }
    let n = desc.annotations.get(oci::REF_NAME_ANNOTATION)?;
    if !n.contains('/') && !n.contains(':') {
        tracing::warn!(ref_name = n, "OCI layout entry names only a tag; importing it without a name");
        return None;
    }
    Reference::parse(n).ok().map(|r| r.name())
}

/// A descriptor for a file of a docker-save archive, registering it as a blob.
fn describe(dir: &Path, rel: &str, media_type: &str, blobs: &mut ArchiveBlobs) -> anyhow::Result<Descriptor> {
    let path = dir.join(super::unpack::clean_path(Path::new(rel))?);
    let digest = file_digest(&path).with_context(|| format!("archive entry {rel}"))?;
    let size = std::fs::metadata(&path)?.len();
    blobs.files.insert(digest.clone(), path);
    Ok(Descriptor { media_type: media_type.to_string(), digest, size, ..Default::default() })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not the JSON expected", path.display()))
}

/// Extracts the archive's regular files and directories (all these formats
/// hold); the tar crate refuses paths escaping `dest`. A gzip or zstd
/// compressed tar (`.tar.gz`, `.tar.zst`) is recognised by its magic bytes.
fn extract(archive: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::io::BufRead;
    let file = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    std::fs::create_dir_all(dest)?;
    let mut buffered = std::io::BufReader::with_capacity(256 * 1024, file);
    let head = buffered.fill_buf().with_context(|| format!("reading {}", archive.display()))?;
    let reader: Box<dyn std::io::Read> = match super::unpack::Compression::detect(head) {
        super::unpack::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        super::unpack::Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered).context("reading the zstd archive")?),
        super::unpack::Compression::None => Box::new(buffered),
    };
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().context("reading the archive as tar")? {
        let mut entry = entry.context("reading the archive as tar")?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Continuous => {
                entry.unpack_in(dest).context("extracting the archive")?;
            }
            // Old docker save archives link identical layer.tar files.
            tar::EntryType::Symlink | tar::EntryType::Link => {
                entry.unpack_in(dest).context("extracting the archive")?;
            }
            _ => {}
        }
    }
    if !dest.join("manifest.json").exists() && !dest.join("index.json").exists() {
        bail!("not an image archive: no manifest.json or index.json at its top");
    }
    Ok(())
}
