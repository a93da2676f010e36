//! ObjectMeta (create and update), labels, annotations, finalizers, owner
//! references, and metav1.LabelSelector validation and matching.

use serde_json::Value;

use super::errors::{go_quote, FieldError};
use super::names::{is_label_value, is_qualified_name, push_msgs, NameFn};
use super::util::*;

pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Labels: keys are qualified names, values label values; errors are
/// reported at the map's path (not per key), as upstream does.
pub(crate) fn validate_labels(errs: &mut Errs, labels: Option<&Value>, path: &str) {
    for (k, v) in str_map(labels) {
        push_msgs(errs, path, k, is_qualified_name(k));
        push_msgs(errs, path, v, is_label_value(v));
    }
}

/// One label key / label-like name.
pub(crate) fn validate_label_name(errs: &mut Errs, name: &str, path: &str) {
    push_msgs(errs, path, name, is_qualified_name(name));
}

pub(crate) fn validate_annotations(errs: &mut Errs, annotations: Option<&Value>, path: &str) {
    let entries = str_map(annotations);
    let mut total = 0usize;
    for (k, v) in &entries {
        push_msgs(errs, path, k, is_qualified_name(&k.to_lowercase()));
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn validate_finalizers(errs: &mut Errs, finalizers: &[Value], path: &str) {
    let names: Vec<&str> = finalizers.iter().filter_map(Value::as_str).collect();
    for f in &names {
        push_msgs(errs, path, f, is_qualified_name(f));
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            finalizers.to_vec(),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    for (i, f) in names.iter().enumerate() {
        kube_finalizer_name(errs, f, &idx(path, i));
    }
}

/// Core's extra rule: an unqualified finalizer must be a standard one.
pub(crate) fn kube_finalizer_name(errs: &mut Errs, f: &str, path: &str) {
    if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
        errs.push(FieldError::invalid(
            path,
            f,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
}

fn validate_owner_references(errs: &mut Errs, refs: &[Value], path: &str) {
    let mut first_controller = String::new();
    for r in refs {
        let api_version = s(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                child(path, "apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        for f in ["kind", "name", "uid"] {
            if s(r, f).is_empty() {
                errs.push(FieldError::invalid(child(path, f), "", "must not be empty"));
            }
        }
        if api_version == "v1" && s(r, "kind") == "Event" {
            errs.push(FieldError::invalid_repr(
                path,
                super::errors::render_value(r),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if boolean(r, "controller") {
            let cur = format!("{}/{}", s(r, "kind"), s(r, "name"));
            if !first_controller.is_empty() {
                errs.push(FieldError::invalid(
                    path,
                    super::errors::go_repr(format!("[]v1.OwnerReference{{...}} ({} items)", refs.len())),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first_controller} and {cur}"
                    ),
                ));
            } else {
                first_controller = cur;
            }
        }
    }
}

/// ObjectMeta on create. `namespaced`: Some(true) requires a namespace,
/// Some(false) forbids one, None (unknown kind) checks neither.
pub(crate) fn validate_object_meta(
    errs: &mut Errs,
    obj: &Value,
    namespaced: Option<bool>,
    name_fn: NameFn,
) {
    let null = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&null);
    let path = "metadata";
    let name = s(meta, "name");
    let generate = s(meta, "generateName");
    if !generate.is_empty() {
        push_msgs(
            errs,
            &child(path, "generateName"),
            generate,
            name_fn(generate, true),
        );
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError::required(
                child(path, "name"),
                "name or generateName is required",
            ));
        }
    } else {
        push_msgs(errs, &child(path, "name"), name, name_fn(name, false));
    }
    validate_meta_common(errs, meta, namespaced, path);
}

/// The parts shared by create and update.
fn validate_meta_common(errs: &mut Errs, meta: &Value, namespaced: Option<bool>, path: &str) {
    let ns = s(meta, "namespace");
    match namespaced {
        Some(true) => {
            if ns.is_empty() {
                errs.push(FieldError::required(child(path, "namespace"), ""));
            } else {
                push_msgs(
                    errs,
                    &child(path, "namespace"),
                    ns,
                    super::names::name_is_dns_label(ns, false),
                );
            }
        }
        Some(false) if !ns.is_empty() => {
            errs.push(FieldError::forbidden(
                child(path, "namespace"),
                "not allowed on this type",
            ));
        }
        _ => {}
    }
    nonneg(errs, meta, "generation", path);
    validate_labels(errs, get(meta, "labels"), &child(path, "labels"));
    validate_annotations(errs, get(meta, "annotations"), &child(path, "annotations"));
    validate_owner_references(
        errs,
        arr(meta, "ownerReferences"),
        &child(path, "ownerReferences"),
    );
    validate_finalizers(errs, arr(meta, "finalizers"), &child(path, "finalizers"));
}

/// ObjectMeta on update: identity fields are immutable (resourceVersion is
/// checked by the caller).
pub(crate) fn validate_object_meta_update(errs: &mut Errs, new: &Value, old: &Value) {
    let null = Value::Null;
    let nm = new.get("metadata").unwrap_or(&null);
    let om = old.get("metadata").unwrap_or(&null);
    let path = "metadata";
    if get(om, "deletionTimestamp").is_some() {
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(nm, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                child(path, "finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
    for f in ["name", "namespace", "uid", "creationTimestamp"] {
        let nv = s(nm, f);
        let ov = s(om, f);
        // An omitted uid / creationTimestamp is carried over from the old object.
        if (f == "uid" || f == "creationTimestamp") && nv.is_empty() {
            continue;
        }
        if nv != ov {
            errs.push(FieldError::invalid(child(path, f), nv, FIELD_IMMUTABLE));
        }
    }
    validate_labels(errs, get(nm, "labels"), &child(path, "labels"));
    validate_annotations(errs, get(nm, "annotations"), &child(path, "annotations"));
    validate_owner_references(
        errs,
        arr(nm, "ownerReferences"),
        &child(path, "ownerReferences"),
    );
    validate_finalizers(errs, arr(nm, "finalizers"), &child(path, "finalizers"));
}

/// Labels and annotations of an embedded template's metadata.
pub(crate) fn validate_template_meta(errs: &mut Errs, meta: Option<&Value>, path: &str) {
    let null = Value::Null;
    let meta = meta.unwrap_or(&null);
    validate_labels(errs, get(meta, "labels"), &child(path, "labels"));
    validate_annotations(errs, get(meta, "annotations"), &child(path, "annotations"));
}

/// metav1.LabelSelector validation (label values checked strictly).
pub(crate) fn validate_label_selector(errs: &mut Errs, sel: Option<&Value>, path: &str) {
    let Some(sel) = sel else { return };
    validate_labels(errs, get(sel, "matchLabels"), &child(path, "matchLabels"));
    for (i, expr) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = idx(&child(path, "matchExpressions"), i);
        let values = arr(expr, "values");
        match s(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                child(&p, "operator"),
                op,
                "not a valid selector operator",
            )),
        }
        validate_label_name(errs, s(expr, "key"), &child(&p, "key"));
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            push_msgs(errs, &idx(&child(&p, "values"), j), v, is_label_value(v));
        }
    }
}

/// Whether a label selector selects nothing-in-particular (no terms).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    omap(sel, "matchLabels")
        .map(|m| m.is_empty())
        .unwrap_or(true)
        && arr(sel, "matchExpressions").is_empty()
}

/// Whether a label selector matches a label set; None when the selector
/// cannot be converted (bad operator, keys or values), like upstream's
/// `LabelSelectorAsSelector` failing.
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> Option<bool> {
    let selector = crate::selectors::LabelSelector::from_label_selector(sel).ok()?;
    let empty = serde_json::Map::new();
    Some(selector.matches(labels.and_then(Value::as_object).unwrap_or(&empty)))
}

/// Go's `%#v` of a `v1.LabelSelector` (how upstream prints a changed selector).
pub(crate) fn label_selector_repr(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "null".to_string();
    };
    let exprs = match get(sel, "matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(s(e, "key")),
                        go_quote(s(e, "operator")),
                        go_string_slice(get(e, "values"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        go_map_or_nil(get(sel, "matchLabels")),
        exprs
    )
}

/// A selector immutable on update (apps/v1 workloads, Jobs).
pub(crate) fn selector_immutable(
    errs: &mut Errs,
    new: Option<&Value>,
    old: Option<&Value>,
    path: &str,
) {
    immutable_repr(errs, new, old, path, label_selector_repr(new));
}
