//! Rendering objects and lists in the negotiated format: JSON, YAML, a
//! meta.k8s.io Table (what `kubectl get` prints), or PartialObjectMetadata.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use resources::catalog::ResourceInfo;
use resources::printers;
use serde_json::{json, Value};

use crate::cache::Cached;
use crate::errors::{ApiError, ApiResult};
use crate::request::{Format, Query};

/// `v` as upstream's encoder writes it: JSON and a newline.
pub fn json_line(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

pub fn json_response(code: u16, body: Bytes, warnings: &[String]) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(http::header::CONTENT_TYPE, "application/json");
    for w in warnings {
        b = b.header("Warning", format!("299 - \"{}\"", w.replace('"', "'")));
    }
    b.body(Body::from(body)).unwrap()
}

fn yaml_response(code: u16, v: &Value) -> ApiResult<Response> {
    let s = serde_yaml::to_string(v).map_err(ApiError::internal)?;
    Ok(Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(http::header::CONTENT_TYPE, "application/yaml")
        .body(Body::from(s))
        .unwrap())
}

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn from_query(q: &Query) -> ApiResult<IncludeObject> {
        match q.get("includeObject").map(String::as_str) {
            None | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(o) => Err(ApiError::bad_request(format!("includeObject: Unsupported value: {o:?}"))),
        }
    }
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A Table of `objs`; column definitions are left out when `headers` is false
/// (watch events after the first).
pub fn table(info: &ResourceInfo, objs: &[&Value], include: IncludeObject, headers: bool, list_meta: Value) -> Value {
    let now = chrono::Utc::now();
    let columns: Vec<Value> = if headers {
        printers::columns(info.group, info.kind)
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": printers::cells(info.group, info.kind, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = (*o).clone(),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": columns, "rows": rows})
}

/// One object in the negotiated format.
pub fn object(fmt: Format, info: &ResourceInfo, q: &Query, obj: &Value, code: u16, warnings: &[String]) -> ApiResult<Response> {
    match fmt {
        Format::Json => Ok(json_response(code, json_line(obj), warnings)),
        Format::Yaml => yaml_response(code, obj),
        Format::Metadata => Ok(json_response(code, json_line(&partial_metadata(obj)), warnings)),
        Format::Table => {
            let t = table(info, &[obj], IncludeObject::from_query(q)?, true, json!({"resourceVersion": obj["metadata"]["resourceVersion"]}));
            Ok(json_response(code, json_line(&t), warnings))
        }
    }
}

/// A list of stored objects. JSON lists are assembled from each object's
/// cached bytes instead of serializing again.
pub fn list(fmt: Format, info: &ResourceInfo, q: &Query, items: &[Arc<Cached>], list_meta: Value) -> ApiResult<Response> {
    let converted: Vec<Arc<Cached>>;
    let items = if resources::conversion::needs_conversion(info) {
        converted = items.iter().map(|c| c.converted(info)).collect();
        &converted[..]
    } else {
        items
    };
    match fmt {
        Format::Table => {
            let objs: Vec<Value> = items.iter().map(|c| c.obj()).collect();
            let objs: Vec<&Value> = objs.iter().collect();
            let t = table(info, &objs, IncludeObject::from_query(q)?, true, list_meta);
            Ok(json_response(200, json_line(&t), &[]))
        }
        Format::Metadata => {
            let items: Vec<Value> = items.iter().map(|c| partial_metadata(&c.obj())).collect();
            let v = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items});
            Ok(json_response(200, json_line(&v), &[]))
        }
        Format::Yaml => {
            let items: Vec<Value> = items.iter().map(|c| untyped(c.obj())).collect();
            yaml_response(200, &json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": list_meta, "items": items}))
        }
        Format::Json => {
            let size: usize = items.iter().map(|c| c.json().len() + 1).sum();
            let mut buf = BytesMut::with_capacity(size + 256);
            let head = format!(
                "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
                info.kind,
                info.api_version(),
                list_meta
            );
            buf.put_slice(head.as_bytes());
            // Upstream's items carry no kind or apiVersion of their own (the
            // list's say it); stored objects begin with exactly these two.
            let typed = format!("{{\"kind\":\"{}\",\"apiVersion\":\"{}\",", info.kind, info.api_version());
            for (i, c) in items.iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b',');
                }
                match c.json().strip_prefix(typed.as_bytes()) {
                    Some(rest) => {
                        buf.put_u8(b'{');
                        buf.put_slice(rest);
                    }
                    None => buf.put_slice(c.json()),
                }
            }
            buf.put_slice(b"]}\n");
            Ok(json_response(200, buf.freeze(), &[]))
        }
    }
}

/// An object as a list item: without the kind and apiVersion the list names.
pub fn untyped(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.shift_remove("kind");
        m.shift_remove("apiVersion");
    }
    obj
}

/// The Status upstream answers for a delete that removed the object at once.
pub fn deleted_status(info: &ResourceInfo, obj: &Value) -> Value {
    let mut details = crate::errors::name_details(info, obj["metadata"]["name"].as_str().unwrap_or(""));
    details["uid"] = obj["metadata"]["uid"].clone();
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
