//! Container lifecycle against real runc: logs, exit codes and reasons, OOM,
//! stop with grace period, and leak-free removal. Needs root.

mod containers_support;

use std::time::{Duration, Instant};

use containers_support::*;
use runtime::cri::{ContainerState, LinuxResources, RuntimeService, SecurityConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exit_codes_and_kubernetes_process_semantics() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("logs");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();

    let mut failing = fx.container_config(
        &sb_config,
        "failing",
        "echo out-line; echo err-line >&2; printf 'no-newline'; exit 3",
    );
    failing.attempt = 2;
    let failing_id = fx.run(&sb, &failing).await;

    // args alone replace CMD and keep ENTRYPOINT (none here, so args run as is);
    // env: image first, container overrides; workingDir and USER from the image unless overridden.
    let mut info = fx.container_config(&sb_config, "info", "");
    info.command.clear();
    info.args = vec![
        "sh".into(),
        "-c".into(),
        "echo \"$FROM_IMAGE $OVERRIDE $MINE $(pwd) $(id -u):$(id -g) $(cat /etc/motd) $(hostname)\"".into(),
    ];
    info.envs = vec![
        ("OVERRIDE".into(), "container".into()),
        ("MINE".into(), "1".into()),
    ];
    info.security = SecurityConfig {
        run_as_user: Some(65534),
        ..Default::default()
    };
    let info_id = fx.run(&sb, &info).await;

    let status = wait_for_state(
        rt,
        &failing_id,
        ContainerState::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.reason.as_deref(), Some("Error"));
    assert_eq!(status.attempt, 2);
    assert_eq!(status.image, IMAGE);
    assert!(status.finished_at.unwrap() >= status.started_at.unwrap());
    let lines = log_lines(&failing.log_path);
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "out-line".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "err-line".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "no-newline".into())),
        "{lines:?}"
    );

    let status = wait_for_state(
        rt,
        &info_id,
        ContainerState::Exited,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        (status.exit_code, status.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
    let lines = log_lines(&info.log_path);
    assert_eq!(
        lines,
        vec![(
            "stdout".into(),
            "F".into(),
            "yes container 1 /tmp 65534:65534 top logs".into()
        )]
    );

    let listed = rt.list_containers(Some(&sb)).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![failing_id.clone(), info_id.clone()]
    );

    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[failing_id, info_id]);
    // Idempotent.
    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert!(rt.list_pod_sandboxes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_ends_in_oom_killed() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("oom");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let mut config =
        fx.container_config(&sb_config, "hog", "x=0123456789; while :; do x=$x$x; done");
    config.resources = LinuxResources {
        memory_limit: Some(16 * 1024 * 1024),
        ..Default::default()
    };
    let id = fx.run(&sb, &config).await;
    let status = wait_for_state(rt, &id, ContainerState::Exited, Duration::from_secs(60)).await;
    assert_eq!(status.reason.as_deref(), Some("OOMKilled"), "{status:?}");
    assert_eq!(status.exit_code, Some(137));
    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(&fx, &sb, &sb_config.cgroup_parent, &[id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_honours_the_grace_period() {
    let fx = Fixture::new();
    let rt = &fx.runtime;
    let sb_config = fx.sandbox_config("stop");
    let sb = rt.run_pod_sandbox(&sb_config).await.unwrap();
    let trapping = fx.container_config(
        &sb_config,
        "trapping",
        "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
    );
    // As PID 1 without a handler, sleep ignores SIGTERM: only SIGKILL ends it.
    let mut stubborn = fx.container_config(&sb_config, "stubborn", "");
    stubborn.command = vec!["sleep".into(), "1000".into()];
    let trapping_id = fx.run(&sb, &trapping).await;
    let stubborn_id = fx.run(&sb, &stubborn).await;
    wait_for_log(&trapping.log_path, "ready", Duration::from_secs(10)).await;
    assert_eq!(
        rt.container_status(&stubborn_id).await.unwrap().state,
        ContainerState::Running
    );

    let t = Instant::now();
    rt.stop_container(&trapping_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "trapping container took {:?}",
        t.elapsed()
    );
    let status = rt.container_status(&trapping_id).await.unwrap();
    assert_eq!(
        (status.state, status.exit_code),
        (ContainerState::Exited, Some(0))
    );
    assert!(log_lines(&trapping.log_path)
        .iter()
        .any(|(_, _, t)| t == "got-term"));

    let t = Instant::now();
    rt.stop_container(&stubborn_id, Duration::from_secs(2))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "stubborn stop took {took:?}"
    );
    let status = rt.container_status(&stubborn_id).await.unwrap();
    assert_eq!(
        (status.state, status.exit_code, status.reason.as_deref()),
        (ContainerState::Exited, Some(137), Some("Error"))
    );
    // Stopping again is a no-op.
    rt.stop_container(&stubborn_id, Duration::from_secs(2))
        .await
        .unwrap();

    rt.remove_container(&trapping_id).await.unwrap();
    rt.remove_container(&trapping_id).await.unwrap();
    rt.stop_pod_sandbox(&sb).await.unwrap();
    assert_eq!(
        rt.pod_sandbox_status(&sb).await.unwrap().state,
        runtime::cri::SandboxState::NotReady
    );
    rt.remove_pod_sandbox(&sb).await.unwrap();
    assert_nothing_left(
        &fx,
        &sb,
        &sb_config.cgroup_parent,
        &[trapping_id, stubborn_id],
    );
}
