//! Leader election on a coordination.k8s.io Lease, so that several servers
//! sharing one datastore run each controller once.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Upstream's renewDeadline: a leader keeps trying to renew this long before
/// it gives up, so one slow or failed request under load does not restart
/// every controller; it is shorter than the lease, so nobody else can take
/// the lease while we still act as leader.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// Holds the lease `name` in kube-system while `work` runs; when the lease
/// is lost, `work` is dropped (cancelled) and the election starts over.
/// When `stop` completes, `work` is cancelled and a held lease is released,
/// so a standby takes over at once instead of waiting for it to expire
/// (upstream's ReleaseOnCancel).
pub async fn run_as_leader<F, Fut>(client: Client, name: &str, identity: &str, stop: impl std::future::Future<Output = ()>, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let mut stop = std::pin::pin!(stop);
    loop {
        let acquired = tokio::select! {
            got = acquire(&leases, name, identity) => got,
            _ = &mut stop => return,
        };
        if !acquired {
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => continue,
                _ = &mut stop => return,
            }
        }
        tracing::info!(lease = name, identity, "became leader");
        let held = async {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
                let attempt = tokio::time::timeout(left, acquire(&leases, name, identity));
                if attempt.await.unwrap_or(false) {
                    renewed = tokio::time::Instant::now();
                } else if renewed.elapsed() >= RENEW_DEADLINE {
                    return;
                }
            }
        };
        let stopped = tokio::select! {
            _ = work() => return,
            _ = held => false,
            _ = &mut stop => true,
        };
        if stopped {
            release(&leases, name, identity).await;
            return;
        }
        tracing::warn!(lease = name, "lost the lease");
    }
}

/// Gives up a lease we hold: no holder, a one-second duration.
async fn release(leases: &Api<Lease>, name: &str, identity: &str) {
    let Ok(Some(mut lease)) = leases.get_opt(name).await else { return };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(identity) {
        return;
    }
    let now = MicroTime(Utc::now());
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = name, identity, "released the lease"),
        Err(e) => tracing::warn!(lease = name, "releasing the lease: {e}"),
    }
}

/// Takes or renews the lease; true when we hold it afterwards.
async fn acquire(leases: &Api<Lease>, name: &str, identity: &str) -> bool {
    let now = MicroTime(Utc::now());
    let mine = |mut lease: Lease, fresh: bool| {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if fresh {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(identity.to_string());
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        spec.renew_time = Some(now.clone());
        lease
    };
    match leases.get_opt(name).await {
        Ok(None) => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
                spec: Some(LeaseSpec { lease_transitions: Some(-1), ..Default::default() }),
            };
            leases.create(&PostParams::default(), &mine(lease, true)).await.is_ok()
        }
        Ok(Some(lease)) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(identity);
            // A lease without a holder was released: free at once.
            let expired = spec.holder_identity.as_deref().unwrap_or("").is_empty()
                || spec.renew_time.as_ref().is_none_or(|t| {
                let ttl = chrono::Duration::seconds(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS) as i64);
                t.0 + ttl < Utc::now()
            });
            if !ours && !expired {
                return false;
            }
            // The update carries the resourceVersion we read: a racing candidate loses with a conflict.
            leases.replace(name, &PostParams::default(), &mine(lease, !ours)).await.is_ok()
        }
        Err(e) => {
            tracing::debug!(lease = name, "reading lease: {e}");
            false
        }
    }
}
