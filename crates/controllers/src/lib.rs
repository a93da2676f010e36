//! The controllers that run in `skiff server` (or `skiff controller-manager`).
//! Each is an API client: it watches and writes through a `kube::Client`,
//! never the store. In the server process that client calls the API
//! server's router in-process.

pub mod leader;
mod per_namespace;
mod rootca;
mod serviceaccount;

use kube::Client;

/// What the controllers need to know beyond the API.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cluster CA certificate (PEM), published in every namespace as `kube-root-ca.crt`.
    pub ca_pem: String,
}

/// Runs every controller while this process holds the controller-manager lease.
pub async fn run(client: Client, identity: String, options: Options) {
    leader::run_as_leader(client.clone(), "kube-controller-manager", &identity, || {
        let (client, options) = (client.clone(), options.clone());
        async move {
            tokio::join!(serviceaccount::run(client.clone()), rootca::run(client, options.ca_pem));
        }
    })
    .await
}
