//! Protocol corners real clients hit and per-session limits, against the real binary:
//! autobahn-python (see tests/interop/autobahn_hardening.py) hitting the subscription and
//! registration caps, prefix URIs with empty components, `wamp.session.kill` waiting for the
//! victim's GOODBYE, Crossbar role disclosure on the fixture node; and, with `switchyard
//! mesh status`, peers given as `ws://host:port/ws` forming a mesh; the default master name.
//!
//! The Python client is installed by `scripts/test`; run alone, these tests fail with a
//! message saying what is missing rather than skipping.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::masters::{
    free_port, http, master_section, wait_until, Node, TempDir, BIN, MESH_SECRET,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs tests/interop/autobahn_hardening.py with `args` (bounded), asserting it passed.
fn autobahn(args: &[&str]) {
    let python = match std::env::var("SWITCHYARD_INTEROP_PYTHON") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "SWITCHYARD_INTEROP_PYTHON is not set: autobahn-python is missing. Run ./scripts/test \
             (the README's test command), which installs it."
        ),
    };
    let mut child = Command::new(python)
        .arg(repo().join("tests/interop/autobahn_hardening.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start autobahn_hardening.py");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "autobahn_hardening.py {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("Attempt to send on a closed protocol"),
        "autobahn complained:\n{stderr}"
    );
}

#[test]
fn a_session_cannot_hold_unbounded_subscriptions_or_registrations() {
    let dir = TempDir::new("caps");
    let config = dir.path().join("caps.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_subscriptions_per_session = 5\nmax_registrations_per_session = 3\n",
    )
    .unwrap();
    let p = common::Process::start(&["--config", config.to_str().unwrap()]);
    autobahn(&[
        "caps",
        "--url",
        &p.url(),
        "--max-subs",
        "5",
        "--max-regs",
        "3",
    ]);
}

#[test]
fn prefix_patterns_with_empty_components_are_invalid_uris() {
    let p = common::Process::start(&[]);
    autobahn(&["prefix", "--url", &p.url()]);
}

#[test]
fn a_killed_session_says_goodbye_on_an_open_transport() {
    let p = common::Process::start(&[]);
    autobahn(&["kill", "--url", &p.url()]);
}

#[test]
fn crossbar_roles_decide_disclosure_whatever_the_client_asks() {
    let node = common::node::FixtureNode::start();
    autobahn(&["disclose", "--url", &format!("ws://{}/ws", node.addrs[0])]);
}

/// What `switchyard mesh status` reports for the node on `port`.
fn mesh_status(port: u16) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["mesh", "status", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn mesh_node(dir: &TempDir, name: &str, port: u16, peers: &[String]) -> Node {
    let list = peers
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[mesh]\nnode_name = \"{name}\"\npeers = [{list}]\n\
         secret = \"{MESH_SECRET}\"\nheartbeat_interval_ms = 300\nheartbeat_timeout_ms = 2000\n"
    );
    Node::start(dir.path(), name, port, &config)
}

#[test]
fn peers_given_by_their_wamp_url_form_the_mesh() {
    let dir = TempDir::new("mesh-ws-url");
    let (pa, pb) = (free_port(), free_port());
    // `a` names `b` by its WAMP URL (/ws), `b` names `a` by the root path.
    let a = mesh_node(&dir, "a", pa, &[format!("ws://127.0.0.1:{pb}/ws")]);
    // While b is down, a's status says it runs alone, and why.
    let st = wait_until(
        Duration::from_secs(10),
        "a's status to name a dial error",
        || {
            let st = mesh_status(pa);
            st["peers"][0]["last_error"].is_string().then_some(st)
        },
    );
    let warning = st["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("runs alone") && warning.contains(&format!("127.0.0.1:{pb}/ws")),
        "status: {st}"
    );
    let b = mesh_node(&dir, "b", pb, &[format!("ws://127.0.0.1:{pa}/")]);
    for (node, other) in [(&a, "b"), (&b, "a")] {
        wait_until(Duration::from_secs(20), "the link over /ws and /", || {
            let st = mesh_status(node.port);
            let linked = st["peers"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["node"] == other && p["state"] == "connected")
            });
            (linked && st["warning"].is_null()).then_some(())
        });
    }
}

#[test]
fn the_default_master_name_is_the_host_name() {
    let dir = TempDir::new("master-name");
    let port = free_port();
    let section = master_section("m", "", 1, 1, &[("b", "true")], "").replace("name = \"m\"\n", "");
    let node = Node::start(
        dir.path(),
        "m",
        port,
        &format!("listen = \"127.0.0.1:{port}\"\n{section}"),
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let (status, body) = http(node.addr(), "GET", "/api/v2/masters", None, None);
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["masters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, [host.as_str()], "{body}");
}
