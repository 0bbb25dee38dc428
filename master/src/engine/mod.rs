//! The running master: one per `switchyard start`, embedded in the router process and acting
//! through in-process WAMP sessions (no socket, no serialization).
//!
//! Tasks, all stopped by one cancellation token, each in its own module:
//! - **heartbeat** (`heartbeat`): records this master alive, expires silent masters
//!   (releasing their claims and worker slots, retrying their builds, publishing
//!   `unclaimed`), repairs what interrupted builds left, and runs the schedulers this master
//!   owns;
//! - **queue** (`queue`): woken by bus events (`buildrequests..new|unclaimed`, a worker
//!   appearing, a build ending) or every `poll_interval`, it matches unclaimed requests for
//!   builders this master runs to idle workers: claim the request and take a worker slot in
//!   one transaction (database-arbitrated, see `store::running`), start the build;
//! - **presence** (`presence`): watches this node's registrations of
//!   `switchyard.worker.<name>.run` and records which workers are connected here
//!   (`connected_workers`), publishing `workers.<id>.connected|disconnected`;
//! - **listeners** (`listen`): the queue's wake-up events, `control.builds.<id>.stop` (so a
//!   stop sent to any master reaches the one running the build) and
//!   `control.masters.<id>.stop|cancel_stop`;
//! - one task per running build (`build`).
//!
//! Stopping, at once or gracefully, is `stop`; the REST API acts through `control`.
//!
//! Any master can run a build on any worker in the mesh: workers are WAMP callees, so the
//! call reaches them wherever they are connected.

mod build;
mod control;
pub mod events;
mod git;
mod heartbeat;
mod listen;
mod presence;
mod queue;
pub mod secrets;
mod stop;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use switchyard_router::service::ServiceClient;
use switchyard_router::Router;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::BusTrust;
use crate::config::{BuilderConfig, MasterConfig};
use crate::store::{BuildId, BuilderId, MasterId, SchedulerId, Store, WorkerId};
use crate::StoreError;
use events::Bus;

pub use control::MasterControl;
use heartbeat::heartbeat_task;
use listen::{lifecycle_listener, stop_listener, subscribe, subscribe_wakers, wake_on_events};
use presence::{presence_task, subscribe_presence};
use queue::{queue_task, Starting};
use stop::{begin_graceful_stop, cancel_graceful_stop, stop_local_build, stop_now};

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
