//! The agent's Node: registration (create, or adopt and update an existing
//! one), the podCIDR handed out by node IPAM, status with real capacity,
//! pressure conditions and nodeInfo posted every 10 s (or at once when the
//! network turns ready), and the Lease heartbeat.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use runtime::cri::ImageService;
use serde_json::{json, Value};

use super::hostinfo;
use super::AgentConfig;
use crate::sim::KUBELET_VERSION;

const STATUS_EVERY: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Eviction thresholds upstream uses by default.
const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;
const NODEFS_AVAILABLE_MIN_PERCENT: u64 = 10;
const PID_AVAILABLE_MIN_PERCENT: u64 = 5;

/// Capacity of this host, as Node quantities.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub cpus: u32,
    pub memory: u64,
    pub ephemeral_storage: u64,
    pub pods: u32,
}

pub fn capacity(config: &AgentConfig) -> Capacity {
    let _ = std::fs::create_dir_all(&config.data_dir);
    Capacity { cpus: hostinfo::cpus(), memory: hostinfo::memory().0, ephemeral_storage: hostinfo::filesystem(&config.data_dir).0, pods: config.max_pods }
}

fn labels(config: &AgentConfig) -> Value {
    let mut l = json!({
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    });
    for (k, v) in &config.node_labels {
        l[k] = json!(v);
    }
    l
}

/// Creates the Node, or takes over an existing one of that name (labels
/// merged), trying for about half a minute. Returns it as the API has it.
pub async fn register(client: &Client, config: &AgentConfig) -> Result<Node> {
    register_within(client, config, 20).await
}

/// `register` giving up after `attempts` failures.
async fn register_within(client: &Client, config: &AgentConfig, attempts: u64) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let name = &config.node_name;
    let mut attempt = 0u64;
    loop {
        let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels(config)}, "spec": {}}))?;
        let result = match api.create(&PostParams::default(), &node).await {
            Ok(n) => Ok(n),
            Err(kube::Error::Api(e)) if e.code == 409 => api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels(config)}}))).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(n) => return Ok(n),
            Err(e) if attempt < attempts => {
                attempt += 1;
                tracing::info!(node = name, "registering node: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250 * attempt.min(8))).await;
            }
            Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
        }
    }
}

/// Registers the Node and returns its podCIDR, saved under the data dir so
/// that a restart while the API server is unreachable can set up the pod
/// network (and run static pods) with the same one; registration is then
/// left to the heartbeat. With nothing saved the API server is waited for.
pub async fn register_and_pod_cidr(client: &Client, config: &AgentConfig) -> Result<String> {
    let file = config.data_dir.join("pod-cidr");
    let saved = std::fs::read_to_string(&file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if let Err(e) = register_within(client, config, if saved.is_some() { 3 } else { 20 }).await {
        let saved = saved.ok_or(e)?;
        tracing::warn!(node = config.node_name, pod_cidr = saved, "the API server is unreachable; starting with the saved podCIDR");
        return Ok(saved);
    }
    tracing::info!(node = config.node_name, "node registered");
    let cidr = pod_cidr(client, config).await;
    if saved.as_ref() != Some(&cidr) {
        std::fs::write(&file, &cidr).with_context(|| format!("saving the podCIDR to {}", file.display()))?;
    }
    Ok(cidr)
}

/// The node's podCIDR from node IPAM, waiting up to `wait`; else the fallback.
pub async fn pod_cidr(client: &Client, config: &AgentConfig) -> String {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + config.pod_cidr_wait;
    loop {
        if let Ok(Some(n)) = api.get_opt(&config.node_name).await {
            if let Some(cidr) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                return cidr;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(node = config.node_name, fallback = config.pod_cidr_fallback, "no podCIDR assigned by node IPAM; using the fallback");
            return config.pod_cidr_fallback.clone();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The (type, status, reason, message) of the pressure conditions, from readings.
pub fn pressure(mem_available: u64, fs: (u64, u64), pids: (u64, u64)) -> [(&'static str, bool, &'static str, &'static str); 3] {
    let mem = mem_available < MEMORY_AVAILABLE_MIN;
    let disk = fs.0 > 0 && fs.1 * 100 < fs.0 * NODEFS_AVAILABLE_MIN_PERCENT;
    let pid = pids.1 > 0 && (pids.1.saturating_sub(pids.0)) * 100 < pids.1 * PID_AVAILABLE_MIN_PERCENT;
    [
        if mem { ("MemoryPressure", true, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available") } else { ("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available") },
        if disk { ("DiskPressure", true, "KubeletHasDiskPressure", "kubelet has disk pressure") } else { ("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure") },
        if pid { ("PIDPressure", true, "KubeletHasInsufficientPID", "kubelet has insufficient PID available") } else { ("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available") },
    ]
}

/// The node status to post. `old` supplies transition times of unchanged conditions.
pub fn status(config: &AgentConfig, cap: &Capacity, ip: Ipv4Addr, ready: Result<(), String>, images: Value, old: Option<&Node>) -> Value {
    let t = now();
    let old_conds = old.and_then(|n| n.status.as_ref()).and_then(|s| s.conditions.clone()).unwrap_or_default();
    let cond = |ty: &str, status: bool, reason: &str, message: &str| {
        let s = if status { "True" } else { "False" };
        let since = old_conds.iter().find(|c| c.type_ == ty && c.status == s).and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| t.clone());
        json!({"type": ty, "status": s, "reason": reason, "message": message, "lastHeartbeatTime": t, "lastTransitionTime": since})
    };
    let mut conds: Vec<Value> = pressure(hostinfo::memory().1, hostinfo::filesystem(&config.data_dir), hostinfo::pids()).iter().map(|(ty, s, r, m)| cond(ty, *s, r, m)).collect();
    conds.push(match &ready {
        Ok(()) => cond("Ready", true, "KubeletReady", "kubelet is posting ready status"),
        Err(why) => cond("Ready", false, "KubeletNotReady", why),
    });
    let resources = json!({"cpu": cap.cpus.to_string(), "memory": format!("{}Ki", cap.memory / 1024), "pods": cap.pods.to_string(), "ephemeral-storage": format!("{}Ki", cap.ephemeral_storage / 1024)});
    json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": conds,
        "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": config.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.streaming_port}},
        "nodeInfo": {
            "machineID": hostinfo::machine_id(),
            "systemUUID": hostinfo::system_uuid(),
            "bootID": hostinfo::boot_id(),
            "kernelVersion": hostinfo::kernel_version(),
            "osImage": hostinfo::os_image(),
            "containerRuntimeVersion": format!("skiff://{}", config.runtime_version),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "images": images,
    }})
}

/// Up to 50 local images, biggest first, as upstream lists them.
async fn image_list(images: &Arc<dyn ImageService>) -> Value {
    let mut list = images.list_images().await.unwrap_or_default();
    list.sort_by_key(|i| std::cmp::Reverse(i.size));
    list.truncate(50);
    json!(list.iter().map(|i| {
        let mut names = i.repo_digests.clone();
        names.extend(i.repo_tags.iter().cloned());
        json!({"names": names, "sizeBytes": i.size})
    }).collect::<Vec<_>>())
}

/// Posts the node status every 10 s (and at once when `kick` is notified),
/// and renews the Lease every 10 s; re-registers a Node that was deleted.
pub async fn heartbeat(client: Client, config: AgentConfig, ip: Ipv4Addr, images: Arc<dyn ImageService>, network_ready: Arc<AtomicBool>, kick: Arc<tokio::sync::Notify>) {
    let cap = capacity(&config);
    let api: Api<Node> = Api::all(client.clone());
    let mut next_post = tokio::time::Instant::now();
    let mut lease_tick = tokio::time::interval(crate::node_lease::RENEW_EVERY);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if tokio::time::Instant::now() >= next_post {
            let current = match api.get_opt(&config.node_name).await {
                Ok(Some(n)) => Some(n),
                Ok(None) => match register(&client, &config).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(node = config.node_name, "reading node: {e}");
                    None
                }
            };
            let ready = if network_ready.load(Ordering::Relaxed) { Ok(()) } else { Err("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:pod network is being set up".to_string()) };
            let body = status(&config, &cap, ip, ready, image_list(&images).await, current.as_ref());
            next_post = match api.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(body)).await {
                Ok(_) => tokio::time::Instant::now() + STATUS_EVERY,
                Err(e) => {
                    tracing::warn!(node = config.node_name, "posting node status: {e}; retrying");
                    tokio::time::Instant::now() + RETRY_EVERY
                }
            };
        }
        tokio::select! {
            _ = lease_tick.tick() => {
                let uid = api.get_opt(&config.node_name).await.ok().flatten().and_then(|n| n.metadata.uid);
                crate::node_lease::renew(&client, &config.node_name, uid).await;
            }
            _ = kick.notified() => next_post = tokio::time::Instant::now(),
            _ = tokio::time::sleep_until(next_post) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_thresholds() {
        let ok = pressure(1 << 30, (100, 50), (100, 32768));
        assert!(ok.iter().all(|(_, s, _, _)| !s));
        assert_eq!(ok[0].2, "KubeletHasSufficientMemory");
        assert_eq!(ok[1].2, "KubeletHasNoDiskPressure");
        assert_eq!(ok[2].2, "KubeletHasSufficientPID");
        let bad = pressure(50 << 20, (100, 9), (32000, 32768));
        assert!(bad.iter().all(|(_, s, _, _)| *s));
        assert_eq!(bad[0].2, "KubeletHasInsufficientMemory");
        assert_eq!(bad[1].2, "KubeletHasDiskPressure");
        assert_eq!(bad[2].2, "KubeletHasInsufficientPID");
    }

    #[test]
    fn status_shape() {
        let config = AgentConfig { node_name: "n1".into(), ..Default::default() };
        let cap = Capacity { cpus: 2, memory: 4 << 30, ephemeral_storage: 10 << 30, pods: 110 };
        let s = status(&config, &cap, Ipv4Addr::new(10, 0, 0, 5), Ok(()), json!([]), None);
        let st = &s["status"];
        assert_eq!(st["capacity"], json!({"cpu": "2", "memory": "4194304Ki", "pods": "110", "ephemeral-storage": "10485760Ki"}));
        assert_eq!(st["addresses"][0], json!({"type": "InternalIP", "address": "10.0.0.5"}));
        assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(st["conditions"][3]["reason"], "KubeletReady");
        assert_eq!(st["nodeInfo"]["kubeletVersion"], "v1.33.4-skiff");
        assert!(st["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap().starts_with("skiff://"));
        let _: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": st})).unwrap();
    }
}
