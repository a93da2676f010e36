//! Matching of label selectors, node selector terms and tolerations on the
//! k8s-openapi types the scheduler works with.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// A metav1.LabelSelector: `None` matches nothing, an empty one everything.
pub fn selector_matches(sel: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(sel) = sel else { return false };
    if let Some(ml) = &sel.match_labels {
        if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    })
}

/// One node selector term: all its expressions and fields must match; a
/// term without any requirement matches nothing (upstream).
pub fn node_term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let req = |key: &str, op: &str, values: &[String], got: Option<&String>| -> bool {
        let _ = key;
        match op {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            "Gt" | "Lt" => {
                let (Some(g), Some(want)) = (got.and_then(|g| g.parse::<i64>().ok()), values.first().and_then(|v| v.parse::<i64>().ok())) else {
                    return false;
                };
                if op == "Gt" {
                    g > want
                } else {
                    g < want
                }
            }
            _ => false,
        }
    };
    exprs.iter().all(|e| req(&e.key, &e.operator, e.values.as_deref().unwrap_or(&[]), labels.get(&e.key)))
        && fields.iter().all(|f| {
            let name = node_name.to_string();
            let got = (f.key == "metadata.name").then_some(&name);
            req(&f.key, &f.operator, f.values.as_deref().unwrap_or(&[]), got)
        })
}

/// Does `t` tolerate `taint` (upstream ToleratesTaint)?
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}
