//! Three real `switchyard` processes on loopback ports forming a mesh from one shared peer
//! list; one is SIGKILLed and restarted while traffic flows between the others, and the meta
//! API answers for all three (and forgets the killed one).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mesh::poll_until;
use common::{args, count_is, id_set, meta, meta_until, opts, sorted, Client};
use switchyard_router::wire::{Id, Message, Value};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const SECRET: &str = "correct horse battery staple";

/// A running node, SIGKILLed on drop.
struct Proc {
    child: Child,
    /// The process's stderr (log), collected by a thread.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(name: &str, port: u16, peers: &[u16], secret: &str) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "start",
        "--no-master",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .args(["--node-name", name, "--mesh-secret", secret]);
    for p in peers {
        cmd.args(["--peer", &format!("ws://127.0.0.1:{p}")]);
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("switchyard listening on"), "{line}");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
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
    Proc { child, log }
}

/// `switchyard mesh status` against a node, parsed.
fn status(port: u16) -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["mesh", "status", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn connected_peers(port: u16) -> Vec<String> {
    let Some(st) = status(port) else {
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

/// Polls `cond` every 100 ms for at most 20 s (a check may run `switchyard mesh status`).
async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    poll_until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(100),
        cond,
    )
    .await
}

async fn client(port: u16) -> Client {
    client_with_id(port).await.0
}

async fn client_with_id(port: u16) -> (Client, Id) {
    let mut c = Client::websocket(&format!("ws://127.0.0.1:{port}/ws"), "wamp.2.msgpack").await;
    let id = c.join("realm1").await;
    (c, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_mesh_survive_a_sigkill_and_rejoin() {
    let ports = [free_port(), free_port(), free_port()];
    // Every node gets the same peer list, itself included.
    let n1 = spawn("n1", ports[0], &ports, SECRET);
    let mut n2 = spawn("n2", ports[1], &ports, SECRET);
    let n3 = spawn("n3", ports[2], &ports, SECRET);
    eventually("a full mesh of three", || {
        connected_peers(ports[0]) == ["n2", "n3"]
            && connected_peers(ports[1]) == ["n1", "n3"]
            && connected_peers(ports[2]) == ["n1", "n2"]
    })
    .await;

    // Subscriber on n3, callees on n2 and n3 (roundrobin), publisher and caller on n1.
    let mut sub = client(ports[2]).await;
    sub.subscribe("mp.t", opts(&[])).await;
    let mut k2 = client(ports[1]).await;
    let mut k3 = client(ports[2]).await;
    let rr = opts(&[("invoke", "roundrobin".into())]);
    k2.register("mp.proc", rr.clone()).await;
    k3.register("mp.proc", rr.clone()).await;
    // Callees answer every invocation with its argument.
    let echo = |mut k: Client| {
        tokio::spawn(async move {
            while let Some(m) = k.recv_opt_for(Duration::from_secs(30)).await {
                if let Message::Invocation {
                    request, payload, ..
                } = m
                {
                    k.send(&Message::Yield {
                        request,
                        options: opts(&[]),
                        payload,
                    })
                    .await;
                }
            }
        })
    };
    let e3 = echo(k3);
    let e2 = echo(k2);
    let mut caller = client(ports[0]).await;
    // Give the interest time to reach n1 (status `synced` covers the snapshot, not deltas).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A publisher on n1: a numbered event every 5 ms, until told to stop.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn({
        let port = ports[0];
        async move {
            let mut p = client(port).await;
            let mut n = 0u64;
            loop {
                p.publish("mp.t", opts(&[]), args(vec![n.into()])).await;
                n += 1;
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                if n > 20_000 {
                    break;
                }
            }
            n
        }
    });

    // Calls work across the mesh before the kill.
    for i in 0..4u64 {
        let req = caller
            .call("mp.proc", opts(&[]), args(vec![i.into()]))
            .await;
        match caller.recv().await {
            Message::Result {
                request, payload, ..
            } => {
                assert_eq!(request, req);
                assert_eq!(payload.args(), &[Value::from(i)]);
            }
            other => panic!("expected RESULT, got {other:?}"),
        }
    }

    // Read events for a while, SIGKILL n2, keep reading, restart n2, keep reading.
    let mut expect = None::<u64>;
    let mut check = |m: Message| {
        let Message::Event { payload, .. } = m else {
            panic!("expected EVENT, got {m:?}")
        };
        let n = payload.args()[0].as_u64().unwrap();
        if let Some(e) = expect {
            // Between surviving nodes: nothing lost, nothing duplicated, in order.
            assert_eq!(n, e, "event sequence broken");
        }
        expect = Some(n + 1);
    };
    for _ in 0..50 {
        check(sub.recv().await);
    }
    n2.child.kill().unwrap();
    n2.child.wait().unwrap();
    let killed = Instant::now();
    e2.abort();
    eventually("n2 dropped by n1 and n3", || {
        connected_peers(ports[0]) == ["n3"] && connected_peers(ports[2]) == ["n1"]
    })
    .await;
    assert!(killed.elapsed() < Duration::from_secs(10));
    for _ in 0..50 {
        check(sub.recv().await);
    }
    // Calls still succeed: only n3's callee is left.
    for i in 0..4u64 {
        let req = caller
            .call("mp.proc", opts(&[]), args(vec![i.into()]))
            .await;
        match caller.recv().await {
            Message::Result { request, .. } => assert_eq!(request, req),
            other => panic!("expected RESULT after the kill, got {other:?}"),
        }
    }

    // n2 comes back on the same port with the same peer list, rejoins and resyncs.
    drop(n2);
    let n2 = spawn("n2", ports[1], &ports, SECRET);
    eventually("n2 rejoined", || {
        connected_peers(ports[1]) == ["n1", "n3"]
            && connected_peers(ports[0]) == ["n2", "n3"]
            && connected_peers(ports[2]) == ["n1", "n2"]
    })
    .await;
    let mut sub2 = client(ports[1]).await;
    sub2.subscribe("mp.t", opts(&[])).await;
    for _ in 0..50 {
        check(sub.recv().await);
    }
    // n2's new subscriber gets the stream too, in order.
    let first = match sub2.recv().await {
        Message::Event { payload, .. } => payload.args()[0].as_u64().unwrap(),
        other => panic!("expected EVENT on the restarted node, got {other:?}"),
    };
    for i in 1..20 {
        match sub2.recv().await {
            Message::Event { payload, .. } => {
                assert_eq!(payload.args()[0].as_u64().unwrap(), first + i)
            }
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
    let _ = stop_tx.send(());
    let sent = publisher.await.unwrap();
    assert!(sent >= 150);

    // A node with the wrong secret is refused, with a log line on both sides.
    let bad = spawn("evil", free_port(), &[ports[0]], "wrong secret");
    eventually("the wrong secret is logged", || {
        bad.log.lock().unwrap().contains("wrong mesh secret")
            && n1.log.lock().unwrap().contains("wrong mesh secret")
    })
    .await;
    assert_eq!(connected_peers(ports[0]), ["n2", "n3"]);
    drop((bad, n2, n3, e3));
}

/// A node that stops answering without closing its sockets (SIGSTOP: a hung host, a cut
/// cable) is dropped by heartbeat timeout, and the survivors keep talking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_dropped_after_the_heartbeat_timeout() {
    let ports = [free_port(), free_port(), free_port()];
    let n1 = spawn("n1", ports[0], &ports, SECRET);
    let n2 = spawn("n2", ports[1], &ports, SECRET);
    let n3 = spawn("n3", ports[2], &ports, SECRET);
    eventually("a full mesh of three", || {
        connected_peers(ports[0]) == ["n2", "n3"] && connected_peers(ports[2]) == ["n1", "n2"]
    })
    .await;
    let mut sub = client(ports[2]).await;
    sub.subscribe("hb.t", opts(&[])).await;
    let (mut m1, _) = client_with_id(ports[0]).await;
    let (_on_n2, on_n2_id) = client_with_id(ports[1]).await;
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "3 sessions",
        count_is(3),
    )
    .await;
    let pid = n2.child.id().to_string();
    let stop = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(stop.success());
    let frozen = Instant::now();
    // Default heartbeat timeout: 3.5 s.
    eventually("n2 dropped by heartbeat timeout", || {
        connected_peers(ports[0]) == ["n3"] && connected_peers(ports[2]) == ["n1"]
    })
    .await;
    let took = frozen.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "dropped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "dropped too late: {took:?}");
    assert!(n1.log.lock().unwrap().contains("silent for"));
    // The frozen node's session left n1's meta answers with its link.
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "n2's session gone",
        count_is(2),
    )
    .await;
    assert!(frozen.elapsed() < Duration::from_secs(10));
    let l = meta(&mut m1, "wamp.session.list", vec![]).await.unwrap();
    assert!(!id_set(&l).contains(&on_n2_id));
    let mut p = client(ports[0]).await;
    p.publish("hb.t", opts(&[]), args(vec![1u64.into()])).await;
    assert!(matches!(sub.recv().await, Message::Event { .. }));
    // Thawed, it reconnects and resyncs.
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    eventually("n2 back", || connected_peers(ports[0]) == ["n2", "n3"]).await;
    drop((n1, n2, n3));
}

/// `wamp.session.count`, subscription and registration lookups on one node cover the
/// sessions, subscribers and callees of the other two processes; a SIGKILLed node's entries
/// vanish (at once: its sockets close; at the latest after the heartbeat timeout), and
/// return with the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_api_spans_three_processes_and_follows_a_sigkill() {
    let ports = [free_port(), free_port(), free_port()];
    let n1 = spawn("n1", ports[0], &ports, SECRET);
    let n2 = spawn("n2", ports[1], &ports, SECRET);
    let mut n3 = spawn("n3", ports[2], &ports, SECRET);
    eventually("a full mesh of three", || {
        connected_peers(ports[0]) == ["n2", "n3"]
            && connected_peers(ports[1]) == ["n1", "n3"]
            && connected_peers(ports[2]) == ["n1", "n2"]
    })
    .await;
    let (mut m1, m1_id) = client_with_id(ports[0]).await;
    let (mut s2, s2_id) = client_with_id(ports[1]).await;
    let (mut k2, k2_id) = client_with_id(ports[1]).await;
    let (mut s3, s3_id) = client_with_id(ports[2]).await;
    let (mut k3, k3_id) = client_with_id(ports[2]).await;
    s2.subscribe("pm.t", opts(&[])).await;
    s3.subscribe("pm.t", opts(&[])).await;
    let rr = opts(&[("invoke", "roundrobin".into())]);
    k2.register("pm.proc", rr.clone()).await;
    k3.register("pm.proc", rr.clone()).await;

    let all = sorted(vec![m1_id, s2_id, k2_id, s3_id, k3_id]);
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "5 sessions",
        count_is(5),
    )
    .await;
    let l = meta(&mut m1, "wamp.session.list", vec![]).await.unwrap();
    assert_eq!(id_set(&l), all);
    let sub = meta_until(
        &mut m1,
        "wamp.subscription.lookup",
        vec!["pm.t".into()],
        "n1 finds pm.t",
        |v| v.as_u64().is_some(),
    )
    .await;
    let subs = meta_until(
        &mut m1,
        "wamp.subscription.list_subscribers",
        vec![sub.clone()],
        "subscribers on n2 and n3",
        |v| id_set(v) == sorted(vec![s2_id, s3_id]),
    )
    .await;
    assert_eq!(id_set(&subs), sorted(vec![s2_id, s3_id]));
    let reg = meta_until(
        &mut m1,
        "wamp.registration.lookup",
        vec!["pm.proc".into()],
        "n1 finds pm.proc",
        |v| v.as_u64().is_some(),
    )
    .await;
    let callees = meta_until(
        &mut m1,
        "wamp.registration.list_callees",
        vec![reg.clone()],
        "callees on n2 and n3",
        |v| id_set(v) == sorted(vec![k2_id, k3_id]),
    )
    .await;
    assert_eq!(id_set(&callees), sorted(vec![k2_id, k3_id]));
    let n = meta(
        &mut m1,
        "wamp.registration.count_callees",
        vec![reg.clone()],
    )
    .await;
    assert_eq!(n, Ok(Value::from(2u64)));

    // SIGKILL n3: its two sessions, its subscriber and its callee leave n1's answers.
    n3.child.kill().unwrap();
    n3.child.wait().unwrap();
    let killed = Instant::now();
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "n3's sessions gone",
        count_is(3),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(3500 + 2000),
        "n3's sessions still counted {took:?} after the kill (heartbeat timeout 3.5 s)"
    );
    let subs = meta(&mut m1, "wamp.subscription.list_subscribers", vec![sub]).await;
    assert_eq!(id_set(&subs.unwrap()), vec![s2_id]);
    let callees = meta(&mut m1, "wamp.registration.list_callees", vec![reg.clone()]).await;
    assert_eq!(id_set(&callees.unwrap()), vec![k2_id]);
    let e = meta(&mut m1, "wamp.session.get", vec![s3_id.into()]).await;
    assert_eq!(e, Err("wamp.error.no_such_session".into()));

    // n3 comes back: its new sessions, subscriber and callee are counted again.
    drop(n3);
    let n3 = spawn("n3", ports[2], &ports, SECRET);
    eventually("n3 rejoined", || {
        connected_peers(ports[0]) == ["n2", "n3"] && connected_peers(ports[2]) == ["n1", "n2"]
    })
    .await;
    let (mut s3, s3_id) = client_with_id(ports[2]).await;
    let (mut k3, k3_id) = client_with_id(ports[2]).await;
    s3.subscribe("pm.t", opts(&[])).await;
    k3.register("pm.proc", rr).await;
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "n3's sessions back",
        count_is(5),
    )
    .await;
    let l = meta(&mut m1, "wamp.session.list", vec![]).await.unwrap();
    assert_eq!(id_set(&l), sorted(vec![m1_id, s2_id, k2_id, s3_id, k3_id]));
    let sub = meta(&mut m1, "wamp.subscription.lookup", vec!["pm.t".into()])
        .await
        .unwrap();
    meta_until(
        &mut m1,
        "wamp.subscription.list_subscribers",
        vec![sub],
        "n3's new subscriber",
        |v| id_set(v) == sorted(vec![s2_id, s3_id]),
    )
    .await;
    meta_until(
        &mut m1,
        "wamp.registration.list_callees",
        vec![reg],
        "n3's new callee",
        |v| id_set(v) == sorted(vec![k2_id, k3_id]),
    )
    .await;
    drop((n1, n2, n3));
}

/// A peer sending a malformed frame: the node logs the cause, drops that link with what
/// the peer announced, and its own clients carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_is_logged_and_drops_only_that_link() {
    use switchyard_router::mesh::frame::{Frame, FEATURE_META};
    let port = free_port();
    let n1 = spawn("n1", port, &[], SECRET);
    let (mut m1, _) = client_with_id(port).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (mut ws, _) = common::fake_peer(addr, "n1", "bad", SECRET, &[FEATURE_META]).await;
    common::fake_send(
        &mut ws,
        &Frame::SessionAdd {
            realm: "realm1".into(),
            session: 42,
            authid: "x".into(),
            authrole: "r".into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            transport: opts(&[]),
        },
    )
    .await;
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "the peer's session",
        count_is(2),
    )
    .await;
    // ["session+", "realm1", 43, 7, ...]: the authid is not a string.
    // MessagePack by hand: a 4-array, two fixstrs, two positive fixints.
    let mut bad = vec![0x94, 0xa8];
    bad.extend(b"session+");
    bad.push(0xa6);
    bad.extend(b"realm1");
    bad.extend([43, 7]);
    {
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(bad.into()))
            .await
            .unwrap();
    }
    eventually("the cause logged", || {
        let log = n1.log.lock().unwrap();
        log.contains("bad mesh frame, link dropped") && log.contains("expected a string")
    })
    .await;
    meta_until(
        &mut m1,
        "wamp.session.count",
        vec![],
        "only n1's own",
        count_is(1),
    )
    .await;
    assert!(connected_peers(port).is_empty());
    // The node's own client is unaffected.
    let sub = m1.subscribe("still.fine", opts(&[])).await;
    assert!(sub > 0);
    drop(n1);
}

#[test]
fn mesh_flags_are_checked_before_start() {
    let out = Command::new(BIN)
        .args(["start", "--listen", "127.0.0.1:0", "--node-name", "a"])
        .env_remove("SWITCHYARD_MESH_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret"));
    let out = Command::new(BIN)
        .args(["start", "--listen", "127.0.0.1:0", "--node-name", "a"])
        .args(["--mesh-secret", "s", "--peer", "http://x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws://"));
    // A node without a mesh says so.
    let port = free_port();
    let mut plain = Command::new(BIN)
        .args([
            "start",
            "--no-master",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(plain.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let out = Command::new(BIN)
        .args(["mesh", "status", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let _ = plain.kill();
    let _ = plain.wait();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mesh"));
}
