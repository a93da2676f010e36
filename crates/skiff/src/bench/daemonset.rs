//! `skiff bench daemonset`: a DaemonSet rollout over simulated nodes. Starts
//! a server with controllers and scheduler, runs the simulated nodes in this
//! process, and times the DaemonSet's first placement and then a template
//! change until every node runs an updated, available pod.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::heads::ready_nodes;
use super::server::{self, LocalServer, Memory};

const DAEMONSET: &str = "/apis/apps/v1/namespaces/default/daemonsets";
const TIMEOUT: Duration = Duration::from_secs(1800);
const CLUSTER_CIDR: &str = "10.64.0.0/10";

#[derive(clap::Args)]
pub struct DaemonSetArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// The rolling update's maxUnavailable (a count or a percentage).
    #[arg(long, default_value = "10%")]
    max_unavailable: String,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    nodes: usize,
    max_unavailable: String,
    nodes_ready_seconds: f64,
    /// From create to a pod available on every node.
    create_seconds: f64,
    /// From the template change to every node's pod updated and available.
    rollout_seconds: f64,
    rollout_pods_per_sec: f64,
    server_memory: Option<Memory>,
}

pub async fn run(args: DaemonSetArgs) -> Result<()> {
    let mut server = LocalServer::start(&["--disable-agent", "--cluster-cidr", CLUSTER_CIDR])?;
    let (_, client) = server.wait_ready().await?;
    let kube = client::kubeconfig::from_kubeconfig(&server.kubeconfig).await?;
    let leases = client::kubeconfig::from_kubeconfig(&server.kubeconfig).await?;
    let sim_opts = kubelet::sim::Options { nodes: args.nodes, ..Default::default() };
    let sim = tokio::spawn(kubelet::sim::run_with_lease_client(kube, leases, sim_opts));
    let report = measure(&args, &client, server.pid).await;
    sim.abort();
    drop(client);
    server.stop()?;
    let r = report?;
    let text = format!(
        "daemonset  {} nodes Ready in {:.1}s\n\
         daemonset  first rollout: a pod available on all {} nodes in {:.1}s\n\
         daemonset  update (maxUnavailable {}): all {} pods updated and available in {:.1}s ({:.0} pods/s)\n\
         daemonset  server RSS {}",
        r.nodes,
        r.nodes_ready_seconds,
        r.nodes,
        r.create_seconds,
        r.max_unavailable,
        r.nodes,
        r.rollout_seconds,
        r.rollout_pods_per_sec,
        server::memory_summary(r.server_memory),
    );
    super::print_report(&text, &r, args.json)
}

async fn measure(args: &DaemonSetArgs, client: &Client, pid: u32) -> Result<Report> {
    let t = Instant::now();
    wait_for(|| async { Ok(ready_nodes(client).await? >= args.nodes) }).await?;
    let nodes_ready_seconds = t.elapsed().as_secs_f64();
    eprintln!("{} nodes Ready in {nodes_ready_seconds:.1}s", args.nodes);

    let max_unavailable: serde_json::Value = args.max_unavailable.parse::<i64>().map_or_else(|_| args.max_unavailable.clone().into(), Into::into);
    let ds = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "bench"},
        "spec": {
            "selector": {"matchLabels": {"app": "bench"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}]}},
        },
    });
    let t = Instant::now();
    client.fetch(Method::POST, DAEMONSET, &[("content-type", "application/json")], Bytes::from(ds.to_string())).await?;
    wait_for(|| async { done(client, args.nodes).await }).await?;
    let create_seconds = t.elapsed().as_secs_f64();
    eprintln!("first rollout done in {create_seconds:.1}s");

    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"bench/rev": "2"}}}}});
    let t = Instant::now();
    let path = format!("{DAEMONSET}/bench");
    client.fetch(Method::PATCH, &path, &[("content-type", "application/merge-patch+json")], Bytes::from(patch.to_string())).await?;
    wait_for(|| async { done(client, args.nodes).await }).await?;
    let rollout_seconds = t.elapsed().as_secs_f64();
    Ok(Report {
        nodes: args.nodes,
        max_unavailable: args.max_unavailable.clone(),
        nodes_ready_seconds,
        create_seconds,
        rollout_seconds,
        rollout_pods_per_sec: args.nodes as f64 / rollout_seconds.max(1e-9),
        server_memory: server::memory(pid).ok(),
    })
}

/// The status kubectl rollout status waits for: observed, every node's pod updated and available.
async fn done(client: &Client, nodes: usize) -> Result<bool> {
    let ds: DaemonSetHead = client.get_as(&format!("{DAEMONSET}/bench"), &[]).await?;
    let s = ds.status;
    Ok(s.observed_generation >= ds.metadata.generation && s.desired_number_scheduled >= nodes && s.updated_number_scheduled >= nodes && s.number_available >= nodes)
}

async fn wait_for<F, Fut>(mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("gave up after {TIMEOUT:?}")
}

#[derive(Deserialize)]
struct DaemonSetHead {
    metadata: MetaHead,
    #[serde(default)]
    status: DaemonSetStatusHead,
}

#[derive(Deserialize)]
struct MetaHead {
    #[serde(default)]
    generation: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DaemonSetStatusHead {
    observed_generation: i64,
    desired_number_scheduled: usize,
    updated_number_scheduled: usize,
    number_available: usize,
}
