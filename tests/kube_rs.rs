//! kube-rs (the `kube` crate with `k8s-openapi`) against a real `skiff server`
//! with its node agent, used the way a user's program uses it: its own
//! kubeconfig loading and rustls TLS, typed `Api<K>` calls, the runtime's
//! watcher, reflector and Controller, exec and port-forward over WebSockets,
//! and cordoning the node. One server for all checks; every check runs even
//! when an earlier one fails, and the test fails listing each failed check.
//! Needs root (the agent runs containers).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, AttachParams, DeleteParams, EvictParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{reflector, wait::await_condition, watcher, WatchStreamExt};
use kube::{Client, Config, Discovery, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use e2e::{registry_with_busybox, Server};

#[path = "client_support.rs"]
mod client_support;
use client_support::log_tail;

const WEB: &str = "mkdir -p /www && echo hello-skiff > /www/index.html && echo started && exec httpd -f -p 8080 -h /www";

#[derive(Clone)]
struct Ctx {
    client: Client,
    ns: String,
    image: String,
    node: String,
}

impl Ctx {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

fn obj<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("a valid object")
}

/// The code and reason of the API error `r` must be.
fn api_error<T: std::fmt::Debug>(r: kube::Result<T>) -> Result<(u16, String)> {
    match r {
        Err(kube::Error::Api(e)) => Ok((e.code, e.reason)),
        other => bail!("expected an API error, got {other:?}"),
    }
}

async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs}s waiting for {what}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn pod(c: &Ctx, name: &str, labels: Value, script: &str) -> Pod {
    obj(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": c.image, "command": ["sh", "-c", script], "ports": [{"containerPort": 8080}]}],
        },
    }))
}

async fn wait_pod_ready(api: &Api<Pod>, name: &str) -> Result<Pod> {
    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let found = tokio::time::timeout(Duration::from_secs(120), await_condition(api.clone(), name, ready)).await;
    found.with_context(|| format!("pod {name} not Ready in 120s"))??.with_context(|| format!("pod {name} gone"))
}

async fn typed_crud(c: Ctx) -> Result<()> {
    let cms: Api<ConfigMap> = c.api();
    let pp = PostParams::default();
    let cm: ConfigMap = obj(json!({"metadata": {"name": "crud", "labels": {"app": "crud"}}, "data": {"a": "1"}}));
    let created = cms.create(&pp, &cm).await.context("create ConfigMap")?;
    ensure!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some(), "{created:?}");
    ensure!(api_error(cms.create(&pp, &cm).await)? == (409, "AlreadyExists".into()));
    let mut got = cms.get("crud").await.context("get ConfigMap")?;
    got.data.get_or_insert_default().insert("b".into(), "2".into());
    let replaced = cms.replace("crud", &pp, &got).await.context("replace ConfigMap")?;
    ensure!(replaced.resource_version() != created.resource_version());
    ensure!(api_error(cms.replace("crud", &pp, &got).await)? == (409, "Conflict".into()), "a stale replace must conflict");
    let merged = cms.patch("crud", &PatchParams::default(), &Patch::Merge(json!({"data": {"c": "3"}}))).await.context("merge patch")?;
    ensure!(merged.data.as_ref().unwrap().len() == 3, "{merged:?}");
    let ssa = PatchParams::apply("kube-rs-e2e").force();
    let applied = cms.patch("crud", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"d": "4"}}))).await.context("server-side apply")?;
    ensure!(applied.data.as_ref().unwrap().get("d").map(String::as_str) == Some("4"), "{applied:?}");
    ensure!(applied.managed_fields().iter().any(|m| m.manager.as_deref() == Some("kube-rs-e2e") && m.operation.as_deref() == Some("Apply")));
    let listed = cms.list(&ListParams::default().labels("app=crud")).await.context("list")?;
    ensure!(listed.items.iter().map(|c| c.name_any()).collect::<Vec<_>>() == ["crud"]);
    ensure!(listed.metadata.resource_version.is_some());
    let metas = cms.list_metadata(&ListParams::default().labels("app=crud")).await.context("list_metadata")?;
    ensure!(metas.items.len() == 1 && metas.items[0].metadata.uid == created.metadata.uid, "{metas:?}");
    ensure!(cms.get_metadata("crud").await.context("get_metadata")?.metadata.labels == created.metadata.labels);
    // ConfigMaps are deleted at once: upstream answers with a Status.
    let status = cms.delete("crud", &DeleteParams::default()).await.context("delete ConfigMap")?.right().context("DELETE of a ConfigMap answers a Status")?;
    ensure!(status.is_success(), "{status:?}");
    ensure!(status.details.as_ref().map(|d| d.name.as_str()) == Some("crud"), "{status:?}");
    ensure!(cms.get_opt("crud").await?.is_none());
    ensure!(api_error(cms.get("crud").await)? == (404, "NotFound".into()));

    // The entry API: get-or-create, then a change committed with a replace.
    let mut entry = cms.entry("entry").await.context("entry")?.or_insert(|| obj(json!({"data": {"n": "1"}})));
    entry.get_mut().data.get_or_insert_default().insert("n".into(), "2".into());
    entry.commit(&pp).await.context("entry commit")?;
    ensure!(cms.get("entry").await?.data.unwrap()["n"] == "2");

    let secrets: Api<Secret> = c.api();
    let s = secrets.create(&pp, &obj(json!({"metadata": {"name": "sec"}, "stringData": {"k": "v"}}))).await.context("create Secret")?;
    ensure!(s.type_.as_deref() == Some("Opaque") && s.data.as_ref().unwrap()["k"].0 == b"v", "{s:?}");
    secrets.delete("sec", &DeleteParams::default()).await.context("delete Secret")?;

    // Upstream answers DELETE of a Service (or a Pod) with the object itself.
    let svcs: Api<Service> = c.api();
    let svc = svcs.create(&pp, &obj(json!({"metadata": {"name": "crud-svc"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}))).await.context("create Service")?;
    ensure!(svc.spec.as_ref().unwrap().cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty()));
    let deleted = svcs.delete("crud-svc", &DeleteParams::default()).await.context("delete Service")?;
    ensure!(deleted.as_ref().left().map(|s| s.name_any()).as_deref() == Some("crud-svc"), "DELETE of a Service answered {deleted:?}");

    // Deployments: scale, status, restart.
    let deploys: Api<Deployment> = c.api();
    let d: Deployment = obj(json!({
        "metadata": {"name": "crud-deploy"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "crud-deploy"}},
                 "template": {"metadata": {"labels": {"app": "crud-deploy"}}, "spec": {"containers": [{"name": "c", "image": c.image}]}}},
    }));
    let d = deploys.create(&pp, &d).await.context("create Deployment")?;
    ensure!(d.spec.as_ref().unwrap().revision_history_limit == Some(10));
    let scale = deploys.patch_scale("crud-deploy", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.context("patch_scale")?;
    ensure!(scale.spec.and_then(|s| s.replicas) == Some(0));
    ensure!(deploys.get_scale("crud-deploy").await.context("get_scale")?.status.is_some());
    let restarted = deploys.restart("crud-deploy").await.context("restart")?;
    ensure!(restarted.spec.unwrap().template.metadata.unwrap().annotations.unwrap().contains_key("kube.kubernetes.io/restartedAt"));
    ensure!(deploys.get_status("crud-deploy").await.context("get_status")?.status.is_some());
    deploys.delete("crud-deploy", &DeleteParams::background()).await.context("delete Deployment")?;
    // Not checked here: create_token_request (serviceaccounts/token) awaits TokenRequest (issue 14).
    Ok(())
}

async fn discovery(c: Ctx) -> Result<()> {
    let info = c.client.apiserver_version().await?;
    ensure!(info.major == "1", "{info:?}");
    let discovery = Discovery::new(c.client.clone()).run().await?;
    let apps = discovery.get("apps").context("apps group")?;
    let (ar, caps) = apps.recommended_kind("Deployment").context("apps/v1 Deployment")?;
    ensure!(ar.plural == "deployments" && caps.scope == kube::discovery::Scope::Namespaced);
    ensure!(caps.subresources.iter().any(|(r, _)| r.plural == "deployments/scale" || r.plural == "scale"), "{caps:?}");
    for group in ["", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "coordination.k8s.io"] {
        ensure!(discovery.has_group(group), "discovery lacks group {group:?}");
    }
    // The same resource through the dynamic API.
    let dynamic: Api<kube::core::DynamicObject> = Api::namespaced_with(c.client.clone(), &c.ns, &ar);
    dynamic.list(&ListParams::default()).await?;
    Ok(())
}

async fn watcher_and_reflector(c: Ctx) -> Result<()> {
    let cms: Api<ConfigMap> = c.api();
    let cfg = watcher::Config::default().labels("watched=yes");
    let mut events = watcher(cms.clone(), cfg.clone()).boxed();
    let mut next = async || -> Result<watcher::Event<ConfigMap>> {
        tokio::time::timeout(Duration::from_secs(30), events.try_next()).await.context("no watch event in 30s")?.context("watch error")?.context("watch ended")
    };
    ensure!(matches!(next().await?, watcher::Event::Init), "the first event is Init");
    ensure!(matches!(next().await?, watcher::Event::InitDone), "nothing matches yet, then InitDone");
    let cm: ConfigMap = obj(json!({"metadata": {"name": "watched", "labels": {"watched": "yes"}}, "data": {"v": "1"}}));
    cms.create(&PostParams::default(), &cm).await?;
    match next().await? {
        watcher::Event::Apply(o) => ensure!(o.name_any() == "watched" && o.data.unwrap()["v"] == "1"),
        e => bail!("expected Apply after create, got {e:?}"),
    }
    cms.patch("watched", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await?;
    match next().await? {
        watcher::Event::Apply(o) => ensure!(o.data.unwrap()["v"] == "2"),
        e => bail!("expected Apply after patch, got {e:?}"),
    }
    cms.delete("watched", &DeleteParams::default()).await?;
    match next().await? {
        watcher::Event::Delete(o) => ensure!(o.name_any() == "watched"),
        e => bail!("expected Delete, got {e:?}"),
    }
    drop(events);

    // A reflector's store, and a metadata watcher.
    let (store, writer) = reflector::store();
    let rf = reflector(writer, watcher(cms.clone(), cfg.clone())).applied_objects().default_backoff();
    let task = tokio::spawn(rf.for_each(|_| async {}));
    let mut meta = kube::runtime::metadata_watcher(cms.clone(), cfg).applied_objects().boxed();
    tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await??;
    cms.create(&PostParams::default(), &obj(json!({"metadata": {"name": "stored", "labels": {"watched": "yes"}}}))).await?;
    let m = tokio::time::timeout(Duration::from_secs(30), meta.try_next()).await?.context("metadata watch")?.context("ended")?;
    ensure!(m.name_any() == "stored");
    eventually(30, "the reflector to hold the object", || {
        let store = store.clone();
        async move { Ok(store.state().iter().any(|o| o.name_any() == "stored").then_some(())) }
    })
    .await?;
    task.abort();
    Ok(())
}

/// The controller: keeps a ConfigMap `<deployment>-info` holding the
/// Deployment's image, owned by the Deployment.
async fn reconcile(d: Arc<Deployment>, client: Arc<Client>) -> kube::Result<Action> {
    let image = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|s| s.containers[0].image.clone().unwrap_or_default()).unwrap_or_default();
    let name = format!("{}-info", d.name_any());
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"made-by": "kube-rs-controller"}, "ownerReferences": [d.controller_owner_ref(&()).unwrap()]},
        "data": {"image": image},
    });
    let cms: Api<ConfigMap> = Api::namespaced((*client).clone(), &d.namespace().unwrap());
    cms.patch(&name, &PatchParams::apply("kube-rs-controller").force(), &Patch::Apply(cm)).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_d: Arc<Deployment>, _e: &kube::Error, _client: Arc<Client>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

async fn controller(c: Ctx) -> Result<()> {
    let deploys: Api<Deployment> = c.api();
    let cms: Api<ConfigMap> = c.api();
    let running = Controller::new(deploys.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(c.client.clone()))
        .for_each(|_| async {});
    let task = tokio::spawn(running);
    let result = async {
        for name in ["ctl-a", "ctl-b"] {
            let d: Deployment = obj(json!({
                "metadata": {"name": name},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "example/one:1"}]}}},
            }));
            deploys.create(&PostParams::default(), &d).await?;
        }
        let image_of = |name: &'static str| {
            let cms = cms.clone();
            move || {
                let cms = cms.clone();
                async move { Ok(cms.get_opt(name).await?.and_then(|cm| cm.data?.get("image").cloned())) }
            }
        };
        for name in ["ctl-a-info", "ctl-b-info"] {
            ensure!(eventually(30, name, image_of(name)).await? == "example/one:1");
        }
        // A changed Deployment is reconciled again.
        deploys.patch("ctl-a", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "example/two:2"}]}}}}))).await?;
        let img = image_of("ctl-a-info");
        eventually(30, "ctl-a-info to follow the new image", || {
            let f = img();
            async move { Ok(f.await?.filter(|i| i == "example/two:2")) }
        })
        .await?;
        // A deleted owned ConfigMap is put back.
        let old = cms.get("ctl-b-info").await?.metadata.uid;
        cms.delete("ctl-b-info", &DeleteParams::default()).await?;
        eventually(30, "ctl-b-info to be recreated", || {
            let cms = cms.clone();
            let old = old.clone();
            async move { Ok(cms.get_opt("ctl-b-info").await?.filter(|cm| cm.metadata.uid != old).map(|_| ())) }
        })
        .await?;
        // Deleting the Deployment lets the garbage collector remove what it owns.
        deploys.delete("ctl-a", &DeleteParams::background()).await?;
        eventually(60, "the garbage collector to delete ctl-a-info", || {
            let cms = cms.clone();
            async move { Ok(cms.get_opt("ctl-a-info").await?.is_none().then_some(())) }
        })
        .await
    }
    .await;
    task.abort();
    result
}

async fn exec_logs_and_port_forward(c: Ctx) -> Result<()> {
    let pods: Api<Pod> = c.api();
    pods.create(&PostParams::default(), &pod(&c, "web", json!({"app": "web"}), WEB)).await?;
    let p = wait_pod_ready(&pods, "web").await?;
    ensure!(p.spec.as_ref().unwrap().node_name.as_deref() == Some(c.node.as_str()));
    // The container wrote its line just before the pod turned Ready.
    eventually(10, "the pod's log", || {
        let pods = pods.clone();
        async move { Ok(Some(pods.logs("web", &LogParams::default()).await?).filter(|l| !l.is_empty())) }
    })
    .await?;
    ensure!(pods.logs("web", &LogParams::default()).await? == "started\n");
    let mut lines = Box::pin(pods.log_stream("web", &LogParams { follow: true, ..Default::default() }).await.context("log_stream")?);
    let mut first = String::new();
    futures::AsyncBufReadExt::read_line(&mut lines, &mut first).await?;
    ensure!(first == "started\n", "{first:?}");
    drop(lines);

    // Output, errors and the exit code.
    let ap = AttachParams::default().stdout(true).stderr(true);
    let mut proc = pods.exec("web", ["sh", "-c", "echo out; echo err >&2; exit 3"], &ap).await.context("exec sh -c ...")?;
    let (mut out, mut err) = (String::new(), String::new());
    let (mut so, mut se) = (proc.stdout().unwrap(), proc.stderr().unwrap());
    let status = proc.take_status().unwrap();
    tokio::try_join!(so.read_to_string(&mut out), se.read_to_string(&mut err))?;
    let status = status.await.context("no exec status")?;
    ensure!((out.as_str(), err.as_str()) == ("out\n", "err\n"), "{out:?} {err:?}");
    ensure!(status.status.as_deref() == Some("Failure") && status.reason.as_deref() == Some("NonZeroExitCode"), "{status:?}");
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    ensure!(causes.iter().any(|c| c.reason.as_deref() == Some("ExitCode") && c.message.as_deref() == Some("3")), "{causes:?}");
    proc.join().await?;

    // stdin, closed by dropping the writer (v5.channel.k8s.io).
    let mut proc = pods.exec("web", ["cat"], &AttachParams::default().stdin(true).stderr(false)).await.context("exec cat")?;
    let mut stdin = proc.stdin().unwrap();
    stdin.write_all(b"through stdin\n").await?;
    drop(stdin);
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), proc.stdout().unwrap().read_to_string(&mut out)).await.context("cat did not end after stdin closed")??;
    ensure!(out == "through stdin\n", "{out:?}");
    let status = proc.take_status().unwrap().await.context("no exec status")?;
    ensure!(status.status.as_deref() == Some("Success"), "{status:?}");

    // port-forward, then HTTP through it.
    let mut pf = pods.portforward("web", &[8080]).await.context("portforward")?;
    let mut stream = pf.take_stream(8080).context("no stream for port 8080")?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").await?;
    // Read the whole answer, then hang up first: the server closes the
    // session itself a moment after the pod's side ends (as upstream), and
    // kube-rs's join fails if its own close comes after that.
    let mut reply = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&reply).contains("hello-skiff\n") {
            let n = stream.read(&mut buf).await?;
            ensure!(n > 0, "the stream ended early: {:?}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(20), read_all).await.context("port-forward reply")??;
    let reply = String::from_utf8_lossy(&reply);
    ensure!(reply.contains("200 OK"), "{reply}");
    drop(stream);
    pf.join().await.context("port-forward session")?;
    Ok(())
}

async fn evict_and_graceful_delete(c: Ctx) -> Result<()> {
    let pods: Api<Pod> = c.api();
    for name in ["victim", "graceful"] {
        pods.create(&PostParams::default(), &pod(&c, name, json!({}), "sleep 3600")).await?;
    }
    wait_pod_ready(&pods, "victim").await?;
    wait_pod_ready(&pods, "graceful").await?;
    let status = pods.evict("victim", &EvictParams::default()).await?;
    ensure!(status.is_success(), "{status:?}");
    // A running pod's DELETE answers the pod, now carrying its deletion timestamp.
    let deleted = pods.delete("graceful", &DeleteParams::default()).await?;
    let p = deleted.left().context("DELETE of a running pod answers the Pod")?;
    ensure!(p.metadata.deletion_timestamp.is_some() && p.metadata.deletion_grace_period_seconds == Some(1), "{:?}", p.metadata);
    for name in ["victim", "graceful"] {
        eventually(60, &format!("pod {name} gone"), || {
            let pods = pods.clone();
            async move { Ok(pods.get_opt(name).await?.is_none().then_some(())) }
        })
        .await?;
    }
    Ok(())
}

async fn cordon(c: Ctx) -> Result<()> {
    let nodes: Api<Node> = Api::all(c.client.clone());
    let names = |selector: &'static str| {
        let nodes = nodes.clone();
        async move { Ok::<_, kube::Error>(nodes.list(&ListParams::default().fields(selector)).await?.items.iter().map(|n| n.name_any()).collect::<Vec<_>>()) }
    };
    let node = &c.node;
    let result = async {
        let n = nodes.cordon(node).await?;
        ensure!(n.spec.unwrap().unschedulable == Some(true));
        ensure!(names("spec.unschedulable==true").await?.contains(node), "a cordoned node matches spec.unschedulable==true");
        ensure!(!names("spec.unschedulable==false").await?.contains(node), "a cordoned node does not match spec.unschedulable==false");
        let n = nodes.uncordon(node).await?;
        ensure!(!n.spec.unwrap().unschedulable.unwrap_or(false));
        ensure!(names("spec.unschedulable==false").await?.contains(node), "after uncordon the node matches spec.unschedulable==false");
        ensure!(!names("spec.unschedulable!=false").await?.contains(node));
        Ok(())
    }
    .await;
    let _ = nodes.uncordon(node).await;
    result?;
    // A node that never had spec.unschedulable set is schedulable too (unset is false upstream).
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": null}}))).await?;
    ensure!(nodes.get(node).await?.spec.unwrap().unschedulable.is_none());
    ensure!(names("spec.unschedulable==false").await?.contains(node), "a node with spec.unschedulable unset matches spec.unschedulable==false");
    Ok(())
}

/// Runs one check in its own task: a failed `ensure!`, an error or a panic is recorded, and the next check runs.
async fn check<F: Future<Output = Result<()>> + Send + 'static>(failures: &mut Vec<String>, name: &str, f: F) {
    let started = Instant::now();
    let outcome = match tokio::spawn(tokio::time::timeout(Duration::from_secs(240), f)).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(format!("{e:#}")),
        Ok(Err(_)) => Some("timed out after 240s".to_string()),
        Err(e) => Some(match e.try_into_panic() {
            Ok(p) => p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default(),
            Err(e) => e.to_string(),
        }),
    };
    let took = started.elapsed().as_secs_f32();
    match outcome {
        None => eprintln!("check {name}: ok ({took:.1}s)"),
        Some(msg) => {
            eprintln!("check {name}: FAILED ({took:.1}s): {msg}");
            failures.push(format!("{name}: {msg}"));
        }
    }
}

#[test]
fn kube_rs_against_a_node() {
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    let node = s.wait_node_ready();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let failures = rt.block_on(async {
        // As a user's program: kube's own kubeconfig loading and TLS.
        let kubeconfig = Kubeconfig::read_from(s.kubeconfig()).expect("reading the kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
        let client = Client::try_from(config).expect("kube client");
        let ns = format!("kube-rs-{}", std::process::id());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.create(&PostParams::default(), &obj(json!({"metadata": {"name": ns}}))).await.expect("creating the namespace");
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let found = tokio::time::timeout(Duration::from_secs(60), await_condition(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some())).await;
        assert!(matches!(found, Ok(Ok(Some(_)))), "no default ServiceAccount in {ns}: {found:?}");
        let c = Ctx { client, ns: ns.clone(), image, node };

        let mut failures = Vec::new();
        check(&mut failures, "typed_crud", typed_crud(c.clone())).await;
        check(&mut failures, "discovery", discovery(c.clone())).await;
        check(&mut failures, "watcher_and_reflector", watcher_and_reflector(c.clone())).await;
        check(&mut failures, "controller", controller(c.clone())).await;
        check(&mut failures, "exec_logs_and_port_forward", exec_logs_and_port_forward(c.clone())).await;
        check(&mut failures, "evict_and_graceful_delete", evict_and_graceful_delete(c.clone())).await;
        check(&mut failures, "cordon", cordon(c.clone())).await;
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        failures
    });
    assert!(failures.is_empty(), "kube-rs checks failed:\n{}\n--- server log (tail) ---\n{}", failures.join("\n"), log_tail(&s, 60));
}
