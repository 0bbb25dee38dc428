//! The state store and the claim protocol on both backends: every scenario runs once on a
//! fresh SQLite file (`<scenario>::sqlite`) and once on a fresh PostgreSQL database
//! (`<scenario>::postgres`, which needs SWITCHYARD_TEST_POSTGRES).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use switchyard_master::{
    BuildRequestId, MasterId, Results, RetryPolicy, Store, StoreError, StoreOptions,
};

/// Runs an `async fn(&TestDb)` scenario as two tests, one per backend.
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
    migrations_are_idempotent,
    claims_are_all_or_nothing_and_owned,
    two_masters_race_for_200_requests,
    three_masters_race_for_200_requests,
    expiry_releases_claims_and_retries_builds,
    concurrent_expiry_has_one_winner,
    clean_stop_releases_leftover_claims,
    buildset_properties_are_stored_whole,
);

/// A clock the test moves by hand, shared by the stores that should agree on the time.
fn manual_clock(start: i64) -> (Arc<AtomicI64>, switchyard_master::Clock) {
    let t = Arc::new(AtomicI64::new(start));
    let c = t.clone();
    (t, Arc::new(move || c.load(Ordering::SeqCst)))
}

/// A buildset's properties are written in one statement per 500 and read back as given:
/// none, a few, and more than one statement's worth.
async fn buildset_properties_are_stored_whole(db: &TestDb) {
    use switchyard_master::store::NewBuildset;
    let store = db.store().await;
    let builder = store.ensure_builder("b").await.unwrap();
    for count in [0usize, 3, 600] {
        let properties: BTreeMap<String, (serde_json::Value, String)> = (0..count)
            .map(|i| {
                let value = serde_json::json!({"n": i, "s": format!("value {i}")});
                (format!("p{i:04}"), (value, format!("source {i}")))
            })
            .collect();
        let (bsid, requests) = store
            .queue_buildset(&NewBuildset {
                reason: format!("{count} properties"),
                builders: vec![builder],
                properties: properties.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(store.buildset_properties(bsid).await.unwrap(), properties);
    }
}

async fn migrations_are_idempotent(db: &TestDb) {
    let first = db.store().await;
    assert_eq!(first.schema_version().await.unwrap(), 3);
    let master = first.register_master("host:/basedir").await.unwrap();
    first.migrate().await.unwrap();
    first.migrate().await.unwrap();

    // A second start (new pool) migrates again: nothing changes, nothing is lost.
    let second = db.store().await;
    assert_eq!(second.schema_version().await.unwrap(), 3);
    assert_eq!(
        second.register_master("host:/basedir").await.unwrap(),
        master
    );
    assert_eq!(second.master_active(master).await.unwrap(), Some(true));
}

async fn claims_are_all_or_nothing_and_owned(db: &TestDb) {
    let store = db.store().await;
    let a = store.register_master("a").await.unwrap();
    let b = store.register_master("b").await.unwrap();
    let builder = store.ensure_builder("linux").await.unwrap();
    assert_eq!(store.ensure_builder("linux").await.unwrap(), builder);
    let (_, reqs) = store
        .add_buildset("test", &[builder, builder, builder], 0)
        .await
        .unwrap();
    let [r1, r2, r3] = [reqs[0].1, reqs[1].1, reqs[2].1];

    store.claim_buildrequests(a, &[r1, r2]).await.unwrap();
    // b loses on r2, so it must not get r3 either.
    assert!(matches!(
        store.claim_buildrequests(b, &[r2, r3]).await,
        Err(StoreError::AlreadyClaimed)
    ));
    let r3_row = store.get_buildrequest(r3).await.unwrap().unwrap();
    assert_eq!(r3_row.claimed_by_masterid, None);
    let unclaimed: Vec<_> = store
        .unclaimed_buildrequests(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(unclaimed, [r3]);

    // Claiming what you hold again is fine (a retry after a lost commit acknowledgement).
    store.claim_buildrequests(a, &[r1]).await.unwrap();

    // Only the holder completes.
    assert!(matches!(
        store.complete_buildrequests(b, &[r1], Results::Success).await,
        Err(StoreError::NotClaimed { masterid }) if masterid == b
    ));
    store
        .complete_buildrequests(a, &[r1], Results::Success)
        .await
        .unwrap();
    store
        .complete_buildrequests(a, &[r1], Results::Success)
        .await
        .unwrap();
    let r1_row = store.get_buildrequest(r1).await.unwrap().unwrap();
    assert!(r1_row.complete);
    assert_eq!(r1_row.results, Some(Results::Success));
    assert_eq!(r1_row.claimed_by_masterid, Some(a));

    // Unclaim releases only incomplete requests the caller holds.
    assert_eq!(
        store.unclaim_buildrequests(b, &[r1, r2]).await.unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        store.unclaim_buildrequests(a, &[r1, r2]).await.unwrap(),
        [r2]
    );
    // A completed request can never be claimed again.
    assert!(matches!(
        store.claim_buildrequests(b, &[r1]).await,
        Err(StoreError::AlreadyClaimed)
    ));
    store.claim_buildrequests(b, &[r2, r3]).await.unwrap();
    assert_eq!(store.claims().await.unwrap(), [(r1, a), (r2, b), (r3, b)]);

    // A build needs the claim.
    assert!(matches!(
        store.add_build(a, r2, None, "starting").await,
        Err(StoreError::NotClaimed { .. })
    ));
    let (build, number) = store.add_build(b, r2, None, "starting").await.unwrap();
    assert_eq!(number, 1);
    let (r3_build, number) = store.add_build(b, r3, None, "starting").await.unwrap();
    assert_eq!(number, 2);
    assert_eq!(
        store.add_build(b, r3, None, "starting").await.unwrap(),
        (r3_build, 2),
        "asking again returns the unfinished build"
    );
    assert!(matches!(
        store.claim_buildrequests(a, &[r3 + 1000]).await,
        Err(StoreError::UnknownBuildRequest)
    ));
    assert!(matches!(
        store.finish_build(a, build, Results::Failure).await,
        Err(StoreError::NotClaimed { .. })
    ));
    store
        .finish_build(b, build, Results::Failure)
        .await
        .unwrap();
    let row = store.get_build(build).await.unwrap().unwrap();
    assert_eq!(row.results, Some(Results::Failure));
    assert!(row.complete_at.is_some());
}

async fn two_masters_race_for_200_requests(db: &TestDb) {
    race(db, 2).await;
}

async fn three_masters_race_for_200_requests(db: &TestDb) {
    race(db, 3).await;
}

/// `masters` masters, each with its own pool, claim from one queue of 200 requests at the
/// same time, in overlapping batches of 1 to 4, until the queue is empty.
async fn race(db: &TestDb, masters: usize) {
    let setup = db.store().await;
    let b1 = setup.ensure_builder("b1").await.unwrap();
    let b2 = setup.ensure_builder("b2").await.unwrap();
    let mut all = BTreeSet::new();
    for _ in 0..100 {
        let (_, reqs) = setup.add_buildset("race", &[b1, b2], 0).await.unwrap();
        all.extend(reqs.into_iter().map(|(_, brid)| brid));
    }
    assert_eq!(all.len(), 200);

    let start = Arc::new(tokio::sync::Barrier::new(masters));
    let mut tasks = Vec::new();
    for i in 0..masters {
        let store = db.store().await;
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let me = store.register_master(&format!("racer-{i}")).await.unwrap();
            start.wait().await;
            let (mut won, mut lost) = (Vec::new(), 0);
            let mut round = 0usize;
            loop {
                let queue = store.unclaimed_buildrequests(None, 8).await.unwrap();
                if queue.is_empty() {
                    break;
                }
                // Masters look at the same head of the queue, so batches overlap: some
                // collide entirely, some partly (and must then claim nothing).
                let size = 1 + (round + i) % 4;
                let from = (i * 2) % queue.len();
                let batch: Vec<BuildRequestId> = queue
                    .iter()
                    .cycle()
                    .skip(from)
                    .take(size.min(queue.len()))
                    .map(|r| r.id)
                    .collect();
                round += 1;
                match store.claim_buildrequests(me, &batch).await {
                    Ok(()) => won.extend(batch),
                    Err(StoreError::AlreadyClaimed) => lost += 1,
                    Err(e) => panic!("master {i}: {e}"),
                }
            }
            // Completing proves the claims are really this master's.
            store
                .complete_buildrequests(me, &won, Results::Success)
                .await
                .unwrap();
            (me, won, lost)
        }));
    }

    let mut winner: BTreeMap<BuildRequestId, MasterId> = BTreeMap::new();
    let mut lost_total = 0;
    for task in tasks {
        let (me, won, lost) = task.await.unwrap();
        eprintln!("master {me}: won {} requests, lost {lost} races", won.len());
        lost_total += lost;
        for brid in won {
            if let Some(other) = winner.insert(brid, me) {
                panic!("request {brid} claimed by both master {other} and master {me}");
            }
        }
    }
    assert_eq!(winner.keys().copied().collect::<BTreeSet<_>>(), all);
    let claims: BTreeMap<_, _> = setup.claims().await.unwrap().into_iter().collect();
    assert_eq!(
        claims, winner,
        "the database agrees on who won each request"
    );
    assert!(setup
        .unclaimed_buildrequests(None, 1)
        .await
        .unwrap()
        .is_empty());
    eprintln!("{lost_total} lost races in all");
}

async fn expiry_releases_claims_and_retries_builds(db: &TestDb) {
    let (time, clock) = manual_clock(1_000_000);
    let a_store = db.store().await.with_clock(clock.clone());
    let b_store = db.store().await.with_clock(clock.clone());
    let a = a_store.register_master("a").await.unwrap();
    let b = b_store.register_master("b").await.unwrap();
    let builder = a_store.ensure_builder("linux").await.unwrap();
    let worker = a_store.ensure_worker("w1").await.unwrap();
    a_store.worker_connected(a, worker).await.unwrap();
    let (_, reqs) = a_store
        .add_buildset("test", &[builder; 4], 0)
        .await
        .unwrap();
    let [r1, r2, r3, r4] = [reqs[0].1, reqs[1].1, reqs[2].1, reqs[3].1];

    // a: r1 building, r2 built and complete, r3 claimed but not started. b: r4 building.
    a_store.claim_buildrequests(a, &[r1, r2, r3]).await.unwrap();
    let (running, _) = a_store
        .add_build(a, r1, Some(worker), "building")
        .await
        .unwrap();
    let (done, _) = a_store
        .add_build(a, r2, Some(worker), "building")
        .await
        .unwrap();
    a_store
        .finish_build(a, done, Results::Success)
        .await
        .unwrap();
    a_store
        .complete_buildrequests(a, &[r2], Results::Success)
        .await
        .unwrap();
    b_store.claim_buildrequests(b, &[r4]).await.unwrap();
    let (b_running, _) = b_store.add_build(b, r4, None, "building").await.unwrap();

    // Within the timeout nobody is expired.
    time.fetch_add(30, Ordering::SeqCst);
    assert!(b_store
        .expire_masters(b, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());

    // a goes silent; b keeps heartbeating and expires it.
    time.fetch_add(40, Ordering::SeqCst);
    b_store.heartbeat(b).await.unwrap();
    time.fetch_add(40, Ordering::SeqCst);
    let expiry = b_store
        .expire_masters(b, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(expiry.masters, [a]);
    assert_eq!(expiry.released, [r1, r3]);
    assert_eq!(expiry.retried_builds, [running]);
    // Idempotent: nothing left to expire.
    assert!(b_store
        .expire_masters(b, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());

    assert_eq!(b_store.master_active(a).await.unwrap(), Some(false));
    let retried = b_store.get_build(running).await.unwrap().unwrap();
    assert_eq!(retried.results, Some(Results::Retry));
    assert!(retried.complete_at.is_some());
    let finished = b_store.get_build(done).await.unwrap().unwrap();
    assert_eq!(finished.results, Some(Results::Success));
    let untouched = b_store.get_build(b_running).await.unwrap().unwrap();
    assert_eq!(untouched.results, None);
    assert_eq!(
        b_store.worker_connected_to(worker).await.unwrap(),
        Vec::<i64>::new()
    );
    let r2_row = b_store.get_buildrequest(r2).await.unwrap().unwrap();
    assert!(r2_row.complete);
    assert_eq!(
        r2_row.claimed_by_masterid,
        Some(a),
        "completed work keeps its record"
    );

    // The expired master learns it was expired and can no longer act on its old claims.
    assert!(matches!(
        a_store.heartbeat(a).await,
        Err(StoreError::MasterInactive { masterid }) if masterid == a
    ));
    assert!(matches!(
        a_store
            .complete_buildrequests(a, &[r1], Results::Success)
            .await,
        Err(StoreError::MasterInactive { .. })
    ));
    assert!(matches!(
        a_store.finish_build(a, running, Results::Success).await,
        Err(StoreError::MasterInactive { .. })
    ));

    // The released requests are claimable again, and run as new builds.
    let queue: Vec<_> = b_store
        .unclaimed_buildrequests(Some(builder), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(queue, [r1, r3]);
    b_store.claim_buildrequests(b, &[r1, r3]).await.unwrap();
    let (rerun, number) = b_store.add_build(b, r1, None, "building").await.unwrap();
    assert_eq!(number, 4, "build numbers keep counting per builder");
    b_store
        .finish_build(b, rerun, Results::Success)
        .await
        .unwrap();
    b_store
        .complete_buildrequests(b, &[r1], Results::Success)
        .await
        .unwrap();

    // a comes back: registering re-activates it, but what it lost stays lost.
    assert_eq!(a_store.register_master("a").await.unwrap(), a);
    assert!(matches!(
        a_store.claim_buildrequests(a, &[r1]).await,
        Err(StoreError::AlreadyClaimed)
    ));
    assert!(matches!(
        a_store.claim_buildrequests(a, &[r3]).await,
        Err(StoreError::AlreadyClaimed)
    ));
}

async fn concurrent_expiry_has_one_winner(db: &TestDb) {
    let (time, clock) = manual_clock(2_000_000);
    let setup = db.store().await.with_clock(clock.clone());
    let dead = setup.register_master("dead").await.unwrap();
    let builder = setup.ensure_builder("b").await.unwrap();
    let (_, reqs) = setup.add_buildset("x", &[builder; 20], 0).await.unwrap();
    let brids: Vec<_> = reqs.iter().map(|r| r.1).collect();
    setup.claim_buildrequests(dead, &brids).await.unwrap();

    let mut live = Vec::new();
    for i in 0..3 {
        let store = db.store().await.with_clock(clock.clone());
        let id = store.register_master(&format!("live-{i}")).await.unwrap();
        live.push((store, id));
    }
    time.fetch_add(600, Ordering::SeqCst);
    for (store, id) in &live {
        store.heartbeat(*id).await.unwrap();
    }
    let start = Arc::new(tokio::sync::Barrier::new(live.len()));
    let tasks: Vec<_> = live
        .into_iter()
        .map(|(store, id)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                store
                    .expire_masters(id, Duration::from_secs(60))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut expiries = Vec::new();
    for t in tasks {
        let e = t.await.unwrap();
        if !e.is_empty() {
            expiries.push(e);
        }
    }
    assert_eq!(
        expiries.len(),
        1,
        "exactly one master expires the dead one: {expiries:?}"
    );
    assert_eq!(expiries[0].masters, [dead]);
    assert_eq!(expiries[0].released, brids);
    assert!(setup.claims().await.unwrap().is_empty());
}

async fn clean_stop_releases_leftover_claims(db: &TestDb) {
    let store = db.store().await;
    let m = store.register_master("stopping").await.unwrap();
    let builder = store.ensure_builder("b").await.unwrap();
    let (_, reqs) = store.add_buildset("x", &[builder; 2], 0).await.unwrap();
    let (r1, r2) = (reqs[0].1, reqs[1].1);
    store.claim_buildrequests(m, &[r1, r2]).await.unwrap();
    let (build, _) = store.add_build(m, r1, None, "building").await.unwrap();
    store
        .finish_build(m, build, Results::Success)
        .await
        .unwrap();
    store
        .complete_buildrequests(m, &[r1], Results::Success)
        .await
        .unwrap();

    let stopped = store.deactivate_master(m).await.unwrap();
    assert_eq!(stopped.masters, [m]);
    assert_eq!(stopped.released, [r2]);
    assert!(stopped.retried_builds.is_empty());
    assert_eq!(store.master_active(m).await.unwrap(), Some(false));
    assert!(store.deactivate_master(m).await.unwrap().is_empty());
    assert!(matches!(
        store.claim_buildrequests(m, &[r2]).await,
        Err(StoreError::MasterInactive { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_after_bounded_retries() {
    // Nothing listens on port 1: every connection attempt is refused.
    let started = std::time::Instant::now();
    let err = Store::connect_with(
        "postgres://postgres@127.0.0.1:1/test",
        StoreOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(300),
            retry: RetryPolicy {
                attempts: 3,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(50),
            },
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                op: "connect",
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("database unavailable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn unsupported_url_is_rejected() {
    assert!(matches!(
        Store::connect("mysql://127.0.0.1/x").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

#[tokio::test]
async fn default_store_lives_in_the_data_folder() {
    let dir = std::env::temp_dir().join(format!("switchyard-master-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_data_dir(&dir.join("nested")).await.unwrap();
    let m = store.register_master("solo").await.unwrap();
    store.close().await;
    assert!(dir.join("nested/state.sqlite").exists());
    let again = Store::open_data_dir(&dir.join("nested")).await.unwrap();
    assert_eq!(again.register_master("solo").await.unwrap(), m);
    again.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_terminated_connections() {
    use sqlx::{Connection, Executor};
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let master = store.register_master("m").await.unwrap();
    let TestDb::Postgres { admin, name, .. } = &db else {
        unreachable!()
    };
    // Kill every server process serving the store's pool, as a PostgreSQL restart would.
    let mut conn = sqlx::AnyConnection::connect(admin).await.unwrap();
    let killed = conn
        .fetch_all(
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            .as_str(),
        )
        .await
        .unwrap();
    assert!(!killed.is_empty(), "the store had open connections to kill");
    conn.close().await.unwrap();
    store.heartbeat(master).await.unwrap();
    let builder = store.ensure_builder("b").await.unwrap();
    let (_, reqs) = store.add_buildset("x", &[builder], 0).await.unwrap();
    store
        .claim_buildrequests(master, &[reqs[0].1])
        .await
        .unwrap();
    store.close().await;
}

/// A TCP relay to PostgreSQL that the test can cut and restore, to lose the database
/// connection from under an open store.
struct Relay {
    port: u16,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: String, port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = upstream.clone();
        let task = tokio::spawn(async move {
            // Owning the connection tasks here means aborting this task cuts them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay {
            port,
            upstream,
            task: Some(task),
        }
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restore(&mut self) {
        *self = Relay::start(self.upstream.clone(), self.port).await;
    }
}

/// `host:port` of a postgres:// URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host = authority.rsplit('@').next().unwrap();
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_connection_is_retried_then_reported() {
    let db = TestDb::postgres().await;
    let mut relay = Relay::start(host_port(db.url()), 0).await;
    let url = db.url().replacen(
        &host_port(db.url()),
        &format!("127.0.0.1:{}", relay.port),
        1,
    );
    let store = Store::connect_with(
        &url,
        StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_millis(500),
            retry: RetryPolicy {
                attempts: 4,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(200),
            },
        },
    )
    .await
    .unwrap();
    let master = store.register_master("m").await.unwrap();

    // Lost for good: a bounded number of tries, then a clear error.
    relay.cut().await;
    let err = store.heartbeat(master).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                op: "heartbeat",
                attempts: 4,
                ..
            }
        ),
        "{err}"
    );

    // Lost for a moment: the retries ride it out and the operation succeeds.
    let pending = tokio::spawn({
        let store = store.clone();
        async move { store.heartbeat(master).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.restore().await;
    pending.await.unwrap().unwrap();
    store.close().await;
    relay.cut().await;
}
