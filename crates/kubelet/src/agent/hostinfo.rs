//! Readings of the host the agent runs on: capacity (CPUs, memory,
//! ephemeral storage), what is still available (for the pressure
//! conditions), addresses and system facts for the Node's nodeInfo.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::path::Path;

/// Online CPUs.
pub fn cpus() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as u32 } else { 1 }
}

/// (MemTotal, MemAvailable) in bytes from /proc/meminfo.
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_meminfo(&text)
}

pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// (total, available) bytes of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> (u64, u64) {
    let Ok(c) = CString::new(path.to_string_lossy().as_bytes()) else { return (0, 0) };
    // SAFETY: statvfs writes into a zeroed struct we own, given a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (0, 0);
    }
    let frsize = st.f_frsize as u64;
    (st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize)
}

/// (processes running, the most there may be).
pub fn pids() -> (u64, u64) {
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768u64);
    let running = std::fs::read_dir("/proc").map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())).count() as u64).unwrap_or(0);
    (running, max)
}

/// The interface of the default route, from /proc/net/route.
fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    })
}

/// IPv4 addresses per interface.
fn interface_addresses() -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; we only read entries it returned.
    unsafe {
        if libc::getifaddrs(&mut addrs) != 0 {
            return out;
        }
        let mut cur = addrs;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
                out.push((name, ip));
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(addrs);
    }
    out
}

/// The node's InternalIP: the first non-loopback IPv4 address of the
/// default-route interface, else 127.0.0.1.
pub fn internal_ip() -> Ipv4Addr {
    let addrs = interface_addresses();
    default_route_interface()
        .and_then(|iface| addrs.iter().find(|(n, ip)| *n == iface && !ip.is_loopback()).map(|(_, ip)| *ip))
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

pub fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// PRETTY_NAME from /etc/os-release.
pub fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    parse_os_release(&text)
}

pub fn parse_os_release(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

pub fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id").or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id")).map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

pub fn system_uuid() -> String {
    std::fs::read_to_string("/sys/class/dmi/id/product_uuid").map(|s| s.trim().to_lowercase()).unwrap_or_else(|_| machine_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_meminfo("MemTotal:       16384 kB\nMemFree: 1 kB\nMemAvailable:    2048 kB\n"), (16384 * 1024, 2048 * 1024));
        assert_eq!(parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"), "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn reads_this_host() {
        assert!(cpus() >= 1);
        let (total, avail) = memory();
        assert!(total > 0 && avail <= total);
        let (fs_total, fs_avail) = filesystem(Path::new("/"));
        assert!(fs_total > 0 && fs_avail <= fs_total);
        let (running, max) = pids();
        assert!(running > 0 && running < max);
        let _ = internal_ip();
        assert!(!kernel_version().is_empty());
    }
}
