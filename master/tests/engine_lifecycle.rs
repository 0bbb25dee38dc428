//! The master engine's own lifecycle, in-process (harness in `common/engine.rs`): stopping
//! retries the running build, a graceful stop lets builds finish and redirects workers and
//! can be cancelled, a second master under a live name is refused, and the heartbeat repairs
//! what an outage or a crash left behind (an orphaned claim, an incomplete buildset). Builds
//! and scheduling are in `engine.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::engine::{
    builds_of, force, request_result, setup, start_worker, wait_for, watch_bus, Seen, CONFIG,
};
use switchyard_master::config::MasterConfig;
use switchyard_master::engine::{Master, MasterOptions};
use switchyard_master::Results;

#[tokio::test]
async fn stopping_the_master_retries_its_running_build() {
    let mut s = setup().await;
    let (_w, mut seen) = start_worker(&s.router, "w1");
    let bs = s.control.force(force("slow")).await.unwrap();
    let brid = bs.requests[0].1;
    assert!(matches!(seen.recv().await, Some(Seen::Run(c)) if c == "hang"));
    s.master.take().unwrap().stop().await;
    let b = builds_of(&s.store, brid).await;
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1, Some(Results::Retry));
    let r = s.store.get_buildrequest(brid).await.unwrap().unwrap();
    assert!(
        !r.complete && r.claimed_by_masterid.is_none(),
        "released for another master: {r:?}"
    );
}

#[tokio::test]
async fn graceful_stop_lets_builds_finish_then_redirects_workers() {
    let s = setup().await;
    let master = s.master.as_ref().unwrap();
    let (_w, mut seen) = start_worker(&s.router, "w1");
    let sleepy = s.control.force(force("sleepy")).await.unwrap().requests[0].1;
    assert!(matches!(seen.recv().await, Some(Seen::Run(c)) if c == "sleep"));
    master.stop_gracefully();
    assert_eq!(master.lifecycle().name(), "draining");
    // While draining, nothing new is claimed here.
    let queued = s.control.force(force("b")).await.unwrap().requests[0].1;
    let mut exit = master.exit_requested();
    tokio::time::timeout(Duration::from_secs(20), exit.wait_for(|e| *e))
        .await
        .expect("the master stops once its build finished")
        .unwrap();
    // The running build finished normally, the worker was sent to the peer, and the queued
    // request was left for another master.
    assert_eq!(
        request_result(&s.store, sleepy).await,
        Some(Results::Success)
    );
    let mut redirected = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), seen.recv()).await {
        if let Seen::Reconnect(urls) = m {
            redirected = Some(urls);
            break;
        }
    }
    assert_eq!(redirected, Some(vec!["ws://127.0.0.1:1/ws".to_string()]));
    let r = s.store.get_buildrequest(queued).await.unwrap().unwrap();
    assert!(!r.complete && r.claimed_by_masterid.is_none(), "{r:?}");
    assert_eq!(
        s.store.master_active(master.id()).await.unwrap(),
        Some(false)
    );
}

#[tokio::test]
async fn a_pending_graceful_stop_can_be_cancelled() {
    let s = setup().await;
    let master = s.master.as_ref().unwrap();
    let (_w, mut seen) = start_worker(&s.router, "w1");
    let slow = s.control.force(force("slow")).await.unwrap().requests[0].1;
    assert!(matches!(seen.recv().await, Some(Seen::Run(c)) if c == "hang"));
    let id = master.id();
    let answer = s
        .control
        .master_action(
            id,
            switchyard_master::control::MasterAction::Stop { graceful: true },
        )
        .await
        .unwrap();
    assert_eq!(answer["state"], "draining");
    let answer = s
        .control
        .master_action(id, switchyard_master::control::MasterAction::CancelStop)
        .await
        .unwrap();
    assert_eq!(answer["state"], "running");
    assert_eq!(master.lifecycle().name(), "running");
    // Cancelling twice is refused with a clear error.
    assert!(s
        .control
        .master_action(id, switchyard_master::control::MasterAction::CancelStop)
        .await
        .is_err());
    // It claims again: stop the hanging build, then a new one runs.
    let bid = wait_for("the slow build", async || {
        builds_of(&s.store, slow).await.first().map(|b| b.0)
    })
    .await;
    s.control.stop_build(bid, "done".into()).await.unwrap();
    let b = s.control.force(force("b")).await.unwrap().requests[0].1;
    assert_eq!(
        wait_for("b completes", async || request_result(&s.store, b).await).await,
        Results::Success
    );
    assert!(!*master.exit_requested().borrow());
}

#[tokio::test]
async fn a_second_master_under_a_live_name_is_refused() {
    let s = setup().await;
    let config: MasterConfig = toml::from_str(CONFIG).unwrap();
    let started = Master::start(
        &s.router,
        Arc::new(config),
        s.store.clone(),
        MasterOptions {
            name: "m1".into(),
            workers_anywhere: false,
            peer_urls: Arc::new(Vec::new),
        },
    )
    .await;
    match started {
        Err(e) => assert!(e.to_string().contains("is running"), "{e}"),
        Ok(_) => panic!("two masters named m1"),
    }
    // The first one is untouched.
    assert_eq!(
        s.store
            .master_active(s.master.as_ref().unwrap().id())
            .await
            .unwrap(),
        Some(true)
    );
}

#[tokio::test]
async fn bookkeeping_an_outage_interrupted_is_repaired() {
    let s = setup().await;
    let master = s.master.as_ref().unwrap().id();
    // As if the database had failed mid-build a minute ago: the master holds a claim and a
    // worker slot for a request that no build of it runs.
    let bs = s
        .store
        .queue_buildset(&switchyard_master::store::NewBuildset {
            reason: "orphan".into(),
            builders: vec![s.store.ensure_builder("b").await.unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let brid = bs.1[0].1;
    let past = s
        .store
        .clone()
        .with_clock(Arc::new(|| switchyard_master_now() - 60));
    let w1 = past.ensure_worker("w1").await.unwrap();
    assert!(matches!(
        past.acquire_worker_slot(master, w1, 1, brid).await.unwrap(),
        switchyard_master::store::WorkerSlot::Taken(_)
    ));
    past.claim_buildrequests(master, &[brid]).await.unwrap();
    // The master notices, releases both, and the request runs.
    let (_w, _seen) = start_worker(&s.router, "w1");
    assert_eq!(
        wait_for("the orphaned request to run", async || request_result(
            &s.store, brid
        )
        .await)
        .await,
        Results::Success
    );
}

fn switchyard_master_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn the_heartbeat_completes_a_buildset_left_incomplete() {
    let s = setup().await;
    let master = s.master.as_ref().unwrap().id();
    let mut bus = watch_bus(&s.router);
    // As after a stop or a crash between a request's completion and its buildset's.
    let (bsid, requests) = s
        .store
        .queue_buildset(&switchyard_master::store::NewBuildset {
            reason: "interrupted".into(),
            builders: vec![s.store.ensure_builder("b").await.unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let brid = requests[0].1;
    s.store.claim_buildrequests(master, &[brid]).await.unwrap();
    s.store
        .complete_buildrequests(master, &[brid], Results::Warnings)
        .await
        .unwrap();
    let selection =
        switchyard_master::store::Selection::id(switchyard_master::store::Table::Buildsets, bsid);
    let row = wait_for("the buildset to be completed", async || {
        let page = s.store.select_buildsets(&selection).await.unwrap();
        page.rows.into_iter().find(|r| r.complete)
    })
    .await;
    assert_eq!(row.results, Some(Results::Warnings.code()));
    let topic = format!("org.buildbot.mq.buildsets.{bsid}.complete");
    wait_for("buildsets.<id>.complete on the bus", async || {
        while let Ok(t) = bus.try_recv() {
            if t == topic {
                return Some(());
            }
        }
        None
    })
    .await;
}
