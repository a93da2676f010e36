//! Round trips of the `openapi.v2.Document` encoding through a minimal
//! protobuf reader, on a small document and on the served one.

use serde_json::{json, Value};

use super::encode;
use crate::openapi::{accepts_json, v2, v2_protobuf, wants_v2_protobuf};

/// One field off the wire: a varint, a fixed64 or a length-delimited run.
#[derive(Debug)]
enum F<'a> {
    V(u64),
    D(u64),
    B(&'a [u8]),
}

fn varint(b: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for i in 0.. {
        let (&x, rest) = b.split_first().expect("truncated varint");
        *b = rest;
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            break;
        }
    }
    v
}

fn fields(mut b: &[u8]) -> Vec<(u32, F<'_>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let n = (key >> 3) as u32;
        let f = match key & 7 {
            0 => F::V(varint(&mut b)),
            1 => {
                let (head, rest) = b.split_at(8);
                b = rest;
                F::D(u64::from_le_bytes(head.try_into().unwrap()))
            }
            2 => {
                let len = varint(&mut b) as usize;
                let (head, rest) = b.split_at(len);
                b = rest;
                F::B(head)
            }
            t => panic!("unexpected wire type {t}"),
        };
        out.push((n, f));
    }
    out
}

fn msgs(b: &[u8], n: u32) -> Vec<&[u8]> {
    fields(b).into_iter().filter(|(k, _)| *k == n).map(|(_, f)| if let F::B(b) = f { b } else { panic!("field {n} not bytes") }).collect()
}

fn msg(b: &[u8], n: u32) -> Option<&[u8]> {
    msgs(b, n).pop()
}

fn strs(b: &[u8], n: u32) -> Vec<String> {
    msgs(b, n).into_iter().map(|s| String::from_utf8(s.to_vec()).unwrap()).collect()
}

fn string(b: &[u8], n: u32) -> String {
    strs(b, n).pop().unwrap_or_default()
}

fn varint_field(b: &[u8], n: u32) -> Option<u64> {
    fields(b).into_iter().find_map(|(k, f)| match f {
        F::V(v) if k == n => Some(v),
        _ => None,
    })
}

fn double_field(b: &[u8], n: u32) -> Option<f64> {
    fields(b).into_iter().find_map(|(k, f)| match f {
        F::D(v) if k == n => Some(f64::from_bits(v)),
        _ => None,
    })
}

/// The entries of a `repeated Named* n`: (name, value message).
fn named(b: &[u8], n: u32) -> Vec<(String, &[u8])> {
    msgs(b, n).into_iter().map(|e| (string(e, 1), msg(e, 2).unwrap_or_default())).collect()
}

fn entry<'a>(b: &'a [u8], n: u32, name: &str) -> &'a [u8] {
    named(b, n).into_iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no entry {name}")).1
}

/// The vendor extension `name` of `repeated NamedAny n`, its YAML parsed.
fn ext(b: &[u8], n: u32, name: &str) -> Value {
    serde_yaml::from_str(&string(entry(b, n, name), 2)).expect("YAML")
}

#[test]
fn small_document_round_trips() {
    let doc = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": {
            "/api/v1/namespaces/{namespace}/configmaps/{name}": {
                "patch": {
                    "operationId": "patchCoreV1NamespacedConfigMap",
                    "consumes": ["application/json-patch+json", "application/merge-patch+json"],
                    "parameters": [
                        { "in": "body", "name": "body", "required": true, "schema": { "$ref": "#/definitions/Patch" } },
                        { "in": "query", "name": "fieldValidation", "type": "string", "uniqueItems": true },
                    ],
                    "responses": { "200": { "description": "OK", "schema": { "$ref": "#/definitions/Cm" } } },
                    "x-kubernetes-group-version-kind": { "group": "", "kind": "ConfigMap", "version": "v1" },
                },
                "parameters": [{ "in": "path", "name": "name", "required": true, "type": "string" }],
            },
        },
        "definitions": {
            "Cm": {
                "description": "ConfigMap holds configuration data.",
                "type": "object",
                "required": ["metadata"],
                "properties": {
                    "data": { "description": "Data contains the configuration data.", "type": "object",
                              "additionalProperties": { "type": "string" } },
                    "items": { "type": "array", "items": { "$ref": "#/definitions/Patch" },
                               "x-kubernetes-patch-merge-key": "name", "x-kubernetes-list-type": "map" },
                    "port": { "type": "integer", "format": "int32", "minimum": -1.5, "maxLength": 300 },
                    "free": { "type": "object", "additionalProperties": false },
                },
                "x-kubernetes-group-version-kind": [{ "group": "", "kind": "ConfigMap", "version": "v1" }],
            },
            "Patch": { "type": "object", "properties": {} },
        },
        "securityDefinitions": { "BearerToken": { "description": "Bearer", "in": "header", "name": "authorization", "type": "apiKey" } },
        "security": [{ "BearerToken": [] }],
    });
    let pb = encode(&doc);
    assert_eq!(string(&pb, 1), "2.0");
    let info = msg(&pb, 2).unwrap();
    assert_eq!((string(info, 1), string(info, 2)), ("Kubernetes".into(), "v1.33.0".into()));

    let defs = msg(&pb, 9).unwrap();
    let names: Vec<String> = named(defs, 1).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["Cm", "Patch"]);
    let cm = entry(defs, 1, "Cm");
    assert_eq!(string(cm, 4), "ConfigMap holds configuration data.");
    assert_eq!(strs(msg(cm, 22).unwrap(), 1), ["object"]);
    assert_eq!(strs(cm, 19), ["metadata"]);
    assert_eq!(ext(cm, 31, "x-kubernetes-group-version-kind"), json!([{ "group": "", "kind": "ConfigMap", "version": "v1" }]));
    let props = msg(cm, 25).unwrap();
    let data = entry(props, 1, "data");
    assert_eq!(string(data, 4), "Data contains the configuration data.");
    let value = msg(msg(data, 21).unwrap(), 1).expect("additionalProperties schema");
    assert_eq!(strs(msg(value, 22).unwrap(), 1), ["string"]);
    let items = entry(props, 1, "items");
    assert_eq!(ext(items, 31, "x-kubernetes-patch-merge-key"), json!("name"));
    assert_eq!(ext(items, 31, "x-kubernetes-list-type"), json!("map"));
    let item = msgs(msg(items, 23).unwrap(), 1);
    assert_eq!(item.len(), 1);
    assert_eq!(string(item[0], 1), "#/definitions/Patch");
    let port = entry(props, 1, "port");
    assert_eq!((string(port, 2), double_field(port, 9), varint_field(port, 11)), ("int32".into(), Some(-1.5), Some(300)));
    let free = msg(entry(props, 1, "free"), 21).unwrap();
    assert_eq!(varint_field(free, 2), Some(0), "additionalProperties: false is written");
    // An empty `properties` is still present: kube-openapi tells kinds from maps by it.
    assert_eq!(msg(entry(defs, 1, "Patch"), 25), Some(&[][..]));

    let paths = msg(&pb, 8).unwrap();
    let item = entry(paths, 2, "/api/v1/namespaces/{namespace}/configmaps/{name}");
    let patch = msg(item, 8).expect("patch operation");
    assert_eq!(string(patch, 5), "patchCoreV1NamespacedConfigMap");
    assert_eq!(strs(patch, 7).len(), 2);
    assert_eq!(ext(patch, 13, "x-kubernetes-group-version-kind")["kind"], "ConfigMap");
    let params = msgs(patch, 8);
    let body = msg(msg(params[0], 1).unwrap(), 1).expect("body parameter");
    assert_eq!((string(body, 2), string(body, 3), varint_field(body, 4)), ("body".into(), "body".into(), Some(1)));
    assert_eq!(string(msg(body, 5).unwrap(), 1), "#/definitions/Patch");
    let query = msg(msg(msg(params[1], 1).unwrap(), 2).unwrap(), 3).expect("query parameter");
    assert_eq!((string(query, 4), string(query, 6), varint_field(query, 20)), ("fieldValidation".into(), "string".into(), Some(1)));
    let path_param = msg(msg(msg(msgs(item, 9)[0], 1).unwrap(), 2).unwrap(), 4).expect("path parameter");
    assert_eq!((string(path_param, 4), string(path_param, 5)), ("name".into(), "string".into()));
    let ok = msg(entry(msg(patch, 9).unwrap(), 1, "200"), 1).expect("response");
    assert_eq!(string(ok, 1), "OK");
    assert_eq!(string(msg(msg(ok, 2).unwrap(), 1).unwrap(), 1), "#/definitions/Cm");

    let api_key = msg(entry(msg(&pb, 13).unwrap(), 1, "BearerToken"), 2).expect("apiKey security");
    assert_eq!((string(api_key, 1), string(api_key, 2), string(api_key, 3)), ("apiKey".into(), "authorization".into(), "header".into()));
    let requirement = msgs(&pb, 12);
    assert_eq!(named(requirement[0], 1)[0].0, "BearerToken");
}

#[test]
fn served_document_round_trips() {
    let json: Value = serde_json::from_slice(v2()).unwrap();
    let pb = v2_protobuf();
    assert_eq!(string(pb, 1), "2.0");
    let defs = msg(pb, 9).unwrap();
    let names: Vec<String> = named(defs, 1).into_iter().map(|(k, _)| k).collect();
    let json_names: Vec<&String> = json["definitions"].as_object().unwrap().keys().collect();
    assert_eq!(names.iter().collect::<Vec<_>>(), json_names);

    let pod = entry(defs, 1, "io.k8s.api.core.v1.Pod");
    assert_eq!(string(pod, 4), json["definitions"]["io.k8s.api.core.v1.Pod"]["description"].as_str().unwrap());
    assert!(string(pod, 4).starts_with("Pod is a collection of containers"));
    assert_eq!(ext(pod, 31, "x-kubernetes-group-version-kind"), json!([{ "group": "", "kind": "Pod", "version": "v1" }]));
    let spec = entry(msg(pod, 25).unwrap(), 1, "spec");
    assert_eq!(string(spec, 1), "#/definitions/io.k8s.api.core.v1.PodSpec");

    let containers = entry(msg(entry(defs, 1, "io.k8s.api.core.v1.PodSpec"), 25).unwrap(), 1, "containers");
    assert_eq!(ext(containers, 31, "x-kubernetes-patch-merge-key"), json!("name"));
    assert_eq!(ext(containers, 31, "x-kubernetes-patch-strategy"), json!("merge"));

    let paths = msg(pb, 8).unwrap();
    assert_eq!(named(paths, 2).len(), json["paths"].as_object().unwrap().len());
    let cm = entry(paths, 2, "/api/v1/namespaces/{namespace}/configmaps/{name}");
    let patch = msg(cm, 8).expect("patch operation");
    assert_eq!(string(patch, 5), "patchCoreV1NamespacedConfigMap");
    let query_names: Vec<String> = msgs(patch, 8)
        .into_iter()
        .filter_map(|p| msg(msg(msg(p, 1)?, 2)?, 3))
        .map(|q| string(q, 4))
        .collect();
    assert!(query_names.iter().any(|n| n == "fieldValidation"), "{query_names:?}");
}

#[test]
fn negotiates_the_protobuf_form() {
    let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    assert!(wants_v2_protobuf(Some(pb)));
    assert!(wants_v2_protobuf(Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")));
    assert!(wants_v2_protobuf(Some(&format!("{pb}, application/json;q=0.5"))));
    assert!(wants_v2_protobuf(Some(&format!("application/json;q=0.9, {pb}"))));
    assert!(!wants_v2_protobuf(Some(&format!("application/json, {pb}"))));
    assert!(!wants_v2_protobuf(Some(&format!("{pb};q=0, application/json"))));
    assert!(!wants_v2_protobuf(Some("*/*")));
    assert!(!wants_v2_protobuf(Some("application/json")));
    assert!(!wants_v2_protobuf(None));
    assert!(wants_v2_protobuf(Some(&format!("*/*, {pb}"))), "the specific range ranks before the wildcard");
    // JSON-only callers keep the JSON form; a protobuf-only Accept is not JSON.
    assert!(accepts_json(Some("application/json")) && !accepts_json(Some(pb)));
}
