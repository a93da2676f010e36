//! Every [`RESOLUTION`], each node agent's `/metrics/resource` is read
//! over the API server's kubelet client certificate, at most
//! [`CONCURRENCY`] at a time, as metrics-server does. A node that does not
//! answer within [`TIMEOUT`] reports nothing until it does again.
//! Simulated nodes run no agent and are skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::Value;

use super::prom;
use super::usage::Scrape;
use crate::proxy::agent::Agent;
use crate::App;

/// metrics-server's default `--metric-resolution`.
pub const RESOLUTION: Duration = Duration::from_secs(15);
const TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 64;
/// A scrape is a few lines per container; more than this is not an agent.
const MAX_BODY: usize = 16 << 20;
/// The runtime `skiff sim` nodes report (kubelet::sim::RUNTIME_VERSION).
const SIMULATED_RUNTIME: &str = "skiff-sim://";

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(RESOLUTION);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        scrape_all(&app).await;
    }
}

async fn scrape_all(app: &Arc<App>) {
    let Some(tls) = app.kubelet_tls.get().cloned() else { return };
    let nodes: Vec<Value> = app.registry.cache.all(super::node_storage()).iter().map(|n| n.obj()).collect();
    let live: HashSet<String> = nodes.iter().filter_map(|n| n["metadata"]["name"].as_str().map(String::from)).collect();
    app.resource_metrics.store.write().unwrap().retain_nodes(&live);
    let agents: Vec<(String, Agent)> = nodes
        .iter()
        .filter(|n| !n["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap_or_default().starts_with(SIMULATED_RUNTIME))
        .filter_map(|n| {
            let (host, port) = crate::proxy::agent_address(n)?;
            Some((n["metadata"]["name"].as_str()?.to_string(), Agent { host, port, tls: tls.clone() }))
        })
        .collect();
    let scrapes = futures::stream::iter(agents.into_iter().map(|(name, agent)| async move {
        let body = tokio::time::timeout(TIMEOUT, agent.fetch("/metrics/resource", MAX_BODY)).await;
        (name, body)
    }))
    .buffer_unordered(CONCURRENCY);
    futures::pin_mut!(scrapes);
    while let Some((node, body)) = scrapes.next().await {
        let mut store = app.resource_metrics.store.write().unwrap();
        match body {
            Ok(Ok(text)) => {
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
                store.record(&node, Scrape::from_lines(&prom::parse(&String::from_utf8_lossy(&text)), now_ms));
            }
            Ok(Err(e)) => {
                tracing::debug!(%node, "scraping resource metrics: {}", e.message);
                store.forget(&node);
            }
            Err(_) => {
                tracing::debug!(%node, "scraping resource metrics timed out");
                store.forget(&node);
            }
        }
    }
}
