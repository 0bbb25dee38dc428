//! In-process mesh tests of the meta API across nodes: each node serves its own `wamp.*`
//! procedures, which answer for the whole mesh; the meta directory resyncs without
//! duplicates, its frames go only to peers that understand them, and a peer announcing bad
//! or too many sessions is contained. The nodes are in `common/mesh.rs`.

mod common;

use std::time::Duration;

use common::mesh::{eventually, fake_peer, fast, full_mesh, node, node_with};
use common::{args, count_is, fake_recv, fake_send, id_set, meta, meta_until, opts, sorted};
use switchyard_router::wire::{Id, Message, Value};

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
