//! Unmodified manifests on an air-gapped node (issue 18): pods name their
//! images as real manifests do (`busybox`, `nginx:1.15.4`), a
//! registries.yaml (`--registries`, k3s's format) makes a local Debian
//! `docker-registry` the `docker.io` mirror, and an image archive dropped
//! into `DATA_DIR/agent/images/` is imported when the agent starts, so its
//! pod runs with no registry at all. Needs root (as CI runs).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{eventually, skiff_bin, Server, KUBECTL};
use runtime::images::testimage::{self, TestRegistry};
use serde_json::json;

/// Everything this test drives, or it says which is missing.
fn require_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next().unwrap_or("").to_string()))
        .unwrap_or_default();
    assert_eq!(uid, "0", "the registries e2e test runs containers and needs root (as CI runs)");
    for tool in [KUBECTL, "/usr/bin/docker-registry", "/bin/busybox"] {
        assert!(Path::new(tool).exists(), "{tool} is missing: apt-get install kubectl docker-registry busybox-static");
    }
    let runc = std::env::var("PATH").unwrap_or_default().split(':').any(|d| Path::new(d).join("runc").exists());
    assert!(runc, "runc is missing from PATH: apt-get install runc");
}

fn node_ready(s: &Server) {
    let name = s.node.as_ref().unwrap().name.clone();
    eventually(90, "the node to be Ready", || {
        let out = s.kubectl(&["get", "node", &name, "--no-headers"]);
        (out.ok() && out.stdout.contains(" Ready ")).then_some(())
    });
}

fn wait_running(s: &Server, pod: &str) {
    let out = s.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{pod}"), "--timeout=120s"]);
    assert!(out.ok(), "pod {pod} not Ready: {}\n{}\n{}", out.stderr, s.ok(&["describe", "pod", pod]), s.log());
    let phase = s.ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Running", "{}", s.ok(&["describe", "pod", pod]));
}

fn events_of(s: &Server, pod: &str) -> String {
    s.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={pod}"), "-o", "custom-columns=REASON:.reason,MESSAGE:.message", "--no-headers"])
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut c = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut body = String::new();
    c.read_to_string(&mut body)?;
    Ok(body)
}

/// The mirror: Docker Hub's `library/busybox:latest` (sleeps) and
/// `library/nginx:1.15.4` (busybox's httpd on port 80), both built from the
/// host's busybox. Returns the registry and the two manifest digests.
fn docker_hub_mirror() -> (TestRegistry, String, String) {
    let reg = TestRegistry::start().expect("starting /usr/bin/docker-registry (apt-get install docker-registry)");
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let busybox = rt
        .block_on(testimage::push_to_registry(&reg.addr, "library/busybox", "latest", &layer, json!({"config": {"Cmd": ["sleep", "3600"]}})))
        .expect("pushing library/busybox:latest");
    let nginx_cmd = json!({"config": {"Cmd": ["sh", "-c", "mkdir -p /www && echo welcome-to-nginx > /www/index.html && exec httpd -f -p 80 -h /www"]}});
    let nginx = rt.block_on(testimage::push_to_registry(&reg.addr, "library/nginx", "1.15.4", &layer, nginx_cmd)).expect("pushing library/nginx:1.15.4");
    (reg, busybox, nginx)
}

#[test]
fn docker_hub_names_pull_through_the_mirror_and_archives_preload() {
    require_tools();
    let (mirror, busybox_digest, nginx_digest) = docker_hub_mirror();
    let conf = tempfile::Builder::new().prefix("skiff-registries-").tempdir().unwrap();
    let registries = conf.path().join("registries.yaml");
    std::fs::write(&registries, format!("mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n", mirror.addr)).unwrap();

    let s = Server::start_node_with(&["--registries", registries.to_str().unwrap()]);
    node_ready(&s);
    // Air-gap: an archive in DATA_DIR/agent/images is imported when the agent starts
    // (here: the server's restart). Its registry does not exist.
    let images_dir = s.dir.path().join("agent/images");
    std::fs::create_dir_all(&images_dir).unwrap();
    let airgap_image = "airgap.invalid/tools/busybox:v1";
    std::fs::write(images_dir.join("airgap-images.tar"), testimage::docker_save_tar(airgap_image, &testimage::busybox_layer_tar())).unwrap();
    s.restart();
    node_ready(&s);
    assert!(s.log().contains("imported image archive"), "the archive was not imported at start:\n{}", s.log());

    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hub-busybox"},
         "spec": {"containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "Always"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hub-nginx"},
         "spec": {"containers": [{"name": "web", "image": "nginx:1.15.4", "ports": [{"containerPort": 80}]}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "airgapped"},
         "spec": {"containers": [{"name": "main", "image": airgap_image, "command": ["sleep", "3600"]}]}},
    ]});
    let out = s.apply_stdin(&["apply", "-f", "-"], &manifest.to_string());
    assert!(out.ok(), "apply: {}", out.stderr);
    for pod in ["hub-busybox", "hub-nginx", "airgapped"] {
        wait_running(&s, pod);
    }

    // Status as upstream (containerd) reports it: names in full, imageID the repo digest.
    let status = |pod: &str| s.json(&["get", "pod", pod])["status"]["containerStatuses"][0].clone();
    let cs = status("hub-busybox");
    assert_eq!(cs["image"], "docker.io/library/busybox:latest", "{cs}");
    assert_eq!(cs["imageID"], format!("docker.io/library/busybox@{busybox_digest}"), "{cs}");
    let cs = status("hub-nginx");
    assert_eq!(cs["image"], "docker.io/library/nginx:1.15.4", "{cs}");
    assert_eq!(cs["imageID"], format!("docker.io/library/nginx@{nginx_digest}"), "{cs}");
    let cs = status("airgapped");
    assert_eq!(cs["image"], airgap_image, "{cs}");
    assert!(cs["imageID"].as_str().unwrap().starts_with("airgap.invalid/tools/busybox@sha256:"), "{cs}");
    // `kubectl get` shows the image as written in the pod.
    assert_eq!(s.ok(&["get", "pod", "hub-nginx", "-o", "jsonpath={.spec.containers[0].image}"]), "nginx:1.15.4");

    // Pulled (Always, then IfNotPresent for a tag), and the archive's image never pulled.
    let events = events_of(&s, "hub-busybox");
    assert!(events.contains("Pulling image \"busybox\"") && events.contains("Successfully pulled image \"busybox\""), "{events}");
    let events = events_of(&s, "airgapped");
    assert!(events.contains("already present on machine") && !events.contains("Pulling"), "{events}");

    // The "nginx" from the mirror serves.
    let ip = s.ok(&["get", "pod", "hub-nginx", "-o", "jsonpath={.status.podIP}"]);
    let body = eventually(30, "hub-nginx answering on port 80", || http_get(&format!("{ip}:80")).ok().filter(|b| b.contains("welcome-to-nginx")));
    assert!(body.starts_with("HTTP/1."), "{body}");

    // The image store lists the Docker Hub names, as `crictl images` would.
    let ls = Command::new(skiff_bin()).args(["image", "ls", "--data-dir"]).arg(s.dir.path()).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    for name in ["docker.io/library/busybox", "docker.io/library/nginx", "airgap.invalid/tools/busybox"] {
        assert!(ls.contains(name), "{name} missing from skiff image ls:\n{ls}");
    }
}

/// A malformed registries file stops `skiff server` and `skiff agent` at
/// once, naming the file and the field; a missing one is no mirrors.
#[test]
fn a_malformed_registries_file_is_a_startup_error() {
    let conf = tempfile::Builder::new().prefix("skiff-registries-").tempdir().unwrap();
    let bad = conf.path().join("registries.yaml");
    std::fs::write(&bad, "mirrors:\n  docker.io:\n    endpoints:\n      - http://127.0.0.1:5000\n").unwrap();
    let data = conf.path().join("data");
    let runs: [&[&str]; 2] = [
        &["server", "--disable-agent", "--bind-address", "127.0.0.1", "--https-listen-port", "1"],
        &["agent", "--server", "https://127.0.0.1:1", "--token", "K10x::server:y"],
    ];
    for args in runs {
        let out = Command::new(skiff_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--registries")
            .arg(&bad)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "skiff {args:?} accepted a malformed registries file");
        assert!(stderr.contains(bad.to_str().unwrap()) && stderr.contains("endpoints") && stderr.contains("mirrors"), "skiff {args:?}: {stderr}");
        assert!(!data.join("server").exists(), "skiff {args:?} started before checking its registries file");
    }
}
