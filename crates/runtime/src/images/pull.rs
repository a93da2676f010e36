//! Pulling an image from a registry into the store: manifest (picking
//! linux/amd64 from an index), config, then every layer fetched, verified
//! and unpacked once.

use std::path::Path;

use anyhow::{bail, Context};
use async_trait::async_trait;

use super::index::{FileLock, ImageRecord, LayerRecord};
use super::oci::{ImageConfig, Manifest};
use super::reference::Reference;
use super::registry::RepoSession;
use super::store::{BlobSource, Store, CONTENT_LOCK};
use crate::cri::RegistryAuth;

#[async_trait]
impl BlobSource for RepoSession<'_> {
    async fn fetch(&mut self, digest: &str, size: Option<u64>, dest: &Path) -> anyhow::Result<()> {
        self.download_blob(digest, size, dest).await.map(|_| ())
    }
}

impl Store {
    /// Pulls `image` and returns its image ID. Content already in the store
    /// is not fetched again; an image pinned by digest that is present needs
    /// no registry at all. The registry's mirror endpoints (see
    /// [`super::mirrors`]) are tried first, in order, then the registry itself.
    pub async fn pull(&self, image: &str, auths: &[RegistryAuth]) -> anyhow::Result<String> {
        let reference = Reference::parse(image)?;
        if reference.digest.is_some() {
            if let Some(id) = Store::find_image(&self.read_index()?, image) {
                return Ok(id);
            }
        }
        let _content = FileLock::acquire_async(self.locks_dir(), CONTENT_LOCK.into(), false).await?;
        let endpoints = self.registries.endpoints(&reference, &self.insecure_registries);
        let mut failures = Vec::new();
        for endpoint in &endpoints {
            // A mirror's own credentials first; the pod's (for the image's registry) after them.
            let mut tried: Vec<RegistryAuth> = Vec::new();
            if endpoint.mirror {
                tried.extend(endpoint.auth.clone());
                tried.extend(auths.iter().cloned());
            } else {
                tried.extend(auths.iter().cloned());
                tried.extend(endpoint.auth.clone());
            }
            let http = endpoint.client.as_ref().unwrap_or(&self.http);
            let mut session = RepoSession::at(http, &endpoint.base, &endpoint.repository, &tried);
            match self.pull_from(&reference, &mut session).await {
                Ok(id) => {
                    tracing::info!(image = %reference, id, endpoint = endpoint.base, repository = endpoint.repository, "image pulled");
                    return Ok(id);
                }
                Err(e) if endpoints.len() == 1 => return Err(e),
                Err(e) => {
                    tracing::warn!(image = %reference, endpoint = endpoint.base, "pull from this endpoint failed, trying the next: {e:#}");
                    failures.push(format!("{}/{}: {e:#}", endpoint.base, endpoint.repository));
                }
            }
        }
        bail!("pulling {reference}: no endpoint could serve it: {}", failures.join("; "))
    }

    /// One attempt at one endpoint: manifest (index, then the platform's), config and layers.
    async fn pull_from(&self, reference: &Reference, session: &mut RepoSession<'_>) -> anyhow::Result<String> {
        let top = session.manifest(reference.manifest_ref()).await.with_context(|| format!("pulling {reference}"))?;
        let top_doc: Manifest = serde_json::from_slice(&top.bytes).with_context(|| format!("pulling {reference}: manifest is not valid JSON"))?;
        let mut manifests = vec![(top.digest.clone(), top.bytes.clone())];
        let manifest = if top_doc.is_index(&top.content_type) {
            let chosen = top_doc.pick_platform().with_context(|| format!("pulling {reference}"))?;
            let m = session.manifest(&chosen.digest).await.with_context(|| format!("pulling {reference}"))?;
            let doc: Manifest = serde_json::from_slice(&m.bytes).with_context(|| format!("pulling {reference}: platform manifest is not valid JSON"))?;
            manifests.push((m.digest, m.bytes));
            doc
        } else {
            top_doc
        };
        let (id, layers) = self.store_manifest_content(&reference.to_string(), &manifest, session).await?;
        for (digest, bytes) in &manifests {
            self.put_blob(digest, bytes)?;
        }
        let config_size = manifest.config.as_ref().map(|c| c.size).unwrap_or(0);
        let record = ImageRecord { config_size, manifests: manifests.iter().map(|(d, _)| d.clone()).collect(), layers, last_used: 0, pinned: false };
        self.record_image(&id, record, &[(reference.name(), top.digest.clone())])?;
        Ok(id)
    }

    /// Fetches the config and every layer a manifest names; returns the
    /// image ID and its layers.
    pub(crate) async fn store_manifest_content(
        &self,
        reference: &str,
        manifest: &Manifest,
        source: &mut dyn BlobSource,
    ) -> anyhow::Result<(String, Vec<LayerRecord>)> {
        let config_desc = manifest.config.as_ref().with_context(|| format!("{reference}: manifest has no config"))?;
        let config_bytes = self
            .blob_bytes(&config_desc.digest, Some(config_desc.size), source)
            .await
            .with_context(|| format!("{reference}: fetching config {}", config_desc.digest))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).with_context(|| format!("{reference}: image config is not valid JSON"))?;
        let layers = manifest_layers(manifest, &config).with_context(|| reference.to_string())?;
        for layer in &layers {
            self.ensure_layer(&layer.digest, Some(layer.size), &layer.diff_id, source)
                .await
                .with_context(|| format!("{reference}: layer {}", layer.digest))?;
        }
        Ok((config_desc.digest.clone(), layers))
    }
}

/// Pairs a manifest's layer blobs with the config's diffIDs.
fn manifest_layers(manifest: &Manifest, config: &ImageConfig) -> anyhow::Result<Vec<LayerRecord>> {
    let diff_ids = config.rootfs.as_ref().map(|r| r.diff_ids.clone()).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        bail!("manifest has {} layers but the config lists {} diffIDs", manifest.layers.len(), diff_ids.len());
    }
    for layer in &manifest.layers {
        if layer.media_type.contains("foreign") || layer.media_type.contains("nondistributable") {
            bail!("layer {} has media type {}, which skiff cannot fetch", layer.digest, layer.media_type);
        }
    }
    Ok(manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| LayerRecord { digest: l.digest.clone(), diff_id, size: l.size })
        .collect())
}
