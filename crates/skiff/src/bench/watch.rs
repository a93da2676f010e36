//! The watch phase: many concurrent watches on the namespace's ConfigMaps,
//! then a stream of label updates; measures how fast and how completely
//! every update reaches every watcher.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::client::Client;
use super::events::{EventLines, Next};
use super::server::CpuUse;
use super::stats::{run_ops, Latency, Phase};
use super::CONFIGMAPS;

/// How long to wait, after the last update answered, for stragglers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize)]
pub struct WatchReport {
    pub watchers: usize,
    pub connections: usize,
    pub open_seconds: f64,
    pub open_errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_open_error: Option<String>,
    pub updates: Phase,
    pub expected_events: usize,
    pub delivered_events: usize,
    pub missing_events: usize,
    pub duplicate_events: usize,
    /// Events that were not MODIFIED events of our updates (ERROR, ADDED, other writers).
    pub other_events: usize,
    /// Watches the server closed (or that failed) before the phase ended.
    pub watches_ended_early: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_watch_error: Option<String>,
    pub events_per_sec: f64,
    /// From an update's response to a watcher receiving its event.
    pub delivery_latency: Latency,
    /// Events that arrived before their update's response did (counted as 0 ms).
    pub delivered_before_response: usize,
    /// From the last update's response to the last event received.
    pub drain_seconds: f64,
    /// Over the whole phase: opening, updates and draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
}

pub struct WatchParams<'a> {
    pub watchers: usize,
    pub per_connection: usize,
    pub updates: usize,
    pub concurrency: usize,
    pub resource_version: &'a str,
    pub names: &'a [String],
    pub prefix: &'a str,
}

/// What one watcher saw.
#[derive(Default)]
struct Seen {
    events: Vec<(String, Instant)>,
    other: usize,
    ended_early: bool,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: EventObject,
}

#[derive(Deserialize, Default)]
struct EventObject {
    #[serde(default)]
    metadata: Meta,
    /// Set on ERROR events (a Status).
    message: Option<String>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

pub async fn run(client: &Client, p: WatchParams<'_>) -> Result<WatchReport> {
    let nconn = p.watchers.div_ceil(p.per_connection.max(1)).max(1);
    let conns: Vec<Client> = futures::future::try_join_all((0..nconn).map(|_| client.reconnect()))
        .await
        .context("opening watch connections")?;
    let path = format!("{CONFIGMAPS}?watch=true&resourceVersion={}", p.resource_version);

    // A watch counts as open once its response headers arrived; since it starts
    // at a known resourceVersion, no update can slip in before that.
    let open_start = Instant::now();
    let opened = futures::future::join_all((0..p.watchers).map(|i| {
        let conn = &conns[i % nconn];
        let path = &path;
        async move {
            let resp = conn.request(Method::GET, path, &[], Bytes::new()).await?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.into_body().collect().await?.to_bytes();
                anyhow::bail!("watch: {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(resp.into_body())
        }
    }))
    .await;
    let open_seconds = open_start.elapsed().as_secs_f64();

    let received = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut tasks, mut open_errors) = (Vec::new(), Vec::new());
    for r in opened {
        match r {
            Ok(body) => {
                let (received, stop, prefix) = (received.clone(), stop_rx.clone(), p.prefix.to_string());
                tasks.push(tokio::spawn(follow(body, prefix, received, stop)));
            }
            Err(e) => open_errors.push(e),
        }
    }

    let write_start = Instant::now();
    // Updates: a merge patch of one label, with a fresh value each time so
    // every patch is a real change (and so an event).
    let (updates, writes) = run_ops("update", p.updates, p.concurrency, |i| {
        let name = &p.names[i % p.names.len()];
        let body = Bytes::from(serde_json::json!({"metadata": {"labels": {"bench-update": i.to_string()}}}).to_string());
        async move {
            let path = format!("{CONFIGMAPS}/{name}");
            let resp = client.fetch(Method::PATCH, &path, &[("content-type", "application/merge-patch+json")], body).await?;
            let answered = Instant::now();
            let obj: serde_json::Value = serde_json::from_slice(&resp)?;
            let rv = obj["metadata"]["resourceVersion"].as_str().context("patch response has no resourceVersion")?;
            Ok((rv.to_string(), answered))
        }
    })
    .await;
    let last_write = writes.iter().map(|w| w.1).max().unwrap_or_else(Instant::now);

    let expected_per_watcher = writes.len();
    let expected = expected_per_watcher * tasks.len();
    while received.load(Ordering::Relaxed) < expected && last_write.elapsed() < DRAIN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let mut seen = Vec::with_capacity(tasks.len());
    for t in tasks {
        seen.push(t.await?);
    }

    // Match events to updates by resourceVersion.
    let write_time: HashMap<&str, Instant> = writes.iter().map(|(rv, t)| (rv.as_str(), *t)).collect();
    let (mut samples, mut delivered, mut missing, mut dups, mut other, mut early, mut ended) = (Vec::new(), 0, 0, 0, 0, 0, 0);
    let mut last_event = last_write;
    let mut first_watch_error = None;
    for s in &seen {
        let mut got = HashSet::new();
        for (rv, t) in &s.events {
            let Some(w) = write_time.get(rv.as_str()) else {
                other += 1;
                continue;
            };
            if !got.insert(rv.as_str()) {
                dups += 1;
                continue;
            }
            delivered += 1;
            early += (*t < *w) as usize;
            samples.push(t.saturating_duration_since(*w));
            last_event = last_event.max(*t);
        }
        missing += expected_per_watcher - got.len();
        other += s.other;
        ended += s.ended_early as usize;
        if first_watch_error.is_none() {
            first_watch_error = s.error.clone();
        }
    }
    Ok(WatchReport {
        watchers: p.watchers,
        connections: nconn,
        open_seconds,
        open_errors: open_errors.len(),
        first_open_error: open_errors.first().map(|e| format!("{e:#}")),
        updates,
        expected_events: expected,
        delivered_events: delivered,
        missing_events: missing,
        duplicate_events: dups,
        other_events: other,
        watches_ended_early: ended,
        first_watch_error,
        events_per_sec: delivered as f64 / last_event.duration_since(write_start).as_secs_f64().max(1e-9),
        delivery_latency: Latency::of(samples),
        delivered_before_response: early,
        drain_seconds: last_event.duration_since(last_write).as_secs_f64(),
        cpu: None,
    })
}

/// Reads one watch stream until told to stop, noting when each of our
/// updates' events arrived (stamped when its frame arrived, before parsing).
async fn follow(body: Incoming, prefix: String, received: Arc<AtomicUsize>, mut stop: watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::default();
    let mut events = EventLines::new(body);
    loop {
        let (now, lines) = tokio::select! {
            n = events.next() => match n {
                Next::Lines(now, lines) => (now, lines),
                Next::End => {
                    seen.ended_early = true;
                    return seen;
                }
                Next::Failed(e) => {
                    seen.error = Some(e);
                    seen.ended_early = true;
                    return seen;
                }
            },
            _ = stop.wait_for(|s| *s) => return seen,
        };
        for line in lines {
            match serde_json::from_slice::<Event>(&line) {
                Ok(ev) if ev.kind == "MODIFIED" && ev.object.metadata.name.starts_with(&prefix) => {
                    seen.events.push((ev.object.metadata.resource_version, now));
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(ev) => {
                    if ev.kind == "ERROR" && seen.error.is_none() {
                        seen.error = Some(format!("ERROR event: {}", ev.object.message.unwrap_or_default()));
                    }
                    seen.other += 1;
                }
                Err(e) => {
                    seen.other += 1;
                    if seen.error.is_none() {
                        seen.error = Some(format!("unparsable event ({e}): {}", String::from_utf8_lossy(&line[..line.len().min(200)])));
                    }
                }
            }
        }
    }
}
