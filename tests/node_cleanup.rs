//! Cleanup after a server that ran its node agent: pods are deleted through
//! the API (the agent stops them as it would for a user), then whatever is
//! left on the host is removed with the runtime's and the network's own
//! removal code, so a failed test leaves nothing behind either.

use std::path::Path;
use std::sync::Arc;

use runtime::containers::{Runtime, ShimCommand};
use runtime::cri::RuntimeService;
use runtime::images::{ImageResolver, Store};

use crate::{skiff_bin, Node, Server};

/// Deletes every pod and waits (bounded) for the agent to stop them.
pub fn remove_everything(s: &Server, _node: &Node) {
    let _ = s.kubectl(&["delete", "pods", "--all", "-A", "--timeout=60s"]);
}

/// After the server is gone: sandboxes, containers, mounts, netns, cgroups, veths, the bridge and nft table.
pub fn remove_host_state(dir: &Path, node: &Node) {
    let root = dir.join("agent");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if root.join("images").exists() {
            let images: Arc<dyn ImageResolver> = Arc::new(Store::open(root.join("images"), vec![]).unwrap());
            let shim = ShimCommand { program: skiff_bin().to_path_buf(), args_prefix: vec!["container-shim".into()] };
            if let Ok(runtime) = Runtime::open(root.clone(), images, shim) {
                for sandbox in runtime.list_pod_sandboxes().await.unwrap_or_default() {
                    if let Err(e) = runtime.remove_pod_sandbox(&sandbox.id).await {
                        eprintln!("cleanup: removing sandbox {}: {e:#}", sandbox.id);
                    }
                }
            }
        }
        let base = node.cluster_cidr.split('/').next().unwrap().to_string();
        let config = network::NetConfig {
            bridge: node.bridge.clone(),
            pod_cidr: format!("{base}/24"),
            cluster_cidr: node.cluster_cidr.clone(),
            mtu: None,
            state_dir: root.join("network"),
            nft_table: node.nft_table.clone(),
        };
        if let Ok(net) = network::PodNetwork::new(config) {
            for (sandbox, _) in net.allocations() {
                let _ = net.detach(&sandbox).await;
            }
            if let Err(e) = net.teardown_host().await {
                eprintln!("cleanup: removing bridge {} and table {}: {e:#}", node.bridge, node.nft_table);
            }
        }
    });
}
