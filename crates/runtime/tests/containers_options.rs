//! Pod and container options against real runc: tty containers, shared PID
//! namespace, host network, cgroup limits, read-only rootfs and capabilities. Needs root.

mod containers_support;

use std::time::Duration;

use containers_support::*;
use runtime::cri::{ContainerState, LinuxResources, RuntimeService, SecurityConfig};

fn sh(cmd: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), cmd.into()]
}

async fn output(fx: &Fixture, id: &str, cmd: &str) -> String {
    let out = fx
        .runtime
        .exec_sync(id, &sh(cmd), Duration::from_secs(10))
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_container_logs_its_terminal_output() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("ttyc");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let mut config = fx.container_config(&sb_config, "t", "tty; echo $TERM; exit 2");
    config.tty = true;
    let id = fx.run(&sb, &config).await;
    let status = wait_for_state(rt, &id, ContainerState::Exited, Duration::from_secs(20)).await;
    assert_eq!(status.exit_code, Some(2));
    let lines = log_lines(&config.log_path);
    // A terminal turns \n into \r\n.
    assert!(
        lines
            .iter()
            .any(|(s, _, t)| s == "stdout" && t.starts_with("/dev/pts/")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|(_, _, t)| t.trim_end() == "xterm"),
        "{lines:?}"
    );
    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_process_namespace_and_host_network() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let mut sb_config = fx.sandbox_config("pidns");
    sb_config.share_process_namespace = true;
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let first = fx
        .run(&sb, &fx.container_config(&sb_config, "first", "sleep 1001"))
        .await;
    wait_for_state(rt, &first, ContainerState::Running, Duration::from_secs(10)).await;
    let second = fx
        .run(
            &sb,
            &fx.container_config(&sb_config, "second", "sleep 1002"),
        )
        .await;
    wait_for_state(
        rt,
        &second,
        ContainerState::Running,
        Duration::from_secs(10),
    )
    .await;
    let ps = output(&fx, &second, "ps -o args").await;
    assert!(
        ps.contains("sleep 1001") && ps.contains("sleep 1002"),
        "{ps}"
    );
    // PID 1 is the pod's namespace holder, not a container: the first
    // container can stop without taking the second down with it.
    let init = output(&fx, &second, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert!(init.contains("pid-holder"), "PID 1 is {init:?}");
    rt.stop_container(&first, Duration::ZERO).await.unwrap();
    wait_for_state(rt, &first, ContainerState::Exited, Duration::from_secs(10)).await;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rt.container_status(&second).await.unwrap().state, ContainerState::Running);
    let ps = output(&fx, &second, "ps -o args").await;
    assert!(!ps.contains("sleep 1001") && ps.contains("sleep 1002"), "{ps}");

    let mut host_config = fx.sandbox_config("hostnet");
    host_config.host_network = true;
    let host_sb = rt.run_pod_sandbox(&host_config).await.unwrap();
    assert!(rt
        .pod_sandbox_status(&host_sb)
        .await
        .unwrap()
        .netns_path
        .is_none());
    let h = fx
        .run(
            &host_sb,
            &fx.container_config(&host_config, "h", "sleep 1000"),
        )
        .await;
    let pid = wait_for_state(rt, &h, ContainerState::Running, Duration::from_secs(10))
        .await
        .pid
        .unwrap();
    let ns = |p: String| std::fs::read_link(p).unwrap();
    assert_eq!(
        ns(format!("/proc/{pid}/ns/net")),
        ns("/proc/self/ns/net".into())
    );
    assert_eq!(
        ns(format!("/proc/{pid}/ns/uts")),
        ns("/proc/self/ns/uts".into())
    );

    rt.remove_pod_sandbox(&sb).await.unwrap();
    rt.remove_pod_sandbox(&host_sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[first, second]);
    assert_nothing_left(&fx, &host_sb, &host_config.cgroup_parent, &[h]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_limits_readonly_rootfs_and_capabilities() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let mut sb_config = fx.sandbox_config("limits");
    sb_config.pids_limit = Some(12);
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let mut config = fx.container_config(&sb_config, "limited", "sleep 1000");
    config.resources = LinuxResources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit: Some(64 * 1024 * 1024),
        pids_limit: Some(100),
    };
    config.security = SecurityConfig {
        readonly_rootfs: true,
        capabilities_drop: vec!["ALL".into()],
        capabilities_add: vec!["NET_ADMIN".into()],
        no_new_privs: true,
        ..Default::default()
    };
    let id = fx.run(&sb, &config).await;
    wait_for_state(rt, &id, ContainerState::Running, Duration::from_secs(10)).await;

    let cgroup = format!("{}/{id}", sb_config.cgroup_parent);
    let read = |file: &str| -> String {
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let path = match (v2, file) {
            (true, f) => format!("/sys/fs/cgroup/{cgroup}/{f}"),
            (false, f) => format!(
                "/sys/fs/cgroup/{}/{cgroup}/{f}",
                f.split('.').next().unwrap()
            ),
        };
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string()
    };
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read("memory.max"), (64 * 1024 * 1024).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "100");
    } else {
        assert_eq!(
            read("memory.limit_in_bytes"),
            (64 * 1024 * 1024).to_string()
        );
        assert_eq!(read("cpu.shares"), "512");
        assert_eq!(read("cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids.max"), "100");
    }

    // The pod's own limit (the kubelet's podPidsLimit) is below the container's: it wins.
    let pod_pids = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup/{}/pids.max", sb_config.cgroup_parent)
    } else {
        format!("/sys/fs/cgroup/pids/{}/pids.max", sb_config.cgroup_parent)
    };
    assert_eq!(std::fs::read_to_string(&pod_pids).unwrap().trim(), "12");

    let out = output(
        &fx,
        &id,
        "touch /newfile; echo rw-tmp > /dev/shm/ok && cat /dev/shm/ok",
    )
    .await;
    assert!(
        out.contains("Read-only file system") && out.contains("rw-tmp"),
        "{out}"
    );
    // Only CAP_NET_ADMIN (bit 12) is left in the effective set; NoNewPrivs is set.
    let status = output(&fx, &id, "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status").await;
    assert!(status.contains("CapEff:\t0000000000001000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // Masked and read-only /proc paths.
    let out = output(
        &fx,
        &id,
        "cat /proc/kcore | wc -c; echo 1 > /proc/sys/kernel/shmmni",
    )
    .await;
    assert!(out.starts_with("0\n") && out.contains("Read-only"), "{out}");
    // Last, as it leaves the pod without room to fork for a while.
    let forks = output(&fx, &id, "for i in $(seq 20); do sleep 1 & done; wait").await;
    assert!(forks.contains("can't fork"), "20 processes in a pod limited to 12: {forks:?}");

    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_stdin_and_tty_containers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("attach");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();

    // Pipes, stdinOnce: the container sees EOF once the attached client closes stdin.
    let mut piped = fx.container_config(
        &sb_config,
        "piped",
        "read line; echo got-$line; echo e >&2; cat; echo eof; exit 6",
    );
    piped.stdin = true;
    piped.stdin_once = true;
    let piped_id = fx.run(&sb, &piped).await;
    wait_for_state(
        rt,
        &piped_id,
        ContainerState::Running,
        Duration::from_secs(10),
    )
    .await;
    let mut p = rt.attach(&piped_id, true).await.unwrap();
    let (out, err) = converse(&mut p, b"ping\nmore\n").await;
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("got-ping\nmore\neof\n", "e\n")
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), p.exit)
            .await
            .unwrap()
            .unwrap(),
        6
    );
    // What went to the attached client went to the log too.
    assert!(log_lines(&piped.log_path)
        .iter()
        .any(|(s, _, t)| s == "stdout" && t == "got-ping"));

    // A tty container: one terminal stream, resizable.
    let mut tty = fx.container_config(&sb_config, "tty", "");
    tty.command = vec!["sh".into()];
    tty.tty = true;
    tty.stdin = true;
    let tty_id = fx.run(&sb, &tty).await;
    wait_for_state(
        rt,
        &tty_id,
        ContainerState::Running,
        Duration::from_secs(10),
    )
    .await;
    let mut p = rt.attach(&tty_id, true).await.unwrap();
    assert!(p.stderr.is_none());
    p.resize(90, 20).unwrap();
    p.stdin
        .as_mut()
        .unwrap()
        .write_all(b"stty size; echo answer=$((6*7)); exit 3\n")
        .await
        .unwrap();
    p.stdin.as_mut().unwrap().flush().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(15),
        p.stdout.as_mut().unwrap().read_to_end(&mut out),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("answer=42") && text.contains("20 90"),
        "{text}"
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), p.exit)
            .await
            .unwrap()
            .unwrap(),
        3
    );

    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[piped_id, tty_id]);
}
