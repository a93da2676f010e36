//! ResourceQuota, LimitRange and claim expansion through the real kubectl, on one server
//! without a node agent: pods stay Pending (they still count), and the test
//! plays the kubelet where a pod must finish.

use e2e::{eventually, Server};

/// `status.used[resource]` of quota `q` once it equals `want`.
fn wait_used(s: &Server, ns: &str, resource: &str, want: &str) {
    eventually(30, &format!("{ns}: quota used {resource}={want}"), || {
        let q = s.json(&["get", "quota", "q", "-n", ns]);
        (q["status"]["used"][resource] == want).then_some(())
    });
}

fn create(s: &Server, ns: &str, manifest: &str) -> Result<String, String> {
    let out = s.apply_stdin(&["create", "-n", ns, "-f", "-"], manifest);
    if out.ok() {
        Ok(out.stdout)
    } else {
        Err(out.stderr)
    }
}

fn pod(name: &str, resources: &str) -> String {
    format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"c","image":"nginx","resources":{resources}}}]}}}}"#)
}

/// Whether `kubectl describe quota` has the row `resource used hard`.
fn describe_row(s: &Server, ns: &str, row: &[&str]) -> bool {
    s.ok(&["describe", "quota", "q", "-n", ns]).lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == row)
}

#[test]
fn quotas_and_limit_ranges() {
    let s = Server::start();
    object_counts_are_enforced_and_released(&s);
    compute_quota_with_limit_range_defaults(&s);
    limit_range_min_max(&s);
    concurrent_creates_do_not_overshoot(&s);
    deployment_stops_at_the_pods_quota(&s);
    claims_are_held_to_storage_quota_and_limits(&s);
    bound_claims_grow_when_their_class_allows(&s);
}

fn object_counts_are_enforced_and_released(s: &Server) {
    let ns = "quota-counts";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "quota", "q", "--hard=pods=2,services=1,count/deployments.apps=1", "-n", ns]);
    wait_used(s, ns, "pods", "0");
    s.ok(&["run", "a", "--image=nginx", "-n", ns]);
    s.ok(&["run", "b", "--image=nginx", "-n", ns]);
    let err = s.fails(&["run", "c", "--image=nginx", "-n", ns]);
    assert!(err.contains(r#"pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"#), "{err}");
    assert!(describe_row(s, ns, &["pods", "2", "2"]), "{}", s.ok(&["describe", "quota", "q", "-n", ns]));
    let listed = s.ok(&["get", "quota", "q", "-n", ns]);
    assert!(listed.contains("pods: 2/2") && listed.contains("services: 0/1"), "{listed}");

    // A finished pod holds no quota: the controller recounts.
    let done = r#"{"status":{"phase":"Succeeded"}}"#;
    s.ok(&["patch", "pod", "a", "-n", ns, "--subresource=status", "--type=merge", "-p", done]);
    wait_used(s, ns, "pods", "1");
    s.ok(&["run", "c", "--image=nginx", "-n", ns]);
    s.ok(&["delete", "pod", "b", "-n", ns, "--grace-period=0", "--force"]);
    wait_used(s, ns, "pods", "1");

    s.ok(&["create", "service", "clusterip", "one", "--tcp=80", "-n", ns]);
    let err = s.fails(&["create", "service", "clusterip", "two", "--tcp=80", "-n", ns]);
    assert!(err.contains("exceeded quota: q, requested: services=1, used: services=1, limited: services=1"), "{err}");
    s.ok(&["create", "deployment", "d1", "--image=nginx", "--replicas=0", "-n", ns]);
    let err = s.fails(&["create", "deployment", "d2", "--image=nginx", "--replicas=0", "-n", ns]);
    assert!(err.contains("requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"), "{err}");
    s.ok(&["delete", "service", "one", "-n", ns]);
    wait_used(s, ns, "services", "0");
    // Kinds counted by `count/<plural>.<group>` are released on deletion too.
    s.ok(&["delete", "deployment", "d1", "-n", ns]);
    wait_used(s, ns, "count/deployments.apps", "0");
}

fn compute_quota_with_limit_range_defaults(s: &Server) {
    let ns = "quota-compute";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "quota", "q", "--hard=requests.cpu=250m,limits.memory=1Gi", "-n", ns]);
    wait_used(s, ns, "requests.cpu", "0");
    let err = create(s, ns, &pod("bare", "{}")).unwrap_err();
    assert!(err.contains(r#"pods "bare" is forbidden: failed quota: q: must specify limits.memory for: c; requests.cpu for: c"#), "{err}");

    let range = r#"{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"lr"},"spec":{"limits":[{"type":"Container",
        "default":{"cpu":"500m","memory":"128Mi"},"defaultRequest":{"cpu":"100m","memory":"64Mi"}}]}}"#;
    create(s, ns, range).unwrap();
    for name in ["p1", "p2"] {
        create(s, ns, &pod(name, "{}")).unwrap();
    }
    let p = s.json(&["get", "pod", "p1", "-n", ns]);
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["cpu"], "100m", "{res}");
    assert_eq!(res["limits"]["memory"], "128Mi", "{res}");
    let note = p["metadata"]["annotations"]["kubernetes.io/limit-ranger"].as_str().unwrap_or_default();
    assert!(note.starts_with("LimitRanger plugin set: cpu, memory request for container c"), "{note}");
    let err = create(s, ns, &pod("p3", "{}")).unwrap_err();
    assert!(err.contains("exceeded quota: q, requested: requests.cpu=100m, used: requests.cpu=200m, limited: requests.cpu=250m"), "{err}");
    assert!(describe_row(s, ns, &["requests.cpu", "200m", "250m"]), "{}", s.ok(&["describe", "quota", "q", "-n", ns]));
    assert!(describe_row(s, ns, &["limits.memory", "256Mi", "1Gi"]), "{}", s.ok(&["describe", "quota", "q", "-n", ns]));
}

fn limit_range_min_max(s: &Server) {
    let ns = "limits-minmax";
    s.ok(&["create", "namespace", ns]);
    let range = r#"{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"lr"},"spec":{"limits":[
        {"type":"Container","max":{"cpu":"500m"},"min":{"memory":"16Mi"}},
        {"type":"PersistentVolumeClaim","max":{"storage":"2Gi"}}]}}"#;
    create(s, ns, range).unwrap();
    let err = create(s, ns, &pod("big", r#"{"limits":{"cpu":"1","memory":"64Mi"}}"#)).unwrap_err();
    assert!(err.contains(r#"pods "big" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"#), "{err}");
    let err = create(s, ns, &pod("small", r#"{"limits":{"cpu":"100m","memory":"8Mi"}}"#)).unwrap_err();
    assert!(err.contains("minimum memory usage per Container is 16Mi, but request is 8Mi"), "{err}");
    create(s, ns, &pod("fits", r#"{"limits":{"cpu":"100m","memory":"32Mi"}}"#)).unwrap();
    // The max became the default limit (LimitRange defaulting).
    let lr = s.json(&["get", "limitrange", "lr", "-n", ns]);
    assert_eq!(lr["spec"]["limits"][0]["default"]["cpu"], "500m", "{lr}");

    // Validation: a default above the max is refused.
    let bad = r#"{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"bad"},"spec":{"limits":[{"type":"Container","max":{"cpu":"1"},"default":{"cpu":"2"}}]}}"#;
    let err = create(s, ns, bad).unwrap_err();
    assert!(err.contains("is invalid") && err.contains("default value 2 is greater than max value 1"), "{err}");
}

fn concurrent_creates_do_not_overshoot(s: &Server) {
    let ns = "quota-race";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "quota", "q", "--hard=pods=5", "-n", ns]);
    wait_used(s, ns, "pods", "0");
    let admitted = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..12).map(|i| scope.spawn(move || s.kubectl(&["run", &format!("p{i}"), "--image=nginx", "-n", ns]).ok())).collect();
        runs.into_iter().map(|r| r.join().unwrap()).filter(|ok| *ok).count()
    });
    assert_eq!(admitted, 5);
    let pods = s.json(&["get", "pods", "-n", ns]);
    assert_eq!(pods["items"].as_array().unwrap().len(), 5);
    wait_used(s, ns, "pods", "5");
}

fn deployment_stops_at_the_pods_quota(s: &Server) {
    let ns = "quota-deploy";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "quota", "q", "--hard=pods=2", "-n", ns]);
    wait_used(s, ns, "pods", "0");
    s.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=3", "-n", ns]);
    let event = eventually(30, "the ReplicaSet's FailedCreate event", || {
        let events = s.json(&["get", "events", "-n", ns, "--field-selector=reason=FailedCreate"]);
        events["items"].as_array()?.iter().find(|e| e["involvedObject"]["kind"] == "ReplicaSet").cloned()
    });
    let msg = event["message"].as_str().unwrap();
    assert!(msg.starts_with(r#"Error creating: pods "web-"#) && msg.ends_with("is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"), "{msg}");
    let rs = eventually(30, "the ReplicaFailure condition", || {
        let list = s.json(&["get", "rs", "-n", ns]);
        let rs = list["items"].as_array()?.first()?.clone();
        rs["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "ReplicaFailure" && c["reason"] == "FailedCreate").then_some(rs)
    });
    assert_eq!(rs["status"]["replicas"], 2);
    assert_eq!(s.json(&["get", "pods", "-n", ns])["items"].as_array().unwrap().len(), 2);
}

fn claims_are_held_to_storage_quota_and_limits(s: &Server) {
    let ns = "quota-storage";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "quota", "q", "--hard=requests.storage=3Gi,persistentvolumeclaims=5,standard.storageclass.storage.k8s.io/requests.storage=1Gi", "-n", ns]);
    wait_used(s, ns, "requests.storage", "0");
    let claim = |name: &str, class: &str, size: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{{"name":"{name}"}},"spec":{{"storageClassName":"{class}","accessModes":["ReadWriteOnce"],"resources":{{"requests":{{"storage":"{size}"}}}}}}}}"#)
    };
    create(s, ns, &claim("a", "local-path", "2Gi")).unwrap();
    let err = create(s, ns, &claim("b", "local-path", "2Gi")).unwrap_err();
    assert!(err.contains(r#"persistentvolumeclaims "b" is forbidden: exceeded quota: q, requested: requests.storage=2Gi, used: requests.storage=2Gi, limited: requests.storage=3Gi"#), "{err}");
    let err = create(s, ns, &claim("c", "standard", "2Gi")).unwrap_err();
    let class = "standard.storageclass.storage.k8s.io/requests.storage";
    let want = format!("requested: requests.storage=2Gi,{class}=2Gi, used: requests.storage=2Gi,{class}=0, limited: requests.storage=3Gi,{class}=1Gi");
    assert!(err.contains(&want), "{err}");
    assert!(describe_row(s, ns, &["persistentvolumeclaims", "1", "5"]), "{}", s.ok(&["describe", "quota", "q", "-n", ns]));
    let range = r#"{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"lr"},"spec":{"limits":[{"type":"PersistentVolumeClaim","min":{"storage":"100Mi"}}]}}"#;
    create(s, ns, range).unwrap();
    let err = create(s, ns, &claim("tiny", "local-path", "10Mi")).unwrap_err();
    assert!(err.contains(r#"persistentvolumeclaims "tiny" is forbidden: minimum storage usage per PersistentVolumeClaim is 100Mi, but request is 10Mi"#), "{err}");
}

/// A hand-made local-path volume of `class` and a claim bound to it.
fn bound_claim(s: &Server, ns: &str, name: &str, class: &str, expandable: bool) {
    let sc = format!(r#"{{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{{"name":"{class}"}},"provisioner":"rancher.io/local-path","allowVolumeExpansion":{expandable}}}"#);
    s.apply_stdin(&["create", "-f", "-"], &sc);
    let pv = format!(r#"{{"apiVersion":"v1","kind":"PersistentVolume","metadata":{{"name":"{ns}-{name}","annotations":{{"pv.kubernetes.io/provisioned-by":"rancher.io/local-path"}}}},
        "spec":{{"storageClassName":"{class}","capacity":{{"storage":"1Gi"}},"accessModes":["ReadWriteOnce"],"hostPath":{{"path":"/tmp/{ns}-{name}"}}}}}}"#);
    s.apply_stdin(&["create", "-f", "-"], &pv);
    let pvc = format!(r#"{{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{{"name":"{name}"}},
        "spec":{{"storageClassName":"{class}","volumeName":"{ns}-{name}","accessModes":["ReadWriteOnce"],"resources":{{"requests":{{"storage":"1Gi"}}}}}}}}"#);
    create(s, ns, &pvc).unwrap();
    eventually(30, "the claim bound", || {
        let c = s.json(&["get", "pvc", name, "-n", ns]);
        (c["status"]["phase"] == "Bound" && c["status"]["capacity"]["storage"] == "1Gi").then_some(())
    });
}

fn resize(s: &Server, ns: &str, name: &str, size: &str) -> e2e::Out {
    let patch = format!(r#"{{"spec":{{"resources":{{"requests":{{"storage":"{size}"}}}}}}}}"#);
    s.kubectl(&["patch", "pvc", name, "-n", ns, "--type=merge", "-p", &patch])
}

fn bound_claims_grow_when_their_class_allows(s: &Server) {
    let ns = "claim-resize";
    s.ok(&["create", "namespace", ns]);
    s.ok(&["create", "quota", "q", "--hard=requests.storage=3Gi", "-n", ns]);
    wait_used(s, ns, "requests.storage", "0");
    bound_claim(s, ns, "fixed", "resize-fixed", false);
    let out = resize(s, ns, "fixed", "2Gi");
    assert!(out.stderr.contains(r#"persistentvolumeclaims "fixed" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"#), "{}", out.stderr);

    bound_claim(s, ns, "grows", "resize-allowed", true);
    wait_used(s, ns, "requests.storage", "2Gi");
    let out = resize(s, ns, "grows", "4Gi");
    assert!(out.stderr.contains("exceeded quota: q, requested: requests.storage=3Gi, used: requests.storage=2Gi, limited: requests.storage=3Gi"), "{}", out.stderr);
    assert!(resize(s, ns, "grows", "2Gi").ok());
    eventually(30, "the claim's capacity grown", || {
        let c = s.json(&["get", "pvc", "grows", "-n", ns]);
        (c["status"]["capacity"]["storage"] == "2Gi").then_some(())
    });
    assert_eq!(s.json(&["get", "pv", &format!("{ns}-grows")])["spec"]["capacity"]["storage"], "2Gi");
    let events = eventually(30, "the resize events", || {
        let e = s.ok(&["get", "events", "-n", ns, "--field-selector=involvedObject.name=grows"]);
        (e.contains("VolumeResizeSuccessful") && e.contains("FileSystemResizeSuccessful")).then_some(e)
    });
    assert!(events.contains("Resizing"), "{events}");
    wait_used(s, ns, "requests.storage", "3Gi");
    let out = resize(s, ns, "grows", "1Gi");
    assert!(out.stderr.contains("spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"), "{}", out.stderr);
}
