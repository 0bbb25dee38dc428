//! The `switchyard` binary as a user runs it: flags, config errors, start-up line, and a
//! SIGTERM that says GOODBYE to every session before exiting.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use switchyard_router::wire::{Dict, Message};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn start(extra: &[&str]) -> Process {
    Process::start(extra)
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("switchyard "));
    let out = Command::new(BIN)
        .args(["start", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));
    let out = Command::new(BIN)
        .args(["start", "--no-such-flag"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn config_errors_name_the_key_and_stop_start_up() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "listen = \"127.0.0.1:0\"\n[limits]\nmax_mesage_size = 10\n",
            "max_mesage_size",
        ),
        (
            "listen = \"127.0.0.1:0\"\nrealms = [{ name = \"a\" }, { name = \"a\" }]\n",
            "twice",
        ),
        ("listen = \"not an address\"\n", "host:port"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["start", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "stderr {err:?} should mention {needle}"
        );
    }
    let out = Command::new(BIN)
        .args(["start", "--config", "/nonexistent/switchyard.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/switchyard.toml"));
}

#[tokio::test]
async fn sigterm_says_goodbye_to_every_session_then_exits() {
    let mut p = start(&[]);
    let url = format!("ws://{}/ws", p.addr);
    let mut a = Client::websocket(&url, "wamp.2.json").await;
    a.join("realm1").await;
    let mut b = Client::rawsocket(p.addr, switchyard_router::wire::Serializer::MsgPack).await;
    b.join("buildbot").await;
    Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.recv().await,
            Message::Goodbye {
                details: Dict::new(),
                reason: "wamp.close.system_shutdown".into()
            }
        );
        c.send(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.goodbye_and_out".into(),
        })
        .await;
        c.expect_closed().await;
    }
    let started = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "switchyard did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn realm_flag_replaces_the_default_realms() {
    let p = start(&["--realm", "com.example.only"]);
    let url = format!("ws://{}/ws", p.addr);
    let mut c = Client::websocket(&url, "wamp.2.json").await;
    c.join("com.example.only").await;
    let mut c = Client::websocket(&url, "wamp.2.json").await;
    assert!(
        matches!(c.hello("realm1", client_roles()).await, Message::Abort { reason, .. } if reason == "wamp.error.no_such_realm")
    );
}

/// `switchyard bench interest` times SUBSCRIBEs and REGISTERs against a running node and
/// prints one JSON line with both latency distributions.
#[test]
fn bench_interest_reports_both_latencies() {
    let p = start(&[]);
    let out = Command::new(BIN)
        .args(["bench", "interest", "--url", &p.url(), "--count", "20"])
        .args(["--warmup", "2", "--json", "--label", "smoke"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["scenario"], "interest");
    for what in ["subscribe", "register"] {
        assert_eq!(line[what]["samples"], 20, "{line}");
        assert!(line[what]["p50_us"].as_f64().unwrap() > 0.0, "{line}");
    }
}
