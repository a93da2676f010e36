//! Filters, scores and whole attempts on in-memory node and pod state.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use rand::SeedableRng;
use serde_json::json;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::filters::{self, Code};
use crate::preempt;
use crate::schedule::{self, Prepared};
use crate::scores;

fn node(name: &str, cpu: &str, mem: &str, labels: serde_json::Value, extra_spec: serde_json::Value) -> Node {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": extra_spec,
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}},
    }))
    .unwrap()
}

fn pod(name: &str, spec: serde_json::Value) -> Arc<PodInfo> {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "x"}]);
    }
    let labels = spec.as_object_mut().unwrap().remove("labels").unwrap_or(json!({}));
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec})).unwrap();
    Arc::new(PodInfo::new(Arc::new(p)))
}

fn cache(nodes: &[Node]) -> Cache {
    let mut c = Cache::default();
    nodes.iter().for_each(|n| {
        c.set_node(n);
    });
    c
}

fn place(c: &Cache, p: &PodInfo) -> Result<String, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    schedule::schedule(c, p, &mut 0, &mut rng).map(|p| p.node).map_err(|f| {
        let (post, _) = preempt::preempt(c, p, &f);
        f.message(&post)
    })
}

#[test]
fn requests_take_the_init_container_maximum() {
    let p = pod(
        "p",
        json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}}],
        }),
    );
    assert_eq!(p.requests.milli_cpu, 500);
    assert_eq!(p.requests.memory, 1 << 30);
    assert_eq!(p.nonzero, (500, (1 << 30) + 200 * 1024 * 1024));
}

#[test]
fn resources_fit_and_message() {
    let c = cache(&[node("a", "1", "1Gi", json!({}), json!({})), node("b", "4", "1Gi", json!({}), json!({}))]);
    let big = pod("big", json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}));
    assert_eq!(
        place(&c, &big).unwrap_err(),
        "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    let mid = pod("mid", json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}));
    assert_eq!(place(&c, &mid).unwrap(), "b");
}

#[test]
fn pod_count_limit() {
    let mut n = NodeInfo::new(&node("a", "1", "1Gi", json!({}), json!({})));
    n.allowed_pods = 1;
    n.add_pod(pod("x", json!({})));
    let f = filters::resources_fit(&pod("y", json!({})), &n).unwrap_err();
    assert_eq!(f.reasons, ["Too many pods"]);
}

#[test]
fn node_selector_taints_and_unschedulable() {
    let c = cache(&[
        node("a", "4", "8Gi", json!({"disk": "ssd"}), json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]})),
        node("b", "4", "8Gi", json!({"disk": "hdd"}), json!({"unschedulable": true})),
        node("c", "4", "8Gi", json!({"disk": "hdd"}), json!({})),
    ]);
    let p = pod("p", json!({"nodeSelector": {"disk": "ssd"}}));
    assert_eq!(
        place(&c, &p).unwrap_err(),
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {gpu: yes}, 1 node(s) were unschedulable. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    let tolerant = pod("t", json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}));
    assert_eq!(place(&c, &tolerant).unwrap(), "a");
    let cordon_ok = pod("u", json!({"nodeName": "b", "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}));
    let nb = &c.nodes["b"];
    assert!(filters::check(&cordon_ok, nb).is_ok());
    assert_eq!(filters::check(&cordon_ok, &c.nodes["c"]).unwrap_err().reasons, [filters::ERR_NODE_NAME]);
}

#[test]
fn required_node_affinity_operators() {
    let c = cache(&[node("a", "4", "8Gi", json!({"gen": "3"}), json!({})), node("b", "4", "8Gi", json!({"gen": "5"}), json!({}))]);
    let p = pod(
        "p",
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}]}}}}),
    );
    assert_eq!(place(&c, &p).unwrap(), "b");
}

#[test]
fn host_ports_conflict() {
    let mut n = NodeInfo::new(&node("a", "4", "8Gi", json!({}), json!({})));
    let with_port = |name: &str, ip: &str| pod(name, json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}));
    n.add_pod(with_port("x", "10.0.0.1"));
    assert!(filters::node_ports(&with_port("y", "10.0.0.2"), &n).is_ok());
    let f = filters::node_ports(&with_port("z", ""), &n).unwrap_err();
    assert_eq!((f.code, f.reasons[0].as_str()), (Code::Unschedulable, filters::ERR_PORTS));
}

fn bind(c: &mut Cache, p: Arc<PodInfo>, node: &str) {
    c.set_pod(p, node);
}

#[test]
fn pod_anti_affinity_by_hostname_and_zone() {
    let mut c = cache(&[
        node("a", "4", "8Gi", json!({"zone": "z1"}), json!({})),
        node("b", "4", "8Gi", json!({"zone": "z1"}), json!({})),
        node("c", "4", "8Gi", json!({"zone": "z2"}), json!({})),
    ]);
    let anti = |name: &str, key: &str| {
        pod(name, json!({"labels": {"app": "web"}, "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key}]}}}))
    };
    bind(&mut c, anti("w1", "zone"), "a");
    let p = anti("w2", "zone");
    assert_eq!(place(&c, &p).unwrap(), "c");
    bind(&mut c, p, "c");
    let msg = place(&c, &anti("w3", "zone")).unwrap_err();
    assert!(msg.starts_with("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."), "{msg}");
    // A plain pod is kept away by the existing pods' anti-affinity too.
    let plain = pod("p", json!({"labels": {"app": "web"}}));
    assert!(place(&c, &plain).unwrap_err().starts_with("0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."));
    assert!(place(&c, &pod("q", json!({}))).is_ok());
}

#[test]
fn pod_affinity_follows_the_group() {
    let mut c = cache(&[node("a", "4", "8Gi", json!({"zone": "z1"}), json!({})), node("b", "4", "8Gi", json!({"zone": "z2"}), json!({}))]);
    let aff = |name: &str| {
        pod(name, json!({"labels": {"app": "db"}, "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}))
    };
    // The first of a self-selecting group may go anywhere.
    assert!(place(&c, &aff("d1")).is_ok());
    bind(&mut c, aff("d1"), "b");
    for i in 0..5 {
        assert_eq!(place(&c, &aff(&format!("d{}", i + 2))).unwrap(), "b");
    }
    let other = pod("x", json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}}));
    assert!(place(&c, &other).unwrap_err().contains("2 node(s) didn't match pod affinity rules"));
}

#[test]
fn topology_spread_do_not_schedule() {
    let mut c = cache(&[node("a", "4", "8Gi", json!({"zone": "z1"}), json!({})), node("b", "4", "8Gi", json!({"zone": "z2"}), json!({})), node("c", "4", "8Gi", json!({}), json!({}))]);
    let spread = |name: &str| {
        pod(name, json!({"labels": {"app": "s"}, "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "s"}}}]}))
    };
    bind(&mut c, spread("s1"), "a");
    assert_eq!(place(&c, &spread("s2")).unwrap(), "b");
    bind(&mut c, spread("s2"), "b");
    bind(&mut c, spread("s3"), "b");
    let msg = place(&c, &spread("s4")).unwrap_or_default();
    assert_eq!(msg, "a");
    bind(&mut c, spread("s4"), "a");
    let prep_pod = spread("s5");
    let prep = Prepared::new(&c, &prep_pod).unwrap();
    assert_eq!(prep.filter(&c.nodes["c"]).unwrap_err().reasons, [crate::spread::ERR_MISSING_LABEL]);
}

#[test]
fn scores_prefer_empty_balanced_and_preferred_nodes() {
    let mut busy = NodeInfo::new(&node("busy", "4", "8Gi", json!({}), json!({})));
    let idle = NodeInfo::new(&node("idle", "4", "8Gi", json!({}), json!({})));
    busy.add_pod(pod("x", json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]})));
    let p = pod("p", json!({}));
    assert!(scores::least_allocated(&p, &idle) > scores::least_allocated(&p, &busy));
    assert!(scores::balanced_allocation(&p, &idle) > scores::balanced_allocation(&p, &busy));

    let c = cache(&[
        node("a", "4", "8Gi", json!({"tier": "gold"}), json!({})),
        node("b", "4", "8Gi", json!({}), json!({"taints": [{"key": "meh", "effect": "PreferNoSchedule"}]})),
        node("d", "4", "8Gi", json!({}), json!({})),
    ]);
    let pref = pod("p", json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}}]}}}));
    assert_eq!(place(&c, &pref).unwrap(), "a");
    // Without preferences the PreferNoSchedule node never wins.
    for i in 0..20 {
        assert_ne!(place(&c, &pod(&format!("q{i}"), json!({}))).unwrap(), "b");
    }
}

#[test]
fn preferred_pod_affinity_and_soft_spread() {
    let mut c = cache(&[node("a", "4", "8Gi", json!({"zone": "z1"}), json!({})), node("b", "4", "8Gi", json!({"zone": "z2"}), json!({}))]);
    bind(&mut c, pod("cache", json!({"labels": {"app": "cache"}})), "b");
    let p = pod("p", json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}}));
    assert_eq!(place(&c, &p).unwrap(), "b");
    let soft = pod("s", json!({"labels": {"app": "cache"}, "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "cache"}}}]}));
    assert_eq!(place(&c, &soft).unwrap(), "a");
}

#[test]
fn preemption_picks_lower_priority_victims() {
    let mut c = cache(&[node("a", "2", "8Gi", json!({}), json!({}))]);
    let req = |name: &str, prio: i32| pod(name, json!({"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}));
    bind(&mut c, req("low", 0), "a");
    let high = req("high", 100);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let fit = schedule::schedule(&c, &high, &mut 0, &mut rng).unwrap_err();
    assert_eq!(fit.message(""), "0/1 nodes are available: 1 Insufficient cpu.");
    let (msg, cand) = preempt::preempt(&c, &high, &fit);
    assert_eq!(msg, "");
    let cand = cand.unwrap();
    assert_eq!((cand.node.as_str(), cand.victims.len()), ("a", 1));
    let same = req("same", 0);
    let fit = schedule::schedule(&c, &same, &mut 0, &mut rng).unwrap_err();
    assert_eq!(preempt::preempt(&c, &same, &fit).0, "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");
}

#[test]
fn no_nodes() {
    assert_eq!(place(&Cache::default(), &pod("p", json!({}))).unwrap_err(), "no nodes available to schedule pods");
}

#[test]
fn nominated_pods_keep_their_room() {
    let mut c = cache(&[node("a", "2", "8Gi", json!({}), json!({}))]);
    let req = |name: &str, prio: i32| pod(name, json!({"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}));
    c.set_nominated("default/high", Some("a"), Some(req("high", 100)));
    assert!(place(&c, &req("low", 0)).unwrap_err().starts_with("0/1 nodes are available: 1 Insufficient cpu."));
    assert_eq!(place(&c, &req("high", 100)).unwrap(), "a");
    c.set_nominated("default/high", None, None);
    assert_eq!(place(&c, &req("low", 0)).unwrap(), "a");
}

#[test]
fn pods_of_one_controller_spread_over_equal_nodes() {
    let nodes: Vec<Node> = (0..4).map(|i| node(&format!("n{i}"), "8", "32Gi", json!({}), json!({}))).collect();
    let mut c = cache(&nodes);
    let owned = |name: &str, uid: &str| {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }))
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(p)))
    };
    // Another controller's pods fill n0 first: they must not count against "web".
    for i in 0..2 {
        bind(&mut c, owned(&format!("other-{i}"), "uid-other"), "n0");
    }
    for i in 0..8 {
        let p = owned(&format!("web-{i}"), "uid-web");
        let n = place(&c, &p).unwrap();
        bind(&mut c, p, &n);
    }
    let per_node: Vec<i64> = (0..4).map(|i| c.nodes[&format!("n{i}")].controller_pods.get("uid-web").copied().unwrap_or(0)).collect();
    assert_eq!(per_node, [2, 2, 2, 2]);
}

#[test]
fn preemption_prefers_victims_no_budget_protects() {
    let mut c = cache(&[node("a", "2", "8Gi", json!({}), json!({})), node("b", "2", "8Gi", json!({}), json!({}))]);
    let req = |name: &str, app: &str| pod(name, json!({"priority": 0, "labels": {"app": app}, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}));
    bind(&mut c, req("guarded", "db"), "a");
    bind(&mut c, req("free", "web"), "b");
    let budget = |allowed: i32| -> k8s_openapi::api::policy::v1::PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 1},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1},
        }))
        .unwrap()
    };
    c.pdbs.insert("default/db".into(), crate::cache::Pdb::new(&budget(0)));
    let high = pod("high", json!({"priority": 100, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let fit = schedule::schedule(&c, &high, &mut 0, &mut rng).unwrap_err();
    let cand = preempt::preempt(&c, &high, &fit).1.unwrap();
    assert_eq!((cand.node.as_str(), cand.victims[0].key.as_str(), cand.pdb_violations), ("b", "default/free", 0));
    // With the budget allowing one disruption both nodes are equal: no violation either way.
    c.pdbs.insert("default/db".into(), crate::cache::Pdb::new(&budget(1)));
    assert_eq!(preempt::preempt(&c, &high, &fit).1.unwrap().pdb_violations, 0);
    // When only the guarded pod can make room, it is still preempted, counted as a violation.
    c.remove_pod("default/free");
    bind(&mut c, req("free", "web"), "b");
    c.pdbs.insert("default/db".into(), crate::cache::Pdb::new(&budget(0)));
    c.nodes.get_mut("b").unwrap().unschedulable = true;
    let fit = schedule::schedule(&c, &high, &mut 0, &mut rng).unwrap_err();
    let cand = preempt::preempt(&c, &high, &fit).1.unwrap();
    assert_eq!((cand.node.as_str(), cand.pdb_violations), ("a", 1));
}

fn volume_cache() -> Cache {
    use kube::runtime::watcher::Event;
    let mut c = cache(&[node("a", "4", "8Gi", json!({"zone": "z1"}), json!({})), node("b", "4", "8Gi", json!({"zone": "z2"}), json!({}))]);
    let v = &mut c.volumes;
    v.claims.apply(Event::InitDone);
    v.volumes.apply(Event::InitDone);
    v.classes.apply(Event::InitDone);
    let class = |name: &str, provisioner: &str, mode: &str, topo: serde_json::Value| {
        Event::Apply(serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode, "allowedTopologies": topo})).unwrap())
    };
    v.classes.apply(class("local-path", "rancher.io/local-path", "WaitForFirstConsumer", json!(null)));
    v.classes.apply(class("z2-only", "rancher.io/local-path", "WaitForFirstConsumer", json!([{"matchLabelExpressions": [{"key": "zone", "values": ["z2"]}]}])));
    v.classes.apply(class("static", "kubernetes.io/no-provisioner", "WaitForFirstConsumer", json!(null)));
    v.classes.apply(class("fast", "example.com/disk", "Immediate", json!(null)));
    let claim = |name: &str, class: &str, volume: &str| {
        Event::Apply(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"storageClassName": class, "volumeName": volume}})).unwrap())
    };
    v.claims.apply(claim("on-b", "local-path", "pv-b"));
    v.claims.apply(claim("lost", "local-path", "pv-gone"));
    v.claims.apply(claim("new", "local-path", ""));
    v.claims.apply(claim("z2", "z2-only", ""));
    v.claims.apply(claim("by-hand", "static", ""));
    v.claims.apply(claim("immediate", "fast", ""));
    v.volumes.apply(Event::Apply(serde_json::from_value(json!({"metadata": {"name": "pv-b"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}})).unwrap()));
    c
}

fn with_claim(name: &str, claim: &str) -> Arc<PodInfo> {
    pod(name, json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}))
}

#[test]
fn volume_binding_follows_claims_volumes_and_classes() {
    let c = volume_cache();
    // A bound claim pins the pod to its volume's node.
    assert_eq!(place(&c, &with_claim("p1", "on-b")).unwrap(), "b");
    // A delayed claim goes anywhere its class's topology allows, and is provisioned there.
    assert!(place(&c, &with_claim("p2", "new")).is_ok());
    assert_eq!(place(&c, &with_claim("p3", "z2")).unwrap(), "b");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let placed = schedule::schedule(&c, &with_claim("p4", "new"), &mut 0, &mut rng).unwrap();
    assert_eq!(placed.delayed_claims.iter().map(|c| c.metadata.name.as_deref().unwrap()).collect::<Vec<_>>(), ["new"]);
    // Pods that cannot run anywhere, with upstream's messages.
    let msg = |claim: &str| place(&c, &with_claim("x", claim)).unwrap_err();
    assert_eq!(msg("missing"), "0/2 nodes are available: persistentvolumeclaim \"missing\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.");
    assert!(msg("immediate").starts_with("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."), "{}", msg("immediate"));
    assert!(msg("lost").starts_with("0/2 nodes are available: 2 node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)."), "{}", msg("lost"));
    assert!(msg("by-hand").starts_with("0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind."), "{}", msg("by-hand"));
    // Two claims on different nodes conflict.
    let both = pod("p5", json!({"volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "on-b"}}, {"name": "b", "persistentVolumeClaim": {"claimName": "z2"}}]}));
    assert_eq!(place(&c, &both).unwrap(), "b");
}
