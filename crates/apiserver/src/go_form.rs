//! Objects in the form upstream's API server writes them. Go's JSON encoder
//! writes struct fields in declaration order (`kind, apiVersion, metadata,
//! spec, status`, and so on down) and writes a field without `omitempty`
//! even at its zero value: a new DaemonSet's status counters are `0`, not
//! missing. Typed clients refuse objects that lack such required fields, and
//! some compare bytes, so every object is put in this form before it is
//! stored. The field order and the required fields come from the protobuf
//! schema table, which lists each message's fields in Go struct order.

use serde_json::{Map, Value};

use crate::protobuf::{message_for, schema};
use schema::{Kind, Message, OPT, REP, ZERO};

/// Puts a whole object (with its `apiVersion` and `kind`) in upstream's
/// form. Kinds without a schema (custom resources) only get `kind` and
/// `apiVersion` first; their other keys keep the order they came in.
pub fn shape(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else { return };
    let schema = match (map.get("apiVersion"), map.get("kind")) {
        (Some(Value::String(av)), Some(Value::String(kind))) => message_for(av, kind).and_then(schema::message),
        _ => None,
    };
    let mut rest = std::mem::take(map);
    for key in ["kind", "apiVersion"] {
        if let Some(v) = rest.shift_remove(key) {
            map.insert(key.into(), v);
        }
    }
    if let Some(msg) = schema {
        place(msg, &mut rest, map);
    }
    map.extend(rest);
}

/// Moves the fields of `msg` from `from` into `to` in Go's order, shaping
/// nested messages and adding missing required scalars at their zero value.
/// Keys the schema does not know stay in `from`.
fn place(msg: &Message, from: &mut Map<String, Value>, to: &mut Map<String, Value>) {
    for &(_, json, kind, flags) in msg.fields {
        if json.is_empty() {
            // A Go struct embedded inline: its fields are the parent's.
            if let Some(sub) = sub_message(kind) {
                place(sub, from, to);
            }
            continue;
        }
        match from.shift_remove(json) {
            Some(mut v) => {
                shape_value(kind, &mut v);
                to.insert(json.into(), v);
            }
            None if flags & (OPT | REP | ZERO) == 0 || written_at_zero(msg, json) => {
                if let Some(zero) = zero_value(kind) {
                    to.insert(json.into(), zero);
                }
            }
            None => {}
        }
    }
}

fn shape_value(kind: Kind, v: &mut Value) {
    match (kind, v) {
        (Kind::Msg(_), Value::Array(items)) => items.iter_mut().for_each(|i| shape_value(kind, i)),
        (Kind::Msg(name), v) => shape_message(name, v),
        (Kind::MapMsg(name), Value::Object(m)) => m.values_mut().for_each(|i| shape_message(name, i)),
        _ => {}
    }
}

fn shape_message(name: &'static str, v: &mut Value) {
    let (Some(msg), Value::Object(m)) = (sub_message(Kind::Msg(name)), v) else { return };
    let mut rest = std::mem::take(m);
    place(msg, &mut rest, m);
    m.extend(rest);
}

/// The schema of a nested message, unless its JSON is not an object of
/// its fields (times, quantities, raw extensions, ...).
fn sub_message(kind: Kind) -> Option<&'static Message> {
    match kind {
        Kind::Msg(name) if !schema::has_own_json_form(name) => schema::message(name),
        _ => None,
    }
}

/// Optional in the API yet without `omitempty` in Go, so written as 0.
fn written_at_zero(msg: &Message, json: &str) -> bool {
    msg.name == "k8s.io.api.apps.v1.StatefulSetStatus" && json == "availableReplicas"
}

/// What Go writes for an unset field without `omitempty`.
fn zero_value(kind: Kind) -> Option<Value> {
    match kind {
        Kind::Str => Some(Value::String(String::new())),
        Kind::Bool => Some(Value::Bool(false)),
        Kind::I32 | Kind::I64 | Kind::F64 => Some(Value::from(0)),
        // nil slices, maps and pointers are written as null; leave them out.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn top_level_and_nested_fields_follow_go_struct_order() {
        let mut pod = json!({
            "status": {"phase": "Pending"},
            "spec": {"restartPolicy": "Always", "containers": [{"image": "i", "name": "c"}], "initContainers": [], "volumes": []},
            "metadata": {"labels": {"b": "1", "a": "2"}, "uid": "u", "name": "p", "namespace": "d"},
            "apiVersion": "v1",
            "kind": "Pod",
        });
        shape(&mut pod);
        assert_eq!(keys(&pod), ["kind", "apiVersion", "metadata", "spec", "status"]);
        assert_eq!(keys(&pod["metadata"]), ["name", "namespace", "uid", "labels"]);
        // Label maps keep the client's order, as Go's sorted map output is not
        // ours to imitate inside user data.
        assert_eq!(keys(&pod["metadata"]["labels"]), ["b", "a"]);
        assert_eq!(keys(&pod["spec"]), ["volumes", "initContainers", "containers", "restartPolicy"]);
        assert_eq!(keys(&pod["spec"]["containers"][0]), ["name", "image"]);
    }

    #[test]
    fn required_status_counters_are_written_as_zero() {
        let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {}, "status": {}});
        shape(&mut ds);
        assert_eq!(
            ds["status"],
            json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
        );
        let mut rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"}, "status": {}});
        shape(&mut rc);
        assert_eq!(rc["status"], json!({"replicas": 0}));
        let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "status": {}});
        shape(&mut sts);
        assert_eq!(sts["status"], json!({"replicas": 0, "availableReplicas": 0}));
    }

    #[test]
    fn omitempty_and_optional_fields_stay_out_and_unknown_keys_stay_last() {
        let mut secret = json!({"type": "Opaque", "x-extra": 1, "metadata": {"name": "s"}, "apiVersion": "v1", "kind": "Secret",
            "spec": {"imagePullSecrets": [{}]}});
        shape(&mut secret);
        assert_eq!(keys(&secret), ["kind", "apiVersion", "metadata", "type", "x-extra", "spec"]);
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"imagePullSecrets": [{}], "containers": []}});
        shape(&mut pod);
        // LocalObjectReference.name is omitempty in Go: not filled in.
        assert_eq!(pod["spec"]["imagePullSecrets"], json!([{}]));
    }

    #[test]
    fn custom_kinds_only_get_kind_and_api_version_first() {
        let mut cr = json!({"spec": {"b": 1, "a": 2}, "metadata": {"name": "x"}, "apiVersion": "example.com/v1", "kind": "Thing"});
        shape(&mut cr);
        assert_eq!(keys(&cr), ["kind", "apiVersion", "spec", "metadata"]);
        assert_eq!(keys(&cr["spec"]), ["b", "a"]);
    }

    #[test]
    fn raw_extensions_and_managed_fields_are_left_alone() {
        let mut rev = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r",
            "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}, "operation": "Update"}]},
            "revision": 1, "data": {"spec": {"z": 1, "a": 2}}});
        shape(&mut rev);
        assert_eq!(keys(&rev), ["kind", "apiVersion", "metadata", "data", "revision"]);
        assert_eq!(keys(&rev["data"]["spec"]), ["z", "a"]);
        assert_eq!(rev["metadata"]["managedFields"][0]["fieldsV1"], json!({"f:spec": {}}));
    }
}
