//! The scheduler's incremental view of the cluster: one `NodeInfo` per node
//! with the pods bound (or assumed) to it and their summed requests, kept
//! current from the node and pod watches. Nothing here rescans the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, Taint};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::labels::Labels;

/// Default requests upstream assumes for scoring when a container sets none.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Res {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Res {
    fn from_map(m: Option<&BTreeMap<String, Quantity>>) -> Res {
        let mut r = Res::default();
        for (k, q) in m.into_iter().flatten() {
            let Ok(v) = resources::quantity::Quantity::parse(&q.0) else { continue };
            match k.as_str() {
                "cpu" => r.milli_cpu = v.milli_value(),
                "memory" => r.memory = v.value(),
                "ephemeral-storage" => r.ephemeral = v.value(),
                "pods" => {}
                _ => {
                    r.scalar.insert(k.clone(), v.value());
                }
            }
        }
        r
    }
    fn add(&mut self, o: &Res) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }
    fn sub(&mut self, o: &Res) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral -= o.ephemeral;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }
    fn max(&mut self, o: &Res) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// (host IP, protocol, port) of a container's hostPort.
pub type HostPort = (String, String, i32);

/// What the scheduler needs from one pod, computed once per pod version.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub labels: Labels,
    pub priority: i32,
    pub requests: Res,
    /// cpu/memory with upstream's non-zero defaults, for scoring.
    pub nonzero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    /// Has required or preferred pod (anti-)affinity terms of its own.
    pub has_affinity: bool,
    /// UID of the controlling owner (ReplicaSet, StatefulSet, ...), for the default spreading.
    pub controller: Option<String>,
}

fn container_requests(c: &Container) -> (Res, (i64, i64)) {
    let r = Res::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let has = |k: &str| c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some_and(|m| m.contains_key(k));
    let nz = (
        if has("cpu") { r.milli_cpu } else { DEFAULT_MILLI_CPU },
        if has("memory") { r.memory } else { DEFAULT_MEMORY },
    );
    (r, nz)
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = format!("{}/{}", namespace, pod.metadata.name.as_deref().unwrap_or(""));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        // Containers and restartable (sidecar) init containers run together;
        // a plain init container runs alone beside the sidecars started before it.
        let (mut sum, mut nz_sum) = (Res::default(), (0, 0));
        for c in &spec.containers {
            let (r, nz) = container_requests(c);
            sum.add(&r);
            nz_sum = (nz_sum.0 + nz.0, nz_sum.1 + nz.1);
        }
        let (mut init_max, mut nz_init_max) = (Res::default(), (0i64, 0i64));
        let (mut sidecars, mut nz_sidecars) = (Res::default(), (0, 0));
        for c in spec.init_containers.iter().flatten() {
            let (r, nz) = container_requests(c);
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.add(&r);
                nz_sidecars = (nz_sidecars.0 + nz.0, nz_sidecars.1 + nz.1);
                init_max.max(&sidecars);
            } else {
                let mut during = sidecars.clone();
                during.add(&r);
                init_max.max(&during);
                nz_init_max = (nz_init_max.0.max(nz_sidecars.0 + nz.0), nz_init_max.1.max(nz_sidecars.1 + nz.1));
            }
        }
        sum.add(&sidecars);
        sum.max(&init_max);
        let mut nonzero = (nz_sum.0 + nz_sidecars.0, nz_sum.1 + nz_sidecars.1);
        nonzero = (nonzero.0.max(nz_init_max.0), nonzero.1.max(nz_init_max.1));
        if let Some(o) = &spec.overhead {
            let o = Res::from_map(Some(o));
            sum.add(&o);
            nonzero = (nonzero.0 + o.milli_cpu, nonzero.1 + o.memory);
        }
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| {
                let ip = p.host_ip.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
                (ip, p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.host_port.unwrap_or(0))
            })
            .collect();
        let has_affinity = spec.affinity.as_ref().is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        let controller = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone());
        PodInfo { priority: spec.priority.unwrap_or(0), pod, key, namespace, labels, requests: sum, nonzero, host_ports, has_affinity, controller }
    }

    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
        self.pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    pub fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
}

#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Res,
    pub allowed_pods: i64,
    pub requested: Res,
    pub nonzero_requested: (i64, i64),
    pub pods: BTreeMap<String, Arc<PodInfo>>,
    /// Keys of the pods on this node that have pod (anti-)affinity terms.
    pub affinity_pods: Vec<String>,
    pub used_ports: HashMap<HostPort, usize>,
    /// Pods on this node per controlling owner UID.
    pub controller_pods: HashMap<String, i64>,
}

impl NodeInfo {
    pub fn new(node: &Node) -> NodeInfo {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }

    pub fn set_node(&mut self, node: &Node) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        self.allocatable = Res::from_map(alloc);
        self.allowed_pods = alloc
            .and_then(|m| m.get("pods"))
            .and_then(|q| resources::quantity::Quantity::parse(&q.0).ok())
            .map(|q| q.value())
            .unwrap_or(0);
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        if let Some(old) = self.pods.remove(&p.key) {
            self.account(&old, false);
        }
        self.account(&p, true);
        self.pods.insert(p.key.clone(), p);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(key)?;
        self.account(&old, false);
        Some(old)
    }

    fn account(&mut self, p: &PodInfo, add: bool) {
        if add {
            self.requested.add(&p.requests);
            self.nonzero_requested.0 += p.nonzero.0;
            self.nonzero_requested.1 += p.nonzero.1;
            for hp in &p.host_ports {
                *self.used_ports.entry(hp.clone()).or_default() += 1;
            }
            if p.has_affinity {
                self.affinity_pods.push(p.key.clone());
            }
            if let Some(c) = &p.controller {
                *self.controller_pods.entry(c.clone()).or_default() += 1;
            }
        } else {
            self.requested.sub(&p.requests);
            self.nonzero_requested.0 -= p.nonzero.0;
            self.nonzero_requested.1 -= p.nonzero.1;
            for hp in &p.host_ports {
                if let Some(c) = self.used_ports.get_mut(hp) {
                    *c -= 1;
                    if *c == 0 {
                        self.used_ports.remove(hp);
                    }
                }
            }
            self.affinity_pods.retain(|k| k != &p.key);
            if let Some(c) = &p.controller {
                if let Some(n) = self.controller_pods.get_mut(c) {
                    *n -= 1;
                    if *n <= 0 {
                        self.controller_pods.remove(c);
                    }
                }
            }
        }
    }
}

/// All nodes, and where each known pod is.
#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Pod key -> node name, for pods bound or assumed.
    pub pod_node: HashMap<String, String>,
    /// Pods bound to a node the cache does not know (yet).
    orphans: HashMap<String, Arc<PodInfo>>,
    /// Pending pods nominated to a node by preemption: node -> key -> pod.
    nominated: HashMap<String, HashMap<String, Arc<PodInfo>>>,
    nominated_node: HashMap<String, String>,
    /// PodDisruptionBudgets by `namespace/name`, for preemption.
    pub pdbs: BTreeMap<String, Pdb>,
    /// Claims, volumes and storage classes, for volume binding.
    pub volumes: crate::volumes::Volumes,
}

/// What preemption reads of a PodDisruptionBudget.
#[derive(Debug, Clone)]
pub struct Pdb {
    pub namespace: String,
    pub selector: Option<LabelSelector>,
    pub disruptions_allowed: i32,
    /// Pods already being disrupted (status.disruptedPods), not counted again.
    pub disrupted: Vec<String>,
}

impl Pdb {
    pub fn new(pdb: &PodDisruptionBudget) -> Pdb {
        let status = pdb.status.as_ref();
        Pdb {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector: pdb.spec.as_ref().and_then(|s| s.selector.clone()),
            disruptions_allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status.and_then(|s| s.disrupted_pods.as_ref()).map(|m| m.keys().cloned().collect()).unwrap_or_default(),
        }
    }

    /// Does this budget cover `pod`? As upstream's preemption, an empty
    /// selector and a pod without labels match nothing.
    pub fn covers(&self, pod: &PodInfo) -> bool {
        let empty = self.selector.as_ref().is_none_or(|s| s.match_labels.as_ref().is_none_or(|m| m.is_empty()) && s.match_expressions.as_ref().is_none_or(|e| e.is_empty()));
        self.namespace == pod.namespace && !empty && !pod.labels.is_empty() && crate::labels::selector_matches(self.selector.as_ref(), &pod.labels)
    }
}

impl Cache {
    /// Adds or updates a node; true when something the filters look at changed.
    pub fn set_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name.clone()).or_default();
        let before = (info.labels.clone(), info.taints.clone(), info.unschedulable, info.allocatable.clone(), info.allowed_pods);
        info.set_node(node);
        let changed = before != (info.labels.clone(), info.taints.clone(), info.unschedulable, info.allocatable.clone(), info.allowed_pods);
        let adopt: Vec<String> = self.orphans.iter().filter(|(_, p)| self.pod_node.get(&p.key) == Some(&name)).map(|(k, _)| k.clone()).collect();
        for k in adopt {
            if let Some(p) = self.orphans.remove(&k) {
                info.add_pod(p);
            }
        }
        changed
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.remove(name) {
            for (k, p) in info.pods {
                self.orphans.insert(k, p);
            }
        }
    }

    /// Records (or moves) a pod bound or assumed to `node`.
    pub fn set_pod(&mut self, p: Arc<PodInfo>, node: &str) {
        self.remove_pod(&p.key);
        self.pod_node.insert(p.key.clone(), node.to_string());
        match self.nodes.get_mut(node) {
            Some(info) => info.add_pod(p),
            None => {
                self.orphans.insert(p.key.clone(), p);
            }
        }
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let node = self.pod_node.remove(key)?;
        self.orphans.remove(key).or_else(|| self.nodes.get_mut(&node).and_then(|n| n.remove_pod(key)))
    }

    /// Records where a pending pod is nominated (None: nowhere).
    pub fn set_nominated(&mut self, key: &str, node: Option<&str>, pod: Option<Arc<PodInfo>>) {
        if let Some(old) = self.nominated_node.remove(key) {
            if let Some(m) = self.nominated.get_mut(&old) {
                m.remove(key);
                if m.is_empty() {
                    self.nominated.remove(&old);
                }
            }
        }
        if let (Some(node), Some(pod)) = (node.filter(|n| !n.is_empty()), pod) {
            self.nominated_node.insert(key.to_string(), node.to_string());
            self.nominated.entry(node.to_string()).or_default().insert(key.to_string(), pod);
        }
    }

    /// Pods nominated to `node` that `pod` must leave room for (at least its priority).
    pub fn nominated_for(&self, node: &str, pod: &PodInfo) -> Vec<Arc<PodInfo>> {
        self.nominated
            .get(node)
            .map(|m| m.values().filter(|p| p.key != pod.key && p.priority >= pod.priority).cloned().collect())
            .unwrap_or_default()
    }

    pub fn pod(&self, key: &str) -> Option<&Arc<PodInfo>> {
        let node = self.pod_node.get(key)?;
        self.nodes.get(node).and_then(|n| n.pods.get(key)).or_else(|| self.orphans.get(key))
    }
}
