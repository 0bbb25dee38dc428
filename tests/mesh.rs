//! In-process mesh tests: several routers in one process, each on its own 127.0.0.1 port,
//! linked over real WebSocket peer links, with raw WAMP clients on different nodes.
//!
//! They cover what Crossbar's router-to-router links get wrong (issues 1909, 1914, 1959,
//! 1921, 2079): pattern subscriptions and registrations cross the mesh, and nothing is
//! duplicated on links dialed from both sides. This file: forming the mesh, pub/sub and RPC
//! across nodes. Link loss and misbehaving peers are in `mesh_links.rs`, the meta API across
//! the mesh in `mesh_meta.rs`; the nodes themselves in `common/mesh.rs`.

mod common;

use std::time::Duration;

use common::mesh::{event_of, eventually, fast, full_mesh, node, node_on, Node};
use common::{args, opts};
use switchyard_router::wire::{code, Message, Value};

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
