//! The per-pod `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`
//! contents, in the kubelet's layout.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cri::DnsConfig;

/// The kubelet's managed hosts file: localhost entries, the pod's own line
/// once its IP is known, then hostAliases.
pub fn hosts(hostname: &str, pod_ip: Option<&str>, aliases: &[(String, Vec<String>)]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in aliases {
            out.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    out
}

/// resolv.conf from the pod's DNS config; with no config at all, the host's file.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    }
    let mut out = String::new();
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// Rewrites a file in place (same inode), because containers see it through
/// a bind mount of that inode; a rename would leave them the old content.
pub fn rewrite_in_place(path: &Path, content: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_pod_line_and_aliases() {
        let text = hosts(
            "web-0",
            Some("10.42.0.7"),
            &[("1.2.3.4".into(), vec!["a".into(), "b".into()])],
        );
        assert!(text.contains("10.42.0.7\tweb-0\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn resolv_conf_from_config() {
        let dns = DnsConfig {
            servers: vec!["10.43.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "nameserver 10.43.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }
}
