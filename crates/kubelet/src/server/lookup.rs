//! Finding a pod's sandbox and containers in the runtime by namespace and
//! name, with upstream's error messages when they are not there.

use http::StatusCode;
use runtime::cri::{ContainerState, ContainerStatus, PodSandboxStatus, RuntimeService, SandboxState};

/// An error answered to the caller as plain text with a status code, as the
/// kubelet does; the API server turns it into a Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(e: anyhow::Error) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

/// The pod's sandboxes, the Ready one first, then newest first.
async fn sandboxes(rt: &dyn RuntimeService, ns: &str, pod: &str) -> Result<Vec<PodSandboxStatus>, HttpError> {
    let mut all: Vec<PodSandboxStatus> =
        rt.list_pod_sandboxes().await.map_err(HttpError::internal)?.into_iter().filter(|s| s.namespace == ns && s.name == pod).collect();
    all.sort_by(|a, b| (b.state == SandboxState::Ready).cmp(&(a.state == SandboxState::Ready)).then(b.created_at.cmp(&a.created_at)));
    Ok(all)
}

/// The pod's Ready sandbox (port-forward needs its network namespace).
pub async fn ready_sandbox(rt: &dyn RuntimeService, ns: &str, pod: &str) -> Result<PodSandboxStatus, HttpError> {
    sandboxes(rt, ns, pod)
        .await?
        .into_iter()
        .find(|s| s.state == SandboxState::Ready)
        .ok_or_else(|| HttpError::not_found(format!("pod \"{pod}\" in namespace \"{ns}\" is not running on this node")))
}

/// The container named `name` of the pod: the current one (highest attempt
/// in the newest sandbox), or with `previous` the one before it.
pub async fn container(rt: &dyn RuntimeService, ns: &str, pod: &str, name: &str, previous: bool) -> Result<ContainerStatus, HttpError> {
    let sandboxes = sandboxes(rt, ns, pod).await?;
    if sandboxes.is_empty() {
        return Err(HttpError::not_found(format!("pod \"{pod}\" in namespace \"{ns}\" not found on this node")));
    }
    let mut found = Vec::new();
    for (rank, sandbox) in sandboxes.iter().enumerate() {
        let containers = rt.list_containers(Some(&sandbox.id)).await.map_err(HttpError::internal)?;
        found.extend(containers.into_iter().filter(|c| c.name == name).map(|c| (rank, c)));
    }
    // Newest sandbox first, then highest attempt, then newest.
    found.sort_by(|(ra, a), (rb, b)| ra.cmp(rb).then(b.attempt.cmp(&a.attempt)).then(b.created_at.cmp(&a.created_at)));
    let mut found = found.into_iter().map(|(_, c)| c);
    if previous {
        found.next();
        return found.next().ok_or_else(|| HttpError::bad_request(format!("previous terminated container \"{name}\" in pod \"{pod}\" not found")));
    }
    found.next().ok_or_else(|| HttpError::bad_request(format!("container \"{name}\" in pod \"{pod}\" is waiting to start: ContainerCreating")))
}

/// The running container, for exec and attach.
pub async fn running_container(rt: &dyn RuntimeService, ns: &str, pod: &str, name: &str) -> Result<ContainerStatus, HttpError> {
    let c = container(rt, ns, pod, name, false).await?;
    if c.state != ContainerState::Running {
        return Err(HttpError::bad_request(format!("container \"{name}\" in pod \"{pod}\" is not running (state: {:?})", c.state)));
    }
    Ok(c)
}
