//! Image store: content-addressed blobs, layers unpacked once per diffID
//! (shared overlayfs lowerdirs), a registry client for pulls, archive
//! import and LRU garbage collection. [`Store`] implements both
//! [`crate::cri::ImageService`] and [`ImageResolver`].

use std::path::PathBuf;

mod gc;
mod import;
mod index;
pub mod mirrors;
pub mod oci;
pub mod preload;
mod pull;
pub mod reference;
pub mod registry;
mod store;
pub mod testimage;
pub mod unpack;

pub use gc::{disk_usage, GcReport};
pub use mirrors::Registries;
pub use reference::Reference;
pub use store::Store;

/// What the container side needs from an image: its config and the
/// unpacked layer directories to stack as overlayfs lowerdirs.
#[derive(Clone, Debug, Default)]
pub struct ResolvedImage {
    /// `sha256:` digest of the image config.
    pub id: String,
    /// `repo@sha256:<manifest digest>` of the name the image was resolved
    /// by (CRI's imageRef, the pod's `imageID`); empty when it has none.
    pub repo_digest: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries from the image config.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid` from the image config.
    pub user: String,
    /// Unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
}

/// How the container side finds a pulled image's config and layers.
pub trait ImageResolver: Send + Sync {
    /// Resolves an image reference as written in a pod (or an image ID) to a
    /// locally present image; an error if it is not present.
    fn resolve(&self, image: &str) -> anyhow::Result<ResolvedImage>;
}
