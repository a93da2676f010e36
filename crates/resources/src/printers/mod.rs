//! Server-side table printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
//!
//! For every served kind this module knows the column definitions and how to
//! compute one row's cells from the stored JSON object, matching what the
//! upstream kube-apiserver prints (pkg/printers/internalversion) for v1.32.
//! The server always prints every column (upstream generates tables with
//! `Wide: true`); kubectl hides priority-1 columns unless `-o wide`.
//!
//! Kinds without a dedicated upstream printer use the apiserver's default
//! table convertor (`Name`, `Created At`), and kinds this module does not know
//! at all (custom resources) get the CRD default (`Name`, `Age`).

use chrono::{DateTime, Utc};
use serde_json::Value;

mod apps;
mod batch;
mod core_v1;
mod events;
mod networking;
mod other;
mod pod_status;
mod volumes;

#[cfg(test)]
mod kind_tests;
#[cfg(test)]
mod pod_tests;
#[cfg(test)]
mod tests;

/// One column definition of a meta.k8s.io/v1 Table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// "string", "integer", "boolean", "date", ...
    pub type_: &'static str,
    /// "name" for the object's name column, "" otherwise.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = always shown; 1 = only with `-o wide`.
    pub priority: i32,
}

impl Column {
    /// The TableColumnDefinition JSON (upstream has no omitempty on these).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// A kind's printer: its columns and its row function.
#[derive(Clone, Copy)]
pub(crate) struct Printer {
    pub columns: fn() -> Vec<Column>,
    pub cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
}

fn printer(group: &str, kind: &str) -> Printer {
    core_v1::lookup(group, kind)
        .or_else(|| apps::lookup(group, kind))
        .or_else(|| batch::lookup(group, kind))
        .or_else(|| networking::lookup(group, kind))
        .or_else(|| other::lookup(group, kind))
        .unwrap_or(Printer {
            columns: unknown_columns,
            cells: unknown_cells,
        })
}

/// Column definitions for a kind. group "" = core.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    (printer(group, kind).columns)()
}

/// One row's cells (strings, integers, booleans) matching [`columns`].
pub fn cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    (printer(group, kind).cells)(obj, now)
}

/// Upstream's `duration.HumanDuration` of `now - timestamp`, or `<unknown>`
/// when the timestamp is missing (or unparsable).
pub fn age(timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match timestamp.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// `duration.HumanDuration`: ~2-3 significant figures.
pub(crate) fn human_duration(d: chrono::Duration) -> String {
    let nanos = d
        .num_nanoseconds()
        .unwrap_or_else(|| d.num_seconds().saturating_mul(1_000_000_000));
    let seconds = nanos / 1_000_000_000; // truncates toward zero like Go's int(d.Seconds())
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------
// Column helpers

pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub(crate) const CONTAINERS_DESC: &str = "Names of each container in the template.";
pub(crate) const IMAGES_DESC: &str = "Images referenced by each container in the template.";

/// A priority-0 column.
pub(crate) const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A priority-1 (`-o wide`) column.
pub(crate) const fn wide(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

pub(crate) const fn name_col() -> Column {
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESC,
        priority: 0,
    }
}

pub(crate) const fn age_col() -> Column {
    col("Age", "string", CREATED_DESC)
}

/// The apiserver's default table convertor (kinds without an upstream printer).
pub(crate) fn created_at_columns() -> Vec<Column> {
    vec![name_col(), col("Created At", "date", CREATED_DESC)]
}

/// Name and the creation timestamp as RFC3339 in UTC (`0001-01-01T00:00:00Z` when unset).
pub(crate) fn created_at_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = parse_time(str_at(obj, "metadata.creationTimestamp"))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![name_cell(obj), s(created)]
}

/// The CRD default (`Name`, `Age` as a date column) used for unknown kinds.
fn unknown_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Age",
            "date",
            "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp",
        ),
    ]
}

fn unknown_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name_cell(obj), s(obj_age(obj, now))]
}

// ---------------------------------------------------------------------------
// JSON access helpers

static NULL: Value = Value::Null;

/// The value at a dotted path (`"status.phase"`), or null.
pub(crate) fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return &NULL,
        }
    }
    cur
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

pub(crate) fn opt_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

pub(crate) fn int_at(v: &Value, path: &str) -> i64 {
    opt_int(at(v, path)).unwrap_or(0)
}

pub(crate) fn arr_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

pub(crate) fn bool_at(v: &Value, path: &str) -> bool {
    at(v, path).as_bool().unwrap_or(false)
}

/// Whether a field is present and not null (Go: pointer != nil).
pub(crate) fn present(v: &Value, path: &str) -> bool {
    !at(v, path).is_null()
}

pub(crate) fn s(x: impl Into<String>) -> Value {
    Value::String(x.into())
}

pub(crate) fn n(x: i64) -> Value {
    Value::from(x)
}

pub(crate) fn name_cell(obj: &Value) -> Value {
    s(str_at(obj, "metadata.name"))
}

/// `translateTimestampSince(obj.CreationTimestamp)`.
pub(crate) fn obj_age(obj: &Value, now: DateTime<Utc>) -> String {
    since(at(obj, "metadata.creationTimestamp"), now)
}

/// `translateTimestampSince` for a JSON timestamp value.
pub(crate) fn since(ts: &Value, now: DateTime<Utc>) -> String {
    age(ts.as_str(), now)
}

/// A quantity as printed (`Quantity.String()`); a missing one is zero.
pub(crate) fn quantity(v: &Value) -> String {
    match v {
        Value::String(q) if !q.is_empty() => q.clone(),
        Value::Number(num) => num.to_string(),
        _ => "0".to_string(),
    }
}

/// `IntOrString.String()`.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Number(num) => num.to_string(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Formatting helpers shared by several kinds

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
pub(crate) fn format_labels(map: &Value) -> String {
    let mut pairs: Vec<(&str, String)> = match map.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.as_str().map(str::to_string).unwrap_or_default(),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key;
/// empty or nil selectors print as "". Err on an invalid operator/values.
pub(crate) fn selector_string(sel: &Value) -> Result<String, ()> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = at(sel, "matchLabels").as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in arr_at(sel, "matchExpressions") {
        let key = str_at(expr, "key");
        let mut values: Vec<&str> = arr_at(expr, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        values.dedup();
        let text = match str_at(expr, "operator") {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
pub(crate) fn format_label_selector(sel: &Value) -> String {
    match selector_string(sel) {
        Ok(x) if x.is_empty() => "<none>".into(),
        Ok(x) => x,
        Err(()) => "<error>".into(),
    }
}

/// `layoutContainerCells`: container names and images, comma-joined.
pub(crate) fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "image")).collect();
    (s(names.join(",")), s(images.join(",")))
}

/// `printBoolPtr`: `True`/`False`, `<unset>` when nil.
pub(crate) fn bool_ptr(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "True".into(),
        Some(false) => "False".into(),
        None => "<unset>".into(),
    }
}

/// `listWithMoreString`: first `max` entries, `+ N more...`, `<unset>` when empty.
pub(crate) fn list_with_more(list: &[String], total: usize, max: usize) -> String {
    let shown = &list[..list.len().min(max)];
    let ret = shown.join(",");
    if total > max {
        format!("{ret} + {} more...", total - max)
    } else if ret.is_empty() {
        "<unset>".into()
    } else {
        ret
    }
}
