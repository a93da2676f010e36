//! The pod's phase and conditions from its container statuses, as
//! kubelet's getPhase and status generation do, so `kubectl get pods`
//! reads the same as upstream in every state.

use chrono::Utc;
use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::containers_spec::is_sidecar;

/// Conditions this agent owns; others (PodScheduled, readiness gates,
/// DisruptionTarget) are kept as they are.
pub const OWNED_CONDITIONS: &[&str] = &["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"];

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn last_terminated_code(s: &ContainerStatus) -> Option<i32> {
    s.last_state.as_ref()?.terminated.as_ref().map(|t| t.exit_code)
}

/// The pod phase. `terminating` is set once the pod is being deleted (its
/// containers were stopped on purpose), which settles Running into
/// Succeeded or Failed.
pub fn phase(spec: &PodSpec, init: &[ContainerStatus], main: &[ContainerStatus], terminating: bool) -> &'static str {
    let restart = spec.restart_policy.as_deref().unwrap_or("Always");
    let (mut pending_init, mut failed_init) = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let s = find(init, &c.name);
        if is_sidecar(c) {
            if s.is_none_or(|s| s.started != Some(true)) {
                pending_init += 1;
            }
            continue;
        }
        let Some(s) = s else {
            pending_init += 1;
            continue;
        };
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = &state.terminated {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if let Some(code) = last_terminated_code(s) {
            if code != 0 {
                failed_init += 1;
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    let mut any_started = false;
    for c in &spec.containers {
        let Some(s) = find(main, &c.name) else {
            unknown += 1;
            continue;
        };
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
            any_started = true;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            any_started = true;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() && last_terminated_code(s).is_some() {
            stopped += 1;
            any_started = true;
        } else if state.waiting.is_some() {
            waiting += 1;
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && restart == "Never" {
        return "Failed";
    }
    if (pending_init > 0 && !any_started) || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminating {
            return if stopped == succeeded { "Succeeded" } else { "Failed" };
        }
        if restart == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(ty: &str, ok: bool, reason: Option<String>, message: Option<String>) -> PodCondition {
    PodCondition { type_: ty.into(), status: if ok { "True" } else { "False" }.into(), reason, message, ..Default::default() }
}

/// PodReadyToStartContainers, Initialized, ContainersReady and Ready (with
/// readiness gates from `existing`), keeping transition times of conditions
/// whose status did not change and every condition the agent does not own.
pub fn conditions(spec: &PodSpec, init: &[ContainerStatus], main: &[ContainerStatus], phase: &str, sandbox_ready: bool, existing: &[PodCondition]) -> Vec<PodCondition> {
    let completed = phase == "Succeeded";
    let incomplete: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| {
            let s = find(init, &c.name);
            if is_sidecar(c) {
                return s.is_none_or(|s| s.started != Some(true));
            }
            s.and_then(|s| s.state.as_ref()?.terminated.as_ref()).is_none_or(|t| t.exit_code != 0)
        })
        .map(|c| c.name.clone())
        .collect();
    // Once the regular containers have run, a restarting sidecar does not un-initialize the pod.
    let main_started = main.iter().any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some() || st.terminated.is_some()) || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some()));
    let initialized = incomplete.is_empty() || main_started;
    let init_cond = if completed {
        condition("Initialized", true, Some("PodCompleted".into()), None)
    } else if initialized {
        condition("Initialized", true, None, None)
    } else {
        condition("Initialized", false, Some("ContainersNotInitialized".into()), Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))))
    };

    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec.init_containers.iter().flatten().filter(|c| is_sidecar(c)).map(|c| (c, find(init, &c.name)));
    let mains = spec.containers.iter().map(|c| (c, find(main, &c.name)));
    for (c, s) in sidecars.chain(mains) {
        match s {
            None => unknown.push(c.name.clone()),
            Some(s) if !s.ready => unready.push(c.name.clone()),
            _ => {}
        }
    }
    let mut not_ready_msg = Vec::new();
    if !unknown.is_empty() {
        not_ready_msg.push(format!("containers with unknown status: [{}]", unknown.join(" ")));
    }
    if !unready.is_empty() {
        not_ready_msg.push(format!("containers with unready status: [{}]", unready.join(" ")));
    }
    let containers_ready = not_ready_msg.is_empty();
    let cr_cond = if completed {
        condition("ContainersReady", false, Some("PodCompleted".into()), None)
    } else if containers_ready {
        condition("ContainersReady", true, None, None)
    } else {
        condition("ContainersReady", false, Some("ContainersNotReady".into()), Some(not_ready_msg.join(", ")))
    };

    let mut gate_msgs = Vec::new();
    for g in spec.readiness_gates.iter().flatten() {
        match existing.iter().find(|c| c.type_ == g.condition_type) {
            None => gate_msgs.push(format!("corresponding condition of pod readiness gate \"{}\" does not exist.", g.condition_type)),
            Some(c) if c.status != "True" => gate_msgs.push(format!("the status of pod readiness gate \"{}\" is not \"True\", but {}", g.condition_type, c.status)),
            _ => {}
        }
    }
    let ready_cond = if completed {
        condition("Ready", false, Some("PodCompleted".into()), None)
    } else if !containers_ready {
        condition("Ready", false, Some("ContainersNotReady".into()), Some(not_ready_msg.join(", ")))
    } else if !gate_msgs.is_empty() {
        condition("Ready", false, Some("ReadinessGatesNotReady".into()), Some(gate_msgs.join(", ")))
    } else {
        condition("Ready", true, None, None)
    };

    let sandbox_cond = condition("PodReadyToStartContainers", sandbox_ready, None, None);
    let now = Time(Utc::now());
    let mut out: Vec<PodCondition> = Vec::new();
    for mut c in [sandbox_cond, init_cond, cr_cond, ready_cond] {
        c.last_transition_time = match existing.iter().find(|o| o.type_ == c.type_) {
            Some(old) if old.status == c.status => old.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        out.push(c);
    }
    // Everything else (PodScheduled first, as upstream lists it) stays.
    let foreign = existing.iter().filter(|c| !OWNED_CONDITIONS.contains(&c.type_.as_str()));
    let (scheduled, others): (Vec<_>, Vec<_>) = foreign.partition(|c| c.type_ == "PodScheduled");
    out.extend(scheduled.into_iter().cloned());
    out.extend(others.into_iter().cloned());
    out
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
