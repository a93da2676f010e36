//! Cleanup after a server that ran its node agent: pods are deleted through
//! the API (the agent stops them as it would for a user), then whatever is
//! left on the host is removed by `skiff cleanup` — the product's own
//! removal code — so a failed test leaves nothing behind either.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{skiff_bin, Node, Server};

/// Deletes every pod and waits (bounded) for the agent to stop them.
pub fn remove_everything(s: &Server, _node: &Node) {
    let _ = s.kubectl(&["delete", "pods", "--all", "-A", "--timeout=60s"]);
}

/// After the server is gone: `skiff cleanup` with the node's flags removes
/// sandboxes, containers, mounts, netns, cgroups, veths, the bridge, the
/// VXLAN device and the nft tables.
pub fn remove_host_state(dir: &Path, node: &Node) {
    let out = Command::new(skiff_bin())
        .arg("cleanup")
        .arg("--data-dir")
        .arg(dir)
        .args(["--bridge", &node.bridge, "--nft-table", &node.nft_table])
        .stdin(Stdio::null())
        .output()
        .expect("running skiff cleanup");
    if !out.status.success() {
        eprintln!("skiff cleanup for node {} failed:\n{}", node.name, String::from_utf8_lossy(&out.stderr));
    }
}
