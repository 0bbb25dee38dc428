//! TLS between mesh peers, configured from switchyard.toml, on real `switchyard` processes:
//! three nodes with `[transport.tls]` and `wss://` peers verified against `mesh.tls_ca` form
//! a full mesh and route pub/sub and RPC between wss:// and TLS RawSocket clients; a node
//! whose certificate comes from another CA, or names another host, is never linked to (the
//! dialers log why); TLS/plain-text mismatches are reported with a hint; bad TLS files stop
//! the start with exit 2.
//!
//! Certificates are made at test time (rcgen) for 127.0.0.1 and written to a temporary
//! folder, named relative to each node's config file.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mesh::poll_until;
use common::node::temp_dir;
use common::tls::TestCa;
use switchyard_router::client::{CalleeMessage, Client, ClientOptions};
use switchyard_router::wire::{Dict, Message, Payload, Serializer, Value};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const SECRET: &str = "correct horse battery staple";
/// What node certificates are for: the address peers dial.
const LOCAL: &[&str] = &["127.0.0.1"];

/// A running node, SIGKILLed on drop.
struct Proc {
    child: Child,
    config: PathBuf,
    /// The process's stderr (log), collected by a thread.
    log: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// `switchyard mesh status --config FILE`: over TLS when the config has [transport.tls].
    fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["mesh", "status", "--config"])
            .arg(&self.config)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The peers this node shows as connected and synced.
    fn connected(&self) -> Vec<String> {
        let Some(st) = self.status() else {
            return Vec::new();
        };
        let mut v: Vec<String> = st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "connected" && p["synced"] == true)
            .map(|p| p["node"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    /// The status entry of the peer dialed at `url`.
    fn peer_by_url(&self, url: &str) -> Option<serde_json::Value> {
        let st = self.status()?;
        st["peers"]
            .as_array()?
            .iter()
            .find(|p| p["url"] == url)
            .cloned()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node's files in `dir`: its certificate and key from `ca` (none: a plain node), the CA
/// it trusts, and its config.
struct NodeSpec<'a> {
    name: &'a str,
    port: u16,
    /// Issues this node's certificate; `None` serves plain ws://.
    ca: Option<&'a TestCa>,
    /// The CA it verifies wss:// peers with.
    trusts: Option<&'a TestCa>,
    /// The names its certificate is for.
    names: &'a [&'a str],
    peers: Vec<String>,
}

fn write_config(dir: &Path, spec: &NodeSpec<'_>) -> PathBuf {
    let mut toml = format!("listen = \"127.0.0.1:{}\"\n", spec.port);
    if let Some(ca) = spec.ca {
        let (chain, key) = ca.issue(spec.names);
        std::fs::write(dir.join(format!("{}.chain.pem", spec.name)), chain).unwrap();
        std::fs::write(dir.join(format!("{}.key.pem", spec.name)), key).unwrap();
        toml.push_str(&format!(
            "[transport.tls]\ncert = \"{0}.chain.pem\"\nkey = \"{0}.key.pem\"\n",
            spec.name
        ));
    }
    let peers: Vec<String> = spec.peers.iter().map(|p| format!("{p:?}")).collect();
    toml.push_str(&format!(
        "[mesh]\nnode_name = \"{}\"\nsecret = \"{SECRET}\"\npeers = [{}]\nreconnect_max_ms = 500\n",
        spec.name,
        peers.join(", ")
    ));
    if let Some(ca) = spec.trusts {
        let file = format!("{}.ca.pem", spec.name);
        std::fs::write(dir.join(&file), &ca.cert_pem).unwrap();
        toml.push_str(&format!("tls_ca = \"{file}\"\n"));
    }
    let path = dir.join(format!("{}.toml", spec.name));
    std::fs::write(&path, toml).unwrap();
    path
}

fn spawn(dir: &Path, spec: NodeSpec<'_>) -> Proc {
    let config = write_config(dir, &spec);
    // Run from elsewhere: the files must be found relative to the config file.
    let mut child = Command::new(BIN)
        .args(["start", "--no-master", "--config"])
        .arg(&config)
        .current_dir(std::env::temp_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (mut err, sink) = (child.stderr.take().unwrap(), log.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut p = Proc { child, config, log };
    assert!(
        line.starts_with("switchyard listening on"),
        "{}: {line:?}\n{}",
        spec.name,
        p.log()
    );
    assert!(p.alive());
    p
}

/// Polls `cond` every 100 ms for at most `secs` seconds.
async fn eventually(what: &str, secs: u64, cond: impl FnMut() -> bool) {
    poll_until(
        what,
        Duration::from_secs(secs),
        Duration::from_millis(100),
        cond,
    )
    .await
}

fn wss(port: u16) -> String {
    format!("wss://127.0.0.1:{port}")
}

/// A switchyard client over wss://, trusting `ca`.
async fn wss_client(port: u16, ca: &TestCa) -> Client {
    let mut o = ClientOptions::new(format!("wss://127.0.0.1:{port}/ws"), "realm1");
    o.serializer = Serializer::Json;
    o.tls = Some(ca.client_config());
    o.timeout = Duration::from_secs(5);
    Client::connect(&o).await.unwrap()
}

fn one_arg(v: Value) -> Payload {
    Payload::new(vec![v], Dict::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tls_nodes_link_over_wss_and_route_across_them() {
    let ca = TestCa::generate("mesh test CA");
    let dir = temp_dir("mesh-tls");
    let ports = [free_port(), free_port(), free_port()];
    let peers: Vec<String> = ports.iter().map(|p| wss(*p)).collect();
    let nodes: Vec<Proc> = ["n1", "n2", "n3"]
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            spawn(
                &dir,
                NodeSpec {
                    name,
                    port,
                    ca: Some(&ca),
                    trusts: Some(&ca),
                    names: LOCAL,
                    peers: peers.clone(),
                },
            )
        })
        .collect();
    eventually("a full mesh of three over TLS", 20, || {
        nodes[0].connected() == ["n2", "n3"]
            && nodes[1].connected() == ["n1", "n3"]
            && nodes[2].connected() == ["n1", "n2"]
    })
    .await;
    // Every node advertises, and is linked at, its wss:// URL.
    let st = nodes[0].status().unwrap();
    assert_eq!(st["url"], format!("wss://127.0.0.1:{}/mesh", ports[0]));
    for p in st["peers"].as_array().unwrap() {
        assert!(p["url"].as_str().unwrap().starts_with("wss://"), "{p}");
    }

    // Pub/sub: subscriber on n3, publisher on n1, both over wss://.
    let sub = wss_client(ports[2], &ca).await;
    let (_, mut events) = sub.subscribe("tls.topic", Dict::new()).await.unwrap();
    // Callee on n2, caller on n3.
    let callee = wss_client(ports[1], &ca).await;
    let (_, mut calls) = callee.register("tls.add1", Dict::new()).await.unwrap();
    let serving = callee.clone();
    tokio::spawn(async move {
        while let Some(m) = calls.recv().await {
            if let CalleeMessage::Invocation {
                request, payload, ..
            } = m
            {
                let n = payload.args()[0].as_u64().unwrap_or(0);
                let _ = serving
                    .yield_result(request, Dict::new(), one_arg((n + 1).into()))
                    .await;
            }
        }
    });
    let publisher = wss_client(ports[0], &ca).await;
    let caller = wss_client(ports[2], &ca).await;
    // Interest propagates asynchronously: retry until the first event and result arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        publisher
            .publish_acknowledged("tls.topic", Dict::new(), one_arg("hello".into()))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
            Ok(Some(e)) => break e,
            _ if Instant::now() < deadline => continue,
            _ => panic!("no event crossed n1 → n3 over TLS"),
        }
    };
    assert_eq!(event.payload.args(), vec![Value::from("hello")]);
    let result = loop {
        match caller
            .call("tls.add1", Dict::new(), one_arg(41u64.into()))
            .await
        {
            Ok(r) => break r,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no call crossed n3 → n2 over TLS: {e}"),
        }
    };
    assert_eq!(result.args(), vec![Value::from(42u64)]);

    // TLS RawSocket on the same port: a raw client on n1 calls the callee on n2.
    let addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let io = ca.connect(addr).await;
    let mut raw = common::Client::rawsocket_over(io, Serializer::MsgPack).await;
    raw.join("realm1").await;
    let req = raw
        .call(
            "tls.add1",
            common::opts(&[]),
            common::args(vec![1u64.into()]),
        )
        .await;
    match raw.recv().await {
        Message::Result {
            request, payload, ..
        } => {
            assert_eq!(request, req);
            assert_eq!(payload.args(), vec![Value::from(2u64)]);
        }
        other => panic!("expected RESULT, got {other:?}"),
    }

    // A plain-text client cannot use the TLS port; status needs the CA.
    let mut plain = ClientOptions::new(format!("ws://127.0.0.1:{}/ws", ports[0]), "realm1");
    plain.timeout = Duration::from_secs(5);
    assert!(Client::connect(&plain).await.is_err());
    let out = Command::new(BIN)
        .args([
            "mesh",
            "status",
            "--addr",
            &format!("127.0.0.1:{}", ports[0]),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let ca_file = dir.join("n1.ca.pem");
    let out = Command::new(BIN)
        .args([
            "mesh",
            "status",
            "--addr",
            &format!("127.0.0.1:{}", ports[0]),
        ])
        .arg("--tls-ca")
        .arg(&ca_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["node"], "n1");
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_never_links() {
    let ca = TestCa::generate("mesh CA");
    let other = TestCa::generate("some other CA");
    let dir = temp_dir("mesh-tls-ca");
    let ports = [free_port(), free_port(), free_port()];
    let peers: Vec<String> = ports.iter().map(|p| wss(*p)).collect();
    let n1 = spawn(
        &dir,
        NodeSpec {
            name: "n1",
            port: ports[0],
            ca: Some(&ca),
            trusts: Some(&ca),
            names: LOCAL,
            peers: peers.clone(),
        },
    );
    let n2 = spawn(
        &dir,
        NodeSpec {
            name: "n2",
            port: ports[1],
            ca: Some(&ca),
            trusts: Some(&ca),
            names: LOCAL,
            peers: peers.clone(),
        },
    );
    // Same secret, same peer list, but its certificate (and trust) is the other CA's.
    let mut rogue = spawn(
        &dir,
        NodeSpec {
            name: "rogue",
            port: ports[2],
            ca: Some(&other),
            trusts: Some(&other),
            names: LOCAL,
            peers: peers.clone(),
        },
    );
    eventually("n1 and n2 linked", 20, || {
        n1.connected() == ["n2"] && n2.connected() == ["n1"]
    })
    .await;
    let rogue_url = format!("{}/mesh", wss(ports[2]));
    eventually(
        "n1 reports why it cannot link to the rogue node",
        20,
        || {
            n1.peer_by_url(&rogue_url).is_some_and(|p| {
                p["state"] == "unreachable"
                    && p["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("UnknownIssuer"))
            })
        },
    )
    .await;
    // Both sides log the cause, once per cause.
    let line =
        format!("mesh: cannot link to {rogue_url}: TLS: invalid peer certificate: UnknownIssuer");
    eventually("the cause in n1's and n2's logs", 10, || {
        n1.log().contains(&line) && n2.log().contains(&line)
    })
    .await;
    let n1_url = format!("{}/mesh", wss(ports[0]));
    eventually("the cause in the rogue node's log", 10, || {
        rogue.log().contains(&format!(
            "mesh: cannot link to {n1_url}: TLS: invalid peer certificate: UnknownIssuer"
        ))
    })
    .await;
    // It never appears connected, on any node, while the others keep retrying.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(rogue.connected().is_empty(), "{}", rogue.log());
        assert_eq!(n1.connected(), ["n2"]);
        assert_eq!(n2.connected(), ["n1"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(rogue.alive());
    assert!(!rogue.log().contains("mesh peer linked"), "{}", rogue.log());
    assert!(!n1.log().contains("peer=rogue"), "{}", n1.log());
    // Logged once, not on every retry.
    assert_eq!(n1.log().matches(&line).count(), 1, "{}", n1.log());
    drop((n1, n2, rogue));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_refused() {
    let ca = TestCa::generate("mesh CA");
    let dir = temp_dir("mesh-tls-name");
    let ports = [free_port(), free_port()];
    let n1 = spawn(
        &dir,
        NodeSpec {
            name: "n1",
            port: ports[0],
            ca: Some(&ca),
            trusts: Some(&ca),
            names: LOCAL,
            peers: vec![wss(ports[1])],
        },
    );
    // The right CA, but a certificate for other names than the 127.0.0.1 it is dialed at.
    let n2 = spawn(
        &dir,
        NodeSpec {
            name: "n2",
            port: ports[1],
            ca: Some(&ca),
            trusts: Some(&ca),
            names: &["10.9.9.9", "elsewhere.example"],
            peers: vec![],
        },
    );
    let url = format!("{}/mesh", wss(ports[1]));
    let mut error = String::new();
    eventually("n1 reports the name mismatch", 20, || {
        error = n1
            .peer_by_url(&url)
            .and_then(|p| p["last_error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        error.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\"")
    })
    .await;
    assert!(
        n1.log().contains(&format!(
            "mesh: cannot link to {url}: TLS: invalid peer certificate"
        )),
        "{}",
        n1.log()
    );
    assert!(n1.connected().is_empty() && n2.connected().is_empty());
    drop((n1, n2));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plain_text_mismatches_are_reported_by_the_dialer() {
    let ca = TestCa::generate("mesh CA");
    let dir = temp_dir("mesh-tls-plain");
    let (plain_port, tls_port) = (free_port(), free_port());
    let mut plain = spawn(
        &dir,
        NodeSpec {
            name: "plain",
            port: plain_port,
            ca: None,
            trusts: None,
            names: LOCAL,
            // Dialed as ws://, but it serves TLS.
            peers: vec![format!("ws://127.0.0.1:{tls_port}")],
        },
    );
    let mut secure = spawn(
        &dir,
        NodeSpec {
            name: "secure",
            port: tls_port,
            ca: Some(&ca),
            trusts: Some(&ca),
            names: LOCAL,
            // Dialed as wss://, but it serves plain ws://.
            peers: vec![wss(plain_port)],
        },
    );
    let url = format!("{}/mesh", wss(plain_port));
    let line = format!("mesh: cannot link to {url}: TLS: ");
    let hint = "(does the peer serve TLS on that port, or plain ws://?)";
    eventually("the TLS node logs why it cannot link", 20, || {
        secure
            .log()
            .lines()
            .any(|l| l.contains(&line) && l.contains(hint))
    })
    .await;
    let p = secure.peer_by_url(&url).unwrap();
    assert_eq!(p["state"], "unreachable", "{p}");
    assert!(p["last_error"].as_str().unwrap().contains(hint), "{p}");

    let url = format!("ws://127.0.0.1:{tls_port}/mesh");
    let line = format!("mesh: cannot link to {url}: WebSocket: ");
    let hint = "(does the peer serve TLS? then dial it as wss://)";
    eventually("the plain node logs why it cannot link", 20, || {
        plain
            .log()
            .lines()
            .any(|l| l.contains(&line) && l.contains(hint))
    })
    .await;
    let p = plain.peer_by_url(&url).unwrap();
    assert_eq!(p["state"], "unreachable", "{p}");
    assert!(p["last_error"].as_str().unwrap().contains(hint), "{p}");

    assert!(secure.alive() && plain.alive());
    for log in [secure.log(), plain.log()] {
        assert!(!log.contains("panicked"), "{log}");
        assert!(!log.contains("mesh peer linked"), "{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `switchyard start` with `args`; its exit code and stderr.
fn start_fails(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("start")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchyard start did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_tls_files_and_unverifiable_peers_stop_the_start() {
    let ca = TestCa::generate("mesh CA");
    let dir = temp_dir("mesh-tls-bad");
    let (chain, key) = ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.join("chain.pem"), &chain).unwrap();
    std::fs::write(dir.join("key.pem"), &key).unwrap();
    std::fs::write(dir.join("garbage.pem"), "hello\n").unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("listen = \"127.0.0.1:0\"\n{text}")).unwrap();
        p
    };
    let no_master = ["--no-master"];

    let c = write(
        "missing-cert.toml",
        "[transport.tls]\ncert = \"nope.pem\"\nkey = \"key.pem\"\n",
    );
    let (code, err) = start_fails(&no_master, &c);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("transport.tls") && err.contains(&dir.join("nope.pem").display().to_string()),
        "{err}"
    );

    let c = write(
        "bad-key.toml",
        "[transport.tls]\ncert = \"chain.pem\"\nkey = \"garbage.pem\"\n",
    );
    let (code, err) = start_fails(&no_master, &c);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("garbage.pem") && err.contains("private key"),
        "{err}"
    );

    let c = write(
        "key-is-cert.toml",
        "[transport.tls]\ncert = \"chain.pem\"\nkey = \"chain.pem\"\n",
    );
    let (code, err) = start_fails(&no_master, &c);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("chain.pem"), "{err}");

    let c = write(
        "unknown-key.toml",
        "[transport.tls]\ncert = \"chain.pem\"\nkey = \"key.pem\"\nca = \"x\"\n",
    );
    let (code, err) = start_fails(&no_master, &c);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown field `ca`"), "{err}");

    let c = write(
        "no-ca.toml",
        "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"wss://127.0.0.1:1\"]\n",
    );
    let (code, err) = start_fails(&no_master, &c);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("mesh.tls_ca"), "{err}");

    let c = write(
        "bad-ca.toml",
        "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"wss://127.0.0.1:1\"]\ntls_ca = \"garbage.pem\"\n",
    );
    let (code, err) = start_fails(&no_master, &c);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("mesh.tls_ca") && err.contains("garbage.pem"),
        "{err}"
    );

    // The same from the command line (files relative to the current directory).
    let c = write("plain.toml", "");
    let (code, err) = start_fails(
        &[
            "--no-master",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ],
        &c,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
