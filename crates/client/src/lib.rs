//! What every API client shares (controllers, scheduler, node agent, CLI):
//! kubeconfig and in-process clients, reflector caches and shared watches,
//! leader election, and the event recorder with upstream's correlation.

pub mod eventlog;
pub mod informer;
pub mod kubeconfig;
pub mod leader;

/// A kube client that calls the API server's router directly: the same
/// semantics as over the network, without TCP or TLS.
pub fn in_process(router: axum::Router) -> kube::Client {
    use tower::ServiceExt;
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let router = router.clone();
        async move { router.oneshot(req.map(axum::body::Body::new)).await }
    });
    kube::Client::new(service, "default")
}
