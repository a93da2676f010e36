//! SQLite backend: one database file in WAL mode, the default datastore.
//!
//! Layout: `log` holds every retained write (revision = rowid, deletes are
//! tombstone rows); the current value of a key is its newest row unless that
//! row is a tombstone. `meta` holds the compacted revision. The current
//! revision is not stored: it is max(newest row, compacted revision), which
//! holds because compaction never passes the current revision and never
//! removes rows after the compacted one, so revisions are never reused.
//!
//! Writes go through one writer thread that owns the write connection and
//! commits everything queued in one transaction (group commit): concurrent
//! writers share one fsync (`synchronous=FULL`, so an acknowledged write
//! survives a crash or power loss). Reads use a small pool of read-only
//! connections on the blocking thread pool; each read runs in one snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{
    params, params_from_iter, Connection, OptionalExtension, Transaction, TransactionBehavior,
};
use tokio::sync::oneshot;

use crate::shared::{
    check_compacted, check_not_future, make_event, prefix_end, spawn_watcher, Hub,
};
use crate::{Error, Event, KeyValue, ListResult, Result, Revision, Store, WatchReceiver};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted', 1);
";

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Internal(e.to_string())
    }
}

/// The SQLite-backed [`Store`]. Dropping it finishes queued writes, stops the
/// writer thread and closes the file; open watches then end.
pub struct SqliteStore {
    shared: Arc<Shared>,
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

/// State readers and the writer share.
struct Shared {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// Last committed revision; bumped only after the commit is durable.
    revision: AtomicI64,
    compacted: AtomicI64,
    hub: Hub,
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Option<KeyValue>>>,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(format!(
            "cannot enable WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts the
    /// writer thread.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        let compacted: Revision =
            conn.query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                r.get(0)
            })?;
        let newest: Revision =
            conn.query_row("SELECT COALESCE(MAX(revision), 1) FROM log", [], |r| {
                r.get(0)
            })?;
        let revision = newest.max(compacted).max(1);
        // key -> (create_revision, mod_revision) of live keys, for CAS checks
        // without touching the database. Bare columns of a MAX() aggregate
        // come from the row holding the maximum (SQLite guarantees this).
        let mut index = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT key, MAX(revision), create_revision, deleted FROM log GROUP BY key",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                if !row.get::<_, bool>(3)? {
                    index.insert(row.get::<_, String>(0)?, (row.get(2)?, row.get(1)?));
                }
            }
        }
        tracing::info!(path = %path.display(), revision, compacted, keys = index.len(), "opened sqlite store");
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            hub: Hub::new(),
        });
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            conn,
            index,
            revision,
            compacted,
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Internal(format!("spawning writer thread: {e}")))?;
        Ok(SqliteStore {
            shared,
            requests: Some(tx),
            writer: Some(handle),
        })
    }

    async fn submit(&self, op: Op) -> Result<Option<KeyValue>> {
        let (reply, rx) = oneshot::channel();
        let closed = || Error::Internal("store writer has stopped".into());
        self.requests
            .as_ref()
            .ok_or_else(closed)?
            .send(Request { op, reply })
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = shared
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let c = open_connection(&shared.path)?;
                    c.pragma_update(None, "query_only", true)?;
                    c
                }
            };
            let out = f(&mut conn);
            let mut pool = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit;
        // joining makes sure the file is closed when drop returns.
        drop(self.requests.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// Reads (compacted, current) revisions inside the caller's snapshot.
fn snapshot_revisions(tx: &Transaction<'_>) -> Result<(Revision, Revision)> {
    let compacted: Revision = tx
        .prepare_cached("SELECT value FROM meta WHERE name = 'compacted'")?
        .query_row([], |r| r.get(0))?;
    let newest: Revision = tx
        .prepare_cached("SELECT COALESCE(MAX(revision), 1) FROM log")?
        .query_row([], |r| r.get(0))?;
    Ok((compacted, newest.max(compacted).max(1)))
}

/// SQL fragment and parameters restricting `column` to keys under `prefix`.
fn prefix_filter(column: &str, prefix: &str, params: &mut Vec<Value>) -> String {
    params.push(Value::Text(prefix.to_string()));
    match prefix_end(prefix) {
        Some(end) => {
            params.push(Value::Text(end));
            format!("{column} >= ? AND {column} < ?")
        }
        None => format!("{column} >= ?"),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let op = Op::Create {
            key: key.to_string(),
            value,
        };
        self.submit(op)
            .await?
            .ok_or_else(|| Error::Internal("create returned nothing".into()))
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected,
        };
        self.submit(op)
            .await?
            .ok_or_else(|| Error::Internal("update returned nothing".into()))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let op = Op::Delete {
            key: key.to_string(),
            expected,
        };
        self.submit(op)
            .await?
            .ok_or_else(|| Error::Internal("delete returned nothing".into()))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT revision, value, create_revision, deleted FROM log
                 WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
            )?;
            let row = stmt
                .query_row([&key], |r| {
                    Ok((
                        r.get::<_, Revision>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })
                .optional()?;
            Ok(row
                .filter(|r| !r.3)
                .map(|(rev, value, create_revision, _)| KeyValue {
                    key,
                    value: value.into(),
                    create_revision,
                    mod_revision: rev,
                }))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListResult> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let (compacted, current) = snapshot_revisions(&tx)?;
            let at = revision.unwrap_or(current);
            check_compacted(at, compacted)?;
            check_not_future(at, current)?;
            let mut params = Vec::new();
            let mut sql = format!(
                "SELECT l.key, l.value, l.create_revision, l.revision FROM log l WHERE {}",
                prefix_filter("l.key", &prefix, &mut params)
            );
            if let Some(s) = start_after {
                sql.push_str(" AND l.key > ?");
                params.push(Value::Text(s));
            }
            // Per key the newest row at or before `at`, skipped if a delete.
            sql.push_str(
                " AND l.revision = (SELECT MAX(l2.revision) FROM log l2
                   WHERE l2.key = l.key AND l2.revision <= ?)
                 AND l.deleted = 0 ORDER BY l.key",
            );
            params.push(Value::Integer(at));
            let mut out = ListResult {
                items: Vec::new(),
                revision: at,
                more: false,
            };
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(params))?;
            while let Some(row) = rows.next()? {
                if limit > 0 && out.items.len() == limit {
                    out.more = true;
                    break;
                }
                out.items.push(KeyValue {
                    key: row.get(0)?,
                    value: row.get::<_, Vec<u8>>(1)?.into(),
                    create_revision: row.get(2)?,
                    mod_revision: row.get(3)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver> {
        // Subscribe before taking the snapshot: every event newer than the
        // snapshot is then guaranteed to arrive live.
        let live = self.shared.hub.subscribe();
        let owned_prefix = prefix.to_string();
        let (replay, replayed_to) = self
            .read(move |conn| {
                let tx = conn.transaction()?;
                let (compacted, current) = snapshot_revisions(&tx)?;
                check_compacted(after, compacted)?;
                let mut params = vec![Value::Integer(after)];
                let sql = format!(
                    "SELECT l.revision, l.key, l.value, l.create_revision, l.deleted,
                            p.revision, p.value, p.create_revision
                     FROM log l LEFT JOIN log p ON p.revision = l.prev_revision
                     WHERE l.revision > ? AND {} ORDER BY l.revision",
                    prefix_filter("l.key", &owned_prefix, &mut params)
                );
                let mut stmt = tx.prepare_cached(&sql)?;
                let mut rows = stmt.query(params_from_iter(params))?;
                let mut events = Vec::new();
                while let Some(row) = rows.next()? {
                    let key: String = row.get(1)?;
                    let prev = match row.get::<_, Option<Revision>>(5)? {
                        Some(prev_rev) => Some(KeyValue {
                            key: key.clone(),
                            value: row.get::<_, Vec<u8>>(6)?.into(),
                            create_revision: row.get(7)?,
                            mod_revision: prev_rev,
                        }),
                        None => None,
                    };
                    events.push(make_event(
                        key,
                        row.get::<_, Vec<u8>>(2)?.into(),
                        row.get(3)?,
                        row.get(0)?,
                        row.get(4)?,
                        prev,
                    ));
                }
                Ok((events, current))
            })
            .await?;
        Ok(spawn_watcher(prefix.to_string(), replay, replayed_to, live))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}

/// Owns the write connection; runs on its own thread.
struct Writer {
    conn: Connection,
    /// Live keys: key -> (create_revision, mod_revision), as committed.
    index: HashMap<String, (Revision, Revision)>,
    revision: Revision,
    compacted: Revision,
    shared: Arc<Shared>,
}

/// What one batch changed, applied to the writer only once it commits.
struct Batch {
    overlay: HashMap<String, Option<(Revision, Revision)>>,
    revision: Revision,
    compacted: Revision,
    events: Vec<Event>,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        tracing::debug!("sqlite store writer stopped");
    }

    /// Applies every request in order in one transaction, commits, then
    /// publishes and answers. A storage error fails the whole batch.
    fn commit(&mut self, requests: Vec<Request>) {
        let mut batch = Batch {
            overlay: HashMap::new(),
            revision: self.revision,
            compacted: self.compacted,
            events: Vec::new(),
        };
        let mut results = Vec::with_capacity(requests.len());
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for req in &requests {
                results.push(apply(&tx, &self.index, &mut batch, &req.op)?);
            }
            tx.commit()
        })();
        if let Err(e) = outcome {
            tracing::error!(error = %e, requests = requests.len(), "store batch failed");
            for req in requests {
                let _ = req.reply.send(Err(Error::Internal(e.to_string())));
            }
            return;
        }
        for (key, state) in batch.overlay {
            match state {
                Some(s) => self.index.insert(key, s),
                None => self.index.remove(&key),
            };
        }
        self.revision = batch.revision;
        self.compacted = batch.compacted;
        self.shared
            .compacted
            .store(batch.compacted, Ordering::Release);
        self.shared
            .revision
            .store(batch.revision, Ordering::Release);
        tracing::trace!(
            requests = requests.len(),
            revision = batch.revision,
            "store batch committed"
        );
        self.shared.hub.publish(batch.events);
        for (req, result) in requests.into_iter().zip(results) {
            let _ = req.reply.send(result);
        }
    }
}

/// Applies one request inside the batch transaction. The outer error aborts
/// the batch (storage failure); the inner one is this request's answer.
fn apply(
    tx: &Transaction<'_>,
    index: &HashMap<String, (Revision, Revision)>,
    batch: &mut Batch,
    op: &Op,
) -> rusqlite::Result<Result<Option<KeyValue>>> {
    let state = |key: &str, batch: &Batch| match batch.overlay.get(key) {
        Some(s) => *s,
        None => index.get(key).copied(),
    };
    // Checks the key exists and matches `expected`; yields (create, mod).
    let check = |key: &str, expected: Option<Revision>, batch: &Batch| match state(key, batch) {
        None => Err(Error::NotFound(key.to_string())),
        Some((_, m)) if expected.is_some_and(|e| e != m) => Err(Error::Conflict {
            key: key.to_string(),
            current: m,
        }),
        Some(s) => Ok(s),
    };
    let (key, value, prev, deleted) = match op {
        Op::Compact { revision } => return compact(tx, batch, *revision),
        Op::Create { key, value } => {
            if state(key, batch).is_some() {
                return Ok(Err(Error::AlreadyExists(key.clone())));
            }
            (key, value.clone(), None, false)
        }
        Op::Update {
            key,
            value,
            expected,
        } => match check(key, Some(*expected), batch) {
            Ok(s) => (key, value.clone(), Some(s), false),
            Err(e) => return Ok(Err(e)),
        },
        Op::Delete { key, expected } => match check(key, *expected, batch) {
            Ok(s) => (key, Bytes::new(), Some(s), true),
            Err(e) => return Ok(Err(e)),
        },
    };
    let rev = batch.revision + 1;
    let prev_kv = match prev {
        Some((create_revision, mod_revision)) => {
            let value: Vec<u8> = tx
                .prepare_cached("SELECT value FROM log WHERE revision = ?1")?
                .query_row([mod_revision], |r| r.get(0))?;
            Some(KeyValue {
                key: key.clone(),
                value: value.into(),
                create_revision,
                mod_revision,
            })
        }
        None => None,
    };
    let create_revision = prev.map_or(rev, |(c, _)| c);
    tx.prepare_cached(
        "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        rev,
        key,
        &value[..],
        create_revision,
        prev.map(|(_, m)| m),
        deleted
    ])?;
    batch.revision = rev;
    batch
        .overlay
        .insert(key.clone(), (!deleted).then_some((create_revision, rev)));
    let ev = make_event(key.clone(), value, create_revision, rev, deleted, prev_kv);
    let kv = ev.kv.clone();
    batch.events.push(ev);
    Ok(Ok(Some(kv)))
}

/// Drops history older than `revision`: rows superseded by a newer row at or
/// before it, and deletes at or before it. Runs inside the write batch, so a
/// big compaction delays writes; callers compact periodically in small steps.
fn compact(
    tx: &Transaction<'_>,
    batch: &mut Batch,
    revision: Revision,
) -> rusqlite::Result<Result<Option<KeyValue>>> {
    if let Err(e) = check_not_future(revision, batch.revision) {
        return Ok(Err(e));
    }
    if revision <= batch.compacted {
        return Ok(Ok(None));
    }
    let removed = tx
        .prepare_cached(
            "DELETE FROM log WHERE revision <= ?1 AND (deleted = 1 OR EXISTS (
                SELECT 1 FROM log n WHERE n.key = log.key
                  AND n.revision > log.revision AND n.revision <= ?1))",
        )?
        .execute([revision])?;
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")?
        .execute([revision])?;
    tracing::debug!(revision, removed, "compacted store");
    batch.compacted = revision;
    Ok(Ok(None))
}
