//! A three-host cluster (server + two joined agents, each host its own
//! network and mount namespace, see `e2e::cluster`): the overlay's devices,
//! routes and Node annotations, pod-to-pod traffic across hosts by pod IP
//! with the sender's pod IP as source, an agent restart that interrupts
//! nothing, a removed host's routes disappearing from the others, and
//! nothing left on the machine afterwards. Needs root (as CI runs).

use std::collections::BTreeSet;

use e2e::cluster::{Cluster, Host};
use e2e::eventually;
use serde_json::Value;

/// busybox httpd whose CGI answers the peer address it sees.
const ECHO_SOURCE: &str = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 0.0.0.0:8080 -h /www";

fn vxlan_device(h: &Host) -> String {
    network::overlay::device_name(&h.bridge)
}

/// Asks pod `from` to fetch the peer address pod IP `to` saw.
fn source_seen(c: &Cluster, from: &str, to: &str) -> Option<String> {
    // (busybox wget's own -T crashes.)
    let out = c.kubectl(&["exec", from, "--", "timeout", "5", "wget", "-qO-", &format!("http://{to}:8080/cgi-bin/ip")]);
    if !out.ok() {
        eprintln!("{from} -> {to}: {}", out.stderr);
    }
    out.ok().then(|| out.stdout.trim().to_string())
}

#[test]
fn pods_reach_pods_on_other_hosts_with_their_own_source_ip() {
    e2e::skiff_bin(); // built first, so the timings below are the cluster's own
    let started = std::time::Instant::now();
    let c = Cluster::start(2);
    eprintln!("cluster of 3 hosts up in {:?}", started.elapsed());
    let hosts = c.hosts();

    // Every node: its own podCIDR, flannel's annotations, a VXLAN device.
    let mut cidrs = Vec::new();
    for h in hosts {
        let node: Value = serde_json::from_str(&c.ok(&["get", "node", &h.name, "-o", "json"])).unwrap();
        cidrs.push(node["spec"]["podCIDR"].as_str().unwrap().to_string());
        let annotations = eventually(30, "the flannel annotations", || {
            let node: Value = serde_json::from_str(&c.ok(&["get", "node", &h.name, "-o", "json"])).ok()?;
            let a = node["metadata"]["annotations"].clone();
            a.get("flannel.alpha.coreos.com/public-ip").is_some().then_some(a)
        });
        assert_eq!(annotations["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert_eq!(annotations["flannel.alpha.coreos.com/public-ip"], h.ip.to_string());
        let data: Value = serde_json::from_str(annotations["flannel.alpha.coreos.com/backend-data"].as_str().unwrap()).unwrap();
        assert_eq!(data["VNI"], 1);
        let mac = data["VtepMAC"].as_str().unwrap().to_string();
        let link = h.ok(&["ip", "-d", "link", "show", "dev", &vxlan_device(h)]);
        assert!(link.contains(&mac) && link.contains("vxlan id 1 ") && link.contains("dstport 8472") && link.contains(&format!("local {}", h.ip)), "{link}");
        assert!(link.contains("mtu 1450"), "VXLAN MTU is the uplink's 1500 - 50: {link}");
    }
    assert_eq!(cidrs.iter().collect::<BTreeSet<_>>().len(), 3, "distinct podCIDRs: {cidrs:?}");

    // Routes, neighbours and FDB entries for every other node.
    for (i, h) in hosts.iter().enumerate() {
        let dev = vxlan_device(h);
        eventually(30, "routes to the other nodes' podCIDRs", || {
            let routes = h.ok(&["ip", "route", "show", "dev", &dev]);
            let ok = (0..3).filter(|j| *j != i).all(|j| {
                let gw = cidrs[j].trim_end_matches("/24");
                routes.contains(&format!("{} via {gw} ", cidrs[j])) && routes.contains("onlink")
            });
            ok.then_some(())
        });
        let fdb = h.ok(&["bridge", "fdb", "show", "dev", &dev]);
        for (j, other) in hosts.iter().enumerate().filter(|(j, _)| *j != i) {
            assert!(fdb.contains(&format!("dst {} ", other.ip)), "host {i} has no FDB entry for host {j}:\n{fdb}");
        }
        let neigh = h.ok(&["ip", "neigh", "show", "dev", &dev]);
        assert_eq!(neigh.lines().filter(|l| l.contains("PERMANENT")).count(), 2, "{neigh}");
    }

    // A pod on each host; each reaches the next host's pod by IP, which sees the sender's pod IP.
    let names: Vec<String> = (0..3).map(|i| format!("echo{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        c.run_pod(name, i, ECHO_SOURCE);
    }
    let ips: Vec<String> = names.iter().map(|n| c.pod_ready_ip(n)).collect();
    for i in 0..3 {
        assert!(ips[i].starts_with(cidrs[i].trim_end_matches("0/24")), "pod {i} IP {} in {}", ips[i], cidrs[i]);
    }
    for i in 0..3 {
        let j = (i + 1) % 3;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let seen = loop {
            if let Some(seen) = source_seen(&c, &names[i], &ips[j]) {
                break seen;
            }
            if std::time::Instant::now() > deadline {
                let state: String = hosts.iter().map(|h| format!("host {}:\n{}\n{}\n", h.index, h.run(&["ip", "route"]).stdout, h.run(&["nft", "list", "ruleset"]).stdout)).collect();
                panic!("pod {i} cannot reach pod {j} at {}:\n{state}{}", ips[j], c.logs());
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        };
        assert_eq!(seen, ips[i], "pod {j} must see pod {i}'s own IP as source (no NAT inside the cluster CIDR)");
    }

    // An agent killed and restarted: traffic does not stop, the node comes back.
    hosts[1].kill9();
    assert_eq!(source_seen(&c, &names[0], &ips[1]).as_deref(), Some(ips[0].as_str()), "pods keep talking without their agent");
    hosts[1].start();
    c.wait_node_ready(1);
    let seen = eventually(30, "the pod behind the restarted agent", || source_seen(&c, &names[1], &ips[2]));
    assert_eq!(seen, ips[1]);

    // A host gone and its Node deleted: its route, neighbour and FDB entries leave the others.
    let uids: Vec<String> = names.iter().map(|n| c.ok(&["get", "pod", n, "-o", "jsonpath={.metadata.uid}"])).collect();
    c.remove_host(2);
    c.ok(&["delete", "node", &hosts[2].name]);
    for h in &hosts[..2] {
        let dev = vxlan_device(h);
        eventually(30, "the removed node's route to leave", || (!h.ok(&["ip", "route"]).contains(&cidrs[2])).then_some(()));
        assert!(!h.ok(&["bridge", "fdb", "show", "dev", &dev]).contains(&format!("dst {} ", hosts[2].ip)));
        assert_eq!(h.ok(&["ip", "neigh", "show", "dev", &dev]).lines().filter(|l| l.contains("PERMANENT")).count(), 1);
    }
    assert_eq!(source_seen(&c, &names[0], &ips[1]).as_deref(), Some(ips[0].as_str()), "the remaining hosts still talk");

    // Nothing left on the machine once the cluster is dropped.
    let (tag, dir) = (c.tag.clone(), c.dir.path().to_path_buf());
    drop(c);
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&tag), "network namespaces left");
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&tag), "links left");
    let tables = std::process::Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains(&tag), "nft tables left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "mounts left:\n{mounts}");
    for uid in uids {
        let found = std::process::Command::new("sh").args(["-c", &format!("find /sys/fs/cgroup/ -maxdepth 5 -type d -name 'pod{uid}'")]).output().unwrap();
        assert!(found.stdout.is_empty(), "pod cgroups left: {}", String::from_utf8_lossy(&found.stdout));
    }
    eprintln!("whole test took {:?}", started.elapsed());
}
