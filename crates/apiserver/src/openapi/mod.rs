//! The OpenAPI documents: `/openapi/v3` (an index of one document per
//! group/version), `/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`
//! and `/openapi/v2` (everything in one Swagger 2.0 document).
//!
//! kubectl reads them for three things: whether the server validates
//! fields itself (a `fieldValidation` query parameter on the PATCH
//! operation of the kind: then kubectl leaves validation to the server),
//! the patch metadata of client-side `kubectl apply` (the
//! `x-kubernetes-patch-*` extensions of the kind's schema, found through
//! its `x-kubernetes-group-version-kind`) and `kubectl explain`.
//!
//! The documents are built on first use and kept; they are large
//! (core/v1 is about a megabyte).

mod paths;
mod schemas;
mod v2proto;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use resources::catalog::{ResourceInfo, CATALOG};
use serde_json::{json, Map, Value};

use paths::Flavor;
use schemas::Schemas;

/// The version the documents' `info` reports.
const INFO_VERSION: &str = "v1.33.0";

struct V3 {
    index: Vec<u8>,
    /// "api/v1", "apis/apps/v1", ... → (document, hash).
    docs: BTreeMap<String, (Vec<u8>, String)>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(schemas::build)
}

fn v3_built() -> &'static V3 {
    static V3_DOCS: OnceLock<V3> = OnceLock::new();
    V3_DOCS.get_or_init(build_v3)
}

/// `GET /openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=..."}, ...}}`.
pub fn v3_index() -> &'static [u8] {
    &v3_built().index
}

/// `GET /openapi/v3/<path>` for `path` "api/v1" or "apis/GROUP/VERSION"
/// (without the leading slash or the query): the OpenAPI 3.0 JSON document
/// of that group/version, or None when it is not served.
pub fn v3_group_version(path: &str) -> Option<&'static [u8]> {
    let path = path.trim_matches('/');
    v3_built().docs.get(path).map(|(doc, _)| doc.as_slice())
}


/// `GET /openapi/v2`: the Swagger 2.0 JSON document of every group/version.
pub fn v2() -> &'static [u8] {
    static V2_DOC: OnceLock<Vec<u8>> = OnceLock::new();
    V2_DOC.get_or_init(build_v2)
}

/// The Content-Type of the protobuf form of `/openapi/v2` (the dotted
/// spelling, as kube-openapi answers: client-go cannot parse the `@` one).
pub const V2_PROTOBUF_CONTENT_TYPE: &str = v2proto::CONTENT_TYPE;

/// `GET /openapi/v2` with `Accept:
/// application/com.github.proto-openapi.spec.v2@v1.0+protobuf`: the same
/// document as gnostic's `openapi.v2.Document` protobuf, which client-go's
/// `DiscoveryClient.OpenAPISchema()` reads (kubectl's client-side validation,
/// `kubectl explain --output=plaintext-openapiv2`).
pub fn v2_protobuf() -> &'static [u8] {
    static V2_PB: OnceLock<Vec<u8>> = OnceLock::new();
    V2_PB.get_or_init(|| v2proto::encode(&serde_json::from_slice(v2()).expect("valid JSON")))
}

/// The schema of the kind `group`/`version`/`kind` (canonical form: `$ref`s
/// point at `#/components/schemas/NAME`), or None when none is known. The
/// strategic merge patch walks it for the `x-kubernetes-patch-*` facts.
pub fn kind_schema(group: &str, version: &str, kind: &str) -> Option<&'static Value> {
    let s = schemas();
    let name = match CATALOG.iter().find(|r| r.group == group && r.version == version && r.kind == kind) {
        Some(r) => s.kind_def(r).to_string(),
        None => {
            let want = json!({ "group": group, "kind": kind, "version": version });
            let has = |d: &Value| d["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(&want));
            s.defs.iter().find(|(_, d)| has(d))?.0.clone()
        }
    };
    s.defs.get(&name)
}

/// The definition a `$ref` (`#/components/schemas/NAME`, `#/definitions/NAME`)
/// or a bare definition name points at.
pub fn definition(reference: &str) -> Option<&'static Value> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    schemas().defs.get(name)
}

/// Whether an Accept header admits the JSON form of the documents. None or
/// an empty header admits it; a header listing only other types does not,
/// and the server answers 406 Not Acceptable (as upstream does). For
/// `/openapi/v2` ask [`wants_v2_protobuf`] first: a header listing only the
/// protobuf type gets the protobuf form there.
pub fn accepts_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else { return true };
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        !refused && matches!(media.as_str(), "*/*" | "application/*" | "application/json")
    })
}

/// Whether an Accept header asks `/openapi/v2` for its protobuf form
/// (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, or the
/// deprecated `...spec.v2.v1.0+protobuf`). Negotiated as upstream
/// (goautoneg over [JSON, protobuf]): media ranges by q (q=0 refused), then
/// by specificity, then in header order; the first that matches either form
/// picks it, JSON winning wildcards.
pub fn wants_v2_protobuf(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut ranges: Vec<(f32, u8, String)> = accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")).map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
                })
                .unwrap_or(1.0);
            let specificity = match media.as_str() {
                "*/*" => 0,
                m if m.ends_with("/*") => 1,
                _ => 2,
            };
            (!media.is_empty() && q > 0.0).then_some((q, specificity, media))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    for (_, _, media) in ranges {
        if v2proto::MEDIA_TYPES.contains(&media.as_str()) {
            return true;
        }
        if matches!(media.as_str(), "*/*" | "application/*" | "application/json") {
            return false;
        }
    }
    false
}

/// The index key of a group/version: "api/v1" or "apis/GROUP/VERSION".
fn gv_key(group: &str, version: &str) -> String {
    paths::gv_prefix(group, version).trim_start_matches('/').to_string()
}

/// The served group/versions, in catalog order, each with its entries.
fn group_versions() -> Vec<((&'static str, &'static str), Vec<&'static ResourceInfo>)> {
    let mut out: Vec<((&'static str, &'static str), Vec<&'static ResourceInfo>)> = Vec::new();
    for r in CATALOG {
        match out.iter_mut().find(|(gv, _)| *gv == (r.group, r.version)) {
            Some((_, kinds)) => kinds.push(r),
            None => out.push(((r.group, r.version), vec![r])),
        }
    }
    out
}

/// The definitions a group/version's paths need.
fn roots(schemas: &Schemas, kinds: &[&ResourceInfo]) -> Vec<String> {
    let mut roots: Vec<String> = [schemas::STATUS, schemas::DELETE_OPTIONS, schemas::PATCH, schemas::API_RESOURCE_LIST]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in kinds {
        roots.push(schemas.kind_def(r).to_string());
        roots.push(schemas.list_def(r));
        if r.scale.is_some() {
            roots.push(schemas::SCALE.to_string());
        }
    }
    roots
}

fn sorted_paths(paths: Vec<(String, Value)>) -> Map<String, Value> {
    let sorted: BTreeMap<String, Value> = paths.into_iter().collect();
    sorted.into_iter().collect()
}

fn security_scheme() -> Value {
    json!({ "description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey" })
}

fn build_v3_doc(group: &str, version: &str, kinds: &[&ResourceInfo]) -> Value {
    let s = schemas();
    let paths = paths::group_version_paths(group, version, kinds, s, Flavor::V3);
    let roots = roots(s, kinds);
    let defs: Map<String, Value> =
        s.closure(roots.iter().map(String::as_str)).iter().map(|(k, v)| (k.clone(), schemas::to_v3(v))).collect();
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": INFO_VERSION },
        "paths": sorted_paths(paths),
        "components": {
            "schemas": defs,
            "securitySchemes": { "BearerToken": security_scheme() },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn build_v3() -> V3 {
    let mut docs = BTreeMap::new();
    let mut index = Map::new();
    for ((group, version), kinds) in group_versions() {
        let doc = serde_json::to_vec(&build_v3_doc(group, version, &kinds)).expect("serializable");
        let hash = hash_hex(&doc);
        let key = gv_key(group, version);
        index.insert(key.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}") }));
        docs.insert(key, (doc, hash));
    }
    let index = serde_json::to_vec(&json!({ "paths": index })).expect("serializable");
    V3 { index, docs }
}

fn build_v2() -> Vec<u8> {
    let s = schemas();
    let mut paths = Vec::new();
    let mut roots_all = Vec::new();
    for ((group, version), kinds) in group_versions() {
        paths.extend(paths::group_version_paths(group, version, &kinds, s, Flavor::V2));
        roots_all.extend(roots(s, &kinds));
    }
    let defs: Map<String, Value> =
        s.closure(roots_all.iter().map(String::as_str)).iter().map(|(k, v)| (k.clone(), schemas::to_v2(v))).collect();
    let doc = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": INFO_VERSION },
        "paths": sorted_paths(paths),
        "definitions": defs,
        "securityDefinitions": { "BearerToken": security_scheme() },
        "security": [{ "BearerToken": [] }],
    });
    serde_json::to_vec(&doc).expect("serializable")
}

/// A 128-bit FNV-1a hash of a document, in upper-case hex: stable across
/// builds and runs, so clients' caches keyed by it stay valid.
fn hash_hex(data: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let h = data.iter().fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME));
    format!("{h:032X}")
}

#[cfg(test)]
mod tests;

/// The `?hash=` of a group/version document.
#[cfg(test)]
pub fn v3_hash(path: &str) -> Option<&'static str> {
    let path = path.trim_matches('/');
    v3_built().docs.get(path).map(|(_, hash)| hash.as_str())
}

/// Follows `$ref`s (and one-element `allOf`s) to the schema they name.
pub fn resolve(mut v: &'static Value) -> Option<&'static Value> {
    for _ in 0..32 {
        if let Some(r) = v.get("$ref").and_then(Value::as_str) {
            v = definition(r)?;
        } else if let Some([only]) = v.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            v = only;
        } else {
            return Some(v);
        }
    }
    None
}
