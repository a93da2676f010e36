//! The node's part for pods bound to simulated nodes: one watch of all pods,
//! filtered by node name, feeding a deduplicating queue (latest version of
//! each pod wins) that a bounded pool of workers drains. A worker starts
//! the pod (status Running with IPs, container statuses and conditions),
//! stops and removes it when it is deleted, and completes Job pods asked
//! to succeed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use serde_json::{json, Value};

use crate::sim::{Sim, SUCCEED_AFTER, USE_GRACE_PERIOD, WRITERS};
use crate::sim_node::fnv;

#[derive(Default)]
struct Queue {
    pending: Mutex<HashMap<String, Pod>>,
}

pub(crate) async fn run(sim: &Arc<Sim>) {
    let queue = Arc::new(Queue::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let enqueue = {
        let queue = queue.clone();
        move |pod: Pod| {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if queue.pending.lock().unwrap().insert(uid.clone(), pod).is_none() {
                let _ = tx.send(uid);
            }
        }
    };
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Pod>();
    let workers = futures::future::join_all((0..WRITERS).map(|_| {
        let (sim, queue, rx, ready_tx) = (sim.clone(), queue.clone(), rx.clone(), ready_tx.clone());
        async move {
            loop {
                let Some(uid) = rx.lock().await.recv().await else { return };
                let Some(pod) = queue.pending.lock().unwrap().remove(&uid) else { continue };
                if let Some(again) = handle(&sim, pod).await {
                    let _ = ready_tx.send(again);
                }
            }
        }
    }));
    let api: Api<Pod> = Api::all(sim.client.clone());
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    let events = async {
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(Event::Apply(pod))) | Some(Ok(Event::InitApply(pod))) => {
                        let ours = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| sim.by_name.contains_key(n));
                        if ours {
                            enqueue(pod);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!("pod watch: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return,
                },
                Some(pod) = ready_rx.recv() => enqueue(pod),
            }
        }
    };
    tokio::join!(workers, events);
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v == "true")
}

/// Acts on one pod; returns a fresher copy to handle again (after a conflict).
async fn handle(sim: &Arc<Sim>, pod: Pod) -> Option<Pod> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(sim.client.clone(), &ns);
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if let Some(ts) = &pod.metadata.deletion_timestamp {
        let deadline = ts.0;
        if is_true(annotations.get(USE_GRACE_PERIOD)) && deadline > Utc::now() && phase != "Succeeded" && phase != "Failed" {
            arm(sim, &api, &name, &uid, "grace", deadline);
            return None;
        }
        // The containers exit on SIGTERM at once: the pod is stopped, remove it.
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&name, &dp).await {
            if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                tracing::warn!(pod = name, ns, "deleting stopped pod: {e}");
            }
        }
        return None;
    }
    if phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let node = &sim.nodes[*sim.by_name.get(pod.spec.as_ref()?.node_name.as_ref()?)?];
    let now = Utc::now();
    let mut status = running_status(&pod, node, now);
    let is_job = pod.metadata.owner_references.iter().flatten().any(|r| r.kind == "Job");
    if let Some(secs) = annotations.get(SUCCEED_AFTER).and_then(|s| s.trim().parse::<f64>().ok()).filter(|_| is_job) {
        let started = status["startTime"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.with_timezone(&Utc)).unwrap_or(now);
        let done_at = started + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        if done_at <= now {
            status = succeeded_status(status, now);
        } else {
            arm(sim, &api, &name, &uid, "succeed", done_at);
        }
    }
    let desired: PodStatus = match serde_json::from_value(status.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(pod = name, "building status: {e}");
            return None;
        }
    };
    if pod.status.as_ref() == Some(&desired) {
        return None;
    }
    let rv = pod.metadata.resource_version.clone();
    let patch = json!({"metadata": {"resourceVersion": rv}, "status": status});
    match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => None,
        Err(kube::Error::Api(e)) if e.code == 409 => api.get_opt(&name).await.ok().flatten().filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str())),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => {
            tracing::warn!(pod = name, ns, "writing pod status: {e}");
            None
        }
    }
}

/// Looks at the pod again at `at` (once per pod and purpose).
fn arm(sim: &Arc<Sim>, api: &Api<Pod>, name: &str, uid: &str, what: &str, at: DateTime<Utc>) {
    let key = format!("{uid}/{what}");
    if !sim.timers.lock().unwrap().insert(key.clone()) {
        return;
    }
    let (sim, api, name, uid) = (sim.clone(), api.clone(), name.to_string(), uid.to_string());
    tokio::spawn(async move {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        sim.timers.lock().unwrap().remove(&key);
        if let Ok(Some(pod)) = api.get_opt(&name).await {
            if pod.metadata.uid.as_deref() == Some(uid.as_str()) {
                let mut pod = Some(pod);
                // A conflict hands back a fresher copy; try a few times.
                for _ in 0..5 {
                    match pod.take() {
                        Some(p) => pod = handle(&sim, p).await,
                        None => break,
                    }
                }
            }
        }
    });
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Sets a condition, keeping its transition time when the status stays.
fn set_condition(conds: &mut Vec<Value>, ty: &str, status: &str, reason: Option<&str>, message: Option<&str>, now: &str) {
    let mut c = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(old) => {
            if old["status"] == status {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conds.push(c),
    }
}

/// The status of a running pod, built on what is there (IPs, start times,
/// container ids and conditions set by others are kept).
fn running_status(pod: &Pod, node: &crate::sim::SimNode, now: DateTime<Utc>) -> Value {
    let t = ts(now);
    let mut st = pod.status.as_ref().map(|s| serde_json::to_value(s).unwrap_or_default()).unwrap_or_else(|| json!({}));
    if !st.is_object() {
        st = json!({});
    }
    let spec = pod.spec.clone().unwrap_or_default();
    st["phase"] = json!("Running");
    st["hostIP"] = json!(node.ip.to_string());
    st["hostIPs"] = json!([{"ip": node.ip.to_string()}]);
    if spec.host_network == Some(true) {
        st["podIP"] = json!(node.ip.to_string());
    } else if !st["podIP"].is_string() {
        st["podIP"] = json!(node.allocate_ip().to_string());
    }
    st["podIPs"] = json!([{"ip": st["podIP"].clone()}]);
    if !st["startTime"].is_string() {
        st["startTime"] = json!(t);
    }
    let old: Vec<Value> = st["containerStatuses"].as_array().cloned().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            match old.iter().find(|s| s["name"] == c.name.as_str() && s["state"]["running"].is_object() && s["image"] == image.as_str()) {
                Some(s) => {
                    let mut s = s.clone();
                    s["ready"] = json!(true);
                    s["started"] = json!(true);
                    s
                }
                None => json!({
                    "name": c.name, "image": image, "imageID": image_id(&image),
                    "containerID": format!("skiff-sim://{}", fake_sha(&format!("{uid}/{}", c.name))),
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": t}}, "lastState": {},
                }),
            }
        })
        .collect();
    st["containerStatuses"] = json!(statuses);
    let init: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({"name": c.name, "image": image, "imageID": image_id(&image), "ready": true, "started": false, "restartCount": 0,
                "containerID": format!("skiff-sim://{}", fake_sha(&format!("{uid}/init/{}", c.name))),
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": st["startTime"], "finishedAt": st["startTime"]}}, "lastState": {}})
        })
        .collect();
    if !init.is_empty() && st["initContainerStatuses"].as_array().map_or(0, |a| a.len()) != init.len() {
        st["initContainerStatuses"] = json!(init);
    }
    let mut conds: Vec<Value> = st["conditions"].as_array().cloned().unwrap_or_default();
    for ty in ["PodReadyToStartContainers", "Initialized", "ContainersReady", "PodScheduled"] {
        set_condition(&mut conds, ty, "True", None, None, &t);
    }
    let missing: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .map(|g| g.condition_type.clone())
        .filter(|g| !conds.iter().any(|c| c["type"] == g.as_str() && c["status"] == "True"))
        .collect();
    if missing.is_empty() {
        set_condition(&mut conds, "Ready", "True", None, None, &t);
    } else {
        let msg = format!("the status of pod readiness gate \"{}\" is not \"True\", but False", missing.join(", "));
        set_condition(&mut conds, "Ready", "False", Some("ReadinessGatesNotReady"), Some(&msg), &t);
    }
    st["conditions"] = json!(conds);
    st
}

/// A completed Job pod: containers terminated with exit code 0.
fn succeeded_status(mut st: Value, now: DateTime<Utc>) -> Value {
    let t = ts(now);
    st["phase"] = json!("Succeeded");
    if let Some(cs) = st["containerStatuses"].as_array_mut() {
        for c in cs {
            let started = c["state"]["running"]["startedAt"].clone();
            c["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": t,
                "containerID": c["containerID"]}});
            c["ready"] = json!(false);
            c["started"] = json!(false);
        }
    }
    let mut conds: Vec<Value> = st["conditions"].as_array().cloned().unwrap_or_default();
    set_condition(&mut conds, "PodReadyToStartContainers", "False", None, None, &t);
    set_condition(&mut conds, "Initialized", "True", Some("PodCompleted"), None, &t);
    set_condition(&mut conds, "ContainersReady", "False", Some("PodCompleted"), None, &t);
    set_condition(&mut conds, "Ready", "False", Some("PodCompleted"), None, &t);
    st["conditions"] = json!(conds);
    st
}

/// 64 hex digits derived from `s`.
fn fake_sha(s: &str) -> String {
    format!("{:032x}{:032x}", fnv(s), fnv(&format!("{s}#")))
}

/// `docker.io/library/nginx@sha256:<fake>` for `nginx`.
fn image_id(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let full = match repo.split_once('/') {
        None => format!("docker.io/library/{repo}"),
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => repo.to_string(),
        Some(_) => format!("docker.io/{repo}"),
    };
    format!("{full}@sha256:{}", fake_sha(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids() {
        assert!(image_id("nginx").starts_with("docker.io/library/nginx@sha256:"));
        assert!(image_id("nginx:1.27").starts_with("docker.io/library/nginx@sha256:"));
        assert!(image_id("bitnami/redis:7").starts_with("docker.io/bitnami/redis@sha256:"));
        assert!(image_id("registry.k8s.io/pause:3.10").starts_with("registry.k8s.io/pause@sha256:"));
        assert!(image_id("localhost:5000/app").starts_with("localhost:5000/app@sha256:"));
        assert_eq!(image_id("nginx").len(), "docker.io/library/nginx@sha256:".len() + 64);
    }
}
