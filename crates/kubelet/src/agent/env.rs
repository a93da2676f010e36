//! Container environment, as kubelet's makeEnvironmentVariables: service
//! link variables, envFrom (configMaps and secrets, with prefix and
//! optional), env with valueFrom (configMap/secret keys, downward API
//! fields and resource fields) and `$(VAR)` expansion. Everything the
//! resolution reads is fetched beforehand into [`EnvSources`], so the
//! resolution itself is pure.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use resources::quantity::Quantity;

/// The pod facts the downward API exposes that are not in the Pod object yet.
#[derive(Clone, Debug, Default)]
pub struct FieldContext {
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    /// Node allocatable, the default for resource fields without a limit.
    pub node_cpu_milli: i64,
    pub node_memory: i64,
    pub node_ephemeral_storage: i64,
}

/// ConfigMaps and secrets of the pod's namespace (None = not found) and
/// the services whose variables the containers get.
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
    /// Services of the pod's namespace (with enableServiceLinks), plus `kubernetes` from `default`.
    pub services: Vec<Service>,
}

/// The configMap and secret names a container's environment refers to.
pub fn referenced_objects(c: &Container) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for from in c.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for e in c.env.iter().flatten() {
        let Some(vf) = &e.value_from else { continue };
        if let Some(r) = &vf.config_map_key_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &vf.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    (cms, secrets)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, String> {
    let mut out = cm.data.clone().unwrap_or_default();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
    }
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())).collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The resolved environment of a container, in order. Errors read like
/// upstream's CreateContainerConfigError messages.
pub fn resolve(pod: &Pod, c: &Container, ctx: &FieldContext, src: &EnvSources) -> Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let set = |order: &mut Vec<String>, values: &mut HashMap<String, String>, k: String, v: String| {
        if values.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match src.config_maps.get(&r.name).cloned().flatten() {
                Some(cm) => config_map_data(&cm),
                None if r.optional == Some(true) => continue,
                None => bail!("configmap \"{}\" not found", r.name),
            }
        } else if let Some(r) = &from.secret_ref {
            match src.secrets.get(&r.name).cloned().flatten() {
                Some(s) => secret_data(&s),
                None if r.optional == Some(true) => continue,
                None => bail!("secret \"{}\" not found", r.name),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            set(&mut order, &mut values, format!("{prefix}{k}"), v);
        }
    }
    // Service variables are visible to $(VAR) but explicit ones win.
    let service_vars = service_env(&src.services);
    let mut expansion: HashMap<String, String> = service_vars.iter().cloned().collect();
    expansion.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &|name| expansion.get(name).cloned())
        } else if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                match src.config_maps.get(&r.name).cloned().flatten() {
                    Some(cm) => match config_map_data(&cm).get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => bail!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name),
                    },
                    None if r.optional == Some(true) => continue,
                    None => bail!("configmap \"{}\" not found", r.name),
                }
            } else if let Some(r) = &vf.secret_key_ref {
                match src.secrets.get(&r.name).cloned().flatten() {
                    Some(s) => match secret_data(&s).get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => bail!("couldn't find key {} in Secret {ns}/{}", r.key, r.name),
                    },
                    None if r.optional == Some(true) => continue,
                    None => bail!("secret \"{}\" not found", r.name),
                }
            } else if let Some(f) = &vf.field_ref {
                field_value(pod, ctx, &f.field_path)?
            } else if let Some(r) = &vf.resource_field_ref {
                let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
                resource_value(c, ctx, &r.resource, divisor)?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        expansion.insert(e.name.clone(), value.clone());
        set(&mut order, &mut values, e.name.clone(), value);
    }
    let mut out: Vec<(String, String)> = order.into_iter().map(|k| { let v = values[&k].clone(); (k, v) }).collect();
    for (k, v) in service_vars {
        if !values.contains_key(&k) {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Expands `$(VAR)` references; `$$` is a literal `$`, and references to
/// unknown variables stay as written (upstream's expansion rules).
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut plain = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push_str(&input[plain..i]);
                    out.push('$');
                    i += 2;
                    plain = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        out.push_str(&input[plain..i]);
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        plain = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[plain..]);
    out
}

/// Docker-link style variables for services with a cluster IP.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = svc.metadata.name.clone().unwrap_or_default().to_uppercase().replace('-', "_");
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{name}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")), p.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port)));
        for p in &ports {
            let pr = proto(p);
            let prefix = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((prefix.clone(), format!("{}://{ip}:{}", pr.to_lowercase(), p.port)));
            out.push((format!("{prefix}_PROTO"), pr.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

fn quoted_map(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default())).collect::<Vec<_>>().join("\n")
}

/// `metadata.labels['app']` -> Some(("metadata.labels", "app")).
fn subscripted(path: &str) -> Option<(&str, &str)> {
    let (base, rest) = path.split_once("['")?;
    Some((base, rest.strip_suffix("']")?))
}

/// A downward API field of the pod (env fieldRef and downwardAPI volumes).
pub fn field_value(pod: &Pod, ctx: &FieldContext, path: &str) -> Result<String> {
    let md = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    if let Some((base, key)) = subscripted(path) {
        let map = match base {
            "metadata.labels" => md.labels.clone(),
            "metadata.annotations" => md.annotations.clone(),
            _ => bail!("unsupported fieldPath: {path}"),
        };
        return Ok(map.unwrap_or_default().get(key).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "metadata.labels" => quoted_map(&md.labels.clone().unwrap_or_default()),
        "metadata.annotations" => quoted_map(&md.annotations.clone().unwrap_or_default()),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone(),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        _ => bail!("unsupported fieldPath: {path}"),
    })
}

/// A resource field of a container (`limits.cpu`, `requests.memory`, ...)
/// divided by `divisor` and rounded up; limits default to node allocatable.
pub fn resource_value(c: &Container, ctx: &FieldContext, resource: &str, divisor: Option<&str>) -> Result<String> {
    let res = c.resources.clone().unwrap_or_default();
    let (kind, name) = resource.split_once('.').ok_or_else(|| anyhow!("unsupported container resource: {resource}"))?;
    let map = match kind {
        "limits" => res.limits.unwrap_or_default(),
        "requests" => res.requests.unwrap_or_default(),
        _ => bail!("unsupported container resource: {resource}"),
    };
    let q = map.get(name).and_then(|q| Quantity::parse(&q.0).ok());
    let div = divisor.filter(|d| !d.is_empty()).map(|d| Quantity::parse(d).map_err(|_| anyhow!("invalid divisor {d:?}"))).transpose()?;
    let ceil_div = |a: i64, b: i64| if b <= 0 { a } else { (a + b - 1) / b };
    let value = match name {
        "cpu" => {
            let milli = q.map(|q| q.milli_value()).unwrap_or(if kind == "limits" { ctx.node_cpu_milli } else { 0 });
            let d = div.map(|d| d.milli_value()).unwrap_or(1000);
            // Upstream reports at least 1 core for a non-zero request divided by 1.
            ceil_div(milli, d)
        }
        "memory" | "ephemeral-storage" => {
            let default = match (kind, name) {
                ("limits", "memory") => ctx.node_memory,
                ("limits", _) => ctx.node_ephemeral_storage,
                _ => 0,
            };
            let bytes = q.map(|q| q.value()).unwrap_or(default);
            ceil_div(bytes, div.map(|d| d.value()).unwrap_or(1))
        }
        _ => bail!("unsupported container resource: {resource}"),
    };
    Ok(value.to_string())
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
