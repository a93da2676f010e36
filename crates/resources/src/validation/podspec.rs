//! PodSpec: containers and volumes (delegated), policies, topology spread,
//! DNS, pod security context and the pod-template wrapper used by workloads.

use std::collections::HashSet;

use serde_json::Value;

use super::container::{validate_containers, validate_ephemeral_containers, validate_init_containers};
use super::errors::FieldError;
use super::meta::{validate_annotations, validate_label_selector, validate_labels};
use super::names::*;
use super::probes::validate_profiles;
use super::scheduling::{validate_affinity, validate_tolerations};
use super::util::*;
use super::volume::validate_volumes;

/// Whether the spec is a Pod's own (stricter) or an embedded template's.
#[derive(Clone, Copy)]
pub(crate) struct PodOpts {
    pub is_pod: bool,
}

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];

pub(crate) fn validate_pod_spec(errs: &mut Errs, spec: &Value, path: &str, opts: PodOpts) {
    let grace = int(spec, "terminationGracePeriodSeconds");
    if let Some(g) = grace {
        nonneg_value(errs, g, &child(path, "terminationGracePeriodSeconds"));
    }
    let host_users = at(spec, &["securityContext", "hostUsers"])
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let vols = validate_volumes(
        errs,
        arr(spec, "volumes"),
        &child(path, "volumes"),
        opts.is_pod,
    );
    let ctrs = arr(spec, "containers");
    validate_containers(
        errs,
        ctrs,
        &vols,
        grace,
        host_users,
        &child(path, "containers"),
    );
    validate_init_containers(
        errs,
        arr(spec, "initContainers"),
        ctrs,
        &vols,
        grace,
        host_users,
        &child(path, "initContainers"),
    );
    if opts.is_pod {
        validate_ephemeral_containers(errs, spec, &vols, host_users, &child(path, "ephemeralContainers"));
    }
    if boolean(spec, "hostNetwork") {
        for (i, c) in ctrs.iter().enumerate() {
            for (j, port) in arr(c, "ports").iter().enumerate() {
                let hp = int(port, "hostPort").unwrap_or(0);
                let cp = int(port, "containerPort").unwrap_or(0);
                if (opts.is_pod || hp != 0) && hp != cp {
                    let p = child(
                        &idx(&child(&idx(&child(path, "containers"), i), "ports"), j),
                        "hostPort",
                    );
                    errs.push(FieldError::invalid(
                        p,
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    if let Some(rp) = opt_s(spec, "restartPolicy") {
        if rp.is_empty() {
            errs.push(FieldError::required(child(path, "restartPolicy"), ""));
        } else if !RESTART_POLICIES.contains(&rp) {
            errs.push(FieldError::not_supported(
                child(path, "restartPolicy"),
                rp,
                RESTART_POLICIES,
            ));
        }
    }
    if let Some(dp) = opt_s(spec, "dnsPolicy") {
        if dp.is_empty() {
            errs.push(FieldError::required(child(path, "dnsPolicy"), ""));
        } else if !DNS_POLICIES.contains(&dp) {
            errs.push(FieldError::not_supported(
                child(path, "dnsPolicy"),
                dp,
                DNS_POLICIES,
            ));
        }
    }
    validate_labels(
        errs,
        get(spec, "nodeSelector"),
        &child(path, "nodeSelector"),
    );
    validate_pod_security_context(errs, spec, &child(path, "securityContext"));
    if let Some(aff) = get(spec, "affinity") {
        validate_affinity(errs, aff, &child(path, "affinity"));
    }
    validate_dns_config(errs, spec, &child(path, "dnsConfig"));
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        qualified_name(
            errs,
            &child(&idx(&child(path, "readinessGates"), i), "conditionType"),
            s(g, "conditionType"),
        );
    }
    let mut gates = HashSet::new();
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let p = idx(&child(path, "schedulingGates"), i);
        let name = s(g, "name");
        qualified_name(errs, &p, name);
        if !gates.insert(name) {
            errs.push(FieldError::duplicate(&p, name));
        }
    }
    validate_topology_spread(
        errs,
        arr(spec, "topologySpreadConstraints"),
        &child(path, "topologySpreadConstraints"),
    );
    for (field, f) in [
        ("serviceAccountName", name_is_dns_subdomain as NameFn),
        ("nodeName", name_is_dns_subdomain),
    ] {
        let v = s(spec, field);
        if !v.is_empty() {
            push_msgs(errs, &child(path, field), v, f(v, false));
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i32::MAX as i64).contains(&ads) {
            errs.push(FieldError::invalid(
                child(path, "activeDeadlineSeconds"),
                ads,
                inclusive_range_error(1, i32::MAX as i64),
            ));
        }
    }
    for field in ["hostname", "subdomain"] {
        let v = s(spec, field);
        if !v.is_empty() {
            dns_label(errs, &child(path, field), v);
        }
    }
    validate_tolerations(errs, arr(spec, "tolerations"), &child(path, "tolerations"));
    for (i, ha) in arr(spec, "hostAliases").iter().enumerate() {
        let p = idx(&child(path, "hostAliases"), i);
        is_valid_ip(errs, &child(&p, "ip"), s(ha, "ip"));
        for (j, h) in arr(ha, "hostnames").iter().enumerate() {
            dns_subdomain(
                errs,
                &idx(&child(&p, "hostnames"), j),
                h.as_str().unwrap_or(""),
            );
        }
    }
    let pc = s(spec, "priorityClassName");
    if !pc.is_empty() {
        push_msgs(
            errs,
            &child(path, "priorityClassName"),
            pc,
            name_is_dns_subdomain(pc, false),
        );
    }
    if let Some(rc) = opt_s(spec, "runtimeClassName") {
        push_msgs(
            errs,
            &child(path, "runtimeClassName"),
            rc,
            name_is_dns_subdomain(rc, false),
        );
    }
    if let Some(pp) = opt_s(spec, "preemptionPolicy") {
        preemption_policy(errs, pp, &child(path, "preemptionPolicy"));
    }
    if let Some(os) = get(spec, "os") {
        let name = s(os, "name");
        if name.is_empty() {
            errs.push(FieldError::required(
                child(&child(path, "os"), "name"),
                "cannot be empty",
            ));
        } else if name != "linux" && name != "windows" {
            errs.push(FieldError::not_supported(
                child(path, "os"),
                name,
                &["linux", "windows"],
            ));
        }
    }
}

pub(crate) fn preemption_policy(errs: &mut Errs, pp: &str, path: &str) {
    const PP: &[&str] = &["PreemptLowerPriority", "Never"];
    if pp.is_empty() {
        errs.push(FieldError::required(path, ""));
    } else if !PP.contains(&pp) {
        errs.push(FieldError::not_supported(path, pp, PP));
    }
}

fn validate_pod_security_context(errs: &mut Errs, spec: &Value, path: &str) {
    let Some(sc) = get(spec, "securityContext") else {
        return;
    };
    for f in ["fsGroup", "runAsUser", "runAsGroup"] {
        if let Some(n) = int(sc, f).filter(|n| !(0..=0xffff_ffff).contains(n)) {
            errs.push(FieldError::invalid(
                child(path, f),
                n,
                inclusive_range_error(0, 0xffff_ffff),
            ));
        }
    }
    for (i, g) in arr(sc, "supplementalGroups").iter().enumerate() {
        if let Some(n) = g.as_i64().filter(|n| !(0..=0xffff_ffff).contains(n)) {
            errs.push(FieldError::invalid(
                idx(&child(path, "supplementalGroups"), i),
                n,
                inclusive_range_error(0, 0xffff_ffff),
            ));
        }
    }
    if boolean(spec, "shareProcessNamespace") && boolean(spec, "hostPID") {
        errs.push(FieldError::invalid(
            child(path, "shareProcessNamespace"),
            true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let mut seen = HashSet::new();
    for (i, sysctl) in arr(sc, "sysctls").iter().enumerate() {
        let p = child(&idx(&child(path, "sysctls"), i), "name");
        let name = s(sysctl, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&p, ""));
        } else if !valid_sysctl_name(name) {
            errs.push(FieldError::invalid(
                &p,
                name,
                "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
            ));
        } else if !seen.insert(name) {
            errs.push(FieldError::duplicate(&p, name));
        }
    }
    let enums: [(&str, &[&str]); 3] = [
        ("fsGroupChangePolicy", &["Always", "OnRootMismatch"]),
        ("supplementalGroupsPolicy", &["Merge", "Strict"]),
        ("seLinuxChangePolicy", &["MountOption", "Recursive"]),
    ];
    for (f, allowed) in enums {
        if let Some(v) = opt_s(sc, f) {
            if !allowed.contains(&v) {
                errs.push(FieldError::not_supported(child(path, f), v, allowed));
            }
        }
    }
    validate_profiles(errs, sc, path);
}

fn valid_sysctl_name(name: &str) -> bool {
    name.len() <= 253
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_'
                })
        })
}

fn validate_dns_config(errs: &mut Errs, spec: &Value, path: &str) {
    let cfg = get(spec, "dnsConfig");
    if s(spec, "dnsPolicy") == "None" {
        match cfg {
            None => {
                errs.push(FieldError::required(
                    path,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
                return;
            }
            Some(c) if arr(c, "nameservers").is_empty() => {
                errs.push(FieldError::required(
                    child(path, "nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                ));
                return;
            }
            _ => {}
        }
    }
    let Some(cfg) = cfg else { return };
    let ns = arr(cfg, "nameservers");
    if ns.len() > 3 {
        errs.push(FieldError::invalid(
            child(path, "nameservers"),
            ns.to_vec(),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, n) in ns.iter().enumerate() {
        is_valid_ip(
            errs,
            &idx(&child(path, "nameservers"), i),
            n.as_str().unwrap_or(""),
        );
    }
    let searches: Vec<&str> = arr(cfg, "searches")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            child(path, "searches"),
            arr(cfg, "searches").to_vec(),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            child(path, "searches"),
            arr(cfg, "searches").to_vec(),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        dns_subdomain(errs, &idx(&child(path, "searches"), i), trimmed);
    }
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if s(o, "name").is_empty() {
            errs.push(FieldError::required(
                idx(&child(path, "options"), i),
                "must not be empty",
            ));
        }
    }
}

fn validate_topology_spread(errs: &mut Errs, cs: &[Value], path: &str) {
    for (i, c) in cs.iter().enumerate() {
        let p = idx(path, i);
        let skew = int(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(FieldError::invalid(
                child(&p, "maxSkew"),
                skew,
                "must be greater than zero",
            ));
        }
        let tk = s(c, "topologyKey");
        if tk.is_empty() {
            errs.push(FieldError::required(
                child(&p, "topologyKey"),
                "can not be empty",
            ));
        }
        let wu = s(c, "whenUnsatisfiable");
        if wu != "DoNotSchedule" && wu != "ScheduleAnyway" {
            errs.push(FieldError::not_supported(
                child(&p, "whenUnsatisfiable"),
                wu,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        if cs[i + 1..]
            .iter()
            .any(|o| s(o, "topologyKey") == tk && s(o, "whenUnsatisfiable") == wu)
        {
            errs.push(FieldError::duplicate(
                child(&p, "{topologyKey, whenUnsatisfiable}"),
                format!("{{{tk}, {wu}}}"),
            ));
        }
        if let Some(md) = int(c, "minDomains") {
            if md <= 0 {
                errs.push(FieldError::invalid(
                    child(&p, "minDomains"),
                    md,
                    "must be greater than zero",
                ));
            }
            if wu != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    child(&p, "minDomains"),
                    md,
                    format!("can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {wu}"),
                ));
            }
        }
        validate_label_selector(errs, get(c, "labelSelector"), &child(&p, "labelSelector"));
    }
}

/// A PodTemplateSpec: template labels/annotations and the pod spec.
pub(crate) fn validate_pod_template(errs: &mut Errs, tpl: Option<&Value>, path: &str) {
    let Some(tpl) = tpl else {
        errs.push(FieldError::required(path, ""));
        return;
    };
    let null = Value::Null;
    let meta = get(tpl, "metadata").unwrap_or(&null);
    validate_labels(errs, get(meta, "labels"), &child(path, "labels"));
    validate_annotations(errs, get(meta, "annotations"), &child(path, "annotations"));
    let spec = get(tpl, "spec").unwrap_or(&null);
    validate_pod_spec(errs, spec, &child(path, "spec"), PodOpts { is_pod: false });
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            child(&child(path, "spec"), "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}
