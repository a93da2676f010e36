//! core/v1 Events about pods from `kubelet` on this node, with upstream's
//! aggregation: a repeat of the same event (object, reason, message) bumps
//! `count` and `lastTimestamp` of the first one instead of adding a new
//! one, and repeats are written at most every 10 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use rand::Rng;
use serde_json::json;

const REPEAT_WRITE_EVERY: Duration = Duration::from_secs(10);

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    written: Instant,
}

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    host: String,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// The reference an event about a pod (or one of its containers) points at.
pub fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let spec = pod.spec.clone().unwrap_or_default();
    let field_path = container.map(|name| {
        if spec.init_containers.iter().flatten().any(|c| c.name == name) {
            format!("spec.initContainers{{{name}}}")
        } else if spec.ephemeral_containers.iter().flatten().any(|c| c.name == name) {
            format!("spec.ephemeralContainers{{{name}}}")
        } else {
            format!("spec.containers{{{name}}}")
        }
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

impl Recorder {
    pub fn new(client: Client, host: String) -> Recorder {
        Recorder { client, host, seen: Arc::default() }
    }

    pub fn normal(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Normal", reason, message);
    }

    pub fn warning(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Warning", reason, message);
    }

    /// Records in the background; failures are only logged.
    pub fn record(&self, about: ObjectReference, type_: &str, reason: &str, message: String) {
        let key = format!("{}/{}/{type_}/{reason}/{message}", about.uid.as_deref().unwrap_or_default(), about.field_path.as_deref().unwrap_or_default());
        let namespace = about.namespace.clone().unwrap_or_else(|| "default".into());
        // Decide under the lock what to write: a new event, a count bump, or nothing yet.
        let action = {
            let mut seen = self.seen.lock().unwrap();
            if seen.len() > 4096 {
                seen.retain(|_, s| s.written.elapsed() < Duration::from_secs(600));
            }
            match seen.get_mut(&key) {
                Some(s) => {
                    s.count += 1;
                    if s.written.elapsed() < REPEAT_WRITE_EVERY {
                        return;
                    }
                    s.written = Instant::now();
                    Some((s.name.clone(), s.namespace.clone(), s.count))
                }
                None => {
                    let suffix: u64 = rand::thread_rng().gen();
                    let name = format!("{}.{:016x}", about.name.as_deref().unwrap_or("pod"), suffix);
                    seen.insert(key, Seen { name: name.clone(), namespace: namespace.clone(), count: 1, written: Instant::now() });
                    Some((name, namespace, 0))
                }
            }
        };
        let Some((name, ns, count)) = action else { return };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Utc::now();
        if count > 0 {
            tracing::debug!(event = name, count, reason, "event repeated");
            tokio::spawn(async move {
                let patch = json!({"count": count, "lastTimestamp": Time(now)});
                if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    tracing::debug!(event = name, "updating event: {e}");
                }
            });
            return;
        }
        let ev = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns), ..Default::default() },
            involved_object: about,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.to_string()),
            source: Some(EventSource { component: Some("kubelet".into()), host: Some(self.host.clone()) }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.host.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(event = name, "recording event: {e}");
            }
        });
    }
}
