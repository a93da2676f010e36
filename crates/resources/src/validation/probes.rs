//! Probes, lifecycle handlers and container security contexts.

use serde_json::Value;

use super::container::{local_descending_path, port_num_or_name};
use super::errors::FieldError;
use super::names::*;
use super::util::*;

/// A probe or lifecycle handler: exactly one action.
fn validate_handler(errs: &mut Errs, h: &Value, kinds: &[&str], grace: Option<i64>, path: &str) {
    let mut n = 0;
    for k in kinds {
        let Some(a) = get(h, k) else { continue };
        let p = child(path, k);
        if n > 0 {
            errs.push(FieldError::forbidden(
                p,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        n += 1;
        match *k {
            "exec" if arr(a, "command").is_empty() => {
                errs.push(FieldError::required(child(&p, "command"), ""));
            }
            "httpGet" => {
                if a.get("path").is_some() && s(a, "path").is_empty() {
                    errs.push(FieldError::required(child(&p, "path"), ""));
                }
                port_num_or_name(errs, get(a, "port"), &child(&p, "port"));
                if let Some(scheme) = opt_s(a, "scheme") {
                    if scheme != "HTTP" && scheme != "HTTPS" {
                        errs.push(FieldError::not_supported(
                            child(&p, "scheme"),
                            scheme,
                            &["HTTP", "HTTPS"],
                        ));
                    }
                }
                for hdr in arr(a, "httpHeaders") {
                    let hn = s(hdr, "name");
                    push_msgs(errs, &child(&p, "httpHeaders"), hn, is_http_header_name(hn));
                }
            }
            "tcpSocket" => port_num_or_name(errs, get(a, "port"), &child(&p, "port")),
            "grpc" => {
                let port = int(a, "port").unwrap_or(0);
                for m in is_valid_port_num(port) {
                    errs.push(FieldError::invalid(child(&p, "port"), port, m));
                }
            }
            "sleep" => {
                let secs = int(a, "seconds").unwrap_or(0);
                if let Some(g) = grace {
                    if secs <= 0 || secs > g {
                        errs.push(FieldError::invalid(
                            &p,
                            secs,
                            format!("must be greater than 0 and less than terminationGracePeriodSeconds ({g}). Enable AllowPodLifecycleSleepActionZeroValue feature gate for zero sleep."),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if n == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

const PROBE_HANDLERS: &[&str] = &["exec", "httpGet", "tcpSocket", "grpc"];
const LIFECYCLE_HANDLERS: &[&str] = &["exec", "httpGet", "tcpSocket", "sleep"];

pub(crate) fn validate_probe(
    errs: &mut Errs,
    ctr: &Value,
    which: &str,
    grace: Option<i64>,
    path: &str,
) {
    let Some(probe) = get(ctr, which) else { return };
    let p = child(path, which);
    validate_handler(errs, probe, PROBE_HANDLERS, grace, &p);
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonneg(errs, probe, f, &p);
    }
    if let Some(t) = int(probe, "terminationGracePeriodSeconds") {
        if which == "readinessProbe" {
            errs.push(FieldError::invalid(
                child(&p, "terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            ));
        } else if t <= 0 {
            errs.push(FieldError::invalid(
                child(&p, "terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            ));
        }
    }
    if which != "readinessProbe" {
        if let Some(st) = int(probe, "successThreshold").filter(|st| *st != 1) {
            errs.push(FieldError::invalid(
                child(&p, "successThreshold"),
                st,
                "must be 1",
            ));
        }
    }
}

pub(crate) fn validate_lifecycle(errs: &mut Errs, ctr: &Value, grace: Option<i64>, path: &str) {
    let Some(lc) = get(ctr, "lifecycle") else {
        return;
    };
    let p = child(path, "lifecycle");
    for hook in ["postStart", "preStop"] {
        if let Some(h) = get(lc, hook) {
            validate_handler(errs, h, LIFECYCLE_HANDLERS, grace, &child(&p, hook));
        }
    }
}

fn validate_uid(errs: &mut Errs, v: &Value, k: &str, path: &str) {
    if let Some(n) = int(v, k) {
        if !(0..=0xffff_ffff).contains(&n) {
            errs.push(FieldError::invalid(
                child(path, k),
                n,
                inclusive_range_error(0, 0xffff_ffff),
            ));
        }
    }
}

/// Seccomp / AppArmor profile fields shared by pod and container contexts.
pub(crate) fn validate_profiles(errs: &mut Errs, sc: &Value, path: &str) {
    if let Some(sp) = get(sc, "seccompProfile") {
        let p = child(path, "seccompProfile");
        let t = s(sp, "type");
        const TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];
        if t.is_empty() {
            errs.push(FieldError::required(
                child(&p, "type"),
                "type is required when seccompProfile is set",
            ));
        } else if !TYPES.contains(&t) {
            errs.push(FieldError::not_supported(child(&p, "type"), t, TYPES));
        }
        if t == "Localhost" {
            match opt_s(sp, "localhostProfile") {
                None => errs.push(FieldError::required(
                    child(&p, "localhostProfile"),
                    "must be set when seccomp type is Localhost",
                )),
                Some(lp) => local_descending_path(errs, lp, &child(&p, "localhostProfile")),
            }
        }
    }
    if let Some(ap) = get(sc, "appArmorProfile") {
        let p = child(path, "appArmorProfile");
        let t = s(ap, "type");
        const TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];
        if t.is_empty() {
            errs.push(FieldError::required(
                child(&p, "type"),
                "type is required when appArmorProfile is set",
            ));
        } else if !TYPES.contains(&t) {
            errs.push(FieldError::not_supported(child(&p, "type"), t, TYPES));
        } else if t == "Localhost" && s(ap, "localhostProfile").trim().is_empty() {
            errs.push(FieldError::required(
                child(&p, "localhostProfile"),
                "must be set when AppArmor type is Localhost",
            ));
        }
    }
}

pub(crate) fn validate_security_context(
    errs: &mut Errs,
    ctr: &Value,
    host_users: bool,
    path: &str,
) {
    let Some(sc) = get(ctr, "securityContext") else {
        return;
    };
    let p = child(path, "securityContext");
    validate_uid(errs, sc, "runAsUser", &p);
    validate_uid(errs, sc, "runAsGroup", &p);
    if let Some(pm) = opt_s(sc, "procMount") {
        if pm != "Default" && pm != "Unmasked" {
            errs.push(FieldError::not_supported(
                child(&p, "procMount"),
                pm,
                &["Default", "Unmasked"],
            ));
        }
        if host_users && pm == "Unmasked" {
            errs.push(FieldError::invalid(
                child(&p, "procMount"),
                pm,
                "`hostUsers` must be false to use `Unmasked`",
            ));
        }
    }
    validate_profiles(errs, sc, &p);
    if get(sc, "allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false) {
        if boolean(sc, "privileged") {
            errs.push(FieldError::invalid(
                &p,
                sc.clone(),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        if at(sc, &["capabilities", "add"])
            .and_then(Value::as_array)
            .map(|a| a.iter().any(|c| c.as_str() == Some("CAP_SYS_ADMIN")))
            .unwrap_or(false)
        {
            errs.push(FieldError::invalid(
                &p,
                sc.clone(),
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
}
