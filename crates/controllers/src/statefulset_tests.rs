use super::*;
use chrono::TimeZone;
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap()
}

fn sts(extra: serde_json::Value) -> StatefulSet {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid"},
        "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(v).unwrap()
}

/// Pod `web-N` at `rev`, Running and Ready (or Pending).
fn pod(set: &StatefulSet, ordinal: i32, rev: &str, ready: bool) -> Arc<Pod> {
    let mut p = new_pod(set, &set.spec.as_ref().unwrap().template, ordinal, rev);
    p.metadata.uid = Some(format!("pod-{ordinal}"));
    p.status = Some(serde_json::from_value(json!({
        "phase": if ready { "Running" } else { "Pending" },
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
    })).unwrap());
    Arc::new(p)
}

fn names(steps: &[Step]) -> Vec<String> {
    steps.iter().map(|s| format!("{s:?}")).collect()
}

#[test]
fn ordinals_parse_and_pods_carry_their_identity() {
    assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
    assert_eq!(parent_and_ordinal("web-x"), None);
    assert_eq!(parent_and_ordinal("web"), None);
    let set = sts(json!({"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}));
    let p = new_pod(&set, &set.spec.as_ref().unwrap().template, 2, "web-abc");
    let spec = p.spec.as_ref().unwrap();
    assert_eq!((p.name_any().as_str(), spec.hostname.as_deref(), spec.subdomain.as_deref()), ("web-2", Some("web-2"), Some("web")));
    assert_eq!(p.labels()[POD_NAME_LABEL], "web-2");
    assert_eq!(p.labels()[POD_INDEX_LABEL], "2");
    assert_eq!(p.labels()[REVISION_LABEL], "web-abc");
    let volume = &spec.volumes.as_ref().unwrap()[0];
    assert_eq!((volume.name.as_str(), volume.persistent_volume_claim.as_ref().unwrap().claim_name.as_str()), ("data", "data-web-2"));
    assert!(identity_matches(&set, &p));
    assert_eq!(claims_for(&set, 2)["data"].labels()["app"], "web");
}

#[test]
fn ordered_ready_creates_one_at_a_time_and_waits_for_ready() {
    let set = sts(json!({}));
    let s = Set::new(&set);
    let (steps, _) = plan(&set, &s, &[], "r1", "r1", now());
    assert_eq!(steps, [Step::Create { ordinal: 0, current: false }]);
    let (steps, _) = plan(&set, &s, &[pod(&set, 0, "r1", false)], "r1", "r1", now());
    assert!(steps.is_empty(), "pod 1 waits for pod 0 to be Ready: {steps:?}");
    let (steps, c) = plan(&set, &s, &[pod(&set, 0, "r1", true)], "r1", "r1", now());
    assert_eq!(steps, [Step::Create { ordinal: 1, current: false }]);
    assert_eq!((c.replicas, c.ready, c.current, c.updated), (1, 1, 1, 1));
}

#[test]
fn parallel_creates_all_and_scales_down_all_at_once() {
    let set = sts(json!({"podManagementPolicy": "Parallel", "replicas": 2, "ordinals": {"start": 5}}));
    let s = Set::new(&set);
    let (steps, _) = plan(&set, &s, &[], "r1", "r1", now());
    assert_eq!(steps, [Step::Create { ordinal: 5, current: false }, Step::Create { ordinal: 6, current: false }]);
    let pods: Vec<_> = (5..9).map(|o| pod(&set, o, "r1", false)).collect();
    let (steps, _) = plan(&set, &s, &pods, "r1", "r1", now());
    assert_eq!(names(&steps), ["ScaleDown { name: \"web-8\" }", "ScaleDown { name: \"web-7\" }"]);
}

#[test]
fn ordered_scale_down_goes_from_the_highest_ordinal_one_at_a_time() {
    let set = sts(json!({"replicas": 1}));
    let pods: Vec<_> = (0..3).map(|o| pod(&set, o, "r1", true)).collect();
    let (steps, _) = plan(&set, &Set::new(&set), &pods, "r1", "r1", now());
    assert_eq!(names(&steps), ["ScaleDown { name: \"web-2\" }"]);
}

#[test]
fn rolling_update_goes_down_to_the_partition_one_healthy_pod_at_a_time() {
    let set = sts(json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}));
    let s = Set::new(&set);
    let old: Vec<_> = (0..3).map(|o| pod(&set, o, "r1", true)).collect();
    let (steps, c) = plan(&set, &s, &old, "r1", "r2", now());
    assert_eq!(names(&steps), ["Update { name: \"web-2\" }"]);
    assert_eq!(c.current, 2);
    let partly = vec![old[0].clone(), old[1].clone(), pod(&set, 2, "r2", true)];
    assert_eq!(names(&plan(&set, &s, &partly, "r1", "r2", now()).0), ["Update { name: \"web-1\" }"]);
    let done = vec![old[0].clone(), pod(&set, 1, "r2", true), pod(&set, 2, "r2", true)];
    assert!(plan(&set, &s, &done, "r1", "r2", now()).0.is_empty(), "web-0 is below the partition");
    // Below the partition a missing pod comes back at the current revision.
    assert_eq!(plan(&set, &s, &done[1..], "r1", "r2", now()).0, [Step::Create { ordinal: 0, current: true }]);
}

#[test]
fn max_unavailable_updates_several_at_once() {
    let set = sts(json!({"replicas": 4, "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}));
    let old: Vec<_> = (0..4).map(|o| pod(&set, o, "r1", true)).collect();
    let (steps, _) = plan(&set, &Set::new(&set), &old, "r1", "r2", now());
    assert_eq!(names(&steps), ["Update { name: \"web-3\" }", "Update { name: \"web-2\" }"]);
}

#[test]
fn on_delete_leaves_old_pods_and_failed_pods_are_recreated() {
    let set = sts(json!({"updateStrategy": {"type": "OnDelete"}}));
    let old: Vec<_> = (0..3).map(|o| pod(&set, o, "r1", true)).collect();
    assert!(plan(&set, &Set::new(&set), &old, "r1", "r2", now()).0.is_empty());
    let mut failed = (*old[1]).clone();
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let (steps, _) = plan(&set, &Set::new(&set), &[old[0].clone(), Arc::new(failed), old[2].clone()], "r1", "r2", now());
    assert_eq!(steps, [Step::Recreate { name: "web-1".into(), failed: true }]);
}

#[test]
fn retention_policy_sets_claim_owners() {
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data-web-4"}})).unwrap();
    let owners = |policy: serde_json::Value, ordinal: i32| {
        let set = sts(json!({"persistentVolumeClaimRetentionPolicy": policy}));
        let refs = claim_owner_refs(&set, &Set::new(&set), &pod(&set, ordinal, "r", true), &claim).unwrap();
        refs.iter().map(|r| r.kind.clone()).collect::<Vec<_>>()
    };
    assert!(owners(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}), 1).is_empty());
    assert_eq!(owners(json!({"whenDeleted": "Delete", "whenScaled": "Retain"}), 1), ["StatefulSet"]);
    assert!(owners(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}), 1).is_empty());
    assert_eq!(owners(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}), 4), ["Pod"]);
    assert_eq!(owners(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}), 4), ["Pod"]);
    assert_eq!(owners(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}), 0), ["StatefulSet"]);
}
