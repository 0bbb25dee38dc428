//! The master engine in-process: a router with the master's authenticator and guard, a
//! running [`Master`], and scripted workers joined as real (untrusted) WAMP sessions with the
//! worker role. What a user would check: forced builds end with the right result, logs hold
//! the output, the bus carries Buildbot's routing keys, a lost worker's build is retried and
//! runs again, a stopped build is cancelled, changes trigger the matching schedulers, a busy
//! builder starves no other, and nobody but a master may touch a worker's procedures. The
//! master's own stops and repairs are in `engine_lifecycle.rs`; the harness is
//! `common/engine.rs`.
//!
//! The real worker process and multi-process masters are tested at the workspace level
//! (tests/master_*.rs); these tests pin the engine's decisions.

mod common;

use std::time::{Duration, Instant};

use common::engine::{
    builds_of, force, request_result, setup, start_worker, wait_for, watch_bus, Seen,
};
use serde_json::json;
use switchyard_master::auth::WORKER_ROLE;
use switchyard_master::control::{ControlError, NewChange};
use switchyard_master::Results;
use switchyard_router::wire::{Dict, Message, Payload, Value};

#[tokio::test]
async fn forced_build_runs_to_success_with_logs_and_bus_events() {
    let s = setup().await;
    let mut bus = watch_bus(&s.router);
    let (_w, mut seen) = start_worker(&s.router, "w1");
    let bs = s.control.force(force("b")).await.unwrap();
    let brid = bs.requests[0].1;
    let result = wait_for("request complete", async || {
        request_result(&s.store, brid).await
    })
    .await;
    assert_eq!(result, Results::Success);
    assert!(matches!(seen.recv().await, Some(Seen::Run(c)) if c == "ok"));
    let builds = builds_of(&s.store, brid).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(builds[0].1, Some(Results::Success));
    // The bus carried Buildbot's keys for the request, the build and its steps.
    let mut topics = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), bus.recv()).await {
            Ok(Some(t)) => topics.push(t),
            _ => break,
        }
    }
    let bid = builds[0].0;
    for want in [
        format!("org.buildbot.mq.buildrequests.{brid}.new"),
        format!("org.buildbot.mq.buildrequests.{brid}.claimed"),
        format!("org.buildbot.mq.buildrequests.{brid}.complete"),
        format!("org.buildbot.mq.builds.{bid}.new"),
        format!("org.buildbot.mq.builds.{bid}.finished"),
        format!("org.buildbot.mq.buildsets.{}.complete", bs.buildset),
    ] {
        assert!(topics.contains(&want), "{want} not in {topics:#?}");
    }
    assert!(topics
        .iter()
        .any(|t| t.starts_with("org.buildbot.mq.logs.") && t.ends_with(".append")));
    assert!(topics
        .iter()
        .any(|t| t.starts_with("org.buildbot.mq.steps.") && t.ends_with(".finished")));
}

#[tokio::test]
async fn a_failing_step_halts_the_build() {
    let s = setup().await;
    let (_w, mut seen) = start_worker(&s.router, "w1");
    let bs = s.control.force(force("failing")).await.unwrap();
    let brid = bs.requests[0].1;
    let result = wait_for("request complete", async || {
        request_result(&s.store, brid).await
    })
    .await;
    assert_eq!(result, Results::Failure);
    assert!(matches!(seen.recv().await, Some(Seen::Run(c)) if c == "fail"));
    // The second step never ran.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_lost_worker_means_retry_and_the_request_runs_again() {
    let s = setup().await;
    let (w1, mut seen) = start_worker(&s.router, "w1");
    let bs = s.control.force(force("slow")).await.unwrap();
    let brid = bs.requests[0].1;
    assert!(matches!(seen.recv().await, Some(Seen::Run(c)) if c == "hang"));
    // The worker dies mid-step: its session goes.
    w1.abort();
    let _ = w1.await;
    let first = wait_for("the first build to end", async || {
        let b = builds_of(&s.store, brid).await;
        b.first().and_then(|(_, r)| *r)
    })
    .await;
    assert_eq!(first, Results::Retry);
    let r = s.store.get_buildrequest(brid).await.unwrap().unwrap();
    assert!(
        !r.complete && r.claimed_by_masterid.is_none(),
        "released: {r:?}"
    );
    // The worker comes back: the request runs again (and hangs again); stop it this time.
    let (_w1, mut seen) = start_worker(&s.router, "w1");
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(20), seen.recv()).await,
        Ok(Some(Seen::Run(c))) if c == "hang"
    ));
    let second = wait_for("a second build", async || {
        let b = builds_of(&s.store, brid).await;
        (b.len() == 2).then(|| b[1].0)
    })
    .await;
    s.control.stop_build(second, "enough".into()).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), seen.recv()).await,
        Ok(Some(Seen::Interrupted))
    ));
    let result = wait_for("request complete", async || {
        request_result(&s.store, brid).await
    })
    .await;
    assert_eq!(result, Results::Cancelled);
    let builds = builds_of(&s.store, brid).await;
    assert_eq!(
        builds.iter().map(|b| b.1).collect::<Vec<_>>(),
        [Some(Results::Retry), Some(Results::Cancelled)]
    );
}

#[tokio::test]
async fn changes_trigger_matching_change_schedulers_only() {
    let s = setup().await;
    let (_w, _seen) = start_worker(&s.router, "w2");
    let other = s
        .control
        .add_change(NewChange {
            author: "dev".into(),
            branch: Some("feature".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(other.buildsets.is_empty());
    let main = s
        .control
        .add_change(NewChange {
            author: "dev".into(),
            branch: Some("main".into()),
            revision: Some("abc123".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(main.buildsets.len(), 1);
    let brid = main.buildsets[0].requests[0].1;
    let result = wait_for("request complete", async || {
        request_result(&s.store, brid).await
    })
    .await;
    assert_eq!(result, Results::Success);
    let props = s
        .store
        .buildset_properties(main.buildsets[0].buildset)
        .await
        .unwrap();
    assert_eq!(props["revision"].0, json!("abc123"));
}

#[tokio::test]
async fn disabled_schedulers_queue_nothing_until_enabled_again() {
    let s = setup().await;
    let id_of = async |name: &str| {
        let rows = s.store.list_schedulers().await.unwrap();
        let row = rows.into_iter().find(|r| r.name == name).unwrap();
        (row.id, row.enabled)
    };
    let main_change = || NewChange {
        author: "dev".into(),
        branch: Some("main".into()),
        ..Default::default()
    };
    let (on_main, enabled) = id_of("on-main").await;
    assert!(enabled);
    let (force_id, _) = id_of("force").await;
    s.control
        .set_scheduler_enabled(on_main, false)
        .await
        .unwrap();
    s.control
        .set_scheduler_enabled(force_id, false)
        .await
        .unwrap();
    assert_eq!(id_of("on-main").await, (on_main, false));
    // A disabled change scheduler ignores a matching change; a disabled force scheduler
    // refuses to force.
    let ignored = s.control.add_change(main_change()).await.unwrap();
    assert!(ignored.buildsets.is_empty());
    match s.control.force(force("b")).await {
        Err(ControlError::Invalid(msg)) => assert!(msg.contains("disabled"), "{msg}"),
        other => panic!("a disabled force scheduler must refuse: {other:?}"),
    }
    // Enabled again, both queue as before.
    s.control
        .set_scheduler_enabled(on_main, true)
        .await
        .unwrap();
    s.control
        .set_scheduler_enabled(force_id, true)
        .await
        .unwrap();
    let queued = s.control.add_change(main_change()).await.unwrap();
    assert_eq!(queued.buildsets.len(), 1);
    s.control.force(force("b")).await.unwrap();
    assert!(matches!(
        s.control.set_scheduler_enabled(9999, false).await,
        Err(ControlError::NotFound(_))
    ));
}

#[tokio::test]
async fn only_masters_touch_worker_procedures() {
    let s = setup().await;
    let (_w, _seen) = start_worker(&s.router, "w1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut anon = s
        .router
        .connect_local_untrusted("buildbot", "intruder", "anonymous")
        .unwrap();
    anon.send(Message::Call {
        request: 1,
        options: Dict::new(),
        procedure: "switchyard.worker.w1.run".into(),
        payload: Payload::default(),
    });
    anon.send(Message::Register {
        request: 2,
        options: Dict::new(),
        procedure: "switchyard.worker.w9.run".into(),
    });
    let mut prefix = Dict::new();
    prefix.insert("match".into(), Value::from("prefix"));
    anon.send(Message::Register {
        request: 3,
        options: prefix,
        procedure: "switchyard.".into(),
    });
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(5), anon.recv()).await {
            Ok(Some(Message::Error { error, .. })) => {
                assert_eq!(error, "wamp.error.not_authorized")
            }
            other => panic!("expected not_authorized, got {other:?}"),
        }
    }
    // A worker may not register under another worker's name.
    let mut w2 = s
        .router
        .connect_local_untrusted("buildbot", "w2", WORKER_ROLE)
        .unwrap();
    w2.send(Message::Register {
        request: 1,
        options: Dict::new(),
        procedure: "switchyard.worker.w1.info".into(),
    });
    match tokio::time::timeout(Duration::from_secs(5), w2.recv()).await {
        Ok(Some(Message::Error { error, .. })) => assert_eq!(error, "wamp.error.not_authorized"),
        other => panic!("expected not_authorized, got {other:?}"),
    }
}

#[tokio::test]
async fn a_busy_builder_does_not_starve_the_others() {
    let s = setup().await;
    // 250 requests for a builder whose only worker is away...
    for _ in 0..250 {
        s.control.force(force("failing")).await.unwrap();
    }
    // ...do not keep a later request of another builder from running on w2.
    let (_w, _seen) = start_worker(&s.router, "w2");
    let b = s.control.force(force("b")).await.unwrap().requests[0].1;
    assert_eq!(
        wait_for("b completes", async || request_result(&s.store, b).await).await,
        Results::Success
    );
}
