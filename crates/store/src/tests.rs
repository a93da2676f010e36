//! One behavioural suite, run against every backend, plus SQLite-only
//! durability tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{DynStore, Error, Event, EventKind, KeyValue, SqliteStore, Store, WatchReceiver};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next(rx: &mut WatchReceiver) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("timed out waiting for a watch event")
        .expect("watch closed")
}

async fn assert_quiet(rx: &mut WatchReceiver) {
    let r = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
    assert!(r.is_err(), "unexpected watch event: {r:?}");
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Generates one test per suite function for each backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(std::sync::Arc::new(crate::MemoryStore::new())).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let store = crate::SqliteStore::open(&dir.path().join("store.db")).unwrap();
                super::$name(std::sync::Arc::new(store)).await;
            })*
        }
    };
}

suite!(
    create_and_get,
    update_compare_and_swap,
    delete_with_and_without_expected,
    list_prefix_and_pagination,
    list_at_past_revision,
    list_after_deletes,
    watch_replay_then_live,
    watch_prefix_filter_and_close,
    watch_no_gaps_under_concurrent_writes,
    watch_from_compacted_revision,
    compaction_keeps_latest,
    compaction_of_deleted_keys,
    concurrent_writers,
    concurrent_compare_and_swap,
);

async fn create_and_get(s: DynStore) {
    assert_eq!(s.current_revision().await.unwrap(), 1);
    assert_eq!(s.compacted_revision().await.unwrap(), 1);
    assert_eq!(s.get("/a").await.unwrap(), None);
    let kv = s.create("/a", b("one")).await.unwrap();
    assert_eq!(
        kv,
        KeyValue {
            key: "/a".into(),
            value: b("one"),
            create_revision: 2,
            mod_revision: 2
        }
    );
    assert_eq!(s.current_revision().await.unwrap(), 2);
    assert_eq!(s.get("/a").await.unwrap(), Some(kv));
    assert_eq!(
        s.create("/a", b("two")).await,
        Err(Error::AlreadyExists("/a".into()))
    );
    // A failed write does not use up a revision.
    assert_eq!(s.create("/b", Bytes::new()).await.unwrap().mod_revision, 3);
    assert_eq!(s.get("/b").await.unwrap().unwrap().value, Bytes::new());
}

async fn update_compare_and_swap(s: DynStore) {
    let kv = s.create("/a", b("1")).await.unwrap();
    let up = s.update("/a", b("2"), kv.mod_revision).await.unwrap();
    assert_eq!(up.create_revision, kv.create_revision);
    assert_eq!(up.mod_revision, kv.mod_revision + 1);
    assert_eq!(up.value, b("2"));
    assert_eq!(
        s.update("/a", b("3"), kv.mod_revision).await,
        Err(Error::Conflict {
            key: "/a".into(),
            current: up.mod_revision
        })
    );
    assert_eq!(
        s.update("/none", b("3"), 2).await,
        Err(Error::NotFound("/none".into()))
    );
    assert_eq!(s.get("/a").await.unwrap(), Some(up));
}

async fn delete_with_and_without_expected(s: DynStore) {
    let a = s.create("/a", b("a")).await.unwrap();
    let bkv = s.create("/b", b("b")).await.unwrap();
    assert_eq!(
        s.delete("/a", Some(a.mod_revision + 100)).await,
        Err(Error::Conflict {
            key: "/a".into(),
            current: a.mod_revision
        })
    );
    let d = s.delete("/a", Some(a.mod_revision)).await.unwrap();
    assert_eq!(d.value, b("a"));
    assert_eq!(d.create_revision, a.create_revision);
    assert_eq!(d.mod_revision, bkv.mod_revision + 1);
    assert_eq!(s.current_revision().await.unwrap(), d.mod_revision);
    assert_eq!(s.get("/a").await.unwrap(), None);
    let d = s.delete("/b", None).await.unwrap();
    assert_eq!(d.value, b("b"));
    assert_eq!(
        s.delete("/b", None).await,
        Err(Error::NotFound("/b".into()))
    );
    assert_eq!(
        s.update("/b", b("x"), d.mod_revision).await,
        Err(Error::NotFound("/b".into()))
    );
    // Re-creating a deleted key starts a new life with a new create_revision.
    let again = s.create("/a", b("again")).await.unwrap();
    assert_eq!(again.create_revision, again.mod_revision);
    assert!(again.create_revision > a.create_revision);
}

async fn list_prefix_and_pagination(s: DynStore) {
    for k in [
        "/pods/ns1/c",
        "/pods/ns1/a",
        "/pods/ns2/b",
        "/pods/ns1/b",
        "/podsx",
        "/services/a",
    ] {
        s.create(k, b(k)).await.unwrap();
    }
    let all = s.list("/pods/", None, 0, None).await.unwrap();
    assert_eq!(
        keys(&all.items),
        ["/pods/ns1/a", "/pods/ns1/b", "/pods/ns1/c", "/pods/ns2/b"]
    );
    assert!(!all.more);
    assert_eq!(all.revision, 7);
    assert_eq!(all.items[0].value, b("/pods/ns1/a"));
    assert_eq!(s.list("", None, 0, None).await.unwrap().items.len(), 6);
    assert!(s
        .list("/nothing/", None, 0, None)
        .await
        .unwrap()
        .items
        .is_empty());

    let p1 = s.list("/pods/", None, 2, None).await.unwrap();
    assert_eq!(keys(&p1.items), ["/pods/ns1/a", "/pods/ns1/b"]);
    assert!(p1.more);
    // Writes between pages do not show when paging at the first page's revision.
    s.create("/pods/ns1/bb", b("late")).await.unwrap();
    s.delete("/pods/ns2/b", None).await.unwrap();
    let p2 = s
        .list("/pods/", Some("/pods/ns1/b"), 2, Some(p1.revision))
        .await
        .unwrap();
    assert_eq!(keys(&p2.items), ["/pods/ns1/c", "/pods/ns2/b"]);
    assert!(!p2.more);
    assert_eq!(p2.revision, p1.revision);
    // Exactly `limit` remaining items: no more.
    let p = s
        .list("/pods/", Some("/pods/ns1/b"), 2, None)
        .await
        .unwrap();
    assert_eq!(keys(&p.items), ["/pods/ns1/bb", "/pods/ns1/c"]);
    assert!(!p.more);
    // start_after before the prefix is harmless.
    assert_eq!(
        s.list("/pods/", Some("/a"), 0, None)
            .await
            .unwrap()
            .items
            .len(),
        4
    );

    let cur = s.current_revision().await.unwrap();
    assert_eq!(
        s.list("/pods/", None, 0, Some(cur + 1)).await.unwrap_err(),
        Error::FutureRevision {
            requested: cur + 1,
            current: cur
        }
    );
}

async fn list_at_past_revision(s: DynStore) {
    let a1 = s.create("/k/a", b("a1")).await.unwrap();
    let b1 = s.create("/k/b", b("b1")).await.unwrap();
    let a2 = s.update("/k/a", b("a2"), a1.mod_revision).await.unwrap();
    s.delete("/k/b", None).await.unwrap();
    let c1 = s.create("/k/c", b("c1")).await.unwrap();

    let at = |r| {
        let s = s.clone();
        async move { s.list("/k/", None, 0, Some(r)).await.unwrap().items }
    };
    assert!(at(1).await.is_empty());
    assert_eq!(at(a1.mod_revision).await, vec![a1.clone()]);
    assert_eq!(at(b1.mod_revision).await, vec![a1.clone(), b1.clone()]);
    assert_eq!(at(a2.mod_revision).await, vec![a2.clone(), b1.clone()]);
    assert_eq!(at(a2.mod_revision + 1).await, vec![a2.clone()]);
    assert_eq!(at(c1.mod_revision).await, vec![a2.clone(), c1.clone()]);
    assert_eq!(
        s.list("/k/", None, 0, None).await.unwrap().items,
        vec![a2, c1]
    );
}

async fn list_after_deletes(s: DynStore) {
    for i in 0..10 {
        s.create(&format!("/d/{i}"), b("x")).await.unwrap();
    }
    for i in (0..10).step_by(2) {
        s.delete(&format!("/d/{i}"), None).await.unwrap();
    }
    let l = s.list("/d/", None, 0, None).await.unwrap();
    assert_eq!(keys(&l.items), ["/d/1", "/d/3", "/d/5", "/d/7", "/d/9"]);
    // Pagination skips deleted keys without returning short pages.
    let p = s.list("/d/", None, 2, None).await.unwrap();
    assert_eq!(keys(&p.items), ["/d/1", "/d/3"]);
    assert!(p.more);
    let p = s.list("/d/", Some("/d/7"), 2, None).await.unwrap();
    assert_eq!(keys(&p.items), ["/d/9"]);
    assert!(!p.more);
    let p = s.list("/d/", Some("/d/5"), 2, None).await.unwrap();
    assert_eq!(keys(&p.items), ["/d/7", "/d/9"]);
    assert!(!p.more);
}

async fn watch_replay_then_live(s: DynStore) {
    let a = s.create("/w/a", b("1")).await.unwrap();
    let a2 = s.update("/w/a", b("2"), a.mod_revision).await.unwrap();
    let mut rx = s.watch("/w/", 1).await.unwrap();
    let mut from_middle = s.watch("/w/", a.mod_revision).await.unwrap();
    let del = s.delete("/w/a", None).await.unwrap();
    let c = s.create("/w/c", b("c")).await.unwrap();

    let e = next(&mut rx).await;
    assert_eq!((e.kind, &e.kv, &e.prev), (EventKind::Put, &a, &None));
    let e = next(&mut rx).await;
    assert_eq!(
        (e.kind, &e.kv, e.prev.as_ref()),
        (EventKind::Put, &a2, Some(&a))
    );
    let e = next(&mut rx).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.kv, del);
    assert_eq!(e.kv.value, b("2"));
    assert_eq!(e.revision(), a2.mod_revision + 1);
    assert_eq!(e.prev.as_ref(), Some(&a2));
    let e = next(&mut rx).await;
    assert_eq!((e.kind, &e.kv, &e.prev), (EventKind::Put, &c, &None));
    assert_quiet(&mut rx).await;

    for want in [a2.mod_revision, del.mod_revision, c.mod_revision] {
        assert_eq!(next(&mut from_middle).await.revision(), want);
    }
    // A watch from the current revision sees only what comes next.
    let mut now = s.watch("/w/", c.mod_revision).await.unwrap();
    assert_quiet(&mut now).await;
    let u = s.update("/w/c", b("c2"), c.mod_revision).await.unwrap();
    assert_eq!(next(&mut now).await.kv, u);
}

async fn watch_prefix_filter_and_close(s: DynStore) {
    let mut rx = s.watch("/a/", 0).await.unwrap();
    s.create("/b/x", b("no")).await.unwrap();
    s.create("/a", b("no")).await.unwrap();
    let yes = s.create("/a/x", b("yes")).await.unwrap();
    assert_eq!(next(&mut rx).await.kv, yes);
    assert_quiet(&mut rx).await;
    // Dropping a receiver must not disturb writes or other watchers.
    let mut other = s.watch("", yes.mod_revision).await.unwrap();
    drop(rx);
    let z = s.create("/a/z", b("z")).await.unwrap();
    assert_eq!(next(&mut other).await.kv, z);
}

async fn watch_no_gaps_under_concurrent_writes(s: DynStore) {
    const N: i64 = 300;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..N {
                s.create(&format!("/g/{i:04}"), b("v")).await.unwrap();
            }
        })
    };
    // Open watches at assorted moments while writes are in flight.
    let mut watches = Vec::new();
    for _ in 0..6 {
        let after = s.current_revision().await.unwrap();
        watches.push((after, s.watch("/g/", after).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    for (after, mut rx) in watches {
        for want in after + 1..=N + 1 {
            assert_eq!(next(&mut rx).await.revision(), want, "watch from {after}");
        }
        assert_quiet(&mut rx).await;
    }
}

async fn watch_from_compacted_revision(s: DynStore) {
    let a = s.create("/c/a", b("1")).await.unwrap();
    let a2 = s.update("/c/a", b("2"), a.mod_revision).await.unwrap();
    let a3 = s.update("/c/a", b("3"), a2.mod_revision).await.unwrap();
    s.compact(a3.mod_revision).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), a3.mod_revision);
    assert_eq!(
        s.watch("/c/", a2.mod_revision).await.unwrap_err(),
        Error::Compacted {
            requested: a2.mod_revision,
            compacted: a3.mod_revision
        }
    );
    assert!(matches!(
        s.watch("/c/", 0).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        s.list("/c/", None, 0, Some(a2.mod_revision)).await,
        Err(Error::Compacted { .. })
    ));
    let mut rx = s.watch("/c/", a3.mod_revision).await.unwrap();
    let a4 = s.update("/c/a", b("4"), a3.mod_revision).await.unwrap();
    let e = next(&mut rx).await;
    assert_eq!((&e.kv, e.prev.as_ref()), (&a4, Some(&a3)));
}

async fn compaction_keeps_latest(s: DynStore) {
    let a = s.create("/p/a", b("a1")).await.unwrap();
    let bkv = s.create("/p/b", b("b1")).await.unwrap();
    let a2 = s.update("/p/a", b("a2"), a.mod_revision).await.unwrap();
    let mid = s.current_revision().await.unwrap();
    let b2 = s.update("/p/b", b("b2"), bkv.mod_revision).await.unwrap();
    let c = s.create("/p/c", b("c")).await.unwrap();

    s.compact(mid).await.unwrap();
    // Compacting to an older or equal revision again is a no-op.
    s.compact(mid - 1).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), mid);
    let cur = s.current_revision().await.unwrap();
    assert!(matches!(
        s.compact(cur + 1).await,
        Err(Error::FutureRevision { .. })
    ));

    assert_eq!(s.get("/p/a").await.unwrap(), Some(a2.clone()));
    assert_eq!(
        s.list("/p/", None, 0, None).await.unwrap().items,
        vec![a2.clone(), b2.clone(), c.clone()]
    );
    // The compacted revision itself is still readable.
    assert_eq!(
        s.list("/p/", None, 0, Some(mid)).await.unwrap().items,
        vec![a2.clone(), bkv.clone()]
    );
    // Watching from it replays everything after it, with prev values.
    let mut rx = s.watch("/p/", mid).await.unwrap();
    let e = next(&mut rx).await;
    assert_eq!((&e.kv, e.prev.as_ref()), (&b2, Some(&bkv)));
    assert_eq!(next(&mut rx).await.kv, c);
    assert_eq!(s.current_revision().await.unwrap(), c.mod_revision);
    // Writes continue with CAS on the surviving revisions.
    s.update("/p/a", b("a3"), a2.mod_revision).await.unwrap();
}

async fn compaction_of_deleted_keys(s: DynStore) {
    let a = s.create("/x/a", b("a")).await.unwrap();
    let bkv = s.create("/x/b", b("b")).await.unwrap();
    let da = s.delete("/x/a", None).await.unwrap();
    let mid = da.mod_revision;
    let db = s.delete("/x/b", None).await.unwrap();
    s.compact(mid).await.unwrap();
    assert_eq!(
        s.list("/x/", None, 0, Some(mid)).await.unwrap().items,
        vec![bkv.clone()]
    );
    assert!(s.list("/x/", None, 0, None).await.unwrap().items.is_empty());
    let mut rx = s.watch("/x/", mid).await.unwrap();
    let e = next(&mut rx).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!((&e.kv, e.prev.as_ref()), (&db, Some(&bkv)));
    // Compacting away the newest write (a delete) must not rewind the counter.
    s.compact(db.mod_revision).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), db.mod_revision);
    let again = s.create("/x/a", b("again")).await.unwrap();
    assert_eq!(again.mod_revision, db.mod_revision + 1);
    assert!(again.create_revision > a.create_revision);
}

async fn concurrent_writers(s: DynStore) {
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..25 {
                    let key = format!("/cw/{t:02}/{i:02}");
                    let kv = s.create(&key, b(&key)).await.unwrap();
                    let kv = s.update(&key, b("u"), kv.mod_revision).await.unwrap();
                    revs.extend([kv.create_revision, kv.mod_revision]);
                }
                revs
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        for r in t.await.unwrap() {
            assert!(all.insert(r), "revision {r} handed out twice");
        }
    }
    assert_eq!(all.len(), 32 * 25 * 2);
    assert_eq!(s.current_revision().await.unwrap(), 1 + all.len() as i64);
    assert_eq!(*all.iter().min().unwrap(), 2);
    let l = s.list("/cw/", None, 0, None).await.unwrap();
    assert_eq!(l.items.len(), 32 * 25);
    assert!(l.items.iter().all(|kv| kv.value == b("u")));
}

async fn concurrent_compare_and_swap(s: DynStore) {
    let kv = s.create("/cas", b("0")).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.update("/cas", b(&i.to_string()), kv.mod_revision).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one compare-and-swap wins");
    assert_eq!(s.current_revision().await.unwrap(), kv.mod_revision + 1);
}

// ---- SQLite only ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_keys_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (a2, c, last) = {
        let s = SqliteStore::open(&path).unwrap();
        let a = s.create("/r/a", b("a")).await.unwrap();
        let a2 = s.update("/r/a", b("a2"), a.mod_revision).await.unwrap();
        let bkv = s.create("/r/b", b("b")).await.unwrap();
        let c = s.create("/r/c", b("c")).await.unwrap();
        s.compact(bkv.mod_revision).await.unwrap();
        let last = s.delete("/r/b", None).await.unwrap();
        (a2, c, last)
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), last.mod_revision);
    assert_eq!(s.compacted_revision().await.unwrap(), last.mod_revision - 2);
    assert_eq!(s.get("/r/a").await.unwrap(), Some(a2.clone()));
    assert_eq!(s.get("/r/b").await.unwrap(), None);
    assert_eq!(
        s.list("/r/", None, 0, None).await.unwrap().items,
        vec![a2.clone(), c.clone()]
    );
    // CAS state survives: the old revision conflicts, the current one works.
    assert!(matches!(
        s.update("/r/a", b("x"), a2.mod_revision - 1).await,
        Err(Error::Conflict { .. })
    ));
    let a3 = s.update("/r/a", b("a3"), a2.mod_revision).await.unwrap();
    assert_eq!(a3.mod_revision, last.mod_revision + 1);
    assert_eq!(a3.create_revision, a2.create_revision);
    let mut rx = s.watch("/r/", c.mod_revision).await.unwrap();
    assert_eq!(next(&mut rx).await.kv, last);
    assert_eq!(next(&mut rx).await.kv, a3);

    // Compact away everything including the newest write (a delete), reopen:
    // the counter must still not go back.
    let d = s.delete("/r/c", None).await.unwrap();
    s.compact(d.mod_revision).await.unwrap();
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), d.mod_revision);
    assert_eq!(
        s.create("/r/new", b("n")).await.unwrap().mod_revision,
        d.mod_revision + 1
    );
}

const CRASH_DB_ENV: &str = "STORE_TEST_CRASH_CHILD_DB";

/// Child half of `sqlite_survives_kill_9`: a no-op unless the env var is set.
/// Writes as fast as it can and prints each acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_child() {
    let Ok(path) = std::env::var(CRASH_DB_ENV) else {
        return;
    };
    let s = Arc::new(SqliteStore::open(std::path::Path::new(&path)).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{t}/{i}");
                    let kv = s.create(&key, b(&key)).await.unwrap();
                    // Written straight to the fd, past the test harness capture.
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {}", kv.key, kv.mod_revision).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    // The parent kills us long before this; stop anyway if it does not.
    let _ = tokio::time::timeout(Duration::from_secs(60), futures_join(tasks)).await;
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn sqlite_survives_kill_9() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::sqlite_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Vec::new();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (key, rev) = rest.split_once(' ').unwrap();
        acks.push((key.to_string(), rev.parse::<i64>().unwrap()));
        if acks.len() == 400 && !killed {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    // Lines already in the pipe when the child died were acknowledged too.
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child should have died by SIGKILL"
    );
    assert!(acks.len() >= 400);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = SqliteStore::open(&path).unwrap();
        let max = acks.iter().map(|a| a.1).max().unwrap();
        assert!(s.current_revision().await.unwrap() >= max);
        for (key, rev) in &acks {
            let kv = s
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!(kv.mod_revision, *rev);
            assert_eq!(kv.value, b(key));
        }
        let next = s.create("/after-crash", b("x")).await.unwrap();
        assert!(next.mod_revision > max);
    });
}
