//! `skiff bench`: API server benchmarks. Starts a `skiff server` child (or
//! uses a running one), then measures ConfigMap create/get/list/watch
//! throughput and latency and the server's memory. It reports numbers; it
//! does not pass or fail.

mod client;
mod cluster;
mod daemonset;
mod dns;
mod events;
mod heads;
mod job;
mod host_state;
mod pods;
mod proxy;
mod scheduler;
mod server;
mod stats;
mod watch;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use hyper::Method;
use rand::Rng;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use client::{Client, Kubeconfig};
use server::{CpuClock, LocalServer, Memory};
use stats::{run_ops, Phase};
use watch::{WatchParams, WatchReport};

pub(crate) const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const PAGE_SIZE: usize = 500;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Without a subcommand: the API server benchmark (the flags below).
    #[command(subcommand)]
    scenario: Option<Scenario>,
    /// ConfigMaps to create (and then GET).
    #[arg(long, default_value_t = 10000)]
    objects: usize,
    /// Requests in flight during the create, get and update phases.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Full lists of the namespace, one at a time (each as JSON and as Table).
    #[arg(long, default_value_t = 20)]
    lists: usize,
    /// Concurrent watches on the namespace's ConfigMaps.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Watches per HTTP/2 connection: 1 acts like many separate clients,
    /// more like one client-go process multiplexing its informers. The
    /// updates always use a connection of their own.
    #[arg(long, default_value_t = 1)]
    watches_per_connection: usize,
    /// Updates made while the watches are open.
    #[arg(long, default_value_t = 1000)]
    watch_updates: usize,
    /// Deployments created, then changed, by server-side apply (0 skips the phase).
    #[arg(long, default_value_t = 1000)]
    applies: usize,
    /// Benchmark an already-running server through this kubeconfig instead of starting one.
    #[arg(long)]
    server_kubeconfig: Option<PathBuf>,
    /// With --server-kubeconfig: the server's PID, so its memory can be reported.
    #[arg(long, requires = "server_kubeconfig")]
    server_pid: Option<u32>,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Scenario {
    /// Scheduler throughput: pods bound per second at several node and pod counts.
    Scheduler(scheduler::SchedulerArgs),
    /// Control plane at scale with simulated nodes: Deployment availability and memory.
    Cluster(cluster::ClusterArgs),
    /// A DaemonSet rollout over simulated nodes: time until every node runs an updated, available pod.
    Daemonset(daemonset::DaemonSetArgs),
    /// Job controller at scale with simulated nodes: a 1,000-completion Job, parallelism 100, to Complete.
    Job(job::JobArgs),
    /// Pod startup latency on this host's real node agent (needs root).
    Pods(pods::PodsArgs),
    /// Cluster DNS: queries/s, latency and memory with 10,000 Services.
    Dns(dns::DnsArgs),
    /// Service proxy: nftables programming of 10,000 Services, single changes, a re-sync under load (needs root).
    Proxy(proxy::ProxyArgs),
}

#[derive(Serialize)]
struct Report {
    server: String,
    objects: usize,
    concurrency: usize,
    phases: Vec<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch: Option<WatchReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_after_create: Option<Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_at_end: Option<Memory>,
}

/// Where the readable report goes: stdout, or stderr when stdout carries JSON.
struct Out {
    json: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.scenario {
        Some(Scenario::Scheduler(a)) => return scheduler::run(a).await,
        Some(Scenario::Cluster(a)) => return cluster::run(a).await,
        Some(Scenario::Daemonset(a)) => return daemonset::run(a).await,
        Some(Scenario::Job(a)) => return job::run(a).await,
        Some(Scenario::Pods(a)) => return pods::run(a).await,
        Some(Scenario::Dns(a)) => return dns::run(a).await,
        Some(Scenario::Proxy(a)) => return proxy::run(a).await,
        None => {}
    }
    let out = Out { json: args.json };
    let mut local = None;
    let (kc, client, pid) = match &args.server_kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::load(path)?;
            let client = Client::connect(&kc).await?;
            let status = client.status("/readyz").await?;
            anyhow::ensure!(status == 200, "{}: /readyz answered {status}", kc.server);
            (kc, client, args.server_pid)
        }
        None => {
            eprintln!("starting skiff server...");
            // The API server alone: controllers reacting to the benchmark's objects would skew it.
            let mut s = LocalServer::start(&["--disable-agent", "--disable-controllers", "--disable-scheduler"])?;
            let t = Instant::now();
            let (kc, client) = s.wait_ready().await?;
            eprintln!("server ready in {:.2}s (pid {})", t.elapsed().as_secs_f64(), s.pid);
            let pid = s.pid;
            local = Some(s);
            (kc, client, Some(pid))
        }
    };
    let result = phases(&args, &out, &kc, &client, pid).await;
    // Stop the child even when a phase failed; the temp dir goes with it.
    drop(client);
    if let Some(s) = local {
        s.stop()?;
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn phases(args: &BenchArgs, out: &Out, kc: &Kubeconfig, client: &Client, pid: Option<u32>) -> Result<Report> {
    let mut report = Report {
        server: kc.server.clone(),
        objects: args.objects,
        concurrency: args.concurrency,
        phases: Vec::new(),
        watch: None,
        memory_after_create: None,
        memory_at_end: None,
    };
    out.line(&format!(
        "skiff bench: {} (pid {}), {} objects, concurrency {}, {} lists, {} watchers x {} updates",
        kc.server,
        pid.map_or("unknown".into(), |p| p.to_string()),
        args.objects,
        args.concurrency,
        args.lists,
        args.watchers,
        args.watch_updates
    ));
    let mut clock = CpuClock::new(pid);
    let record = |report: &mut Report, clock: &mut CpuClock, mut p: Phase| {
        p.cpu = Some(clock.lap());
        out.line(&p.text());
        report.phases.push(p);
    };

    // 1. create. A per-run prefix keeps runs against a shared server apart.
    let run_id = format!("{:06x}", rand::thread_rng().gen::<u32>() & 0xff_ffff);
    let prefix = format!("bench-{run_id}-");
    let (p, names) = run_ops("create", args.objects, args.concurrency, |i| {
        let name = format!("{prefix}{i:06}");
        let body = configmap(&name, &run_id, i);
        async move {
            client.fetch(Method::POST, CONFIGMAPS, &[("content-type", "application/json")], body).await?;
            Ok(name)
        }
    })
    .await;
    record(&mut report, &mut clock, p);
    anyhow::ensure!(!names.is_empty(), "no ConfigMap could be created; stopping");
    report.memory_after_create = pid.and_then(|p| server::memory(p).ok());
    if let Some(m) = report.memory_after_create {
        out.line(&memory_text("after create", m));
    }

    // 2. get, of random created objects.
    let picks: Vec<usize> = {
        let mut rng = rand::thread_rng();
        (0..args.objects).map(|_| rng.gen_range(0..names.len())).collect()
    };
    clock.lap();
    let (p, _) = run_ops("get", args.objects, args.concurrency, |i| {
        let path = format!("{CONFIGMAPS}/{}", names[picks[i]]);
        async move { client.fetch(Method::GET, &path, &[], Bytes::new()).await.map(drop) }
    })
    .await;
    record(&mut report, &mut clock, p);

    // 3. full lists, one at a time: as JSON, then as a Table (what kubectl get asks for).
    clock.lap();
    let (p, lists) = run_ops("list", args.lists, 1, |_| async {
        let list: ListBody = client.get_as(CONFIGMAPS, &[]).await?;
        Ok((count(&list.items), list.metadata.resource_version))
    })
    .await;
    let list_rv = lists.last().map(|l| l.1.clone()).unwrap_or_default();
    record(&mut report, &mut clock, with_items(p, lists.iter().map(|l| l.0).sum()));
    clock.lap();
    let (p, rows) = run_ops("list (table)", args.lists, 1, |_| async {
        let t: TableBody = client.get_as(CONFIGMAPS, &[("accept", TABLE)]).await?;
        anyhow::ensure!(t.kind == "Table", "asked for a Table, got kind {:?}", t.kind);
        Ok(count(&t.rows))
    })
    .await;
    record(&mut report, &mut clock, with_items(p, rows.iter().sum()));

    // 4. paginated list of the whole namespace; each page is one op.
    clock.lap();
    let (p, items) = paginated_list(client).await;
    let pages = p.count;
    let secs = p.seconds;
    record(&mut report, &mut clock, p);
    out.line(&format!("{:<14} whole namespace ({items} items) in {pages} pages of {PAGE_SIZE}: {secs:.3}s", ""));

    // 5. watch.
    if args.watchers > 0 && args.watch_updates > 0 {
        anyhow::ensure!(!list_rv.is_empty(), "no list succeeded, so there is no resourceVersion to watch from");
        clock.lap();
        let mut w = watch::run(
            client,
            WatchParams {
                watchers: args.watchers,
                per_connection: args.watches_per_connection,
                updates: args.watch_updates,
                concurrency: args.concurrency,
                resource_version: &list_rv,
                names: &names,
                prefix: &prefix,
            },
        )
        .await?;
        w.cpu = Some(clock.lap());
        watch_text(out, &w);
        report.watch = Some(w);
    }

    // 6. server-side apply: create N Deployments, then apply a changed image to each.
    if args.applies > 0 {
        for (phase, image) in [("apply (create)", "localhost:5000/web:v1"), ("apply (change)", "localhost:5000/web:v2")] {
            clock.lap();
            let (p, _) = run_ops(phase, args.applies, args.concurrency, |i| {
                let name = format!("{prefix}{i:06}");
                let path = format!("{DEPLOYMENTS}/{name}?fieldManager=skiff-bench&force=true");
                let body = deployment(&name, &run_id, image);
                async move {
                    client.fetch(Method::PATCH, &path, &[("content-type", "application/apply-patch+yaml")], body).await.map(drop)
                }
            })
            .await;
            record(&mut report, &mut clock, p);
        }
    }

    // 7. memory at the end.
    report.memory_at_end = pid.and_then(|p| server::memory(p).ok());
    if let Some(m) = report.memory_at_end {
        out.line(&memory_text("at end", m));
    }
    if args.server_kubeconfig.is_some() {
        out.line(&format!("(objects left in namespace default; remove with: kubectl delete configmaps,deployments -l skiff-bench={run_id})"));
    }
    Ok(report)
}

// Just what the phases read from lists: skipping the items' contents keeps
// client-side parsing out of the measured latency as far as possible.
#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
    #[serde(default, rename = "continue")]
    continue_token: String,
}

#[derive(Deserialize)]
struct TableBody {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rows: Option<Vec<IgnoredAny>>,
}

/// Length of a JSON array that may also be null or absent.
fn count(v: &Option<Vec<IgnoredAny>>) -> usize {
    v.as_ref().map_or(0, Vec::len)
}

/// A ConfigMap with five small data keys, labelled with the run id.
fn configmap(name: &str, run_id: &str, i: usize) -> Bytes {
    let data: serde_json::Map<String, serde_json::Value> =
        (0..5).map(|k| (format!("key-{k}"), format!("value {k} of object {i}, some padding text").into())).collect();
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"skiff-bench": run_id}},
        "data": data,
    });
    Bytes::from(v.to_string())
}

fn deployment(name: &str, run_id: &str, image: &str) -> Bytes {
    let v = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"skiff-bench": run_id}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}],
                    "env": [{"name": "MODE", "value": "bench"}]}]},
            },
        },
    });
    Bytes::from(v.to_string())
}

fn with_items(mut p: Phase, items: usize) -> Phase {
    p.items_per_sec = Some(items as f64 / p.seconds.max(1e-9));
    p
}

async fn paginated_list(client: &Client) -> (Phase, usize) {
    let (start, mut samples, mut errors, mut items) = (Instant::now(), Vec::new(), Vec::new(), 0);
    let mut cont = String::new();
    loop {
        let mut path = format!("{CONFIGMAPS}?limit={PAGE_SIZE}");
        if !cont.is_empty() {
            path += &format!("&continue={}", encode_query(&cont));
        }
        let t = Instant::now();
        let page: ListBody = match client.get_as(&path, &[]).await {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                break;
            }
        };
        samples.push(t.elapsed());
        items += count(&page.items);
        cont = page.metadata.continue_token;
        // Guard against a server that never stops handing out tokens.
        if cont.is_empty() || samples.len() > 100_000 {
            break;
        }
    }
    (with_items(Phase::new("list (paged)", samples, errors, start.elapsed()), items), items)
}

/// Continue tokens are opaque (often base64 with `=`, `+`, `/`): escape them.
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn watch_text(out: &Out, w: &WatchReport) {
    out.line(&format!(
        "{:<14} {} watches opened in {:.3}s over {} connection(s){}",
        "watch",
        w.watchers - w.open_errors,
        w.open_seconds,
        w.connections,
        match &w.first_open_error {
            Some(e) => format!("; {} failed, first: {e}", w.open_errors),
            None => String::new(),
        }
    ));
    out.line(&w.updates.text());
    out.line(&format!(
        "{:<14} {}/{} events delivered, {:.0} events/s, drained {:.3}s after the last update; missing {}, duplicates {}, other {}, watches ended early {}",
        "watch events",
        w.delivered_events,
        w.expected_events,
        w.events_per_sec,
        w.drain_seconds,
        w.missing_events,
        w.duplicate_events,
        w.other_events,
        w.watches_ended_early
    ));
    out.line(&format!(
        "{:<14} {:>7} events{:27}   {}   ({} arrived before the update's response)",
        "watch latency",
        w.delivered_events,
        "",
        w.delivery_latency.text(),
        w.delivered_before_response
    ));
    if let Some(cpu) = w.cpu {
        out.line(&format!("{:<14} whole phase {}", "watch", cpu.text()));
    }
    if let Some(e) = &w.first_watch_error {
        out.line(&format!("{:<14} first watch error: {e}", ""));
    }
}

/// The report: as text, or with `--json` as JSON on stdout and the text on stderr.
fn print_report(text: &str, report: &impl Serialize, json: bool) -> Result<()> {
    if json {
        eprintln!("{text}");
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

fn memory_text(when: &str, m: Memory) -> String {
    let mib = |kb: u64| kb as f64 / 1024.0;
    format!("{:<14} {when}: RSS {:.1} MiB (peak {:.1} MiB)", "memory", mib(m.rss_kb), mib(m.hwm_kb))
}
