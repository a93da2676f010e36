//! skiff: Kubernetes in one binary. This file only parses the command line
//! and wires the crates together.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod cleanup;
mod image;
mod join;
mod sim;

#[derive(Parser)]
#[command(name = "skiff", version, about = "Kubernetes in one binary: API server, datastore and (soon) the rest of the cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: API server on its embedded datastore.
    Server(ServerArgs),
    /// Join a cluster as a further node: containers and pod network on this host, the API on --server.
    Agent(agent::JoinArgs),
    /// Measure the API server: create/get/list/watch throughput and latency, and memory.
    Bench(bench::BenchArgs),
    /// Simulated nodes: register N Nodes, renew their Leases and run their pods' status (no containers).
    Sim(sim::SimArgs),
    /// Run the scheduler alone against any API server.
    Scheduler(RemoteArgs),
    /// Run the controllers alone against any API server.
    ControllerManager(ControllerManagerArgs),
    /// Manage the node's image store (DATA_DIR/agent/images): import, ls, rm, pull.
    Image(image::ImageArgs),
    /// Stop this node's pods and remove what the node put on the host: containers, mounts, cgroups, bridge, VXLAN device, routes, nft tables.
    Cleanup(cleanup::CleanupArgs),
}

#[derive(clap::Args)]
struct RemoteArgs {
    /// Kubeconfig of the API server to work for.
    #[arg(long)]
    kubeconfig: PathBuf,
}

#[derive(clap::Args)]
struct ControllerManagerArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// IPv4 range node pod CIDRs (a /24 per node) are allocated from.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    #[command(flatten)]
    storage: LocalStorageArgs,
}

/// The built-in local-path provisioner.
#[derive(clap::Args)]
struct LocalStorageArgs {
    /// Directory on each node that local-path volumes are made in [default: DATA_DIR/storage; /var/lib/skiff/storage for controller-manager].
    #[arg(long)]
    default_local_storage_path: Option<PathBuf>,
    /// Neither create the default `local-path` StorageClass nor provision its volumes.
    #[arg(long)]
    disable_local_storage: bool,
}

impl LocalStorageArgs {
    fn root(&self, data_dir: &std::path::Path) -> Option<PathBuf> {
        (!self.disable_local_storage).then(|| self.default_local_storage_path.clone().unwrap_or_else(|| data_dir.join("storage")))
    }
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory for the datastore, certificates and kubeconfig.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Port of the HTTPS API.
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// Where to write the admin kubeconfig [default: DATA_DIR/kubeconfig.yaml].
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// IPv4 range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    /// IPv4 range node pod CIDRs (a /24 per node) are allocated from.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// Port range NodePort services are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// How long Events are kept after they were last seen, e.g. 1h, 30m, 90s.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: std::time::Duration,
    /// Secret (or whole K10... token) agents join with [default: the one stored in DATA_DIR/server/token, made on first start].
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Issuer (`iss`) of the ServiceAccount tokens this server signs and accepts.
    #[arg(long, default_value = apiserver::authn::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Audiences API tokens must name (comma-separated) [default: the issuer].
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// Static bearer tokens: a CSV file of token,user,uid[,"group1,group2"] lines.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous (false: refuse them, even /healthz, with 401).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// Do not run the node agent (containers, pod network) on this host.
    #[arg(long)]
    disable_agent: bool,
    #[command(flatten)]
    agent: agent::AgentArgs,
    /// Do not run the controllers (ServiceAccount, root CA publisher, ...) in this process.
    #[arg(long)]
    disable_controllers: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    #[command(flatten)]
    storage: LocalStorageArgs,
}

fn parse_port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (lo, hi) = s.split_once('-').with_context(|| format!("--service-node-port-range {s:?}: want LOW-HIGH, e.g. 30000-32767"))?;
    let (lo, hi): (u16, u16) = (lo.trim().parse()?, hi.trim().parse()?);
    anyhow::ensure!(lo > 0 && lo <= hi, "--service-node-port-range {s:?}: LOW must be at least 1 and not above HIGH");
    Ok((lo, hi))
}

/// A Go-style duration as upstream's flags take it: "1h", "30m", "1h30m", "90s".
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?}: want a duration such as 1h, 30m, 1h30m or 90s");
    let (mut total, mut number) = (0u64, String::new());
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total += number.parse::<u64>().map_err(|_| bad())? * unit;
        number.clear();
    }
    if !number.is_empty() || s.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

async fn server(mut args: ServerArgs) -> anyhow::Result<()> {
    let service_cidr = apiserver::Cidr::parse(&args.service_cidr).context("--service-cidr")?;
    let cluster_dns = *args.agent.cluster_dns.get_or_insert(service_cidr.nth(10));
    let node_ports = parse_port_range(&args.service_node_port_range)?;
    let db_dir = args.data_dir.join("server").join("db");
    std::fs::create_dir_all(&db_dir).with_context(|| format!("creating {}", db_dir.display()))?;
    let store = store::SqliteStore::open(&db_dir.join("state.db")).context("opening the datastore")?;
    let config = apiserver::Config {
        kubeconfig: args.write_kubeconfig.unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml")),
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        port: args.https_listen_port,
        service_cidr,
        node_ports,
        event_ttl: args.event_ttl,
        cluster_dns: Some(cluster_dns),
        authn: apiserver::authn::Options {
            issuer: args.service_account_issuer.clone(),
            audiences: args.api_audiences.iter().filter(|a| !a.is_empty()).cloned().collect(),
            token_auth_file: args.token_auth_file.clone(),
            anonymous: args.anonymous_auth,
            ..Default::default()
        },
    };
    let server = apiserver::start(config, Arc::new(store)).await?;
    server.enable_join(&args.data_dir.join("server").join("token"), args.token.as_deref(), &args.cluster_cidr)?;
    let local_storage = args.storage.root(&args.data_dir);
    if args.disable_agent {
        tracing::info!("node agent disabled");
    } else {
        let client = client::in_process(server.router.clone());
        let run = agent::run_local(client, server.pki.clone(), server.ca_pem.clone(), args.data_dir, args.cluster_cidr.clone(), args.agent);
        tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::error!("node agent stopped: {e:#}");
            }
        });
    }
    if !args.disable_controllers {
        let client = client::in_process(server.router.clone());
        let options = controllers::Options { ca_pem: server.ca_pem.clone(), cluster_cidr: args.cluster_cidr.clone(), local_storage };
        tokio::spawn(controllers::run(client, identity("controller-manager"), options, std::future::pending()));
    }
    if !args.disable_scheduler {
        tokio::spawn(scheduler::run(client::in_process(server.router.clone()), identity("scheduler"), std::future::pending()));
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.serve(shutdown).await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// This process's name in leader-election leases.
fn identity(component: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}_{}_{}", host.trim(), component, std::process::id())
}

/// glibc gives threads arenas of their own (up to 8 per core); across the
/// runtime's workers and blocking threads that fragments the heap, about a
/// fifth of the server's memory at scale (docs/performance.md). Two arenas
/// cost no measurable throughput. `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets a tunable.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

fn main() -> anyhow::Result<()> {
    // A container's shim forks: it must start before any thread or runtime exists.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(agent::SHIM_SUBCOMMAND) {
        runtime::containers::shim_main(argv[2..].to_vec());
    }
    limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match cli.command {
            Command::Server(a) => server(a).await,
            Command::Agent(a) => agent::run_joined(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Sim(a) => sim::run(a).await,
            Command::Image(a) => image::run(a).await,
            Command::Cleanup(a) => cleanup::run(a).await,
            Command::Scheduler(a) => {
                let client = client::kubeconfig::from_kubeconfig(&a.kubeconfig).await?;
                scheduler::run(client, identity("scheduler"), shutdown_signal()).await;
                Ok(())
            }
            Command::ControllerManager(a) => {
                let (client, ca_pem) = client::kubeconfig::from_kubeconfig_with_ca(&a.remote.kubeconfig).await?;
                let local_storage = a.storage.root(std::path::Path::new("/var/lib/skiff"));
                let options = controllers::Options { ca_pem, cluster_cidr: a.cluster_cidr, local_storage };
                controllers::run(client, identity("controller-manager"), options, shutdown_signal()).await;
                Ok(())
            }
        }
    })
}
