//! The operations on values that server-side apply needs, after upstream's
//! structured-merge-diff: the field set of a value, merging an applied
//! configuration into an object, comparing two objects, and removing the
//! values at a set of paths.

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value};

use super::fieldpath::{path_string, Path, Pe, Set};
use super::schema::{key_default, ListKind, Shape, Ty};

/// The path element of a list item: its key fields for a list-map, its
/// value for a set, else its index.
pub fn item_pe(kind: &ListKind, index: usize, item: &Value) -> Result<Pe, String> {
    match kind {
        ListKind::Map(keys) if !keys.is_empty() => {
            let Value::Object(m) = item else {
                return Err(format!("expected map, got {}", kind_name(item)));
            };
            let mut fields = Vec::new();
            for k in keys {
                match m.get(k).cloned().or_else(|| key_default(k)) {
                    Some(v) => fields.push((k.clone(), v)),
                    None => {
                        return Err(format!(
                            "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                        ))
                    }
                }
            }
            Ok(Pe::key(fields))
        }
        ListKind::Set => match item {
            Value::Object(_) | Value::Array(_) => {
                Err("associative list without keys has an element that's a map type".to_string())
            }
            v => Ok(Pe::value(v)),
        },
        _ => Ok(Pe::Index(index)),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// The items of a list with their path elements, repeated ones dropped.
/// Items whose element cannot be worked out are identified by index (live
/// objects are taken as they are; applied ones are checked by `field_set`).
fn index_items<'a>(kind: &ListKind, list: &'a [Value]) -> Vec<(Pe, &'a Value)> {
    let mut out: Vec<(Pe, &Value)> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let pe = item_pe(kind, i, item).unwrap_or(Pe::Index(i));
        if !out.iter().any(|(p, _)| *p == pe) {
            out.push((pe, item));
        }
    }
    out
}

/// The field set of an applied configuration: its leaves, the entries of
/// its maps and the items of its lists. Errors (upstream's messages) for
/// list items without their keys and repeated keys.
pub fn field_set(v: &Value, ty: Ty) -> Result<Set, String> {
    let mut out = Set::new();
    collect(v, ty, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn collect(v: &Value, ty: Ty, path: &mut Path, out: &mut Set) -> Result<(), String> {
    match (ty.shape(v), v) {
        (Shape::Map { atomic: false }, Value::Object(m)) => {
            for (k, child) in m {
                path.push(Pe::Field(k.clone()));
                collect(child, ty.field(k), path, out)?;
                if !ty.declares(k) {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (Shape::List(kind), Value::Array(a)) if kind != ListKind::Atomic => {
            for (i, item) in a.iter().enumerate() {
                let pe = item_pe(&kind, i, item).map_err(|e| format!("{}: element {i}: {e}", path_string(path)))?;
                path.push(pe);
                if out.has(path) {
                    let pe = path.pop().unwrap();
                    return Err(format!("{}: duplicate entries for key {}", path_string(path), path_string(&[pe])));
                }
                collect(item, ty.items(), path, out)?;
                out.insert(path);
                path.pop();
            }
        }
        // A map or list the schema expects, given as null: nothing to own.
        (Shape::Map { atomic: false }, Value::Null) => {}
        (Shape::List(kind), Value::Null) if kind != ListKind::Atomic => {}
        _ => out.insert(path),
    }
    Ok(())
}

/// Merges an applied configuration into an object: maps merge, list-maps
/// and sets merge by item, anything else is replaced by the configuration's
/// value. Fields merged to null are dropped (as they are when upstream
/// decodes the result).
pub fn merge(live: &Value, config: &Value, ty: Ty) -> Value {
    match (ty.shape(config), live, config) {
        (Shape::Map { atomic: false }, Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, ty.field(k)),
                    None => cv.clone(),
                };
                // An applied null leaves the field unset (and owned).
                if merged.is_null() {
                    out.remove(k);
                } else {
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Shape::List(kind), Value::Array(l), Value::Array(c)) if kind != ListKind::Atomic => {
            Value::Array(merge_list(&kind, l, c, ty.items()))
        }
        _ => config.clone(),
    }
}

/// Upstream's merge of two keyed lists: the items in the live order, with
/// the configuration's new items placed where the configuration has them
/// relative to the shared ones.
fn merge_list(kind: &ListKind, live: &[Value], config: &[Value], item: Ty) -> Vec<Value> {
    let lhs = index_items(kind, live);
    let rhs = index_items(kind, config);
    let in_lhs: HashMap<&Pe, &Value> = lhs.iter().map(|(p, v)| (p, *v)).collect();
    let in_rhs: HashMap<&Pe, &Value> = rhs.iter().map(|(p, v)| (p, *v)).collect();
    let mut shared: VecDeque<&Pe> = rhs.iter().map(|(p, _)| p).filter(|p| in_lhs.contains_key(p)).collect();
    let mut next_shared = shared.pop_front();
    let merged = |pe: &Pe, r: &Value| match in_lhs.get(pe) {
        Some(l) => merge(l, r, item),
        None => r.clone(),
    };
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    let mut guard = 2 * (lhs.len() + rhs.len()) + 2;
    while (li < lhs.len() || ri < rhs.len()) && guard > 0 {
        guard -= 1;
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs[li].0;
            if *pe == rhs[ri].0 {
                out.push(merged(pe, rhs[ri].1));
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if in_rhs.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() && !in_rhs.contains_key(&lhs[li].0) {
            out.push(lhs[li].1.clone());
            li += 1;
            continue;
        }
        if ri < rhs.len() {
            let pe = &rhs[ri].0;
            out.push(merged(pe, rhs[ri].1));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.pop_front();
            }
        } else {
            li += 1;
        }
    }
    out
}

/// What changed between two objects: paths added, modified and removed.
/// Leaves (scalars, atomic values, and maps or lists empty on both sides)
/// are compared by value; a map or list item present on one side only is
/// itself added or removed, along with what it holds.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

pub fn compare(old: &Value, new: &Value, ty: Ty) -> Comparison {
    let mut c = Comparison::default();
    compare_at(Some(old), Some(new), ty, &mut Vec::new(), &mut c);
    c
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn compare_at(old: Option<&Value>, new: Option<&Value>, ty: Ty, path: &mut Path, c: &mut Comparison) {
    if let (Some(a), Some(b)) = (old, new) {
        if a == b {
            return;
        }
    }
    let Some(sample) = new.or(old) else { return };
    let shape = match sample {
        Value::Null => ty.shape(old.unwrap_or(sample)),
        _ => ty.shape(sample),
    };
    let granular = match shape {
        Shape::Map { atomic } => !atomic,
        Shape::List(ref kind) => *kind != ListKind::Atomic,
        Shape::Scalar => false,
    };
    let containers_agree = match (&shape, old, new) {
        (_, None, _) | (_, _, None) => true,
        (Shape::Map { .. }, Some(a), Some(b)) => matches!(a, Value::Object(_) | Value::Null) && matches!(b, Value::Object(_) | Value::Null),
        (Shape::List(_), Some(a), Some(b)) => matches!(a, Value::Array(_) | Value::Null) && matches!(b, Value::Array(_) | Value::Null),
        _ => false,
    };
    if !granular || !containers_agree || (is_empty(old) && is_empty(new)) {
        match (old, new) {
            (None, _) => c.added.insert(path),
            (_, None) => c.removed.insert(path),
            _ => c.modified.insert(path),
        }
        return;
    }
    let empty_map = Map::new();
    match shape {
        Shape::Map { .. } => {
            let l = old.and_then(Value::as_object).unwrap_or(&empty_map);
            let r = new.and_then(Value::as_object).unwrap_or(&empty_map);
            let keys: Vec<&String> = l.keys().chain(r.keys().filter(|k| !l.contains_key(*k))).collect();
            for k in keys {
                path.push(Pe::Field(k.clone()));
                compare_at(l.get(k), r.get(k), ty.field(k), path, c);
                path.pop();
            }
        }
        Shape::List(kind) => {
            let none: Vec<Value> = Vec::new();
            let l = index_items(&kind, old.and_then(Value::as_array).unwrap_or(&none));
            let r = index_items(&kind, new.and_then(Value::as_array).unwrap_or(&none));
            let lm: HashMap<&Pe, &Value> = l.iter().map(|(p, v)| (p, *v)).collect();
            let rm: HashMap<&Pe, &Value> = r.iter().map(|(p, v)| (p, *v)).collect();
            let mut pes: Vec<&Pe> = l.iter().map(|(p, _)| p).collect();
            pes.extend(r.iter().map(|(p, _)| p).filter(|p| !lm.contains_key(p)));
            for pe in pes {
                path.push(pe.clone());
                compare_at(lm.get(pe).copied(), rm.get(pe).copied(), ty.items(), path, c);
                path.pop();
            }
        }
        Shape::Scalar => {}
    }
    match (old, new) {
        (None, _) => c.added.insert(path),
        (_, None) => c.removed.insert(path),
        _ => {}
    }
}

/// Removes the values at the set's member paths.
pub fn remove_items(v: &mut Value, set: &Set, ty: Ty) {
    if set.is_empty() {
        return;
    }
    let shape = ty.shape(v);
    match (shape, v) {
        (Shape::Map { atomic: false }, Value::Object(m)) => {
            m.retain(|k, _| !set.has_member(&Pe::Field(k.clone())));
            for (k, child) in m.iter_mut() {
                if let Some(sub) = set.child(&Pe::Field(k.clone())) {
                    remove_items(child, sub, ty.field(k));
                }
            }
        }
        (Shape::List(kind), Value::Array(a)) if kind != ListKind::Atomic => {
            let pes: Vec<Pe> = a.iter().enumerate().map(|(i, item)| item_pe(&kind, i, item).unwrap_or(Pe::Index(i))).collect();
            let mut kept = Vec::with_capacity(a.len());
            for (pe, mut item) in pes.into_iter().zip(a.drain(..)) {
                if set.has_member(&pe) {
                    continue;
                }
                if let Some(sub) = set.child(&pe) {
                    remove_items(&mut item, sub, ty.items());
                }
                kept.push(item);
            }
            *a = kept;
        }
        _ => {}
    }
}

/// The object upstream compares a created object against: the zero value
/// of the kind's Go type, whose non-pointer structs (metadata, spec, a pod
/// template, ...) are present though empty. What changes against it on
/// create is what the creating manager owns.
pub fn zero_object(kind: &str, ty: Ty) -> Value {
    let meta = || serde_json::json!({"creationTimestamp": null});
    let pod_template = || serde_json::json!({"metadata": meta(), "spec": {"containers": null}});
    let mut obj = serde_json::json!({"metadata": meta()});
    for top in ["spec", "status"] {
        if ty.declares(top) {
            obj[top] = Value::Object(Map::new());
        }
    }
    match kind {
        "Deployment" => {
            obj["spec"]["template"] = pod_template();
            obj["spec"]["strategy"] = serde_json::json!({});
        }
        "StatefulSet" | "DaemonSet" => {
            obj["spec"]["template"] = pod_template();
            obj["spec"]["updateStrategy"] = serde_json::json!({});
        }
        "ReplicaSet" | "Job" => obj["spec"]["template"] = pod_template(),
        "CronJob" => obj["spec"]["jobTemplate"] = serde_json::json!({"metadata": meta(), "spec": {"template": pod_template()}}),
        "PodTemplate" => obj["template"] = pod_template(),
        "Pod" => obj["spec"]["containers"] = Value::Null,
        "PersistentVolumeClaim" => obj["spec"]["resources"] = serde_json::json!({}),
        _ => {}
    }
    obj
}
