//! Controllers with pod templates: apps/v1, batch/v1 and the core
//! ReplicationController and PodTemplate. Templates get the v1 pod-spec
//! defaults only, never the pod admission ones.

use serde_json::{json, Value};

use super::pod::{claim_spec, pod_template};
use super::{
    default_str, default_value, each_obj, ensure_obj, existing_obj, is_unset, is_unset_str, non_empty, str_of,
    template_metadata, Obj,
};

pub(super) fn pod_template_object(o: &mut Obj) {
    if let Some(t) = ensure_obj(o, "template") {
        pod_template(t);
    }
}

/// The template's labels, when it has a labels map.
fn template_labels(spec: &Obj) -> Option<Value> {
    spec.get("template")?.get("metadata")?.get("labels").filter(|l| l.is_object()).cloned()
}

/// The object's labels default to `labels` when it has none of its own.
fn labels_default_to(o: &mut Obj, labels: Value) {
    if let Some(meta) = ensure_obj(o, "metadata") {
        if !non_empty(meta, "labels") {
            meta.insert("labels".into(), labels);
        }
    }
}

pub(super) fn replication_controller(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_value(spec, "replicas", 1.into());
    // The template is optional here; the selector follows its labels.
    if let Some(t) = existing_obj(spec, "template") {
        pod_template(t);
    }
    let labels = template_labels(spec);
    if let Some(labels) = labels {
        if !non_empty(spec, "selector") {
            spec.insert("selector".into(), labels.clone());
        }
        labels_default_to(o, labels);
    }
}

pub(super) fn replica_set(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_value(spec, "replicas", 1.into());
    pod_template_object(spec);
}

pub(super) fn deployment(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_value(spec, "replicas", 1.into());
    if let Some(strategy) = ensure_obj(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(rolling) = ensure_obj(strategy, "rollingUpdate") {
                default_value(rolling, "maxUnavailable", "25%".into());
                default_value(rolling, "maxSurge", "25%".into());
            }
        }
    }
    default_value(spec, "revisionHistoryLimit", 10.into());
    default_value(spec, "progressDeadlineSeconds", 600.into());
    pod_template_object(spec);
}

pub(super) fn stateful_set(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = ensure_obj(spec, "updateStrategy") {
        // Only a defaulted type brings a rollingUpdate block along.
        if is_unset_str(strategy.get("type")) {
            strategy.insert("type".into(), "RollingUpdate".into());
            default_value(strategy, "rollingUpdate", json!({}));
        }
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(rolling) = existing_obj(strategy, "rollingUpdate") {
                default_value(rolling, "partition", 0.into());
            }
        }
    }
    if let Some(policy) = ensure_obj(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    default_value(spec, "replicas", 1.into());
    default_value(spec, "revisionHistoryLimit", 10.into());
    pod_template_object(spec);
    each_obj(spec, "volumeClaimTemplates", |claim| {
        template_metadata(claim);
        if let Some(claim_spec_obj) = ensure_obj(claim, "spec") {
            claim_spec(claim_spec_obj);
        }
        if let Some(status) = ensure_obj(claim, "status") {
            default_str(status, "phase", "Pending");
        }
    });
}

pub(super) fn daemon_set(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    if let Some(strategy) = ensure_obj(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(rolling) = ensure_obj(strategy, "rollingUpdate") {
                default_value(rolling, "maxUnavailable", 1.into());
                default_value(rolling, "maxSurge", 0.into());
            }
        }
    }
    default_value(spec, "revisionHistoryLimit", 10.into());
    pod_template_object(spec);
}

pub(super) fn job(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    if is_unset(spec.get("completions")) && is_unset(spec.get("parallelism")) {
        spec.insert("completions".into(), 1.into());
    }
    default_value(spec, "parallelism", 1.into());
    let backoff = if is_unset(spec.get("backoffLimitPerIndex")) { 6 } else { i32::MAX as i64 };
    default_value(spec, "backoffLimit", backoff.into());
    default_value(spec, "completionMode", "NonIndexed".into());
    default_value(spec, "suspend", false.into());
    let has_failure_policy = !is_unset(spec.get("podFailurePolicy"));
    if let Some(policy) = existing_obj(spec, "podFailurePolicy") {
        each_obj(policy, "rules", |rule| each_obj(rule, "onPodConditions", |c| default_str(c, "status", "True")));
    }
    let replacement = if has_failure_policy { "Failed" } else { "TerminatingOrFailed" };
    default_value(spec, "podReplacementPolicy", replacement.into());
    pod_template_object(spec);
    // Upstream answers a generated selector with `manualSelector: false`.
    default_value(spec, "manualSelector", false.into());
    if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) {
        generate_job_selector(o);
    }
    // Upstream's defaulter shares the template's label map with the Job, so
    // the generated labels show on the Job too.
    if let Some(labels) = o.get("spec").and_then(|s| s.as_object()).and_then(template_labels) {
        labels_default_to(o, labels);
    }
}

/// The Job strategy's generated selector: the pods carry the Job's uid and
/// name, and the selector picks the uid.
fn generate_job_selector(o: &mut Obj) {
    let meta = o.get("metadata");
    let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or("").to_string();
    let (name, uid) = (text("name"), text("uid"));
    let Some(spec) = existing_obj(o, "spec") else { return };
    let labels =
        ensure_obj(spec, "template").and_then(|t| ensure_obj(t, "metadata")).and_then(|m| ensure_obj(m, "labels"));
    if let Some(labels) = labels {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(key).or_insert_with(|| value.clone().into());
        }
    }
    if let Some(match_labels) = ensure_obj(spec, "selector").and_then(|s| ensure_obj(s, "matchLabels")) {
        match_labels.entry("batch.kubernetes.io/controller-uid").or_insert_with(|| uid.into());
    }
}

pub(super) fn cron_job(o: &mut Obj) {
    let Some(spec) = ensure_obj(o, "spec") else { return };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_value(spec, "suspend", false.into());
    default_value(spec, "successfulJobsHistoryLimit", 3.into());
    default_value(spec, "failedJobsHistoryLimit", 1.into());
    // The job template gets no Job defaults, only its pod template's.
    if let Some(job_template) = ensure_obj(spec, "jobTemplate") {
        template_metadata(job_template);
        if let Some(job_spec) = ensure_obj(job_template, "spec") {
            pod_template_object(job_spec);
        }
    }
}
