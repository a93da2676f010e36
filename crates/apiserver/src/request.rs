//! Turning an HTTP request into what it asks for: the resource, the verb,
//! the query options and the response format.

use std::collections::HashMap;

use http::{HeaderMap, Method};
use resources::catalog::{self, ResourceInfo};

use crate::errors::{ApiError, ApiResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// The verb as upstream's request metrics label it.
    pub fn metric_label(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::List => "LIST",
            Verb::Watch => "WATCH",
            Verb::Create => "POST",
            Verb::Update => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete | Verb::DeleteCollection => "DELETE",
        }
    }
}

/// A request for a resource: `/api/v1/namespaces/ns/pods/name/status` etc.
pub struct ResourceRequest {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
}

/// What a path under /api or /apis names.
pub enum ApiPath {
    /// `/api/v1`, `/apis/apps/v1`: the resource list of a group/version.
    GroupVersion { group: String, version: String },
    /// `/apis/apps`: a group.
    Group(String),
    Resource(ResourceRequest),
}

/// A boolean query parameter as upstream converts one: present and not
/// `0` or `false` (any case) is true, so the Python client's `watch=True` is.
pub fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

pub fn parse_path(method: &Method, path: &str, query: &Query) -> ApiResult<Option<ApiPath>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g] => return Ok(Some(ApiPath::Group(g.to_string()))),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(Some(ApiPath::GroupVersion { group: group.into(), version: version.into() }));
    }
    // The deprecated `/watch/` prefix means the same as `?watch=true`.
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..] => {
            // `/namespaces/NAME/status` and `/namespaces/NAME/finalize` are the namespace's own subresources.
            let info = catalog::lookup(group, version, plural);
            if group.is_empty() && (info.is_none() || !info.unwrap().namespaced) && tail.is_empty() {
                (None, rest)
            } else {
                (Some(ns.to_string()), &rest[2..])
            }
        }
        _ => (None, rest),
    };
    let plural = rest[0];
    let Some(info) = catalog::lookup(group, version, plural) else { return Ok(None) };
    if namespace.is_some() && !info.namespaced {
        return Ok(None);
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Ok(None);
    }
    let watch = legacy_watch || is_true(query.get("watch"));
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", false) if watch => Verb::Watch,
        ("GET", true) if watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("GET", true) => Verb::Get,
        ("POST", false) => Verb::Create,
        // POST to an object names a subresource that creates something: pods/binding, pods/eviction.
        ("POST", true) if subresource.is_some() => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(Some(ApiPath::Resource(ResourceRequest { info, namespace, name, subresource, verb })))
}

/// Query parameters (last value wins, as in Go's url.Values.Get for our purposes).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            m.insert(k.into_owned(), v.into_owned());
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&String> {
        self.0.get(k).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        is_true(self.0.get(k))
    }

    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.0.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other}: supported values: \"All\""
            ))),
        }
    }

    pub fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.0.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}, supported values: Ignore, Warn, Strict"
            ))),
        }
    }

    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}: not an integer"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// The response form the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Table,
    /// PartialObjectMetadata(List).
    Metadata,
}

pub const ACCEPTED: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// Picks the first acceptable media type, like upstream's negotiation.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Format> {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("");
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        let json_like = matches!(mime, "application/json" | "application/*" | "*/*");
        match params.get("as") {
            Some(&"Table") if json_like && params.get("g") == Some(&"meta.k8s.io") => {
                if matches!(params.get("v"), Some(&"v1") | Some(&"v1beta1")) {
                    return Ok(Format::Table);
                }
            }
            Some(&"PartialObjectMetadata") | Some(&"PartialObjectMetadataList")
                if json_like && params.get("g") == Some(&"meta.k8s.io") =>
            {
                return Ok(Format::Metadata);
            }
            Some(_) => {}
            None if json_like => return Ok(Format::Json),
            None if mime == "application/yaml" => return Ok(Format::Yaml),
            None => {}
        }
    }
    Err(ApiError::not_acceptable(ACCEPTED))
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> ResourceRequest {
        match parse_path(&method, path, &Query::default()).unwrap().unwrap() {
            ApiPath::Resource(r) => r,
            _ => panic!("not a resource path"),
        }
    }

    #[test]
    fn paths() {
        let r = parse(Method::GET, "/api/v1/namespaces/default/pods/web/status");
        assert_eq!((r.info.plural, r.namespace.as_deref(), r.name.as_deref()), ("pods", Some("default"), Some("web")));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = parse(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!((r.info.plural, r.namespace, r.name.as_deref(), r.verb), ("namespaces", None, Some("kube-system"), Verb::Get));
        let r = parse(Method::PUT, "/api/v1/namespaces/x/finalize");
        assert_eq!((r.info.plural, r.subresource.as_deref()), ("namespaces", Some("finalize")));
        let r = parse(Method::GET, "/apis/apps/v1/deployments");
        assert_eq!((r.info.kind, r.verb), ("Deployment", Verb::List));
        let r = parse(Method::GET, "/api/v1/watch/namespaces/a/pods");
        assert_eq!(r.verb, Verb::Watch);
        let r = parse(Method::DELETE, "/api/v1/namespaces/a/configmaps");
        assert_eq!(r.verb, Verb::DeleteCollection);
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json".parse().unwrap());
        assert_eq!(negotiate(&h).unwrap(), Format::Table);
        h.insert("accept", "application/vnd.kubernetes.protobuf".parse().unwrap());
        assert_eq!(negotiate(&h).unwrap_err().code, 406);
        h.insert("accept", "application/vnd.kubernetes.protobuf, */*".parse().unwrap());
        assert_eq!(negotiate(&h).unwrap(), Format::Json);
    }
}
