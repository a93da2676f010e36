//! API errors, answered as meta/v1 Status bodies with upstream's reasons,
//! codes and message forms.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use resources::catalog::ResourceInfo;
use resources::validation::FieldError;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `pods` for core kinds, `deployments.apps` for the others: how upstream names
/// a resource in messages.
pub fn qualified(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.to_string()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

pub(crate) fn name_details(info: &ResourceInfo, name: &str) -> Value {
    if info.group.is_empty() {
        // Go's omitempty: core kinds carry no group.
        json!({"name": name, "kind": info.plural})
    } else {
        json!({"name": name, "group": info.group, "kind": info.plural})
    }
}

/// Invalid's details name the kind (not the plural); no group for core kinds, as Go's omitempty.
fn kind_details(group: &str, kind: &str, name: &str, causes: Vec<Value>) -> Value {
    let mut details = json!({"name": name, "group": group, "kind": kind, "causes": causes});
    if group.is_empty() {
        // shift_remove keeps upstream's field order (remove would move causes up).
        details.as_object_mut().expect("an object").shift_remove("group");
    }
    details
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        ApiError {
            details: Some(name_details(info, name)),
            ..Self::new(404, "NotFound", format!("{} \"{}\" not found", qualified(info), name))
        }
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        ApiError {
            details: Some(json!({"name": ns, "kind": "namespaces"})),
            ..Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
        }
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        ApiError {
            details: Some(name_details(info, name)),
            ..Self::new(409, "AlreadyExists", format!("{} \"{}\" already exists", qualified(info), name))
        }
    }

    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        ApiError {
            details: Some(name_details(info, name)),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{}\": {}", qualified(info), name, why),
            )
        }
    }

    pub fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(info: &ResourceInfo, name: &str, errs: &[FieldError]) -> Self {
        Self::invalid_kind(info.group, info.kind, name, errs)
    }

    /// Invalid for any kind, also request options (`ListOptions.meta.k8s.io`).
    pub fn invalid_kind(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        ApiError {
            details: Some(kind_details(group, kind, name, causes)),
            ..Self::new(422, "Invalid", resources::validation::invalid_message_for(group, kind, name, errs))
        }
    }

    pub fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> Self {
        let what = if name.is_empty() {
            qualified(info)
        } else {
            format!("{} \"{}\"", qualified(info), name)
        };
        ApiError {
            details: Some(name_details(info, name)),
            ..Self::new(403, "Forbidden", format!("{what} is forbidden: {why}"))
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_old(requested: i64, oldest: i64) -> Self {
        Self::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }

    pub fn not_acceptable(accepted: &str) -> Self {
        Self::new(406, "NotAcceptable", format!("only the following media types are accepted: {accepted}"))
    }

    pub fn unsupported_media_type(accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
        )
    }

    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    pub fn status_body(&self) -> Value {
        // metav1.Status's field order.
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s["code"] = json!(self.code);
        s
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Compacted { requested, compacted } => ApiError::too_old(requested, compacted),
            store::Error::FutureRevision { requested, current } => ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current resource version: {current}"),
            ),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = crate::respond::json_line(&self.status_body());
        (code, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_keep_metav1_status_field_order_and_end_with_a_newline() {
        let info = resources::catalog::lookup("", "v1", "configmaps").unwrap();
        let body = ApiError::not_found(info, "x").status_body();
        let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]);
        let resp = ApiError::bad_request("no").into_response();
        assert_eq!(resp.status(), 400);
        let bytes = futures_body(resp);
        assert!(bytes.ends_with(b"}\n"), "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn invalid_details_carry_a_group_only_outside_the_core_group() {
        let errs = [resources::validation::FieldError::required("metadata.name", "name or generateName is required")];
        let cm = resources::catalog::lookup("", "v1", "configmaps").unwrap();
        let details = ApiError::invalid(cm, "x", &errs).details.unwrap();
        assert_eq!(details.as_object().unwrap().keys().collect::<Vec<_>>(), ["name", "kind", "causes"]);
        assert_eq!(details["kind"], "ConfigMap");
        let deploy = resources::catalog::lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(ApiError::invalid(deploy, "x", &errs).details.unwrap()["group"], "apps");
    }

    fn futures_body(resp: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async { axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec() })
    }
}
