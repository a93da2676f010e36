//! Liveness, readiness and startup probes of one container, run by one
//! task per container (as upstream's probe workers): the startup probe
//! gates the other two; results turn into events for the pod worker only
//! when a threshold is crossed, plus one per failure for the Unhealthy event.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use runtime::cri::RuntimeService;
use tokio::time::Instant;

use super::actions;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

#[derive(Clone, Debug)]
pub enum ProbeEvent {
    /// The startup probe succeeded.
    Started { container_id: String },
    Ready { container_id: String, ready: bool },
    /// Liveness or startup failed failureThreshold times: restart the container.
    Failed { container_id: String, kind: Kind, message: String },
    /// One failed run (for the Unhealthy event).
    Unhealthy { container_id: String, kind: Kind, message: String },
}

/// Runs one probe action once.
pub async fn run_once(probe: &Probe, c: &Container, container_id: &str, pod_ip: Option<IpAddr>, runtime: &Arc<dyn RuntimeService>) -> Result<String, String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        actions::exec(runtime, container_id, e.command.as_deref().unwrap_or_default(), timeout).await
    } else if let Some(h) = &probe.http_get {
        actions::http_get(h, c, pod_ip, timeout).await
    } else if let Some(t) = &probe.tcp_socket {
        actions::tcp(t, c, pod_ip, timeout).await
    } else if let Some(g) = &probe.grpc {
        super::grpc_probe::check(pod_ip, g.port, g.service.as_deref().unwrap_or_default(), timeout).await
    } else {
        Err("probe has no handler".into())
    }
}

struct Runner {
    kind: Kind,
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
    result: Option<bool>,
}

impl Runner {
    fn new(kind: Kind, probe: &Probe, start: Instant) -> Runner {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Runner { kind, probe: probe.clone(), next: start + delay, successes: 0, failures: 0, result: None }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }
}

/// The probes of a started container, until it is killed (the task is aborted
/// by the worker when the container stops).
pub fn spawn(c: Container, container_id: String, pod_ip: Option<IpAddr>, runtime: Arc<dyn RuntimeService>, send: impl Fn(ProbeEvent) + Send + 'static) -> Option<tokio::task::JoinHandle<()>> {
    if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
        return None;
    }
    Some(tokio::spawn(async move {
        let start = Instant::now();
        let mut startup = c.startup_probe.as_ref().map(|p| Runner::new(Kind::Startup, p, start));
        let mut others: Vec<Runner> = Vec::new();
        let mut others_started = startup.is_none();
        if others_started {
            others = gated(&c, start);
        }
        loop {
            let active: Vec<&mut Runner> = match startup.as_mut() {
                Some(s) if s.result != Some(true) => vec![s],
                _ => {
                    if !others_started {
                        others_started = true;
                        others = gated(&c, Instant::now());
                    }
                    others.iter_mut().collect()
                }
            };
            if active.is_empty() {
                return;
            }
            let due = active.iter().map(|r| r.next).min().expect("non-empty");
            tokio::time::sleep_until(due).await;
            for r in active {
                if r.next > Instant::now() {
                    continue;
                }
                r.next += r.period();
                let outcome = run_once(&r.probe, &c, &container_id, pod_ip, &runtime).await;
                let id = container_id.clone();
                match outcome {
                    Ok(_) => {
                        r.failures = 0;
                        r.successes += 1;
                        if r.successes >= r.probe.success_threshold.unwrap_or(1).max(1) && r.result != Some(true) {
                            r.result = Some(true);
                            match r.kind {
                                Kind::Startup => send(ProbeEvent::Started { container_id: id }),
                                Kind::Readiness => send(ProbeEvent::Ready { container_id: id, ready: true }),
                                Kind::Liveness => {}
                            }
                        }
                    }
                    Err(message) => {
                        r.successes = 0;
                        r.failures += 1;
                        send(ProbeEvent::Unhealthy { container_id: id.clone(), kind: r.kind, message: message.clone() });
                        if r.failures >= r.probe.failure_threshold.unwrap_or(3).max(1) && r.result != Some(false) {
                            r.result = Some(false);
                            match r.kind {
                                Kind::Readiness => send(ProbeEvent::Ready { container_id: id, ready: false }),
                                kind => {
                                    send(ProbeEvent::Failed { container_id: id, kind, message });
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    }))
}

/// Liveness and readiness, which start once the startup probe (if any) passed.
fn gated(c: &Container, start: Instant) -> Vec<Runner> {
    let mut v = Vec::new();
    if let Some(p) = &c.liveness_probe {
        v.push(Runner::new(Kind::Liveness, p, start));
    }
    if let Some(p) = &c.readiness_probe {
        v.push(Runner::new(Kind::Readiness, p, start));
    }
    v
}
