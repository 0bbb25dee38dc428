//! The heartbeat task: records this master alive, expires silent masters, repairs what an
//! interrupted build or a stop left behind (buildsets, claims, worker slots), recovers when
//! this master was itself expired, and claims and fires the schedulers.

use std::sync::Arc;

use serde_json::json;

use super::{control, unix_now, Inner, RunningBuild};
use crate::config::SchedulerKind;
use crate::store::{BuildId, BuilderId, NewBuildset};
use crate::StoreError;

pub(super) async fn heartbeat_task(inner: Arc<Inner>) {
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
pub(super) async fn repair_buildsets(inner: &Inner) {
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
pub(super) async fn reconcile(inner: &Inner) -> Result<(), StoreError> {
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
pub(super) async fn recover_from_expiry(inner: &Inner) {
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
pub(super) async fn run_schedulers(inner: &Arc<Inner>) {
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
