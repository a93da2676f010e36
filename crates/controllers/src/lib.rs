//! The controllers that run in `skiff server` (or `skiff controller-manager`).
//! Each is an API client: it watches and writes through a `kube::Client`,
//! never the store. In the server process that client calls the API
//! server's router in-process.

mod deployment;
mod deployment_rollout;
mod gc;
mod disruption;
pub mod endpoints;
mod eventlog;
mod informer;
pub mod leader;
pub mod nodeipam;
pub mod nodelifecycle;
mod podgc;
mod per_namespace;
mod replicaset;
mod rootca;
mod serviceaccount;
mod workload;

use kube::Client;

/// What the controllers need to know beyond the API.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cluster CA certificate (PEM), published in every namespace as `kube-root-ca.crt`.
    pub ca_pem: String,
    /// The range node pod CIDRs (/24 each) are allocated from; empty means "10.42.0.0/16".
    pub cluster_cidr: String,
}

/// Runs every controller while this process holds the controller-manager lease.
pub async fn run(client: Client, identity: String, options: Options) {
    leader::run_as_leader(client.clone(), "kube-controller-manager", &identity, || {
        let (client, options) = (client.clone(), options.clone());
        async move {
            tokio::join!(
                housekeeping(client.clone(), options.cluster_cidr.clone()),
                workloads(client.clone()),
                serviceaccount::run(client.clone()), rootca::run(client.clone(), options.ca_pem), gc::run(client));
        }
    })
    .await
}

/// Endpoints/EndpointSlices, node IPAM, node lifecycle and taint eviction, pod GC, disruption budgets.
async fn housekeeping(client: Client, cluster_cidr: String) {
    let cluster_cidr = if cluster_cidr.is_empty() { "10.42.0.0/16".to_string() } else { cluster_cidr };
    tokio::join!(
        endpoints::run(client.clone()),
        nodeipam::run(client.clone(), cluster_cidr),
        nodelifecycle::run(client.clone()),
        podgc::run(client.clone()),
        disruption::run(client),
    );
}

/// ReplicaSets, ReplicationControllers and Deployments.
async fn workloads(client: Client) {
    tokio::join!(
        replicaset::run_replicasets(client.clone()),
        replicaset::run_replication_controllers(client.clone()),
        deployment::run(client),
    );
}
