//! The running master: one per `switchyard start`, embedded in the router process and acting
//! through in-process WAMP sessions (no socket, no serialization).
//!
//! Tasks, all stopped by one cancellation token:
//! - **heartbeat**: records this master alive, expires silent masters (releasing their
//!   claims and worker slots, retrying their builds, publishing `unclaimed`), and runs the
//!   periodic schedulers this master owns;
//! - **queue**: woken by bus events (`buildrequests..new|unclaimed`, a worker appearing, a
//!   build ending) or every `poll_interval`, it matches unclaimed requests for builders this
//!   master runs to idle workers: take a worker slot (database-arbitrated, see
//!   `store::running`), claim the request (the claim protocol), start the build;
//! - **presence**: watches this node's registrations of `switchyard.worker.<name>.run` and
//!   records which workers are connected here (`connected_workers`), publishing
//!   `workers.<id>.connected|disconnected`;
//! - **control**: listens for `control.builds.<id>.stop` so a stop sent to any master reaches
//!   the one running the build;
//! - one task per running build (`build`).
//!
//! Any master can run a build on any worker in the mesh: workers are WAMP callees, so the
//! call reaches them wherever they are connected.

mod build;
mod control;
pub mod events;
mod git;
pub mod secrets;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use switchyard_router::logsafe::Trunc;
use switchyard_router::service::{ServiceClient, SubscriptionEvent};
use switchyard_router::wire::{Dict, Value};
use switchyard_router::Router;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{worker_procedure, BusTrust, WORKER_NAMESPACE};
use crate::config::{BuilderConfig, MasterConfig, SchedulerKind};
use crate::store::{
    BuildId, BuildRequest, BuilderId, MasterId, NewBuildset, SchedulerId, Store, WorkerId,
    WorkerSlot,
};
use crate::StoreError;
use events::{to_json, Bus};

pub use control::MasterControl;

/// Why a master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot join realm {realm:?} on the router: {reason}")]
    Realm { realm: String, reason: String },
    #[error("cannot subscribe to {topic}: {reason}")]
    Subscribe { topic: String, reason: String },
    #[error(
        "a master named {name:?} is running (it heartbeats in the database): give this one \
         another name (--master-name, [master] name) or stop the other first"
    )]
    NameInUse { name: String },
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a master is started.
pub struct MasterOptions {
    /// This master's name in the `masters` table.
    pub name: String,
    /// Whether workers connected to other masters' routers are reachable (the router is
    /// part of a mesh); without a mesh only this router's workers are used.
    pub workers_anywhere: bool,
    /// WebSocket URLs of the live peer nodes, to which a graceful stop redirects this
    /// node's workers.
    pub peer_urls: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
}

/// Where a master is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// Graceful stop under way: no new claims, running builds finish, then workers move.
    Draining,
    Stopped,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Running => "running",
            Lifecycle::Draining => "draining",
            Lifecycle::Stopped => "stopped",
        }
    }
}

/// A build this master is running, as the stop path sees it.
struct RunningBuild {
    stop: CancellationToken,
    /// Why it was stopped (shown as its state).
    reason: Mutex<Option<String>>,
}

/// What every task of the master shares.
pub(crate) struct Inner {
    config: Arc<MasterConfig>,
    store: Store,
    bus: Bus,
    /// Whose control messages and events this master acts on (docs/security.md).
    trust: BusTrust,
    client: Arc<ServiceClient>,
    master: MasterId,
    name: String,
    builders_by_id: HashMap<BuilderId, usize>,
    worker_ids: HashMap<String, WorkerId>,
    /// Each configured worker's `max_builds`, by id (the queue looks it up per candidate).
    worker_max: HashMap<WorkerId, u32>,
    scheduler_ids: HashMap<String, SchedulerId>,
    running: Mutex<HashMap<BuildId, Arc<RunningBuild>>>,
    /// Builds between "this master may claim" and the end of their run, so a graceful
    /// stop never misses one that was being claimed or inserted when draining began.
    starting: Arc<std::sync::atomic::AtomicUsize>,
    /// Workers whose last build could not reach them: skipped until the instant passes, so
    /// a worker that vanished does not turn the queue into a retry loop.
    quarantine: Mutex<HashMap<WorkerId, Instant>>,
    wake: Notify,
    shutdown: CancellationToken,
    /// Whether workers connected to other masters' routers are reachable (a mesh joins the
    /// routers); without one, this master uses the workers connected to its own router only.
    workers_anywhere: bool,
    peer_urls: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    lifecycle: Mutex<Lifecycle>,
    /// Cancels a pending graceful stop.
    drain_cancel: Mutex<Option<CancellationToken>>,
    /// Becomes true when the master has stopped and the process should exit.
    exit: tokio::sync::watch::Sender<bool>,
    /// Workers connected to this node's router right now.
    local_workers: Mutex<HashMap<WorkerId, String>>,
    /// Every configured builder's id (the ones this node runs are in `builders_by_id`).
    all_builder_ids: HashMap<String, BuilderId>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    /// The workers connected to this node's router right now, as `(id, name)`.
    fn local_workers_now(&self) -> Vec<(WorkerId, String)> {
        self.local_workers
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Whether the named scheduler is enabled (Buildbot's `enable`, kept in the database so
    /// every master sees it); an unknown name counts as enabled.
    async fn scheduler_is_enabled(&self, name: &str) -> Result<bool, StoreError> {
        match self.scheduler_ids.get(name) {
            Some(&id) => self.store.scheduler_enabled(id).await,
            None => Ok(true),
        }
    }

    /// Whether this master takes new work: not while a stop (graceful or not) is under way.
    fn claiming(&self) -> bool {
        *self.lifecycle.lock() == Lifecycle::Running
    }

    /// Counts one build from before the claim to the end of its run; `None` when this
    /// master no longer claims. Counting first, then checking the lifecycle, orders it
    /// against a graceful stop, which sets the lifecycle first, then waits for the count.
    fn begin_start(&self) -> Option<Starting> {
        let guard = Starting::new(&self.starting);
        self.claiming().then_some(guard)
    }

    /// No build is being claimed, started or run by this master.
    fn idle(&self) -> bool {
        self.starting.load(std::sync::atomic::Ordering::SeqCst) == 0
            && self.running.lock().is_empty()
    }

    fn builder(&self, id: BuilderId) -> Option<&BuilderConfig> {
        self.builders_by_id
            .get(&id)
            .map(|i| &self.config.builders[*i])
    }

    fn worker_name(&self, id: WorkerId) -> Option<&str> {
        self.worker_ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
    }

    /// Publishes a request's current state under `event`.
    async fn publish_request(&self, brid: i64, event: &str) {
        match self.store.get_buildrequest(brid).await {
            Ok(Some(r)) => self.bus.buildrequest(&r, event),
            Ok(None) => {}
            Err(e) => tracing::warn!(brid, error = %e, "cannot read build request to publish"),
        }
    }

    async fn publish_buildset_new(&self, bsid: i64, reason: &str, requests: &[(i64, i64)]) {
        let data = json!({"bsid": bsid, "reason": reason, "submitted_at": unix_now(),
            "complete": false, "results": null, "external_idstring": null,
            "builderids": requests.iter().map(|(b, _)| *b).collect::<Vec<_>>()});
        self.bus.buildset(bsid, &data, "new");
        for (_, brid) in requests {
            self.publish_request(*brid, "new").await;
        }
    }

    /// Publishes `buildsets.<id>.complete`.
    fn publish_buildset_complete(&self, bsid: i64, results: crate::Results) {
        let data = json!({"bsid": bsid, "complete": true, "results": results.code(),
            "complete_at": unix_now()});
        self.bus.buildset(bsid, &data, "complete");
    }

    /// After a request completed: completes its buildset if it was the last.
    async fn maybe_complete_buildset(&self, bsid: i64) {
        match self.store.maybe_complete_buildset(bsid).await {
            Ok(Some(results)) => self.publish_buildset_complete(bsid, results),
            Ok(None) => {}
            Err(e) => tracing::warn!(bsid, error = %e, "cannot complete buildset"),
        }
    }
}

/// A running master. Dropping it does not stop it; call [`Master::stop`].
pub struct Master {
    inner: Arc<Inner>,
}

impl Master {
    /// Registers the master, applies the config (builders, workers, schedulers) to the
    /// database, joins the realm and starts the tasks. `workers_anywhere`: the router is part
    /// of a mesh, so workers connected to any node are callable (else only this node's).
    pub async fn start(
        router: &Router,
        config: Arc<MasterConfig>,
        store: Store,
        options: MasterOptions,
    ) -> Result<Master, MasterError> {
        let MasterOptions {
            name,
            workers_anywhere,
            peer_urls,
        } = options;
        let client = ServiceClient::start_trusted(router, &config.realm, &format!("master:{name}"))
            .map_err(|reason| MasterError::Realm {
                realm: config.realm.clone(),
                reason,
            })?;
        let bus = Bus::new(client.clone());

        wait_for_name(&store, &name, &config).await?;
        // A master restarting under its old name first cleans up after its previous life
        // (its claims are released and its unfinished builds end as RETRY), as expiry would.
        let master = store.register_master(&name).await?;
        let leftover = store.deactivate_master(master).await?;
        let master = store.register_master(&name).await?;
        for brid in &leftover.released {
            tracing::info!(brid, "released a claim left by this master's previous run");
        }

        let mut all_builder_ids = HashMap::new();
        let mut builders_by_id = HashMap::new();
        for (i, b) in config.builders.iter().enumerate() {
            let id = store.ensure_builder(&b.name).await?;
            store
                .set_builder_description(id, b.description.as_deref())
                .await?;
            all_builder_ids.insert(b.name.clone(), id);
            if config.runs_builder(&b.name) {
                builders_by_id.insert(id, i);
            }
        }
        let ids: Vec<BuilderId> = builders_by_id.keys().copied().collect();
        store.set_builder_masters(master, &ids).await?;
        let mut worker_ids = HashMap::new();
        let mut worker_max = HashMap::new();
        for w in &config.workers {
            let id = store.ensure_worker(&w.name).await?;
            worker_ids.insert(w.name.clone(), id);
            worker_max.insert(id, w.max_builds);
        }
        let mut scheduler_ids = HashMap::new();
        for s in &config.schedulers {
            scheduler_ids.insert(s.name.clone(), store.ensure_scheduler(&s.name).await?);
        }

        let inner = Arc::new(Inner {
            trust: BusTrust::new(&config.trusted_roles),
            config,
            store,
            bus,
            client,
            master,
            name,
            builders_by_id,
            worker_ids,
            worker_max,
            scheduler_ids,
            running: Mutex::new(HashMap::new()),
            starting: Arc::default(),
            quarantine: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            workers_anywhere,
            peer_urls,
            lifecycle: Mutex::new(Lifecycle::Running),
            drain_cancel: Mutex::new(None),
            exit: tokio::sync::watch::channel(false).0,
            local_workers: Mutex::new(HashMap::new()),
            all_builder_ids,
            tasks: Mutex::new(Vec::new()),
        });
        inner.bus.master(master, &inner.name, true, "started");
        for brid in leftover.released {
            inner.publish_request(brid, "unclaimed").await;
        }

        let mut tasks = Vec::new();
        // Subscribe before anything can happen that the subscriptions should see.
        let wakers = subscribe_wakers(&inner).await?;
        let presence = subscribe_presence(&inner).await?;
        let stops = subscribe(
            &inner,
            "org.buildbot.mq.control.builds..stop",
            Some("wildcard"),
        )
        .await?;
        // A prefix subscription: `.stop` and `.cancel_stop`.
        let lifecycle = subscribe(
            &inner,
            &format!("org.buildbot.mq.control.masters.{master}."),
            Some("prefix"),
        )
        .await?;
        tasks.push(tokio::spawn(wake_on_events(inner.clone(), wakers)));
        tasks.push(tokio::spawn(presence_task(inner.clone(), presence)));
        tasks.push(tokio::spawn(stop_listener(inner.clone(), stops)));
        tasks.push(tokio::spawn(lifecycle_listener(inner.clone(), lifecycle)));
        tasks.push(tokio::spawn(heartbeat_task(inner.clone())));
        if inner.config.has_role(crate::config::Role::Builders) {
            tasks.push(tokio::spawn(queue_task(inner.clone())));
        }
        *inner.tasks.lock() = tasks;
        tracing::info!(master, name = %inner.name, realm = %inner.config.realm,
            roles = ?inner.config.roles, builders = inner.builders_by_id.len(),
            workers = inner.config.workers.len(), "build master started");
        Ok(Master { inner })
    }

    pub fn id(&self) -> MasterId {
        self.inner.master
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The control surface for the REST API.
    pub fn control(&self) -> Arc<MasterControl> {
        Arc::new(MasterControl::new(self.inner.clone()))
    }

    /// Stops at once: claims nothing more, stops the running builds (they end as RETRY and
    /// their requests are released so another master runs them), marks this master
    /// inactive and publishes `masters.<id>.stopped`.
    pub async fn stop(self) {
        stop_now(&self.inner).await;
    }

    /// Starts a graceful stop (as `POST /api/v2/masters/<id>` `stop` does): see
    /// `graceful_stop`. Returns at once; [`Master::exit_requested`] says when it is done.
    pub fn stop_gracefully(&self) {
        begin_graceful_stop(&self.inner);
    }

    /// Becomes true once the master has stopped (after a graceful stop, or a stop asked for
    /// over the API): the process should then exit.
    pub fn exit_requested(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.exit.subscribe()
    }

    pub fn lifecycle(&self) -> Lifecycle {
        *self.inner.lifecycle.lock()
    }
}

/// Refuses to start under the name of a live master (two processes sharing a data folder or
/// a name would otherwise take each other's claims away). A name marked active is watched
/// for two heartbeat intervals: if its heartbeat moves, another master is alive; if not (a
/// crash, then a restart), this one takes the name over.
async fn wait_for_name(
    store: &Store,
    name: &str,
    config: &MasterConfig,
) -> Result<(), MasterError> {
    let Some((true, first)) = store.master_liveness(name).await? else {
        return Ok(());
    };
    if unix_now() - first > config.expiry_timeout().as_secs() as i64 {
        return Ok(()); // long silent: its expiry is due anyway
    }
    // Heartbeat times are whole seconds: watch a little longer than two intervals.
    let window = config.heartbeat_interval() * 2 + Duration::from_millis(1500);
    tracing::info!(
        name,
        window_s = window.as_secs_f64(),
        "a master of this name is marked active; checking whether it still heartbeats"
    );
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match store.master_liveness(name).await? {
            Some((true, last)) if last != first => {
                return Err(MasterError::NameInUse { name: name.into() })
            }
            Some((true, _)) => {}
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Stops everything at once (see [`Master::stop`]); idempotent.
async fn stop_now(inner: &Arc<Inner>) {
    {
        let mut l = inner.lifecycle.lock();
        if *l == Lifecycle::Stopped {
            return;
        }
        *l = Lifecycle::Stopped;
    }
    if let Some(c) = inner.drain_cancel.lock().take() {
        c.cancel();
    }
    stop_running_builds(inner, "master shutting down").await;
    inner.shutdown.cancel();
    for t in inner.tasks.lock().drain(..) {
        t.abort();
    }
    if let Err(e) = inner.store.release_schedulers(inner.master).await {
        tracing::warn!(error = %e, "cannot release schedulers");
    }
    match inner.store.deactivate_master(inner.master).await {
        Ok(expiry) => {
            for brid in expiry.released {
                inner.publish_request(brid, "unclaimed").await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot mark this master inactive"),
    }
    inner
        .bus
        .master(inner.master, &inner.name, false, "stopped");
    tracing::info!(master = inner.master, "build master stopped");
    let _ = inner.exit.send(true);
}

/// Stops this master's running builds (they end as RETRY, see `build`) and waits, bounded,
/// for their bookkeeping.
async fn stop_running_builds(inner: &Inner, reason: &str) {
    let running: Vec<Arc<RunningBuild>> = inner.running.lock().values().cloned().collect();
    for r in &running {
        *r.reason.lock() = Some(reason.to_owned());
        r.stop.cancel();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !inner.running.lock().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a graceful stop unless one is under way; false if the master already stopped.
pub(crate) fn begin_graceful_stop(inner: &Arc<Inner>) -> bool {
    {
        let mut l = inner.lifecycle.lock();
        match *l {
            Lifecycle::Stopped => return false,
            Lifecycle::Draining => return true,
            Lifecycle::Running => *l = Lifecycle::Draining,
        }
    }
    let cancel = CancellationToken::new();
    *inner.drain_cancel.lock() = Some(cancel.clone());
    let inner = inner.clone();
    tokio::spawn(async move { graceful_stop(inner, cancel).await });
    true
}

/// Cancels a pending graceful stop; false if none is pending.
pub(crate) fn cancel_graceful_stop(inner: &Inner) -> bool {
    if *inner.lifecycle.lock() != Lifecycle::Draining {
        return false;
    }
    match inner.drain_cancel.lock().take() {
        Some(c) => {
            // Running again at once; the drain task puts the database and the bus right.
            *inner.lifecycle.lock() = Lifecycle::Running;
            c.cancel();
            true
        }
        None => false,
    }
}

/// Whether a build of any master still holds one of the workers connected here (they are
/// redirected only once free, so no build loses its worker to the move).
async fn local_workers_busy(inner: &Inner) -> bool {
    let local: Vec<WorkerId> = inner.local_workers.lock().keys().copied().collect();
    for wid in local {
        match inner.store.worker_slots_held(wid).await {
            Ok(0) => {}
            Ok(_) => return true,
            // The database is unreachable: do not wait on it (the deadline still holds).
            Err(_) => return false,
        }
    }
    false
}

/// The graceful stop, Buildbot's missing piece:
/// 1. **draining**: claim nothing new (state `draining` in the database, the API and on
///    the bus as `masters.<id>.draining`); this node's workers are withdrawn from the
///    `connected_workers` table so no master gives them new builds;
/// 2. running builds finish, this master's and any other master's builds on the workers
///    connected here (after `shutdown_deadline_s` this master's end as RETRY);
/// 3. each worker connected through this node is told to reconnect to a live peer (the
///    worker's `reconnect` procedure, with the peers' URLs);
/// 4. **stopped**: this master is marked inactive, `masters.<id>.stopped` goes out, and the
///    process exits (the router then closes the remaining sessions with
///    `wamp.close.system_shutdown`).
///
/// Until step 3 starts, `cancel_stop` puts the master back to running.
async fn graceful_stop(inner: Arc<Inner>, cancel: CancellationToken) {
    let deadline = Instant::now() + inner.config.shutdown_deadline();
    tracing::info!(
        master = inner.master,
        deadline_s = inner.config.shutdown_deadline_s,
        running = inner.running.lock().len(),
        "graceful stop: draining"
    );
    if let Err(e) = inner.store.set_master_state(inner.master, "draining").await {
        tracing::warn!(error = %e, "cannot record the draining state");
    }
    inner
        .bus
        .master(inner.master, &inner.name, true, "draining");
    let local = inner.local_workers_now();
    for (wid, _) in &local {
        let _ = inner.store.worker_disconnected(inner.master, *wid).await;
    }
    // Wait for the builds to finish, the deadline, or a cancel.
    loop {
        if cancel.is_cancelled() {
            if *inner.lifecycle.lock() == Lifecycle::Stopped {
                return;
            }
            tracing::info!(
                master = inner.master,
                "graceful stop cancelled: running again"
            );
            let _ = inner.store.set_master_state(inner.master, "running").await;
            for (wid, _) in inner.local_workers_now() {
                let _ = inner.store.worker_connected(inner.master, wid).await;
            }
            inner.bus.master(inner.master, &inner.name, true, "started");
            inner.wake.notify_one();
            return;
        }
        if inner.idle() && !local_workers_busy(&inner).await {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                master = inner.master,
                "graceful stop deadline reached: remaining builds end as RETRY"
            );
            stop_running_builds(&inner, "master shutting down").await;
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Past this point the stop goes through.
    inner.drain_cancel.lock().take();
    let urls = (inner.peer_urls)();
    let local = inner.local_workers_now();
    for (_, name) in local {
        let mut kwargs = Dict::new();
        kwargs.insert(
            "urls".into(),
            Value::List(urls.iter().map(|u| Value::from(u.as_str())).collect()),
        );
        kwargs.insert("reason".into(), Value::from("master shutting down"));
        let procedure = worker_procedure(&name, "reconnect");
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            inner.client.call(
                &procedure,
                switchyard_router::wire::Payload::new(Vec::new(), kwargs),
            ),
        )
        .await;
        match answer {
            Ok(switchyard_router::service::Answer::Result(_)) => {
                tracing::info!(worker = %name, ?urls, "worker redirected to the live peers")
            }
            other => {
                tracing::warn!(worker = %name, answer = ?other.ok(), "worker did not accept the redirect; it will reconnect on its own")
            }
        }
    }
    stop_now(&inner).await;
}

async fn subscribe(
    inner: &Inner,
    topic: &str,
    policy: Option<&str>,
) -> Result<tokio::sync::mpsc::Receiver<SubscriptionEvent>, MasterError> {
    let mut options = Dict::new();
    if let Some(p) = policy {
        options.insert("match".into(), Value::from(p));
    }
    inner
        .client
        .subscribe(topic, options)
        .await
        .map(|(_, rx)| rx)
        .map_err(|reason| MasterError::Subscribe {
            topic: topic.into(),
            reason,
        })
}

/// Events after which the queue may have work: new or released requests, finished builds.
async fn subscribe_wakers(
    inner: &Inner,
) -> Result<Vec<tokio::sync::mpsc::Receiver<SubscriptionEvent>>, MasterError> {
    let mut v = Vec::new();
    for t in [
        "org.buildbot.mq.buildrequests..new",
        "org.buildbot.mq.buildrequests..unclaimed",
        "org.buildbot.mq.builds..finished",
        "org.buildbot.mq.workers..connected",
    ] {
        v.push(subscribe(inner, t, Some("wildcard")).await?);
    }
    Ok(v)
}

async fn wake_on_events(
    inner: Arc<Inner>,
    subs: Vec<tokio::sync::mpsc::Receiver<SubscriptionEvent>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    for mut s in subs {
        let tx = tx.clone();
        let trust = inner.trust.clone();
        tokio::spawn(async move {
            while let Some(ev) = s.recv().await {
                if from_master(&trust, &ev) {
                    let _ = tx.try_send(());
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            got = rx.recv() => {
                if got.is_none() {
                    return;
                }
                inner.wake.notify_one();
            }
        }
    }
}

/// Registrations of worker procedures on this node, from the meta API.
struct Presence {
    created: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
    deleted: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
}

async fn subscribe_presence(inner: &Inner) -> Result<Presence, MasterError> {
    Ok(Presence {
        created: subscribe(inner, "wamp.registration.on_create", None).await?,
        deleted: subscribe(inner, "wamp.registration.on_delete", None).await?,
    })
}

/// The worker a `switchyard.worker.<name>.run` URI names, if configured.
fn worker_of_run_uri<'a>(inner: &'a Inner, uri: &str) -> Option<(&'a str, WorkerId)> {
    let name = uri.strip_prefix(WORKER_NAMESPACE)?.strip_suffix(".run")?;
    inner
        .worker_ids
        .get_key_value(name)
        .map(|(k, v)| (k.as_str(), *v))
}

async fn presence_task(inner: Arc<Inner>, mut p: Presence) {
    // Registration id of each connected worker's `run` → worker id.
    let mut registrations: HashMap<u64, WorkerId> = HashMap::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            Some(ev) = p.created.recv() => {
                // args: [session, {id, uri, match, invoke, created}]
                let Some(details) = ev.payload.args().get(1).and_then(Value::as_dict) else { continue };
                let Some(uri) = details.get("uri").and_then(Value::as_str) else { continue };
                let Some(reg) = details.get("id").and_then(Value::as_u64) else { continue };
                let Some((name, wid)) = worker_of_run_uri(&inner, uri) else { continue };
                registrations.insert(reg, wid);
                inner.local_workers.lock().insert(wid, name.to_owned());
                let name = name.to_owned();
                let inner = inner.clone();
                // Asking the worker about itself also proves it answers.
                tokio::spawn(async move { worker_appeared(&inner, &name, wid).await });
            }
            Some(ev) = p.deleted.recv() => {
                // args: [session, registration id]
                let Some(reg) = ev.payload.args().get(1).and_then(Value::as_u64) else { continue };
                let Some(wid) = registrations.remove(&reg) else { continue };
                if registrations.values().any(|w| *w == wid) {
                    // The worker already registered again (a reconnect whose on_create was
                    // read first: the two subscriptions are not ordered between them).
                    continue;
                }
                inner.local_workers.lock().remove(&wid);
                let name = inner.worker_name(wid).unwrap_or("?").to_owned();
                tracing::info!(worker = %name, "worker disconnected");
                if let Err(e) = inner.store.worker_disconnected(inner.master, wid).await {
                    tracing::warn!(worker = %name, error = %e, "cannot record worker disconnect");
                }
                inner.bus.worker(wid, &name, inner.master, "disconnected");
            }
            else => return,
        }
    }
}

async fn worker_appeared(inner: &Inner, name: &str, wid: WorkerId) {
    let procedure = worker_procedure(name, "info");
    let info = inner.client.call(&procedure, Default::default());
    let info = match tokio::time::timeout(Duration::from_secs(10), info).await {
        Ok(switchyard_router::service::Answer::Result(p)) => p
            .kwargs()
            .map(|k| to_json(&Value::Dict(k.clone())))
            .unwrap_or_else(|| json!({})),
        other => {
            tracing::warn!(worker = name, answer = ?other.ok(), "worker registered but its info call failed");
            json!({})
        }
    };
    if let Err(e) = inner.store.set_worker_info(wid, &info).await {
        tracing::warn!(worker = name, error = %e, "cannot store worker info");
    }
    if *inner.lifecycle.lock() != Lifecycle::Running {
        return; // a draining master gives no worker new work
    }
    if let Err(e) = inner.store.worker_connected(inner.master, wid).await {
        tracing::warn!(worker = name, error = %e, "cannot record worker connection");
        return;
    }
    inner.quarantine.lock().remove(&wid);
    tracing::info!(worker = name, "worker connected");
    inner.bus.worker(wid, name, inner.master, "connected");
    inner.wake.notify_one();
}

/// `control.masters.<id>.stop|cancel_stop` from another master's API.
async fn lifecycle_listener(
    inner: Arc<Inner>,
    mut events: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                if !from_master(&inner.trust, &ev) {
                    continue;
                }
                let Some(topic) = ev.details.get("topic").and_then(Value::as_str) else { continue };
                let graceful = ev
                    .payload
                    .args()
                    .first()
                    .and_then(Value::as_dict)
                    .and_then(|d| d.get("graceful"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if topic.ends_with(".cancel_stop") {
                    cancel_graceful_stop(&inner);
                } else if topic.ends_with(".stop") {
                    if graceful {
                        begin_graceful_stop(&inner);
                    } else {
                        let inner = inner.clone();
                        tokio::spawn(async move { stop_now(&inner).await });
                    }
                }
            }
        }
    }
}

async fn stop_listener(
    inner: Arc<Inner>,
    mut stops: tokio::sync::mpsc::Receiver<SubscriptionEvent>,
) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            ev = stops.recv() => {
                let Some(ev) = ev else { return };
                if !from_master(&inner.trust, &ev) {
                    continue;
                }
                // The topic is org.buildbot.mq.control.builds.<id>.stop.
                let Some(topic) = ev.details.get("topic").and_then(Value::as_str) else { continue };
                let Some(id) = topic
                    .strip_prefix("org.buildbot.mq.control.builds.")
                    .and_then(|r| r.strip_suffix(".stop"))
                    .and_then(|r| r.parse::<BuildId>().ok())
                else {
                    continue;
                };
                let reason = ev
                    .payload
                    .args()
                    .first()
                    .and_then(Value::as_dict)
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("stopped")
                    .to_owned();
                stop_local_build(&inner, id, reason);
            }
        }
    }
}

/// Whether a bus event comes from a master (this one or a peer, or a configured trusted
/// role): anything else on `org.buildbot.mq.*` (an anonymous client, a Buildbot master on
/// the same realm) is ignored, with a debug line naming the sender.
fn from_master(trust: &BusTrust, ev: &SubscriptionEvent) -> bool {
    let ok = trust.published_by_master(&ev.details);
    if !ok {
        let topic = ev
            .details
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or("?");
        tracing::debug!(topic = %Trunc(topic), publisher = %BusTrust::publisher(&ev.details),
            "ignoring a bus message that no master published");
    }
    ok
}

/// Stops a build if this master runs it; true if it did.
pub(crate) fn stop_local_build(inner: &Inner, build: BuildId, reason: String) -> bool {
    let running = inner.running.lock().get(&build).cloned();
    match running {
        Some(r) => {
            tracing::info!(build, %reason, "stopping build");
            *r.reason.lock() = Some(reason);
            r.stop.cancel();
            true
        }
        None => false,
    }
}

async fn heartbeat_task(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match inner.store.heartbeat(inner.master).await {
            Ok(()) => {}
            Err(StoreError::MasterInactive { .. }) => {
                recover_from_expiry(&inner).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "heartbeat failed: this master may be expired by others if the database stays unreachable");
                continue;
            }
        }
        match inner
            .store
            .expire_masters(inner.master, inner.config.expiry_timeout())
            .await
        {
            Ok(expiry) if !expiry.is_empty() => {
                for m in &expiry.masters {
                    tracing::warn!(
                        master = m,
                        released = expiry.released.len(),
                        retried_builds = expiry.retried_builds.len(),
                        "expired a silent master: its requests run again"
                    );
                    inner.bus.master(*m, "", false, "stopped");
                }
                for b in &expiry.retried_builds {
                    if let Ok(Some(build)) = inner.store.get_build(*b).await {
                        inner.bus.build(&build, "finished");
                    }
                }
                for brid in &expiry.released {
                    inner.publish_request(*brid, "unclaimed").await;
                }
                inner.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring silent masters failed"),
        }
        run_schedulers(&inner).await;
        if let Err(e) = reconcile(&inner).await {
            tracing::warn!(error = %e, "checking this master's bookkeeping failed; will retry");
        }
        repair_buildsets(&inner).await;
    }
}

/// Completes buildsets whose requests all completed but which were not marked complete (a
/// master stopped or crashed between the two): any live master repairs them, whoever ran
/// their builds.
async fn repair_buildsets(inner: &Inner) {
    match inner.store.complete_finished_buildsets(500).await {
        Ok(done) => {
            for (bsid, results) in done {
                tracing::info!(
                    bsid,
                    "completed a buildset whose requests had all completed"
                );
                let data = json!({"bsid": bsid, "complete": true, "results": results.code(),
                    "complete_at": unix_now()});
                inner.bus.buildset(bsid, &data, "complete");
            }
        }
        Err(e) => tracing::warn!(error = %e, "repairing buildsets failed; will retry"),
    }
}

/// How old a claim, slot or build must be before [`reconcile`] may judge it: far longer than
/// the moment between taking one and registering the build that uses it.
const RECONCILE_AFTER_S: i64 = 30;

/// Repairs what an interrupted build left behind (the database was out of reach while a
/// build ended, so its end could not be recorded): an unfinished build of this master that
/// no task runs ends as RETRY, and claims and worker slots of this master that no running
/// build uses are released, so their requests run again.
async fn reconcile(inner: &Inner) -> Result<(), StoreError> {
    let (builds, claims, leases) = inner
        .store
        .held_by(inner.master, unix_now() - RECONCILE_AFTER_S)
        .await?;
    let running: std::collections::HashSet<BuildId> =
        inner.running.lock().keys().copied().collect();
    let mut live_requests = std::collections::HashSet::new();
    for b in &running {
        if let Ok(Some(build)) = inner.store.get_build(*b).await {
            live_requests.insert(build.buildrequestid);
        }
    }
    for (build, _) in builds.iter().filter(|(b, _)| !running.contains(b)) {
        tracing::warn!(
            build,
            "an unfinished build no task runs: ending it as RETRY"
        );
        match inner
            .store
            .finish_build(inner.master, *build, crate::Results::Retry)
            .await
        {
            Ok(()) => {
                if let Ok(Some(b)) = inner.store.get_build(*build).await {
                    inner.bus.build(&b, "finished");
                }
            }
            Err(e) => tracing::warn!(build, error = %e, "cannot end the orphaned build"),
        }
    }
    let orphaned: Vec<i64> = claims
        .into_iter()
        .filter(|brid| !live_requests.contains(brid))
        .collect();
    if !orphaned.is_empty() {
        tracing::warn!(?orphaned, "claims no running build uses: releasing them");
        for brid in inner
            .store
            .unclaim_buildrequests(inner.master, &orphaned)
            .await?
        {
            inner.publish_request(brid, "unclaimed").await;
        }
        inner.wake.notify_one();
    }
    for (worker, slot, brid) in leases {
        if !live_requests.contains(&brid) {
            tracing::warn!(
                worker,
                slot,
                brid,
                "a worker slot no running build uses: releasing it"
            );
            inner
                .store
                .release_worker_slot(inner.master, worker, slot)
                .await?;
            inner.wake.notify_one();
        }
    }
    Ok(())
}

/// Another master expired this one (it was silent too long, e.g. the database was out of
/// reach): its builds were ended as RETRY and its claims released, so the builds still
/// running here must stop without reporting; then it registers again.
async fn recover_from_expiry(inner: &Inner) {
    tracing::error!(
        master = inner.master,
        "this master was expired by another (missed heartbeats); abandoning its builds and registering again"
    );
    let running: Vec<Arc<RunningBuild>> = inner.running.lock().values().cloned().collect();
    for r in running {
        *r.reason.lock() = Some("master expired".into());
        r.stop.cancel();
    }
    match inner.store.register_master(&inner.name).await {
        Ok(id) if id == inner.master => {
            let ids: Vec<BuilderId> = inner.builders_by_id.keys().copied().collect();
            if let Err(e) = inner.store.set_builder_masters(inner.master, &ids).await {
                tracing::warn!(error = %e, "cannot re-declare builders");
            }
            inner.bus.master(inner.master, &inner.name, true, "started");
        }
        Ok(id) => tracing::error!(id, "re-registering gave a different master id"),
        Err(e) => tracing::error!(error = %e, "cannot register again"),
    }
}

/// Claims the schedulers nobody owns and fires the due periodic ones this master owns.
async fn run_schedulers(inner: &Arc<Inner>) {
    if !inner.claiming() || !inner.config.has_role(crate::config::Role::Scheduler) {
        return;
    }
    for s in &inner.config.schedulers {
        let Some(&sid) = inner.scheduler_ids.get(&s.name) else {
            continue;
        };
        // Every scheduler has one owning master, as in Buildbot, whose data API (and UI)
        // shows it as the scheduler's `master`; only a periodic scheduler's owner fires it.
        // Force and change schedulers act wherever a request or change arrives.
        let owner = match inner.store.claim_scheduler(inner.master, sid).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(scheduler = %s.name, error = %e, "cannot claim scheduler");
                continue;
            }
        };
        if !owner || s.kind != SchedulerKind::Periodic {
            continue;
        }
        if !inner.store.scheduler_enabled(sid).await.unwrap_or(true) {
            continue;
        }
        let interval = s.interval_s.unwrap_or(60.0) as i64;
        let last = match inner.store.scheduler_last_run(sid).await {
            Ok(l) => l,
            Err(_) => continue,
        };
        if last.is_some_and(|l| unix_now() < l + interval.max(1)) {
            continue;
        }
        let mut properties = control::scheduler_properties(s);
        properties.insert("scheduler".into(), (json!(s.name), "Scheduler".into()));
        let bs = NewBuildset {
            reason: format!(
                "The Periodic scheduler named '{}' triggered this build",
                s.name
            ),
            scheduler: Some(s.name.clone()),
            changeid: None,
            builders: s
                .builders
                .iter()
                .filter_map(|b| inner.all_builder_ids.get(b).copied())
                .collect(),
            priority: 0,
            properties,
        };
        match inner
            .store
            .fire_periodic(inner.master, sid, last, &bs)
            .await
        {
            Ok(Some((bsid, requests))) => {
                tracing::info!(scheduler = %s.name, bsid, "periodic scheduler fired");
                inner
                    .publish_buildset_new(bsid, &bs.reason, &requests)
                    .await;
                inner.wake.notify_one();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(scheduler = %s.name, error = %e, "periodic scheduler failed"),
        }
    }
}

async fn queue_task(inner: Arc<Inner>) {
    let poll = inner.config.poll_interval();
    loop {
        if inner.claiming() {
            if let Err(e) = assign_pending(&inner).await {
                tracing::warn!(error = %e, "assigning build requests failed; will retry");
            }
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Matches unclaimed requests of this master's builders with idle workers and starts builds.
/// Builder by builder (in a random order each pass, so none starves), it fetches only as
/// many of the builder's oldest requests as it has workers with a free slot and no build of
/// that builder running (Buildbot's rule: one build of a builder per worker at a time, so
/// builds never share a workdir): requests for builders this master does not run, or whose
/// workers are busy, cost nothing. A pass costs O(workers of the builder) in memory besides
/// its queries, whatever the number of requests it starts (no scan per request).
async fn assign_pending(inner: &Arc<Inner>) -> Result<(), StoreError> {
    let only = (!inner.workers_anywhere).then_some(inner.master);
    let available = inner.store.available_workers(only).await?;
    if available.is_empty() {
        return Ok(());
    }
    let mut load = inner.store.worker_load().await?;
    let now = Instant::now();
    let quarantined: HashSet<WorkerId> = {
        let mut q = inner.quarantine.lock();
        q.retain(|_, until| *until > now);
        q.keys().copied().collect()
    };
    let mut builders: Vec<(BuilderId, usize)> =
        inner.builders_by_id.iter().map(|(k, v)| (*k, *v)).collect();
    {
        use rand::seq::SliceRandom;
        builders.shuffle(&mut rand::rng());
    }
    for (builderid, index) in builders {
        let builder = &inner.config.builders[index];
        // Workers up, not quarantined, with a free slot and no build of this builder
        // running (one build of a builder per worker: they share its workdir). A worker
        // given a build of this builder is out of the list for the rest of the pass, so the
        // list is made once and walked in order.
        let mut candidates: Vec<(WorkerId, &str, u32)> = builder
            .workers
            .iter()
            .filter_map(|w| {
                let id = *inner.worker_ids.get(w)?;
                let max = *inner.worker_max.get(&id)?;
                let up = available.contains(&id) && !quarantined.contains(&id);
                let busy = load.slots.get(&id).copied().unwrap_or(0) >= i64::from(max)
                    || load.running.contains(&(id, builderid));
                (up && !busy).then_some((id, w.as_str(), max))
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        // Least loaded first; ties broken at random so masters spread out.
        {
            use rand::seq::SliceRandom;
            candidates.shuffle(&mut rand::rng());
        }
        candidates.sort_by_key(|(id, _, _)| load.slots.get(id).copied().unwrap_or(0));
        let pending = inner
            .store
            .unclaimed_buildrequests(Some(builderid), candidates.len() as i64)
            .await?;
        let mut next = candidates.iter().copied();
        let mut spare: Option<(WorkerId, &str, u32)> = None;
        for request in pending {
            let Some(starting) = inner.begin_start() else {
                return Ok(());
            };
            // A worker offered a request another master claimed first is still free: offer
            // it the next request before the rest of the list.
            while let Some((wid, wname, max)) = spare.take().or_else(|| next.next()) {
                // The claim and the worker slot in one transaction: both or neither.
                match inner
                    .store
                    .claim_with_slot(inner.master, request.id, wid, max)
                    .await
                {
                    Ok(WorkerSlot::Taken(slot)) => {
                        *load.slots.entry(wid).or_default() += 1;
                        load.running.insert((wid, builderid));
                        let (r, w) = (request.clone(), wname.to_owned());
                        start_build(inner, r, wid, w, slot, starting.again()).await;
                    }
                    Ok(WorkerSlot::Full) => {
                        load.slots.insert(wid, i64::from(max));
                        continue;
                    }
                    Ok(WorkerSlot::BuilderRunning) => {
                        load.running.insert((wid, builderid));
                        continue;
                    }
                    Err(StoreError::AlreadyClaimed) | Err(StoreError::UnknownBuildRequest) => {
                        spare = Some((wid, wname, max));
                    }
                    Err(e) => return Err(e),
                }
                break;
            }
        }
    }
    Ok(())
}

async fn start_build(
    inner: &Arc<Inner>,
    request: BuildRequest,
    worker: WorkerId,
    worker_name: String,
    slot: i64,
    starting: Starting,
) {
    let inner2 = inner.clone();
    tokio::spawn(async move {
        build::run(inner2.clone(), request, worker, worker_name, slot).await;
        drop(starting);
        inner2.wake.notify_one();
    });
}

/// One count of [`Inner::starting`], given back when dropped.
struct Starting(Arc<std::sync::atomic::AtomicUsize>);

impl Starting {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Starting {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Starting(count.clone())
    }

    /// Another count for the same build (the run holds it past the claim).
    fn again(&self) -> Starting {
        Starting::new(&self.0)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
