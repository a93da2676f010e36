//! What the official-client tests (python_client.rs, kube_rs.rs) share.

use e2e::Server;

/// The last `n` lines of the server's log, for failure messages.
pub fn log_tail(s: &Server, n: usize) -> String {
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
