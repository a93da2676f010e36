//! DaemonSets and StatefulSets, driven through the real kubectl: a DaemonSet
//! on 50 simulated nodes following nodes as they come, go, are tainted and
//! relabelled, and rolling within maxUnavailable; a 100-replica Parallel
//! StatefulSet on simulated nodes; and an OrderedReady StatefulSet with
//! claims on a node running real containers (needs root, as CI runs).

use std::collections::{BTreeMap, HashMap};

use e2e::{eventually, registry_with_busybox, Server, Sim};
use serde_json::Value;

/// Live (not terminating) pods matching `selector`, by name: (node, image, revision hash).
fn pods(s: &Server, selector: &str) -> BTreeMap<String, (String, String, String)> {
    s.json(&["get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
            let image = p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string();
            let hash = p["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or("").to_string();
            (name, (node, image, hash))
        })
        .collect()
}

/// Nodes with a daemon pod of `selector`, each once; None if a node has two.
fn one_per_node(s: &Server, selector: &str) -> Option<Vec<String>> {
    let mut nodes: Vec<String> = pods(s, selector).into_values().map(|(n, _, _)| n).collect();
    let before = nodes.len();
    nodes.sort();
    nodes.dedup();
    (nodes.len() == before && nodes.iter().all(|n| !n.is_empty())).then_some(nodes)
}

fn wait_daemon_pods(s: &Server, selector: &str, want: usize, what: &str) -> Vec<String> {
    eventually(90, what, || one_per_node(s, selector).filter(|n| n.len() == want))
}

fn ds_status(s: &Server, name: &str) -> Value {
    s.json(&["get", "ds", name])["status"].clone()
}

fn rollout_ok(s: &Server, what: &str) -> String {
    let out = s.kubectl(&["rollout", "status", what, "--timeout=120s"]);
    assert!(out.ok(), "rollout status {what}: {}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// The fewest Ready pods a `get -w --output-watch-events -o json` saw once `full` were first Ready.
fn fewest_ready_after_full(watch_output: &str, full: usize) -> Option<usize> {
    let mut ready: HashMap<String, bool> = HashMap::new();
    let (mut reached, mut fewest) = (false, None);
    for ev in serde_json::Deserializer::from_str(watch_output).into_iter::<Value>() {
        let Ok(ev) = ev else { break };
        let pod = &ev["object"];
        let is_ready = ev["type"] != "DELETED"
            && pod["metadata"]["deletionTimestamp"].is_null()
            && pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        ready.insert(pod["metadata"]["name"].as_str().unwrap_or_default().to_string(), is_ready);
        let count = ready.values().filter(|r| **r).count();
        reached |= count >= full;
        if reached {
            fewest = Some(fewest.map_or(count, |f: usize| f.min(count)));
        }
    }
    fewest
}

const AGENT: &str = r#"{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
  "spec": {"selector": {"matchLabels": {"app": "agent"}},
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 5}},
    "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}}"#;

const EDGE: &str = r#"{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "edge"},
  "spec": {"selector": {"matchLabels": {"app": "edge"}},
    "template": {"metadata": {"labels": {"app": "edge"}}, "spec": {"nodeSelector": {"role": "edge"},
      "containers": [{"name": "c", "image": "busybox"}]}}}}"#;

#[test]
fn daemonset_follows_fifty_simulated_nodes_and_rolls_within_max_unavailable() {
    let s = Server::start();
    let _sim = Sim::start(&s, 50, "dsn-");
    eventually(90, "50 Ready simulated nodes", || {
        let out = s.kubectl(&["get", "nodes", "--no-headers"]);
        (out.ok() && out.stdout.lines().filter(|l| l.contains(" Ready")).count() == 50).then_some(())
    });
    assert!(s.apply_stdin(&["apply", "-f", "-"], AGENT).ok());
    let nodes = wait_daemon_pods(&s, "app=agent", 50, "one agent pod on each of 50 nodes");
    assert!(nodes.iter().all(|n| n.starts_with("dsn-")));
    let out = rollout_ok(&s, "ds/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    let st = ds_status(&s, "agent");
    for field in ["desiredNumberScheduled", "currentNumberScheduled", "numberReady", "updatedNumberScheduled", "numberAvailable"] {
        assert_eq!(st[field], 50, "{field}: {st}");
    }
    assert_eq!(st["numberMisscheduled"], 0);
    // Pods are pinned by node affinity (the scheduler bound them) and tolerate node trouble.
    let pod = &s.json(&["get", "pods", "-l", "app=agent"])["items"][0];
    let pinned = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0];
    assert_eq!((pinned["key"].as_str(), pinned["values"][0].as_str()), (Some("metadata.name"), pod["spec"]["nodeName"].as_str()));
    let tolerations = pod["spec"]["tolerations"].to_string();
    for key in ["not-ready", "unreachable", "disk-pressure", "memory-pressure", "pid-pressure", "unschedulable"] {
        assert!(tolerations.contains(&format!("node.kubernetes.io/{key}")), "{key}: {tolerations}");
    }

    // A NoExecute taint removes the pod, its removal brings one back; a cordon keeps it.
    s.ok(&["taint", "node", "dsn-7", "dedicated=db:NoExecute"]);
    let nodes = wait_daemon_pods(&s, "app=agent", 49, "the tainted node's pod gone");
    assert!(!nodes.contains(&"dsn-7".to_string()));
    eventually(30, "desired 49", || (ds_status(&s, "agent")["desiredNumberScheduled"] == 49).then_some(()));
    s.ok(&["taint", "node", "dsn-7", "dedicated=db:NoExecute-"]);
    wait_daemon_pods(&s, "app=agent", 50, "the untainted node's pod back");
    s.ok(&["cordon", "dsn-8"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(ds_status(&s, "agent")["desiredNumberScheduled"], 50, "cordoned nodes keep their daemon pods");
    s.ok(&["uncordon", "dsn-8"]);

    // A nodeSelector DaemonSet follows labels.
    assert!(s.apply_stdin(&["apply", "-f", "-"], EDGE).ok());
    for n in ["dsn-1", "dsn-2", "dsn-3"] {
        s.ok(&["label", "node", n, "role=edge"]);
    }
    assert_eq!(wait_daemon_pods(&s, "app=edge", 3, "edge pods on the 3 labelled nodes"), ["dsn-1", "dsn-2", "dsn-3"]);
    s.ok(&["label", "node", "dsn-2", "role-"]);
    assert_eq!(wait_daemon_pods(&s, "app=edge", 2, "the unlabelled node's edge pod gone"), ["dsn-1", "dsn-3"]);
    eventually(30, "edge status", || (ds_status(&s, "edge")["numberReady"] == 2 && ds_status(&s, "edge")["desiredNumberScheduled"] == 2).then_some(()));

    // Nodes joining get a pod; nodes leaving take theirs along.
    let extra = Sim::start(&s, 3, "dsx-");
    let nodes = wait_daemon_pods(&s, "app=agent", 53, "pods on the 3 new nodes");
    assert_eq!(nodes.iter().filter(|n| n.starts_with("dsx-")).count(), 3);
    drop(extra);
    s.ok(&["delete", "node", "dsx-0", "dsx-1", "dsx-2"]);
    wait_daemon_pods(&s, "app=agent", 50, "the removed nodes' pods gone");
    eventually(30, "desired 50 again", || (ds_status(&s, "agent")["desiredNumberScheduled"] == 50).then_some(()));

    // A rolling update never has more than maxUnavailable (5) pods down.
    let watch_file = s.dir.path().join("agent-watch.json");
    let mut watch = s.kubectl_background(&["get", "pods", "-l", "app=agent", "-w", "--output-watch-events", "-o", "json"], &watch_file);
    eventually(30, "the watch to list the 50 pods", || fewest_ready_after_full(&std::fs::read_to_string(&watch_file).unwrap_or_default(), 50).map(drop));
    s.ok(&["set", "image", "ds/agent", "c=busybox:1.37"]);
    rollout_ok(&s, "ds/agent");
    eventually(60, "50 updated pods", || {
        let all = pods(&s, "app=agent");
        (all.len() == 50 && all.values().all(|(_, image, _)| image == "busybox:1.37")).then_some(())
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let fewest = fewest_ready_after_full(&std::fs::read_to_string(&watch_file).unwrap(), 50).unwrap();
    assert!(fewest >= 45, "Ready agent pods fell to {fewest} (maxUnavailable 5)");

    // Revisions: history lists both, shows each template, undo goes back.
    let revisions = s.json(&["get", "controllerrevisions", "-l", "app=agent"]);
    let revs: Vec<i64> = revisions["items"].as_array().unwrap().iter().map(|r| r["revision"].as_i64().unwrap()).collect();
    assert_eq!(revs.len(), 2, "{revisions}");
    let history = s.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    assert!(s.ok(&["rollout", "history", "ds/agent", "--revision=1"]).contains("busybox:1.36"));
    s.ok(&["rollout", "undo", "ds/agent"]);
    rollout_ok(&s, "ds/agent");
    eventually(60, "the old image back on 50 nodes", || {
        let all = pods(&s, "app=agent");
        (all.len() == 50 && all.values().all(|(_, image, _)| image == "busybox:1.36")).then_some(())
    });
    let history = s.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains('3') && !history.lines().any(|l| l.trim_start().starts_with("1 ")), "undo renumbers revision 1 to 3: {history}");
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=agent", "-o", "jsonpath={.items[*].reason}"]);
    // (The event recorder's spam filter, as upstream's, keeps only the first 25 or so.)
    assert!(events.contains("SuccessfulCreate"), "{events}");

    // OnDelete: a template change replaces only pods that are deleted.
    s.ok(&["patch", "ds", "agent", "-p", r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#]);
    s.ok(&["set", "image", "ds/agent", "c=busybox:1.38"]);
    eventually(30, "the OnDelete revision", || (ds_status(&s, "agent")["observedGeneration"] == s.json(&["get", "ds", "agent"])["metadata"]["generation"]).then_some(()));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let all = pods(&s, "app=agent");
    assert!(all.values().all(|(_, image, _)| image == "busybox:1.36"), "OnDelete must not replace pods by itself");
    let (victim, (node, _, _)) = all.iter().find(|(_, (n, _, _))| n == "dsn-0").map(|(k, v)| (k.clone(), v.clone())).unwrap();
    s.ok(&["delete", "pod", &victim]);
    eventually(30, "a new pod on dsn-0 with the new image", || {
        pods(&s, "app=agent").values().any(|(n, image, _)| *n == node && image == "busybox:1.38").then_some(())
    });
    assert_eq!(ds_status(&s, "agent")["updatedNumberScheduled"], 1);
}

#[test]
fn parallel_statefulset_of_a_hundred_on_simulated_nodes() {
    let s = Server::start();
    let _sim = Sim::start(&s, 10, "stsn-");
    eventually(60, "10 Ready simulated nodes", || {
        let out = s.kubectl(&["get", "nodes", "--no-headers"]);
        (out.ok() && out.stdout.lines().filter(|l| l.contains(" Ready")).count() == 10).then_some(())
    });
    let sts = r#"{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "big"},
      "spec": {"replicas": 100, "podManagementPolicy": "Parallel", "serviceName": "big", "selector": {"matchLabels": {"app": "big"}},
        "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#;
    assert!(s.apply_stdin(&["apply", "-f", "-"], sts).ok());
    let out = rollout_ok(&s, "sts/big");
    assert!(out.contains("100 new pods") || out.contains("complete"), "{out}");
    let names: Vec<String> = pods(&s, "app=big").into_keys().collect();
    let mut want: Vec<String> = (0..100).map(|i| format!("big-{i}")).collect();
    want.sort();
    assert_eq!(names, want);
    let st = s.json(&["get", "sts", "big"])["status"].clone();
    assert_eq!((st["replicas"].as_i64(), st["readyReplicas"].as_i64(), st["availableReplicas"].as_i64()), (Some(100), Some(100), Some(100)), "{st}");
    assert_eq!(st["currentRevision"], st["updateRevision"]);
    let pod = s.json(&["get", "pod", "big-42"]);
    assert_eq!(pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "42");
    assert_eq!(pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "big-42");
    assert_eq!((pod["spec"]["hostname"].as_str(), pod["spec"]["subdomain"].as_str()), (Some("big-42"), Some("big")));
    s.ok(&["scale", "sts", "big", "--replicas=10"]);
    eventually(60, "90 pods removed at once", || (pods(&s, "app=big").len() == 10).then_some(()));
    assert!(pods(&s, "app=big").contains_key("big-9"));
}

fn timestamp(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// When the pod's Ready condition last turned True.
fn ready_since(s: &Server, pod: &str) -> String {
    let conditions = s.json(&["get", "pod", pod])["status"]["conditions"].clone();
    conditions.as_array().into_iter().flatten().find(|c| c["type"] == "Ready" && c["status"] == "True").map(|c| timestamp(&c["lastTransitionTime"])).unwrap_or_default()
}

#[test]
fn ordered_statefulset_with_claims_on_a_real_node() {
    let s = Server::start_node();
    s.wait_node_ready();
    let (_registry, image) = registry_with_busybox();
    // Ready 2 s after start, so order is visible in the timestamps; quick to stop.
    let sts = format!(
        r#"{{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {{"name": "web"}},
          "spec": {{"replicas": 3, "serviceName": "web", "selector": {{"matchLabels": {{"app": "web"}}}},
            "template": {{"metadata": {{"labels": {{"app": "web"}}}}, "spec": {{"terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"],
                "readinessProbe": {{"exec": {{"command": ["cat", "/tmp/ready"]}}, "periodSeconds": 1}},
                "volumeMounts": [{{"name": "data", "mountPath": "/data"}}]}}]}}}},
            "volumeClaimTemplates": [{{"metadata": {{"name": "data"}}, "spec": {{"accessModes": ["ReadWriteOnce"], "resources": {{"requests": {{"storage": "1Gi"}}}}}}}}]}}}}"#
    );
    assert!(s.apply_stdin(&["apply", "-f", "-"], &sts).ok());
    rollout_ok(&s, "sts/web");
    // In order: each pod was created only once its predecessor was Ready.
    for i in 1..3 {
        let created = timestamp(&s.json(&["get", "pod", &format!("web-{i}")])["metadata"]["creationTimestamp"]);
        let before = ready_since(&s, &format!("web-{}", i - 1));
        assert!(!before.is_empty() && created >= before, "web-{i} created {created}, web-{} Ready {before}", i - 1);
    }
    // Each ordinal's claim is provisioned by the default local-path class.
    for i in 0..3 {
        let claim = s.ok(&["get", "pvc", &format!("data-web-{i}"), "-o", "jsonpath={.status.phase}/{.spec.storageClassName}"]);
        assert_eq!(claim, "Bound/local-path", "data-web-{i}");
    }
    assert_eq!(s.ok(&["exec", "web-1", "--", "hostname"]), "web-1");

    // A deleted pod comes back under its name, with its claim.
    s.ok(&["exec", "web-0", "--", "sh", "-c", "echo kept > /data/x"]);
    let uid = s.json(&["get", "pod", "web-0"])["metadata"]["uid"].clone();
    s.ok(&["delete", "pod", "web-0", "--wait=true"]);
    eventually(60, "web-0 back and Ready", || {
        let pod = s.json(&["get", "pods", "-l", "app=web"])["items"].as_array().unwrap().iter().find(|p| p["metadata"]["name"] == "web-0").cloned()?;
        (pod["metadata"]["uid"] != uid && !ready_since(&s, "web-0").is_empty()).then_some(())
    });
    assert_eq!(s.ok(&["exec", "web-0", "--", "cat", "/data/x"]), "kept");

    // Scaled down from the highest ordinal, one at a time; the claims stay (Retain).
    s.ok(&["scale", "sts", "web", "--replicas=1"]);
    eventually(60, "web-2 then web-1 gone", || {
        let live = pods(&s, "app=web");
        assert!(!(live.contains_key("web-2") && !live.contains_key("web-1")), "web-1 went before web-2");
        (live.len() == 1 && live.contains_key("web-0")).then_some(())
    });
    assert!(s.kubectl(&["get", "pvc", "data-web-2"]).ok(), "claims outlive scaled-down pods");
    s.ok(&["scale", "sts", "web", "--replicas=3"]);
    rollout_ok(&s, "sts/web");

    // A partitioned update replaces only ordinals at or above the partition.
    s.ok(&["patch", "sts", "web", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}},"template":{"metadata":{"annotations":{"rev":"two"}}}}}"#]);
    let out = rollout_ok(&s, "sts/web");
    assert!(out.contains("partitioned roll out complete: 1 new pods"), "{out}");
    let annotated = |pod: &str| s.json(&["get", "pod", pod])["metadata"]["annotations"]["rev"] == "two";
    assert!(annotated("web-2") && !annotated("web-1") && !annotated("web-0"));
    s.ok(&["patch", "sts", "web", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#]);
    rollout_ok(&s, "sts/web");
    eventually(60, "all updated", || (0..3).all(|i| annotated(&format!("web-{i}"))).then_some(()));
    let st = s.json(&["get", "sts", "web"])["status"].clone();
    assert_eq!((st["updatedReplicas"].as_i64(), st["currentRevision"].clone()), (Some(3), st["updateRevision"].clone()), "{st}");

    // History shows both templates; undo rolls back and renumbers.
    let history = s.ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let revision = s.ok(&["rollout", "history", "sts/web", "--revision=2"]);
    assert!(revision.contains("two"), "{revision}");
    s.ok(&["rollout", "undo", "sts/web"]);
    eventually(90, "rolled back", || (0..3).all(|i| !annotated(&format!("web-{i}"))).then_some(()));
    rollout_ok(&s, "sts/web");
    let history = s.ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains('3') && !history.lines().any(|l| l.trim_start().starts_with("1 ")), "{history}");
    let events = s.ok(&["get", "events", "--field-selector", "involvedObject.name=web", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"), "{events}");
    s.ok(&["delete", "sts", "web", "--wait=true"]);
}
