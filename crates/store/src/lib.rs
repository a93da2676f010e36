//! Revisioned key-value store with watch.
//!
//! Every write gets the next value of one global revision counter (the
//! Kubernetes resourceVersion). Writes are compare-and-swap on the key's last
//! modification revision. Old revisions are kept until compacted so that
//! lists at a past revision (pagination snapshots) and watches from a past
//! revision work; asking for a compacted revision answers `Error::Compacted`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

mod memory;
mod shared;
mod sqlite;
#[cfg(test)]
mod tests;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// A revision of the store. Starts at 1 for an empty store (the first write gets 2).
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision at which the key was created (stays the same across updates).
    pub create_revision: Revision,
    /// Revision of the last write to the key (the object's resourceVersion).
    pub mod_revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A create or an update; `prev` is set for an update.
    Put,
    Delete,
}

/// One change, delivered to watchers in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For Put: the new value. For Delete: the last value of the key, with
    /// `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The value before this change, when there was one.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The key's current mod revision differs from the expected one.
    #[error("key {key} was modified (current revision {current})")]
    Conflict { key: String, current: Revision },
    /// The requested revision has been compacted away.
    #[error("revision {requested} has been compacted (oldest retained is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("storage error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The answer to a list.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Keys in ascending byte order.
    pub items: Vec<KeyValue>,
    /// The revision the list is consistent at.
    pub revision: Revision,
    /// True when `limit` cut the list short.
    pub more: bool,
}

/// A live watch: events arrive in revision order, starting after the revision
/// the watch was opened at. When the receiver closes, the watch is over (the
/// store is shutting down, or the watcher fell too far behind and must
/// re-list).
///
/// The channel holds up to 1024 unread events; behind it the store buffers
/// up to 1024 committed write batches per watcher. A consumer that stalls for
/// longer than that is dropped (the receiver closes) rather than slowing
/// writers down or growing memory without bound.
pub type WatchReceiver = mpsc::Receiver<Event>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest revision (the revision of the last write, or 1 if none).
    async fn current_revision(&self) -> Result<Revision>;

    /// Oldest revision that can still be listed at or watched from.
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Creates `key`; fails with `AlreadyExists` if it exists.
    /// Returns the new key-value (its mod_revision is the new revision).
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key` if its mod_revision equals `expected`; otherwise
    /// `Conflict` (or `NotFound` when the key does not exist).
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, if `expected` is Some only when its mod_revision matches.
    /// Returns the deleted key-value with `mod_revision` = the delete's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// The current value of `key`, or None.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, strictly after `start_after` when given,
    /// at most `limit` items when non-zero, as they were at `revision` (the
    /// current revision when None).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult>;

    /// Streams every change to keys starting with `prefix` whose revision is
    /// greater than `after`. `after` older than the compacted revision answers
    /// `Compacted`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver>;

    /// Forgets revisions older than `revision` (the current value of every
    /// key, and all deletes after `revision`, are kept).
    async fn compact(&self, revision: Revision) -> Result<()>;
}

pub type DynStore = Arc<dyn Store>;
