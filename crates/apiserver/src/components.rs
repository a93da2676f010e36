//! `componentstatuses`, what `kubectl get componentstatuses` reads. Upstream
//! deprecated it (it probes fixed local ports) but still answers it. Here the
//! scheduler and the controller manager run in the API server's process, so
//! they answer whenever it does; the datastore is probed with a real read.

use axum::response::Response;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::registry::Registry;
use crate::request::{negotiate, Query, ResourceRequest, Verb};
use crate::respond::{self, IncludeObject};

const DEPRECATED: &str = "v1 ComponentStatus is deprecated in v1.19+";

pub async fn handle(reg: &Registry, r: &ResourceRequest, q: &Query, headers: &http::HeaderMap) -> ApiResult<Response> {
    let fmt = negotiate(headers)?;
    let items = statuses(reg).await;
    let warnings = [DEPRECATED.to_string()];
    match (r.verb, r.name.as_deref()) {
        (Verb::Get, Some(name)) => {
            let item = items.into_iter().find(|c| c["metadata"]["name"] == name).ok_or_else(|| ApiError::not_found(r.info, name))?;
            respond::object(fmt, r.info, q, &item, 200, &warnings)
        }
        (Verb::List, None) => {
            let list = if fmt == crate::request::Format::Table {
                let refs: Vec<&Value> = items.iter().collect();
                respond::table(r.info, &refs, IncludeObject::from_query(q)?, true, json!({}))
            } else {
                json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items})
            };
            Ok(respond::json_response(200, respond::json_line(&list), &warnings))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn statuses(reg: &Registry) -> Vec<Value> {
    let store = match reg.store.get("/registry/namespaces/default").await {
        Ok(_) => Ok("ok".to_string()),
        Err(e) => Err(e.to_string()),
    };
    [("scheduler", Ok("ok".to_string())), ("controller-manager", Ok("ok".to_string())), ("etcd-0", store)]
        .into_iter()
        .map(|(name, health)| {
            let condition = match health {
                Ok(message) => json!({"type": "Healthy", "status": "True", "message": message}),
                Err(error) => json!({"type": "Healthy", "status": "False", "error": error}),
            };
            json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name, "creationTimestamp": null}, "conditions": [condition]})
        })
        .collect()
}
