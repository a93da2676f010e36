//! Endpoints and EndpointSlice controllers: for every Service with a
//! selector, the addresses of the pods it selects, split into ready and
//! not-ready, with the service's ports resolved against each pod (named
//! target ports looked up in the pod's container ports).
//!
//! Services without a selector are left alone (their endpoints are written
//! by someone else), as is `default/kubernetes`, which the API server keeps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use client::informer::{self, benign, ready, Watched};

use crate::slice_tracker::SliceTracker;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const MAX_PER_SLICE: usize = 100;
const MAX_ENDPOINT_ADDRESSES: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Service(String, String),
    Namespace(String),
    /// Periodic resync: every service, catching up after failed writes.
    All,
}

const RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn run(client: Client, (pods, pod_events): Watched<Pod>) {
    let (services, svc_events) = informer::watch(Api::<Service>::all(client.clone()), watcher::Config::default());
    let (endpoints, ep_events) = informer::watch(Api::<Endpoints>::all(client.clone()), watcher::Config::default());
    let slice_config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (slices, slice_events) = informer::watch(Api::<EndpointSlice>::all(client.clone()), slice_config);
    let ns_of = |o: &ObjectMeta| o.namespace.clone().unwrap_or_default();
    let keys = futures::stream::select_all([
        svc_events.map(move |s| Key::Service(ns_of(&s.metadata), s.name_any())).boxed(),
        pod_events.map(move |p| Key::Namespace(ns_of(&p.metadata))).boxed(),
        ep_events.map(move |e| Key::Service(ns_of(&e.metadata), e.name_any())).boxed(),
        slice_events
            .map(move |s| Key::Service(ns_of(&s.metadata), s.labels().get(SERVICE_NAME_LABEL).cloned().unwrap_or_default()))
            .boxed(),
        futures::stream::unfold((), |()| async {
            tokio::time::sleep(RESYNC).await;
            Some((Key::All, ()))
        })
        .boxed(),
    ]);
    let mut batches = keys.ready_chunks(4096);
    let c = Controller { client, services, pods, endpoints, slices, tracker: Default::default() };
    let mut synced = false;
    while let Some(batch) = batches.next().await {
        if !(ready(&c.services) && ready(&c.pods) && ready(&c.endpoints) && ready(&c.slices)) {
            continue;
        }
        let mut todo: BTreeSet<(String, String)> = BTreeSet::new();
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for key in batch {
            match key {
                Key::Service(ns, name) if !name.is_empty() => drop(todo.insert((ns, name))),
                Key::Namespace(ns) => drop(namespaces.insert(ns)),
                Key::All => synced = false,
                Key::Service(..) => {}
            }
        }
        if !synced {
            synced = true;
            todo.extend(c.services.state().iter().map(|s| (ns_of(&s.metadata), s.name_any())));
        }
        if !namespaces.is_empty() {
            for s in c.services.state() {
                let ns = ns_of(&s.metadata);
                if namespaces.contains(&ns) {
                    todo.insert((ns, s.name_any()));
                }
            }
        }
        let mut by_ns: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        // Only services that select pods read them (not, e.g., default/kubernetes).
        let wanted: BTreeSet<&String> = todo.iter().filter(|(ns, name)| c.selects_pods(ns, name)).map(|(ns, _)| ns).collect();
        for p in if wanted.is_empty() { Vec::new() } else { c.pods.state() } {
            let ns = ns_of(&p.metadata);
            if wanted.contains(&ns) {
                by_ns.entry(ns).or_default().push(p);
            }
        }
        for (ns, name) in &todo {
            if let Err(e) = c.sync(ns, name, by_ns.get(ns).map(Vec::as_slice).unwrap_or(&[])).await {
                if !benign(&e) {
                    tracing::warn!(namespace = ns, service = name, "syncing endpoints: {e}");
                }
            }
        }
    }
}

struct Controller {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    /// Our own slice writes the cache may not show yet.
    tracker: std::sync::Mutex<SliceTracker>,
}

impl Controller {
    fn selects_pods(&self, ns: &str, name: &str) -> bool {
        let svc = self.services.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns));
        svc.and_then(|s| s.spec.clone()).and_then(|s| s.selector).is_some_and(|s| !s.is_empty())
    }

    async fn sync(&self, ns: &str, name: &str, pods: &[Arc<Pod>]) -> kube::Result<()> {
        if ns == "default" && name == "kubernetes" {
            return Ok(());
        }
        let ep_api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let slice_api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let existing_slices: Vec<Arc<EndpointSlice>> = {
            let mut v: Vec<_> = self
                .slices
                .state()
                .into_iter()
                .filter(|s| s.namespace().as_deref() == Some(ns) && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name))
                .collect();
            v.sort_by_key(|s| s.name_any());
            v
        };
        let cached: Vec<(String, Option<String>)> = existing_slices.iter().map(|s| (s.name_any(), s.resource_version())).collect();
        if self.tracker.lock().unwrap().stale(ns, name, &cached) {
            // Our last write is not in the cache yet; its watch event syncs this service again.
            return Ok(());
        }
        let existing_ep = self.endpoints.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns));
        let Some(svc) = self.services.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns)) else {
            // The service is gone: so are its endpoints.
            if existing_ep.is_some() {
                ignore_missing(ep_api.delete(name, &DeleteParams::default()).await.map(drop))?;
            }
            for s in existing_slices {
                ignore_missing(slice_api.delete(&s.name_any(), &DeleteParams::default()).await.map(drop))?;
            }
            self.tracker.lock().unwrap().forget(ns, name);
            return Ok(());
        };
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.selector.as_ref().is_none_or(|s| s.is_empty()) || svc.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let selector = spec.selector.clone().unwrap_or_default();
        let selected: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                let labels = p.labels();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let desired = Desired::compute(&svc, &selected);
        self.write_endpoints(&ep_api, &svc, existing_ep, desired.subsets).await?;
        self.write_slices(&slice_api, &svc, existing_slices, desired.slices).await
    }

    async fn write_endpoints(&self, api: &Api<Endpoints>, svc: &Service, existing: Option<Arc<Endpoints>>, subsets: Vec<EndpointSubset>) -> kube::Result<()> {
        let mut labels = svc.labels().clone();
        if is_headless(svc) {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let mut subsets = subsets;
        let truncated = truncate(&mut subsets);
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match existing {
            Some(cur) => {
                let same_subsets = cur.subsets.as_ref().filter(|s| !s.is_empty()) == subsets.as_ref();
                let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
                let was_truncated = cur.annotations().contains_key(OVER_CAPACITY);
                if same_subsets && cur_labels == labels && was_truncated == truncated {
                    return Ok(());
                }
                let mut next = (*cur).clone();
                next.metadata.labels = Some(labels);
                let annotations = next.metadata.annotations.get_or_insert_with(Default::default);
                if truncated {
                    annotations.insert(OVER_CAPACITY.into(), "truncated".into());
                } else {
                    annotations.remove(OVER_CAPACITY);
                }
                next.subsets = subsets;
                api.replace(&svc.name_any(), &PostParams::default(), &next).await.map(drop)
            }
            None => {
                let annotations = truncated.then(|| BTreeMap::from([(OVER_CAPACITY.to_string(), "truncated".to_string())]));
                let ep = Endpoints {
                    metadata: ObjectMeta { name: Some(svc.name_any()), labels: Some(labels), annotations, ..Default::default() },
                    subsets,
                };
                api.create(&PostParams::default(), &ep).await.map(drop)
            }
        }
    }

    async fn write_slices(
        &self,
        api: &Api<EndpointSlice>,
        svc: &Service,
        existing: Vec<Arc<EndpointSlice>>,
        mut desired: Vec<(Vec<SlicePort>, Vec<Endpoint>)>,
    ) -> kube::Result<()> {
        if desired.is_empty() {
            // A placeholder slice, as upstream keeps for a service with no endpoints.
            desired.push((Vec::new(), Vec::new()));
        }
        let mut labels = svc.labels().clone();
        labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        if is_headless(svc) {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: svc.name_any(),
            uid: svc.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let mut existing = existing.into_iter();
        for (ports, endpoints) in desired {
            let ports = (!ports.is_empty()).then_some(ports);
            match existing.next() {
                Some(cur) => {
                    let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
                    if cur.endpoints == endpoints && cur.ports.as_ref().filter(|p| !p.is_empty()) == ports.as_ref() && cur_labels == labels {
                        continue;
                    }
                    let mut next = (*cur).clone();
                    next.metadata.labels = Some(labels.clone());
                    next.metadata.owner_references = Some(vec![owner.clone()]);
                    next.endpoints = endpoints;
                    next.ports = ports;
                    let written = api.replace(&cur.name_any(), &PostParams::default(), &next).await?;
                    self.track(svc, &written);
                }
                None => {
                    let mut prefix: String = svc.name_any().chars().take(57).collect();
                    prefix.push('-');
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(prefix),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints,
                        ports,
                    };
                    let written = api.create(&PostParams::default(), &slice).await?;
                    self.track(svc, &written);
                }
            }
        }
        for stale in existing {
            ignore_missing(api.delete(&stale.name_any(), &DeleteParams::default()).await.map(drop))?;
            self.tracker.lock().unwrap().deleted(&svc.namespace().unwrap_or_default(), &svc.name_any(), &stale.name_any());
        }
        Ok(())
    }

    fn track(&self, svc: &Service, written: &EndpointSlice) {
        let ns = svc.namespace().unwrap_or_default();
        self.tracker.lock().unwrap().wrote(&ns, &svc.name_any(), &written.name_any(), written.resource_version().as_deref());
    }
}

/// Upstream caps an Endpoints object at 1000 addresses (ready ones kept
/// first) and says so in an annotation; EndpointSlices carry them all.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let total: usize = subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum();
    if total <= MAX_ENDPOINT_ADDRESSES {
        return false;
    }
    let mut budget = MAX_ENDPOINT_ADDRESSES;
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    for s in subsets.iter_mut() {
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    true
}

fn ignore_missing(r: kube::Result<()>) -> kube::Result<()> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

/// The container port a service port targets on this pod, if any.
fn resolve_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                .map(|p| p.container_port)
                .or_else(|| name.parse().ok())
        }
    }
}

type PortKey = Vec<(Option<String>, i32, String, Option<String>)>;

struct Desired {
    subsets: Vec<EndpointSubset>,
    slices: Vec<(Vec<SlicePort>, Vec<Endpoint>)>,
}

impl Desired {
    fn compute(svc: &Service, pods: &[&Arc<Pod>]) -> Desired {
        let spec = svc.spec.clone().unwrap_or_default();
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let svc_ports = spec.ports.clone().unwrap_or_default();
        let headless = is_headless(svc);
        // Pods grouped by the ports they serve: one subset (and one set of slices) per group.
        let mut ep_groups: BTreeMap<PortKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
        let mut slice_groups: BTreeMap<PortKey, Vec<Endpoint>> = BTreeMap::new();
        for pod in pods {
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else { continue };
            if terminal(pod) {
                continue;
            }
            let ports: PortKey = svc_ports
                .iter()
                .filter_map(|sp| {
                    let n = resolve_port(pod, sp)?;
                    Some((sp.name.clone(), n, sp.protocol.clone().unwrap_or_else(|| "TCP".into()), sp.app_protocol.clone()))
                })
                .collect();
            if ports.is_empty() && !(svc_ports.is_empty() && headless) {
                continue;
            }
            let pod_spec = pod.spec.clone().unwrap_or_default();
            let hostname = pod_spec
                .hostname
                .clone()
                .filter(|h| !h.is_empty() && pod_spec.subdomain.as_deref() == Some(svc.name_any().as_str()) && pod.namespace() == svc.namespace());
            let target = ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..Default::default()
            };
            let node_name = pod_spec.node_name.clone().filter(|n| !n.is_empty());
            let is_ready = pod_ready(pod);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            // Endpoints: terminating pods only when not-ready addresses are published.
            if !terminating || publish_not_ready {
                let addr = EndpointAddress { ip: ip.clone(), hostname: hostname.clone(), node_name: node_name.clone(), target_ref: Some(target.clone()) };
                let group = ep_groups.entry(ports.clone()).or_default();
                if publish_not_ready || is_ready {
                    group.0.push(addr);
                } else {
                    group.1.push(addr);
                }
            }
            if !ip.contains(':') {
                let serving = publish_not_ready || is_ready;
                let endpoint = Endpoint {
                    addresses: vec![ip],
                    conditions: Some(EndpointConditions {
                        ready: Some(publish_not_ready || (serving && !terminating)),
                        serving: Some(serving),
                        terminating: Some(terminating),
                    }),
                    hostname,
                    node_name,
                    target_ref: Some(target),
                    ..Default::default()
                };
                slice_groups.entry(ports).or_default().push(endpoint);
            }
        }
        let subsets = ep_groups
            .into_iter()
            .map(|(ports, (mut ready, mut not_ready))| {
                ready.sort_by(|a, b| a.ip.cmp(&b.ip));
                not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
                let ports: Vec<EndpointPort> = ports
                    .into_iter()
                    .map(|(name, port, protocol, app_protocol)| EndpointPort { name, port, protocol: Some(protocol), app_protocol })
                    .collect();
                EndpointSubset {
                    addresses: (!ready.is_empty()).then_some(ready),
                    not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                    ports: (!ports.is_empty()).then_some(ports),
                }
            })
            .collect();
        let mut slices = Vec::new();
        for (ports, mut endpoints) in slice_groups {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            let ports: Vec<SlicePort> = ports
                .into_iter()
                .map(|(name, port, protocol, app_protocol)| SlicePort { name: Some(name.unwrap_or_default()), port: Some(port), protocol: Some(protocol), app_protocol })
                .collect();
            for chunk in endpoints.chunks(MAX_PER_SLICE) {
                slices.push((ports.clone(), chunk.to_vec()));
            }
        }
        Desired { subsets, slices }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .unwrap(),
        )
    }

    fn svc(extra: serde_json::Value) -> Service {
        let mut s = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
        });
        json_merge(&mut s, extra);
        serde_json::from_value(s).unwrap()
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn named_ports_resolve_per_pod_and_readiness_splits_addresses() {
        let p1 = pod("a", "10.42.0.5", true, "http", 8080);
        let p2 = pod("b", "10.42.0.6", false, "http", 8080);
        let p3 = pod("c", "10.42.0.7", true, "other", 9090); // no port named http: left out
        let d = Desired::compute(&svc(json!({})), &[&p1, &p2, &p3]);
        assert_eq!(d.subsets.len(), 1);
        let s = &d.subsets[0];
        assert_eq!(s.addresses.as_ref().unwrap()[0].ip, "10.42.0.5");
        assert_eq!(s.not_ready_addresses.as_ref().unwrap()[0].ip, "10.42.0.6");
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(d.slices.len(), 1);
        let eps = &d.slices[0].1;
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].conditions.as_ref().unwrap().ready, Some(false));
    }

    #[test]
    fn endpoints_are_capped_at_1000_addresses_ready_first() {
        let addr = |i: usize| EndpointAddress { ip: format!("10.42.{}.{}", i / 250, i % 250), ..Default::default() };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..900).map(addr).collect()),
            not_ready_addresses: Some((900..1200).map(addr).collect()),
            ports: None,
        }];
        assert!(truncate(&mut subsets));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 900);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 100);
        assert!(!truncate(&mut subsets));
    }

    #[test]
    fn publish_not_ready_and_headless_hostnames() {
        let mut p = (*pod("a", "10.42.0.5", false, "http", 8080)).clone();
        p.spec.as_mut().unwrap().hostname = Some("a0".into());
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        let p = Arc::new(p);
        let d = Desired::compute(&svc(json!({"spec": {"clusterIP": "None", "publishNotReadyAddresses": true}})), &[&p]);
        let addr = &d.subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(addr.hostname.as_deref(), Some("a0"));
        assert_eq!(d.slices[0].1[0].conditions.as_ref().unwrap().ready, Some(true));
    }

    #[test]
    fn slice_endpoints_carry_hostname_node_and_pod() {
        let with = |hostname: &str, subdomain: &str| {
            let mut p = (*pod("a", "10.42.0.5", true, "http", 8080)).clone();
            p.spec.as_mut().unwrap().hostname = Some(hostname.into());
            p.spec.as_mut().unwrap().subdomain = Some(subdomain.into());
            Arc::new(p)
        };
        let headless = svc(json!({"spec": {"clusterIP": "None"}}));
        let d = Desired::compute(&headless, &[&with("web-0", "web")]);
        let e = &d.slices[0].1[0];
        assert_eq!(e.hostname.as_deref(), Some("web-0"), "hostname when the subdomain is the Service's name");
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        let target = e.target_ref.as_ref().unwrap();
        assert_eq!((target.kind.as_deref(), target.name.as_deref(), target.namespace.as_deref(), target.uid.as_deref()), (Some("Pod"), Some("a"), Some("default"), Some("uid-a")));
        // Another subdomain, or no hostname: none.
        assert_eq!(Desired::compute(&headless, &[&with("web-0", "other")]).slices[0].1[0].hostname, None);
        assert_eq!(Desired::compute(&headless, &[&with("", "web")]).slices[0].1[0].hostname, None);
    }
}
