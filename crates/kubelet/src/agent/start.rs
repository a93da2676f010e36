//! Starting one container attempt (image per pull policy with back-off,
//! environment, mounts, create, start, postStart hook, probes) and killing
//! one (preStop hook, then stop with the grace period).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ConfigMap, LifecycleHandler, Secret, Service};
use kube::api::ListParams;
use kube::Api;
use runtime::cri::{ContainerConfig, Mount};
use tokio::time::Instant;

use super::containers_spec::{linux_resources, pull_policy, security};
use super::env::{self, expand, EnvSources};
use super::events::pod_ref;
use super::worker::Worker;
use super::{actions, images, volumes};

impl Worker {
    /// Why the image cannot be used yet, as (waiting reason, message).
    async fn ensure_image(&mut self, c: &Container) -> Result<(), (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let about = pod_ref(&self.pod, Some(&c.name));
        let ev = &self.agent.events;
        let present = self.agent.images.image_status(&image).await.ok().flatten();
        match pull_policy(c).as_str() {
            "Never" if present.is_some() => return Ok(()),
            "Never" => {
                let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                ev.warning(about, "ErrImageNeverPull", msg.clone());
                return Err(("ErrImageNeverPull".into(), msg));
            }
            "IfNotPresent" if present.is_some() => {
                ev.normal(about, "Pulled", format!("Container image \"{image}\" already present on machine"));
                return Ok(());
            }
            _ => {}
        }
        if let Some((when, err)) = self.pull_failed.get(&image) {
            if self.pull_backoff.remaining(&image, (*when).into(), Instant::now().into()).is_some() {
                ev.normal(about, "BackOff", format!("Back-off pulling image \"{image}\""));
                return Err(("ImagePullBackOff".into(), format!("Back-off pulling image \"{image}\": ErrImagePull: {err}")));
            }
        }
        ev.normal(about.clone(), "Pulling", format!("Pulling image \"{image}\""));
        let secrets = self.pod.spec.as_ref().and_then(|s| s.image_pull_secrets.clone()).unwrap_or_default();
        let auths = images::pull_auths(&self.agent.client, &self.namespace(), &secrets, &image).await;
        let started = Instant::now();
        match self.agent.images.pull_image(&image, &auths).await {
            Ok(_) => {
                self.pull_failed.remove(&image);
                self.pull_backoff.reset(&image);
                let took = started.elapsed();
                let size = self.agent.images.image_status(&image).await.ok().flatten().map(|i| i.size).unwrap_or(0);
                ev.normal(about, "Pulled", format!("Successfully pulled image \"{image}\" in {took:.3?} ({took:.3?} including waiting). Image size: {size} bytes."));
                Ok(())
            }
            Err(e) => {
                let now = Instant::now();
                self.pull_backoff.next(&image, now.into());
                let err = format!("{e:#}");
                self.pull_failed.insert(image.clone(), (now, err.clone()));
                ev.warning(about.clone(), "Failed", format!("Failed to pull image \"{image}\": {err}"));
                ev.warning(about, "Failed", "Error: ErrImagePull".into());
                Err(("ErrImagePull".into(), err))
            }
        }
    }

    /// ConfigMaps, secrets and services the container's environment reads.
    async fn env_sources(&self, c: &Container) -> EnvSources {
        let client = &self.agent.client;
        let ns = self.namespace();
        let (cms, secrets) = env::referenced_objects(c);
        let mut src = EnvSources::default();
        for name in cms {
            let v = Api::<ConfigMap>::namespaced(client.clone(), &ns).get_opt(&name).await.ok().flatten();
            src.config_maps.insert(name, v);
        }
        for name in secrets {
            let v = Api::<Secret>::namespaced(client.clone(), &ns).get_opt(&name).await.ok().flatten();
            src.secrets.insert(name, v);
        }
        let links = self.pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        if links {
            if let Ok(list) = Api::<Service>::namespaced(client.clone(), &ns).list(&ListParams::default()).await {
                src.services.extend(list.items);
            }
        }
        if ns != "default" || !links {
            if let Ok(Some(k)) = Api::<Service>::namespaced(client.clone(), "default").get_opt("kubernetes").await {
                src.services.retain(|s| s.metadata.name.as_deref() != Some("kubernetes"));
                src.services.push(k);
            }
        }
        src
    }

    /// Records why a container could not be started.
    fn set_waiting(&mut self, name: &str, reason: &str, message: String) {
        self.memo.entry(name.to_string()).or_default().waiting = Some((reason.to_string(), message));
    }

    pub async fn start_container(&mut self, c: &Container, attempt: u32) {
        let Some(sandbox_id) = self.sandbox.as_ref().map(|s| s.id.clone()) else { return };
        if let Err((reason, msg)) = self.ensure_image(c).await {
            self.set_waiting(&c.name, &reason, msg);
            return;
        }
        let about = pod_ref(&self.pod, Some(&c.name));
        let pod_ips = self.pod_ip().map(|ip| vec![ip.to_string()]).unwrap_or_default();
        let ctx = self.agent.field_context(pod_ips);
        let envs = match env::resolve(&self.pod, c, &ctx, &self.env_sources(c).await) {
            Ok(e) => e,
            Err(e) => {
                self.agent.events.warning(about, "Failed", format!("Error: {e:#}"));
                self.set_waiting(&c.name, "CreateContainerConfigError", format!("{e:#}"));
                return;
            }
        };
        let vols = self.volumes.clone().unwrap_or_default();
        let mut mounts = match volumes::container_mounts(c, &vols, &envs) {
            Ok(m) => m,
            Err(e) => {
                self.agent.events.warning(about, "Failed", format!("Error: {e:#}"));
                self.set_waiting(&c.name, "CreateContainerConfigError", format!("{e:#}"));
                return;
            }
        };
        let term_path = volumes::termination_log_path(&self.pod_dir(), &c.name, attempt);
        let term_target = c.termination_message_path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/dev/termination-log".into());
        if let Some(dir) = term_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if std::fs::write(&term_path, b"").is_ok() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&term_path, std::fs::Permissions::from_mode(0o666));
            mounts.push(Mount { container_path: term_target, host_path: term_path, readonly: false, propagation: "private".into() });
        }
        let vars: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lookup = |n: &str| vars.get(n).map(|v| v.to_string());
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("io.kubernetes.pod.uid".to_string(), self.uid.clone());
        labels.insert("io.kubernetes.pod.name".to_string(), self.name());
        labels.insert("io.kubernetes.pod.namespace".to_string(), self.namespace());
        labels.insert("io.kubernetes.container.name".to_string(), c.name.clone());
        let config = ContainerConfig {
            name: c.name.clone(),
            attempt,
            image: c.image.clone().unwrap_or_default(),
            command: c.command.iter().flatten().map(|s| expand(s, &lookup)).collect(),
            args: c.args.iter().flatten().map(|s| expand(s, &lookup)).collect(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: envs.clone(),
            mounts,
            log_path: self.log_dir().join(&c.name).join(format!("{attempt}.log")),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            resources: linux_resources(c),
            security: security(&spec, c),
            target_id: self.debug_target(&spec, &c.name),
            labels,
            annotations: Default::default(),
        };
        self.prune_dead(&c.name).await;
        let rt = self.agent.runtime.clone();
        let id = match rt.create_container(&sandbox_id, &config).await {
            Ok(id) => id,
            Err(e) => {
                self.agent.events.warning(about, "Failed", format!("Error: {e:#}"));
                let config = e.downcast_ref::<runtime::containers::ConfigError>().is_some();
                self.set_waiting(&c.name, if config { "CreateContainerConfigError" } else { "CreateContainerError" }, format!("{e:#}"));
                self.crash_backoff.next(&super::sync::crash_key(c), std::time::Instant::now());
                return;
            }
        };
        self.dirty = true;
        self.agent.events.normal(about.clone(), "Created", format!("Created container: {}", c.name));
        if let Err(e) = rt.start_container(&id).await {
            self.agent.events.warning(about, "Failed", format!("Error: {e:#}"));
            self.set_waiting(&c.name, "RunContainerError", format!("{e:#}"));
            self.crash_backoff.next(&super::sync::crash_key(c), std::time::Instant::now());
            return;
        }
        self.agent.events.normal(about.clone(), "Started", format!("Started container {}", c.name));
        let memo = self.memo.entry(c.name.clone()).or_default();
        memo.stop_probes();
        memo.waiting = None;
        memo.probed_id = Some(id.clone());
        memo.ready = false;
        memo.started = false;
        memo.applied = Some(c.resources.clone().unwrap_or_default());
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
            if let Err(msg) = self.run_hook(&hook, c, &id, self.grace_period().max(Duration::from_secs(2))).await {
                self.agent.events.warning(about.clone(), "FailedPostStartHook", format!("PostStartHook failed: {msg}"));
                self.agent.events.normal(about, "Killing", format!("FailedPostStartHook: Container {} failed its postStart hook, will be killed", c.name));
                let _ = rt.stop_container(&id, self.grace_period()).await;
                return;
            }
        }
        self.watch_probes(c, &id);
    }

    /// pods/resize: a running container whose cpu or memory changed in the
    /// spec gets the new limits written to its cgroup in place.
    pub async fn resize_if_changed(&mut self, c: &Container) {
        let Some(id) = self.latest(&c.name).0.filter(|l| l.state == runtime::cri::ContainerState::Running).map(|l| l.id.clone()) else { return };
        let want = c.resources.clone().unwrap_or_default();
        let memo = self.memo.entry(c.name.clone()).or_default();
        match &memo.applied {
            // Adopted from an earlier agent: it was started with the spec's.
            None => memo.applied = Some(want),
            Some(a) if *a == want => {}
            Some(_) => match self.agent.runtime.update_container_resources(&id, &linux_resources(c)).await {
                Ok(()) => {
                    tracing::info!(pod = self.pod_desc(), container = c.name, "resized in place");
                    self.memo.entry(c.name.clone()).or_default().applied = Some(want);
                }
                Err(e) => tracing::warn!(pod = self.pod_desc(), container = c.name, "resizing: {e:#}"),
            },
        }
    }

    /// An ephemeral container's running target container (kubectl debug
    /// --target), whose PID namespace it joins.
    fn debug_target(&self, spec: &k8s_openapi::api::core::v1::PodSpec, name: &str) -> Option<String> {
        let target = spec.ephemeral_containers.iter().flatten().find(|e| e.name == name)?.target_container_name.clone()?;
        let running = self.latest(&target).0.filter(|l| l.state == runtime::cri::ContainerState::Running)?;
        Some(running.id.clone())
    }

    /// Removes dead attempts of a container but the newest (kept for
    /// lastState and `logs --previous`), and their log files, so a
    /// crash-looping container keeps at most two attempts' logs.
    async fn prune_dead(&mut self, name: &str) {
        let mut dead: Vec<_> = self.containers.iter().filter(|c| c.name == name && c.state != runtime::cri::ContainerState::Running).cloned().collect();
        dead.sort_by_key(|c| std::cmp::Reverse(c.attempt));
        for old in dead.iter().skip(1) {
            if let Err(e) = self.agent.runtime.remove_container(&old.id).await {
                tracing::debug!(container = old.id, "removing old attempt: {e:#}");
                continue;
            }
            for log in runtime::containers::logs::rotated_files(&old.log_path).iter().chain([&old.log_path]) {
                let _ = std::fs::remove_file(log);
            }
            self.term_messages.remove(&old.id);
        }
    }

    /// Runs a postStart / preStop handler.
    pub async fn run_hook(&self, h: &LifecycleHandler, c: &Container, container_id: &str, limit: Duration) -> Result<(), String> {
        let ip = self.pod_ip().map(std::net::IpAddr::V4);
        let rt = &self.agent.runtime;
        if let Some(e) = &h.exec {
            actions::exec(rt, container_id, e.command.as_deref().unwrap_or_default(), limit).await.map(|_| ())
        } else if let Some(g) = &h.http_get {
            actions::http_get(g, c, ip, limit).await.map(|_| ())
        } else if let Some(t) = &h.tcp_socket {
            actions::tcp(t, c, ip, limit).await.map(|_| ())
        } else if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(limit)).await;
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Kills one container (preStop, then stop) and forgets its probe results.
    pub async fn kill_container(&mut self, name: &str, id: &str, grace: Duration) {
        if let Some(m) = self.memo.get_mut(name) {
            m.stop_probes();
            m.ready = false;
        }
        self.dirty = true;
        self.stop_one(name, id, grace).await;
    }
}
