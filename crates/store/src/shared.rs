//! Pieces both backends share: watch fan-out, key ranges, revision checks.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use bytes::Bytes;

use crate::{Error, Event, EventKind, KeyValue, Result, Revision, WatchReceiver};

/// Capacity of each watcher's channel (events the consumer has not read yet).
pub(crate) const WATCH_CHANNEL_CAPACITY: usize = 1024;

/// Capacity of the fan-out channel, counted in committed batches. A watcher
/// whose consumer stalls backs up here; once it is this many batches behind
/// it is dropped (its receiver closes) and must re-list.
const HUB_CAPACITY: usize = 1024;

/// Fans committed events out to watchers. Publishing never blocks the writer.
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            tx: broadcast::channel(HUB_CAPACITY).0,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.tx.subscribe()
    }

    /// Publishes one batch, in revision order. Must be called in commit order.
    pub(crate) fn publish(&self, events: Vec<Event>) {
        if !events.is_empty() && self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(events));
        }
    }
}

/// Starts a watcher task: sends `replay` (events up to and including
/// `replayed_to`), then every live event for `prefix` with a revision greater
/// than `replayed_to`. `live` must have been subscribed before the replay was
/// read, so nothing falls between the two and duplicates are skipped.
pub(crate) fn spawn_watcher(
    prefix: String,
    replay: Vec<Event>,
    replayed_to: Revision,
    mut live: broadcast::Receiver<Arc<Vec<Event>>>,
) -> WatchReceiver {
    let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
    tokio::spawn(async move {
        for ev in replay {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        loop {
            let batch = tokio::select! {
                _ = tx.closed() => return,
                msg = live.recv() => match msg {
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(prefix, missed = n, "watcher fell too far behind; closing it");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            for ev in batch.iter() {
                if ev.revision() > replayed_to
                    && ev.kv.key.starts_with(&prefix)
                    && tx.send(ev.clone()).await.is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

/// The smallest string greater than every string starting with `prefix`, or
/// None when there is none (empty prefix, or only U+10FFFF chars). UTF-8 byte
/// order equals code point order, so this bounds a range scan on text keys.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match c as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// History at or after `compacted` is intact. Revision 1 is the empty store,
/// so an uncompacted store (compacted == 1) can serve every revision.
pub(crate) fn check_compacted(requested: Revision, compacted: Revision) -> Result<()> {
    if requested < compacted && compacted > 1 {
        return Err(Error::Compacted {
            requested,
            compacted,
        });
    }
    Ok(())
}

pub(crate) fn check_not_future(requested: Revision, current: Revision) -> Result<()> {
    if requested > current {
        return Err(Error::FutureRevision { requested, current });
    }
    Ok(())
}

/// Builds the event for one log entry. A delete carries the key's last value
/// (from `prev`) with the delete's revision, so watchers see what went away.
pub(crate) fn make_event(
    key: String,
    value: Bytes,
    create_revision: Revision,
    revision: Revision,
    deleted: bool,
    prev: Option<KeyValue>,
) -> Event {
    if deleted {
        let (value, create_revision) = match &prev {
            Some(p) => (p.value.clone(), p.create_revision),
            None => (value, create_revision),
        };
        let kv = KeyValue {
            key,
            value,
            create_revision,
            mod_revision: revision,
        };
        Event {
            kind: EventKind::Delete,
            kv,
            prev,
        }
    } else {
        let kv = KeyValue {
            key,
            value,
            create_revision,
            mod_revision: revision,
        };
        Event {
            kind: EventKind::Put,
            kv,
            prev,
        }
    }
}

#[cfg(test)]
mod unit {
    use super::prefix_end;

    #[test]
    fn prefix_end_bounds() {
        assert_eq!(prefix_end("/a/"), Some("/a0".to_string()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".to_string()));
    }
}
