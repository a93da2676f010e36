//! In-memory backend with full MVCC history, for tests.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::shared::{
    check_compacted, check_not_future, make_event, prefix_end, spawn_watcher, Hub,
};
use crate::{Error, Event, KeyValue, ListResult, Result, Revision, Store, WatchReceiver};

/// One write in the log. Deletes are tombstones (`deleted`, empty value).
struct Row {
    key: String,
    value: Bytes,
    create_revision: Revision,
    prev_revision: Option<Revision>,
    deleted: bool,
}

struct Inner {
    revision: Revision,
    compacted: Revision,
    /// Every retained write by revision.
    log: BTreeMap<Revision, Row>,
    /// Retained revisions of each key, ascending.
    keys: BTreeMap<String, Vec<Revision>>,
}

/// A [`Store`] that keeps everything in memory; nothing survives a drop.
/// History is kept until [`Store::compact`], so past-revision lists and
/// watches behave like the SQLite backend.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    hub: Hub,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner {
                revision: 1,
                compacted: 1,
                log: BTreeMap::new(),
                keys: BTreeMap::new(),
            }),
            hub: Hub::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (each write is
        // applied in one step), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a write, publishes its event and returns the event.
    fn write(&self, inner: &mut Inner, key: &str, value: Bytes, deleted: bool) -> Event {
        let rev = inner.revision + 1;
        let prev = inner.current(key);
        let create_revision = match &prev {
            Some(p) => p.create_revision,
            None => rev,
        };
        inner.revision = rev;
        inner.log.insert(
            rev,
            Row {
                key: key.to_string(),
                value,
                create_revision,
                prev_revision: prev.as_ref().map(|p| p.mod_revision),
                deleted,
            },
        );
        inner.keys.entry(key.to_string()).or_default().push(rev);
        let ev = inner.event(rev);
        // Published under the lock so batches reach the hub in revision order.
        self.hub.publish(vec![ev.clone()]);
        ev
    }
}

impl Inner {
    fn kv(&self, rev: Revision) -> Option<KeyValue> {
        let row = self.log.get(&rev)?;
        (!row.deleted).then(|| KeyValue {
            key: row.key.clone(),
            value: row.value.clone(),
            create_revision: row.create_revision,
            mod_revision: rev,
        })
    }

    /// The key's value as of `at`, None when absent or deleted then.
    fn value_at(&self, key: &str, at: Revision) -> Option<KeyValue> {
        let revs = self.keys.get(key)?;
        let n = revs.partition_point(|r| *r <= at);
        self.kv(*revs.get(n.checked_sub(1)?)?)
    }

    fn current(&self, key: &str) -> Option<KeyValue> {
        self.value_at(key, Revision::MAX)
    }

    fn event(&self, rev: Revision) -> Event {
        let row = &self.log[&rev];
        let prev = row.prev_revision.and_then(|p| self.kv(p));
        make_event(
            row.key.clone(),
            row.value.clone(),
            row.create_revision,
            rev,
            row.deleted,
            prev,
        )
    }

    fn check_expected(key: &str, cur: &KeyValue, expected: Revision) -> Result<()> {
        if cur.mod_revision != expected {
            return Err(Error::Conflict {
                key: key.to_string(),
                current: cur.mod_revision,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.lock().compacted)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let mut inner = self.lock();
        if inner.current(key).is_some() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        Ok(self.write(&mut inner, key, value, false).kv)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let mut inner = self.lock();
        let cur = inner
            .current(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        Inner::check_expected(key, &cur, expected)?;
        Ok(self.write(&mut inner, key, value, false).kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let mut inner = self.lock();
        let cur = inner
            .current(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if let Some(expected) = expected {
            Inner::check_expected(key, &cur, expected)?;
        }
        Ok(self.write(&mut inner, key, Bytes::new(), true).kv)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().current(key))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult> {
        let inner = self.lock();
        let at = revision.unwrap_or(inner.revision);
        check_compacted(at, inner.compacted)?;
        check_not_future(at, inner.revision)?;
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let upper = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = ListResult {
            items: Vec::new(),
            revision: at,
            more: false,
        };
        for key in inner
            .keys
            .range::<String, _>((lower, upper))
            .map(|(k, _)| k)
        {
            if let Some(kv) = inner.value_at(key, at) {
                if limit > 0 && out.items.len() == limit {
                    out.more = true;
                    break;
                }
                out.items.push(kv);
            }
        }
        Ok(out)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        let inner = self.lock();
        check_compacted(after, inner.compacted)?;
        // Subscribing under the lock: no write can slip between replay and live.
        let live = self.hub.subscribe();
        let replay: Vec<Event> = inner
            .log
            .range(after.saturating_add(1)..)
            .filter(|(_, row)| row.key.starts_with(prefix))
            .map(|(rev, _)| inner.event(*rev))
            .collect();
        Ok(spawn_watcher(
            prefix.to_string(),
            replay,
            inner.revision,
            live,
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut inner = self.lock();
        check_not_future(revision, inner.revision)?;
        if revision <= inner.compacted {
            return Ok(());
        }
        let inner = &mut *inner;
        inner.keys.retain(|_, revs| {
            // Keep the newest write at or before `revision` (unless it is a
            // delete) and everything after it.
            let n = revs.partition_point(|r| *r <= revision);
            let mut drop_upto = n.saturating_sub(1);
            if n > 0 && inner.log[&revs[n - 1]].deleted {
                drop_upto = n;
            }
            for r in revs.drain(..drop_upto) {
                inner.log.remove(&r);
            }
            !revs.is_empty()
        });
        inner.compacted = revision;
        Ok(())
    }
}
