//! What the official-client tests (python_client.rs, kube_rs.rs) share: a
//! one-node server with a busybox image on a registry at 127.0.0.1.

use e2e::{eventually, Server};
use runtime::images::testimage::{self, TestRegistry};

/// A registry holding `busybox:e2e` built from /bin/busybox; returns it and the image name.
pub fn registry_with_busybox() -> (TestRegistry, String) {
    let reg = TestRegistry::start().expect("starting docker-registry");
    let layer = testimage::gzip(&testimage::busybox_layer_tar());
    let config = testimage::busybox_config(&[&layer]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(testimage::push_to_registry(&reg.addr, "busybox", "e2e", &layer, config)).expect("pushing busybox");
    let image = format!("{}/busybox:e2e", reg.addr);
    (reg, image)
}

/// Waits until the server's node agent has registered its node as Ready.
pub fn node_ready(s: &Server) -> String {
    let name = s.node.as_ref().unwrap().name.clone();
    eventually(60, "the node to be Ready", || {
        let out = s.kubectl(&["get", "node", &name, "--no-headers"]);
        (out.ok() && out.stdout.contains(" Ready ")).then_some(())
    });
    name
}

/// The last `n` lines of the server's log, for failure messages.
pub fn log_tail(s: &Server, n: usize) -> String {
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
