//! In-process mesh tests: several routers in one process, each on its own 127.0.0.1 port,
//! linked over real WebSocket peer links, with raw WAMP clients on different nodes.
//!
//! They cover what Crossbar's router-to-router links get wrong (issues 1909, 1914, 1959,
//! 1921, 2079): pattern subscriptions and registrations cross the mesh, nothing is lost after
//! a reconnect, and nothing is duplicated on links dialed from both sides.

mod common;

use std::time::Duration;

use common::{
    args, count_is, fake_recv, fake_send, id_set, meta, meta_until, opts, sorted, Client, FakeLink,
    WAIT,
};
use switchyard_router::mesh::{Mesh, MeshConfig};
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::wire::{code, Id, Message, Value};
use switchyard_router::{Router, RouterConfig};

struct Node {
    addr: std::net::SocketAddr,
    router: Router,
    mesh: Mesh,
}

fn fast(name: &str, secret: &str, peers: &[&Node]) -> MeshConfig {
    let mut c = MeshConfig::new(name, secret);
    c.peers = peers.iter().map(|n| format!("ws://{}", n.addr)).collect();
    c.heartbeat_interval = Duration::from_millis(200);
    c.heartbeat_timeout = Duration::from_millis(3000);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(400);
    c.handshake_timeout = Duration::from_secs(2);
    c
}

/// Starts a node; with `start`, it dials its peers at once.
async fn node_with(config: MeshConfig, start: bool) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    node_on(listener, config, start)
}

fn node_on(listener: tokio::net::TcpListener, config: MeshConfig, start: bool) -> Node {
    let addr = listener.local_addr().unwrap();
    let router = Router::new(RouterConfig::default());
    let mesh = Mesh::new(router.clone(), config, addr);
    let lc = ListenerConfig {
        mesh: Some(mesh.clone()),
        ..ListenerConfig::default()
    };
    tokio::spawn(transport::serve(listener, router.clone(), lc));
    if start {
        mesh.start();
    }
    Node { addr, router, mesh }
}

async fn node(name: &str, peers: &[&Node]) -> Node {
    node_with(fast(name, "s3cret", peers), true).await
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
    fn remote_subs(&self) -> usize {
        self.mesh
            .realm("realm1")
            .unwrap()
            .remote_subscription_count()
    }
    /// Callees (local and stand-ins) of the registration of `procedure`.
    fn callees(&self, procedure: &str) -> usize {
        let realm = self.router.realm("realm1").unwrap();
        realm
            .dealer
            .registrations()
            .iter()
            .filter(|r| r.procedure == procedure)
            .map(|r| r.callees.len())
            .sum()
    }
}

/// Polls `cond` every 20 ms for at most 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn full_mesh(nodes: &[&Node]) {
    let n = nodes.len() - 1;
    // Linked, and each peer's full snapshot applied.
    eventually("a full, synced mesh", || {
        nodes.iter().all(|x| {
            let st = x.mesh.status();
            st.peers.len() == n && st.peers.iter().all(|p| p.state == "connected" && p.synced)
        })
    })
    .await;
}

fn event_of(
    m: Message,
) -> (
    Id,
    Id,
    std::collections::BTreeMap<String, Value>,
    Vec<Value>,
) {
    match m {
        Message::Event {
            subscription,
            publication,
            details,
            payload,
        } => (subscription, publication, details, payload.args().to_vec()),
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[tokio::test]
async fn three_nodes_form_a_full_mesh_from_one_peer() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    let c = node("c", &[&a]).await;
    full_mesh(&[&a, &b, &c]).await;
    assert_eq!(c.mesh.linked_nodes(), vec!["a", "b"]);
    let st = b.mesh.status();
    assert_eq!(st.node, "b");
    assert!(st.peers.iter().all(|p| p.state == "connected"));
}

#[tokio::test]
async fn simultaneous_dials_keep_one_link_and_never_duplicate() {
    // x and y list each other, so both dial at once (and again after every drop).
    let lx = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ly = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cx = fast("x", "s3cret", &[]);
    cx.peers = vec![format!("ws://{}", ly.local_addr().unwrap())];
    let mut cy = fast("y", "s3cret", &[]);
    cy.peers = vec![format!("ws://{}", lx.local_addr().unwrap())];
    let x = node_on(lx, cx, true);
    let y = node_on(ly, cy, true);
    let (mut sub, _) = y.client().await;
    sub.subscribe("t.dup", opts(&[])).await;
    let (mut publ, _) = x.client().await;
    for round in 0..3u64 {
        if round > 0 {
            x.mesh.drop_links();
            y.mesh.drop_links();
        }
        full_mesh(&[&x, &y]).await;
        eventually("x sees y's interest", || x.remote_subs() == 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sx, sy) = (x.mesh.status(), y.mesh.status());
        for st in [&sx, &sy] {
            assert_eq!(st.peers.len(), 1, "{}: {:?}", st.node, st.peers);
            assert_eq!(st.peers[0].state, "connected");
        }
        // Both ends kept the same link.
        assert_eq!(sx.peers[0].dialed_by, sy.peers[0].dialed_by);
        assert_eq!(sx.peers[0].incarnation, Some(sy.incarnation));
        for i in 0..20u64 {
            publ.publish("t.dup", opts(&[]), args(vec![i.into()])).await;
        }
        for i in 0..20u64 {
            let (_, _, _, a) = event_of(sub.recv().await);
            assert_eq!(a, vec![Value::from(i)]);
        }
        sub.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn pubsub_every_match_policy_across_nodes_with_exclude_me_false() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    let c = node("c", &[&a]).await;
    full_mesh(&[&a, &b, &c]).await;
    let (mut sb, _) = b.client().await;
    let s_exact = sb.subscribe("com.x.event", opts(&[])).await;
    let s_prefix = sb
        .subscribe("com.x", opts(&[("match", "prefix".into())]))
        .await;
    let s_wild = sb
        .subscribe("com..event", opts(&[("match", "wildcard".into())]))
        .await;
    let (mut pa, pa_id) = a.client().await;
    pa.subscribe("com.x.event", opts(&[])).await;
    let (mut sc, _) = c.client().await;
    sc.subscribe("com.x", opts(&[("match", "prefix".into())]))
        .await;
    eventually("a sees b's and c's interest", || a.remote_subs() == 3).await;

    let r = pa
        .publish(
            "com.x.event",
            opts(&[
                ("exclude_me", false.into()),
                ("acknowledge", true.into()),
                ("disclose_me", true.into()),
            ]),
            args(vec!["hi".into()]),
        )
        .await;
    // The publisher gets its own event (exclude_me false) and the acknowledgement.
    let (mut publication, mut own) = (0, 0);
    for _ in 0..2 {
        match pa.recv().await {
            Message::Published {
                request,
                publication: p,
            } if request == r => publication = p,
            m => {
                let (_, p, d, _) = event_of(m);
                assert_eq!(d["publisher"], Value::from(pa_id));
                own = p;
            }
        }
    }
    assert_ne!(publication, 0);
    assert_eq!(own, publication);
    // b: exactly one event per subscription, all with the origin's publication ID.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (sub, p, d, a) = event_of(sb.recv().await);
        assert_eq!(
            p, publication,
            "publication ID is minted once, at the origin"
        );
        assert_eq!(a, vec![Value::from("hi")]);
        assert_eq!(d["publisher"], Value::from(pa_id));
        assert_eq!(d["publisher_authrole"], Value::from("anonymous"));
        if sub != s_exact {
            assert_eq!(d["topic"], Value::from("com.x.event"));
        }
        seen.push(sub);
    }
    seen.sort();
    let mut want = vec![s_exact, s_prefix, s_wild];
    want.sort();
    assert_eq!(seen, want);
    let (_, p, _, _) = event_of(sc.recv().await);
    assert_eq!(p, publication);
    sb.expect_silence(Duration::from_millis(300)).await;
    sc.expect_silence(Duration::from_millis(1)).await;

    // exclude_me default (true): the publisher does not get it, remote subscribers do.
    pa.publish("com.x.other", opts(&[]), args(vec![])).await;
    let (sub, _, _, _) = event_of(sb.recv().await);
    assert_eq!(sub, s_prefix);
    event_of(sc.recv().await);
    pa.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn eligibility_is_evaluated_where_subscribers_live() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut s1, s1_id) = b.client().await;
    let (mut s2, _) = b.client().await;
    s1.subscribe("t.e", opts(&[])).await;
    s2.subscribe("t.e", opts(&[])).await;
    eventually("interest", || a.remote_subs() == 1).await;
    let (mut p, _) = a.client().await;
    p.publish(
        "t.e",
        opts(&[("eligible", Value::List(vec![s1_id.into()]))]),
        args(vec![1u64.into()]),
    )
    .await;
    event_of(s1.recv().await);
    p.publish(
        "t.e",
        opts(&[("exclude", Value::List(vec![s1_id.into()]))]),
        args(vec![2u64.into()]),
    )
    .await;
    let (_, _, _, a2) = event_of(s2.recv().await);
    assert_eq!(a2, vec![Value::from(2u64)]);
    p.publish(
        "t.e",
        opts(&[("exclude_authrole", "anonymous".into())]),
        args(vec![3u64.into()]),
    )
    .await;
    s1.expect_silence(Duration::from_millis(300)).await;
    s2.expect_silence(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn shared_registrations_count_callees_across_nodes() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    let c = node("c", &[&a]).await;
    full_mesh(&[&a, &b, &c]).await;
    let rr = opts(&[("invoke", "roundrobin".into())]);
    let (mut ka, _) = a.client().await;
    let reg_a = ka.register("proc.rr", rr.clone()).await;
    let (mut kb, _) = b.client().await;
    let reg_b = kb.register("proc.rr", rr.clone()).await;
    // One registration ID on every node, as on one router.
    assert_eq!(reg_a, reg_b);
    eventually("c sees both callees", || c.callees("proc.rr") == 2).await;
    let (mut caller, _) = c.client().await;
    let mut counts = [0u32; 2];
    for i in 0..6u64 {
        let req = caller
            .call("proc.rr", opts(&[]), args(vec![i.into()]))
            .await;
        // Whichever callee was invoked answers.
        let (idx, k) = tokio::select! {
            m = ka.recv() => (0, (m, &mut ka)),
            m = kb.recv() => (1, (m, &mut kb)),
        };
        let (m, callee) = k;
        let Message::Invocation {
            request, payload, ..
        } = m
        else {
            panic!("expected INVOCATION, got {m:?}")
        };
        assert_eq!(payload.args(), &[Value::from(i)]);
        callee
            .send(&Message::Yield {
                request,
                options: opts(&[]),
                payload: args(vec![(i * 10).into()]),
            })
            .await;
        match caller.recv().await {
            Message::Result {
                request: r,
                payload,
                ..
            } => {
                assert_eq!(r, req);
                assert_eq!(payload.args(), &[Value::from(i * 10)]);
            }
            other => panic!("expected RESULT, got {other:?}"),
        }
        counts[idx] += 1;
    }
    assert_eq!(counts, [3, 3], "roundrobin alternates across nodes");

    // A pattern registration crosses too, and a callee ERROR arrives as ERROR.
    kb.register("proc.pre", opts(&[("match", "prefix".into())]))
        .await;
    eventually("c sees the prefix registration", || {
        c.callees("proc.pre") == 1
    })
    .await;
    let req = caller.call("proc.pre.x", opts(&[]), args(vec![])).await;
    let Message::Invocation {
        request, details, ..
    } = kb.recv().await
    else {
        panic!()
    };
    assert_eq!(details["procedure"], Value::from("proc.pre.x"));
    kb.send(&Message::Error {
        request_type: code::INVOCATION,
        request,
        details: opts(&[]),
        error: "app.error.nope".into(),
        payload: args(vec!["why".into()]),
    })
    .await;
    match caller.recv().await {
        Message::Error {
            request,
            error,
            payload,
            ..
        } => {
            assert_eq!(request, req);
            assert_eq!(error, "app.error.nope");
            assert_eq!(payload.args(), &[Value::from("why")]);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn progressive_results_cancel_and_timeout_cross_nodes() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut callee, _) = b.client().await;
    callee.register("proc.slow", opts(&[])).await;
    eventually("a sees the callee", || a.callees("proc.slow") == 1).await;
    let (mut caller, caller_id) = a.client().await;

    // Progressive results, with caller disclosure.
    let req = caller
        .call(
            "proc.slow",
            opts(&[
                ("receive_progress", true.into()),
                ("disclose_me", true.into()),
            ]),
            args(vec![]),
        )
        .await;
    let Message::Invocation {
        request, details, ..
    } = callee.recv().await
    else {
        panic!()
    };
    assert_eq!(details["receive_progress"], Value::Bool(true));
    assert_eq!(details["caller"], Value::from(caller_id));
    for i in 0..3u64 {
        callee
            .send(&Message::Yield {
                request,
                options: opts(&[("progress", true.into())]),
                payload: args(vec![i.into()]),
            })
            .await;
    }
    callee
        .send(&Message::Yield {
            request,
            options: opts(&[]),
            payload: args(vec!["done".into()]),
        })
        .await;
    for i in 0..3u64 {
        match caller.recv().await {
            Message::Result {
                request: r,
                details,
                payload,
            } => {
                assert_eq!(r, req);
                assert_eq!(details["progress"], Value::Bool(true));
                assert_eq!(payload.args(), &[Value::from(i)]);
            }
            other => panic!("expected progressive RESULT, got {other:?}"),
        }
    }
    match caller.recv().await {
        Message::Result {
            details, payload, ..
        } => {
            assert!(!details.contains_key("progress"));
            assert_eq!(payload.args(), &[Value::from("done")]);
        }
        other => panic!("expected RESULT, got {other:?}"),
    }

    // Cancel (kill): the remote callee is interrupted; its answer becomes canceled.
    let req = caller.call("proc.slow", opts(&[]), args(vec![])).await;
    let Message::Invocation { request, .. } = callee.recv().await else {
        panic!()
    };
    caller
        .send(&Message::Cancel {
            request: req,
            options: opts(&[("mode", "kill".into())]),
        })
        .await;
    match callee.recv().await {
        Message::Interrupt {
            request: r,
            options,
        } => {
            assert_eq!(r, request);
            assert_eq!(options["mode"], Value::from("kill"));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
    callee
        .send(&Message::Error {
            request_type: code::INVOCATION,
            request,
            details: opts(&[]),
            error: "wamp.error.canceled".into(),
            payload: args(vec![]),
        })
        .await;
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.canceled"
    );

    // Timeout: the caller gets wamp.error.timeout; the callee is interrupted.
    let req = caller
        .call(
            "proc.slow",
            opts(&[("timeout", 300u64.into())]),
            args(vec![]),
        )
        .await;
    let Message::Invocation {
        request, details, ..
    } = callee.recv().await
    else {
        panic!()
    };
    assert_eq!(details["timeout"], Value::from(300u64));
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.timeout"
    );
    match callee.recv().await {
        Message::Interrupt { request: r, .. } => assert_eq!(r, request),
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
    // A late answer is dropped.
    callee
        .send(&Message::Yield {
            request,
            options: opts(&[]),
            payload: args(vec![]),
        })
        .await;
    caller.expect_silence(Duration::from_millis(300)).await;
    eventually("no call left pending on either node", || {
        let p = |n: &Node| n.router.realm("realm1").unwrap().dealer.pending_count();
        p(&a) == 0 && p(&b) == 0
    })
    .await;
}

#[tokio::test]
async fn losing_the_callee_node_fails_calls_promptly() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut callee, _) = b.client().await;
    callee.register("proc.lost", opts(&[])).await;
    eventually("a sees the callee", || a.callees("proc.lost") == 1).await;
    let (mut caller, _) = a.client().await;
    let req = caller.call("proc.lost", opts(&[]), args(vec![])).await;
    assert!(matches!(callee.recv().await, Message::Invocation { .. }));
    let started = std::time::Instant::now();
    b.router.shutdown().trigger();
    let err = caller.expect_error(code::CALL, req).await;
    assert_eq!(err, "wamp.error.canceled");
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("b's registration is gone from a", || {
        a.callees("proc.lost") == 0
    })
    .await;
    let req = caller.call("proc.lost", opts(&[]), args(vec![])).await;
    assert_eq!(
        caller.expect_error(code::CALL, req).await,
        "wamp.error.no_such_procedure"
    );
}

#[tokio::test]
async fn reconnect_resyncs_without_loss_or_duplicates() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut sb, _) = b.client().await;
    sb.subscribe("r.t", opts(&[])).await;
    sb.subscribe("r", opts(&[("match", "prefix".into())])).await;
    sb.subscribe("r..x", opts(&[("match", "wildcard".into())]))
        .await;
    let (mut kb, _) = b.client().await;
    kb.register("r.proc", opts(&[("match", "prefix".into())]))
        .await;
    let (mut pa, _) = a.client().await;
    for round in 0..3u64 {
        // Crossbar rlinks lose subscriptions and registrations here (1909, 1914, 2079).
        a.mesh.drop_links();
        full_mesh(&[&a, &b]).await;
        eventually("a has b's interest again", || {
            a.remote_subs() == 3 && a.callees("r.proc") == 1
        })
        .await;
        pa.publish("r.t", opts(&[]), args(vec![round.into()])).await;
        // Exact and prefix match r.t; each exactly once.
        for _ in 0..2 {
            let (_, _, _, got) = event_of(sb.recv().await);
            assert_eq!(got, vec![Value::from(round)]);
        }
        pa.publish("r.y.x", opts(&[]), args(vec![round.into()]))
            .await;
        for _ in 0..2 {
            event_of(sb.recv().await);
        }
        sb.expect_silence(Duration::from_millis(200)).await;
        let req = pa.call("r.proc.go", opts(&[]), args(vec![])).await;
        let Message::Invocation { request, .. } = kb.recv().await else {
            panic!()
        };
        kb.send(&Message::Yield {
            request,
            options: opts(&[]),
            payload: args(vec![]),
        })
        .await;
        assert!(matches!(pa.recv().await, Message::Result { request, .. } if request == req));
    }
    // The remote index holds exactly b's three entries, not one per reconnect.
    assert_eq!(a.remote_subs(), 3);
    assert_eq!(a.callees("r.proc"), 1);
}

#[tokio::test]
async fn a_restarted_peer_rejoins_and_its_old_state_is_gone() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut sb, _) = b.client().await;
    sb.subscribe("gone.t", opts(&[])).await;
    eventually("interest", || a.remote_subs() == 1).await;
    b.router.shutdown().trigger();
    eventually("b's interest dropped", || a.remote_subs() == 0).await;
    // "b" comes back as a new process (new incarnation) on a new port.
    let b2 = node("b", &[&a]).await;
    full_mesh(&[&a, &b2]).await;
    let (mut s2, _) = b2.client().await;
    s2.subscribe("new.t", opts(&[])).await;
    eventually("new interest", || a.remote_subs() == 1).await;
    let (mut pa, _) = a.client().await;
    pa.publish("new.t", opts(&[]), args(vec![])).await;
    event_of(s2.recv().await);
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    let a = node("a", &[]).await;
    let b = node_with(fast("b", "not-the-secret", &[&a]), true).await;
    eventually("b's dial refused", || {
        b.mesh.status().peers.iter().any(|p| {
            p.state == "refused" && p.last_error.as_deref().unwrap_or("").contains("secret")
        })
    })
    .await;
    assert!(a.mesh.linked_nodes().is_empty());
    assert!(b.mesh.linked_nodes().is_empty());
}

#[tokio::test]
async fn single_registration_on_another_node_is_refused() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut ka, _) = a.client().await;
    ka.register("one.proc", opts(&[])).await;
    eventually("b sees it", || b.callees("one.proc") == 1).await;
    let (mut kb, _) = b.client().await;
    let request = kb.request_id();
    kb.send(&Message::Register {
        request,
        options: opts(&[]),
        procedure: "one.proc".into(),
    })
    .await;
    assert_eq!(
        kb.expect_error(code::REGISTER, request).await,
        "wamp.error.procedure_already_exists"
    );
}

#[tokio::test]
async fn a_partition_heals_to_one_deterministic_winner() {
    // Two nodes register the same single procedure while unlinked.
    let a = node_with(fast("a", "s3cret", &[]), true).await;
    let b = node_with(fast("b", "s3cret", &[&a]), false).await;
    let (mut ka, _) = a.client().await;
    let reg_a = ka.register("race.proc", opts(&[])).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut kb, _) = b.client().await;
    let reg_b = kb.register("race.proc", opts(&[])).await;
    b.mesh.start();
    full_mesh(&[&a, &b]).await;
    // The older claim (a's) wins; b's callee is revoked with the reason.
    match kb.recv().await {
        Message::Unregistered { request, details } => {
            assert_eq!(request, 0);
            let d = details.unwrap();
            assert_eq!(d["registration"], Value::from(reg_b));
            assert_eq!(
                d["reason"],
                Value::from("wamp.error.procedure_already_exists")
            );
        }
        other => panic!("expected UNREGISTERED, got {other:?}"),
    }
    ka.expect_silence(Duration::from_millis(300)).await;
    eventually("both nodes route to a", || {
        a.callees("race.proc") == 1 && b.callees("race.proc") == 1
    })
    .await;
    let (mut caller, _) = b.client().await;
    let req = caller.call("race.proc", opts(&[]), args(vec![])).await;
    let Message::Invocation {
        request,
        registration,
        ..
    } = ka.recv().await
    else {
        panic!()
    };
    assert_eq!(registration, reg_a);
    ka.send(&Message::Yield {
        request,
        options: opts(&[]),
        payload: args(vec![]),
    })
    .await;
    assert!(matches!(caller.recv().await, Message::Result { request, .. } if request == req));
    let _ = WAIT;
}

/// A fake peer named `name` dialing `node` (see `common::fake_peer`).
async fn fake_peer(node: &Node, name: &str, features: &[&str]) -> (FakeLink, Vec<String>) {
    common::fake_peer(node.addr, node.mesh.node_name(), name, "s3cret", features).await
}

/// A peer that authenticates, announces interest and then never reads: its link queue
/// reaches its bound and the link is cut, instead of this node's memory growing.
#[tokio::test]
async fn a_stuck_peer_link_is_cut_at_its_queue_bound() {
    use switchyard_router::mesh::frame::Frame;
    use switchyard_router::uri::MatchPolicy;

    let mut cfg = fast("a", "s3cret", &[]);
    cfg.heartbeat_timeout = Duration::from_secs(30);
    cfg.write_timeout = Duration::from_secs(30);
    cfg.queue.hard_bytes = 256 << 10;
    cfg.queue.soft_bytes = 128 << 10;
    let a = node_with(cfg, true).await;

    let (mut ws, _) = fake_peer(&a, "stuck", &[]).await;
    fake_send(
        &mut ws,
        &Frame::SubAdd {
            realm: "realm1".into(),
            policy: MatchPolicy::Exact,
            topic: "flood".into(),
            meta: None,
        },
    )
    .await;
    eventually("a sees the interest", || a.remote_subs() == 1).await;

    // Flood from an in-process publisher; the fake peer reads nothing more.
    let mut p = a.router.connect_local("realm1", "p", "p").unwrap();
    let blob = Value::String("x".repeat(4096));
    let mut cut = false;
    for i in 0..20_000u64 {
        p.send(Message::Publish {
            request: i + 1,
            options: opts(&[]),
            topic: "flood".into(),
            payload: args(vec![blob.clone()]),
        });
        if i % 100 == 0 {
            tokio::task::yield_now().await;
            if a.mesh.linked_nodes().is_empty() {
                cut = true;
                break;
            }
        }
    }
    if !cut {
        eventually("the stuck link is cut", || a.mesh.linked_nodes().is_empty()).await;
    }
    assert_eq!(
        a.remote_subs(),
        0,
        "the stuck peer's interest is dropped with its link"
    );
    drop(ws);
}

/// Payloads cross the mesh untouched whatever the serializers on either side: a binary
/// published by a JSON client (as "\0" + base64) reaches CBOR and MsgPack subscribers on
/// other nodes as real bytes.
#[tokio::test]
async fn binary_payloads_cross_nodes_between_serializers() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    let c = node("c", &[&a]).await;
    full_mesh(&[&a, &b, &c]).await;
    let (mut sb, _) = b.client_with("wamp.2.cbor").await;
    sb.subscribe("bin.t", opts(&[])).await;
    let (mut sc, _) = c.client_with("wamp.2.msgpack").await;
    sc.subscribe("bin.t", opts(&[])).await;
    eventually("interest", || a.remote_subs() == 1).await;
    let (mut pa, _) = a.client().await;
    // base64("hi\0") = "aGkA"
    pa.publish("bin.t", opts(&[]), args(vec![Value::from("\u{0}aGkA")]))
        .await;
    for s in [&mut sb, &mut sc] {
        let (_, _, _, got) = event_of(s.recv().await);
        assert_eq!(got, vec![Value::Bytes(bytes::Bytes::from_static(b"hi\0"))]);
    }
}

/// Each node answers its own meta API: the meta service's `wamp.*` registrations are not
/// announced to peers (they would conflict, and the older node's would take over the
/// younger node's meta procedures).
#[tokio::test]
async fn meta_procedures_are_never_replicated() {
    let a = node("a", &[]).await;
    // b's meta registrations are younger: under the conflict rule they would lose to a's.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    for x in [&a, &b] {
        let realm = x.router.realm("realm1").unwrap();
        let meta: Vec<_> = realm
            .dealer
            .registrations()
            .into_iter()
            .filter(|r| r.procedure.starts_with("wamp."))
            .collect();
        assert_eq!(meta.len(), switchyard_router::meta::PROCEDURES.len());
        for r in meta {
            assert_eq!(r.callees.len(), 1, "{}: {r:?}", x.mesh.node_name());
            assert!(
                realm.session(r.callees[0]).is_some(),
                "{}: {} is served by a stand-in for a peer",
                x.mesh.node_name(),
                r.procedure
            );
        }
    }
    // A client on b gets b's own meta service: it knows the client's session.
    let (mut cb, cb_id) = b.client().await;
    let req = cb
        .call("wamp.session.get", opts(&[]), args(vec![cb_id.into()]))
        .await;
    match cb.recv().await {
        Message::Result {
            request, payload, ..
        } => {
            assert_eq!(request, req);
            let Value::Dict(d) = &payload.args()[0] else {
                panic!("{payload:?}")
            };
            assert_eq!(d["session"], Value::from(cb_id));
        }
        other => panic!("expected RESULT, got {other:?}"),
    }
}

/// The meta API answers for the whole mesh: sessions (with the authrole filter),
/// subscriptions and subscribers, registrations and callees on every node; any node's
/// subscription ID resolves to the subscribers on all nodes; a lost node's entries go.
#[tokio::test]
async fn meta_api_answers_for_the_whole_mesh() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    let c = node("c", &[&a]).await;
    full_mesh(&[&a, &b, &c]).await;
    let (mut ma, ma_id) = a.client().await;
    let (mut sb1, sb1_id) = b.client().await;
    let (mut kb, kb_id) = b.client().await;
    let (mut sc, sc_id) = c.client_with("wamp.2.msgpack").await;
    // A session with its own role on b; a trusted one on c, which the meta API hides.
    let worker = b
        .router
        .connect_local_untrusted("realm1", "worker-1", "worker")
        .unwrap();
    let _trusted = c
        .router
        .connect_local("realm1", "internal", "trusted")
        .unwrap();
    let worker_id = worker.session().unwrap().id();

    // Sessions.
    meta_until(
        &mut ma,
        "wamp.session.count",
        vec![],
        "5 sessions",
        count_is(5),
    )
    .await;
    let all = meta(&mut ma, "wamp.session.list", vec![]).await.unwrap();
    assert_eq!(
        id_set(&all),
        sorted(vec![ma_id, sb1_id, kb_id, sc_id, worker_id])
    );
    let workers = Value::List(vec!["worker".into()]);
    let n = meta(&mut ma, "wamp.session.count", vec![workers.clone()]).await;
    assert_eq!(n, Ok(Value::from(1u64)));
    let l = meta(&mut ma, "wamp.session.list", vec![workers])
        .await
        .unwrap();
    assert_eq!(id_set(&l), vec![worker_id]);
    // wamp.session.get of a session on c says, on a, what c says.
    let on_a = meta(&mut ma, "wamp.session.get", vec![sc_id.into()])
        .await
        .unwrap();
    let on_c = meta(&mut sc, "wamp.session.get", vec![sc_id.into()])
        .await
        .unwrap();
    assert_eq!(on_a, on_c);
    assert_eq!(
        on_a.as_dict().unwrap()["authrole"],
        Value::from("anonymous")
    );
    let w = meta(&mut ma, "wamp.session.get", vec![worker_id.into()])
        .await
        .unwrap();
    assert_eq!(w.as_dict().unwrap()["authid"], Value::from("worker-1"));
    // (Kills across nodes: tests/mesh_meta.rs.)

    // Subscriptions: b and c subscribe, a has none of its own.
    let sub_b = sb1.subscribe("mm.topic", opts(&[])).await;
    let sub_c = sc.subscribe("mm.topic", opts(&[])).await;
    let pre_c = sc
        .subscribe("mm", opts(&[("match", "prefix".into())]))
        .await;
    // One subscription ID for (realm, policy, topic) on every node, as on one router.
    assert_eq!(sub_b, sub_c);
    // On a: that ID, whose subscribers are on b and c.
    let found = meta_until(
        &mut ma,
        "wamp.subscription.lookup",
        vec!["mm.topic".into()],
        "a finds the remote subscription",
        |v| v.as_u64() == Some(sub_b),
    )
    .await;
    let both = sorted(vec![sb1_id, sc_id]);
    let subs = meta_until(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![found.clone()],
        "subscribers on b and c",
        |v| id_set(v) == both,
    )
    .await;
    assert_eq!(id_set(&subs), both);
    let n = meta(
        &mut ma,
        "wamp.subscription.count_subscribers",
        vec![found.clone()],
    )
    .await;
    assert_eq!(n, Ok(Value::from(2u64)));
    // c's ID for the same subscription resolves to the same subscribers.
    let via_c = meta(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![sub_c.into()],
    )
    .await;
    assert_eq!(id_set(&via_c.unwrap()), both);
    let got = meta(&mut ma, "wamp.subscription.get", vec![found])
        .await
        .unwrap();
    let got = got.as_dict().unwrap();
    assert_eq!(got["uri"], Value::from("mm.topic"));
    assert_eq!(got["match"], Value::from("exact"));
    assert_eq!(got["id"], Value::from(sub_b));
    let m = meta(&mut ma, "wamp.subscription.match", vec!["mm.topic".into()]).await;
    assert_eq!(id_set(&m.unwrap()), sorted(vec![sub_b, pre_c]));
    let listed = meta(&mut ma, "wamp.subscription.list", vec![])
        .await
        .unwrap();
    let listed = listed.as_dict().unwrap();
    assert_eq!(id_set(&listed["exact"]), vec![sub_b]);
    assert_eq!(id_set(&listed["prefix"]), vec![pre_c]);
    // On b: b's own ID, with the same subscribers.
    let on_b = meta(
        &mut sb1,
        "wamp.subscription.lookup",
        vec!["mm.topic".into()],
    )
    .await;
    assert_eq!(on_b, Ok(Value::from(sub_b)));
    let on_b = meta(
        &mut sb1,
        "wamp.subscription.list_subscribers",
        vec![sub_b.into()],
    )
    .await;
    assert_eq!(id_set(&on_b.unwrap()), both);
    // Once a has a subscriber of its own, a answers with its own ID, covering all three.
    let sub_a = ma.subscribe("mm.topic", opts(&[])).await;
    let found = meta(&mut ma, "wamp.subscription.lookup", vec!["mm.topic".into()]).await;
    assert_eq!(found, Ok(Value::from(sub_a)));
    let subs = meta(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![sub_a.into()],
    )
    .await;
    assert_eq!(id_set(&subs.unwrap()), sorted(vec![ma_id, sb1_id, sc_id]));

    // Registrations: shared by callees on b and c; a routes to both through its own ID.
    let rr = opts(&[("invoke", "roundrobin".into())]);
    let reg_b = kb.register("mm.proc", rr.clone()).await;
    sc.register("mm.proc", rr).await;
    eventually("a sees both callees", || a.callees("mm.proc") == 2).await;
    let reg = meta(&mut ma, "wamp.registration.lookup", vec!["mm.proc".into()])
        .await
        .unwrap();
    let reg_a = reg.as_u64().expect("a has a registration for mm.proc");
    let callees = meta_until(
        &mut ma,
        "wamp.registration.list_callees",
        vec![reg.clone()],
        "callees on b and c",
        |v| id_set(v) == sorted(vec![kb_id, sc_id]),
    )
    .await;
    assert_eq!(id_set(&callees), sorted(vec![kb_id, sc_id]));
    let n = meta(
        &mut ma,
        "wamp.registration.count_callees",
        vec![reg.clone()],
    )
    .await;
    assert_eq!(n, Ok(Value::from(2u64)));
    let m = meta(&mut ma, "wamp.registration.match", vec!["mm.proc".into()]).await;
    assert_eq!(m, Ok(reg.clone()));
    let listed = meta(&mut ma, "wamp.registration.list", vec![])
        .await
        .unwrap();
    assert_eq!(id_set(&listed.as_dict().unwrap()["exact"]), vec![reg_a]);
    // b's registration ID resolves on a to a's registration of the same URI.
    let got = meta(&mut ma, "wamp.registration.get", vec![reg_b.into()])
        .await
        .unwrap();
    assert_eq!(got.as_dict().unwrap()["id"], reg);
    assert_eq!(got.as_dict().unwrap()["invoke"], Value::from("roundrobin"));
    let n = meta(
        &mut ma,
        "wamp.registration.count_callees",
        vec![reg_b.into()],
    )
    .await;
    assert_eq!(n, Ok(Value::from(2u64)));

    // c goes away: its session, subscriber and callee leave every answer on a.
    c.router.shutdown().trigger();
    meta_until(
        &mut ma,
        "wamp.session.count",
        vec![],
        "c's session gone",
        count_is(4),
    )
    .await;
    let l = meta(&mut ma, "wamp.session.list", vec![]).await.unwrap();
    assert!(!id_set(&l).contains(&sc_id));
    let e = meta(&mut ma, "wamp.session.get", vec![sc_id.into()]).await;
    assert_eq!(e, Err("wamp.error.no_such_session".into()));
    let subs = meta(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![sub_a.into()],
    )
    .await;
    assert_eq!(id_set(&subs.unwrap()), sorted(vec![ma_id, sb1_id]));
    let e = meta(&mut ma, "wamp.subscription.get", vec![pre_c.into()]).await;
    assert_eq!(e, Err("wamp.error.no_such_subscription".into()));
    let m = meta(&mut ma, "wamp.subscription.match", vec!["mm.topic".into()]).await;
    assert_eq!(id_set(&m.unwrap()), vec![sub_a]);
    let callees = meta_until(
        &mut ma,
        "wamp.registration.list_callees",
        vec![reg],
        "only b's callee",
        |v| id_set(v) == vec![kb_id],
    )
    .await;
    assert_eq!(id_set(&callees), vec![kb_id]);
    drop(worker);
}

/// A link that drops and resyncs rebuilds the directory without duplicates, and sessions
/// that leave are gone from it.
#[tokio::test]
async fn the_meta_directory_resyncs_without_duplicates() {
    let a = node("a", &[]).await;
    let b = node("b", &[&a]).await;
    full_mesh(&[&a, &b]).await;
    let (mut ma, _) = a.client().await;
    let (mut sb, sb_id) = b.client().await;
    let (sb2, _) = b.client().await;
    let sub = sb.subscribe("rs.t", opts(&[])).await;
    meta_until(
        &mut ma,
        "wamp.session.count",
        vec![],
        "3 sessions",
        count_is(3),
    )
    .await;
    for _ in 0..3 {
        a.mesh.drop_links();
        full_mesh(&[&a, &b]).await;
        let n = meta(&mut ma, "wamp.session.count", vec![]).await;
        assert_eq!(n, Ok(Value::from(3u64)), "after a resync");
        let s = meta(
            &mut ma,
            "wamp.subscription.list_subscribers",
            vec![sub.into()],
        )
        .await;
        assert_eq!(id_set(&s.unwrap()), vec![sb_id]);
    }
    drop(sb2);
    meta_until(
        &mut ma,
        "wamp.session.count",
        vec![],
        "a left session gone",
        count_is(2),
    )
    .await;
    let req = sb.request_id();
    sb.send(&Message::Unsubscribe {
        request: req,
        subscription: sub,
    })
    .await;
    assert!(matches!(sb.recv().await, Message::Unsubscribed { .. }));
    meta_until(
        &mut ma,
        "wamp.subscription.lookup",
        vec!["rs.t".into()],
        "the subscription gone",
        |v| *v == Value::Null,
    )
    .await;
    let e = meta(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![sub.into()],
    )
    .await;
    assert_eq!(e, Err("wamp.error.no_such_subscription".into()));
}

/// Peers that do not announce the meta feature (older nodes) get no meta directory frames;
/// peers that do get this node's sessions and subscribers in the resync.
#[tokio::test]
async fn meta_frames_go_only_to_peers_that_understand_them() {
    use switchyard_router::mesh::frame::{Frame, FEATURE_META};
    let a = node("a", &[]).await;
    let (mut ca, ca_id) = a.client().await;
    let sub = ca.subscribe("ff.t", opts(&[])).await;
    for (name, features) in [("old", &[][..]), ("new", &[FEATURE_META][..])] {
        let (mut ws, theirs) = fake_peer(&a, name, features).await;
        assert!(theirs.iter().any(|f| f == FEATURE_META));
        let mut frames = Vec::new();
        loop {
            match fake_recv(&mut ws).await {
                Frame::SyncDone => break,
                f => frames.push(f),
            }
        }
        let sessions: Vec<Id> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SessionAdd { session, .. } => Some(*session),
                _ => None,
            })
            .collect();
        let subscribers: Vec<(Id, Id)> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SubscriberAdd {
                    subscription,
                    session,
                    ..
                } => Some((*subscription, *session)),
                _ => None,
            })
            .collect();
        let sub_meta = frames.iter().find_map(|f| match f {
            Frame::SubAdd { topic, meta, .. } if topic == "ff.t" => Some(meta.clone()),
            _ => None,
        });
        if features.is_empty() {
            assert!(sessions.is_empty() && subscribers.is_empty(), "{frames:?}");
        } else {
            // Only the client: the meta service's own session is not announced.
            assert_eq!(sessions, vec![ca_id], "{frames:?}");
            assert_eq!(subscribers, vec![(sub, ca_id)]);
        }
        // sub+ carries the ID either way (older nodes ignore it).
        assert_eq!(sub_meta.flatten().map(|(id, _)| id), Some(sub));
    }
}

/// A malformed frame drops the link (and everything the peer announced) without touching
/// the node's own sessions; a peer announcing more sessions than the bound fills the table
/// up to the bound only.
#[tokio::test]
async fn a_peer_announcing_bad_or_too_many_sessions_is_contained() {
    use switchyard_router::mesh::frame::{Frame, FEATURE_META};
    let mut cfg = fast("a", "s3cret", &[]);
    cfg.max_remote_sessions = 2;
    cfg.max_remote_subscribers = 1;
    let a = node_with(cfg, true).await;
    let (mut ma, _) = a.client().await;
    let (mut ws, _) = fake_peer(&a, "evil", &[FEATURE_META]).await;
    for session in 1..=3u64 {
        fake_send(
            &mut ws,
            &Frame::SessionAdd {
                realm: "realm1".into(),
                session,
                authid: format!("x{session}"),
                authrole: "r".into(),
                authmethod: "anonymous".into(),
                authprovider: "static".into(),
                transport: opts(&[]),
            },
        )
        .await;
    }
    // One own session plus two of the three announced.
    meta_until(
        &mut ma,
        "wamp.session.count",
        vec![],
        "the bound",
        count_is(3),
    )
    .await;
    // One subscriber of the two announced.
    fake_send(
        &mut ws,
        &Frame::SubAdd {
            realm: "realm1".into(),
            policy: switchyard_router::uri::MatchPolicy::Exact,
            topic: "evil.t".into(),
            meta: Some((77, "2025-01-01T00:00:00.000Z".into())),
        },
    )
    .await;
    for session in [1u64, 2] {
        fake_send(
            &mut ws,
            &Frame::SubscriberAdd {
                realm: "realm1".into(),
                subscription: 77,
                session,
            },
        )
        .await;
    }
    meta_until(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![77u64.into()],
        "the peer's first subscriber",
        |v| id_set(v) == vec![1],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        meta(&mut ma, "wamp.session.count", vec![]).await,
        Ok(Value::from(3u64))
    );
    let subs = meta(
        &mut ma,
        "wamp.subscription.list_subscribers",
        vec![77u64.into()],
    )
    .await;
    assert_eq!(id_set(&subs.unwrap()), vec![1]);
    // A session ID out of range: the link goes, with the peer's sessions.
    let bad = {
        let mut f = Frame::SessionDel {
            realm: "realm1".into(),
            session: 1,
        }
        .encode()
        .to_vec();
        // ["session-", "realm1", 1] → the ID becomes 0.
        *f.last_mut().unwrap() = 0;
        bytes::Bytes::from(f)
    };
    {
        use futures_util::SinkExt;
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(bad))
            .await
            .unwrap();
    }
    eventually("the bad peer's link dropped", || {
        a.mesh.linked_nodes().is_empty()
    })
    .await;
    meta_until(
        &mut ma,
        "wamp.session.count",
        vec![],
        "only a's own",
        count_is(1),
    )
    .await;
    // The node's own client is unaffected.
    let sub = ma.subscribe("still.here", opts(&[])).await;
    assert_ne!(sub, 0);
}
