//! The trust model against an attacker, with real processes (docs/security.md): a master
//! node with a real `switchyard worker`, meshed with a router-only node, and anonymous WAMP
//! clients on both trying what an anonymous client could do before: stop the master, cancel
//! a build, make the worker run a command or move, kill the worker's session, pose as the
//! worker, forge build events for the web UI. Each attempt fails and changes nothing.
//!
//! Also: a `switchyard worker` pointed at a router that welcomes it without the WAMP-CRA
//! challenge registers nothing there.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::masters::{
    force, free_port, http, list, master_section, node_head, wait_until, Node, TempDir, Worker,
    TOKEN,
};
use switchyard_router::client::{Client, ClientError, ClientOptions};
use switchyard_router::uri::errors;
use switchyard_router::wire::{Codec, Dict, Message, Payload, Value};

/// Lines of `/api/v2/events`, read by a thread until the node closes the stream.
fn follow_events(addr: std::net::SocketAddr) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /api/v2/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines() {
            match line {
                Ok(l) => out.lock().unwrap().push(l),
                Err(_) => return,
            }
        }
    });
    lines
}

fn anonymous(url: &str) -> Client {
    let rt = tokio::runtime::Handle::current();
    let opts = ClientOptions::new(url, "buildbot");
    tokio::task::block_in_place(|| rt.block_on(Client::connect(&opts))).unwrap()
}

fn kw(pairs: &[(&str, Value)]) -> Payload {
    let mut d = Dict::new();
    for (k, v) in pairs {
        d.insert((*k).into(), v.clone());
    }
    Payload::new(Vec::new(), d)
}

fn arg(v: serde_json::Value) -> Payload {
    Payload::new(
        vec![switchyard_master::engine::events::to_wamp(&v)],
        Dict::new(),
    )
}

/// Everything an anonymous client on one node tries. Publications on the bus are accepted
/// (Buildbot masters publish there anonymously) and must be ignored; every call and
/// registration that reaches a worker or a session is refused.
async fn attack(c: &Client, node: &str, masterid: i64, buildid: i64, marker: &str) {
    let bus = |k: &str| format!("org.buildbot.mq.{k}");
    let publish = [
        (
            format!("control.builds.{buildid}.stop"),
            serde_json::json!({"reason": "pwned"}),
        ),
        (
            format!("control.masters.{masterid}.stop"),
            serde_json::json!({"graceful": false}),
        ),
        (
            format!("control.masters.{masterid}.cancel_stop"),
            serde_json::json!({}),
        ),
        (
            format!("builds.{buildid}.finished"),
            serde_json::json!({"buildid": buildid, "state_string": format!("FORGED-{node}"), "results": 2}),
        ),
        (
            "logs.1.append".to_owned(),
            serde_json::json!({"logid": 1, "content": format!("FORGED-{node}")}),
        ),
    ];
    for (key, data) in publish {
        c.publish_acknowledged(&bus(&key), Dict::new(), arg(data))
            .await
            .unwrap_or_else(|e| panic!("{node}: publishing {key} on the open bus: {e}"));
    }
    let refused = |what: &str, r: Result<Payload, ClientError>| match r {
        Err(ClientError::Wamp { uri, .. }) => {
            assert_eq!(uri, errors::NOT_AUTHORIZED, "{node}: {what}")
        }
        other => panic!("{node}: {what} must be refused, got {other:?}"),
    };
    let run = kw(&[("command", Value::from(format!("touch {marker}")))]);
    refused(
        "calling the worker's run",
        c.call("switchyard.worker.w1.run", Dict::new(), run).await,
    );
    let urls = kw(&[(
        "urls",
        Value::List(vec![Value::from("ws://127.0.0.1:9/ws")]),
    )]);
    refused(
        "calling the worker's reconnect",
        c.call("switchyard.worker.w1.reconnect", Dict::new(), urls)
            .await,
    );
    for (proc_, a) in [
        (
            "wamp.session.kill_by_authrole",
            Value::from("switchyard.worker"),
        ),
        ("wamp.session.kill_by_authid", Value::from("w1")),
    ] {
        refused(
            proc_,
            c.call(proc_, Dict::new(), Payload::new(vec![a], Dict::new()))
                .await,
        );
    }
    refused(
        "wamp.session.kill_all",
        c.call("wamp.session.kill_all", Dict::new(), Payload::default())
            .await,
    );
    for (uri, policy) in [
        ("switchyard.worker.w1.run", "exact"),
        ("switchyard.worker.", "prefix"),
        ("switchyard..w1.run", "wildcard"),
    ] {
        let mut o = Dict::new();
        o.insert("match".into(), Value::from(policy));
        match c.register(uri, o).await {
            Err(ClientError::Wamp { uri: e, .. }) => {
                assert_eq!(e, errors::NOT_AUTHORIZED, "{node}: register {uri}")
            }
            other => panic!(
                "{node}: registering {uri} ({policy}) must be refused, got {:?}",
                other.map(|(id, _)| id)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_on_any_node_change_nothing() {
    let dir = TempDir::new("security");
    let (pa, pr) = (free_port(), free_port());
    // R: a router-only mesh node (no [master] section); A: the master, with worker w1.
    let r = Node::start(dir.path(), "r", pr, &node_head("r", pr, &[pa]));
    let a_config = node_head("a", pa, &[pr])
        + &master_section("a", "", 1, 1, &[("slow", "sleep 3; echo step-done")], "");
    let mut a = Node::start(dir.path(), "a", pa, &a_config);
    let worker = Worker::start(dir.path(), "w1", "pw-w1", &[a.ws_url()]);
    worker.wait_connected(1, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "w1 connected", || {
        list(a.addr(), "workers", "")
            .iter()
            .any(|w| !w["connected_to"].as_array().unwrap().is_empty())
            .then_some(())
    });
    // A router-only node guards the realm but takes no worker (no master there would see
    // it): it says where to connect instead.
    let stray = Worker::start(dir.path(), "w1", "pw-w1", &[r.ws_url()]);
    wait_until(
        Duration::from_secs(20),
        "the stray worker's refusal",
        || {
            let log = std::fs::read_to_string(&stray.log).unwrap_or_default();
            log.contains("connect workers to a node whose master lists them")
                .then_some(())
        },
    );
    drop(stray);
    let masterid = list(a.addr(), "masters", "")[0]["masterid"]
        .as_i64()
        .unwrap();
    let events = follow_events(a.addr());

    // A build in progress, then the attacks from a client on each node.
    let brid = force(a.addr(), "slow");
    let buildid = wait_until(Duration::from_secs(20), "the build started", || {
        list(a.addr(), "builds", "")
            .iter()
            .find(|b| b["buildrequestid"] == brid)
            .and_then(|b| b["buildid"].as_i64())
    });
    let marker = dir.path().join("pwned");
    let marker_s = marker.display().to_string();
    for (node, url) in [("a", a.ws_url()), ("r", r.ws_url())] {
        let c = anonymous(&url);
        attack(&c, node, masterid, buildid, &marker_s).await;
    }

    // The build ends SUCCESS, the master kept running, the worker stayed connected, no
    // command ran, and the web UI's stream carried the master's events but no forged one.
    let build = wait_until(Duration::from_secs(30), "the build to finish", || {
        let (_, v) = http(
            a.addr(),
            "GET",
            &format!("/api/v2/builds/{buildid}"),
            None,
            None,
        );
        let b = v["builds"][0].clone();
        (b["complete"] == true).then_some(b)
    });
    assert_eq!(build["results"], 0, "the build was not stopped: {build}");
    assert!(
        a.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "node a exited"
    );
    let m = &list(a.addr(), "masters", "")[0];
    assert_eq!(m["active"], true, "{m}");
    assert!(
        !marker.exists(),
        "the worker ran an anonymous client's command"
    );
    assert_eq!(
        worker.stdout.count("connected to"),
        1,
        "the worker was disconnected or moved"
    );
    let finished = format!("builds.{buildid}.finished");
    wait_until(Duration::from_secs(10), "the real finished event", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&finished))
            .then_some(())
    });
    let forged: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("FORGED") || l.contains("pwned"))
        .cloned()
        .collect();
    assert!(
        forged.is_empty(),
        "forged events reached the UI: {forged:?}"
    );

    // A graceful stop asked with the token goes on despite an anonymous cancel_stop.
    let (status, v) = http(
        a.addr(),
        "POST",
        "/api/v2/masters/self",
        Some(TOKEN),
        Some(
            &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "stop",
            "params": {"graceful": true}}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    let c = anonymous(&r.ws_url());
    c.publish_acknowledged(
        &format!("org.buildbot.mq.control.masters.{masterid}.cancel_stop"),
        Dict::new(),
        arg(serde_json::json!({})),
    )
    .await
    .unwrap();
    let status = a
        .wait_exit(Duration::from_secs(30))
        .expect("the gracefully stopped master exits");
    assert!(status.success(), "{status:?}");
}

/// A minimal WAMP router that welcomes anyone anonymously, without a challenge; it counts
/// the connections it accepted and the REGISTERs it received.
struct OpenRouter {
    url: String,
    connections: Arc<Mutex<usize>>,
    registers: Arc<Mutex<usize>>,
}

#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
fn open_router() -> OpenRouter {
    use tokio_tungstenite::tungstenite::{accept_hdr, handshake::server, Message as Ws};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(0));
    let registers = Arc::new(Mutex::new(0));
    let (conns, regs) = (connections.clone(), registers.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(stream) = stream else { return };
            *conns.lock().unwrap() += 1;
            let regs = regs.clone();
            std::thread::spawn(move || {
                // Speak whatever the worker offers first.
                let offered = Arc::new(Mutex::new(None));
                let chosen = offered.clone();
                let callback = move |req: &server::Request, mut resp: server::Response| {
                    let first = req
                        .headers()
                        .get("Sec-WebSocket-Protocol")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .map(|v| v.trim().to_owned())
                        .unwrap_or_default();
                    resp.headers_mut()
                        .insert("Sec-WebSocket-Protocol", first.parse().unwrap());
                    *chosen.lock().unwrap() = Codec::from_subprotocol(&first);
                    Ok(resp)
                };
                let Ok(mut ws) = accept_hdr(stream, callback) else {
                    return;
                };
                let Some(codec) = *offered.lock().unwrap() else {
                    return;
                };
                let ser = codec.serializer;
                let send = |ws: &mut tokio_tungstenite::tungstenite::WebSocket<_>, m: &Message| {
                    let bytes = ser.encode(m).unwrap();
                    let frame = if ser.is_binary() {
                        Ws::Binary(bytes)
                    } else {
                        Ws::Text(String::from_utf8(bytes.to_vec()).unwrap().into())
                    };
                    let _ = ws.send(frame);
                };
                while let Ok(frame) = ws.read() {
                    let data = match frame {
                        Ws::Text(t) => t.as_bytes().to_vec(),
                        Ws::Binary(b) => b.to_vec(),
                        _ => continue,
                    };
                    let Ok(parts) = codec.split_frame(&data) else {
                        return;
                    };
                    for part in parts {
                        match ser.decode(part) {
                            Ok(Message::Hello { .. }) => {
                                let mut details = Dict::new();
                                for (k, v) in [
                                    ("authid", "w1"),
                                    ("authrole", "anonymous"),
                                    ("authmethod", "anonymous"),
                                ] {
                                    details.insert(k.into(), Value::from(v));
                                }
                                let welcome = Message::Welcome {
                                    session: 4242,
                                    details,
                                };
                                send(&mut ws, &welcome);
                            }
                            Ok(Message::Register { .. }) => *regs.lock().unwrap() += 1,
                            Ok(Message::Goodbye { .. }) => {
                                let bye = Message::Goodbye {
                                    details: Dict::new(),
                                    reason: "wamp.close.goodbye_and_out".into(),
                                };
                                send(&mut ws, &bye);
                            }
                            _ => {}
                        }
                    }
                }
            });
        }
    });
    OpenRouter {
        url,
        connections,
        registers,
    }
}

#[test]
fn a_worker_registers_nothing_on_a_router_that_does_not_challenge_it() {
    let dir = TempDir::new("security-worker");
    let router = open_router();
    let worker = Worker::start(dir.path(), "w1", "pw-w1", std::slice::from_ref(&router.url));
    // It joins, refuses the session, and tries again later (with backoff).
    let deadline = Instant::now() + Duration::from_secs(20);
    while *router.connections.lock().unwrap() < 2 {
        assert!(
            Instant::now() < deadline,
            "the worker did not try again; its log:\n{}",
            std::fs::read_to_string(&worker.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        *router.registers.lock().unwrap(),
        0,
        "the worker registered"
    );
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(
        log.contains("without the WAMP-CRA challenge"),
        "the worker says why: {log}"
    );
    assert_eq!(worker.stdout.count("connected to"), 0);
}
