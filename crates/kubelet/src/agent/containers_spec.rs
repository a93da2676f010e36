//! From the Pod spec to what the runtime is asked for: QoS class and pod
//! cgroup, cgroup limits, security settings, the sandbox's DNS and the
//! image pull policy — kubelet's kuberuntime_container_linux.go and
//! dns.go behaviour.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use resources::quantity::Quantity;
use runtime::cri::{DnsConfig, LinuxResources, SecurityConfig};

pub const CPU_PERIOD: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MIN_QUOTA: i64 = 1000;

/// `Guaranteed`, `Burstable` or `BestEffort`, as the API server computed it at creation.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = serde_json::to_value(pod.spec.clone().unwrap_or_default()).unwrap_or_default();
    resources::strategy::qos_class(&spec)
}

/// The pod's cgroup below the cgroup root: guaranteed pods sit directly
/// under `skiff/`, others under their QoS class.
pub fn cgroup_parent(pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    match qos_class(pod) {
        "Guaranteed" => format!("skiff/pod{uid}"),
        other => format!("skiff/{}/pod{uid}", other.to_lowercase()),
    }
}

fn quantity(c: &Container, limits: bool, name: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let map = if limits { r.limits.as_ref()? } else { r.requests.as_ref()? };
    Quantity::parse(&map.get(name)?.0).ok()
}

/// cpu.shares = requests.cpu in millicores * 1024 / 1000 (at least 2; a
/// limit stands in for a missing request); CFS quota from limits.cpu over a
/// 100 ms period; the memory limit in bytes.
pub fn linux_resources(c: &Container) -> LinuxResources {
    let req_cpu = quantity(c, false, "cpu").or_else(|| quantity(c, true, "cpu")).map(|q| q.milli_value()).unwrap_or(0);
    let shares = ((req_cpu as u64) * 1024 / 1000).max(MIN_SHARES);
    let (cpu_quota, cpu_period) = match quantity(c, true, "cpu").map(|q| q.milli_value()).filter(|m| *m > 0) {
        Some(milli) => (Some((milli * CPU_PERIOD as i64 / 1000).max(MIN_QUOTA)), Some(CPU_PERIOD)),
        None => (None, None),
    };
    let memory_limit = quantity(c, true, "memory").map(|q| q.value()).filter(|v| *v > 0);
    LinuxResources { cpu_shares: Some(shares), cpu_quota, cpu_period, memory_limit, pids_limit: None }
}

/// Pod-level security settings with the container's overriding them.
pub fn security(spec: &PodSpec, c: &Container) -> SecurityConfig {
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let mut groups = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(g) = psc.fs_group {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let caps = csc.capabilities.clone().unwrap_or_default();
    SecurityConfig {
        run_as_user: csc.run_as_user.or(psc.run_as_user),
        run_as_group: csc.run_as_group.or(psc.run_as_group),
        run_as_non_root: csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false),
        supplemental_groups: groups,
        readonly_rootfs: csc.read_only_root_filesystem.unwrap_or(false),
        privileged: csc.privileged.unwrap_or(false),
        capabilities_add: caps.add.unwrap_or_default(),
        capabilities_drop: caps.drop.unwrap_or_default(),
        no_new_privs: csc.allow_privilege_escalation == Some(false),
    }
}

/// What a resolv.conf says, read as the kubelet does: nameservers add up,
/// the last `search` line wins (trailing dots dropped, `.` left out),
/// options are merged by name with later ones winning; `domain` lines and
/// comments are ignored.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut d = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => d.servers.extend(words.next().map(str::to_string)),
            Some("search") => d.searches = words.filter(|w| *w != ".").map(|w| w.trim_end_matches('.').to_string()).collect(),
            Some("options") => merge_options(&mut d.options, words.map(str::to_string)),
            _ => {}
        }
    }
    d
}

/// Options merged by name (the part before `:`): a later one replaces an
/// earlier one in place, new ones are appended.
fn merge_options(options: &mut Vec<String>, new: impl IntoIterator<Item = String>) {
    for o in new {
        let name = o.split(':').next().unwrap_or_default().to_string();
        match options.iter_mut().find(|x| x.split(':').next() == Some(name.as_str())) {
            Some(x) => *x = o,
            None => options.push(o),
        }
    }
}

/// Upstream's limits on what a pod's resolv.conf may hold.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_LINE: usize = 2048;
const MAX_SEARCH_DOMAIN: usize = 253;

fn omit_duplicates(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

/// The pod's DNS settings per dnsPolicy (ClusterFirst, ClusterFirstWithHostNet,
/// Default, None) merged with spec.dnsConfig.
pub fn dns_config(pod: &Pod, cluster_dns: &str, cluster_domain: &str, host_resolv: &str) -> DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !cluster_dns.is_empty();
    let mut d = if cluster {
        DnsConfig {
            servers: vec![cluster_dns.to_string()],
            searches: vec![format!("{ns}.svc.{cluster_domain}"), format!("svc.{cluster_domain}"), cluster_domain.to_string()],
            options: vec!["ndots:5".into()],
        }
    } else if policy == "None" {
        DnsConfig::default()
    } else {
        parse_resolv_conf(host_resolv)
    };
    if cluster {
        // The host's search domains follow the cluster ones, as upstream does.
        d.searches.extend(parse_resolv_conf(host_resolv).searches);
    }
    if let Some(extra) = &spec.dns_config {
        d.servers.extend(extra.nameservers.iter().flatten().cloned());
        d.searches.extend(extra.searches.iter().flatten().cloned());
        // A pod's option replaces the same-named one; no value renders the bare name.
        let pod_options = extra.options.iter().flatten().map(|o| match o.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
            None => o.name.clone().unwrap_or_default(),
        });
        merge_options(&mut d.options, pod_options);
    }
    omit_duplicates(&mut d.servers);
    omit_duplicates(&mut d.searches);
    d.servers.truncate(MAX_NAMESERVERS);
    // As the kubelet: at most 32 domains, none longer than 253 characters,
    // and the line cut from the end to 2048 characters.
    d.searches.truncate(MAX_SEARCHES);
    d.searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN);
    while d.searches.join(" ").len() > MAX_SEARCH_LINE {
        d.searches.pop();
    }
    d
}

/// The resolv.conf text for a DnsConfig (what the sandbox gets).
pub fn resolv_conf_text(d: &DnsConfig) -> String {
    let mut out = String::new();
    if !d.searches.is_empty() {
        out.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for s in &d.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    out
}

/// The effective imagePullPolicy: as written, else Always for `:latest` or
/// untagged references and IfNotPresent otherwise.
pub fn pull_policy(c: &Container) -> String {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = c.image.as_deref().unwrap_or_default();
    if image.contains('@') {
        return "IfNotPresent".into();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent".into(),
        _ => "Always".into(),
    }
}

/// Ephemeral containers (kubectl debug) as plain containers: same fields,
/// never restarted, no ports or probes (validation keeps those unset).
pub fn ephemeral_containers(spec: &PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| serde_json::to_value(e).ok().and_then(|v| serde_json::from_value(v).ok()))
        .collect()
}

/// Sidecars: init containers with restartPolicy Always.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn container(res: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "resources": res})).unwrap()
    }

    #[test]
    fn cpu_and_memory_math() {
        let r = linux_resources(&container(json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}})));
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(50_000), Some(100_000)));
        assert_eq!(r.memory_limit, Some(64 << 20));
        let r = linux_resources(&container(json!({})));
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit), (Some(2), None, None));
        let r = linux_resources(&container(json!({"requests": {"cpu": "1m"}, "limits": {"cpu": "1m"}})));
        assert_eq!((r.cpu_shares, r.cpu_quota), (Some(2), Some(1000)), "minimums");
        let r = linux_resources(&container(json!({"limits": {"cpu": "2"}})));
        assert_eq!((r.cpu_shares, r.cpu_quota), (Some(2048), Some(200_000)), "a limit stands in for the request");
    }

    #[test]
    fn qos_and_cgroups() {
        let g = pod(json!({"metadata": {"uid": "a-b"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}));
        assert_eq!(qos_class(&g), "Guaranteed");
        assert_eq!(cgroup_parent(&g), "skiff/poda-b");
        let b = pod(json!({"metadata": {"uid": "u"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}));
        assert_eq!(cgroup_parent(&b), "skiff/burstable/podu");
        let e = pod(json!({"metadata": {"uid": "u"}, "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(cgroup_parent(&e), "skiff/besteffort/podu");
    }

    #[test]
    fn dns_policies() {
        let host = "nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch corp.example\noptions edns0\n";
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": []}}));
        let d = dns_config(&p, "10.43.0.10", "cluster.local", host);
        assert_eq!(resolv_conf_text(&d), "search web.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.43.0.10\noptions ndots:5\n");
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "Default"}}));
        assert_eq!(resolv_conf_text(&dns_config(&p, "10.43.0.10", "cluster.local", host)), "search corp.example\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions edns0\n");
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "hostNetwork": true}}));
        assert_eq!(dns_config(&p, "10.43.0.10", "cluster.local", host).servers, vec!["1.1.1.1", "8.8.8.8"]);
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}}));
        assert_eq!(dns_config(&p, "10.43.0.10", "cluster.local", host).servers, vec!["10.43.0.10"]);
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}}));
        assert_eq!(resolv_conf_text(&dns_config(&p, "10.43.0.10", "cluster.local", host)), "search a.b\nnameserver 9.9.9.9\noptions ndots:2 rotate\n");
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}}));
        assert_eq!(dns_config(&p, "10.43.0.10", "cluster.local", "").options, vec!["ndots:1"]);
    }

    #[test]
    fn resolv_conf_read_as_the_kubelet_does() {
        let d = parse_resolv_conf("# comment\nnameserver 1.1.1.1\ndomain ignored.example\nsearch old.example\nsearch a.example. . b.example\noptions ndots:2 edns0\noptions ndots:3 rotate\nnameserver 8.8.8.8\n");
        assert_eq!(d.servers, vec!["1.1.1.1", "8.8.8.8"]);
        assert_eq!(d.searches, vec!["a.example", "b.example"], "last search line wins, dots trimmed");
        assert_eq!(d.options, vec!["ndots:3", "edns0", "rotate"], "merged by name, later wins");
    }

    #[test]
    fn dns_config_merges_as_upstream() {
        let host = "nameserver 1.1.1.1\nsearch corp.example web.svc.cluster.local\noptions edns0 timeout:2\n";
        // ClusterFirst: the host's options are not carried over; duplicate searches go.
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [],
            "dnsConfig": {"nameservers": ["10.43.0.10", "9.9.9.9"], "searches": ["corp.example", "x.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}, {"name": "attempts", "value": ""}]}}}));
        let d = dns_config(&p, "10.43.0.10", "cluster.local", host);
        assert_eq!(d.servers, vec!["10.43.0.10", "9.9.9.9"]);
        assert_eq!(d.searches, vec!["web.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example", "x.example"]);
        assert_eq!(d.options, vec!["ndots:2", "single-request", "attempts"], "the pod's ndots replaces ndots:5 in place");
        // Default: the host's settings plus the pod's.
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "Default",
            "dnsConfig": {"options": [{"name": "timeout", "value": "5"}]}}}));
        let d = dns_config(&p, "10.43.0.10", "cluster.local", host);
        assert_eq!((d.servers, d.options), (vec!["1.1.1.1".to_string()], vec!["edns0".to_string(), "timeout:5".to_string()]));
        // None without dnsConfig: nothing at all.
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "None"}}));
        assert_eq!(resolv_conf_text(&dns_config(&p, "10.43.0.10", "cluster.local", host)), "");
        // No cluster DNS known: ClusterFirst falls back to the host's.
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": []}}));
        assert_eq!(dns_config(&p, "", "cluster.local", host).servers, vec!["1.1.1.1"]);
    }

    #[test]
    fn dns_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let long = "a".repeat(254);
        let mut searches = vec![long.clone()];
        searches.extend(many.clone());
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"], "searches": searches}}}));
        let d = dns_config(&p, "10.43.0.10", "cluster.local", "");
        assert_eq!(d.servers.len(), 3);
        assert_eq!(d.searches.len(), 31, "32 kept, then the over-long one dropped");
        assert!(!d.searches.contains(&long));
        let wide: Vec<String> = (0..12).map(|i| format!("{i}{}", "b".repeat(200))).collect();
        let p = pod(json!({"metadata": {"namespace": "web"}, "spec": {"containers": [], "dnsPolicy": "None", "dnsConfig": {"searches": wide}}}));
        let d = dns_config(&p, "10.43.0.10", "cluster.local", "");
        assert!(d.searches.join(" ").len() <= 2048 && d.searches.len() == 10, "cut from the end to 2048 characters");
    }

    #[test]
    fn ephemeral_containers_become_containers() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "app", "stdin": true}]})).unwrap();
        let e = ephemeral_containers(&spec);
        assert_eq!((e[0].name.as_str(), e[0].image.as_deref(), e[0].stdin), ("debug", Some("busybox"), Some(true)));
    }

    #[test]
    fn pull_policies() {
        let c = |image: &str, policy: Option<&str>| {
            let mut c: Container = serde_json::from_value(json!({"name": "c", "image": image})).unwrap();
            c.image_pull_policy = policy.map(str::to_string);
            pull_policy(&c)
        };
        assert_eq!(c("busybox", None), "Always");
        assert_eq!(c("busybox:latest", None), "Always");
        assert_eq!(c("localhost:5000/busybox", None), "Always");
        assert_eq!(c("localhost:5000/busybox:1.36", None), "IfNotPresent");
        assert_eq!(c("busybox@sha256:abc", None), "IfNotPresent");
        assert_eq!(c("busybox", Some("Never")), "Never");
    }

    #[test]
    fn security_merges_pod_and_container() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [5]}})).unwrap();
        let c: Container = serde_json::from_value(json!({"name": "c", "securityContext": {"runAsUser": 2000, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}})).unwrap();
        let s = security(&spec, &c);
        assert_eq!((s.run_as_user, s.run_as_group), (Some(2000), Some(3000)));
        assert_eq!(s.supplemental_groups, vec![5, 2000]);
        assert!(s.no_new_privs && s.readonly_rootfs && !s.privileged);
        assert_eq!((s.capabilities_add, s.capabilities_drop), (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()]));
    }
}
