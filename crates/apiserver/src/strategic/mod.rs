//! Strategic merge patch (`application/strategic-merge-patch+json`), the
//! patch `kubectl apply` (client-side), `edit`, `set`, `patch` and
//! `rollout restart` send.
//!
//! A JSON merge patch whose lists follow the field's patch strategy, as the
//! schema's `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`
//! tell (upstream reads the same facts from the Go struct tags; the list
//! types of server-side apply play no part):
//!
//! - maps merge recursively, `null` deletes a key; a map field of strategy
//!   `replace` is replaced;
//! - lists of strategy `merge` merge: lists of maps by their merge key
//!   (elements with `$patch: delete` delete by key, one with
//!   `$patch: replace` makes the rest of the patch list the whole list),
//!   lists of primitives as sets (`$deleteFromPrimitiveList/<field>` deletes);
//! - other lists are replaced, as are the lists of fields the schema does
//!   not know (their maps still merge, like a JSON merge patch);
//! - `$patch: replace` / `delete` on a map replaces / empties it,
//!   `$retainKeys` drops the keys of the original it does not list,
//!   `$setElementOrder/<field>` orders a merged list.
//!
//! The order of a merged list follows upstream's rules: the patch's (or
//! `$setElementOrder`'s) items in that order, interleaved with the items
//! only the original has by their original positions.
//!
//! Deviations from upstream, all in cases clients do not produce: values
//! the original lacks are cleaned of directives and nulls rather than
//! copied as they come, `$patch: merge` on a map is accepted as a no-op,
//! `$deleteFromPrimitiveList` of a missing list does nothing, and
//! `$setElementOrder` of a list empty on both sides is no error.

use serde_json::{Map, Value};

use crate::openapi;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

const BAD_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const BAD_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const BAD_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";
const LIST: &str = "[]interface {}";
const MAP: &str = "map[string]interface {}";

type Result<T> = std::result::Result<T, String>;

/// Applies a strategic merge patch to `original` (the current object, JSON
/// wire form) for the kind `group`/`version`/`kind`. Errors are
/// upstream-style messages (the handler turns them into 400/422 Status).
pub fn apply(group: &str, version: &str, kind: &str, original: &Value, patch: &Value) -> Result<Value> {
    let patch = match patch {
        Value::Object(p) => p.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(format!("json: cannot unmarshal {} into Go value of type {MAP}", json_kind(other)));
        }
    };
    let Value::Object(original) = original else { return Err("invalid JSON document".into()) };
    let node = Node(openapi::kind_schema(group, version, kind));
    merge_map(original.clone(), patch, node).map(Value::Object)
}

/// The HTTP status upstream answers an [`apply`] error with: 400 Bad Request
/// for a patch of the wrong form (a body that is no JSON object, a bad
/// `$deleteFromPrimitiveList` / `$retainKeys` / `$setElementOrder`), 422
/// Unprocessable Entity (reason Invalid) for a list of lists, and 500 for
/// the rest (a missing merge key, an unknown `$patch`, mismatched list
/// orders, ...: upstream passes those on as plain errors, which become a
/// Status of code 500, no reason, the message as is).
pub fn error_code(message: &str) -> u16 {
    match message {
        BAD_PRIMITIVE_LIST | BAD_RETAIN_KEYS | BAD_SET_ELEMENT_ORDER | "invalid JSON document" => 400,
        m if m.starts_with("json: cannot unmarshal") => 400,
        "lists of lists are not supported" => 422,
        _ => 500,
    }
}

/// A place in the schema: the resolved schema of a value, or None where
/// the schema says nothing (plain JSON merge from there down).
#[derive(Clone, Copy)]
struct Node(Option<&'static Value>);

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    Default,
    Merge,
    Replace,
}

/// The patch facts of one field.
struct Field {
    /// The field's value.
    node: Node,
    /// The elements, for a list.
    items: Node,
    strategy: Strategy,
    merge_key: Option<&'static str>,
}


impl Node {
    fn field(self, key: &str) -> Result<Field> {
        let unknown = Field { node: Node(None), items: Node(None), strategy: Strategy::Default, merge_key: None };
        let Some(schema) = self.0 else { return Ok(unknown) };
        let prop = schema
            .get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
        let Some(prop) = prop else { return Ok(unknown) };
        let strategy = match prop.get("x-kubernetes-patch-strategy").and_then(Value::as_str) {
            Some(s) => parse_strategy(s)?,
            None => Strategy::Default,
        };
        let node = openapi::resolve(prop);
        let items = node.and_then(|n| n.get("items")).and_then(openapi::resolve);
        let merge_key = prop.get("x-kubernetes-patch-merge-key").and_then(Value::as_str);
        Ok(Field { node: Node(node), items: Node(items), strategy, merge_key })
    }
}

/// `merge`, `replace`, `retainKeys` or `retainKeys` with one of the others.
/// (`retainKeys` itself needs nothing here: a `$retainKeys` directive is
/// honoured wherever it comes.)
fn parse_strategy(s: &str) -> Result<Strategy> {
    let parts: Vec<&str> = s.split(',').collect();
    let main = match parts.as_slice() {
        [one] if *one == "retainKeys" => "",
        [one] => one,
        [a, b] if *a == "retainKeys" => b,
        [a, b] if *b == "retainKeys" => a,
        _ => return Err(format!("unexpected patch strategy: [{}]", parts.join(" "))),
    };
    Ok(match main {
        "merge" => Strategy::Merge,
        "replace" => Strategy::Replace,
        _ => Strategy::Default,
    })
}

fn merge_map(mut original: Map<String, Value>, mut patch: Map<String, Value>, node: Node) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE);
                return merge_map(Map::new(), patch, node);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {
                patch.shift_remove(DIRECTIVE);
            }
            _ => return Err(format!("unknown patch type: {} in map: {}", go(directive), go_map(&patch))),
        }
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, node)?;
    let mut deletions = Vec::new();
    for (key, value) in patch {
        match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) => {
                let field = rest.strip_prefix('/').ok_or(BAD_PRIMITIVE_LIST)?;
                deletions.push((field.to_string(), value));
            }
            None => merge_field(&mut original, key, value, node, false)?,
        }
    }
    for (field, value) in deletions {
        merge_field(&mut original, field, value, node, true)?;
    }
    Ok(original)
}

/// Merges one key of a patch map into the original map.
fn merge_field(original: &mut Map<String, Value>, key: String, value: Value, node: Node, delete_list: bool) -> Result<()> {
    if value.is_null() {
        original.shift_remove(&key);
        return Ok(());
    }
    let field = node.field(&key)?;
    let Some(current) = original.get_mut(&key) else {
        if !delete_list {
            let fresh = fresh(value, &field)?;
            original.insert(key, fresh);
        }
        return Ok(());
    };
    let merged = match (current.take(), value) {
        (Value::Object(o), Value::Object(p)) if field.strategy != Strategy::Replace => Value::Object(merge_map(o, p, field.node)?),
        (Value::Array(o), Value::Array(p)) => Value::Array(merge_list(o, p, &field, delete_list)?),
        (o, _) if delete_list => o,
        (_, p) => fresh(p, &field)?,
    };
    *current = merged;
    Ok(())
}

/// A patch value for a key the original lacks (or replaces): its
/// directives applied and its nulls dropped.
fn fresh(value: Value, field: &Field) -> Result<Value> {
    Ok(match value {
        Value::Object(p) => Value::Object(merge_map(Map::new(), p, field.node)?),
        Value::Array(p) if field.strategy == Strategy::Merge => Value::Array(merge_list(Vec::new(), p, field, false)?),
        other => other,
    })
}

/// `$retainKeys`: the original keeps only the keys listed, and the patch
/// may set no other key.
fn retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<()> {
    let Some(list) = patch.shift_remove(RETAIN_KEYS) else { return Ok(()) };
    let Value::Array(list) = list else { return Err(BAD_RETAIN_KEYS.into()) };
    let listed = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        let directive = k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k.starts_with(SET_ELEMENT_ORDER);
        if !v.is_null() && !directive && !listed(k) {
            return Err(BAD_RETAIN_KEYS.into());
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the field's patch list (if any) and
/// orders the result: the listed items in the directive's order, the
/// original's other items interleaved by their original positions.
fn set_element_order(original: &mut Map<String, Value>, patch: &mut Map<String, Value>, node: Node) -> Result<()> {
    let keys: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
    for directive in keys {
        let order = patch.shift_remove(&directive).unwrap_or(Value::Null);
        let Value::Array(order) = order else { return Err(bad_arg_type(LIST, &order)) };
        let name = directive[SET_ELEMENT_ORDER.len()..].strip_prefix('/').ok_or(BAD_SET_ELEMENT_ORDER)?.to_string();
        let list_of = |v: Option<&Value>| match v {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.clone())),
            Some(other) => Err(bad_arg_type(LIST, other)),
        };
        let current = list_of(original.get(&name))?;
        let patch_list = list_of(patch.get(&name))?;
        let field = node.field(&name)?;
        validate_order(patch_list.as_deref().unwrap_or_default(), &order, field.merge_key)?;
        let empty = current.as_ref().is_none_or(Vec::is_empty) && patch_list.as_ref().is_none_or(Vec::is_empty);
        let current = current.unwrap_or_default();
        let merged = match patch_list {
            Some(p) => merge_list(current.clone(), p, &field, false)?,
            None if original.contains_key(&name) => current.clone(),
            None => continue,
        };
        patch.shift_remove(&name);
        if empty {
            original.insert(name, Value::Array(merged));
            continue;
        }
        let key = if merged.iter().chain(&current).any(Value::is_object) { field.merge_key } else { None };
        let order_ids = identities(&order, key)?;
        let (listed, others) = partition(merged, &order_ids, key)?;
        let current_ids = identities(&current, key)?;
        original.insert(name, Value::Array(normalize_order(listed, others, &order_ids, &current_ids, key)));
    }
    Ok(())
}

/// Upstream's check of a `$setElementOrder` list against its patch list:
/// the patch's items (but deletions and directives) must come in the
/// directive's order.
fn validate_order(patch: &[Value], order: &[Value], key: Option<&str>) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::new();
    for v in patch {
        if key.is_some() {
            let Value::Object(m) = v else { return Err(bad_arg_type(MAP, v)) };
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        items.push(v);
    }
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < order.len() {
        if items[i].get(DIRECTIVE).is_some() {
            i += 1;
            continue;
        }
        if key_values_equal(items[i], &order[j], key)? {
            i += 1;
        }
        j += 1;
    }
    if i < items.len() {
        return Err(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go_list(patch),
            go_list(order)
        ));
    }
    Ok(())
}

fn key_values_equal(a: &Value, b: &Value, key: Option<&str>) -> Result<bool> {
    let Some(key) = key else { return Ok(same(a, b)) };
    let ka = merge_key_of(a, key)?;
    let kb = merge_key_of(b, key)?;
    Ok(same(ka, kb))
}

fn merge_key_of<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    let Value::Object(m) = v else { return Err(bad_arg_type(MAP, v)) };
    m.get(key).ok_or_else(|| no_merge_key(m, key))
}

/// Merges a patch list into the original list of a field.
fn merge_list(original: Vec<Value>, patch: Vec<Value>, field: &Field, delete_list: bool) -> Result<Vec<Value>> {
    if field.strategy != Strategy::Merge {
        return Ok(if delete_list { delete_from(original, &patch) } else { patch });
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if !elements_are_maps(&original, &patch)? {
        if delete_list {
            return Ok(delete_from(original, &patch));
        }
        let mut merged: Vec<Value> = Vec::new();
        for v in original.iter().chain(&patch) {
            if !merged.iter().any(|m| same(m, v)) {
                merged.push(v.clone());
            }
        }
        let (listed, others) = partition(merged, &patch, None)?;
        return Ok(normalize_order(listed, others, &patch, &original, None));
    }
    let Some(key) = field.merge_key else { return Err("cannot merge lists without merge key for type struct".into()) };

    // Directive elements first: deletions by key, or a replacement of the whole list.
    let mut current = original;
    let mut plain = Vec::new();
    let mut replace = false;
    for v in patch {
        let Value::Object(m) = v else { unreachable!("checked: every element is a map") };
        match m.get(DIRECTIVE) {
            None => plain.push(m),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let value = m.get(key).ok_or_else(|| no_merge_key(&m, key))?;
                    current.retain(|c| !c.get(key).is_some_and(|k| same(k, value)));
                }
                Some("replace") => replace = true,
                Some("merge") => return Err("merging lists cannot yet be specified in the patch".into()),
                _ => return Err(format!("unknown patch type: {} in map: {}", go(d), go_map(&m))),
            },
        }
    }
    if replace {
        let list = plain.into_iter().map(|m| merge_map(Map::new(), m, field.items).map(Value::Object));
        return list.collect();
    }

    let current_ids = identities(&current, Some(key))?;
    let mut patch_ids = Vec::with_capacity(plain.len());
    let mut merged = current;
    for m in plain {
        let value = m.get(key).ok_or_else(|| no_merge_key(&m, key))?.clone();
        match merged.iter().position(|c| c.get(key).is_some_and(|k| same(k, &value))) {
            Some(i) => {
                let Value::Object(o) = merged[i].take() else { unreachable!("checked: every element is a map") };
                merged[i] = Value::Object(merge_map(o, m, field.items)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), m, field.items)?)),
        }
        patch_ids.push(value);
    }
    let (listed, others) = partition(merged, &patch_ids, Some(key))?;
    Ok(normalize_order(listed, others, &patch_ids, &current_ids, Some(key)))
}

fn delete_from(list: Vec<Value>, delete: &[Value]) -> Vec<Value> {
    list.into_iter().filter(|v| !delete.iter().any(|d| same(d, v))).collect()
}

/// Whether the elements of the lists are maps (else primitives); mixed or
/// nested lists are errors.
fn elements_are_maps(a: &[Value], b: &[Value]) -> Result<bool> {
    let kind = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    let mut seen = None;
    for v in a.iter().chain(b) {
        let k = kind(v);
        if k == 4 {
            return Err("lists of lists are not supported".into());
        }
        if seen.is_some_and(|s| s != k) {
            return Err(format!("list element types are not identical: [{} {}]", go_list(a), go_list(b)));
        }
        seen = Some(k);
    }
    Ok(seen == Some(5))
}

/// What identifies a list item: its merge key's value, or the item itself.
fn identity<'a>(v: &'a Value, key: Option<&str>) -> Result<&'a Value> {
    match key {
        Some(key) => merge_key_of(v, key),
        None => Ok(v),
    }
}

fn identities(list: &[Value], key: Option<&str>) -> Result<Vec<Value>> {
    list.iter().map(|v| identity(v, key).cloned()).collect()
}

/// Splits a merged list into the items `ids` names and the others.
fn partition(merged: Vec<Value>, ids: &[Value], key: Option<&str>) -> Result<(Vec<Value>, Vec<Value>)> {
    let (mut listed, mut others) = (Vec::new(), Vec::new());
    for v in merged {
        let listed_here = position(ids, identity(&v, key)?).is_some();
        if listed_here { listed.push(v) } else { others.push(v) }
    }
    Ok((listed, others))
}

fn position(ids: &[Value], id: &Value) -> Option<usize> {
    ids.iter().position(|i| same(i, id))
}

/// Orders the patch's items by `patch_order` and the others by
/// `server_order`, then interleaves them: an original-only item goes
/// before the next patch item when both are in the original and it came
/// first there.
fn normalize_order(
    mut listed: Vec<Value>,
    mut others: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let rank = |order: &[Value], v: &Value| identity(v, key).ok().and_then(|id| position(order, id));
    listed.sort_by_key(|v| rank(patch_order, v).unwrap_or(usize::MAX));
    others.sort_by_key(|v| rank(server_order, v).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(listed.len() + others.len());
    let mut left = others.into_iter().peekable();
    let mut right = listed.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => match (rank(server_order, l), rank(server_order, r)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

/// JSON equality, numbers compared by value (1 and 1.0 are the same).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64().is_some_and(|f| Some(f) == y.as_f64()),
        _ => a == b,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type name upstream's messages give a decoded JSON value.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => LIST,
        Value::Object(_) => MAP,
    }
}

fn bad_arg_type(expected: &str, actual: &Value) -> String {
    format!("expected a {expected}, but received a {}", go_type(actual))
}

fn no_merge_key(m: &Map<String, Value>, key: &str) -> String {
    format!("map: {} does not contain declared merge key: {key}", go_map(m))
}

/// A value as Go's `%v` prints the decoded form (`map[k:v]`, `[a b]`).
fn go(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => go_list(a),
        Value::Object(m) => go_map(m),
        other => other.to_string(),
    }
}

fn go_list(a: &[Value]) -> String {
    format!("[{}]", a.iter().map(go).collect::<Vec<_>>().join(" "))
}

fn go_map(m: &Map<String, Value>) -> String {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    format!("map[{}]", entries.iter().map(|(k, v)| format!("{k}:{}", go(v))).collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests;
