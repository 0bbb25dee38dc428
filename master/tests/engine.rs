//! The master engine in-process: a router with the master's authenticator and guard, a
//! running [`Master`], and scripted workers joined as real (untrusted) WAMP sessions with the
//! worker role. What a user would check: forced builds end with the right result, logs hold
//! the output, the bus carries Buildbot's routing keys, a lost worker's build is retried and
//! runs again, a stopped build is cancelled, changes trigger the matching schedulers, and
//! nobody but a master may touch a worker's procedures.
//!
//! The real worker process and multi-process masters are tested at the workspace level
//! (tests/master_*.rs); these tests pin the engine's decisions.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_master::auth::{BusTrust, MasterAuthenticator, WorkerGuard, WORKER_ROLE};
use switchyard_master::config::MasterConfig;
use switchyard_master::control::{Control, ControlError, ForceRequest, NewChange};
use switchyard_master::engine::{Master, MasterOptions};
use switchyard_master::{Results, Store};
use switchyard_router::auth::AllowAll;
use switchyard_router::config::{RealmConfig, RouterConfig};
use switchyard_router::wire::{code, Dict, Message, Payload, Value};
use switchyard_router::Router;
use tokio::sync::mpsc;

const CONFIG: &str = r#"
    realm = "buildbot"
    heartbeat_interval_s = 0.5
    expiry_timeout_s = 5
    poll_interval_s = 0.2
    [[workers]]
    name = "w1"
    password = "pw1"
    [[workers]]
    name = "w2"
    password = "pw2"
    [[builders]]
    name = "b"
    workers = ["w1", "w2"]
    [[builders.steps]]
    name = "first"
    shell = "ok"
    [[builders.steps]]
    name = "second"
    shell = "ok"
    [[builders]]
    name = "failing"
    workers = ["w1"]
    [[builders.steps]]
    name = "breaks"
    shell = "fail"
    [[builders.steps]]
    name = "never"
    shell = "ok"
    [[builders]]
    name = "slow"
    workers = ["w1"]
    [[builders.steps]]
    name = "hangs"
    shell = "hang"
    [[builders]]
    name = "sleepy"
    workers = ["w1"]
    [[builders.steps]]
    name = "naps"
    shell = "sleep"
    [[schedulers]]
    name = "force"
    type = "force"
    builders = ["b", "failing", "slow", "sleepy"]
    [[schedulers]]
    name = "on-main"
    type = "change"
    branch = "main"
    builders = ["b"]
"#;

struct Setup {
    router: Router,
    store: Store,
    master: Option<Master>,
    control: Arc<dyn Control>,
    _db: common::TestDb,
}

async fn setup() -> Setup {
    let db = common::TestDb::sqlite().await;
    let store = Store::connect(db.url()).await.unwrap();
    let config: MasterConfig = toml::from_str(CONFIG).unwrap();
    config.validate().unwrap();
    let router = Router::with_auth(
        RouterConfig {
            realms: vec![RealmConfig::new("buildbot")],
            ..Default::default()
        },
        Arc::new(MasterAuthenticator::new(
            "buildbot",
            [("w1", "pw1"), ("w2", "pw2")],
        )),
        Arc::new(WorkerGuard::new(
            Arc::new(AllowAll),
            "buildbot",
            BusTrust::default(),
        )),
    );
    let master = Master::start(
        &router,
        Arc::new(config),
        store.clone(),
        MasterOptions {
            name: "m1".into(),
            workers_anywhere: false,
            peer_urls: Arc::new(|| vec!["ws://127.0.0.1:1/ws".to_string()]),
        },
    )
    .await
    .unwrap();
    let control: Arc<dyn Control> = master.control();
    Setup {
        router,
        store,
        master: Some(master),
        control,
        _db: db,
    }
}

/// What a scripted worker saw.
#[derive(Debug)]
enum Seen {
    Run(String),
    Interrupted,
    Reconnect(Vec<String>),
}

/// A worker joined as an untrusted session with the worker role: `run` answers by the
/// command's text: `ok` prints two lines and exits 0, `fail` exits 1, `hang` waits for an
/// interrupt (then answers canceled).
fn start_worker(
    router: &Router,
    name: &str,
) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<Seen>) {
    let mut s = router
        .connect_local_untrusted("buildbot", name, WORKER_ROLE)
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        for (i, p) in ["run", "info", "reconnect"].iter().enumerate() {
            s.send(Message::Register {
                request: i as u64 + 1,
                options: Dict::new(),
                procedure: format!("switchyard.worker.{name}.{p}"),
            });
        }
        let mut registrations = BTreeMap::new();
        while let Some(msg) = s.recv().await {
            match msg {
                Message::Registered {
                    request,
                    registration,
                } => {
                    registrations.insert(registration, request);
                }
                Message::Invocation {
                    request,
                    registration,
                    payload,
                    ..
                } => {
                    if registrations.get(&registration) == Some(&2) {
                        let mut k = Dict::new();
                        k.insert("name".into(), Value::from(name.as_str()));
                        s.send(yield_msg(request, false, k));
                        continue;
                    }
                    if registrations.get(&registration) == Some(&3) {
                        let urls = payload
                            .kwargs()
                            .and_then(|k| k.get("urls"))
                            .and_then(Value::as_list)
                            .map(|l| {
                                l.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default();
                        let _ = tx.send(Seen::Reconnect(urls));
                        s.send(yield_msg(request, false, Dict::new()));
                        continue;
                    }
                    let cmd = payload
                        .kwargs()
                        .and_then(|k| k.get("command"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send(Seen::Run(cmd.clone()));
                    match cmd.as_str() {
                        "hang" => {
                            // Wait for the INTERRUPT (handled below).
                        }
                        "sleep" => {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            let mut done = Dict::new();
                            done.insert("rc".into(), Value::Int(0));
                            s.send(yield_msg(request, false, done));
                        }
                        other => {
                            let mut out = Dict::new();
                            out.insert("stream".into(), Value::from("stdout"));
                            out.insert(
                                "data".into(),
                                Value::from(format!("running {other}\npartial ")),
                            );
                            s.send(yield_msg(request, true, out));
                            let mut out = Dict::new();
                            out.insert("stream".into(), Value::from("stdout"));
                            out.insert("data".into(), Value::from("line\n"));
                            s.send(yield_msg(request, true, out));
                            let mut done = Dict::new();
                            done.insert("rc".into(), Value::Int(if other == "ok" { 0 } else { 1 }));
                            done.insert("timed_out".into(), Value::Bool(false));
                            s.send(yield_msg(request, false, done));
                        }
                    }
                }
                Message::Interrupt { request, .. } => {
                    let _ = tx.send(Seen::Interrupted);
                    s.send(Message::Error {
                        request_type: code::INVOCATION,
                        request,
                        details: Dict::new(),
                        error: "wamp.error.canceled".into(),
                        payload: Payload::default(),
                    });
                }
                _ => {}
            }
        }
    });
    (task, rx)
}

fn yield_msg(request: u64, progress: bool, kwargs: Dict) -> Message {
    let mut options = Dict::new();
    if progress {
        options.insert("progress".into(), Value::Bool(true));
    }
    Message::Yield {
        request,
        options,
        payload: Payload::new(Vec::new(), kwargs),
    }
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The builds of a request, as `(id, results)`.
async fn builds_of(store: &Store, brid: i64) -> Vec<(i64, Option<Results>)> {
    let mut out = Vec::new();
    for id in 1..200 {
        match store.get_build(id).await.unwrap() {
            Some(b) if b.buildrequestid == brid => out.push((b.id, b.results)),
            Some(_) => {}
            None => break,
        }
    }
    out
}

async fn request_result(store: &Store, brid: i64) -> Option<Results> {
    let r = store.get_buildrequest(brid).await.unwrap().unwrap();
    r.complete.then(|| r.results.unwrap())
}

fn force(builder: &str) -> ForceRequest {
    ForceRequest {
        scheduler: "force".into(),
        builder_names: Some(vec![builder.into()]),
        reason: Some("test".into()),
        owner: Some("tester".into()),
        properties: [("branch".to_string(), json!("main"))]
            .into_iter()
            .collect(),
    }
}

/// A session that records every EVENT on the Buildbot bus with its topic.
fn watch_bus(router: &Router) -> mpsc::UnboundedReceiver<String> {
    let mut s = router
        .connect_local_untrusted("buildbot", "watcher", "anonymous")
        .unwrap();
    let mut options = Dict::new();
    options.insert("match".into(), Value::from("prefix"));
    s.send(Message::Subscribe {
        request: 1,
        options,
        topic: "org.buildbot.mq.".into(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = s.recv().await {
            if let Message::Event { details, .. } = m {
                if let Some(t) = details.get("topic").and_then(Value::as_str) {
                    let _ = tx.send(t.to_owned());
                }
            }
        }
    });
    rx
}

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
