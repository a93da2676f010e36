use serde_json::json;

use super::tests::defaulted;

#[test]
fn services() {
    let s = defaulted(
        "",
        "Service",
        json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
    assert_eq!(spec["ports"][1]["targetPort"], "dns");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert!(spec.get("externalTrafficPolicy").is_none());

    let lb = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 0}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "x"}]}}}),
    );
    let spec = &lb["spec"];
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    assert_eq!(spec["clusterIPs"], json!(["10.96.0.10"]));
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(lb["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    assert!(lb["status"]["loadBalancer"]["ingress"][1].get("ipMode").is_none());

    let ext = defaulted("", "Service", json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}));
    for absent in ["ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy", "clusterIPs"] {
        assert!(ext["spec"].get(absent).is_none(), "{absent}");
    }
    let headless = defaulted("", "Service", json!({"spec": {"clusterIP": "None"}}));
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let headless_selected = defaulted("", "Service", json!({"spec": {"clusterIP": "None", "selector": {"a": "b"}}}));
    assert_eq!(headless_selected["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(headless_selected["spec"]["ipFamilies"], json!(["IPv4"]));
    let affinity = defaulted("", "Service", json!({"spec": {"sessionAffinity": "ClientIP"}}));
    assert_eq!(affinity["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    let no_affinity =
        defaulted("", "Service", json!({"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}));
    assert!(no_affinity["spec"].get("sessionAffinityConfig").is_none());
    let external_ips = defaulted("", "Service", json!({"spec": {"externalIPs": ["1.1.1.1"]}}));
    assert_eq!(external_ips["spec"]["externalTrafficPolicy"], "Cluster");
}

#[test]
fn namespaces() {
    let ns = defaulted(
        "",
        "Namespace",
        json!({"metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "x"}}}),
    );
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "dev");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    let other = defaulted(
        "",
        "Namespace",
        json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["x"]}, "status": {"phase": "Terminating"}}),
    );
    assert_eq!(other["spec"]["finalizers"], json!(["x", "kubernetes"]));
    assert_eq!(other["status"]["phase"], "Terminating");
    let deleting = defaulted(
        "",
        "Namespace",
        json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {}}),
    );
    assert!(deleting["spec"].get("finalizers").is_none());
}

#[test]
fn storage_kinds() {
    let pv = defaulted(
        "",
        "PersistentVolume",
        json!({"spec": {"capacity": {"storage": "1024Mi"}, "hostPath": {"path": "/d"}}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(pv["spec"]["hostPath"]["type"], "");
    assert_eq!(pv["status"]["phase"], "Pending");
    let pvc = defaulted(
        "",
        "PersistentVolumeClaim",
        json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "0.5Gi"}}}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "512Mi");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let bound =
        defaulted("", "PersistentVolumeClaim", json!({"spec": {"volumeMode": "Block"}, "status": {"phase": "Bound"}}));
    assert_eq!(bound["spec"]["volumeMode"], "Block");
    assert_eq!(bound["status"]["phase"], "Bound");
    let sc = defaulted("storage.k8s.io", "StorageClass", json!({"provisioner": "x"}));
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");
    let csi = defaulted("storage.k8s.io", "CSIDriver", json!({"spec": {}}));
    assert_eq!(csi["spec"]["attachRequired"], true);
    assert_eq!(csi["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
}

#[test]
fn small_core_kinds() {
    assert_eq!(defaulted("", "Secret", json!({}))["type"], "Opaque");
    assert_eq!(defaulted("", "Secret", json!({"type": "kubernetes.io/tls"}))["type"], "kubernetes.io/tls");
    let merged = defaulted(
        "",
        "Secret",
        json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "hello", "c": "", "d": "ab", "e": "abc"}}),
    );
    assert_eq!(merged["data"], json!({"a": "eA==", "b": "aGVsbG8=", "c": "", "d": "YWI=", "e": "YWJj"}));
    assert!(merged.get("stringData").is_none());
    let only_strings = defaulted("", "Secret", json!({"stringData": {"user": "admin"}}));
    assert_eq!(only_strings["data"], json!({"user": "YWRtaW4="}));
    let ep =
        defaulted("", "Endpoints", json!({"subsets": [{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}));
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(ep["subsets"][0]["ports"][1]["protocol"], "UDP");
    let slice = defaulted("discovery.k8s.io", "EndpointSlice", json!({"ports": [{"port": 80}]}));
    assert_eq!(slice["ports"][0], json!({"port": 80, "name": "", "protocol": "TCP"}));
    let node = defaulted(
        "",
        "Node",
        json!({"spec": {"podCIDR": "10.244.0.0/24"}, "status": {"capacity": {"cpu": "2", "memory": "2048Mi"}}}),
    );
    assert_eq!(node["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
    assert_eq!(node["status"]["allocatable"], json!({"cpu": "2", "memory": "2Gi"}));
    assert!(node["status"].get("phase").is_none());
    let lr = defaulted(
        "",
        "LimitRange",
        json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}, "default": {"memory": "256Mi"}},
            {"type": "Pod", "max": {"cpu": "4"}}
        ]}}),
    );
    let item = &lr["spec"]["limits"][0];
    assert_eq!(item["default"], json!({"memory": "256Mi", "cpu": "2"}));
    assert_eq!(item["defaultRequest"], json!({"memory": "256Mi", "cpu": "2"}));
    assert!(lr["spec"]["limits"][1].get("default").is_none());
    let quota = defaulted("", "ResourceQuota", json!({"spec": {"hard": {"cpu": "1000m", "pods": "10"}}}));
    assert_eq!(quota["spec"]["hard"], json!({"cpu": "1", "pods": "10"}));
}

#[test]
fn autoscalers() {
    let v2 = defaulted(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 5}}),
    );
    assert_eq!(v2["spec"]["minReplicas"], 1);
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"],
        json!({"type": "Utilization", "averageUtilization": 80})
    );
    assert!(v2["spec"].get("behavior").is_none());
    let behavior = defaulted(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"apiVersion": "autoscaling/v2", "spec": {
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
    );
    let b = &behavior["spec"]["behavior"];
    assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
    assert_eq!(b["scaleUp"]["selectPolicy"], "Max");
    assert_eq!(b["scaleUp"]["policies"].as_array().unwrap().len(), 2);
    assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 60);
    assert_eq!(b["scaleDown"]["policies"], json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]));
    let v1 = defaulted(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"apiVersion": "autoscaling/v1", "spec": {"maxReplicas": 5}}),
    );
    assert_eq!(v1["spec"]["minReplicas"], 1);
    assert!(v1["spec"].get("metrics").is_none());
}

#[test]
fn networking_scheduling_and_rbac() {
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}], "egress": [{}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    let ingress_only = defaulted("networking.k8s.io", "NetworkPolicy", json!({"spec": {"podSelector": {}}}));
    assert_eq!(ingress_only["spec"]["policyTypes"], json!(["Ingress"]));
    let class = defaulted(
        "networking.k8s.io",
        "IngressClass",
        json!({"spec": {"controller": "x", "parameters": {"kind": "K", "name": "n"}}}),
    );
    assert_eq!(class["spec"]["parameters"]["scope"], "Cluster");
    let ingress = json!({"spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {}}]}}]}});
    assert_eq!(defaulted("networking.k8s.io", "Ingress", ingress.clone()), ingress);
    let pc = defaulted("scheduling.k8s.io", "PriorityClass", json!({"value": 5}));
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let rb = defaulted(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        json!({
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s", "namespace": "d"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert!(rb["subjects"][1].get("apiGroup").is_none());
    let pdb = json!({"spec": {"minAvailable": 1}});
    assert_eq!(defaulted("policy", "PodDisruptionBudget", pdb.clone()), pdb);
}

#[test]
fn defaults_are_idempotent() {
    let inputs = [
        (
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"limits": {"cpu": "1"}}}]}}),
        ),
        ("apps", "StatefulSet", json!({"spec": {"template": {"spec": {"containers": []}}}})),
        (
            "batch",
            "Job",
            json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {"spec": {"containers": []}}}}),
        ),
        ("", "Service", json!({"spec": {"clusterIP": "None"}})),
        ("", "Namespace", json!({"metadata": {"name": "n"}})),
    ];
    for (group, kind, obj) in inputs {
        let once = defaulted(group, kind, obj);
        assert_eq!(defaulted(group, kind, once.clone()), once, "{kind}");
    }
    // Non-objects are left alone.
    assert_eq!(defaulted("", "Pod", json!(null)), json!(null));
    assert_eq!(defaulted("", "Pod", json!({"spec": "junk"})), json!({"spec": "junk"}));
}
