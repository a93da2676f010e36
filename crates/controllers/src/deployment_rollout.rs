//! The Deployment strategies (RollingUpdate, Recreate), proportional scaling,
//! revision-history cleanup and the rollout status conditions, as upstream's
//! pkg/controller/deployment rolling.go, recreate.go, sync.go and progress.go.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use crate::deployment::{
    condition, get_condition, int_annotation, max_surge, max_unavailable, remove_condition, revision, set_condition,
    set_replicas_annotations, spec_replicas, Sync, COMPONENT, DESIRED_REPLICAS, MAX_REPLICAS,
};
use crate::workload::{self, controller_of, is_status, Result};

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// Upstream DeploymentComplete.
fn complete(replicas: i32, generation: Option<i64>, st: &DeploymentStatus) -> bool {
    st.updated_replicas == Some(replicas)
        && st.replicas == Some(replicas)
        && st.available_replicas == Some(replicas)
        && st.observed_generation.unwrap_or(0) >= generation.unwrap_or(0)
}

impl Sync {
    /// Upstream NewRSNewReplicas: how big the new ReplicaSet may be now.
    pub fn new_rs_new_replicas(&self, new_rs: &ReplicaSet) -> i32 {
        if !crate::deployment::is_rolling(&self.d) {
            return self.replicas();
        }
        let current: i32 = self.rss.iter().filter(|rs| rs.metadata.name != new_rs.metadata.name).map(spec_replicas).sum::<i32>() + spec_replicas(new_rs);
        let max_total = self.replicas() + max_surge(&self.d);
        if current >= max_total {
            return spec_replicas(new_rs);
        }
        let up = (max_total - current).min(self.replicas() - spec_replicas(new_rs));
        spec_replicas(new_rs) + up
    }

    /// Sets a ReplicaSet's size and replica annotations; true when the size changed.
    pub async fn scale_rs(&mut self, name: &str, size: i32) -> Result<bool> {
        let Some(mut rs) = self.rss.iter().find(|r| r.metadata.name.as_deref() == Some(name)).cloned() else { return Ok(false) };
        let old = spec_replicas(&rs);
        let resized = old != size;
        let annotated = set_replicas_annotations(&mut rs, self.replicas(), self.replicas() + max_surge(&self.d));
        if !resized && !annotated {
            return Ok(false);
        }
        rs.spec.get_or_insert_with(Default::default).replicas = Some(size);
        let patch = serde_json::json!({ "metadata": { "annotations": rs.metadata.annotations }, "spec": { "replicas": size } });
        let rs = self.rs_api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        if resized {
            let dir = if size > old { "up" } else { "down" };
            let msg = format!("Scaled {dir} replica set {name} from {old} to {size}");
            workload::record(&self.client, COMPONENT, &self.d, "Normal", "ScalingReplicaSet", msg).await;
        }
        if let Some(slot) = self.rss.iter_mut().find(|r| r.metadata.name.as_deref() == Some(name)) {
            *slot = rs;
        }
        Ok(resized)
    }

    pub async fn rollout_rolling(&mut self) -> Result<Action> {
        self.find_new_and_sync_revision(true).await?;
        if self.reconcile_new_rs().await? || self.reconcile_old_rss().await? {
            return self.sync_rollout_status().await;
        }
        if complete(self.replicas(), self.d.metadata.generation, &self.status()) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    async fn reconcile_new_rs(&mut self) -> Result<bool> {
        let Some(new_rs) = self.new_rs().cloned() else { return Ok(false) };
        let size = spec_replicas(&new_rs);
        if size == self.replicas() {
            return Ok(false);
        }
        let target = if size > self.replicas() { self.replicas() } else { self.new_rs_new_replicas(&new_rs) };
        self.scale_rs(&new_rs.name_any(), target).await
    }

    /// Upstream reconcileOldReplicaSets: first drop old pods that are not
    /// available anyway, then scale old ReplicaSets down as far as
    /// maxUnavailable allows.
    async fn reconcile_old_rss(&mut self) -> Result<bool> {
        let Some(new_rs) = self.new_rs().cloned() else { return Ok(false) };
        let old_count: i32 = self.old_rss().iter().map(spec_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count: i32 = self.rss.iter().map(spec_replicas).sum();
        let min_available = self.replicas() - max_unavailable(&self.d);
        let new_unavailable = spec_replicas(&new_rs) - available(&new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut cleaned = 0;
        for rs in self.old_rss() {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = spec_replicas(&rs);
            if size == 0 || size == available(&rs) {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - available(&rs));
            self.scale_rs(&rs.name_any(), size - down).await?;
            cleaned += down;
        }
        // Scale down old ReplicaSets while keeping minAvailable pods available.
        let available_count: i32 = self.rss.iter().map(available).sum();
        let mut scaled = 0;
        if available_count > min_available {
            let budget = available_count - min_available;
            for rs in self.old_rss() {
                if scaled >= budget {
                    break;
                }
                let size = spec_replicas(&rs);
                if size == 0 {
                    continue;
                }
                let down = size.min(budget - scaled);
                self.scale_rs(&rs.name_any(), size - down).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    pub async fn rollout_recreate(&mut self) -> Result<Action> {
        self.find_new_and_sync_revision(false).await?;
        let mut scaled = false;
        for rs in self.old_rss() {
            if spec_replicas(&rs) != 0 {
                scaled |= self.scale_rs(&rs.name_any(), 0).await?;
            }
        }
        if scaled {
            return self.sync_rollout_status().await;
        }
        if self.old_pods_running().await? {
            self.sync_rollout_status().await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if self.new.is_none() {
            self.find_new_and_sync_revision(true).await?;
        }
        if let Some(new_rs) = self.new_rs().cloned() {
            self.scale_rs(&new_rs.name_any(), self.replicas()).await?;
        }
        if complete(self.replicas(), self.d.metadata.generation, &self.status()) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    /// Upstream oldPodsRunning: any old ReplicaSet still reporting pods, or
    /// any unfinished pod still owned by one.
    async fn old_pods_running(&self) -> Result<bool> {
        let old = self.old_rss();
        if old.iter().any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0)) {
            return Ok(true);
        }
        let uids: Vec<String> = old.iter().filter_map(|rs| rs.uid()).collect();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.d.namespace().unwrap_or_default());
        let selector = self.d.spec.as_ref().map(|s| workload::selector_string(&s.selector)).unwrap_or_default();
        Ok(pods.list(&ListParams::default().labels(&selector)).await?.items.iter().any(|p| {
            controller_of(p).is_some_and(|r| uids.contains(&r.uid)) && !matches!(workload::pod_phase(p), "Succeeded" | "Failed")
        }))
    }

    /// Upstream scale(): a replica count change while ReplicaSets of several
    /// templates are active is spread over them in proportion to their size.
    pub async fn scale(&mut self) -> Result<()> {
        let replicas = self.replicas();
        let new_rs = self.new_rs().cloned();
        let mut old = self.old_rss();
        old.sort_by_key(|rs| std::cmp::Reverse(workload::creation(&rs.metadata)));
        let mut candidates = old.clone();
        candidates.extend(new_rs.clone());
        let active: Vec<ReplicaSet> = candidates.iter().filter(|rs| spec_replicas(rs) > 0).cloned().collect();
        let active_or_latest = match active.len() {
            0 => new_rs.clone().or_else(|| old.first().cloned()),
            1 => Some(active[0].clone()),
            _ => None,
        };
        if let Some(rs) = active_or_latest {
            if spec_replicas(&rs) != replicas {
                self.scale_rs(&rs.name_any(), replicas).await?;
            }
            return Ok(());
        }
        // The new ReplicaSet is saturated: the old ones go.
        if let Some(n) = &new_rs {
            if spec_replicas(n) == replicas && int_annotation(n, DESIRED_REPLICAS) == Some(replicas) && available(n) == replicas {
                for rs in old.iter().filter(|rs| spec_replicas(rs) > 0) {
                    self.scale_rs(&rs.name_any(), 0).await?;
                }
                return Ok(());
            }
        }
        if !crate::deployment::is_rolling(&self.d) {
            return Ok(());
        }
        let mut all = active;
        let current: i32 = all.iter().map(spec_replicas).sum();
        let allowed = if replicas > 0 { replicas + max_surge(&self.d) } else { 0 };
        let to_add = allowed - current;
        if to_add > 0 {
            all.sort_by(|a, b| spec_replicas(b).cmp(&spec_replicas(a)).then(workload::creation(&b.metadata).cmp(&workload::creation(&a.metadata))));
        } else {
            all.sort_by(|a, b| spec_replicas(b).cmp(&spec_replicas(a)).then(workload::creation(&a.metadata).cmp(&workload::creation(&b.metadata))));
        }
        let mut added = 0;
        let mut sizes: Vec<(String, i32)> = Vec::new();
        for rs in &all {
            let mut size = spec_replicas(rs);
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                size += p;
                added += p;
            }
            sizes.push((rs.name_any(), size));
        }
        if to_add != 0 && !sizes.is_empty() {
            sizes[0].1 = (sizes[0].1 + to_add - added).max(0);
        }
        for (name, size) in sizes {
            self.scale_rs(&name, size).await?;
        }
        Ok(())
    }

    /// Upstream GetProportion / getReplicaSetFraction.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas() == 0 {
            -spec_replicas(rs)
        } else {
            let target = self.replicas() + max_surge(&self.d);
            let annotated = int_annotation(rs, MAX_REPLICAS).unwrap_or(self.status().replicas.unwrap_or(0));
            if annotated == 0 {
                0
            } else {
                (spec_replicas(rs) as f64 * target as f64 / annotated as f64).round() as i32 - spec_replicas(rs)
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream cleanupDeployment: delete the oldest empty ReplicaSets beyond revisionHistoryLimit.
    pub async fn cleanup(&mut self) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        let mut old: Vec<ReplicaSet> = self.old_rss().into_iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).collect();
        let extra = old.len() as i64 - limit as i64;
        if extra <= 0 {
            return Ok(());
        }
        old.sort_by_key(|rs| (revision(rs), workload::creation(&rs.metadata)));
        for rs in old.iter().take(extra as usize) {
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0 || spec_replicas(rs) != 0 || rs.metadata.generation > st.observed_generation {
                continue;
            }
            match self.rs_api.delete(&rs.name_any(), &DeleteParams::background()).await {
                Ok(_) => self.rss.retain(|r| r.metadata.name != rs.metadata.name),
                Err(e) if is_status(&e, &[404]) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Upstream syncRolloutStatus: the status, plus the Progressing condition.
    pub async fn sync_rollout_status(&mut self) -> Result<Action> {
        let mut status = self.calculate_status();
        let deadline = self.progress_deadline();
        let old = self.status();
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let current = get_condition(&status, "Progressing").cloned();
        let is_complete = status.replicas == status.updated_replicas && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        let new_name = self.new_rs().map(|rs| rs.name_any()).unwrap_or_default();
        let replicas = self.replicas();
        let mut requeue = None;
        if let (Some(secs), false) = (deadline, is_complete) {
            let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
            let new_old = status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0);
            let progressing = status.updated_replicas > old.updated_replicas
                || new_old < old_old
                || status.ready_replicas > old.ready_replicas
                || status.available_replicas > old.available_replicas;
            let timed_out = match current.as_ref() {
                None => false,
                Some(c) if c.reason.as_deref() == Some("NewReplicaSetAvailable") => false,
                Some(c) if c.reason.as_deref() == Some("ProgressDeadlineExceeded") => true,
                Some(c) => c.last_update_time.as_ref().is_some_and(|t| t.0 + chrono::Duration::seconds(secs as i64) < Utc::now()),
            };
            if complete(replicas, self.d.metadata.generation, &status) {
                let msg = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
                set_condition(&mut status, condition("Progressing", "True", "NewReplicaSetAvailable", msg));
            } else if progressing {
                let mut cond = condition("Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."));
                if let Some(c) = current.as_ref().filter(|c| c.status == "True") {
                    cond.last_transition_time = c.last_transition_time.clone();
                }
                remove_condition(&mut status, "Progressing");
                set_condition(&mut status, cond);
            } else if timed_out {
                let msg = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
                set_condition(&mut status, condition("Progressing", "False", "ProgressDeadlineExceeded", msg));
            } else if let Some(t) = current.as_ref().and_then(|c| c.last_update_time.as_ref()) {
                // Look again when the deadline would pass.
                let left = (t.0 + chrono::Duration::seconds(secs as i64) - Utc::now()).num_seconds().max(0) as u64 + 1;
                requeue = Some(Duration::from_secs(left));
            }
        }
        self.write_status(status).await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::api::ObjectMeta;

    use crate::deployment::*;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment { max_surge: Some(surge), max_unavailable: Some(unavailable) }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn surge_rounds_up_unavailable_rounds_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&deployment(3, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(fenceposts(&deployment(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(10, IntOrString::Int(0), IntOrString::Int(0))), (0, 1));
        assert_eq!(max_unavailable(&deployment(2, IntOrString::Int(0), IntOrString::Int(5))), 2);
        let mut recreate = deployment(3, pct("25%"), pct("25%"));
        recreate.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some("Recreate".into());
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }

    #[test]
    fn template_hash_is_stable_safe_and_moves_with_the_collision_count() {
        let t = PodTemplateSpec { metadata: Some(ObjectMeta { labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() }), spec: None };
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t.clone(), None));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{h}");
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut labelled = t.clone();
        labelled.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(HASH_LABEL.into(), h.clone());
        assert!(equal_ignore_hash(&t, &labelled));
        labelled.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert("x".into(), "y".into());
        assert!(!equal_ignore_hash(&t, &labelled));
    }

    #[test]
    fn conditions_keep_transition_time_for_the_same_status() {
        let mut status = Default::default();
        let mut first = condition("Progressing", "True", "ReplicaSetUpdated", "a".into());
        first.last_transition_time = None;
        set_condition(&mut status, first);
        set_condition(&mut status, condition("Progressing", "True", "NewReplicaSetAvailable", "b".into()));
        let c = get_condition(&status, "Progressing").unwrap();
        assert_eq!((c.reason.as_deref(), c.last_transition_time.is_none()), (Some("NewReplicaSetAvailable"), true));
        set_condition(&mut status, condition("Progressing", "False", "ProgressDeadlineExceeded", "c".into()));
        assert!(get_condition(&status, "Progressing").unwrap().last_transition_time.is_some());
        assert_eq!(status.conditions.unwrap().len(), 1);
    }
}
