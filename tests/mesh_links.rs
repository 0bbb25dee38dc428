//! In-process mesh tests of the links themselves: nothing is lost or duplicated after a
//! reconnect (Crossbar issues 1909, 1914, 2079), a restarted peer's old state goes, a wrong
//! secret is refused, a partition heals to one deterministic winner, and a peer that stops
//! reading is cut at its queue bound. The nodes are in `common/mesh.rs`.

mod common;

use std::time::Duration;

use common::mesh::{event_of, eventually, fake_peer, fast, full_mesh, node, node_with};
use common::{args, fake_send, opts, WAIT};
use switchyard_router::wire::{Message, Value};

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
