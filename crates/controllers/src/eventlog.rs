//! Recording core/v1 Events the way upstream's event recorder does, for the
//! housekeeping controllers.

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

/// Records an event about `about`; failures are logged, never fatal.
pub async fn record(client: &Client, component: &str, about: ObjectReference, type_: &str, reason: &str, message: String) {
    let ns = about.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let now = Utc::now();
    let name = format!("{}.{:x}", about.name.as_deref().unwrap_or("object"), now.timestamp_nanos_opt().unwrap_or(0));
    let event = Event {
        metadata: ObjectMeta { name: Some(name), namespace: Some(ns.clone()), ..Default::default() },
        involved_object: about,
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        ..Default::default()
    };
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns).create(&PostParams::default(), &event).await {
        tracing::debug!(reason, "recording event: {e}");
    }
}
