//! Small shared helpers: field paths, JSON accessors, semantic equality and
//! the handful of generic checks (non-negative, immutable) used everywhere.

use serde_json::{Map, Value};

use super::errors::FieldError;

pub(crate) type Errs = Vec<FieldError>;

/// `base.name` (or just `name` at the root).
pub(crate) fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[i]`.
pub(crate) fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// `base[key]`.
pub(crate) fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

pub(crate) fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    match v.get(k) {
        Some(Value::Null) | None => None,
        Some(x) => Some(x),
    }
}

/// A string field, "" when absent.
pub(crate) fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A string field, None when absent or null.
pub(crate) fn opt_s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// An array field, empty when absent.
pub(crate) fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An object field, None when absent.
pub(crate) fn omap<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}

/// An integer field.
pub(crate) fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k)
        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
}

pub(crate) fn boolean(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// Follows a chain of object keys.
pub(crate) fn at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for k in keys {
        cur = get(cur, k)?;
    }
    Some(cur)
}

/// The string entries of a `map[string]string` field (non-strings skipped).
pub(crate) fn str_map(v: Option<&Value>) -> Vec<(&str, &str)> {
    match v.and_then(Value::as_object) {
        Some(m) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
            .collect(),
        None => Vec::new(),
    }
}

/// Whether a JSON value is Go's zero value for its type (so that an omitted
/// field and an explicit empty one compare equal, like upstream's semantic
/// equality treating nil and empty slices/maps alike).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// Semantic deep equality of two optional JSON values.
pub(crate) fn sem_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    let null = Value::Null;
    let a = a.unwrap_or(&null);
    let b = b.unwrap_or(&null);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                if !sem_eq(Some(v), y.get(k)) {
                    return false;
                }
            }
            for (k, v) in y {
                if !x.contains_key(k) && !is_zero(v) {
                    return false;
                }
            }
            true
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| sem_eq(Some(p), Some(q)))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => {
            if is_zero(a) && is_zero(b) {
                // null vs "" vs [] vs {}: Go's zero values of the same field.
                a == b || a.is_null() || b.is_null() || (is_container(a) && is_container(b))
            } else {
                a == b
            }
        }
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// `must be greater than or equal to 0` for a negative number.
pub(crate) fn nonneg(errs: &mut Errs, v: &Value, k: &str, path: &str) {
    if let Some(n) = int(v, k) {
        nonneg_value(errs, n, &child(path, k));
    }
}

pub(crate) fn nonneg_value(errs: &mut Errs, n: i64, path: &str) {
    if n < 0 {
        errs.push(FieldError::invalid(
            path,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

pub(crate) const FIELD_IMMUTABLE: &str = "field is immutable";

/// `field is immutable` when the value changed (the new value is printed).
pub(crate) fn immutable(errs: &mut Errs, new: Option<&Value>, old: Option<&Value>, path: &str) {
    if !sem_eq(new, old) {
        errs.push(FieldError::invalid(
            path,
            new.cloned().unwrap_or(Value::Null),
            FIELD_IMMUTABLE,
        ));
    }
}

/// `field is immutable` with a verbatim value rendering.
pub(crate) fn immutable_repr(
    errs: &mut Errs,
    new: Option<&Value>,
    old: Option<&Value>,
    path: &str,
    repr: String,
) {
    if !sem_eq(new, old) {
        errs.push(FieldError::invalid_repr(path, repr, FIELD_IMMUTABLE));
    }
}

/// Go's `%#v` of a pointer field inside a struct: a (fake) address or nil.
pub(crate) fn go_ptr(v: Option<&Value>, ty: &str) -> String {
    match v {
        Some(n) if !n.is_null() => format!("({ty})(0xc000{:06x})", fake_addr(n)),
        _ => format!("({ty})(nil)"),
    }
}

/// A stable fake pointer address for rendering (upstream prints real ones).
pub(crate) fn fake_addr(v: &Value) -> u32 {
    let text = v.to_string();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0xfff) << 4
}

/// Go's `%#v` of a `[]string` (nil when absent).
pub(crate) fn go_string_slice(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => "[]string(nil)".to_string(),
        Some(a) => {
            let parts: Vec<String> = a
                .iter()
                .map(|x| super::errors::go_quote(x.as_str().unwrap_or("")))
                .collect();
            format!("[]string{{{}}}", parts.join(", "))
        }
    }
}

/// Go's `%#v` of a `map[string]string` (nil when absent).
pub(crate) fn go_map_or_nil(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".to_string(),
        Some(m) => super::errors::go_string_map(m),
    }
}

/// The value for an "Invalid value" that upstream prints as a Go
/// `map[string]string` (labels and the like): nil prints as such.
pub(crate) fn map_value(v: Option<&Value>) -> Value {
    match v {
        Some(x @ Value::Object(_)) => x.clone(),
        _ => super::errors::go_repr("map[string]string(nil)"),
    }
}

/// An int-or-string as upstream prints it (via its `String()` method: no quotes).
pub(crate) fn int_or_string_repr(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}
