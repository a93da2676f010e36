//! `skiff bench job`: the Job controller at scale. Starts a server with
//! controllers and scheduler, runs simulated nodes in this process, and
//! times one Job of `--completions` pods, `--parallelism` at a time, from
//! its create to its Complete condition. The simulated pods succeed
//! `--run-seconds` after they start (the sim's `sim.skiff.dev/succeed-after`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::heads::ready_nodes;
use super::server::{self, LocalServer, Memory};

const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(clap::Args)]
pub struct JobArgs {
    /// Pods that must succeed.
    #[arg(long, default_value_t = 1000)]
    completions: usize,
    /// Pods running at once.
    #[arg(long, default_value_t = 100)]
    parallelism: usize,
    /// Simulated nodes.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// How long each simulated pod runs before it succeeds.
    #[arg(long, default_value_t = 1.0)]
    run_seconds: f64,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    completions: usize,
    parallelism: usize,
    nodes: usize,
    run_seconds: f64,
    /// From the Job's create to its Complete condition.
    complete_seconds: f64,
    /// The least the run could take: completions / parallelism rounds of run_seconds.
    ideal_seconds: f64,
    pods_per_sec: f64,
    server_memory: Option<Memory>,
}

pub async fn run(args: JobArgs) -> Result<()> {
    let mut server = LocalServer::start(&["--disable-agent"])?;
    let (_, client) = server.wait_ready().await?;
    let kube = client::kubeconfig::from_kubeconfig(&server.kubeconfig).await?;
    let leases = client::kubeconfig::from_kubeconfig(&server.kubeconfig).await?;
    let per_node = (2 * args.parallelism.div_ceil(args.nodes)).max(110) as u32;
    let sim_opts = kubelet::sim::Options { nodes: args.nodes, pods: per_node, ..Default::default() };
    let sim = tokio::spawn(kubelet::sim::run_with_lease_client(kube, leases, sim_opts));
    let report = measure(&args, &client, server.pid).await;
    sim.abort();
    drop(client);
    server.stop()?;
    let r = report?;
    let text = format!(
        "job    {} completions, parallelism {}, on {} simulated nodes, pods running {:.1}s each\n\
         job    Complete in {:.1}s ({:.0} pods/s; {:.0}s if every round of pods ran back to back)\n\
         job    server RSS {}",
        r.completions,
        r.parallelism,
        r.nodes,
        r.run_seconds,
        r.complete_seconds,
        r.pods_per_sec,
        r.ideal_seconds,
        server::memory_summary(r.server_memory),
    );
    super::print_report(&text, &r, args.json)
}

async fn measure(args: &JobArgs, client: &Client, pid: u32) -> Result<Report> {
    // The sim's nodes first, so the run measures the Job and not node startup.
    let start = Instant::now();
    while ready_nodes(client).await? < args.nodes {
        if start.elapsed() > TIMEOUT {
            bail!("nodes not Ready after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bench"},
        "spec": {
            "completions": args.completions,
            "parallelism": args.parallelism,
            "template": {
                "metadata": {"annotations": {kubelet::sim::SUCCEED_AFTER: args.run_seconds.to_string()}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            },
        },
    });
    let t = Instant::now();
    client.fetch(Method::POST, JOBS, &[("content-type", "application/json")], Bytes::from(job.to_string())).await?;
    let mut last_report = Instant::now();
    loop {
        let j: JobHead = client.get_as(&format!("{JOBS}/bench"), &[]).await?;
        if j.status.conditions.iter().any(|c| c.kind == "Complete" && c.status == "True") {
            break;
        }
        if j.status.conditions.iter().any(|c| c.kind == "Failed" && c.status == "True") {
            bail!("the Job failed");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {} of {} succeeded after {:.0}s ({} active)", j.status.succeeded, args.completions, t.elapsed().as_secs_f64(), j.status.active);
            last_report = Instant::now();
        }
        if t.elapsed() > TIMEOUT {
            bail!("the Job did not complete in {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let complete_seconds = t.elapsed().as_secs_f64();
    Ok(Report {
        completions: args.completions,
        parallelism: args.parallelism,
        nodes: args.nodes,
        run_seconds: args.run_seconds,
        complete_seconds,
        ideal_seconds: args.completions.div_ceil(args.parallelism.max(1)) as f64 * args.run_seconds,
        pods_per_sec: args.completions as f64 / complete_seconds.max(1e-9),
        server_memory: server::memory(pid).ok(),
    })
}

#[derive(Deserialize)]
struct JobHead {
    #[serde(default)]
    status: JobStatusHead,
}

#[derive(Deserialize, Default)]
struct JobStatusHead {
    #[serde(default)]
    conditions: Vec<super::heads::Condition>,
    #[serde(default)]
    succeeded: usize,
    #[serde(default)]
    active: usize,
}
