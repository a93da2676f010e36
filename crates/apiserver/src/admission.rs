//! Admission: what the server decides about an object beyond its own
//! validity — its namespace must exist and not be terminating, Services
//! get cluster IPs and node ports from the configured ranges, and pods their
//! priority (`priority.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::net::Ipv4Addr;

use rand::Rng;
use resources::catalog::{self, ResourceInfo};
use resources::validation::{ErrorType, FieldError};
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::{key, name_of, Registry};

/// An IPv4 CIDR block.
#[derive(Clone, Copy, Debug)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> anyhow::Result<Cidr> {
        let (ip, len) = s.split_once('/').ok_or_else(|| anyhow::anyhow!("{s:?} is not a CIDR (want a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| anyhow::anyhow!("{s:?}: bad IPv4 address"))?;
        let prefix: u8 = len.parse().ok().filter(|p| *p <= 30).ok_or_else(|| anyhow::anyhow!("{s:?}: prefix must be 0-30"))?;
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Ok(Cidr { base: u32::from(ip) & mask, prefix })
    }
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(self.base) < self.size()
    }
    /// The n-th address of the block (1 is the API server's service IP).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

pub struct Admission {
    pub service_cidr: Cidr,
    pub node_ports: (u16, u16),
    /// Held from allocating a Service's IP and ports until its write is
    /// stored, so two Services never get the same values.
    pub service_writes: tokio::sync::Mutex<()>,
    /// What each stored Service holds, by key, as of the revision it was
    /// read at: a create then re-reads only the Services that changed
    /// instead of decoding all of them (10,000 Services made it O(n²)).
    allocated: std::sync::Mutex<HashMap<String, (store::Revision, Arc<Allocated>)>>,
}

/// The values a Service holds from the allocators.
#[derive(serde::Deserialize, Default)]
struct Allocated {
    #[serde(default)]
    metadata: AllocatedMeta,
    #[serde(default)]
    spec: AllocatedSpec,
}

#[derive(serde::Deserialize, Default)]
struct AllocatedMeta {
    #[serde(default)]
    uid: String,
}

#[derive(serde::Deserialize, Default)]
struct AllocatedSpec {
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<String>,
    #[serde(default)]
    ports: Vec<AllocatedPort>,
    #[serde(default, rename = "healthCheckNodePort")]
    health_check_node_port: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct AllocatedPort {
    #[serde(default, rename = "nodePort")]
    node_port: Option<u64>,
}

fn invalid(field: &str, value: Value, detail: String) -> FieldError {
    FieldError { error_type: ErrorType::Invalid, field: field.into(), value: Some(value), detail, supported: vec![] }
}

impl Admission {
    pub fn new(service_cidr: Cidr, node_ports: (u16, u16)) -> Self {
        Admission { service_cidr, node_ports, service_writes: tokio::sync::Mutex::new(()), allocated: Default::default() }
    }

    pub async fn admit_create(&self, reg: &Registry, info: &ResourceInfo, ns: Option<&str>, obj: &mut Value, dry_run: bool) -> ApiResult<()> {
        if let (true, Some(ns)) = (info.namespaced, ns) {
            let ns_info = catalog::lookup("", "v1", "namespaces").unwrap();
            match reg.store.get(&key(ns_info, None, ns)).await? {
                None => return Err(ApiError::namespace_not_found(ns)),
                Some(kv) => {
                    let nsobj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
                    if nsobj["metadata"]["deletionTimestamp"].is_string() {
                        let why = format!("unable to create new content in namespace {ns} because it is being terminated");
                        let mut e = ApiError::forbidden(info, name_of(obj), &why);
                        e.details.as_mut().unwrap()["causes"] =
                            json!([{"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"}]);
                        return Err(e);
                    }
                }
            }
        }
        match (info.group, info.kind) {
            ("", "Service") => self.allocate(reg, info, obj, None).await?,
            ("", "Pod") => {
                crate::service_account_admission::admit_new_pod(reg, info, obj).await?;
                crate::priority::admit_new_pod(reg, info, obj).await?;
                crate::runtime_class::admit_new_pod(reg, info, obj).await?;
                crate::limit_ranger::admit_pod(reg, info, obj).await?;
            }
            ("", "PersistentVolumeClaim") => {
                crate::storage_admission::admit_new_claim(reg, obj);
                crate::limit_ranger::admit_claim(reg, info, obj).await?;
            }
            ("", "PersistentVolume") => crate::storage_admission::admit_new_volume(obj),
            ("scheduling.k8s.io", "PriorityClass") => crate::priority::admit_class(reg, info, obj)?,
            _ => {}
        }
        // Quota comes last, to see the object as stored.
        match ns {
            Some(ns) if info.namespaced => crate::quota_admission::admit(reg, info, ns, obj, None, dry_run).await,
            _ => Ok(()),
        }
    }

    pub async fn admit_update(&self, reg: &Registry, info: &ResourceInfo, subresource: Option<&str>, new: &mut Value, old: &Value, dry_run: bool) -> ApiResult<()> {
        match (info.group, info.kind) {
            ("", "Service") => self.allocate(reg, info, new, Some(old)).await?,
            ("scheduling.k8s.io", "PriorityClass") => crate::priority::admit_class(reg, info, new)?,
            _ => {}
        }
        // Status and other subresources change no usage a user asked for.
        if subresource.is_some() {
            return Ok(());
        }
        if (info.group, info.kind) == ("", "PersistentVolumeClaim") {
            crate::storage_admission::admit_claim_resize(reg, info, new, old)?;
            crate::limit_ranger::admit_claim(reg, info, new).await?;
        }
        match new["metadata"]["namespace"].as_str() {
            Some(ns) if info.namespaced => crate::quota_admission::admit(reg, info, ns, new, Some(old), dry_run).await,
            _ => Ok(()),
        }
    }

    /// Values in use by stored services other than `except_uid`.
    async fn in_use(&self, reg: &Registry, except_uid: &str) -> ApiResult<(HashSet<String>, HashSet<u64>)> {
        reg.cache.sync().await?;
        let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
        let snapshot = reg.cache.all("services");
        let mut memo = self.allocated.lock().unwrap_or_else(|e| e.into_inner());
        let mut current = HashMap::with_capacity(snapshot.len());
        for svc in snapshot {
            let held = match memo.remove(&svc.key) {
                Some((rev, held)) if rev == svc.rev => held,
                _ => Arc::new(serde_json::from_slice(svc.json()).unwrap_or_default()),
            };
            if held.metadata.uid != except_uid {
                ips.extend(held.spec.cluster_ips.iter().cloned());
                ports.extend(held.spec.ports.iter().filter_map(|p| p.node_port));
                ports.extend(held.spec.health_check_node_port);
            }
            current.insert(svc.key.clone(), (svc.rev, held));
        }
        *memo = current;
        Ok((ips, ports))
    }

    async fn allocate(&self, reg: &Registry, info: &ResourceInfo, svc: &mut Value, old: Option<&Value>) -> ApiResult<()> {
        let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
        // Allocated values survive updates that leave them out, as upstream.
        if let Some(old) = old {
            if svc["spec"]["clusterIP"].as_str().unwrap_or("").is_empty() && ty != "ExternalName" {
                for k in ["clusterIP", "clusterIPs"] {
                    if !old["spec"][k].is_null() {
                        svc["spec"][k] = old["spec"][k].clone();
                    }
                }
            }
            let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
            for p in svc["spec"]["ports"].as_array_mut().into_iter().flatten() {
                if p["nodePort"].is_null() && ty != "ClusterIP" {
                    if let Some(op) = old_ports.iter().find(|op| op["port"] == p["port"] && op["protocol"] == p["protocol"]) {
                        if !op["nodePort"].is_null() {
                            p["nodePort"] = op["nodePort"].clone();
                        }
                    }
                }
            }
        }
        let uid = svc["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let (ips, ports) = self.in_use(reg, &uid).await?;
        let mut errs = Vec::new();
        let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        let unchanged = old.is_some_and(|o| o["spec"]["clusterIP"].as_str() == Some(requested.as_str()));
        if ty == "ExternalName" {
            // No cluster IP for a DNS alias.
        } else if requested == "None" {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        } else if requested.is_empty() {
            let ip = self.free_ip(&ips).ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
        } else if !unchanged {
            let bad = |why: String| invalid("spec.clusterIPs", json!([requested]), format!("failed to allocate IP {requested}: {why}"));
            match requested.parse::<Ipv4Addr>() {
                Ok(ip) if !self.service_cidr.contains(ip) => errs.push(bad(format!(
                    "the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                    self.service_cidr
                ))),
                Ok(_) if ips.contains(&requested) => errs.push(bad("provided IP is already allocated".into())),
                Ok(_) => svc["spec"]["clusterIPs"] = json!([requested]),
                Err(_) => {} // validation reports malformed IPs
            }
        }
        // Node ports of other Services, and then this one's as they are claimed.
        let mut taken = ports;
        if ty == "NodePort" || ty == "LoadBalancer" {
            let old_ports: HashSet<u64> = old
                .map(|o| o["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_u64()).collect())
                .unwrap_or_default();
            for (i, p) in svc["spec"]["ports"].as_array_mut().into_iter().flatten().enumerate() {
                let field = format!("spec.ports[{i}].nodePort");
                let requested = p["nodePort"].as_u64();
                let kept = requested.is_some_and(|n| old_ports.contains(&n));
                if let Some(n) = self.claim_node_port(requested, kept, &field, "nodePort", &mut taken, &mut errs)? {
                    p["nodePort"] = json!(n);
                }
            }
        } else if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            // Node ports are released when a service stops needing them.
            for p in ports {
                p.as_object_mut().map(|m| m.remove("nodePort"));
            }
        }
        self.allocate_health_check_port(svc, old, &ty, &mut taken, &mut errs)?;
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(info, name_of(svc), &errs))
        }
    }

    /// `spec.healthCheckNodePort`, as upstream: a LoadBalancer Service with
    /// `externalTrafficPolicy: Local` gets one from the node port range (the
    /// node proxies answer it with their count of local endpoints); it is
    /// kept across updates and released when the Service stops needing it.
    fn allocate_health_check_port(&self, svc: &mut Value, old: Option<&Value>, ty: &str, taken: &mut HashSet<u64>, errs: &mut Vec<FieldError>) -> ApiResult<()> {
        let needs = ty == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"] == "Local";
        let field = "spec.healthCheckNodePort";
        let old_port = old.and_then(|o| o["spec"]["healthCheckNodePort"].as_u64());
        let spec = &mut svc["spec"];
        if !needs {
            match spec["healthCheckNodePort"].as_u64() {
                Some(n) if n != 0 && Some(n) != old_port => errs.push(invalid(field, json!(n),
                    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'".into())),
                _ => {
                    spec.as_object_mut().map(|m| m.remove("healthCheckNodePort"));
                }
            }
            return Ok(());
        }
        let requested = spec["healthCheckNodePort"].as_u64().filter(|n| *n != 0).or(old_port);
        let kept = requested.is_some() && requested == old_port;
        if let Some(n) = self.claim_node_port(requested, kept, field, "healthCheckNodePort", taken, errs)? {
            spec["healthCheckNodePort"] = json!(n);
        }
        Ok(())
    }

    /// One node port of a Service (a `nodePort` or the `healthCheckNodePort`):
    /// one the Service had before (`kept`) stays, a requested one must be in
    /// the range and not `taken`, and without one a free one is allocated.
    /// Each claimed port joins `taken`; returns the port the field holds.
    fn claim_node_port(&self, requested: Option<u64>, kept: bool, field: &str, what: &str, taken: &mut HashSet<u64>, errs: &mut Vec<FieldError>) -> ApiResult<Option<u64>> {
        let (lo, hi) = self.node_ports;
        match requested {
            Some(n) if kept => {
                taken.insert(n);
            }
            Some(n) if n < lo as u64 || n > hi as u64 => errs.push(invalid(field, json!(n), format!(
                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
            ))),
            Some(n) if !taken.insert(n) => errs.push(invalid(field, json!(n), "provided port is already allocated".into())),
            Some(_) => {}
            None => {
                let n = free_port(taken, lo, hi).ok_or_else(|| ApiError::internal(format!("failed to allocate a {what}: range is full")))?;
                taken.insert(n);
                return Ok(Some(n));
            }
        }
        Ok(requested)
    }

    fn free_ip(&self, used: &HashSet<String>) -> Option<String> {
        let size = self.service_cidr.size();
        let start = rand::thread_rng().gen_range(2..size - 1);
        // Skip the network address, .1 (the kubernetes service) and broadcast.
        (0..size - 3)
            .map(|i| 2 + (start - 2 + i) % (size - 3))
            .map(|n| self.service_cidr.nth(n).to_string())
            .find(|ip| !used.contains(ip))
    }
}

fn free_port(taken: &HashSet<u64>, lo: u16, hi: u16) -> Option<u64> {
    let span = (hi - lo) as u64 + 1;
    let start = rand::thread_rng().gen_range(0..span);
    (0..span).map(|i| lo as u64 + (start + i) % span).find(|p| !taken.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c = Cidr::parse("10.43.0.0/16").unwrap();
        assert_eq!(c.nth(1).to_string(), "10.43.0.1");
        assert!(c.contains("10.43.255.254".parse().unwrap()));
        assert!(!c.contains("10.44.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.43.0.0").is_err());
    }

    #[test]
    fn free_ports_stay_in_range() {
        let taken: HashSet<u64> = (30000..30010).collect();
        let p = free_port(&taken, 30000, 30010).unwrap();
        assert_eq!(p, 30010);
        assert!(free_port(&(30000..=30010).collect(), 30000, 30010).is_none());
    }

    #[test]
    fn health_check_node_port_follows_type_and_policy() {
        let adm = Admission::new(Cidr::parse("10.43.0.0/16").unwrap(), (30000, 30002));
        let run = |svc: &mut Value, old: Option<&Value>, taken: &mut HashSet<u64>| {
            let mut errs = Vec::new();
            let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP").to_string();
            adm.allocate_health_check_port(svc, old, &ty, taken, &mut errs).unwrap();
            errs.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect::<Vec<_>>()
        };
        let mut taken: HashSet<u64> = [30000].into();
        let mut local = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}});
        assert!(run(&mut local, None, &mut taken).is_empty());
        let port = local["spec"]["healthCheckNodePort"].as_u64().unwrap();
        assert!(port == 30001 || port == 30002, "allocated from the free node ports: {port}");
        let old = local.clone();
        let mut update = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}});
        assert!(run(&mut update, Some(&old), &mut [30000].into()).is_empty());
        assert_eq!(update["spec"]["healthCheckNodePort"], port, "kept when an update leaves it out");
        let mut cluster = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "healthCheckNodePort": port}});
        assert!(run(&mut cluster, Some(&old), &mut HashSet::new()).is_empty());
        assert!(cluster["spec"].get("healthCheckNodePort").is_none(), "released when no longer needed");
        let mut asked = json!({"spec": {"type": "NodePort", "healthCheckNodePort": 30002}});
        assert_eq!(run(&mut asked, None, &mut HashSet::new()), vec!["spec.healthCheckNodePort: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"]);
        let mut taken_port = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30000}});
        assert_eq!(run(&mut taken_port, None, &mut [30000].into()), vec!["spec.healthCheckNodePort: provided port is already allocated"]);
    }
}
