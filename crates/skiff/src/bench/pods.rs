//! `skiff bench pods`: pod startup latency on the real node agent. Starts a
//! server with its agent under host names of its own (node, bridge, nft
//! table, pod range), imports a busybox image built from /bin/busybox,
//! creates N pods and times each from its create request to the watch event
//! that shows it Ready; then measures memory, deletes the pods, stops the
//! server and removes whatever it left on the host.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::client::Client;
use super::events::{EventLines, Next};
use super::heads::{ConditionsHead, List};
use super::host_state::{self, HostNames, SandboxTrace};
use super::server::{self, LocalServer, Memory};
use super::stats::Latency;

const PODS: &str = "/api/v1/namespaces/default/pods";
const IMAGE: &str = "skiff-bench/busybox:latest";
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
/// Every pod Ready (or gone, when deleting) within this, else the run fails.
const PODS_TIMEOUT: Duration = Duration::from_secs(300);
/// `sleep` as a container's PID 1 ignores SIGTERM, so deletion waits out
/// the grace period: 2 s, the least the agent grants (as upstream's kubelet).
const DELETE_GRACE_SECONDS: u32 = 2;

#[derive(clap::Args)]
pub struct PodsArgs {
    /// Pods to create (the node takes at most 110).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Pods in flight: each is created and awaited until Ready (later
    /// deleted and awaited until gone) before the next one begins; set it
    /// to --pods to create them all at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Copy the server's log (with the agent's, e.g. under SKIFF_LOG=debug) here at the end.
    #[arg(long)]
    server_log: Option<std::path::PathBuf>,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    pods: usize,
    concurrency: usize,
    node_ready_seconds: f64,
    /// Create request start to the first watch event with the pod Ready.
    startup: Latency,
    /// From the first create request to the last pod Ready (with
    /// --concurrency pods in flight).
    startup_seconds: f64,
    pods_per_sec: f64,
    memory: PodMemory,
    /// Delete request start to the watch's DELETED event.
    deletion: Latency,
    deletion_seconds: f64,
    /// What was still on the host after cleanup (empty when nothing).
    leftovers: Vec<String>,
}

#[derive(Serialize, Default)]
struct PodMemory {
    server_before: Option<Memory>,
    server_with_pods: Option<Memory>,
    shims: usize,
    shim_rss_kb: u64,
    /// The shims' proportional share (their common binary pages counted once).
    shim_pss_kb: u64,
    /// (server RSS growth + shim PSS) / pods.
    per_pod_kb: u64,
}

pub async fn run(args: PodsArgs) -> Result<()> {
    anyhow::ensure!(args.pods > 0, "--pods must be at least 1");
    let names = HostNames::for_this_process()?;
    let flags = names.server_flags();
    let mut server = LocalServer::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())?;
    eprintln!("starting skiff server with its node agent (node {}, bridge {}, log {})...", names.node, names.bridge, server.log.display());
    let mut trace = Trace::default();
    let result = match server.wait_ready().await {
        Ok((_, client)) => measure(&args, &names, &client, &server, &mut trace).await,
        Err(e) => Err(e),
    };
    // Stop the server and clean the host whatever happened above.
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    if let Some(path) = &args.server_log {
        if let Err(e) = std::fs::write(path, &log) {
            eprintln!("writing {}: {e}", path.display());
        }
    }
    let data_dir = server.data_dir.clone();
    let dir = server.stop_keeping_dir()?;
    let leftovers = host_state::remove(&data_dir, &names, trace.pod_cidr.as_deref(), &trace.sandboxes).await;
    drop(dir);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let tail: Vec<&str> = log.lines().collect();
            eprintln!("server log (last lines):\n{}", tail[tail.len().saturating_sub(40)..].join("\n"));
            for l in &leftovers {
                eprintln!("left on the host: {l}");
            }
            return Err(e);
        }
    };
    report.leftovers = leftovers;
    let text = report_text(&report);
    super::print_report(&text, &report, args.json)
}

/// What cleanup needs to know of the run, gathered as it goes.
#[derive(Default)]
struct Trace {
    pod_cidr: Option<String>,
    sandboxes: Vec<SandboxTrace>,
}

async fn measure(args: &PodsArgs, names: &HostNames, client: &Client, server: &LocalServer, trace: &mut Trace) -> Result<Report> {
    let t = Instant::now();
    let pod_cidr = wait_node_ready(client, &names.node).await?;
    trace.pod_cidr = Some(pod_cidr.clone());
    let node_ready_seconds = t.elapsed().as_secs_f64();
    eprintln!("node {} Ready in {node_ready_seconds:.2}s (podCIDR {pod_cidr})", names.node);
    import_image(&server.data_dir).await?;
    let server_before = server::memory(server.pid).ok();

    let result = startup_and_deletion(args, client, server, trace).await;
    let (startup, startup_seconds, mut memory, deletion, deletion_seconds) = match result {
        Ok(r) => r,
        Err(e) => {
            // Leave no pod behind for the agent to be stopped with.
            let _ = delete_all(client, args.concurrency).await;
            return Err(e);
        }
    };
    memory.server_before = server_before;
    let growth = memory.server_with_pods.zip(server_before).map_or(0, |(a, b)| a.rss_kb.saturating_sub(b.rss_kb));
    memory.per_pod_kb = (growth + memory.shim_pss_kb) / args.pods as u64;
    let report = Report {
        pods: args.pods,
        concurrency: args.concurrency,
        node_ready_seconds,
        startup,
        startup_seconds,
        pods_per_sec: args.pods as f64 / startup_seconds.max(1e-9),
        memory,
        deletion,
        deletion_seconds,
        leftovers: Vec::new(),
    };
    Ok(report)
}

async fn startup_and_deletion(args: &PodsArgs, client: &Client, server: &LocalServer, trace: &mut Trace) -> Result<(Latency, f64, PodMemory, Latency, f64)> {
    let sightings = &open_watch(client).await?;
    let (startup, startup_seconds) = for_each_pod(args, |i| async move {
        let name = pod_name(i);
        let ready = sightings.expect(Seen::Ready, &name)?;
        let t = Instant::now();
        client.fetch(Method::POST, PODS, &[("content-type", "application/json")], pod(&name)).await?;
        Ok((t, sightings.wait(ready, "Ready").await?))
    })
    .await?;

    let shims = host_state::shims(&server.data_dir);
    let memory = PodMemory {
        server_with_pods: server::memory(server.pid).ok(),
        shims: shims.len(),
        shim_rss_kb: shims.iter().map(|s| s.rss_kb).sum(),
        shim_pss_kb: shims.iter().map(|s| s.pss_kb).sum(),
        ..Default::default()
    };
    trace.sandboxes = host_state::sandboxes(&server.data_dir).await.context("listing the agent's sandboxes")?;

    let (deletion, deletion_seconds) = for_each_pod(args, |i| async move {
        let name = pod_name(i);
        let gone = sightings.expect(Seen::Deleted, &name)?;
        let t = Instant::now();
        delete_pod(client, &name).await?;
        Ok((t, sightings.wait(gone, "deleted").await?))
    })
    .await?;
    Ok((startup, startup_seconds, memory, deletion, deletion_seconds))
}

fn pod_name(i: usize) -> String {
    format!("bench-{i:04}")
}

/// Runs `op(i)` for every pod with --concurrency in flight. Each op returns
/// when it began and when the watch showed it done; the result is their
/// latency and the seconds from the first start to the last done.
async fn for_each_pod<F, Fut>(args: &PodsArgs, op: F) -> Result<(Latency, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Instant, Instant)>>,
{
    let begin = Instant::now();
    let results: Vec<Result<(Instant, Instant)>> = stream::iter(0..args.pods)
        .map(|i| {
            let fut = op(i);
            async move { fut.await.with_context(|| format!("pod {}", pod_name(i))) }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let times = results.into_iter().collect::<Result<Vec<_>>>()?;
    let last = times.iter().map(|(_, done)| *done).max().unwrap_or(begin);
    let latency = Latency::of(times.iter().map(|(start, done)| done.saturating_duration_since(*start)).collect());
    Ok((latency, last.duration_since(begin).as_secs_f64()))
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    Ready,
    Deleted,
}

/// Who waits for which sighting on the pod watch, or why the watch failed.
#[derive(Default)]
struct Waiters {
    waiting: HashMap<(Seen, String), oneshot::Sender<Instant>>,
    failed: Option<String>,
}

#[derive(Clone, Default)]
struct Sightings(Arc<Mutex<Waiters>>);

impl Sightings {
    /// Registers interest before the request, so an early event is not missed.
    fn expect(&self, seen: Seen, name: &str) -> Result<oneshot::Receiver<Instant>> {
        let mut w = self.0.lock().unwrap();
        if let Some(e) = &w.failed {
            bail!("{e}");
        }
        let (tx, rx) = oneshot::channel();
        w.waiting.insert((seen, name.to_string()), tx);
        Ok(rx)
    }

    fn saw(&self, seen: Seen, name: String, at: Instant) {
        if let Some(tx) = self.0.lock().unwrap().waiting.remove(&(seen, name)) {
            let _ = tx.send(at);
        }
    }

    fn fail(&self, why: String) {
        let mut w = self.0.lock().unwrap();
        w.failed = Some(why);
        w.waiting.clear();
    }

    async fn wait(&self, rx: oneshot::Receiver<Instant>, what: &str) -> Result<Instant> {
        match tokio::time::timeout(PODS_TIMEOUT, rx).await {
            Ok(Ok(at)) => Ok(at),
            Ok(Err(_)) => bail!("not seen {what}: {}", self.0.lock().unwrap().failed.clone().unwrap_or_default()),
            Err(_) => bail!("not {what} after {PODS_TIMEOUT:?}"),
        }
    }
}

/// A watch of the namespace's pods from now on; Ready and Deleted
/// sightings, stamped with the time their bytes arrived, go to the waiters.
async fn open_watch(client: &Client) -> Result<Sightings> {
    let list: ListHead = client.get_as(&format!("{PODS}?limit=1"), &[]).await?;
    let path = format!("{PODS}?watch=1&timeoutSeconds=3600&resourceVersion={}", list.metadata.resource_version);
    let resp = client.request(Method::GET, &path, &[], Bytes::new()).await?;
    anyhow::ensure!(resp.status().is_success(), "pod watch answered {}", resp.status());
    let mut lines = EventLines::new(resp.into_body());
    let sightings = Sightings::default();
    let s = sightings.clone();
    tokio::spawn(async move {
        loop {
            let (at, batch) = match lines.next().await {
                Next::Lines(at, batch) => (at, batch),
                Next::End => return s.fail("the server ended the pod watch".into()),
                Next::Failed(e) => return s.fail(e),
            };
            for line in batch {
                let sighting = serde_json::from_slice::<PodEvent>(&line).context("parsing a pod watch event").and_then(|ev| ev.sighting());
                match sighting {
                    Ok(Some((seen, name))) => s.saw(seen, name, at),
                    Ok(None) => {}
                    Err(e) => return s.fail(format!("{e:#}")),
                }
            }
        }
    });
    Ok(sightings)
}

async fn delete_pod(client: &Client, name: &str) -> Result<()> {
    let body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": DELETE_GRACE_SECONDS});
    client.fetch(Method::DELETE, &format!("{PODS}/{name}"), &[("content-type", "application/json")], Bytes::from(body.to_string())).await.map(drop)
}

/// Best effort on a failed run: delete every pod and give the agent a moment.
async fn delete_all(client: &Client, concurrency: usize) -> Result<()> {
    let list: List<PodHead> = client.get_as(PODS, &[]).await?;
    stream::iter(list.items)
        .for_each_concurrent(concurrency.max(1), |p| async move {
            let _ = delete_pod(client, &p.metadata.name).await;
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let left: List<PodHead> = client.get_as(PODS, &[]).await?;
        if left.items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Waits for the node's Ready condition; returns its podCIDR.
async fn wait_node_ready(client: &Client, node: &str) -> Result<String> {
    let start = Instant::now();
    let mut last = String::from("not registered yet");
    while start.elapsed() < NODE_TIMEOUT {
        match client.get_as::<PodHead>(&format!("/api/v1/nodes/{node}"), &[]).await {
            Ok(n) if n.ready() => return Ok(n.spec.pod_cidr),
            Ok(_) => last = "registered, not Ready".into(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("node {node} not Ready after {NODE_TIMEOUT:?} ({last})")
}

/// Puts a busybox image, built from the host's /bin/busybox, into the
/// agent's image store (which locks itself, so the running agent is fine).
async fn import_image(data_dir: &Path) -> Result<()> {
    let tar = tempfile::NamedTempFile::new()?;
    let layer = tokio::task::spawn_blocking(runtime::images::testimage::busybox_layer_tar).await?;
    std::fs::write(tar.path(), runtime::images::testimage::docker_save_tar(IMAGE, &layer))?;
    let store = runtime::images::Store::open(data_dir.join("agent").join("images"), vec![]).context("opening the agent's image store")?;
    store.import(tar.path()).await.context("importing the busybox image")?;
    Ok(())
}

/// A pod as a user would create it: scheduled by the server's scheduler,
/// no probes (Ready once its container runs), the imported image.
fn pod(name: &str) -> Bytes {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "skiff-bench"}},
        "spec": {
            "containers": [{"name": "sleep", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
        },
    });
    Bytes::from(v.to_string())
}

fn report_text(r: &Report) -> String {
    let mib = |kb: u64| kb as f64 / 1024.0;
    let rss = |m: Option<Memory>| m.map_or("?".into(), |m| format!("{:.1} MiB", mib(m.rss_kb)));
    let mut s = format!(
        "pods       {} pods, {} in flight; node Ready in {:.2}s\n\
         pods       startup (create -> Ready)  {}\n\
         pods       all Ready in {:.2}s ({:.1} pods/s)\n\
         pods       memory: server RSS {} before, {} with pods; {} shims RSS {:.1} MiB, PSS {:.1} MiB; {:.0} KiB per pod\n\
         pods       deletion (delete -> gone, grace {}s)  {}\n\
         pods       all gone in {:.2}s",
        r.pods,
        r.concurrency,
        r.node_ready_seconds,
        r.startup.text(),
        r.startup_seconds,
        r.pods_per_sec,
        rss(r.memory.server_before),
        rss(r.memory.server_with_pods),
        r.memory.shims,
        mib(r.memory.shim_rss_kb),
        mib(r.memory.shim_pss_kb),
        r.memory.per_pod_kb as f64,
        DELETE_GRACE_SECONDS,
        r.deletion.text(),
        r.deletion_seconds,
    );
    if r.leftovers.is_empty() {
        s += "\npods       host clean after the run";
    }
    for l in &r.leftovers {
        s += &format!("\npods       LEFT ON THE HOST: {l}");
    }
    s
}

#[derive(Deserialize)]
struct ListHead {
    metadata: ListMeta,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

/// What the benchmark reads of a pod or a node.
#[derive(Deserialize, Default)]
struct PodHead {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: SpecHead,
    #[serde(default)]
    status: ConditionsHead,
}

impl PodHead {
    fn ready(&self) -> bool {
        self.status.ready()
    }
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct SpecHead {
    #[serde(default, rename = "podCIDR")]
    pod_cidr: String,
}


#[derive(Deserialize)]
struct PodEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: serde_json::Value,
}

impl PodEvent {
    fn sighting(self) -> Result<Option<(Seen, String)>> {
        if self.kind == "ERROR" {
            bail!("pod watch failed: {}", self.object);
        }
        let pod: PodHead = serde_json::from_value(self.object).context("a pod in the watch")?;
        Ok(match self.kind.as_str() {
            "DELETED" => Some((Seen::Deleted, pod.metadata.name)),
            _ if pod.ready() => Some((Seen::Ready, pod.metadata.name)),
            _ => None,
        })
    }
}
