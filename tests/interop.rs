//! Interop with real WAMP clients nobody here wrote, against the real `switchyard` binary:
//! autobahn-python (asyncio and Twisted), Buildbot 4.3's own `WampMQReal` test, a real
//! Buildbot master with `mq: wamp`, autobahn-js plus wampy.js, and autobahn-python
//! and autobahn-js logging in to the Crossbar fixture node with every auth method.
//!
//! The clients are installed by `scripts/test` (the README's test command); run alone, these
//! tests fail with a message saying what is missing rather than skipping.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Process;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the interop clients are missing. Run ./scripts/test (the README's \
             test command), which installs autobahn-python, Buildbot 4.3 and the npm clients."
        ),
    }
}

/// Runs a client program to completion (bounded by `limit`), printing its output, and
/// asserts it exited 0.
fn run_client(what: &str, mut cmd: Command, limit: Duration) {
    let mut child = cmd
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {what} stdout\n{stdout}\n--- {what} stderr\n{stderr}");
    assert!(
        status.success(),
        "{what} failed with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

fn python(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(required_env("SWITCHYARD_INTEROP_PYTHON"));
    cmd.arg(repo().join("tests/interop").join(script))
        .args(args);
    cmd
}

#[test]
fn autobahn_python_asyncio_scenarios() {
    let p = Process::start(&[]);
    run_client(
        "autobahn_scenarios.py",
        python(
            "autobahn_scenarios.py",
            &["--url", &p.url(), "--realm", "realm1"],
        ),
        Duration::from_secs(300),
    );
}

#[test]
fn autobahn_python_meta_api() {
    let p = Process::start(&[]);
    run_client(
        "autobahn_meta.py",
        python(
            "autobahn_meta.py",
            &["--url", &p.url(), "--realm", "realm1"],
        ),
        Duration::from_secs(240),
    );
}

#[test]
fn autobahn_python_twisted_scenarios() {
    let p = Process::start(&[]);
    run_client(
        "autobahn_twisted.py",
        python(
            "autobahn_twisted.py",
            &["--url", &p.url(), "--realm", "realm1"],
        ),
        Duration::from_secs(180),
    );
}

#[test]
fn buildbot_wamp_mq_real_test_passes() {
    let p = Process::start(&[]);
    let py = PathBuf::from(required_env("SWITCHYARD_INTEROP_PYTHON"));
    let venv = py
        .parent()
        .and_then(|b| b.parent())
        .expect("venv/bin/python")
        .to_owned();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/interop/run_buildbot_wamp_real.sh"))
        .arg(p.url())
        .arg(venv);
    run_client("Buildbot WampMQReal", cmd, Duration::from_secs(240));
}

#[test]
fn buildbot_master_messages_reach_a_subscriber() {
    let p = Process::start(&[]);
    run_client(
        "buildbot_master.py",
        python("buildbot_master.py", &["--url", &p.url()]),
        Duration::from_secs(300),
    );
}

#[test]
fn autobahn_js_and_wampy_scenarios() {
    let p = Process::start(&[]);
    let node = required_env("SWITCHYARD_NODE");
    let modules = repo().join("tests/js/node_modules");
    assert!(
        modules.is_dir(),
        "{} is missing: run ./scripts/test (it runs npm ci in tests/js)",
        modules.display()
    );
    let mut cmd = Command::new(node);
    cmd.arg(repo().join("tests/js/interop.mjs"))
        .args(["--url", &p.url(), "--realm", "realm1"]);
    run_client("interop.mjs", cmd, Duration::from_secs(300));
}

#[test]
fn autobahn_python_crossbar_auth_on_the_fixture_node() {
    let node = common::node::FixtureNode::start();
    let cafile = node.dir.join("tls/server.crt");
    run_client(
        "autobahn_crossbar_auth.py",
        python(
            "autobahn_crossbar_auth.py",
            &[
                "--ws",
                &format!("ws://{}/ws", node.addrs[0]),
                "--raw",
                &format!("tcp://{}", node.addrs[0]),
                "--wss",
                &format!("wss://localhost:{}/ws", node.addrs[1].port()),
                "--cafile",
                cafile.to_str().unwrap(),
                "--master-ticket",
                common::node::MASTER_TICKET,
            ],
        ),
        Duration::from_secs(180),
    );
}

#[test]
fn autobahn_js_crossbar_auth_on_the_fixture_node() {
    let node = common::node::FixtureNode::start();
    let node_bin = required_env("SWITCHYARD_NODE");
    let modules = repo().join("tests/js/node_modules");
    assert!(
        modules.is_dir(),
        "{} is missing: run ./scripts/test (it installs the npm packages in tests/js)",
        modules.display()
    );
    let mut cmd = Command::new(node_bin);
    cmd.arg(repo().join("tests/js/crossbar_auth.mjs"))
        .args([
            "--ws",
            &format!("ws://{}/ws", node.addrs[0]),
            "--wss",
            &format!("wss://localhost:{}/ws", node.addrs[1].port()),
        ])
        // Node trusts the node's test certificate for wss:// this way.
        .env("NODE_EXTRA_CA_CERTS", node.dir.join("tls/server.crt"));
    run_client("crossbar_auth.mjs", cmd, Duration::from_secs(120));
}
