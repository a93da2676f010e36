//! Events: core/v1 and events.k8s.io/v1 print through the same upstream
//! (internal) Event printer; only their JSON field names differ.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub(super) fn columns() -> Vec<Column> {
    vec![
        col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
        col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
        col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        col("Object", "string", "The object that this event is about."),
        wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]."),
        wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
        col("Message", "string", "A human-readable description of the status of this operation."),
        wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
        wide("Count", "string", "The number of times this event has occurred."),
        Column { priority: 1, ..name_col() },
    ]
}

pub(super) fn core_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    event_cells(ev, now, false)
}

pub(super) fn events_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    event_cells(ev, now, true)
}

/// One printer for core/v1 and events.k8s.io/v1 Events (their field names differ).
fn event_cells(ev: &Value, now: DateTime<Utc>, new_api: bool) -> Vec<Value> {
    let pick = |core: &str, events: &str| {
        if new_api {
            at(ev, events)
        } else {
            at(ev, core)
        }
    };
    let first_ts = pick("firstTimestamp", "deprecatedFirstTimestamp");
    let last_ts = pick("lastTimestamp", "deprecatedLastTimestamp");
    let involved = pick("involvedObject", "regarding");
    let source = pick("source", "deprecatedSource");
    let message = pick("message", "note").as_str().unwrap_or("");
    let controller = pick("reportingComponent", "reportingController")
        .as_str()
        .unwrap_or("");
    let instance = str_at(ev, "reportingInstance");

    let first = match first_ts.as_str().and_then(parse_time) {
        Some(_) => since(first_ts, now),
        None => since(at(ev, "eventTime"), now),
    };
    let mut last = match last_ts.as_str().and_then(parse_time) {
        Some(_) => since(last_ts, now),
        None => first.clone(),
    };
    let mut count = opt_int(pick("count", "deprecatedCount")).unwrap_or(0);
    let series = at(ev, "series");
    if !series.is_null() {
        last = since(at(series, "lastObservedTime"), now);
        count = int_at(series, "count");
    } else if count == 0 {
        count = 1; // singleton events from the new API
    }

    let kind = str_at(involved, "kind").to_lowercase();
    let obj_name = str_at(involved, "name");
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };

    let component = match str_at(source, "component") {
        "" => controller,
        c => c,
    };
    let host = match str_at(source, "host") {
        "" => instance,
        h => h,
    };
    let source_str = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };

    vec![
        s(last),
        s(str_at(ev, "type")),
        s(str_at(ev, "reason")),
        s(target),
        s(str_at(involved, "fieldPath")),
        s(source_str),
        s(message.trim()),
        s(first),
        n(count),
        name_cell(ev),
    ]
}
