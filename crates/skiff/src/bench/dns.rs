//! `skiff bench dns`: the cluster DNS server at scale. Starts an API server
//! (no controllers, no agent), creates `--services` ClusterIP Services, each
//! with an EndpointSlice of two endpoints, then runs the DNS server in this
//! process against it on a loopback address and measures its memory before
//! and after it loaded them, and UDP queries for in-cluster names from
//! `--clients` tasks (one query in flight each) for `--seconds`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use super::server::{self, LocalServer, Memory};
use super::stats::{run_ops, Latency};

const NAMESPACE: &str = "bench-dns";

#[derive(clap::Args)]
pub struct DnsArgs {
    /// ClusterIP Services to create (each with an EndpointSlice of two endpoints).
    #[arg(long, default_value_t = 10000)]
    services: usize,
    /// Client tasks sending queries, one in flight each.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long the query load runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Creates in flight while loading the Services.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    services: usize,
    clients: usize,
    seconds: f64,
    queries: usize,
    errors: usize,
    queries_per_sec: f64,
    latency: Latency,
    /// This process's memory with the DNS server running on an empty cluster.
    memory_before: Memory,
    /// ... and once it has loaded every Service and EndpointSlice.
    memory_after: Memory,
    /// Time from the DNS server's start until every Service answered.
    load_seconds: f64,
    /// Average CPU cores used during the query load (server and clients share them).
    cpu_cores: f64,
}

pub async fn run(args: DnsArgs) -> Result<()> {
    anyhow::ensure!(args.services > 0, "--services must be at least 1 (the queries ask for random Services)");
    let say = |s: String| if args.json { eprintln!("{s}") } else { println!("{s}") };
    let mut api = LocalServer::start(&["--disable-agent", "--disable-controllers", "--disable-scheduler"])?;
    let (_, http) = api.wait_ready().await?;
    http.fetch(Method::POST, "/api/v1/namespaces", &[("content-type", "application/json")], Bytes::from(format!(r#"{{"metadata":{{"name":"{NAMESPACE}"}}}}"#))).await?;
    let client = client::kubeconfig::from_kubeconfig(&api.kubeconfig).await?;

    // The DNS server first, on an empty cluster.
    let addr = SocketAddr::from((Ipv4Addr::new(127, 53, 0, 1 + (std::process::id() % 250) as u8), free_port()?));
    let index = ::dns::Index::new("cluster.local");
    let config = ::dns::DnsConfig { listen: vec![addr], upstreams: Some(Vec::new()), ..Default::default() };
    let dns_task = tokio::spawn(::dns::serve_index(Some(client), index.clone(), config));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory_before = server::memory(std::process::id())?;
    say(format!("dns        server on {addr}; RSS {:.1} MiB before loading", mib(memory_before)));

    let started = Instant::now();
    let (p, _) = run_ops("services", args.services, args.concurrency, |i| {
        let http = &http;
        async move {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/services");
            http.fetch(Method::POST, &path, &[("content-type", "application/json")], service(i)).await?;
            let path = format!("/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices");
            http.fetch(Method::POST, &path, &[("content-type", "application/json")], slice(i)).await.map(drop)
        }
    })
    .await;
    anyhow::ensure!(p.errors == 0, "creating Services: {}", p.first_error.unwrap_or_default());
    say(format!("dns        {} Services + EndpointSlices created in {:.1}s", args.services, p.seconds));
    // Loaded when the index has every Service and slice.
    let deadline = Instant::now() + Duration::from_secs(300);
    while loaded(&index) < 2 * args.services {
        anyhow::ensure!(Instant::now() < deadline, "the DNS server loaded {} of {} objects", loaded(&index), 2 * args.services);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory_after = server::memory(std::process::id())?;
    say(format!("dns        all loaded {load_seconds:.1}s after the first create; RSS {:.1} MiB (+{:.1} MiB)", mib(memory_after), mib(memory_after) - mib(memory_before)));

    // The load.
    let cpu_before = own_cpu();
    let t = Instant::now();
    let until = t + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients).map(|c| tokio::spawn(client_loop(addr, c, args.services, until))).collect();
    let mut samples = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (s, e) = task.await??;
        samples.extend(s);
        errors += e;
    }
    let seconds = t.elapsed().as_secs_f64();
    let cpu_cores = (own_cpu() - cpu_before) / seconds;
    let queries = samples.len();
    let report = Report {
        services: args.services,
        clients: args.clients,
        seconds,
        queries,
        errors,
        queries_per_sec: queries as f64 / seconds,
        latency: Latency::of(samples),
        memory_before,
        memory_after,
        load_seconds,
        cpu_cores,
    };
    say(format!(
        "dns        {} clients, {:.0}s: {:.0} queries/s ({} answered, {} errors), {}, cpu cores {:.2}",
        report.clients,
        report.seconds,
        report.queries_per_sec,
        report.queries,
        report.errors,
        report.latency.text(),
        report.cpu_cores
    ));
    dns_task.abort();
    drop(http);
    api.stop()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn loaded(index: &::dns::Index) -> usize {
    let t = index.read();
    t.namespaces.get(NAMESPACE).map_or(0, |n| n.services.len() + n.slices.values().map(|s| s.len()).sum::<usize>())
}

fn mib(m: Memory) -> f64 {
    m.rss_kb as f64 / 1024.0
}

fn free_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Service `svc-<i>` with ClusterIP 10.43.x.y (from 10.43.1.0 up) and a named port.
fn service(i: usize) -> Bytes {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 1, 0)) + i as u32);
    Bytes::from(
        serde_json::json!({
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"clusterIP": ip.to_string(), "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        })
        .to_string(),
    )
}

fn slice(i: usize) -> Bytes {
    let ip = |k: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + 2 * i as u32 + k).to_string();
    Bytes::from(
        serde_json::json!({
            "metadata": {"name": format!("svc-{i}-1"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip(0)], "conditions": {"ready": true}}, {"addresses": [ip(1)], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        })
        .to_string(),
    )
}

/// Queries A records of random Services until `until`, one at a time;
/// returns the latencies of the answered ones and the count of failures.
async fn client_loop(server: SocketAddr, c: usize, services: usize, until: Instant) -> Result<(Vec<Duration>, usize)> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await.context("connecting the query socket")?;
    let mut samples = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    let mut buf = vec![0u8; 1500];
    let mut id = (c as u16).wrapping_mul(7919);
    let mut x = c as u64 * 0x9E37_79B9 + 1;
    while Instant::now() < until {
        // xorshift: a cheap spread over the Services.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id = id.wrapping_add(1);
        let q = ::dns::wire::query_message(id, &format!("svc-{}.{NAMESPACE}.svc.cluster.local", x as usize % services), ::dns::wire::TYPE_A);
        let t = Instant::now();
        sock.send(&q).await?;
        let ok = loop {
            match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 12 && buf[..2] == id.to_be_bytes() => break n > 12 && buf[3] & 0xF == 0 && buf[7] == 1,
                Ok(Ok(_)) => continue,
                _ => break false,
            }
        };
        if ok {
            samples.push(t.elapsed());
        } else {
            errors += 1;
        }
    }
    Ok((samples, errors))
}

/// CPU seconds (user + system) this process has used.
fn own_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}
