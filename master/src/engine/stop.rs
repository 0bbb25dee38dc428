//! Stopping a master: at once (`stop_now`: running builds end as RETRY, claims are released)
//! or gracefully (`graceful_stop`: draining, builds finish, workers move to live peers,
//! then stopped), and stopping one build this master runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_router::wire::{Dict, Value};
use tokio_util::sync::CancellationToken;

use super::{Inner, Lifecycle, RunningBuild};
use crate::auth::worker_procedure;
use crate::store::{BuildId, WorkerId};

/// Stops everything at once (see [`Master::stop`]); idempotent.
pub(super) async fn stop_now(inner: &Arc<Inner>) {
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
pub(super) async fn stop_running_builds(inner: &Inner, reason: &str) {
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
pub(super) async fn local_workers_busy(inner: &Inner) -> bool {
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
pub(super) async fn graceful_stop(inner: Arc<Inner>, cancel: CancellationToken) {
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
