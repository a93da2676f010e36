use super::*;
use serde_json::{json, Value};

fn spec(v: Value) -> PodSpec {
    serde_json::from_value(v).unwrap()
}

fn statuses(v: Value) -> Vec<ContainerStatus> {
    serde_json::from_value(v).unwrap()
}

fn running(name: &str, ready: bool) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": ready, "started": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}})
}

fn waiting(name: &str, reason: &str) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}})
}

fn terminated(name: &str, code: i32, reason: &str) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "started": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:00:01Z"}}})
}

fn crashlooping(name: &str, code: i32) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "started": false, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": code, "reason": "Error", "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:00:01Z"}}})
}

/// Computes phase and conditions, then asks the kubectl printer what STATUS it shows.
fn run(spec_v: Value, init: Value, main: Value, terminating: bool) -> (String, String, Vec<PodCondition>) {
    let sp = spec(spec_v.clone());
    let (init, main) = (statuses(init), statuses(main));
    let ph = phase(&sp, &init, &main, false).to_string();
    let conds = conditions(&sp, &init, &main, &ph, true, &[]);
    let mut pod = json!({
        "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": spec_v,
        "status": {"phase": ph, "initContainerStatuses": init, "containerStatuses": main, "conditions": conds},
    });
    if terminating {
        pod["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:05Z");
    }
    let cells = resources::printers::cells("", "Pod", &pod, Utc::now());
    (ph, cells[2].as_str().unwrap().to_string(), conds)
}

fn cond<'a>(c: &'a [PodCondition], ty: &str) -> &'a PodCondition {
    c.iter().find(|c| c.type_ == ty).unwrap()
}

#[test]
fn creating_and_running() {
    let one = json!({"containers": [{"name": "a"}]});
    let (ph, st, c) = run(one.clone(), json!([]), json!([waiting("a", "ContainerCreating")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Pending", "ContainerCreating"));
    assert_eq!(cond(&c, "ContainersReady").message.as_deref(), Some("containers with unready status: [a]"));
    assert_eq!(cond(&c, "Initialized").status, "True");
    let (ph, st, c) = run(one.clone(), json!([]), json!([running("a", true)]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Running", "Running"));
    assert_eq!(cond(&c, "Ready").status, "True");
    let (_, st, _) = run(one, json!([]), json!([running("a", true)]), true);
    assert_eq!(st, "Terminating");
}

#[test]
fn init_containers() {
    let sp = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]});
    let (ph, st, c) = run(sp.clone(), json!([running("i1", false), waiting("i2", "PodInitializing")]), json!([waiting("a", "PodInitializing")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Pending", "Init:0/2"));
    assert_eq!(cond(&c, "Initialized").message.as_deref(), Some("containers with incomplete status: [i1 i2]"));
    let (ph, st, _) = run(sp.clone(), json!([terminated("i1", 0, "Completed"), terminated("i2", 0, "Completed")]), json!([waiting("a", "PodInitializing")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Pending", "PodInitializing"));
    let (ph, st, _) = run(sp.clone(), json!([crashlooping("i1", 1), waiting("i2", "PodInitializing")]), json!([waiting("a", "PodInitializing")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Pending", "Init:CrashLoopBackOff"));
    let mut never = sp.clone();
    never["restartPolicy"] = json!("Never");
    let (ph, st, _) = run(never, json!([terminated("i1", 1, "Error"), waiting("i2", "PodInitializing")]), json!([waiting("a", "PodInitializing")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Failed", "Init:Error"));
}

#[test]
fn sidecars_count_once_started() {
    let sp = json!({"initContainers": [{"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "a"}]});
    let mut side = running("side", true);
    side["started"] = json!(false);
    let (ph, _, c) = run(sp.clone(), json!([side]), json!([waiting("a", "PodInitializing")]), false);
    assert_eq!(ph, "Pending");
    assert_eq!(cond(&c, "Initialized").status, "False");
    let (ph, st, c) = run(sp, json!([running("side", true)]), json!([running("a", true)]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Running", "Running"));
    assert_eq!(cond(&c, "Ready").status, "True");
}

#[test]
fn restarts_and_terminal_states() {
    let (ph, st, _) = run(json!({"containers": [{"name": "a"}]}), json!([]), json!([crashlooping("a", 1)]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Running", "CrashLoopBackOff"));
    let never = json!({"restartPolicy": "Never", "containers": [{"name": "a"}, {"name": "b"}]});
    let (ph, st, c) = run(never.clone(), json!([]), json!([terminated("a", 0, "Completed"), terminated("b", 0, "Completed")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Succeeded", "Completed"));
    assert_eq!(cond(&c, "Ready").reason.as_deref(), Some("PodCompleted"));
    let (ph, st, _) = run(never.clone(), json!([]), json!([terminated("a", 1, "Error"), terminated("b", 0, "Completed")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Failed", "Error"), "kubectl shows the first container's reason");
    let (ph, st, _) = run(never.clone(), json!([]), json!([terminated("a", 137, "OOMKilled"), terminated("b", 0, "Completed")]), false);
    assert_eq!((ph.as_str(), st.as_str()), ("Failed", "OOMKilled"));
    let (ph, _, _) = run(never, json!([]), json!([running("a", true), terminated("b", 0, "Completed")]), false);
    assert_eq!(ph, "Running");
    let on_failure = json!({"restartPolicy": "OnFailure", "containers": [{"name": "a"}]});
    let (ph, _, _) = run(on_failure.clone(), json!([]), json!([crashlooping("a", 2)]), false);
    assert_eq!(ph, "Running");
    let (ph, _, _) = run(on_failure, json!([]), json!([terminated("a", 0, "Completed")]), false);
    assert_eq!(ph, "Succeeded");
    let always = spec(json!({"containers": [{"name": "a"}]}));
    let done = statuses(json!([terminated("a", 0, "Completed")]));
    assert_eq!(phase(&always, &[], &done, false), "Running");
    assert_eq!(phase(&always, &[], &done, true), "Succeeded", "stopped for deletion");
    assert_eq!(phase(&always, &[], &[], false), "Pending");
}

#[test]
fn readiness_gates_and_kept_conditions() {
    let sp = spec(json!({"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "example.com/ok"}]}));
    let main = statuses(json!([running("a", true)]));
    let scheduled = PodCondition { type_: "PodScheduled".into(), status: "True".into(), ..Default::default() };
    let c = conditions(&sp, &[], &main, "Running", true, std::slice::from_ref(&scheduled));
    assert_eq!(cond(&c, "Ready").reason.as_deref(), Some("ReadinessGatesNotReady"));
    assert_eq!(cond(&c, "Ready").message.as_deref(), Some("corresponding condition of pod readiness gate \"example.com/ok\" does not exist."));
    assert_eq!(cond(&c, "PodScheduled").status, "True");
    let gate = PodCondition { type_: "example.com/ok".into(), status: "True".into(), ..Default::default() };
    let c2 = conditions(&sp, &[], &main, "Running", true, &[scheduled, gate, cond(&c, "ContainersReady").clone()]);
    assert_eq!(cond(&c2, "Ready").status, "True");
    assert_eq!(cond(&c2, "ContainersReady").last_transition_time, cond(&c, "ContainersReady").last_transition_time, "unchanged status keeps its transition time");
    assert_eq!(c2.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), vec!["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled", "example.com/ok"]);
}
