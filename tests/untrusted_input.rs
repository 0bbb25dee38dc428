//! Untrusted input against a real `switchyard start` process whose log is captured: a HELLO
//! with a 4 MiB `authid`, and a mesh HELLO with a 4 MiB node name, are refused with a clear
//! reason before any authentication, the log grows by kilobytes (not megabytes), and a
//! bystander session keeps working.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::masters::{free_port, master_section, Lines, TempDir, BIN, MESH_SECRET};
use common::*;
use futures_util::SinkExt;
use switchyard_router::mesh::frame::{Frame, SUBPROTOCOL};
use switchyard_router::wire::{Dict, Message, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;

const FOUR_MIB: usize = 4 << 20;

/// A node with a master (workers log in with WAMP-CRA) and a mesh, logging at debug level
/// into `<dir>/node.log`.
struct LoggedNode {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl LoggedNode {
    fn start(dir: &Path) -> LoggedNode {
        let port = free_port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\n\
             [mesh]\nnode_name = \"n1\"\nsecret = \"{MESH_SECRET}\"\npeers = []\n{}",
            master_section("n1", "", 1, 1, &[("b", "true")], "")
        );
        std::fs::write(dir.join("node.toml"), config).unwrap();
        let log = dir.join("node.log");
        let mut child = Command::new(BIN)
            .args(["start", "--config", "node.toml"])
            .current_dir(dir)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let out = Lines::collect(child.stdout.take().unwrap());
        if out
            .wait_for("switchyard master", 0, Duration::from_secs(60))
            .is_none()
        {
            panic!(
                "node did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        LoggedNode { child, port, log }
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).unwrap().len()
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap()).into_owned()
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn huge_identities_and_peer_names_are_refused_and_not_logged() {
    let dir = TempDir::new("untrusted");
    let node = LoggedNode::start(dir.path());
    let url = format!("ws://127.0.0.1:{}/ws", node.port);
    let mut sub = Client::websocket(&url, "wamp.2.json").await;
    sub.join("realm1").await;
    sub.subscribe("com.bystander", Dict::new()).await;
    let mut publ = Client::websocket(&url, "wamp.2.msgpack").await;
    publ.join("realm1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = node.log_len();

    // A worker-style WAMP-CRA HELLO with a 4 MiB authid, then one with a 4 MiB authrole.
    for key in ["authid", "authrole"] {
        let mut c = Client::websocket(&url, "wamp.2.msgpack").await;
        let mut details = client_roles();
        details.insert(key.into(), Value::from("w".repeat(FOUR_MIB).as_str()));
        details.insert(
            "authmethods".into(),
            Value::List(vec![Value::from("wampcra")]),
        );
        match c.hello("buildbot", details).await {
            Message::Abort { reason, details } => {
                assert_eq!(reason, "wamp.error.invalid_argument");
                let text = format!("{details:?}");
                assert!(text.contains(key) && text.contains("at most 256"), "{text}");
            }
            other => panic!("expected ABORT, got {other:?}"),
        }
        c.expect_closed().await;
    }

    // A mesh HELLO announcing a 4 MiB node name.
    let mut req = format!("ws://127.0.0.1:{}/mesh", node.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Ws::Binary(
        Frame::Hello {
            node: "n".repeat(FOUR_MIB),
            incarnation: 1,
            url: "ws://127.0.0.1:9/mesh".into(),
            nonce: switchyard_router::mesh::handshake::nonce(),
            features: vec![],
        }
        .encode(),
    ))
    .await
    .unwrap();
    match fake_recv(&mut ws).await {
        Frame::Refuse { code, reason } => {
            assert_eq!(code, "invalid");
            assert!(reason.contains("1 to 128"), "{reason}");
        }
        other => panic!("expected REFUSE, got {other:?}"),
    }

    // The bystanders never noticed.
    publ.publish("com.bystander", Dict::new(), args(vec![Value::Int(7)]))
        .await;
    match sub.recv().await {
        Message::Event { payload, .. } => assert_eq!(payload.args(), &[Value::Int(7)]),
        other => panic!("bystander got {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = node.log_len() - before;
    let text = node.log_text();
    assert!(
        grown < 64 * 1024,
        "the log grew by {grown} bytes for three refused attempts"
    );
    assert!(text.contains("HELLO refused: HELLO authid is 4194304 bytes"));
    assert!(text.contains("refusing mesh peer: node name of 4194304 bytes"));
}
