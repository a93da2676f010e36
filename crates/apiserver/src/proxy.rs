//! Pod subresources served by the pod's node agent: `log` (streamed
//! through), `exec`, `attach` and `portforward` (upgraded connections
//! spliced both ways). The pod, its node and container are checked here
//! with upstream's messages; the agent does the rest.

pub(crate) mod agent;
pub mod forward;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::Method;
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::App;

/// Where the agent listens when the Node doesn't say (upstream's default).
const DEFAULT_AGENT_PORT: u16 = 10250;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Log,
    Exec,
    Attach,
    PortForward,
}

/// A request for a proxied pod subresource.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    namespace: String,
    pod: String,
    sub: Subresource,
}

impl Target {
    /// The metrics verb, as upstream labels these requests.
    pub fn verb(&self) -> &'static str {
        if self.sub == Subresource::Log { "GET" } else { "CONNECT" }
    }
}

/// Recognizes `/api/v1/namespaces/{ns}/pods/{name}/{log|exec|attach|portforward}`.
pub fn target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", pod, sub] = segs.as_slice() else { return None };
    let sub = match *sub {
        "log" => Subresource::Log,
        "exec" => Subresource::Exec,
        "attach" => Subresource::Attach,
        "portforward" => Subresource::PortForward,
        _ => return None,
    };
    Some(Target { namespace: ns.to_string(), pod: pod.to_string(), sub })
}

pub async fn handle(app: &Arc<App>, target: Target, req: Request) -> Response {
    match route(app, &target, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(app: &Arc<App>, t: &Target, req: Request) -> ApiResult<Response> {
    let allowed = match t.sub {
        Subresource::Log => req.method() == Method::GET,
        _ => req.method() == Method::GET || req.method() == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    let pods = resources::catalog::lookup("", "v1", "pods").expect("pods are in the catalog");
    let pod = app.registry.get(pods, Some(&t.namespace), &t.pod).await?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!("pod {} does not have a host assigned", t.pod)));
    }
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let (ns, name) = (&t.namespace, &t.pod);
    let path = match t.sub {
        Subresource::PortForward => format!("/portForward/{ns}/{name}"),
        sub => {
            let asked = query.iter().rev().find(|(k, _)| k == "container").map(|(_, v)| v.as_str());
            let container = pick_container(&pod, asked)?;
            let previous = crate::request::is_true(query.iter().rev().find(|(k, _)| k == "previous").map(|(_, v)| v));
            check_container_state(&pod, &container, sub, previous)?;
            let verb = match sub {
                Subresource::Log => "containerLogs",
                Subresource::Exec => "exec",
                _ => "attach",
            };
            format!("/{verb}/{ns}/{name}/{container}")
        }
    };
    let query = match t.sub {
        Subresource::PortForward => port_forward_query(&query)?,
        _ => query,
    };
    let rest: Vec<&(String, String)> = query.iter().filter(|(k, _)| k != "container").collect();
    let path = if rest.is_empty() {
        path
    } else {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in rest {
            q.append_pair(k, v);
        }
        format!("{path}?{}", q.finish())
    };
    let nodes = resources::catalog::lookup("", "v1", "nodes").expect("nodes are in the catalog");
    let node = app.registry.get(nodes, None, node_name).await?;
    let (host, port) = agent_address(&node).ok_or_else(|| ApiError::internal(format!("node {node_name} has no address to reach its agent at")))?;
    let tls = agent_tls(app)?;
    let conn = agent::Agent { host, port, tls };
    if t.sub == Subresource::Log {
        conn.stream(&path).await
    } else {
        conn.upgrade(&path, req).await
    }
}

/// The agent's query for a port-forward, as upstream's `PortForwardLocation`
/// builds it: the `ports` asked for (repeated, or one comma-separated
/// value) become a single `port` list.
fn port_forward_query(query: &[(String, String)]) -> ApiResult<Vec<(String, String)>> {
    let mut ports = Vec::new();
    for (_, value) in query.iter().filter(|(k, _)| k == "ports") {
        for p in value.split(',') {
            let port: i32 = p.trim().parse().map_err(|_| ApiError::bad_request(format!("invalid port {p:?} in ports={value:?}")))?;
            ports.push(port.to_string());
        }
    }
    Ok(if ports.is_empty() { vec![] } else { vec![("port".to_string(), ports.join(","))] })
}

/// The TLS client configuration node agents are dialed with.
fn agent_tls(app: &App) -> ApiResult<Arc<rustls::ClientConfig>> {
    app.kubelet_tls.get().cloned().ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "this API server has no client certificate for node agents"))
}

/// The agent's address: the node's InternalIP, else its Hostname, and the
/// port from `status.daemonEndpoints.kubeletEndpoint`.
pub(crate) fn agent_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let of = |kind: &str| addresses.iter().find(|a| a["type"] == kind).and_then(|a| a["address"].as_str()).filter(|a| !a.is_empty());
    let host = of("InternalIP").or_else(|| of("Hostname"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0);
    Some((host.to_string(), port.unwrap_or(DEFAULT_AGENT_PORT)))
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field].as_array().map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect()).unwrap_or_default()
}

/// The container asked for, or the pod's only container.
fn pick_container(pod: &Value, asked: Option<&str>) -> ApiResult<String> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let containers = names(pod, "containers");
    let Some(asked) = asked.filter(|a| !a.is_empty()) else {
        if containers.len() == 1 {
            return Ok(containers[0].clone());
        }
        let init = names(pod, "initContainers");
        let mut msg = format!("a container name must be specified for pod {pod_name}, choose one of: [{}]", containers.join(" "));
        if !init.is_empty() {
            msg.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
        }
        return Err(ApiError::bad_request(msg));
    };
    let known = containers.iter().chain(&names(pod, "initContainers")).chain(&names(pod, "ephemeralContainers")).any(|c| c == asked);
    if !known {
        return Err(ApiError::bad_request(format!("container {asked} is not valid for pod {pod_name}")));
    }
    Ok(asked.to_string())
}

/// Upstream's refusals that the pod's status already decides.
fn check_container_state(pod: &Value, container: &str, sub: Subresource, previous: bool) -> ApiResult<()> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if sub != Subresource::Log && matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!("cannot exec into a container in a completed pod; current phase is {phase}")));
    }
    if sub != Subresource::Log {
        return Ok(());
    }
    let status = ["containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"]
        .iter()
        .filter_map(|f| pod["status"][f].as_array())
        .flatten()
        .find(|s| s["name"] == container);
    let Some(status) = status else { return Ok(()) };
    if previous {
        if status["lastState"]["terminated"].is_object() {
            return Ok(());
        }
        return Err(ApiError::bad_request(format!("previous terminated container \"{container}\" in pod \"{pod_name}\" not found")));
    }
    let waiting = &status["state"]["waiting"];
    // A container that never ran has nothing to show; one that restarts shows its last run.
    if waiting.is_object() && !status["lastState"]["terminated"].is_object() {
        let reason = waiting["reason"].as_str().unwrap_or("ContainerCreating");
        return Err(ApiError::bad_request(format!("container \"{container}\" in pod \"{pod_name}\" is waiting to start: {reason}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recognizes_only_streamed_subresources() {
        let t = target("/api/v1/namespaces/ns/pods/p/exec").unwrap();
        assert_eq!((t.namespace.as_str(), t.pod.as_str(), t.sub, t.verb()), ("ns", "p", Subresource::Exec, "CONNECT"));
        assert_eq!(target("/api/v1/namespaces/ns/pods/p/log").unwrap().verb(), "GET");
        assert_eq!(target("/api/v1/namespaces/ns/pods/p/portforward").unwrap().sub, Subresource::PortForward);
        assert!(target("/api/v1/namespaces/ns/pods/p/status").is_none());
        assert!(target("/api/v1/namespaces/ns/pods/p").is_none());
        assert!(target("/apis/apps/v1/namespaces/ns/pods/p/log").is_none());
    }

    #[test]
    fn port_forward_ports_reach_the_agent_as_upstream_sends_them() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(port_forward_query(&q(&[("ports", "80,1234")])).unwrap(), q(&[("port", "80,1234")]));
        assert_eq!(port_forward_query(&q(&[("ports", "80"), ("ports", "81"), ("other", "x")])).unwrap(), q(&[("port", "80,81")]));
        assert_eq!(port_forward_query(&[]).unwrap(), vec![]);
        assert_eq!(port_forward_query(&q(&[("ports", "http")])).unwrap_err().code, 400);
    }

    #[test]
    fn container_choice_and_messages() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            pick_container(&pod, None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&pod, Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&pod, Some("i")).unwrap(), "i");
        assert_eq!(pick_container(&pod, Some("z")).unwrap_err().message, "container z is not valid for pod p");
        let single = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&single, None).unwrap(), "only");
    }

    #[test]
    fn waiting_and_previous_come_from_the_pod_status() {
        let pod = |state: Value, last: Value| {
            json!({"metadata": {"name": "p"}, "status": {"phase": "Pending", "containerStatuses": [{"name": "c", "state": state, "lastState": last}]}})
        };
        let creating = pod(json!({"waiting": {"reason": "ContainerCreating"}}), json!({}));
        let e = check_container_state(&creating, "c", Subresource::Log, false).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"));
        let e = check_container_state(&creating, "c", Subresource::Log, true).unwrap_err();
        assert_eq!(e.message, "previous terminated container \"c\" in pod \"p\" not found");
        let crashing = pod(json!({"waiting": {"reason": "CrashLoopBackOff"}}), json!({"terminated": {"exitCode": 1}}));
        check_container_state(&crashing, "c", Subresource::Log, false).unwrap();
        check_container_state(&crashing, "c", Subresource::Log, true).unwrap();
        let done = json!({"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}});
        assert_eq!(
            check_container_state(&done, "c", Subresource::Exec, false).unwrap_err().message,
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
    }

    #[test]
    fn agent_address_prefers_internal_ip_and_the_advertised_port() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
                                      "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(agent_address(&node), Some(("10.0.0.5".to_string(), 10251)));
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(agent_address(&node), Some(("n1".to_string(), DEFAULT_AGENT_PORT)));
        assert_eq!(agent_address(&json!({})), None);
    }
}
