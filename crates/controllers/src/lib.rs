//! The controllers that run in `skiff server` (or `skiff controller-manager`).
//! Each is an API client: it watches and writes through a `kube::Client`,
//! never the store. In the server process that client calls the API
//! server's router in-process.

mod batch;
mod cronjob;
mod cronjob_schedule;
mod daemonset;
mod daemonset_sync;
mod deployment;
mod deployment_rollout;
mod disruption;
pub mod endpoints;
mod expectations;
mod gc;
mod history;
mod hpa;
mod hpa_behavior;
mod hpa_replicas;
mod job;
mod job_pods;
mod job_status;
mod local_path;
pub mod nodeipam;
pub mod nodelifecycle;
mod per_namespace;
mod persistentvolume;
mod podgc;
mod replicaset;
mod resourcequota;
mod rootca;
mod serviceaccount;
mod statefulset;
mod statefulset_sync;
mod ttl_after_finished;
pub mod servicelb;
mod slice_tracker;
mod volume_expansion;
mod volume_protection;
mod workload;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};

use client::informer::{strip_managed_fields, Shared};

/// What the controllers need to know beyond the API.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cluster CA certificate (PEM), published in every namespace as `kube-root-ca.crt`.
    pub ca_pem: String,
    /// The range node pod CIDRs (/24 each) are allocated from; empty means "10.42.0.0/16".
    pub cluster_cidr: String,
    /// Where local-path volumes are made on nodes; None turns the built-in
    /// provisioner and its default StorageClass off.
    pub local_storage: Option<std::path::PathBuf>,
}

/// Runs every controller while this process holds the controller-manager
/// lease, until `stop` (which releases the lease).
pub async fn run(client: Client, identity: String, options: Options, stop: impl std::future::Future<Output = ()>) {
    client::leader::run_as_leader(client.clone(), "kube-controller-manager", &identity, stop, || {
        let (client, options) = (client.clone(), options.clone());
        async move {
            // One watch and one cache of each of the two largest kinds, for every controller.
            let mut pods = Shared::new(Api::<Pod>::all(client.clone()), strip_managed_fields);
            let mut nodes = Shared::new(Api::<Node>::all(client.clone()), strip_managed_fields);
            let housekeeping = housekeeping(client.clone(), &options, &mut pods, &mut nodes);
            let workloads = workloads(client.clone(), &mut pods);
            let daemonsets = daemonset_sync::run(client.clone(), pods.subscribe(), pods.by_controller(), nodes.subscribe());
            let statefulsets = statefulset_sync::run(client.clone(), pods.subscribe(), pods.by_controller());
            let batch = batch::run(client.clone(), &mut pods);
            tokio::join!(
                pods.run(),
                nodes.run(),
                housekeeping,
                workloads,
                daemonsets,
                statefulsets,
                batch,
                serviceaccount::run(client.clone()), rootca::run(client.clone(), options.ca_pem), gc::run(client));
        }
    })
    .await
}

/// Endpoints/EndpointSlices, node IPAM, node lifecycle and taint eviction, pod GC, disruption budgets, the service load balancer, volume binding and local-path provisioning, volume protection, resource quota usage.
fn housekeeping(client: Client, options: &Options, pods: &mut Shared<Pod>, nodes: &mut Shared<Node>) -> impl std::future::Future<Output = ()> {
    let cluster_cidr = if options.cluster_cidr.is_empty() { "10.42.0.0/16".to_string() } else { options.cluster_cidr.clone() };
    let endpoints = endpoints::run(client.clone(), pods.subscribe());
    let nodeipam = nodeipam::run(client.clone(), cluster_cidr, nodes.subscribe());
    let nodelifecycle = nodelifecycle::run(client.clone(), nodes.subscribe(), pods.subscribe());
    let podgc = podgc::run(client.clone(), nodes.subscribe(), pods.subscribe());
    let disruption = disruption::run(client.clone(), pods.subscribe());
    let services = client::informer::watch(Api::all(client.clone()), Default::default());
    let servicelb = servicelb::run(client.clone(), nodes.subscribe(), services);
    let protection = volume_protection::run(client.clone(), pods.subscribe());
    let quotas = resourcequota::run(client.clone(), pods.subscribe());
    let volumes = persistentvolume::run(client, options.local_storage.clone());
    async move {
        tokio::join!(endpoints, nodeipam, nodelifecycle, podgc, disruption, servicelb, volumes, protection, quotas);
    }
}

/// ReplicaSets, ReplicationControllers, Deployments and their autoscalers.
fn workloads(client: Client, pods: &mut Shared<Pod>) -> impl std::future::Future<Output = ()> {
    let replicasets = replicaset::run_replicasets(client.clone(), pods.subscribe(), pods.by_controller());
    let rcs = replicaset::run_replication_controllers(client.clone(), pods.subscribe(), pods.by_controller());
    let deployments = deployment::run(client.clone());
    let autoscalers = hpa::run(client);
    async move {
        tokio::join!(replicasets, rcs, deployments, autoscalers);
    }
}
