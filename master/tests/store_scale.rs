//! The store under the load several masters put on it: one build of a builder per worker
//! across masters, no SQLite transaction refused for a lock it could have waited for, and
//! the repair of buildsets whose requests all completed. Each scenario runs on SQLite and
//! on PostgreSQL (SWITCHYARD_TEST_POSTGRES), as in `store.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use switchyard_master::store::WorkerSlot;
use switchyard_master::{Results, RetryPolicy, Store, StoreError, StoreOptions};

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$scenario(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = super::TestDb::postgres().await;
                super::$scenario(&db).await;
            }
        }
    )*};
}

on_both_backends!(
    one_build_of_a_builder_per_worker_across_masters,
    concurrent_completions_need_no_lock_retries,
    heartbeat_repair_completes_finished_buildsets,
    claim_with_slot_takes_both_or_neither,
    a_build_ends_with_its_request_or_not_at_all,
);

/// A store that never retries: a transaction the database refuses fails the test.
async fn no_retry_store(db: &TestDb) -> Store {
    Store::connect_with(
        db.url(),
        StoreOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(30),
            retry: RetryPolicy {
                attempts: 1,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
            },
        },
    )
    .await
    .unwrap()
}

async fn one_build_of_a_builder_per_worker_across_masters(db: &TestDb) {
    let a = db.store().await;
    let b = db.store().await;
    let ma = a.register_master("a").await.unwrap();
    let mb = b.register_master("b").await.unwrap();
    let app = a.ensure_builder("app").await.unwrap();
    let docs = a.ensure_builder("docs").await.unwrap();
    let w = a.ensure_worker("w").await.unwrap();
    let (_, r1) = a.add_buildset("one", &[app, docs], 0).await.unwrap();
    let (_, r2) = a.add_buildset("two", &[app, docs], 0).await.unwrap();
    let (app1, docs1, app2) = (r1[0].1, r1[1].1, r2[0].1);

    // Two masters race for the worker (max_builds = 2) with requests of the same builder:
    // exactly one wins, though a slot is free.
    let (x, y) = tokio::join!(
        a.acquire_worker_slot(ma, w, 2, app1),
        b.acquire_worker_slot(mb, w, 2, app2)
    );
    let outcomes = [x.unwrap(), y.unwrap()];
    let taken: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            WorkerSlot::Taken(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(taken.len(), 1, "{outcomes:?}");
    assert!(
        outcomes.contains(&WorkerSlot::BuilderRunning),
        "{outcomes:?}"
    );
    let load = a.worker_load().await.unwrap();
    assert!(load.running.contains(&(w, app)));
    assert_eq!(load.slots.get(&w), Some(&1));

    // Another builder still gets the second slot: max_builds runs different builders at once.
    let docs_slot = match b.acquire_worker_slot(mb, w, 2, docs1).await.unwrap() {
        WorkerSlot::Taken(s) => s,
        other => panic!("docs refused: {other:?}"),
    };
    let lint = a.ensure_builder("lint").await.unwrap();
    let (_, r3) = a.add_buildset("three", &[lint], 0).await.unwrap();
    assert_eq!(
        b.acquire_worker_slot(mb, w, 2, r3[0].1).await.unwrap(),
        WorkerSlot::Full
    );

    // Releasing the app build's slot releases the builder: the other app request may run.
    let (holder, store, slot) = if matches!(outcomes[0], WorkerSlot::Taken(_)) {
        (ma, &a, taken[0])
    } else {
        (mb, &b, taken[0])
    };
    store.release_worker_slot(holder, w, slot).await.unwrap();
    assert!(matches!(
        a.acquire_worker_slot(ma, w, 2, app2).await.unwrap(),
        WorkerSlot::Taken(_)
    ));

    // A clean stop of b releases its docs slot and nothing of a's.
    b.deactivate_master(mb).await.unwrap();
    let load = a.worker_load().await.unwrap();
    assert!(!load.running.contains(&(w, docs)), "{load:?}");
    assert!(load.running.contains(&(w, app)), "{load:?}");
    let _ = docs_slot;
}

/// Two masters (two pools) complete 120 requests and their buildsets at once, 24 operations
/// in flight, with no retries allowed: every transaction that reads and then writes must
/// take its write lock up front (SQLite would otherwise refuse the upgrade with
/// SQLITE_BUSY, which its busy timeout does not cover).
async fn concurrent_completions_need_no_lock_retries(db: &TestDb) {
    let setup = db.store().await;
    let builder = setup.ensure_builder("b").await.unwrap();
    let mut requests = Vec::new();
    for _ in 0..60 {
        let (bsid, reqs) = setup
            .add_buildset("load", &[builder, builder], 0)
            .await
            .unwrap();
        requests.extend(reqs.into_iter().map(|(_, brid)| (bsid, brid)));
    }
    let masters = [no_retry_store(db).await, no_retry_store(db).await];
    let mut ids = Vec::new();
    for (i, m) in masters.iter().enumerate() {
        ids.push(m.register_master(&format!("m{i}")).await.unwrap());
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(24));
    let mut tasks = Vec::new();
    for (n, (bsid, brid)) in requests.iter().copied().enumerate() {
        let (store, me) = (masters[n % 2].clone(), ids[n % 2]);
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            store.claim_buildrequests(me, &[brid]).await?;
            store
                .complete_buildrequests(me, &[brid], Results::Success)
                .await?;
            store.maybe_complete_buildset(bsid).await
        }));
    }
    let mut completed = 0;
    for t in tasks {
        if t.await.unwrap().expect("no lock error").is_some() {
            completed += 1;
        }
    }
    assert_eq!(completed, 60, "each buildset completed exactly once");
}

async fn heartbeat_repair_completes_finished_buildsets(db: &TestDb) {
    let store = db.store().await;
    let me = store.register_master("m").await.unwrap();
    let builder = store.ensure_builder("b").await.unwrap();
    let (done, d) = store
        .add_buildset("done", &[builder, builder], 0)
        .await
        .unwrap();
    let (half, h) = store
        .add_buildset("half", &[builder, builder], 0)
        .await
        .unwrap();
    // As after a stop or crash between a request's completion and its buildset's: all of
    // `done`'s requests complete (one failed), one of `half`'s.
    let all: Vec<i64> = d.iter().chain(&h).map(|(_, r)| *r).collect();
    store.claim_buildrequests(me, &all).await.unwrap();
    store
        .complete_buildrequests(me, &[d[0].1, h[0].1], Results::Success)
        .await
        .unwrap();
    store
        .complete_buildrequests(me, &[d[1].1], Results::Failure)
        .await
        .unwrap();

    let repaired = store.complete_finished_buildsets(100).await.unwrap();
    assert_eq!(repaired, vec![(done, Results::Failure)]);
    assert!(store
        .complete_finished_buildsets(100)
        .await
        .unwrap()
        .is_empty());
    let _ = half;
}

/// The queue's claim: the request and a worker slot in one transaction. Two masters racing
/// for a request get one winner, and the loser's worker keeps its slot; a worker that is
/// busy leaves the request unclaimed; a repeated claim finds its own slot.
async fn claim_with_slot_takes_both_or_neither(db: &TestDb) {
    let a = db.store().await;
    let b = db.store().await;
    let ma = a.register_master("a").await.unwrap();
    let mb = b.register_master("b").await.unwrap();
    let app = a.ensure_builder("app").await.unwrap();
    let docs = a.ensure_builder("docs").await.unwrap();
    let w1 = a.ensure_worker("w1").await.unwrap();
    let w2 = a.ensure_worker("w2").await.unwrap();
    let (_, one) = a.add_buildset("one", &[app, docs], 0).await.unwrap();
    let (_, two) = a.add_buildset("two", &[app], 0).await.unwrap();
    let (r, r_docs, r2) = (one[0].1, one[1].1, two[0].1);

    let (x, y) = tokio::join!(
        a.claim_with_slot(ma, r, w1, 1),
        b.claim_with_slot(mb, r, w2, 1)
    );
    let (winner, worker, slot, loser_worker) = match (x, y) {
        (Ok(WorkerSlot::Taken(s)), Err(StoreError::AlreadyClaimed)) => (ma, w1, s, w2),
        (Err(StoreError::AlreadyClaimed), Ok(WorkerSlot::Taken(s))) => (mb, w2, s, w1),
        other => panic!("expected one winner and one AlreadyClaimed, got {other:?}"),
    };
    assert_eq!(a.claims().await.unwrap(), vec![(r, winner)]);
    assert_eq!(a.worker_slots_held(worker).await.unwrap(), 1);
    assert_eq!(
        a.worker_slots_held(loser_worker).await.unwrap(),
        0,
        "the loser took no slot"
    );

    // The same claim again (a retry after a lost acknowledgement) finds its slot.
    assert_eq!(
        a.claim_with_slot(winner, r, worker, 1).await.unwrap(),
        WorkerSlot::Taken(slot)
    );
    // The winner's worker is busy: a request of the same builder, then of another builder,
    // is refused and stays unclaimed.
    assert_eq!(
        a.claim_with_slot(winner, r2, worker, 2).await.unwrap(),
        WorkerSlot::BuilderRunning
    );
    assert_eq!(
        a.claim_with_slot(winner, r_docs, worker, 1).await.unwrap(),
        WorkerSlot::Full
    );
    let unclaimed: Vec<i64> = a
        .unclaimed_buildrequests(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(unclaimed, vec![r_docs, r2]);
    assert_eq!(a.claims().await.unwrap(), vec![(r, winner)]);

    // A completed request is never claimed again.
    a.complete_buildrequests(winner, &[r], Results::Success)
        .await
        .unwrap();
    a.release_worker_slot(winner, worker, slot).await.unwrap();
    assert!(matches!(
        a.claim_with_slot(ma, r, loser_worker, 1).await,
        Err(StoreError::AlreadyClaimed)
    ));
    assert_eq!(a.worker_slots_held(loser_worker).await.unwrap(), 0);
}

/// A build's end and its request's completion are one transaction (a master killed between
/// two would leave a finished build whose request runs again: a second SUCCESS build): done
/// together, repeatable, and refused together for a build its master no longer holds.
async fn a_build_ends_with_its_request_or_not_at_all(db: &TestDb) {
    let store = db.store().await;
    let m = store.register_master("m").await.unwrap();
    let app = store.ensure_builder("app").await.unwrap();
    let docs = store.ensure_builder("docs").await.unwrap();
    let w = store.ensure_worker("w").await.unwrap();
    let (bs, requests) = store.add_buildset("one", &[app, docs], 0).await.unwrap();
    let (r1, r2) = (requests[0].1, requests[1].1);
    store.claim_buildrequests(m, &[r1, r2]).await.unwrap();
    let (b1, _) = store.add_build(m, r1, Some(w), "starting").await.unwrap();
    let (b2, _) = store.add_build(m, r2, Some(w), "starting").await.unwrap();

    // Both at once; the buildset waits for its other request. A repeat (a retried commit)
    // succeeds and changes nothing.
    for _ in 0..2 {
        let set = store
            .finish_build_and_request(m, b1, "done", r1, bs, Results::Success)
            .await
            .unwrap();
        assert_eq!(set, None);
    }
    let build = store.get_build(b1).await.unwrap().unwrap();
    assert_eq!(
        (build.results, build.state_string.as_str()),
        (Some(Results::Success), "done")
    );
    assert!(store.get_buildrequest(r1).await.unwrap().unwrap().complete);

    // The master restarts (its previous life is cleaned up: b2 ends RETRY, r2 is released):
    // the old build can neither finish nor complete the request.
    store.deactivate_master(m).await.unwrap();
    assert!(store
        .finish_build_and_request(m, b2, "done", r2, bs, Results::Success)
        .await
        .is_err());
    assert_eq!(store.register_master("m").await.unwrap(), m);
    assert!(matches!(
        store
            .finish_build_and_request(m, b2, "done", r2, bs, Results::Success)
            .await,
        Err(StoreError::NotClaimed { .. })
    ));
    assert_eq!(
        store.get_build(b2).await.unwrap().unwrap().results,
        Some(Results::Retry)
    );
    let r2_row = store.get_buildrequest(r2).await.unwrap().unwrap();
    assert!(!r2_row.complete && r2_row.claimed_by_masterid.is_none());

    // The request runs again, and its end completes the buildset.
    store.claim_buildrequests(m, &[r2]).await.unwrap();
    let (b3, _) = store.add_build(m, r2, Some(w), "starting").await.unwrap();
    let set = store
        .finish_build_and_request(m, b3, "done", r2, bs, Results::Failure)
        .await
        .unwrap();
    assert_eq!(set, Some(Results::Failure));
}
