//! The official Kubernetes Python client (`kubernetes` from PyPI) against a
//! real `skiff server` with its node agent: runs the unittest modules in
//! tests/python/ (see common.py there) in a venv made with `python3 -m venv`.
//! The venv lives under the cargo target dir, keyed by
//! tests/python/requirements.txt and the Python version, so only the first run
//! (or a changed requirements file) reaches PyPI. Needs root, like every test
//! that runs containers; CI installs python3 and python3-venv.
//!
//! `SKIFF_PY_TESTS="test_core.ConfigMaps test_pods"` runs only those tests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{registry_with_busybox, Server};

#[path = "client_support.rs"]
mod client_support;
use client_support::log_tail;

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The cargo target dir this test binary was built in (target/<profile>/deps/<exe>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("the test binary lives in <target>/<profile>/deps").to_path_buf()
}

/// FNV-1a: a hash that stays the same across Rust versions, for a cache key.
fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A venv with the requirements installed, made once per requirements file and Python version.
fn venv() -> PathBuf {
    let requirements = python_dir().join("requirements.txt");
    let mut key = std::fs::read(&requirements).unwrap();
    let version = Command::new("python3").args(["-c", "import sys; print(sys.version)"]).output().expect("python3 (apt-get install python3 python3-venv)");
    assert!(version.status.success(), "python3: {}", String::from_utf8_lossy(&version.stderr));
    key.extend(version.stdout);
    let root = target_dir().join("python-client-venv");
    let dir = root.join(format!("{:016x}", fnv64(&key)));
    if dir.join("ready").exists() {
        return dir;
    }
    // Built beside it and renamed into place, so a run that dies halfway leaves no half venv behind.
    std::fs::create_dir_all(&root).unwrap();
    let tmp = root.join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("python3").args(["-m", "venv"]).arg(&tmp), "python3 -m venv (apt-get install python3-venv)");
    let pip = || {
        let mut c = Command::new(tmp.join("bin/python"));
        c.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r"]).arg(&requirements);
        c
    };
    // One retry: PyPI is the only thing here off this machine.
    if !pip().status().is_ok_and(|s| s.success()) {
        run(&mut pip(), "pip install -r tests/python/requirements.txt");
    }
    std::fs::write(tmp.join("ready"), "").unwrap();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another run got there first.
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    dir
}

#[test]
fn the_python_client_against_a_node() {
    let started = Instant::now();
    let venv = venv();
    let venv_secs = started.elapsed().as_secs_f32();
    let (_reg, image) = registry_with_busybox();
    let s = Server::start_node();
    let node = s.wait_node_ready();

    let mut cmd = Command::new(venv.join("bin/python"));
    match std::env::var("SKIFF_PY_TESTS") {
        Ok(tests) => cmd.args(["-m", "unittest", "-v"]).args(tests.split_whitespace()),
        Err(_) => cmd.args(["-m", "unittest", "discover", "-v", "-s", ".", "-p", "test_*.py"]),
    };
    let out_path = s.dir.path().join("python.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .current_dir(python_dir())
        .env("KUBECONFIG", s.kubeconfig())
        .env("SKIFF_TEST_IMAGE", &image)
        .env("SKIFF_NODE_NAME", &node)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The client leaves sockets to the garbage collector; unittest would print a warning for each.
        .env("PYTHONWARNINGS", "ignore::ResourceWarning")
        // The DynamicClient caches discovery in the temp dir.
        .env("TMPDIR", s.dir.path())
        .env("HOME", s.dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("running the Python tests");
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut output = String::new();
    std::fs::File::open(&out_path).unwrap().read_to_string(&mut output).unwrap();
    println!("venv {venv_secs:.1}s, all {:.1}s", started.elapsed().as_secs_f32());
    match status {
        Some(st) if st.success() => println!("{output}"),
        Some(st) => panic!("Python client tests failed ({st}):\n{output}\n--- server log (tail) ---\n{}", log_tail(&s, 60)),
        None => panic!("Python client tests timed out after 900s:\n{output}\n--- server log (tail) ---\n{}", log_tail(&s, 60)),
    }
}
