//! `skiff bench proxy`: the service proxy's nftables programming at scale
//! (needs root). In a throwaway node namespace with two responder pods and
//! a client pod (`network::proxy::testbed`), it programs N Services x M
//! endpoints from nothing, times single Service and endpoint changes at
//! that size, and runs a connection loop against one Service during a full
//! re-sync, counting failures. The namespaces (and the table) are deleted
//! at the end.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use network::proxy::testbed::{ask, Testbed};
use network::proxy::{Endpoint, Proxier, ServicePort};
use serde::Serialize;

use super::stats::Latency;

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Services to program.
    #[arg(long, default_value_t = 10000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Single changes to time (alternately an endpoint and a Service change).
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Print a JSON summary on stdout (the readable report then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Run `nft -f -` for every batch instead of libnftables in process (the fallback).
    #[arg(long)]
    spawn_nft: bool,
    /// Send a full sync's elements as nft text too, not over netlink.
    #[arg(long)]
    text_full_sync: bool,
    /// Do not tell the proxy the node's pod range, so every endpoint goes in the hairpin set.
    #[arg(long)]
    hairpin_all: bool,
}

#[derive(Serialize)]
struct Report {
    services: usize,
    endpoints_per_service: usize,
    backend: &'static str,
    full_sync_seconds: f64,
    /// CPU time of this process and its children during the full sync.
    full_sync_cpu_seconds: f64,
    full_sync_lines: usize,
    /// Elements a full sync sent over netlink (not as nft text).
    full_sync_netlink_elements: usize,
    endpoint_change: Latency,
    service_change: Latency,
    resync_seconds: f64,
    resync_connections: usize,
    resync_failures: usize,
    established_connection_survived: bool,
}

/// Second octet of the testbed's addresses (10.<it>.0.0/16) and of the Service IPs (10.<it + 1>...).
const OCTET: u8 = 228;

pub async fn run(args: ProxyArgs) -> Result<()> {
    anyhow::ensure!(args.services >= 2 && args.endpoints >= 1, "need at least 2 services and 1 endpoint");
    anyhow::ensure!(args.services <= 60000, "at most 60000 services (the Service IPs come from one /16)");
    let say = |s: String| if args.json { eprintln!("{s}") } else { println!("{s}") };
    let tag = format!("b{:x}", std::process::id() % 0xfffffff);
    let mut bed = Testbed::new(&tag, OCTET).context("building the test namespaces (needs root)")?;
    let (a, b, client) = (bed.add_pod("a")?, bed.add_pod("b")?, bed.add_pod("c")?);
    a.serve(8080)?;
    b.serve(8080)?;
    let runner = match (args.spawn_nft, args.text_full_sync) {
        (true, _) => bed.runner().spawning(),
        (false, true) => bed.runner().without_netlink(),
        (false, false) => bed.runner(),
    };
    runner.ensure_bridge_nf_call().await?;
    let pod_cidr = (!args.hairpin_all).then(|| bed.pod_cidr());
    let mut proxier = Proxier::new("bench_proxy", bed.cluster_cidr().parse()?, runner).with_node_ips(vec![bed.node_ip]).with_pod_cidr(pod_cidr);
    let backend = proxier.backend();

    // Service 0 is real (pods a and b); the others point at addresses nobody uses.
    let mut ports: Vec<ServicePort> = (0..args.services).map(|i| service(i, args.endpoints)).collect();
    ports[0].endpoints = [a.ip, b.ip].iter().map(|ip| endpoint(*ip)).collect();
    let probe = SocketAddrV4::new(ports[0].cluster_ips[0], 80);

    say(format!("skiff bench proxy: {} services x {} endpoints, in netns {}, through {backend}", args.services, args.endpoints, bed.node_ns));
    let cpu_before = cpu_seconds();
    let full = proxier.sync_all(ports.clone()).await.context("full sync")?;
    let full_cpu = cpu_seconds() - cpu_before;
    say(format!("full sync         {:>9.3} s  ({} lines + {} elements over netlink, {full_cpu:.3} s CPU)", full.elapsed.as_secs_f64(), full.lines, full.elements));
    let mut check = client.connect(probe, Duration::from_secs(3)).context("connecting to the probe Service")?;
    let first = ask(&mut check)?;

    let (mut endpoint_times, mut service_times) = (Vec::new(), Vec::new());
    for i in 0..args.changes {
        let k = 1 + (i * 7919) % (args.services - 1);
        let sp = &mut ports[k];
        if i % 2 == 0 {
            // An endpoint replaced by another (a pod restarted elsewhere).
            let e = i % sp.endpoints.len();
            let ip = u32::from(sp.endpoints[e].ip).wrapping_add(1 << 16);
            sp.endpoints[e].ip = Ipv4Addr::from(ip);
        } else {
            // A Service change: an externalIP added or removed.
            if sp.external_ips.is_empty() {
                sp.external_ips.push(Ipv4Addr::new(192, 0, 2, (k % 250) as u8 + 1));
            } else {
                sp.external_ips.clear();
            }
        }
        let change = BTreeMap::from([((sp.namespace.clone(), sp.name.clone()), vec![sp.clone()])]);
        let started = Instant::now();
        proxier.update(change).await.with_context(|| format!("change {i}"))?;
        if i % 2 == 0 { &mut endpoint_times } else { &mut service_times }.push(started.elapsed());
    }
    let (endpoint_change, service_change) = (Latency::of(endpoint_times), Latency::of(service_times));
    say(format!("endpoint change   {}", endpoint_change.text()));
    say(format!("service change    {}", service_change.text()));

    // New connections in a loop while the whole table is replaced.
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let (stop, netns) = (stop.clone(), client.netns.clone());
        std::thread::spawn(move || {
            network::in_netns(&netns, move || {
                let (mut ok, mut failed) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let r = std::net::TcpStream::connect_timeout(&probe.into(), Duration::from_secs(2))
                        .and_then(|mut c| ask(&mut c));
                    match r {
                        Ok(name) if name == "a" || name == "b" => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resync = proxier.sync_all(ports.clone()).await.context("full re-sync")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = looping.join().map_err(|_| anyhow::anyhow!("connection loop panicked"))??;
    let survived = ask(&mut check).map(|n| n == first).unwrap_or(false);
    say(format!(
        "full re-sync      {:>9.3} s  with {} connections during it, {} failed; established connection kept: {}",
        resync.elapsed.as_secs_f64(),
        ok + failed,
        failed,
        survived
    ));
    drop(bed);

    if args.json {
        let report = Report {
            services: args.services,
            endpoints_per_service: args.endpoints,
            backend,
            full_sync_seconds: full.elapsed.as_secs_f64(),
            full_sync_cpu_seconds: full_cpu,
            full_sync_lines: full.lines,
            full_sync_netlink_elements: full.elements,
            endpoint_change,
            service_change,
            resync_seconds: resync.elapsed.as_secs_f64(),
            resync_connections: ok + failed,
            resync_failures: failed,
            established_connection_survived: survived,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn service(i: usize, endpoints: usize) -> ServicePort {
    let vip = Ipv4Addr::new(10, OCTET + 1, (i / 250) as u8, (i % 250) as u8 + 1);
    let endpoints = (0..endpoints)
        .map(|e| endpoint(Ipv4Addr::new(10, OCTET, 2 + ((i * endpoints + e) / 250 % 250) as u8, ((i * endpoints + e) % 250) as u8 + 1)))
        .collect();
    ServicePort::tcp("bench", &format!("svc-{i}"), vip, 80, endpoints)
}

/// User + system time of this process and its waited-for children.
fn cpu_seconds() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

fn endpoint(ip: Ipv4Addr) -> Endpoint {
    Endpoint { ip, port: 8080, ready: true, serving: true, terminating: false, local: true }
}
