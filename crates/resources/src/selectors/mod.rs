//! Label and field selectors with upstream's syntax, matching and error
//! messages, plus the generic field getter field selectors match against.

mod fields;
mod labels;
mod syntax;

pub use fields::{escape_value, unescape_value, FieldOp, FieldRequirement, FieldSelector};
pub use labels::{LabelSelector, Operator, Requirement};
pub use syntax::{label_key_errors, label_value_errors};

use serde_json::Value;

/// A field of an object by dotted path (`spec.nodeName`,
/// `involvedObject.kind`) as the string field selectors compare: strings as
/// they are, booleans and numbers in their usual text, anything missing or
/// not a scalar as "".
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    scalar_text(cur)
}

/// The text of a scalar JSON value; "" for null, objects and arrays.
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::go_quote;
    use serde_json::json;

    #[test]
    fn field_values_by_path() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "priority": 5, "ratio": 1.5, "whole": 2.0},
            "status": {"phase": "Running"},
            "involvedObject": {"kind": "Pod"}
        });
        assert_eq!(field_value(&pod, "metadata.name"), "web");
        assert_eq!(field_value(&pod, "spec.nodeName"), "n1");
        assert_eq!(field_value(&pod, "spec.hostNetwork"), "true");
        assert_eq!(field_value(&pod, "spec.priority"), "5");
        assert_eq!(field_value(&pod, "spec.ratio"), "1.5");
        assert_eq!(field_value(&pod, "spec.whole"), "2");
        assert_eq!(field_value(&pod, "involvedObject.kind"), "Pod");
        assert_eq!(field_value(&pod, "spec.missing"), "");
        assert_eq!(field_value(&pod, "nothing.at.all"), "");
        assert_eq!(field_value(&pod, "spec"), "");
        assert_eq!(field_value(&json!({"a": null}), "a"), "");
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a b"), "\"a b\"");
        assert_eq!(go_quote("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(go_quote("\n\x01é"), "\"\\n\\x01é\"");
    }
}
