//! From two scrapes of a node's cumulative counters to usage, the way
//! metrics-server does it: CPU is the counter's rise over the time between
//! the two readings (nanocores), memory the latest working set. A
//! container that restarted in between (new start time, or a counter that
//! went down) has no usage until its next scrape.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::prom::Line;

/// (namespace, pod, container).
pub type ContainerKey = (String, String, String);

/// One reading of cumulative counters.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub at_ms: i64,
    pub cpu_seconds: f64,
    pub memory_bytes: f64,
    pub start_seconds: Option<f64>,
}

/// One scrape of a node's `/metrics/resource`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub node: Option<Point>,
    pub containers: BTreeMap<ContainerKey, Point>,
}

impl Scrape {
    /// Groups the lines; `now_ms` stands in for a missing timestamp.
    pub fn from_lines(lines: &[Line], now_ms: i64) -> Scrape {
        let mut scrape = Scrape::default();
        let blank = |at_ms| Point { at_ms, cpu_seconds: f64::NAN, memory_bytes: f64::NAN, start_seconds: None };
        for l in lines {
            let at = l.timestamp_ms.unwrap_or(now_ms);
            let point = if l.name.starts_with("node_") {
                scrape.node.get_or_insert_with(|| blank(at))
            } else if l.name.starts_with("container_") {
                let label = |k: &str| l.labels.get(k).cloned().unwrap_or_default();
                let key = (label("namespace"), label("pod"), label("container"));
                scrape.containers.entry(key).or_insert_with(|| blank(at))
            } else {
                continue;
            };
            match l.name.as_str() {
                "node_cpu_usage_seconds_total" | "container_cpu_usage_seconds_total" => {
                    point.cpu_seconds = l.value;
                    point.at_ms = at;
                }
                "node_memory_working_set_bytes" | "container_memory_working_set_bytes" => point.memory_bytes = l.value,
                "container_start_time_seconds" => point.start_seconds = Some(l.value),
                _ => {}
            }
        }
        scrape.containers.retain(|_, p| p.cpu_seconds.is_finite() && p.memory_bytes.is_finite());
        scrape.node = scrape.node.filter(|p| p.cpu_seconds.is_finite() && p.memory_bytes.is_finite());
        scrape
    }
}

/// Usage over a window ending at `timestamp_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub timestamp_ms: i64,
    pub window_ms: i64,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

fn usage(before: &Point, now: &Point) -> Option<Usage> {
    let window_ms = now.at_ms - before.at_ms;
    if window_ms <= 0 || now.cpu_seconds < before.cpu_seconds || now.start_seconds != before.start_seconds {
        return None;
    }
    let nanocores = (now.cpu_seconds - before.cpu_seconds) * 1e9 / (window_ms as f64 / 1e3);
    Some(Usage { timestamp_ms: now.at_ms, window_ms, cpu_nanocores: nanocores.round() as u64, memory_bytes: now.memory_bytes.max(0.0) as u64 })
}

#[derive(Default)]
struct NodeState {
    last: Scrape,
    node: Option<Usage>,
    /// (namespace, pod) -> its containers' usage, by container name.
    pods: BTreeMap<(String, String), Vec<(String, Usage)>>,
}

/// The latest usage of every node and pod.
#[derive(Default)]
pub struct Store {
    nodes: HashMap<String, NodeState>,
}

impl Store {
    /// A new scrape of `node`: usage against the previous one.
    pub fn record(&mut self, node: &str, scrape: Scrape) {
        let state = self.nodes.entry(node.to_string()).or_default();
        state.node = match (&state.last.node, &scrape.node) {
            (Some(before), Some(now)) => usage(before, now),
            _ => None,
        };
        state.pods.clear();
        for (key, now) in &scrape.containers {
            let Some(u) = state.last.containers.get(key).and_then(|before| usage(before, now)) else { continue };
            state.pods.entry((key.0.clone(), key.1.clone())).or_default().push((key.2.clone(), u));
        }
        state.last = scrape;
    }

    /// A node that could not be scraped, or is gone, reports nothing.
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    pub fn retain_nodes(&mut self, live: &HashSet<String>) {
        self.nodes.retain(|n, _| live.contains(n));
    }

    pub fn node(&self, name: &str) -> Option<Usage> {
        self.nodes.get(name)?.node
    }

    /// Every pod with usage: ((namespace, name), containers).
    pub fn pods(&self) -> impl Iterator<Item = (&(String, String), &Vec<(String, Usage)>)> {
        self.nodes.values().flat_map(|n| n.pods.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource_metrics::prom;

    fn scrape(at_ms: i64, node_cpu: f64, app_cpu: f64, app_start: f64) -> Scrape {
        let text = format!(
            "node_cpu_usage_seconds_total {node_cpu} {at_ms}\nnode_memory_working_set_bytes 4096 {at_ms}\n\
             container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"web\"}} {app_cpu} {at_ms}\n\
             container_memory_working_set_bytes{{container=\"app\",namespace=\"default\",pod=\"web\"}} 1048576 {at_ms}\n\
             container_start_time_seconds{{container=\"app\",namespace=\"default\",pod=\"web\"}} {app_start} {at_ms}\n"
        );
        Scrape::from_lines(&prom::parse(&text), 0)
    }

    #[test]
    fn usage_is_the_counter_rise_over_the_window() {
        let mut store = Store::default();
        store.record("n1", scrape(10_000, 100.0, 1.0, 5.0));
        assert_eq!(store.node("n1"), None, "one scrape gives no rate");
        assert_eq!(store.pods().count(), 0);
        store.record("n1", scrape(25_000, 115.0, 1.75, 5.0));
        assert_eq!(store.node("n1"), Some(Usage { timestamp_ms: 25_000, window_ms: 15_000, cpu_nanocores: 1_000_000_000, memory_bytes: 4096 }));
        let pods: Vec<_> = store.pods().collect();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].0, &("default".to_string(), "web".to_string()));
        assert_eq!(pods[0].1[0], ("app".to_string(), Usage { timestamp_ms: 25_000, window_ms: 15_000, cpu_nanocores: 50_000_000, memory_bytes: 1_048_576 }));
    }

    #[test]
    fn a_restarted_container_waits_for_its_next_scrape() {
        let mut store = Store::default();
        store.record("n1", scrape(10_000, 100.0, 9.0, 5.0));
        store.record("n1", scrape(25_000, 115.0, 0.5, 20.0));
        assert_eq!(store.pods().count(), 0, "the counter started over");
        store.record("n1", scrape(40_000, 130.0, 0.8, 20.0));
        assert_eq!(store.pods().next().unwrap().1[0].1.cpu_nanocores, 20_000_000);
        store.forget("n1");
        assert_eq!(store.node("n1"), None);
    }
}
