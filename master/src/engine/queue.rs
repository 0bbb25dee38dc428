//! The queue: matches unclaimed requests of the builders this master runs with idle workers
//! (claim and worker slot in one transaction) and starts their builds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::{build, Inner};
use crate::store::{BuildRequest, BuilderId, WorkerId, WorkerSlot};
use crate::StoreError;

pub(super) async fn queue_task(inner: Arc<Inner>) {
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
/// workers are busy, cost nothing. A pass with no unclaimed request for a builder it runs
/// costs one query; any other pass costs O(workers of the builder) in memory besides its
/// queries, whatever the number of requests it starts (no scan per request).
pub(super) async fn assign_pending(inner: &Arc<Inner>) -> Result<(), StoreError> {
    // Most passes find nothing to start (a build's end wakes the queue too): one small query
    // answers that before the workers are read.
    let waiting = inner.store.builders_with_unclaimed().await?;
    let mut builders: Vec<(BuilderId, usize)> = inner
        .builders_by_id
        .iter()
        .filter(|(k, _)| waiting.contains(k))
        .map(|(k, v)| (*k, *v))
        .collect();
    if builders.is_empty() {
        return Ok(());
    }
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

pub(super) async fn start_build(
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
pub(super) struct Starting(Arc<std::sync::atomic::AtomicUsize>);

impl Starting {
    pub(super) fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Starting {
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
