//! Resource usage as the kubelet publishes it: `/metrics/resource` (the
//! Prometheus text metrics-server scrapes: cumulative CPU seconds and the
//! memory working set of the node, each pod and each container, with
//! millisecond timestamps) and `/stats/summary` (the same numbers as JSON).
//! Containers are read from their cgroups through the runtime; the node
//! from /proc, which works on either cgroup layout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use runtime::cri::{ContainerStats, RuntimeService};
use serde_json::{json, Value};

use super::lookup::HttpError;

/// Node-wide usage: cumulative CPU nanoseconds and the memory working set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeUsage {
    pub cpu_ns: u64,
    pub memory_working_set: u64,
    pub memory_available: u64,
}

/// A container's usage with the pod it belongs to.
struct Sample {
    namespace: String,
    pod: String,
    uid: String,
    stats: ContainerStats,
}

async fn samples(rt: &dyn RuntimeService) -> Result<Vec<Sample>, HttpError> {
    let sandboxes: HashMap<String, (String, String, String)> = rt
        .list_pod_sandboxes()
        .await
        .map_err(HttpError::internal)?
        .into_iter()
        .map(|s| (s.id, (s.namespace, s.name, s.uid)))
        .collect();
    let mut out: Vec<Sample> = rt
        .list_container_stats()
        .await
        .map_err(HttpError::internal)?
        .into_iter()
        .filter_map(|stats| {
            let (namespace, pod, uid) = sandboxes.get(&stats.sandbox_id)?.clone();
            Some(Sample { namespace, pod, uid, stats })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.pod, &a.stats.name).cmp(&(&b.namespace, &b.pod, &b.stats.name)));
    Ok(out)
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `/metrics/resource`.
pub async fn resource(rt: &dyn RuntimeService) -> Result<String, HttpError> {
    let samples = samples(rt).await?;
    let now = SystemTime::now();
    Ok(render(node_usage(), &samples, now))
}

fn render(node: Option<NodeUsage>, samples: &[Sample], now: SystemTime) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, lines: Vec<String>| {
        out.push_str(&format!("# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"));
        for l in lines {
            out.push_str(&format!("{name}{l}\n"));
        }
    };
    let labels = |s: &Sample| format!("{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}", s.stats.name, s.namespace, s.pod);
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        samples.iter().map(|s| format!("{} {} {}", labels(s), s.stats.cpu_usage_ns as f64 / 1e9, millis(s.stats.timestamp))).collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
        samples.iter().map(|s| format!("{} {} {}", labels(s), s.stats.memory_working_set_bytes, millis(s.stats.timestamp))).collect(),
    );
    family(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
        samples.iter().map(|s| format!("{} {} {}", labels(s), seconds(s.stats.started_at), millis(s.stats.timestamp))).collect(),
    );
    let node_lines = |f: fn(&NodeUsage) -> String| node.iter().map(|n| format!(" {} {}", f(n), millis(now))).collect();
    family("node_cpu_usage_seconds_total", "Cumulative cpu time consumed by the node in core-seconds", "counter", node_lines(|n| (n.cpu_ns as f64 / 1e9).to_string()));
    family("node_memory_working_set_bytes", "Current working set of the node in bytes", "gauge", node_lines(|n| n.memory_working_set.to_string()));
    let mut pods: Vec<(String, String, u64, u64, SystemTime)> = Vec::new();
    for s in samples {
        match pods.last_mut() {
            Some(p) if p.0 == s.namespace && p.1 == s.pod => {
                p.2 += s.stats.cpu_usage_ns;
                p.3 += s.stats.memory_working_set_bytes;
            }
            _ => pods.push((s.namespace.clone(), s.pod.clone(), s.stats.cpu_usage_ns, s.stats.memory_working_set_bytes, s.stats.timestamp)),
        }
    }
    let pod_labels = |p: &(String, String, u64, u64, SystemTime)| format!("{{namespace=\"{}\",pod=\"{}\"}}", p.0, p.1);
    family(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
        pods.iter().map(|p| format!("{} {} {}", pod_labels(p), p.2 as f64 / 1e9, millis(p.4))).collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
        pods.iter().map(|p| format!("{} {} {}", pod_labels(p), p.3, millis(p.4))).collect(),
    );
    family(
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        vec![format!(" {}", u8::from(node.is_none()))],
    );
    out
}

/// The previous CPU reading per container id (and "" for the node), so
/// `/stats/summary` can report a rate (`usageNanoCores`) as the kubelet does.
static LAST_CPU: Mutex<Option<HashMap<String, (SystemTime, u64)>>> = Mutex::new(None);

fn nano_cores(key: &str, at: SystemTime, cpu_ns: u64) -> Option<u64> {
    let mut last = LAST_CPU.lock().unwrap();
    let map = last.get_or_insert_with(HashMap::new);
    let previous = map.insert(key.to_string(), (at, cpu_ns));
    let (then, before) = previous?;
    let elapsed = at.duration_since(then).ok()?.as_nanos();
    (elapsed > 0 && cpu_ns >= before).then(|| ((cpu_ns - before) as u128 * 1_000_000_000 / elapsed) as u64)
}

fn cpu_json(key: &str, at: SystemTime, cpu_ns: u64) -> Value {
    let mut cpu = json!({"time": rfc3339(at), "usageCoreNanoSeconds": cpu_ns});
    if let Some(rate) = nano_cores(key, at, cpu_ns) {
        cpu["usageNanoCores"] = json!(rate);
    }
    cpu
}

/// `/stats/summary` (the node, its pods and their containers).
pub async fn summary(rt: &dyn RuntimeService, node_name: &str) -> Result<Value, HttpError> {
    let samples = samples(rt).await?;
    let now = SystemTime::now();
    let mut node = json!({"nodeName": node_name});
    if let Some(n) = node_usage() {
        node["cpu"] = cpu_json("", now, n.cpu_ns);
        node["memory"] = json!({"time": rfc3339(now), "workingSetBytes": n.memory_working_set, "availableBytes": n.memory_available});
    }
    let mut pods: Vec<Value> = Vec::new();
    for s in &samples {
        let container = json!({
            "name": s.stats.name,
            "startTime": rfc3339(s.stats.started_at),
            "cpu": cpu_json(&s.stats.id, s.stats.timestamp, s.stats.cpu_usage_ns),
            "memory": {"time": rfc3339(s.stats.timestamp), "workingSetBytes": s.stats.memory_working_set_bytes},
        });
        match pods.last_mut() {
            Some(p) if p["podRef"]["uid"] == s.uid.as_str() => p["containers"].as_array_mut().unwrap().push(container),
            _ => pods.push(json!({"podRef": {"name": s.pod, "namespace": s.namespace, "uid": s.uid}, "containers": [container]})),
        }
    }
    Ok(json!({"node": node, "pods": pods}))
}

/// CPU time from /proc/stat (busy jiffies of every CPU) and the working set
/// from /proc/meminfo (in use minus inactive page cache, as cAdvisor counts
/// the root cgroup).
pub fn node_usage() -> Option<NodeUsage> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_node_usage(&stat, &meminfo, clock_ticks())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn parse_node_usage(stat: &str, meminfo: &str, ticks_per_second: u64) -> Option<NodeUsage> {
    let fields: Vec<u64> = stat.lines().find(|l| l.starts_with("cpu "))?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    let busy: u64 = fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    let kib = |name: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map(|v| v * 1024)
    };
    let (total, free) = (kib("MemTotal")?, kib("MemFree")?);
    let inactive_file = kib("Inactive(file)").unwrap_or(0);
    Some(NodeUsage {
        cpu_ns: busy * (1_000_000_000 / ticks_per_second),
        memory_working_set: total.saturating_sub(free).saturating_sub(inactive_file),
        memory_available: kib("MemAvailable").unwrap_or(free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn node_usage_counts_busy_jiffies_and_working_set() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n";
        let n = parse_node_usage(stat, meminfo, 100).unwrap();
        assert_eq!(n.cpu_ns, 161 * 10_000_000);
        assert_eq!(n.memory_working_set, 500 * 1024);
        assert_eq!(n.memory_available, 600 * 1024);
    }

    #[test]
    fn resource_metrics_are_prometheus_text_with_pod_sums() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_060_000);
        let stats = |name: &str, cpu: u64, mem: u64| ContainerStats {
            id: name.into(),
            sandbox_id: "sb".into(),
            name: name.into(),
            started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            timestamp: at,
            cpu_usage_ns: cpu,
            memory_working_set_bytes: mem,
        };
        let sample = |c: &str, cpu, mem| Sample { namespace: "default".into(), pod: "web".into(), uid: "u".into(), stats: stats(c, cpu, mem) };
        let node = NodeUsage { cpu_ns: 5_000_000_000, memory_working_set: 4096, memory_available: 1 };
        let text = render(Some(node), &[sample("a", 1_500_000_000, 100), sample("b", 500_000_000, 50)], at);
        for line in [
            "# TYPE container_cpu_usage_seconds_total counter",
            r#"container_cpu_usage_seconds_total{container="a",namespace="default",pod="web"} 1.5 1700000060000"#,
            r#"container_memory_working_set_bytes{container="b",namespace="default",pod="web"} 50 1700000060000"#,
            r#"container_start_time_seconds{container="a",namespace="default",pod="web"} 1700000000 1700000060000"#,
            "node_cpu_usage_seconds_total 5 1700000060000",
            "node_memory_working_set_bytes 4096 1700000060000",
            r#"pod_cpu_usage_seconds_total{namespace="default",pod="web"} 2 1700000060000"#,
            r#"pod_memory_working_set_bytes{namespace="default",pod="web"} 150 1700000060000"#,
            "resource_scrape_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn nano_cores_need_two_readings() {
        let t0 = UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(nano_cores("test-c", t0, 1_000_000_000), None);
        assert_eq!(nano_cores("test-c", t0 + Duration::from_secs(2), 2_000_000_000), Some(500_000_000));
        // A restarted container's counter starts over: no rate.
        assert_eq!(nano_cores("test-c", t0 + Duration::from_secs(3), 10), None);
    }
}
