//! `skiff bench cluster`: the whole control plane at scale. Starts a server
//! with controllers and scheduler, runs simulated nodes in this process,
//! times one Deployment becoming available, then fills the cluster with
//! Deployments up to the pod count and reports the server's memory.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::heads::{ready_nodes, List};
use super::server::{self, LocalServer, Memory};
use super::stats::run_ops;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const TIMEOUT: Duration = Duration::from_secs(1800);
const CLUSTER_CIDR: &str = "10.64.0.0/10";

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods in all, as Deployments of --replicas each.
    #[arg(long, default_value_t = 150_000)]
    pods: usize,
    /// Replicas per Deployment; the first Deployment is also timed on its own.
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    nodes: usize,
    pods: usize,
    nodes_ready_seconds: f64,
    /// One Deployment of `replicas` from create to availableReplicas == replicas.
    first_deployment_seconds: f64,
    replicas: usize,
    /// Every Deployment available, from the first create after the timed one.
    fill_seconds: f64,
    fill_pods_per_sec: f64,
    /// Nodes Ready once every Deployment is available (all of them unless heartbeats were missed).
    nodes_ready_at_end: usize,
    server_memory: Option<Memory>,
    /// This process, which runs the simulated nodes.
    sim_memory: Option<Memory>,
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    // A /10 holds 16,384 node /24s; the default /16 only 256.
    let mut server = LocalServer::start(&["--disable-agent", "--cluster-cidr", CLUSTER_CIDR])?;
    let (_, client) = server.wait_ready().await?;
    let kube = client::kubeconfig::from_kubeconfig(&server.kubeconfig).await?;
    let leases = client::kubeconfig::from_kubeconfig(&server.kubeconfig).await?;
    let per_node = (2 * args.pods.div_ceil(args.nodes)).max(110) as u32;
    let sim_opts = kubelet::sim::Options { nodes: args.nodes, pods: per_node, ..Default::default() };
    let sim = tokio::spawn(kubelet::sim::run_with_lease_client(kube, leases, sim_opts));
    let report = measure(&args, &client, server.pid).await;
    sim.abort();
    drop(client);
    server.stop()?;
    let report = report?;
    let text = format!(
        "cluster    {} nodes Ready in {:.1}s\n\
         cluster    Deployment of {} replicas available in {:.2}s\n\
         cluster    {} pods available in {:.1}s ({:.0} pods/s), {} nodes Ready then\n\
         cluster    server RSS {}, sim RSS {}",
        report.nodes,
        report.nodes_ready_seconds,
        report.replicas,
        report.first_deployment_seconds,
        report.pods,
        report.fill_seconds,
        report.fill_pods_per_sec,
        report.nodes_ready_at_end,
        server::memory_summary(report.server_memory),
        server::memory_summary(report.sim_memory),
    );
    super::print_report(&text, &report, args.json)
}

async fn measure(args: &ClusterArgs, client: &Client, pid: u32) -> Result<Report> {
    let t = Instant::now();
    wait_for(|| async { Ok(ready_nodes(client).await? >= args.nodes) }, "nodes to be Ready").await?;
    let nodes_ready_seconds = t.elapsed().as_secs_f64();
    eprintln!("{} nodes Ready in {nodes_ready_seconds:.1}s", args.nodes);

    let t = Instant::now();
    create(client, "bench-0", args.replicas).await?;
    wait_for(|| async { Ok(available(client).await? >= args.replicas) }, "the first Deployment to be available").await?;
    let first_deployment_seconds = t.elapsed().as_secs_f64();
    eprintln!("Deployment of {} replicas available in {first_deployment_seconds:.2}s", args.replicas);

    let rest = args.pods.saturating_sub(args.replicas).div_ceil(args.replicas);
    let t = Instant::now();
    let (p, _) = run_ops("deployments", rest, 4, |i| async move {
        create(client, &format!("bench-{}", i + 1), args.replicas).await
    }).await;
    if p.errors > 0 {
        bail!("creating Deployments: {}", p.first_error.unwrap_or_default());
    }
    let total = (rest + 1) * args.replicas;
    wait_for(
        || async {
            let n = available(client).await?;
            let rss = server::memory(pid).map_or(0, |m| m.rss_kb / 1024);
            eprintln!("  {n}/{total} pods available after {:.0}s, server RSS {rss} MiB", t.elapsed().as_secs_f64());
            Ok(n >= total)
        },
        "every Deployment to be available",
    )
    .await?;
    let fill_seconds = t.elapsed().as_secs_f64();
    let nodes_ready_at_end = ready_nodes(client).await?;
    Ok(Report {
        nodes: args.nodes,
        pods: total,
        nodes_ready_seconds,
        first_deployment_seconds,
        replicas: args.replicas,
        fill_seconds,
        fill_pods_per_sec: (total - args.replicas) as f64 / fill_seconds.max(1e-9),
        nodes_ready_at_end,
        server_memory: server::memory(pid).ok(),
        sim_memory: server::memory(std::process::id()).ok(),
    })
}

async fn wait_for<F, Fut>(mut check: F, what: &str) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    while start.elapsed() < TIMEOUT {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    bail!("gave up waiting for {what} after {TIMEOUT:?}")
}

async fn create(client: &Client, name: &str, replicas: usize) -> Result<()> {
    let v = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            },
        },
    });
    client.fetch(Method::POST, DEPLOYMENTS, &[("content-type", "application/json")], Bytes::from(v.to_string())).await?;
    Ok(())
}

/// Sum of availableReplicas over the namespace's Deployments.
async fn available(client: &Client) -> Result<usize> {
    let list: List<DeploymentHead> = client.get_as(DEPLOYMENTS, &[]).await?;
    Ok(list.items.iter().map(|d| d.status.available_replicas).sum())
}

#[derive(Deserialize)]
struct DeploymentHead {
    #[serde(default)]
    status: DeploymentStatusHead,
}

#[derive(Deserialize, Default)]
struct DeploymentStatusHead {
    #[serde(default, rename = "availableReplicas")]
    available_replicas: usize,
}

