//! The master engine in-process, for the `engine*.rs` tests: a router with the master's
//! authenticator and guard, a running [`Master`] on a fresh SQLite store, scripted workers
//! joined as real (untrusted) WAMP sessions with the worker role, a bus watcher, and waits on
//! the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_master::auth::{BusTrust, MasterAuthenticator, WorkerGuard, WORKER_ROLE};
use switchyard_master::config::MasterConfig;
use switchyard_master::control::{Control, ForceRequest};
use switchyard_master::engine::{Master, MasterOptions};
use switchyard_master::{Results, Store};
use switchyard_router::auth::AllowAll;
use switchyard_router::config::{RealmConfig, RouterConfig};
use switchyard_router::wire::{code, Dict, Message, Payload, Value};
use switchyard_router::Router;
use tokio::sync::mpsc;

/// Two workers and builders whose scripted steps succeed, fail, hang or sleep; a force
/// scheduler for all of them and a change scheduler on `main` for `b`.
pub const CONFIG: &str = r#"
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

/// A router with the master's authenticator and guard, and master `m1` running [`CONFIG`] on a
/// fresh SQLite store.
pub struct Setup {
    pub router: Router,
    pub store: Store,
    pub master: Option<Master>,
    pub control: Arc<dyn Control>,
    _db: super::TestDb,
}

pub async fn setup() -> Setup {
    let db = super::TestDb::sqlite().await;
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
pub enum Seen {
    Run(String),
    Interrupted,
    Reconnect(Vec<String>),
}

/// A worker joined as an untrusted session with the worker role: `run` answers by the
/// command's text: `ok` prints two lines and exits 0, `fail` exits 1, `hang` waits for an
/// interrupt (then answers canceled).
pub fn start_worker(
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

/// Polls `f` every 50 ms until it answers, for at most 20 s.
pub async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
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
pub async fn builds_of(store: &Store, brid: i64) -> Vec<(i64, Option<Results>)> {
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

/// A request's results once it is complete.
pub async fn request_result(store: &Store, brid: i64) -> Option<Results> {
    let r = store.get_buildrequest(brid).await.unwrap().unwrap();
    r.complete.then(|| r.results.unwrap())
}

/// A force request for `builder` on the `force` scheduler, on branch `main`.
pub fn force(builder: &str) -> ForceRequest {
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
pub fn watch_bus(router: &Router) -> mpsc::UnboundedReceiver<String> {
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
