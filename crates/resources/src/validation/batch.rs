//! Jobs and CronJobs.

use serde_json::Value;

use super::cron::{known_time_zone, parse_standard};
use super::errors::FieldError;
use super::meta::*;
use super::names::*;
use super::podspec::validate_pod_template;
use super::util::*;
use super::workloads::meta_for;

/// A Job spec's own checks (shared by Jobs and CronJob job templates).
fn job_spec(errs: &mut Errs, spec: &Value, path: &str) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
    ] {
        nonneg(errs, spec, f, path);
    }
    if let Some(mode) = opt_s(spec, "completionMode") {
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(FieldError::not_supported(
                child(path, "completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            ));
        } else if mode == "Indexed" && get(spec, "completions").is_none() {
            errs.push(FieldError::required(
                child(path, "completions"),
                "when completion mode is Indexed",
            ));
        }
    }
    let tpath = child(path, "template");
    validate_pod_template(errs, get(spec, "template"), &tpath);
    // An unset restart policy is defaulted to Always, which Jobs reject.
    let rp = at(spec, &["template", "spec", "restartPolicy"])
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let rp_path = child(&child(&tpath, "spec"), "restartPolicy");
    if rp != "OnFailure" && rp != "Never" {
        errs.push(FieldError::not_supported(
            &rp_path,
            rp,
            &["OnFailure", "Never"],
        ));
    } else if get(spec, "podFailurePolicy").is_some() && rp != "Never" {
        errs.push(FieldError::invalid(
            &rp_path,
            rp,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

fn template_repr(t: Option<&Value>) -> String {
    format!(
        "core.PodTemplateSpec{}",
        t.map(|v| v.to_string()).unwrap_or_else(|| "{}".into())
    )
}

pub(crate) fn validate_job(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    job_spec(errs, spec, "spec");
    match get(spec, "selector") {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            validate_label_selector(errs, Some(sel), "spec.selector");
            if selector_matches(sel, at(spec, &["template", "metadata", "labels"])) == Some(false) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    map_value(at(spec, &["template", "metadata", "labels"])),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    let Some(old) = old else { return };
    let os = get(old, "spec").unwrap_or(&null);
    // Completions may change only for an Indexed job kept at parallelism.
    let elastic = s(spec, "completionMode") == "Indexed"
        && s(os, "completionMode") == "Indexed"
        && int(spec, "completions") == int(spec, "parallelism");
    if !elastic {
        immutable(
            errs,
            get(spec, "completions"),
            get(os, "completions"),
            "spec.completions",
        );
    }
    selector_immutable(
        errs,
        get(spec, "selector"),
        get(os, "selector"),
        "spec.selector",
    );
    // A suspended job that never started may change its scheduling directives.
    let mutable_scheduling = boolean(spec, "suspend")
        && boolean(os, "suspend")
        && at(old, &["status", "startTime"]).is_none();
    let new_t = get(spec, "template");
    let mut old_t = get(os, "template").cloned();
    if mutable_scheduling {
        if let (Some(nt), Some(Value::Object(ot))) = (new_t, old_t.as_mut()) {
            if let Some(meta) = get(nt, "metadata") {
                let om = ot
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(om) = om.as_object_mut() {
                    for f in ["labels", "annotations"] {
                        match meta.get(f) {
                            Some(v) => om.insert(f.into(), v.clone()),
                            None => om.remove(f),
                        };
                    }
                }
            }
            let ospec = ot
                .entry("spec")
                .or_insert_with(|| Value::Object(Default::default()));
            if let (Some(ospec), Some(nspec)) = (ospec.as_object_mut(), get(nt, "spec")) {
                for f in ["nodeSelector", "tolerations", "schedulingGates"] {
                    match nspec.get(f) {
                        Some(v) => ospec.insert(f.into(), v.clone()),
                        None => ospec.remove(f),
                    };
                }
                let new_node_aff = at(nspec, &["affinity", "nodeAffinity"]).cloned();
                let mut aff = ospec
                    .get("affinity")
                    .cloned()
                    .unwrap_or(Value::Object(Default::default()));
                if let Some(a) = aff.as_object_mut() {
                    match new_node_aff {
                        Some(na) => a.insert("nodeAffinity".into(), na),
                        None => a.remove("nodeAffinity"),
                    };
                }
                if aff.as_object().map(|a| a.is_empty()).unwrap_or(true)
                    && get(nspec, "affinity").is_none()
                {
                    ospec.remove("affinity");
                } else {
                    ospec.insert("affinity".into(), aff);
                }
            }
        }
    }
    immutable_repr(
        errs,
        new_t,
        old_t.as_ref(),
        "spec.template",
        template_repr(new_t),
    );
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        immutable(errs, get(spec, f), get(os, f), &child("spec", f));
    }
}

pub(crate) fn validate_cron_job(errs: &mut Errs, obj: &Value, old: Option<&Value>) {
    meta_for(errs, obj, old, true, name_is_dns_subdomain);
    if old.is_none() {
        let name = at(obj, &["metadata", "name"])
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.len() > 52 {
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
    }
    let null = Value::Null;
    let spec = get(obj, "spec").unwrap_or(&null);
    let schedule = s(spec, "schedule");
    let time_zone = opt_s(spec, "timeZone");
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_standard(schedule) {
            errs.push(FieldError::invalid("spec.schedule", schedule, e));
        }
        let old_had_tz = old
            .and_then(|o| at(o, &["spec", "schedule"]))
            .and_then(Value::as_str)
            .map(|s| s.contains("TZ"))
            .unwrap_or(false);
        if schedule.contains("TZ") {
            if old_had_tz && time_zone.is_some() {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            } else if !old_had_tz {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            }
        }
    }
    if let Some(tz) = time_zone {
        let p = "spec.timeZone";
        let valid_part = |part: &str| {
            part != "."
                && part != ".."
                && !part.starts_with('-')
                && (1..=14).contains(&part.len())
                && part
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
        };
        if tz.is_empty() {
            errs.push(FieldError::invalid(
                p,
                tz,
                "timeZone must be nil or non-empty string",
            ));
        } else if !tz.split('/').all(valid_part) {
            errs.push(FieldError::invalid(
                p,
                tz,
                format!("unknown time zone {tz}"),
            ));
        } else if tz.eq_ignore_ascii_case("local") {
            errs.push(FieldError::invalid(
                p,
                tz,
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ));
        } else if !known_time_zone(tz) {
            errs.push(FieldError::invalid(
                p,
                tz,
                format!("unknown time zone {tz}"),
            ));
        }
    }
    nonneg(errs, spec, "startingDeadlineSeconds", "spec");
    if let Some(cp) = opt_s(spec, "concurrencyPolicy") {
        const CP: &[&str] = &["Allow", "Forbid", "Replace"];
        if cp.is_empty() {
            errs.push(FieldError::required("spec.concurrencyPolicy", ""));
        } else if !CP.contains(&cp) {
            errs.push(FieldError::not_supported("spec.concurrencyPolicy", cp, CP));
        }
    }
    let jt = get(spec, "jobTemplate").unwrap_or(&null);
    let jspec = get(jt, "spec").unwrap_or(&null);
    validate_template_meta(errs, get(jt, "metadata"), "spec.jobTemplate.metadata");
    job_spec(errs, jspec, "spec.jobTemplate.spec");
    if let Some(sel) = get(jspec, "selector") {
        errs.push(FieldError::invalid_repr(
            "spec.jobTemplate.spec.selector",
            label_selector_repr(Some(sel)),
            "`selector` will be auto-generated",
        ));
    }
    if boolean(jspec, "manualSelector") {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            true,
            &["nil", "false"],
        ));
    }
    nonneg(errs, spec, "successfulJobsHistoryLimit", "spec");
    nonneg(errs, spec, "failedJobsHistoryLimit", "spec");
}

/// Job status counters.
pub(crate) fn validate_job_status(errs: &mut Errs, obj: &Value) {
    let null = Value::Null;
    let st = get(obj, "status").unwrap_or(&null);
    for f in ["active", "succeeded", "failed", "ready", "terminating"] {
        nonneg(errs, st, f, "status");
    }
}
