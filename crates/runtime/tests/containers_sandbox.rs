//! Sandboxes, exec and adoption against real runc and real namespaces. Needs root.

mod containers_support;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use containers_support::*;
use runtime::cri::{ContainerState, RuntimeService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sh(cmd: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), cmd.into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_pod_share_network_hostname_and_pod_files() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let mut sb_config = fx.sandbox_config("shared");
    sb_config.hostname = "web-0".into();
    sb_config.host_aliases = vec![("10.9.9.9".into(), vec!["alias.example".into()])];
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let status = rt.pod_sandbox_status(&sb).await.unwrap();
    let netns = status.netns_path.clone().unwrap();
    assert!(netns.starts_with("/run/netns"));
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout)
        .contains(netns.file_name().unwrap().to_str().unwrap()));
    rt.set_pod_ip(&sb, "10.42.0.17").await.unwrap();

    let a = fx
        .run(&sb, &fx.container_config(&sb_config, "a", "sleep 1000"))
        .await;
    let b = fx
        .run(&sb, &fx.container_config(&sb_config, "b", "sleep 1000"))
        .await;
    let pa = wait_for_state(rt, &a, ContainerState::Running, Duration::from_secs(10))
        .await
        .pid
        .unwrap();
    let pb = wait_for_state(rt, &b, ContainerState::Running, Duration::from_secs(10))
        .await
        .pid
        .unwrap();

    // Same network, IPC and UTS namespace objects as the sandbox's files; own PID namespaces.
    let ino = |p: String| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(format!("/proc/{pa}/ns/net")),
        std::fs::metadata(&netns).unwrap().ino()
    );
    assert_eq!(
        ino(format!("/proc/{pb}/ns/net")),
        std::fs::metadata(&netns).unwrap().ino()
    );
    assert_eq!(
        ino(format!("/proc/{pa}/ns/uts")),
        ino(format!("/proc/{pb}/ns/uts"))
    );
    assert_eq!(
        ino(format!("/proc/{pa}/ns/ipc")),
        ino(format!("/proc/{pb}/ns/ipc"))
    );
    assert_ne!(
        ino(format!("/proc/{pa}/ns/ipc")),
        ino("/proc/self/ns/ipc".into())
    );
    assert_ne!(
        ino(format!("/proc/{pa}/ns/pid")),
        ino(format!("/proc/{pb}/ns/pid"))
    );

    for id in [&a, &b] {
        let out = rt
            .exec_sync(
                id,
                &sh("hostname; cat /etc/hostname"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "web-0\nweb-0\n");
    }
    // Shared /dev/shm: a file written by one container is seen by the other.
    rt.exec_sync(&a, &sh("echo hi > /dev/shm/x"), Duration::from_secs(10))
        .await
        .unwrap();
    let out = rt
        .exec_sync(
            &b,
            &sh("cat /dev/shm/x; cat /etc/hosts; cat /etc/resolv.conf; ip -o link show lo"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("hi\n"), "{text}");
    assert!(text.contains("10.42.0.17\tweb-0\n"), "{text}");
    assert!(text.contains("10.9.9.9\talias.example\n"), "{text}");
    assert!(
        text.contains("nameserver 10.43.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n"),
        "{text}"
    );
    assert!(text.contains("UP"), "loopback is not up: {text}");

    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[a, b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_returns_output_exit_code_and_times_out() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("exec");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let id = fx
        .run(&sb, &fx.container_config(&sb_config, "main", "sleep 1000"))
        .await;
    wait_for_state(rt, &id, ContainerState::Running, Duration::from_secs(10)).await;

    let out = rt
        .exec_sync(
            &id,
            &sh("echo to-out; echo to-err >&2; exit 7"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, b"to-out\n");
    assert_eq!(out.stderr, b"to-err\n");
    let out = rt
        .exec_sync(&id, &["true".to_string()], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);

    let t = Instant::now();
    let err = rt
        .exec_sync(&id, &sh("sleep 100"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err:#}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // The timed-out process was killed: only the container's sleep 1000 is left.
    let out = rt
        .exec_sync(
            &id,
            &sh("ps -o args | grep -c '[s]leep 100$'"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

    // Interactive exec with pipes.
    let mut p = rt
        .exec(
            &id,
            &sh("read line; echo got-$line; echo oops >&2; exit 4"),
            false,
            true,
        )
        .await
        .unwrap();
    let (out, err) = converse(&mut p, b"ping\n").await;
    assert_eq!((out.as_str(), err.as_str()), ("got-ping\n", "oops\n"));
    assert_eq!(p.exit.await.unwrap(), 4);

    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_tty_is_a_working_terminal() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("tty");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let id = fx
        .run(&sb, &fx.container_config(&sb_config, "main", "sleep 1000"))
        .await;
    wait_for_state(rt, &id, ContainerState::Running, Duration::from_secs(10)).await;

    let mut p = rt.exec(&id, &["sh".to_string()], true, true).await.unwrap();
    assert!(p.stderr.is_none());
    p.resize(101, 33).unwrap();
    let stdin = p.stdin.as_mut().unwrap();
    stdin
        .write_all(b"tty; stty size; echo $TERM; echo answer=$((6*7)); exit 5\n")
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let stdout = p.stdout.as_mut().unwrap();
    while !String::from_utf8_lossy(&out).contains("answer=42") {
        assert!(
            Instant::now() < deadline,
            "no answer from the terminal: {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(5), stdout.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("33 101"), "terminal size not applied: {text}");
    assert!(text.contains("xterm"), "{text}");
    let code = tokio::time::timeout(Duration::from_secs(10), p.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 5);

    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_adopts_running_containers() {
    let fx = Fixture::new();
    let sb_config = fx.sandbox_config("adopt");
    let config = fx.container_config(
        &sb_config,
        "ticker",
        "trap 'exit 0' TERM; while :; do echo tick; sleep 0.2; done",
    );
    let (sb, id) = {
        let first = fx.reopen();
        let sb = first.run_pod_sandbox(&sb_config).await.unwrap();
        let id = first.create_container(&sb, &config).await.unwrap();
        first.start_container(&id).await.unwrap();
        (sb, id)
        // `first` is dropped here, as an agent killed with -9 would be.
    };
    wait_for_log(&config.log_path, "tick", Duration::from_secs(10)).await;
    // The shim is not our child: it survives its agent.
    let shim_pid: u32 =
        std::fs::read_to_string(fx.root.join("containers").join(&id).join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id());

    let second = fx.reopen();
    let sandboxes = second.list_pod_sandboxes().await.unwrap();
    assert_eq!(sandboxes.iter().filter(|s| s.id == sb).count(), 1);
    assert_eq!(sandboxes[0].name, "adopt");
    let containers = second.list_containers(None).await.unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(
        (containers[0].id.as_str(), containers[0].state),
        (id.as_str(), ContainerState::Running)
    );
    // Logging continues across the agent restart.
    let before = log_lines(&config.log_path).len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(log_lines(&config.log_path).len() > before);
    // IDs may be given by unique prefix, as crictl allows.
    second
        .stop_container(&id[..10], Duration::from_secs(10))
        .await
        .unwrap();
    let status = second.container_status(&id).await.unwrap();
    assert_eq!(
        (status.state, status.exit_code),
        (ContainerState::Exited, Some(0))
    );

    second.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[id]);
}

/// The "agent" half of `survives_agent_kill_9`, run in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by survives_agent_kill_9 in a child process"]
async fn kill9_child_agent() {
    let Ok(dir) = std::env::var("SKIFF_KILL9_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let image = std::sync::Arc::new(DirImage(build_image(&dir.join("child-image"))));
    let rt = runtime::containers::Runtime::open(dir.join("agent"), image, shim()).unwrap();
    let mut sb_config = runtime::cri::PodSandboxConfig {
        name: "kill9".into(),
        namespace: "default".into(),
        cgroup_parent: std::env::var("SKIFF_KILL9_CGROUP").unwrap(),
        ..Default::default()
    };
    sb_config.log_directory = dir.join("logs");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let config = runtime::cri::ContainerConfig {
        name: "c".into(),
        image: IMAGE.into(),
        command: sh("while :; do echo tick; sleep 0.2; done"),
        log_path: dir.join("logs/c/0.log"),
        ..Default::default()
    };
    let id = rt.create_container(&sb, &config).await.unwrap();
    rt.start_container(&id).await.unwrap();
    println!("READY {sb} {id}");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_agent_kill_9() {
    use std::io::BufRead;
    let fx = Fixture::new();
    let cgroup = unique("skifftest");
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill9_child_agent", "--ignored", "--nocapture"])
        .env("SKIFF_KILL9_DIR", fx.dir.path())
        .env("SKIFF_KILL9_CGROUP", &cgroup)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = None;
    for line in std::io::BufReader::new(agent.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("READY ") {
            ready = Some(rest.split(' ').map(str::to_string).collect::<Vec<_>>());
            break;
        }
    }
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    let ids = ready.expect("the child agent never got ready");
    let (sb, id) = (&ids[0], &ids[1]);

    let log = fx.dir.path().join("logs/c/0.log");
    let rt = fx.reopen();
    assert_eq!(rt.list_pod_sandboxes().await.unwrap().len(), 1);
    let listed = rt.list_containers(Some(sb)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].id, listed[0].state),
        (id, ContainerState::Running)
    );
    let before = log_lines(&log).len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        log_lines(&log).len() > before,
        "the shim stopped logging when its agent died"
    );
    rt.stop_container(id, Duration::from_secs(1)).await.unwrap();
    assert_eq!(rt.container_status(id).await.unwrap().exit_code, Some(137));
    rt.remove_pod_sandbox(sb).await.unwrap();
    assert_nothing_left(&fx, sb, &cgroup, std::slice::from_ref(id));
}

/// After a reboot a sandbox's namespace files hold nothing: simulated here
/// by unmounting them. The sandbox must then read NotReady, so the agent
/// builds a new one instead of starting containers into dead namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_whose_namespaces_are_gone_is_not_ready() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb = rt.run_pod_sandbox(&fx.sandbox_config("rebooted")).await.unwrap();
    let status = rt.pod_sandbox_status(&sb).await.unwrap();
    assert_eq!(status.state, runtime::cri::SandboxState::Ready);
    let netns = status.netns_path.unwrap();
    let out = std::process::Command::new("umount").arg(&netns).output().unwrap();
    assert!(out.status.success(), "umount {}: {}", netns.display(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(rt.pod_sandbox_status(&sb).await.unwrap().state, runtime::cri::SandboxState::NotReady);
    let listed = rt.list_pod_sandboxes().await.unwrap();
    assert!(listed.iter().any(|s| s.id == sb && s.state == runtime::cri::SandboxState::NotReady));
    rt.stop_pod_sandbox(&sb).await.unwrap();
    rt.remove_pod_sandbox(&sb).await.unwrap();
}
