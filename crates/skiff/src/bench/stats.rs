//! Latency summaries and the concurrent request driver shared by the phases.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use super::server::CpuUse;

#[derive(Serialize, Clone, Copy, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        // Nearest-rank percentile.
        let pick = |p: f64| {
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        Latency { p50_ms: pick(50.0), p90_ms: pick(90.0), p99_ms: pick(99.0), max_ms: ms(*samples.last().unwrap()) }
    }

    pub fn text(&self) -> String {
        format!(
            "p50 {:8.2}  p90 {:8.2}  p99 {:8.2}  max {:8.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One measured phase: `count` successful operations over `seconds`.
#[derive(Serialize, Clone)]
pub struct Phase {
    pub name: String,
    pub count: usize,
    pub errors: usize,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
}

impl Phase {
    pub fn new(name: &str, samples: Vec<Duration>, errors: Vec<anyhow::Error>, elapsed: Duration) -> Phase {
        let seconds = elapsed.as_secs_f64();
        Phase {
            name: name.to_string(),
            count: samples.len(),
            errors: errors.len(),
            seconds,
            ops_per_sec: samples.len() as f64 / seconds.max(1e-9),
            latency: Latency::of(samples),
            items_per_sec: None,
            first_error: errors.first().map(|e| format!("{e:#}")),
            cpu: None,
        }
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "{:<14} {:>7} ops in {:8.3}s {:>10.1} ops/s   {}",
            self.name,
            self.count,
            self.seconds,
            self.ops_per_sec,
            self.latency.text()
        );
        if let Some(ips) = self.items_per_sec {
            s += &format!("   {ips:.0} items/s");
        }
        if let Some(cpu) = self.cpu {
            s += &format!("   {}", cpu.text());
        }
        if self.errors > 0 {
            s += &format!("\n{:<14} {} errors, first: {}", "", self.errors, self.first_error.as_deref().unwrap_or(""));
        }
        s
    }
}

/// Runs `op(0..n)` with at most `concurrency` in flight and times each one.
pub async fn run_ops<F, Fut, T>(name: &str, n: usize, concurrency: usize, op: F) -> (Phase, Vec<T>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    let results: Vec<(Duration, anyhow::Result<T>)> = stream::iter(0..n)
        .map(|i| {
            let fut = op(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = start.elapsed();
    let (mut samples, mut errors, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (d, r) in results {
        match r {
            Ok(v) => {
                samples.push(d);
                values.push(v);
            }
            Err(e) => errors.push(e),
        }
    }
    (Phase::new(name, samples, errors, elapsed), values)
}
