//! The batch controllers: Jobs (job.rs), CronJobs (cronjob.rs) and the
//! deletion of finished Jobs after their TTL (ttl_after_finished.rs).

use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use client::informer::Shared;

pub(crate) fn run(client: Client, pods: &mut Shared<Pod>) -> impl std::future::Future<Output = ()> {
    let jobs = crate::job::run(client.clone(), pods.subscribe(), pods.by_controller());
    let cronjobs = crate::cronjob::run(client.clone());
    let ttl = crate::ttl_after_finished::run(client);
    async move {
        tokio::join!(jobs, cronjobs, ttl);
    }
}
