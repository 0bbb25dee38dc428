//! The mesh as one router, in process (several routers on their own 127.0.0.1 ports, real
//! WebSocket peer links, raw WAMP clients), with no settle delay anywhere:
//! - read-your-writes interest: a publication or call from another node right after
//!   SUBSCRIBED / REGISTERED reaches the new subscriber / callee, and none reaches it right
//!   after UNSUBSCRIBED / UNREGISTERED; a silent peer delays a reply by the ack timeout at
//!   most and delays nobody else; an older peer (no `fence` feature) is not waited for;
//! - meta events fire for sessions on every node, once each, with the mesh-wide IDs, and the
//!   router's own sessions keep seeing their node's only;
//! - `wamp.session.kill*` reach sessions on other nodes.
//!
//! Real clients on real processes: tests/interop_mesh.rs. The trust side of kill orders:
//! tests/mesh_trust.rs.

mod common;

use std::time::{Duration, Instant};

use common::{args, fake_peer, fake_recv, fake_send, id_set, meta, opts, Client, FakeLink};
use switchyard_router::mesh::frame::{Frame, FEATURE_FENCE, FEATURE_META};
use switchyard_router::mesh::{Mesh, MeshConfig};
use switchyard_router::service::ServiceClient;
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::wire::{code, Dict, Id, Message, Value};
use switchyard_router::{Router, RouterConfig};

const SECRET: &str = "s3cret";

struct Node {
    addr: std::net::SocketAddr,
    router: Router,
    mesh: Mesh,
}

fn config(name: &str, peers: &[&Node]) -> MeshConfig {
    let mut c = MeshConfig::new(name, SECRET);
    c.peers = peers.iter().map(|n| format!("ws://{}", n.addr)).collect();
    c.heartbeat_interval = Duration::from_millis(200);
    c.heartbeat_timeout = Duration::from_millis(3000);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(400);
    c
}

async fn node_with(config: MeshConfig) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new(RouterConfig::default());
    let mesh = Mesh::new(router.clone(), config, addr);
    let lc = ListenerConfig {
        mesh: Some(mesh.clone()),
        ..ListenerConfig::default()
    };
    tokio::spawn(transport::serve(listener, router.clone(), lc));
    mesh.start();
    Node { addr, router, mesh }
}

async fn node(name: &str, peers: &[&Node]) -> Node {
    node_with(config(name, peers)).await
}

/// Three nodes, linked and synced (b and c learn each other from a).
async fn three() -> [Node; 3] {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    let c = node("c", &[&a]).await;
    let nodes = [a, b, c];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.iter().all(|x| {
        let st = x.mesh.status();
        st.peers.len() == 2 && st.peers.iter().all(|p| p.state == "connected" && p.synced)
    }) {
        assert!(Instant::now() < deadline, "no full mesh of three");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

impl Node {
    async fn client(&self) -> (Client, Id) {
        self.client_with("wamp.2.json").await
    }

    async fn client_with(&self, subprotocol: &str) -> (Client, Id) {
        let mut c = Client::websocket(&format!("ws://{}/ws", self.addr), subprotocol).await;
        let id = c.join("realm1").await;
        (c, id)
    }

    /// A client that asks for `authid`.
    async fn client_as(&self, authid: &str) -> (Client, Id) {
        let mut c = Client::websocket(&format!("ws://{}/ws", self.addr), "wamp.2.json").await;
        let mut details = common::client_roles();
        details.insert("authid".into(), Value::from(authid));
        match c.hello("realm1", details).await {
            Message::Welcome { session, .. } => (c, session),
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
}

/// Sends UNSUBSCRIBE or UNREGISTER and waits for its reply.
async fn remove(c: &mut Client, what: u64, id: Id) {
    let request = c.request_id();
    let msg = if what == code::UNSUBSCRIBE {
        Message::Unsubscribe {
            request,
            subscription: id,
        }
    } else {
        Message::Unregister {
            request,
            registration: id,
        }
    };
    c.send(&msg).await;
    match c.recv().await {
        Message::Unsubscribed { request: r, .. } | Message::Unregistered { request: r, .. }
            if r == request => {}
        other => panic!("expected the reply to {msg:?}, got {other:?}"),
    }
}

/// The next message that is not an EVENT of `skip` (a subscription whose events the caller
/// does not care about here).
async fn recv_skipping(c: &mut Client, skip: Id) -> Message {
    loop {
        match c.recv().await {
            Message::Event { subscription, .. } if subscription == skip => continue,
            m => return m,
        }
    }
}

/// 100 times in a row, each time on the next node: a publication from the node after the
/// subscriber's, made right after SUBSCRIBED, is received; a call from the node after the
/// callee's, right after REGISTERED, is answered by it; right after UNSUBSCRIBED and
/// UNREGISTERED nothing reaches the old subscriber or callee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_once_every_node_applied_the_change() {
    let nodes = three().await;
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.client().await.0);
    }
    for i in 0..100usize {
        let (s, p) = (i % 3, (i + 1) % 3);
        let topic = format!("ryw.t{i}");
        let sub = clients[s].subscribe(&topic, opts(&[])).await;
        clients[p]
            .publish(&topic, opts(&[]), args(vec![Value::from(i as u64)]))
            .await;
        match clients[s].recv().await {
            Message::Event { subscription, .. } if subscription == sub => {}
            other => panic!("round {i}: expected the EVENT on node {s}, got {other:?}"),
        }
        let procedure = format!("ryw.p{i}");
        let reg = clients[s].register(&procedure, opts(&[])).await;
        let call = clients[p].call(&procedure, opts(&[]), args(vec![])).await;
        match clients[s].recv().await {
            Message::Invocation {
                request,
                registration,
                ..
            } if registration == reg => {
                let y = Message::Yield {
                    request,
                    options: Dict::new(),
                    payload: args(vec![]),
                };
                clients[s].send(&y).await;
            }
            other => panic!("round {i}: expected the INVOCATION on node {s}, got {other:?}"),
        }
        match clients[p].recv().await {
            Message::Result { request, .. } if request == call => {}
            other => panic!("round {i}: expected the RESULT on node {p}, got {other:?}"),
        }
        remove(&mut clients[s], code::UNREGISTER, reg).await;
        let call = clients[p].call(&procedure, opts(&[]), args(vec![])).await;
        let e = clients[p].expect_error(code::CALL, call).await;
        assert_eq!(e, "wamp.error.no_such_procedure", "round {i}");
        remove(&mut clients[s], code::UNSUBSCRIBE, sub).await;
    }
    // Nothing published after an UNSUBSCRIBED arrived anywhere.
    for c in &mut clients {
        c.expect_silence(Duration::from_millis(200)).await;
    }
}

/// With megabytes of publications queued on the link ahead of the subscription's `sub+`,
/// SUBSCRIBED still means the other node knows: the publication made right after it on that
/// node is received (without the wait, the publisher's node would not yet know of the
/// subscriber and the publication would be lost), and likewise for REGISTERED and a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_the_link_does_not_break_read_your_writes() {
    let [a, b, _c] = three().await;
    let (mut sink, _) = b.client_with("wamp.2.msgpack").await;
    let flood = sink.subscribe("flood", opts(&[])).await;
    let (mut flooder, _) = a.client_with("wamp.2.msgpack").await;
    let (mut s, _) = a.client().await;
    let (mut p, _) = b.client().await;
    let big = Value::Bytes(bytes::Bytes::from(vec![7u8; 64 << 10]));
    for round in 0..3 {
        for _ in 0..100 {
            flooder
                .publish("flood", opts(&[]), args(vec![big.clone()]))
                .await;
        }
        // Acknowledged: every flood frame is queued on the a→b link before the subscribe.
        let last = flooder
            .publish("flood", opts(&[("acknowledge", true.into())]), args(vec![]))
            .await;
        match flooder.recv().await {
            Message::Published { request, .. } => assert_eq!(request, last),
            other => panic!("expected PUBLISHED, got {other:?}"),
        }
        let topic = format!("backlog.t{round}");
        let sub = s.subscribe(&topic, opts(&[])).await;
        p.publish(&topic, opts(&[]), args(vec![])).await;
        match s.recv().await {
            Message::Event { subscription, .. } => assert_eq!(subscription, sub, "round {round}"),
            other => panic!("round {round}: expected the EVENT, got {other:?}"),
        }
        for _ in 0..100 {
            flooder
                .publish("flood", opts(&[]), args(vec![big.clone()]))
                .await;
        }
        let last = flooder
            .publish("flood", opts(&[("acknowledge", true.into())]), args(vec![]))
            .await;
        assert!(
            matches!(flooder.recv().await, Message::Published { request, .. } if request == last)
        );
        let procedure = format!("backlog.p{round}");
        s.register(&procedure, opts(&[])).await;
        let call = p.call(&procedure, opts(&[]), args(vec![])).await;
        match s.recv().await {
            Message::Invocation { request, .. } => {
                let y = Message::Yield {
                    request,
                    options: Dict::new(),
                    payload: args(vec![]),
                };
                s.send(&y).await;
            }
            other => panic!("round {round}: expected the INVOCATION, got {other:?}"),
        }
        match p.recv().await {
            Message::Result { request, .. } => assert_eq!(request, call),
            other => panic!("round {round}: expected the RESULT, got {other:?}"),
        }
        // Drain the sink so its queue stays small.
        let mut got = 0;
        while got < 202 {
            if let Message::Event { subscription, .. } = sink.recv().await {
                assert_eq!(subscription, flood);
                got += 1;
            }
        }
    }
}

/// A fake peer that confirms nothing holds a SUBSCRIBED back for `interest_ack_timeout` at
/// most; the session's later messages wait behind it in order, while another session on the
/// node is served at once. A peer that confirms releases the reply as soon as it answers.
#[tokio::test]
async fn a_silent_peer_delays_a_reply_by_the_timeout_at_most_and_nobody_else() {
    let mut cfg = config("a", &[]);
    cfg.interest_ack_timeout = Some(Duration::from_millis(600));
    let a = node_with(cfg).await;
    let (mut x, _) = a.client().await;
    let (mut y, _) = a.client().await;
    let (mut publisher, _) = a.client().await;
    let busy_x = x.subscribe("busy", opts(&[])).await;
    let busy_y = y.subscribe("busy", opts(&[])).await;
    let (mut ws, _) = fake_peer(
        a.addr,
        "a",
        "silent",
        SECRET,
        &[FEATURE_META, FEATURE_FENCE],
    )
    .await;
    synced(&mut ws).await;

    // x subscribes; the peer does not answer the fence; meanwhile "busy" is published.
    let request = x.request_id();
    let subscribe = Message::Subscribe {
        request,
        options: Dict::new(),
        topic: "held".into(),
    };
    let t0 = Instant::now();
    x.send(&subscribe).await;
    let seq = fence_of(&mut ws).await;
    publisher.publish("busy", opts(&[]), args(vec![])).await;
    // y is not held: it has the event long before the timeout.
    match y.recv().await {
        Message::Event { subscription, .. } => assert_eq!(subscription, busy_y),
        other => panic!("expected y's EVENT, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "y waited {:?}",
        t0.elapsed()
    );
    // x gets SUBSCRIBED after the timeout, then the EVENT published after its SUBSCRIBE.
    match x.recv().await {
        Message::Subscribed { request: r, .. } => assert_eq!(r, request),
        other => panic!("expected SUBSCRIBED before anything later, got {other:?}"),
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_millis(2500),
        "SUBSCRIBED after {waited:?} (timeout 600 ms)"
    );
    match x.recv().await {
        Message::Event { subscription, .. } => assert_eq!(subscription, busy_x),
        other => panic!("expected x's EVENT after SUBSCRIBED, got {other:?}"),
    }

    // Now the peer answers: the next reply comes as soon as it does.
    let t0 = Instant::now();
    let request = x.request_id();
    x.send(&Message::Subscribe {
        request,
        options: Dict::new(),
        topic: "answered".into(),
    })
    .await;
    let seq2 = fence_of(&mut ws).await;
    assert!(seq2 > seq, "fence numbers grow: {seq} then {seq2}");
    fake_send(&mut ws, &Frame::Fenced { seq: seq2 }).await;
    match x.recv().await {
        Message::Subscribed { request: r, .. } => assert_eq!(r, request),
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    // An error reply waits for nobody.
    let t0 = Instant::now();
    let request = x.request_id();
    x.send(&Message::Subscribe {
        request,
        options: opts(&[("match", "nonsense".into())]),
        topic: "bad".into(),
    })
    .await;
    x.expect_error(code::SUBSCRIBE, request).await;
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
}

/// Frames from a fake peer's link up to and including its resync's `synced`.
async fn synced(ws: &mut FakeLink) {
    while !matches!(fake_recv(ws).await, Frame::SyncDone) {}
}

/// The next `fence` the node sends (other frames skipped); its number.
async fn fence_of(ws: &mut FakeLink) -> u64 {
    loop {
        if let Frame::Fence { seq } = fake_recv(ws).await {
            return seq;
        }
    }
}

/// A peer that did not announce `fence` (an older node) is sent none and not waited for.
#[tokio::test]
async fn an_older_peer_is_not_waited_for() {
    let mut cfg = config("a", &[]);
    cfg.interest_ack_timeout = Some(Duration::from_secs(3));
    let a = node_with(cfg).await;
    let (mut ws, _) = fake_peer(a.addr, "a", "old", SECRET, &[FEATURE_META]).await;
    synced(&mut ws).await;
    let (mut x, _) = a.client().await;
    let t0 = Instant::now();
    x.subscribe("t", opts(&[])).await;
    x.register("p", opts(&[])).await;
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // A kill of a session the older peer announced acts here only, and says where it is.
    fake_send(
        &mut ws,
        &Frame::SessionAdd {
            realm: "realm1".into(),
            session: 77,
            authid: "x".into(),
            authrole: "anonymous".into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            transport: Dict::new(),
        },
    )
    .await;
    let got = common::meta_until(
        &mut x,
        "wamp.session.get",
        vec![77u64.into()],
        "session 77",
        |_| true,
    )
    .await;
    assert_eq!(got.as_dict().unwrap()["authid"], Value::from("x"));
    let e = meta(&mut x, "wamp.session.kill", vec![77u64.into()]).await;
    assert_eq!(e, Err("wamp.error.no_such_session".into()));
    let deadline = Instant::now() + Duration::from_millis(300);
    while let Ok(f) = tokio::time::timeout_at(deadline.into(), fake_recv(&mut ws)).await {
        assert!(
            !matches!(f, Frame::Fence { .. } | Frame::Kill { .. }),
            "{f:?} to an older peer"
        );
    }
}

/// Meta events go to peers that subscribed to them and take them (`meta-events`), as a
/// `pub` frame; a peer without the feature gets none though it announced the interest.
#[tokio::test]
async fn meta_events_go_only_to_peers_that_take_them() {
    use switchyard_router::mesh::frame::FEATURE_META_EVENTS;
    use switchyard_router::uri::MatchPolicy;
    let a = node("a", &[]).await;
    let mut peers = Vec::new();
    for (name, features) in [
        ("old", &[FEATURE_META][..]),
        ("new", &[FEATURE_META_EVENTS][..]),
    ] {
        let (mut ws, _) = fake_peer(a.addr, "a", name, SECRET, features).await;
        synced(&mut ws).await;
        let sub = Frame::SubAdd {
            realm: "realm1".into(),
            policy: MatchPolicy::Prefix,
            topic: "wamp.session.".into(),
            meta: None,
        };
        fake_send(&mut ws, &sub).await;
        // Applied once the node answers a fence sent after it.
        fake_send(&mut ws, &Frame::Fence { seq: 1 }).await;
        while !matches!(fake_recv(&mut ws).await, Frame::Fenced { seq: 1 }) {}
        peers.push(ws);
    }
    let (_c, c_id) = a.client().await;
    let on_join =
        |f: &Frame| matches!(f, Frame::Publish { topic, .. } if topic == "wamp.session.on_join");
    let deadline = Instant::now() + Duration::from_secs(2);
    let got = loop {
        let f = tokio::time::timeout_at(deadline.into(), fake_recv(&mut peers[1]))
            .await
            .expect("no on_join for the peer that takes meta events");
        if on_join(&f) {
            break f;
        }
    };
    let Frame::Publish { payload, .. } = got else {
        unreachable!()
    };
    assert_eq!(
        payload.args()[0].as_dict().unwrap()["session"],
        Value::from(c_id)
    );
    let deadline = Instant::now() + Duration::from_millis(300);
    while let Ok(f) = tokio::time::timeout_at(deadline.into(), fake_recv(&mut peers[0])).await {
        assert!(
            !on_join(&f),
            "a meta event to a peer without the feature: {f:?}"
        );
    }
}

/// The meta event topics a watcher subscribes to, in this order.
const META_EVENTS: [&str; 10] = [
    "wamp.session.on_join",
    "wamp.session.on_leave",
    "wamp.subscription.on_create",
    "wamp.subscription.on_subscribe",
    "wamp.subscription.on_unsubscribe",
    "wamp.subscription.on_delete",
    "wamp.registration.on_create",
    "wamp.registration.on_register",
    "wamp.registration.on_unregister",
    "wamp.registration.on_delete",
];

/// A watcher's meta subscriptions: subscription ID → topic.
async fn watch(c: &mut Client) -> std::collections::HashMap<Id, &'static str> {
    let mut m = std::collections::HashMap::new();
    for t in META_EVENTS {
        m.insert(c.subscribe(t, opts(&[])).await, t);
    }
    m
}

/// The next meta event a watcher receives: (topic, args).
async fn next_event(
    c: &mut Client,
    topics: &std::collections::HashMap<Id, &'static str>,
) -> (&'static str, Vec<Value>) {
    match c.recv().await {
        Message::Event {
            subscription,
            payload,
            ..
        } => (topics[&subscription], payload.args().to_vec()),
        other => panic!("expected a meta EVENT, got {other:?}"),
    }
}

/// Meta events of sessions on every node reach a watcher on any node once each, in order,
/// with the mesh-wide subscription and registration IDs; creation and deletion are reported
/// once for the mesh. The node's own router sessions see their node's events only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_events_fire_once_for_sessions_on_every_node() {
    let [a, b, c] = three().await;
    let (mut w, _) = a.client().await;
    let topics = watch(&mut w).await;
    let internal = ServiceClient::start_trusted(&a.router, "realm1", "internal").unwrap();
    let (_, mut internal_joins) = internal
        .subscribe("wamp.session.on_join", Dict::new())
        .await
        .unwrap();

    let (mut sb, sb_id) = b.client().await;
    let ev = next_event(&mut w, &topics).await;
    assert_eq!(ev.0, "wamp.session.on_join");
    assert_eq!(ev.1[0].as_dict().unwrap()["session"], Value::from(sb_id));
    let (mut sc, sc_id) = c.client().await;
    let ev = next_event(&mut w, &topics).await;
    assert_eq!(ev.0, "wamp.session.on_join");
    assert_eq!(ev.1[0].as_dict().unwrap()["session"], Value::from(sc_id));

    // Subscriptions: created once (on b), subscribed twice, deleted once (on c).
    let sub = sb.subscribe("me.t", opts(&[])).await;
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(
        (t, a1[0].as_u64()),
        ("wamp.subscription.on_create", Some(sb_id))
    );
    assert_eq!(a1[1].as_dict().unwrap()["id"], Value::from(sub));
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.subscription.on_subscribe");
    assert_eq!(a1, vec![Value::from(sb_id), Value::from(sub)]);
    assert_eq!(sc.subscribe("me.t", opts(&[])).await, sub);
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.subscription.on_subscribe");
    assert_eq!(a1, vec![Value::from(sc_id), Value::from(sub)]);
    remove(&mut sb, code::UNSUBSCRIBE, sub).await;
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(
        (t, a1),
        (
            "wamp.subscription.on_unsubscribe",
            vec![Value::from(sb_id), Value::from(sub)]
        )
    );
    remove(&mut sc, code::UNSUBSCRIBE, sub).await;
    let (t, _) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.subscription.on_unsubscribe");
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(
        (t, a1),
        (
            "wamp.subscription.on_delete",
            vec![Value::from(sc_id), Value::from(sub)]
        )
    );

    // A shared registration over two nodes: one ID, created once, deleted once.
    let shared = opts(&[("invoke", "roundrobin".into())]);
    let reg = sb.register("me.p", shared.clone()).await;
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.registration.on_create");
    assert_eq!(a1[1].as_dict().unwrap()["id"], Value::from(reg));
    let (t, _) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.registration.on_register");
    assert_eq!(sc.register("me.p", shared).await, reg);
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(
        (t, a1),
        (
            "wamp.registration.on_register",
            vec![Value::from(sc_id), Value::from(reg)]
        )
    );
    remove(&mut sb, code::UNREGISTER, reg).await;
    let (t, _) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.registration.on_unregister");
    remove(&mut sc, code::UNREGISTER, reg).await;
    let (t, _) = next_event(&mut w, &topics).await;
    assert_eq!(t, "wamp.registration.on_unregister");
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!(
        (t, a1),
        (
            "wamp.registration.on_delete",
            vec![Value::from(sc_id), Value::from(reg)]
        )
    );

    // Leaving: on_leave once each.
    drop(sb);
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!((t, a1), ("wamp.session.on_leave", vec![Value::from(sb_id)]));
    drop(sc);
    let (t, a1) = next_event(&mut w, &topics).await;
    assert_eq!((t, a1), ("wamp.session.on_leave", vec![Value::from(sc_id)]));
    w.expect_silence(Duration::from_millis(300)).await;

    // The router's own session on a saw a's joins only (the watcher's), none from b or c.
    let mut joined = Vec::new();
    while let Ok(ev) = internal_joins.try_recv() {
        joined.push(
            ev.payload.args()[0].as_dict().unwrap()["session"]
                .as_u64()
                .unwrap(),
        );
    }
    assert!(
        !joined.contains(&sb_id) && !joined.contains(&sc_id),
        "{joined:?}"
    );
}

/// `wamp.session.kill`, `kill_by_authid`, `kill_by_authrole` and `kill_all` on one node end
/// sessions on the others (GOODBYE `wamp.close.killed`, as on one router), called right after
/// the victims joined; the caller is spared; an unknown session is `no_such_session`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_reach_sessions_on_other_nodes() {
    let [a, b, c] = three().await;
    let (mut k, _) = a.client().await;

    let (mut v, v_id) = c.client().await;
    assert_eq!(
        meta(&mut k, "wamp.session.kill", vec![v_id.into()]).await,
        Ok(Value::Null)
    );
    killed(&mut v).await;
    let e = meta(&mut k, "wamp.session.kill", vec![v_id.into()]).await;
    assert_eq!(e, Err("wamp.error.no_such_session".into()));

    let (mut j1, j1_id) = b.client_as("joe").await;
    let (mut j2, j2_id) = c.client_as("joe").await;
    let (mut other, other_id) = b.client_as("ann").await;
    let got = meta(&mut k, "wamp.session.kill_by_authid", vec!["joe".into()]).await;
    assert_eq!(id_set(&got.unwrap()), common::sorted(vec![j1_id, j2_id]));
    killed(&mut j1).await;
    killed(&mut j2).await;

    let got = meta(
        &mut k,
        "wamp.session.kill_by_authrole",
        vec!["anonymous".into()],
    )
    .await;
    assert_eq!(id_set(&got.unwrap()), vec![other_id]);
    killed(&mut other).await;

    let (mut x, _) = b.client().await;
    let (mut y, _) = c.client().await;
    let (mut z, _) = a.client().await;
    let n = meta(&mut k, "wamp.session.kill_all", vec![]).await.unwrap();
    assert_eq!(n, Value::from(3u64));
    for s in [&mut x, &mut y, &mut z] {
        killed(s).await;
    }
    // The caller is still there.
    assert!(meta(&mut k, "wamp.session.count", vec![]).await.is_ok());
}

/// A killed session gets GOODBYE `wamp.close.killed`, answers it, and is closed.
async fn killed(c: &mut Client) {
    match recv_skipping(c, 0).await {
        Message::Goodbye { reason, .. } => assert_eq!(reason, "wamp.close.killed"),
        other => panic!("expected GOODBYE, got {other:?}"),
    }
    c.send(&Message::Goodbye {
        details: Dict::new(),
        reason: "wamp.close.goodbye_and_out".into(),
    })
    .await;
    c.expect_closed().await;
}
