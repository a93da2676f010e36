//! Services and cluster DNS on a three-host cluster (server + two joined
//! agents, each host its own network and mount namespace, see
//! `e2e::cluster`), driven as a user would with the real kubectl: a
//! Deployment behind a Service reached by name from a pod on every host,
//! NodePort, LoadBalancer (with loadBalancerSourceRanges), UDP, ExternalName, headless Services, a Service
//! without endpoints, session affinity, externalTrafficPolicy Local,
//! scaling, an agent killed and restarted, and a host lost. One cluster
//! serves every check. Needs root (as CI runs).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::cluster::{Cluster, BUSYBOX};
use e2e::eventually;
use serde_json::Value;

/// httpd on 8080 answering its pod name at `/` and the client address it sees at `/cgi-bin/ip`.
const WEB: &str = "mkdir -p /www/cgi-bin && hostname > /www/index.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www";

fn web_deployment(replicas: u32) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
  "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "web"}}}},
    "template": {{"metadata": {{"labels": {{"app": "web"}}}},
      "spec": {{"terminationGracePeriodSeconds": 1,
        "topologySpreadConstraints": [{{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {{"matchLabels": {{"app": "web"}}}}}}],
        "tolerations": [
          {{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}},
          {{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}}],
        "containers": [{{"name": "web", "image": "{BUSYBOX}", "imagePullPolicy": "Never", "command": ["sh", "-c", {cmd}],
          "ports": [{{"name": "http", "containerPort": 8080}}],
          "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}}}}]}}}}}}}}"#,
        cmd = serde_json::to_string(WEB).unwrap()
    )
}

/// socat answering every UDP datagram on 9000 with its pod's name; three
/// replicas spread over the hosts.
fn udp_echo_deployment() -> Value {
    serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "udp-echo"},
      "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "udp-echo"}},
        "template": {"metadata": {"labels": {"app": "udp-echo"}},
          "spec": {"terminationGracePeriodSeconds": 1,
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "udp-echo"}}}],
            "containers": [{"name": "echo", "image": BUSYBOX, "imagePullPolicy": "Never",
              "command": ["socat", "UDP4-RECVFROM:9000,fork", "SYSTEM:hostname"],
              "ports": [{"containerPort": 9000, "protocol": "UDP"}]}]}}}})
}

/// `curl` in a pod; Ok(body) or Err(curl's exit code and stderr).
fn curl_in(c: &Cluster, pod: &str, url: &str) -> Result<String, String> {
    let out = c.kubectl(&["exec", pod, "--", "curl", "-sS", "--max-time", "5", url]);
    if out.ok() {
        Ok(out.stdout.trim().to_string())
    } else {
        Err(format!("{} {}", out.stdout, out.stderr))
    }
}

/// `curl` from a host's own network namespace (not a pod).
fn curl_on_host(c: &Cluster, host: usize, url: &str) -> Result<String, String> {
    let out = c.host(host).run(&["curl", "-sS", "--max-time", "5", url]);
    if out.ok() {
        Ok(out.stdout.trim().to_string())
    } else {
        Err(out.stderr)
    }
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.ok(&all)).unwrap()
}

/// Names of the web pods that are Ready now.
fn ready_web_pods(c: &Cluster) -> BTreeSet<String> {
    let pods = json(c, &["get", "pods", "-l", "app=web"]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Asks `url` from pod `client` until every pod in `expected` has answered (and nothing else has).
fn answers_from_all(c: &Cluster, client: &str, url: &str, expected: &BTreeSet<String>) {
    answered_by_all(&format!("{client} -> {url}"), expected, || curl_in(c, client, url));
}

/// Repeats `ask` until every name in `expected` has answered (and nothing else has).
fn answered_by_all(what: &str, expected: &BTreeSet<String>, mut ask: impl FnMut() -> Result<String, String>) {
    let mut seen = BTreeSet::new();
    eventually(60, &format!("{what} answered by every pod of {expected:?}"), || {
        match ask() {
            Ok(body) => {
                assert!(expected.contains(&body), "{what} answered {body:?}, not one of {expected:?}");
                seen.insert(body);
            }
            Err(e) => eprintln!("{what}: {e}"),
        }
        (seen == *expected).then_some(())
    });
}

/// One UDP datagram from pod `client` to `target` (host:port) with socat; Ok(the reply).
fn udp_in(c: &Cluster, client: &str, target: &str) -> Result<String, String> {
    let script = format!("echo ping | socat -t 3 -T 3 - UDP4:{target}");
    let out = c.kubectl(&["exec", client, "--", "sh", "-c", &script]);
    match out.stdout.trim() {
        reply if out.ok() && !reply.is_empty() => Ok(reply.to_string()),
        _ => Err(format!("no reply: {} {}", out.stdout, out.stderr)),
    }
}

/// `dig` on a host against cluster DNS, `+short`, lines sorted.
fn dig(c: &Cluster, host: usize, dns: &str, args: &[&str]) -> Vec<String> {
    let server = format!("@{dns}");
    let mut all = vec!["dig", "+short", "+time=2", "+tries=2", server.as_str()];
    all.extend(args);
    let out = c.host(host).ok(&all);
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn services_and_dns_across_three_hosts() {
    let c = Cluster::start(2);
    let hosts: Vec<(String, String)> = c.hosts().iter().map(|h| (h.name.clone(), h.ip.to_string())).collect();
    let dns = json(&c, &["get", "svc", "kube-dns", "-n", "kube-system"]);
    let dns_ip = dns["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert_eq!(dns["spec"]["ports"].as_array().unwrap().len(), 2, "kube-dns serves 53/UDP and 53/TCP: {dns}");
    let all_svcs = c.ok(&["get", "svc", "-A"]);
    assert!(all_svcs.contains("kube-system   kube-dns") && all_svcs.contains(&dns_ip), "{all_svcs}");

    // A web pod per host behind a ClusterIP Service, and a client pod per host.
    c.apply(&web_deployment(3));
    c.ok(&["expose", "deployment", "web", "--port", "80", "--target-port", "8080"]);
    let clients: Vec<String> = (0..3).map(|i| format!("client{i}")).collect();
    for (i, name) in clients.iter().enumerate() {
        c.run_pod(name, i, "exec sleep 3600");
    }
    for name in &clients {
        c.pod_ready_ip(name);
    }
    let web = eventually(120, "three Ready web pods", || {
        let ready = ready_web_pods(&c);
        (ready.len() == 3).then_some(ready)
    });
    let placed: BTreeSet<String> = json(&c, &["get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(placed.len(), 3, "one web pod per host");

    // By name, from a pod on every host, answered by the pods on every host.
    for client in &clients {
        answers_from_all(&c, client, "http://web", &web);
    }
    for name in ["web.default", "web.default.svc.cluster.local"] {
        answers_from_all(&c, &clients[1], &format!("http://{name}/"), &web);
    }
    // Through the API server's proxy subresources (what `kubectl proxy` URLs reach):
    // a Service's ready endpoint, one pod by name and port, a node's agent.
    let via_service = c.ok(&["get", "--raw", "/api/v1/namespaces/default/services/web:80/proxy/"]);
    assert!(web.contains(via_service.trim()), "services/proxy answered {via_service:?}");
    for pod in &web {
        let via_pod = c.ok(&["get", "--raw", &format!("/api/v1/namespaces/default/pods/{pod}:8080/proxy/index.html")]);
        assert_eq!(via_pod.trim(), pod, "pods/proxy");
    }
    assert_eq!(c.ok(&["get", "--raw", &format!("/api/v1/nodes/{}/proxy/healthz", hosts[2].0)]).trim(), "ok", "nodes/proxy");
    let resolv = c.ok(&["exec", &clients[0], "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains(&format!("nameserver {dns_ip}")), "{resolv}");
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let web_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(dig(&c, 2, &dns_ip, &["web.default.svc.cluster.local", "A"]), vec![web_ip.clone()]);
    assert_eq!(dig(&c, 1, &dns_ip, &["-x", &web_ip]), vec!["web.default.svc.cluster.local.".to_string()]);
    let lookup = c.ok(&["exec", &clients[2], "--", "nslookup", "web.default.svc.cluster.local", &dns_ip]);
    assert!(lookup.contains(&format!("Address: {web_ip}")), "busybox nslookup: {lookup}");

    // NodePort on every host's address, from another host.
    c.ok(&["expose", "deployment", "web", "--name", "web-np", "--type", "NodePort", "--port", "80", "--target-port", "8080"]);
    let node_port = c.ok(&["get", "svc", "web-np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    for (i, (_, ip)) in hosts.iter().enumerate() {
        let from = (i + 1) % 3;
        let url = format!("http://{ip}:{node_port}/");
        let body = eventually(30, &format!("NodePort {url} from host {from}"), || curl_on_host(&c, from, &url).ok());
        assert!(web.contains(&body), "{url} answered {body:?}");
    }

    // LoadBalancer: the nodes' addresses as ingress, answering on the service port.
    c.ok(&["expose", "deployment", "web", "--name", "web-lb", "--type", "LoadBalancer", "--port", "8081", "--target-port", "8080"]);
    let want: BTreeSet<String> = hosts.iter().map(|(_, ip)| ip.clone()).collect();
    eventually(30, "the LoadBalancer ingress to list every node", || {
        let svc = json(&c, &["get", "svc", "web-lb"]);
        let got: BTreeSet<String> = svc["status"]["loadBalancer"]["ingress"].as_array()?.iter().filter_map(|i| i["ip"].as_str().map(String::from)).collect();
        (got == want).then_some(())
    });
    let external = c.ok(&["get", "svc", "web-lb", "--no-headers"]);
    assert!(hosts.iter().all(|(_, ip)| external.contains(ip)), "EXTERNAL-IP shows the ingress: {external}");
    let lb_url = format!("http://{}:8081/", hosts[2].1);
    let body = eventually(30, "the LoadBalancer address answering", || curl_on_host(&c, 1, &lb_url).ok());
    assert!(web.contains(&body), "{lb_url} answered {body:?}");

    // loadBalancerSourceRanges: the load balancer address answers only the
    // listed sources (other connections are dropped); NodePorts stay open.
    c.ok(&["patch", "svc", "web-lb", "-p", &format!(r#"{{"spec":{{"loadBalancerSourceRanges":["{}/32"]}}}}"#, hosts[1].1)]);
    eventually(30, "the load balancer dropping host 0", || curl_on_host(&c, 0, &lb_url).is_err().then_some(()));
    let body = curl_on_host(&c, 1, &lb_url).expect("the listed source still reaches the load balancer");
    assert!(web.contains(&body), "{lb_url} answered {body:?}");
    let lb_node_port = c.ok(&["get", "svc", "web-lb", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let body = curl_on_host(&c, 0, &format!("http://{}:{lb_node_port}/", hosts[2].1)).expect("the NodePort is not filtered");
    assert!(web.contains(&body), "NodePort answered {body:?}");
    c.ok(&["patch", "svc", "web-lb", "--type", "json", "-p", r#"[{"op":"remove","path":"/spec/loadBalancerSourceRanges"}]"#]);
    eventually(30, "the load balancer open to host 0 again", || curl_on_host(&c, 0, &lb_url).ok());

    // UDP: a Service in front of pods on every host, reached by name from each host.
    c.apply(&serde_json::to_string(&udp_echo_deployment()).unwrap());
    c.ok(&["expose", "deployment", "udp-echo", "--protocol", "UDP", "--port", "5300", "--target-port", "9000"]);
    let udp_pods = eventually(120, "three Ready udp-echo pods", || {
        let pods = json(&c, &["get", "pods", "-l", "app=udp-echo"]);
        let ready: BTreeSet<String> = pods["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        (ready.len() == 3).then_some(ready)
    });
    for client in &clients {
        answered_by_all(&format!("{client} -> udp://udp-echo:5300"), &udp_pods, || udp_in(&c, client, "udp-echo:5300"));
    }
    c.ok(&["delete", "deployment", "udp-echo"]);

    // ExternalName is a CNAME.
    c.ok(&["create", "service", "externalname", "ext", "--external-name", "www.example.com"]);
    eventually(10, "the ExternalName CNAME", || {
        (dig(&c, 0, &dns_ip, &["ext.default.svc.cluster.local", "CNAME"]) == vec!["www.example.com.".to_string()]).then_some(())
    });

    // Headless: every pod's address, SRV per named port, hostname.subdomain names.
    for (i, name) in ["hl-a", "hl-b"].iter().enumerate() {
        let manifest = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "labels": {{"app": "hl"}}}},
  "spec": {{"nodeName": "{node}", "hostname": "{name}", "subdomain": "hl", "terminationGracePeriodSeconds": 1,
    "containers": [{{"name": "c", "image": "{BUSYBOX}", "imagePullPolicy": "Never", "command": ["sh", "-c", {cmd}], "ports": [{{"name": "http", "containerPort": 8080}}]}}]}}}}"#,
            node = hosts[i + 1].0,
            cmd = serde_json::to_string(WEB).unwrap()
        );
        c.apply(&manifest);
    }
    c.apply(r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hl"},
  "spec": {"clusterIP": "None", "selector": {"app": "hl"}, "ports": [{"name": "http", "port": 8080}]}}"#);
    let hl_ips: Vec<String> = ["hl-a", "hl-b"].iter().map(|n| c.pod_ready_ip(n)).collect();
    let mut sorted = hl_ips.clone();
    sorted.sort();
    eventually(30, "the headless Service's A records", || {
        (dig(&c, 1, &dns_ip, &["hl.default.svc.cluster.local", "A"]) == sorted).then_some(())
    });
    let srv = dig(&c, 1, &dns_ip, &["_http._tcp.hl.default.svc.cluster.local", "SRV"]);
    assert_eq!(srv.len(), 2, "{srv:?}");
    for name in ["hl-a", "hl-b"] {
        assert!(srv.iter().any(|r| r.ends_with(&format!(" 8080 {name}.hl.default.svc.cluster.local."))), "{srv:?}");
    }
    assert_eq!(dig(&c, 2, &dns_ip, &["hl-a.hl.default.svc.cluster.local", "A"]), vec![hl_ips[0].clone()]);
    let lookup = c.ok(&["exec", &clients[0], "--", "nslookup", "hl-b.hl.default.svc.cluster.local", &dns_ip]);
    assert!(lookup.contains(&format!("Address: {}", hl_ips[1])), "busybox nslookup: {lookup}");
    let dashed = hl_ips[0].replace('.', "-");
    assert_eq!(dig(&c, 0, &dns_ip, &[&format!("{dashed}.default.pod.cluster.local"), "A"]), vec![hl_ips[0].clone()]);
    assert_eq!(c.host(0).run(&["dig", &format!("@{dns_ip}"), "+time=2", "nothing.default.svc.cluster.local"]).stdout.contains("NXDOMAIN"), true);
    assert_eq!(curl_in(&c, &clients[2], "http://hl-a.hl:8080/").unwrap(), "hl-a", "a pod reached by hostname.subdomain");

    // A Service without endpoints refuses at once.
    c.ok(&["create", "service", "clusterip", "empty", "--tcp", "80:8080"]);
    eventually(10, "the endpoint-less Service to refuse", || {
        let started = Instant::now();
        let err = curl_in(&c, &clients[1], "http://empty/").err()?;
        (err.contains("Connection refused") || err.contains("Couldn't connect")).then_some(())?;
        assert!(started.elapsed() < Duration::from_secs(4), "refused, not timed out: {err}");
        Some(())
    });

    // ClientIP affinity: one client sticks to one pod.
    c.ok(&["patch", "svc", "web", "-p", r#"{"spec":{"sessionAffinity":"ClientIP"}}"#]);
    eventually(30, "answers to stick to one pod", || {
        let bodies: BTreeSet<String> = (0..8).filter_map(|_| curl_in(&c, &clients[2], "http://web").ok()).collect();
        (bodies.len() == 1).then_some(())
    });
    c.ok(&["patch", "svc", "web", "-p", r#"{"spec":{"sessionAffinity":"None"}}"#]);

    // externalTrafficPolicy Local: only the node's own pod answers, and it
    // sees the client's address; the health check port counts local endpoints.
    c.apply(r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-local"},
  "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"}, "ports": [{"port": 8082, "targetPort": 8080}]}}"#);
    let local_port = c.ok(&["get", "svc", "web-local", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let health_port = c.ok(&["get", "svc", "web-local", "-o", "jsonpath={.spec.healthCheckNodePort}"]);
    let health_url = format!("http://{}:{health_port}/", hosts[2].1);
    let health = eventually(30, "the healthCheckNodePort answering", || curl_on_host(&c, 1, &health_url).ok());
    assert_eq!(health, r#"{"service":{"namespace":"default","name":"web-local"},"localEndpoints":1,"serviceProxyHealthy":true}"#);
    let on_host2 = json(&c, &["get", "pods", "-l", "app=web", "--field-selector", &format!("spec.nodeName={}", hosts[2].0)]);
    let pod_on_host2 = on_host2["items"][0]["metadata"]["name"].as_str().unwrap().to_string();
    for _ in 0..5 {
        let url = format!("http://{}:{local_port}/", hosts[2].1);
        let body = eventually(30, "the Local NodePort", || curl_on_host(&c, 1, &url).ok());
        assert_eq!(body, pod_on_host2, "only host 2's own pod answers on host 2");
    }
    let seen = curl_on_host(&c, 1, &format!("http://{}:{local_port}/cgi-bin/ip", hosts[2].1)).unwrap();
    // busybox httpd listens on :: and writes IPv4 peers as [::ffff:a.b.c.d].
    let seen = seen.trim_start_matches("[::ffff:").trim_end_matches(']');
    assert_eq!(seen, hosts[1].1, "the client's address is kept");

    // Scaling down changes who answers within seconds.
    c.ok(&["scale", "deployment", "web", "--replicas", "1"]);
    let remaining = eventually(60, "one web pod left", || {
        let ready = ready_web_pods(&c);
        (ready.len() == 1 && json(&c, &["get", "pods", "-l", "app=web"])["items"].as_array().unwrap().len() == 1).then_some(ready)
    });
    eventually(30, "only the remaining pod answering", || {
        let bodies: Vec<String> = (0..6).filter_map(|_| curl_in(&c, &clients[0], "http://web").ok()).collect();
        (bodies.len() == 6 && bodies.iter().all(|b| remaining.contains(b))).then_some(())
    });
    c.ok(&["scale", "deployment", "web", "--replicas", "3"]);
    let web = eventually(120, "three Ready web pods again", || {
        let ready = ready_web_pods(&c);
        (ready.len() == 3).then_some(ready)
    });
    answers_from_all(&c, &clients[0], "http://web", &web);

    // An agent killed with SIGKILL and restarted: Services keep answering.
    c.host(1).kill9();
    // The host's own rules keep serving (exec into its pods needs the agent, so ask from the host).
    let mut seen = BTreeSet::new();
    eventually(30, "every web pod answering on host 1 while its agent is down", || {
        let body = curl_on_host(&c, 1, &format!("http://{web_ip}/")).expect("a Service answers while its node's agent is down");
        assert!(web.contains(&body), "{body:?}");
        seen.insert(body);
        (seen == web).then_some(())
    });
    c.host(1).start();
    c.wait_node_ready(1);
    answers_from_all(&c, &clients[1], "http://web", &web);

    // A host lost for good: its pods are replaced on the others and the Service recovers.
    c.remove_host(2);
    let lost = &hosts[2].0;
    let web = eventually(180, "the lost host's web pod replaced elsewhere", || {
        let pods = json(&c, &["get", "pods", "-l", "app=web"]);
        let items = pods["items"].as_array().unwrap();
        let ready = ready_web_pods(&c);
        let off_lost = items.iter().all(|p| p["spec"]["nodeName"].as_str() != Some(lost.as_str()) || !p["metadata"]["deletionTimestamp"].is_null());
        (ready.len() == 3 && off_lost).then_some(ready)
    });
    let _ = web;
    eventually(60, "the Service answering only from live pods", || {
        let bodies: Vec<String> = (0..6).filter_map(|_| curl_in(&c, &clients[0], "http://web").ok()).collect();
        let live = ready_web_pods(&c);
        (bodies.len() == 6 && bodies.iter().all(|b| live.contains(b))).then_some(())
    });
}
