//! `skiff bench scheduler`: scheduler throughput. For each node count and
//! pod count it starts a fresh API server (no controllers, no agent, no
//! scheduler) and registers Ready nodes, then measures twice:
//! - backlog: the pods are created first, then `skiff scheduler` starts as
//!   its own process; pods/s from its start (lists and leader election
//!   included) to the last binding seen in a pod watch;
//! - stream: with that scheduler running, as many pods again are created
//!   (`--concurrency` creates in flight); each is timed from its create
//!   request to its binding in the watch, and pods/s is from the first
//!   create to the last binding.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::events::{EventLines, Next};
use super::server::{self, LocalServer, Memory};
use super::client::Client;
use super::stats::{run_ops, Latency, Phase};

const PODS: &str = "/api/v1/namespaces/default/pods";
/// How long every pod may take to be bound before the run is given up.
const BIND_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// Node counts to measure at (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    nodes: Vec<usize>,
    /// Pod counts to schedule at each node count (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pods: Vec<usize>,
    /// Pod creations in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Run {
    nodes: usize,
    pods: usize,
    /// Pods created per second (API server only, before the scheduler starts).
    created_per_sec: f64,
    /// Pods bound per second, from the scheduler's start to the last binding.
    scheduled_per_sec: f64,
    seconds: f64,
    /// From the scheduler's start to the first binding.
    first_bound_seconds: f64,
    /// Bindings per second once the first one was seen.
    steady_per_sec: f64,
    /// Pods created while the scheduler runs, per second from the first create to the last binding.
    stream_per_sec: f64,
    /// Create request to binding seen in the watch, for those pods.
    stream_latency: Latency,
    server_memory: Option<Memory>,
}

pub async fn run(args: SchedulerArgs) -> Result<()> {
    let mut runs = Vec::new();
    for &nodes in &args.nodes {
        for &pods in &args.pods {
            let r = one_run(nodes, pods, args.concurrency).await.with_context(|| format!("{nodes} nodes, {pods} pods"))?;
            let line = format!(
                "scheduler  {:>5} nodes {:>6} pods: backlog {:>5.0} pods/s bound ({:.1}s; first after {:.2}s, then {:.0}/s; created {:.0}/s before); \
                 stream {:>5.0} pods/s create->bound, {}; server RSS {}",
                r.nodes,
                r.pods,
                r.scheduled_per_sec,
                r.seconds,
                r.first_bound_seconds,
                r.steady_per_sec,
                r.created_per_sec,
                r.stream_per_sec,
                r.stream_latency.text(),
                r.server_memory.map_or("?".into(), |m| format!("{:.0} MiB", m.rss_kb as f64 / 1024.0)),
            );
            if args.json { eprintln!("{line}") } else { println!("{line}") }
            runs.push(r);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    Ok(())
}

async fn one_run(nodes: usize, pods: usize, concurrency: usize) -> Result<Run> {
    let mut server = LocalServer::start(&["--disable-agent", "--disable-controllers", "--disable-scheduler"])?;
    let (_, client) = server.wait_ready().await?;
    // Room for every pod of both phases whatever the spread: pods per node and cpu/memory.
    let per_node = (4 * pods.div_ceil(nodes)).max(110);
    let (p, _) = run_ops("nodes", nodes, concurrency, |i| {
        let body = node(&format!("bench-node-{i:05}"), per_node);
        let client = &client;
        async move { client.fetch(Method::POST, "/api/v1/nodes", &[("content-type", "application/json")], body).await.map(drop) }
    })
    .await;
    if p.errors > 0 {
        bail!("creating nodes: {}", p.first_error.unwrap_or_default());
    }

    // Backlog.
    let (created, _) = create_pods(&client, "backlog", pods, concurrency).await?;
    let follower = tokio::spawn(bound_times(watch_pods(&client).await?, "backlog-", pods));
    let start = Instant::now();
    let scheduler = Scheduler::start(&server.kubeconfig)?;
    let bound = tokio::time::timeout(BIND_TIMEOUT, follower).await.context("waiting for every backlog pod to be bound")???;
    let first = bound.values().min().copied().unwrap_or(start);
    let last = bound.values().max().copied().unwrap_or(start);

    // Stream.
    let follower = tokio::spawn(bound_times(watch_pods(&client).await?, "stream-", pods));
    let stream_start = Instant::now();
    let (_, sent) = create_pods(&client, "stream", pods, concurrency).await?;
    let stream_bound = tokio::time::timeout(BIND_TIMEOUT, follower).await.context("waiting for every stream pod to be bound")???;
    drop(scheduler);
    let stream_last = stream_bound.values().max().copied().unwrap_or(stream_start);
    let latencies = sent.into_iter().filter_map(|(name, at)| stream_bound.get(&name).map(|b| b.saturating_duration_since(at))).collect();

    let run = Run {
        nodes,
        pods,
        created_per_sec: created.ops_per_sec,
        scheduled_per_sec: bound.len() as f64 / last.duration_since(start).as_secs_f64().max(1e-9),
        seconds: last.duration_since(start).as_secs_f64(),
        first_bound_seconds: first.duration_since(start).as_secs_f64(),
        steady_per_sec: bound.len() as f64 / last.duration_since(first).as_secs_f64().max(1e-9),
        stream_per_sec: stream_bound.len() as f64 / stream_last.duration_since(stream_start).as_secs_f64().max(1e-9),
        stream_latency: Latency::of(latencies),
        server_memory: server::memory(server.pid).ok(),
    };
    drop(client);
    server.stop()?;
    Ok(run)
}

/// `skiff scheduler` as its own process, killed when dropped.
struct Scheduler(std::process::Child);

impl Scheduler {
    fn start(kubeconfig: &std::path::Path) -> Result<Scheduler> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("scheduler")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting skiff scheduler")?;
        Ok(Scheduler(child))
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates `<prefix>-pod-NNNNNN` pods; returns each one's name and when its create request started.
async fn create_pods(client: &Client, prefix: &str, pods: usize, concurrency: usize) -> Result<(Phase, Vec<(String, Instant)>)> {
    let (created, sent) = run_ops(prefix, pods, concurrency, |i| async move {
        let name = format!("{prefix}-pod-{i:06}");
        let at = Instant::now();
        client.fetch(Method::POST, PODS, &[("content-type", "application/json")], pod(&name)).await?;
        Ok((name, at))
    })
    .await;
    if created.errors > 0 {
        bail!("creating pods: {}", created.first_error.clone().unwrap_or_default());
    }
    Ok((created, sent))
}

/// A pod watch from now on.
async fn watch_pods(client: &Client) -> Result<EventLines> {
    let rv: ListHead = client.get_as(&format!("{PODS}?limit=1"), &[]).await?;
    let watch = client
        .request(Method::GET, &format!("{PODS}?watch=1&resourceVersion={}", rv.metadata.resource_version), &[], Bytes::new())
        .await?;
    anyhow::ensure!(watch.status().is_success(), "pod watch answered {}", watch.status());
    Ok(EventLines::new(watch.into_body()))
}

/// Follows the pod watch until `want` pods named `prefix...` have a node,
/// returning when each was first seen bound.
async fn bound_times(mut events: EventLines, prefix: &'static str, want: usize) -> Result<HashMap<String, Instant>> {
    let mut bound = HashMap::with_capacity(want);
    while bound.len() < want {
        match events.next().await {
            Next::Lines(at, lines) => {
                for line in lines {
                    let ev: PodEvent = serde_json::from_slice(&line).context("parsing a pod watch event")?;
                    if ev.kind == "ERROR" {
                        bail!("pod watch failed: {}", String::from_utf8_lossy(&line));
                    }
                    if !ev.object.spec.node_name.is_empty() && ev.object.metadata.name.starts_with(prefix) {
                        bound.entry(ev.object.metadata.name).or_insert(at);
                    }
                }
            }
            Next::End => bail!("the server ended the pod watch with {}/{want} pods bound", bound.len()),
            Next::Failed(e) => bail!(e),
        }
    }
    Ok(bound)
}

#[derive(Deserialize)]
struct ListHead {
    metadata: Meta,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

#[derive(Deserialize)]
struct PodEvent {
    #[serde(rename = "type")]
    kind: String,
    object: PodHead,
}

#[derive(Deserialize)]
struct PodHead {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: PodSpecHead,
}

#[derive(Deserialize, Default)]
struct PodSpecHead {
    #[serde(default, rename = "nodeName")]
    node_name: String,
}

/// A Ready node with room for `pods` pods.
pub fn node(name: &str, pods: usize) -> Bytes {
    let capacity = serde_json::json!({"cpu": "64", "memory": "512Gi", "pods": pods.to_string(), "ephemeral-storage": "100Gi"});
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
        },
    });
    Bytes::from(v.to_string())
}

/// A small pod with cpu and memory requests, as scheduler perf tests use.
fn pod(name: &str) -> Bytes {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    });
    Bytes::from(v.to_string())
}
