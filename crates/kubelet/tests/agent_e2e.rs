//! The node agent end to end, in one process: an in-process API server on
//! a memory store, the real runtime (runc, overlayfs, this test binary as
//! the container shim) and the real pod network (a bridge and an nftables
//! table named after this process). Needs root, runc and busybox-static.
//!
//! `harness = false`: the binary is also the shim the runtime starts.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use runtime::cri::RuntimeService;
use runtime::images::testimage;

const SHIM_ARG: &str = "container-shim";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SHIM_ARG) {
        runtime::containers::shim_main(args[2..].to_vec());
    }
    if !is_root() || !Path::new("/usr/sbin/runc").exists() && !Path::new("/usr/bin/runc").exists() {
        eprintln!("skipping agent_e2e: needs root and runc");
        println!("0 passed, 0 failed");
        return;
    }
    // The agent's own log on stderr, so a failure here explains itself.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "warn,kubelet=info,runtime=info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let result = rt.block_on(run_scenario());
    match result {
        Ok(()) => println!("1 passed, 0 failed"),
        Err(e) => {
            println!("0 passed, 1 failed");
            eprintln!("agent_e2e failed: {e:#}");
            std::process::exit(1);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        if let Some(v) = f().await {
            eprintln!("{what}: {:.1?}", started.elapsed());
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Env {
    _dir: tempfile::TempDir,
    network: Option<Arc<network::PodNetwork>>,
    runtime: Arc<runtime::containers::Runtime>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Env {
    /// Stops the agent, then removes what it left: sandboxes, network.
    async fn cleanup(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Ok(list) = self.runtime.list_pod_sandboxes().await {
            for sb in list {
                let _ = self.runtime.stop_pod_sandbox(&sb.id).await;
                if let Some(n) = &self.network {
                    let _ = n.detach(&sb.id).await;
                }
                let _ = self.runtime.remove_pod_sandbox(&sb.id).await;
            }
        }
        if let Some(n) = self.network.take() {
            if let Err(e) = n.teardown_host().await {
                eprintln!("tearing down the test network: {e:#}");
            }
        }
    }
}

async fn run_scenario() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("skiff-agent-e2e-").tempdir()?;
    let root = dir.path().to_path_buf();
    let kubeconfig = root.join("kubeconfig.yaml");
    let config = apiserver::Config {
        data_dir: root.clone(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: free_port(),
        kubeconfig: kubeconfig.clone(),
        service_cidr: apiserver::Cidr::parse("10.43.0.0/16").unwrap(),
        node_ports: (30000, 32767),
        event_ttl: std::time::Duration::from_secs(3600),
        cluster_dns: None,
        authn: Default::default(),
    };
    let server = apiserver::start(config, Arc::new(store::MemoryStore::new())).await?;
    let server_task = tokio::spawn(async move {
        let _ = server.serve(std::future::pending()).await;
    });
    let client = client::kubeconfig::from_kubeconfig(&kubeconfig).await?;

    let store = Arc::new(runtime::images::Store::open(root.join("images"), vec![])?);
    let tar = root.join("busybox.tar");
    std::fs::write(&tar, testimage::docker_save_tar("busybox:e2e", &testimage::busybox_layer_tar()))?;
    store.import(&tar).await?;
    let shim = runtime::containers::ShimCommand { program: std::env::current_exe()?, args_prefix: vec![SHIM_ARG.into()] };
    let rt = Arc::new(runtime::containers::Runtime::open(root.join("agent"), store.clone(), shim)?);

    let pid = std::process::id();
    // A pod range of its own per run (10.199.x.0/24), unlikely to meet another test's.
    let config = kubelet::agent::AgentConfig {
        node_name: format!("e2e-{pid}"),
        data_dir: root.join("agent"),
        pod_cidr_fallback: format!("10.199.{}.0/24", pid % 250),
        pod_cidr_wait: Duration::from_millis(500),
        node_ip: Some(Ipv4Addr::LOCALHOST),
        // One node, no peers: no VXLAN device (one per network namespace) to leave behind.
        flannel_backend: network::overlay::Backend::HostGw,
        ..Default::default()
    };
    let agent = AgentParts { client: client.clone(), config, runtime: rt.clone(), store, net_state: root.join("net"), net: Arc::default() };
    let agent_task = agent.spawn();
    let mut env = Env { _dir: dir, network: None, runtime: rt.clone(), tasks: vec![server_task, agent_task] };
    let result = scenario(&agent, &mut env).await;
    if result.is_err() {
        report(&client).await;
    }
    env.network = agent.net.lock().unwrap().clone();
    env.cleanup().await;
    result
}

/// What it takes to (re)start the agent.
struct AgentParts {
    client: kube::Client,
    config: kubelet::agent::AgentConfig,
    runtime: Arc<runtime::containers::Runtime>,
    store: Arc<runtime::images::Store>,
    net_state: PathBuf,
    net: Arc<std::sync::Mutex<Option<Arc<network::PodNetwork>>>>,
}

impl AgentParts {
    fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let pid = std::process::id();
        let (slot, state_dir) = (self.net.clone(), self.net_state.clone());
        let factory = move |pod_cidr: String| {
            let net = Arc::new(network::PodNetwork::new(network::NetConfig {
                bridge: format!("ske{pid}"),
                pod_cidr,
                cluster_cidr: "10.199.0.0/16".into(),
                mtu: None,
                state_dir,
                nft_table: format!("skiff_e2e_{pid}"),
            })?);
            *slot.lock().unwrap() = Some(net.clone());
            Ok(net)
        };
        let runtime: Arc<dyn RuntimeService> = self.runtime.clone();
        let (client, config, store) = (self.client.clone(), self.config.clone(), self.store.clone());
        tokio::spawn(async move {
            let Err(e) = kubelet::agent::run(client, config, runtime, store, factory).await;
            eprintln!("agent stopped: {e:#}");
        })
    }
}

/// What the API holds about the test's pods, printed when the scenario fails.
async fn report(client: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for p in pods.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
        eprintln!("pod {}: {}", p.metadata.name.unwrap_or_default(), serde_json::to_string(&p.status).unwrap_or_default());
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    for e in events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
        let object = e.involved_object.name.unwrap_or_default();
        eprintln!("event {object}: {} {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default());
    }
}

fn pod(json: serde_json::Value) -> Pod {
    serde_json::from_value(json).expect("pod JSON")
}

async fn scenario(agent: &AgentParts, env: &mut Env) -> anyhow::Result<()> {
    let (client, node, rt, net) = (&agent.client, agent.config.node_name.as_str(), &agent.runtime, &agent.net);
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the node to be Ready", Duration::from_secs(60), async || {
        let n = nodes.get_opt(node).await.ok()??;
        n.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let web = pod(serde_json::json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "initContainers": [{"name": "init", "image": "busybox:e2e", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo ready > /work/flag"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [{"name": "app", "image": "busybox:e2e", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "exec sleep 3600"],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"exec": {"command": ["sh", "-c", "test \"$POD\" = web && cat /work/flag"]}, "periodSeconds": 1},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}]},
    }));
    pods.create(&PostParams::default(), &web).await?;
    let running = wait_for("web to be Running and Ready", Duration::from_secs(60), async || {
        let p = pods.get_opt("web").await.ok()??;
        let st = p.status.clone()?;
        (st.phase.as_deref() == Some("Running") && st.container_statuses.as_ref()?.first()?.ready).then_some(p)
    })
    .await?;
    let st = running.status.unwrap();
    let ip: Ipv4Addr = st.pod_ip.clone().unwrap_or_default().parse()?;
    let st_ip = st.pod_ip.clone();
    anyhow::ensure!(ip.octets()[..2] == [10, 199], "pod IP {ip} from the node's range");
    let init = &st.init_container_statuses.clone().unwrap()[0];
    anyhow::ensure!(init.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0), "init container completed: {init:?}");
    anyhow::ensure!(st.qos_class.as_deref() == Some("BestEffort"));
    anyhow::ensure!(st.conditions.clone().unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));

    // A restarted agent adopts what runs: no new containers, no restarts, same address.
    let before = rt.list_containers(None).await?.len();
    let first = env.tasks.pop().expect("agent task");
    first.abort();
    let _ = first.await;
    env.tasks.push(agent.spawn());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = wait_for("web to stay Ready after the agent restarted", Duration::from_secs(30), async || {
        let p = pods.get_opt("web").await.ok()??;
        let cs = p.status.clone()?.container_statuses?.first()?.clone();
        cs.ready.then_some(p)
    })
    .await?;
    let st2 = again.status.unwrap();
    anyhow::ensure!(st2.container_statuses.unwrap()[0].restart_count == 0, "no restart after the agent restarted");
    anyhow::ensure!(st2.pod_ip == st_ip, "same pod IP after the agent restarted");
    anyhow::ensure!(rt.list_containers(None).await?.len() == before, "no duplicate containers after the agent restarted");

    let fail = pod(serde_json::json!({
        "metadata": {"name": "fail"},
        "spec": {"nodeName": node, "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox:e2e", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo -n goodbye > /dev/termination-log; exit 3"]}]},
    }));
    pods.create(&PostParams::default(), &fail).await?;
    let failed = wait_for("fail to fail", Duration::from_secs(60), async || {
        let p = pods.get_opt("fail").await.ok()??;
        (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(p)
    })
    .await?;
    let term = failed.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    anyhow::ensure!(term.exit_code == 3 && term.reason.as_deref() == Some("Error") && term.message.as_deref() == Some("goodbye"), "terminated: {term:?}");

    // Deleting: the agent stops the containers, frees the address and removes the Pod.
    for name in ["web", "fail"] {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    wait_for("the pods to be gone", Duration::from_secs(60), async || {
        (pods.get_opt("web").await.ok()?.is_none() && pods.get_opt("fail").await.ok()?.is_none()).then_some(())
    })
    .await?;
    anyhow::ensure!(rt.list_pod_sandboxes().await?.is_empty(), "sandboxes removed");
    let allocations = net.lock().unwrap().as_ref().map(|n| n.allocations()).unwrap_or_default();
    anyhow::ensure!(allocations.is_empty(), "addresses freed: {allocations:?}");
    Ok(())
}
