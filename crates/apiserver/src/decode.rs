//! Decoding request bodies the way upstream does: JSON or YAML, duplicate and
//! unknown fields reported per `fieldValidation`, types checked against the
//! kind's schema, and unknown fields dropped before storing.

use std::cell::RefCell;
use std::fmt;

use resources::catalog::ResourceInfo;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::errors::{ApiError, ApiResult};
use crate::request::FieldValidation;

const BODY_TYPES: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// Parses a JSON, YAML or Kubernetes protobuf body, returning the value and
/// the paths of duplicated fields.
pub fn parse_body(body: &[u8], content_type: &str) -> ApiResult<(Value, Vec<String>)> {
    if content_type == crate::protobuf::CONTENT_TYPE {
        return Ok((crate::protobuf::decode(body).map_err(ApiError::bad_request)?, Vec::new()));
    }
    if !(content_type.is_empty() || content_type == "application/json" || content_type.contains("yaml")) {
        return Err(ApiError::unsupported_media_type(BODY_TYPES));
    }
    if content_type.contains("yaml") {
        let v: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
        return Ok((v, Vec::new()));
    }
    let dups = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = Tracked { path: String::new(), dups: &dups }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|_| v))
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    Ok((v, dups.into_inner()))
}

/// A JSON value deserializer that remembers the paths of repeated keys.
struct Tracked<'a> {
    path: String,
    dups: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Tracked<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tracked<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Tracked { path: format!("{}[{}]", self.path, out.len()), dups: self.dups })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{}", self.path, key) };
            let v = map.next_value_seed(Tracked { path: path.clone(), dups: self.dups })?;
            if out.insert(key, v).is_some() {
                self.dups.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Removes `null` members of objects: upstream decodes them as absent.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Paths present in `input` but dropped by the typed decode.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(t) => unknown_fields(v, t, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, t)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Checks the body's apiVersion/kind against the endpoint, decodes it into the
/// kind's type and reports duplicate/unknown fields. Returns the object as
/// stored (unknown fields dropped) and warnings for `fieldValidation=Warn`.
pub fn decode_object(
    info: &ResourceInfo,
    mut obj: Value,
    dups: Vec<String>,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    };
    let api_version = info.api_version();
    let cannot_handle = |why: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            info.kind, info.version, info.kind, why
        ))
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )))
        }
        _ => {}
    }
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(info.kind.into()));
    strip_nulls(&mut obj);
    let typed = (info.typed)(&obj).map_err(cannot_handle)?;
    let mut problems: Vec<String> = dups.into_iter().map(|p| format!("duplicate field \"{p}\"")).collect();
    let mut unknown = Vec::new();
    unknown_fields(&obj, &typed, "", &mut unknown);
    problems.extend(unknown.into_iter().map(|p| format!("unknown field \"{p}\"")));
    match validation {
        FieldValidation::Strict if !problems.is_empty() => {
            Err(cannot_handle(format!("strict decoding error: {}", problems.join(", "))))
        }
        FieldValidation::Warn => Ok((typed, problems)),
        _ => Ok((typed, Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resources::catalog::lookup;

    #[test]
    fn duplicates_and_unknown_fields_are_reported_with_paths() {
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","name":"b"},"data":{"k":"v"},"extra":1}"#;
        let (v, dups) = parse_body(body, "application/json").unwrap();
        assert_eq!(dups, vec!["metadata.name"]);
        let info = lookup("", "v1", "configmaps").unwrap();
        let err = decode_object(info, v.clone(), dups.clone(), FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains(r#"duplicate field "metadata.name""#), "{}", err.message);
        assert!(err.message.contains(r#"unknown field "extra""#), "{}", err.message);
        let (stored, warnings) = decode_object(info, v, dups, FieldValidation::Warn).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(stored.get("extra").is_none());
        assert_eq!(stored["metadata"]["name"], "b");
    }

    #[test]
    fn wrong_kind_and_types_are_bad_requests() {
        let info = lookup("", "v1", "pods").unwrap();
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Service"});
        assert!(decode_object(info, v, vec![], FieldValidation::Strict).unwrap_err().message.contains("does not match"));
        let v = serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": "no"}});
        let err = decode_object(info, v, vec![], FieldValidation::Strict).unwrap_err();
        assert!(err.message.starts_with("Pod in version \"v1\" cannot be handled as a Pod: spec.containers"), "{}", err.message);
    }
}
