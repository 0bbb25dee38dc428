//! What a running master records beyond the claim protocol: worker build slots, which
//! workers are connected where, builder and scheduler ownership, steps, logs and their
//! chunks, changes, properties, and buildset completion.
//!
//! Worker slots and scheduler ownership use the same arbitration as claims: a primary key
//! that exactly one of several racing masters can insert (`ON CONFLICT DO NOTHING`, then
//! look at how many rows were written), so the limits hold across masters without locks.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sqlx::Row;

use super::{BuildId, BuildRequestId, BuilderId, BuildsetId, MasterId, Store, WorkerId};
use crate::{Results, StoreError};

pub type StepId = i64;
pub type LogId = i64;
pub type ChangeId = i64;
pub type SchedulerId = i64;

/// A change to record (the change hook's fields; `control::NewChange` is this type).
#[derive(Debug, Clone, Default)]
pub struct ChangeRecord {
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    pub when_timestamp: Option<i64>,
    pub category: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    pub properties: BTreeMap<String, Value>,
    pub files: Vec<String>,
}

/// A buildset to queue: its reason, origin and properties (`name → (value, source)`).
#[derive(Debug, Clone, Default)]
pub struct NewBuildset {
    pub reason: String,
    pub scheduler: Option<String>,
    pub changeid: Option<ChangeId>,
    pub builders: Vec<BuilderId>,
    pub priority: i64,
    pub properties: BTreeMap<String, (Value, String)>,
}

/// What [`Store::acquire_worker_slot`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSlot {
    /// This slot number is now held for the request.
    Taken(i64),
    /// Every one of the worker's `max_builds` slots is held.
    Full,
    /// The worker already runs a build of the request's builder.
    BuilderRunning,
}

/// Held worker slots, as the queue sees them.
#[derive(Debug, Clone, Default)]
pub struct WorkerLoad {
    /// Slots held per worker.
    pub slots: BTreeMap<WorkerId, i64>,
    /// `(worker, builder)` pairs with a build running.
    pub running: BTreeSet<(WorkerId, BuilderId)>,
}

impl Store {
    /// Takes one of `worker`'s `max_builds` slots for request `brid` on behalf of `master`,
    /// unless every slot is held (by any master) or the worker already runs a build of the
    /// request's builder (Buildbot's rule: one build of a builder per worker at a time, as
    /// they share its workdir). Both limits are unique keys of `worker_leases`, so they hold
    /// across masters. Release with [`Store::release_worker_slot`].
    pub async fn acquire_worker_slot(
        &self,
        master: MasterId,
        worker: WorkerId,
        max_builds: u32,
        brid: BuildRequestId,
    ) -> Result<WorkerSlot, StoreError> {
        self.retrying("acquire_worker_slot", || async {
            let now = self.now();
            for slot in 0..i64::from(max_builds) {
                // No conflict target: a taken slot and a builder already running on the
                // worker both leave the row unwritten.
                let done = sqlx::query(
                    "INSERT INTO worker_leases \
                     (workerid, slot, masterid, brid, acquired_at, builderid) \
                     SELECT $1, $2, $3, id, $5, builderid FROM buildrequests WHERE id = $4 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(worker)
                .bind(slot)
                .bind(master)
                .bind(brid)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 1 {
                    return Ok(WorkerSlot::Taken(slot));
                }
            }
            let running = sqlx::query(
                "SELECT COUNT(*) AS n FROM worker_leases l JOIN buildrequests r \
                 ON r.builderid = l.builderid WHERE l.workerid = $1 AND r.id = $2",
            )
            .bind(worker)
            .bind(brid)
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>("n")?;
            Ok(if running > 0 {
                WorkerSlot::BuilderRunning
            } else {
                WorkerSlot::Full
            })
        })
        .await
    }

    /// Why `worker` has no slot for `brid`: it runs a build of the request's builder
    /// already, or every slot is held.
    pub(super) async fn slot_refusal(
        &self,
        worker: WorkerId,
        brid: BuildRequestId,
    ) -> Result<WorkerSlot, StoreError> {
        self.retrying("slot_refusal", || async {
            let running = sqlx::query(
                "SELECT COUNT(*) AS n FROM worker_leases l JOIN buildrequests r \
                 ON r.builderid = l.builderid WHERE l.workerid = $1 AND r.id = $2",
            )
            .bind(worker)
            .bind(brid)
            .fetch_one(&self.pool)
            .await?
            .try_get::<i64, _>("n")?;
            Ok(if running > 0 {
                WorkerSlot::BuilderRunning
            } else {
                WorkerSlot::Full
            })
        })
        .await
    }

    pub async fn release_worker_slot(
        &self,
        master: MasterId,
        worker: WorkerId,
        slot: i64,
    ) -> Result<(), StoreError> {
        self.retrying("release_worker_slot", || async {
            sqlx::query(
                "DELETE FROM worker_leases WHERE workerid = $1 AND slot = $2 AND masterid = $3",
            )
            .bind(worker)
            .bind(slot)
            .bind(master)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// How many slots of each worker are held, for choosing the least busy worker, and
    /// which builders each worker runs (a worker runs one build of a builder at a time).
    pub async fn worker_load(&self) -> Result<WorkerLoad, StoreError> {
        self.retrying("worker_load", || async {
            let rows = sqlx::query("SELECT workerid, builderid FROM worker_leases")
                .fetch_all(&self.pool)
                .await?;
            let mut load = WorkerLoad::default();
            for r in rows {
                let worker: WorkerId = r.try_get("workerid")?;
                *load.slots.entry(worker).or_default() += 1;
                if let Some(builder) = r.try_get::<Option<BuilderId>, _>("builderid")? {
                    load.running.insert((worker, builder));
                }
            }
            Ok(load)
        })
        .await
    }

    /// A master's `(active, last_active)` by name, if it was ever registered.
    pub async fn master_liveness(&self, name: &str) -> Result<Option<(bool, i64)>, StoreError> {
        self.retrying("master_liveness", || async {
            let row = sqlx::query("SELECT active, last_active FROM masters WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row
                .map(|r| -> Result<(bool, i64), sqlx::Error> {
                    Ok((
                        r.try_get::<i64, _>("active")? != 0,
                        r.try_get("last_active")?,
                    ))
                })
                .transpose()?)
        })
        .await
    }

    /// How many build slots of `worker` are held (by any master).
    pub async fn worker_slots_held(&self, worker: WorkerId) -> Result<i64, StoreError> {
        self.retrying("worker_slots_held", || async {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM worker_leases WHERE workerid = $1")
                .bind(worker)
                .fetch_one(&self.pool)
                .await?;
            Ok(row.try_get("n")?)
        })
        .await
    }

    /// Workers connected to some active master (or to `only` if given), not paused.
    pub async fn available_workers(
        &self,
        only: Option<MasterId>,
    ) -> Result<std::collections::HashSet<WorkerId>, StoreError> {
        self.retrying("available_workers", || async {
            let rows = sqlx::query(
                "SELECT DISTINCT w.id FROM workers w \
                 JOIN connected_workers c ON c.workerid = w.id \
                 JOIN masters m ON m.id = c.masterid \
                 WHERE m.active = 1 AND w.paused = 0 AND ($1 < 0 OR m.id = $1)",
            )
            .bind(only.unwrap_or(-1))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// Records that `worker` left `master` (idempotent).
    pub async fn worker_disconnected(
        &self,
        master: MasterId,
        worker: WorkerId,
    ) -> Result<(), StoreError> {
        self.retrying("worker_disconnected", || async {
            sqlx::query("DELETE FROM connected_workers WHERE masterid = $1 AND workerid = $2")
                .bind(master)
                .bind(worker)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores what a worker reports about itself (`workerinfo` in the API).
    pub async fn set_worker_info(&self, worker: WorkerId, info: &Value) -> Result<(), StoreError> {
        let text = info.to_string();
        self.retrying("set_worker_info", || async {
            sqlx::query("UPDATE workers SET info = $1 WHERE id = $2")
                .bind(&text)
                .bind(worker)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn set_worker_paused(
        &self,
        worker: WorkerId,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE workers SET paused = $1 WHERE id = $2";
        self.set_flag("set_worker_paused", sql, worker, paused)
            .await
    }

    pub async fn worker_name(&self, worker: WorkerId) -> Result<Option<String>, StoreError> {
        self.retrying("worker_name", || async {
            let row = sqlx::query("SELECT name FROM workers WHERE id = $1")
                .bind(worker)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| r.try_get("name")).transpose()?)
        })
        .await
    }

    /// Declares the builders this master runs (replacing what it declared before).
    pub async fn set_builder_masters(
        &self,
        master: MasterId,
        builders: &[BuilderId],
    ) -> Result<(), StoreError> {
        self.retrying("set_builder_masters", || async {
            let mut tx = self.begin_write().await?;
            sqlx::query("DELETE FROM builder_masters WHERE masterid = $1")
                .bind(master)
                .execute(&mut *tx)
                .await?;
            for b in builders {
                sqlx::query("INSERT INTO builder_masters (builderid, masterid) VALUES ($1, $2)")
                    .bind(*b)
                    .bind(master)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn set_master_state(&self, master: MasterId, state: &str) -> Result<(), StoreError> {
        self.retrying("set_master_state", || async {
            sqlx::query("UPDATE masters SET state = $1 WHERE id = $2")
                .bind(state)
                .bind(master)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn set_builder_description(
        &self,
        builder: BuilderId,
        description: Option<&str>,
    ) -> Result<(), StoreError> {
        self.retrying("set_builder_description", || async {
            sqlx::query("UPDATE builders SET description = $1 WHERE id = $2")
                .bind(description)
                .bind(builder)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// The id of scheduler `name`, created if new.
    pub async fn ensure_scheduler(&self, name: &str) -> Result<SchedulerId, StoreError> {
        self.ensure_named("ensure_scheduler", "schedulers", name)
            .await
    }

    /// Makes `master` the scheduler's owner if nobody owns it; true if `master` owns it now.
    pub async fn claim_scheduler(
        &self,
        master: MasterId,
        scheduler: SchedulerId,
    ) -> Result<bool, StoreError> {
        self.retrying("claim_scheduler", || async {
            let now = self.now();
            sqlx::query(
                "INSERT INTO scheduler_masters (schedulerid, masterid, claimed_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (schedulerid) DO NOTHING",
            )
            .bind(scheduler)
            .bind(master)
            .bind(now)
            .execute(&self.pool)
            .await?;
            let owner: i64 =
                sqlx::query("SELECT masterid FROM scheduler_masters WHERE schedulerid = $1")
                    .bind(scheduler)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("masterid")?;
            Ok(owner == master)
        })
        .await
    }

    /// Releases every scheduler `master` owns (on a clean stop).
    pub async fn release_schedulers(&self, master: MasterId) -> Result<(), StoreError> {
        self.retrying("release_schedulers", || async {
            sqlx::query("DELETE FROM scheduler_masters WHERE masterid = $1")
                .bind(master)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// When a periodic scheduler last fired.
    pub async fn scheduler_last_run(
        &self,
        scheduler: SchedulerId,
    ) -> Result<Option<i64>, StoreError> {
        self.retrying("scheduler_last_run", || async {
            let row = sqlx::query("SELECT last_run FROM schedulers WHERE id = $1")
                .bind(scheduler)
                .fetch_one(&self.pool)
                .await?;
            Ok(row.try_get("last_run")?)
        })
        .await
    }

    /// Fires a periodic scheduler: queues `buildset` and records `now` as its last run, in
    /// one transaction guarded by the owner check and the previous `last_run` (so a second
    /// owner after a takeover cannot fire the same period again). `None` if it lost.
    pub async fn fire_periodic(
        &self,
        master: MasterId,
        scheduler: SchedulerId,
        previous: Option<i64>,
        buildset: &NewBuildset,
    ) -> Result<Option<(BuildsetId, Vec<(BuilderId, BuildRequestId)>)>, StoreError> {
        self.retrying("fire_periodic", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, master).await?;
            let done = sqlx::query(
                "UPDATE schedulers SET last_run = $1 WHERE id = $2 \
                 AND COALESCE(last_run, -1) = $3 \
                 AND id IN (SELECT schedulerid FROM scheduler_masters WHERE masterid = $4)",
            )
            .bind(now)
            .bind(scheduler)
            .bind(previous.unwrap_or(-1))
            .bind(master)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
            let made = insert_buildset(&mut tx, now, buildset).await?;
            tx.commit().await?;
            Ok(Some(made))
        })
        .await
    }

    /// Queues a buildset with its properties: one request per builder.
    pub async fn queue_buildset(
        &self,
        buildset: &NewBuildset,
    ) -> Result<(BuildsetId, Vec<(BuilderId, BuildRequestId)>), StoreError> {
        self.retrying("queue_buildset", || async {
            let now = self.now();
            let mut tx = self.begin_write().await?;
            let made = insert_buildset(&mut tx, now, buildset).await?;
            tx.commit().await?;
            Ok(made)
        })
        .await
    }

    /// A buildset's properties, `name → (value, source)`.
    pub async fn buildset_properties(
        &self,
        buildset: BuildsetId,
    ) -> Result<BTreeMap<String, (Value, String)>, StoreError> {
        self.retrying("buildset_properties", || async {
            let rows = sqlx::query(
                "SELECT property_name, property_value FROM buildset_properties \
                 WHERE buildsetid = $1",
            )
            .bind(buildset)
            .fetch_all(&self.pool)
            .await?;
            let mut props = BTreeMap::new();
            for r in rows {
                let name: String = r.try_get("property_name")?;
                let raw: String = r.try_get("property_value")?;
                if let Ok(Value::Array(pair)) = serde_json::from_str::<Value>(&raw) {
                    if let [v, Value::String(src)] = pair.as_slice() {
                        props.insert(name, (v.clone(), src.clone()));
                    }
                }
            }
            Ok(props)
        })
        .await
    }

    /// A buildset's reason, for a rebuild.
    pub async fn buildset_reason(
        &self,
        buildset: BuildsetId,
    ) -> Result<Option<String>, StoreError> {
        self.retrying("buildset_reason", || async {
            let row = sqlx::query("SELECT reason FROM buildsets WHERE id = $1")
                .bind(buildset)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.and_then(|r| r.try_get("reason").ok()))
        })
        .await
    }

    /// Marks the buildset complete if all its requests are; returns its results then (the
    /// worst of its requests', as Buildbot computes them).
    pub async fn maybe_complete_buildset(
        &self,
        buildset: BuildsetId,
    ) -> Result<Option<Results>, StoreError> {
        self.retrying("maybe_complete_buildset", || async {
            let mut tx = self.begin_write().await?;
            let done = super::progress::complete_buildset_in(&mut tx, buildset, self.now()).await?;
            tx.commit().await?;
            Ok(done)
        })
        .await
    }

    /// Completes an unclaimed, incomplete request as CANCELLED (claiming it for `master` in
    /// the same transaction so no other master can start it). False if it was already
    /// claimed or complete.
    pub async fn cancel_buildrequest(
        &self,
        master: MasterId,
        brid: BuildRequestId,
    ) -> Result<bool, StoreError> {
        self.retrying("cancel_buildrequest", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, master).await?;
            if !Self::claim_in(&mut tx, master, now, brid).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(
                "UPDATE buildrequests SET complete = 1, results = $1, complete_at = $2 WHERE id = $3",
            )
            .bind(Results::Cancelled.code())
            .bind(now)
            .bind(brid)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    pub async fn set_build_state(
        &self,
        build: BuildId,
        state_string: &str,
    ) -> Result<(), StoreError> {
        self.retrying("set_build_state", || async {
            sqlx::query("UPDATE builds SET state_string = $1 WHERE id = $2")
                .bind(state_string)
                .bind(build)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Appends complete lines (`text` ends with a newline, as Buildbot's log chunks do) to a
    /// log; returns the first and last line numbers written.
    pub async fn append_log(&self, log: LogId, text: &str) -> Result<(i64, i64), StoreError> {
        if !text.contains('\n') {
            return Err(StoreError::Db(sqlx::Error::Protocol(
                "append_log needs newline-terminated text".into(),
            )));
        }
        self.retrying("append_log", || async {
            let mut tx = self.begin_write().await?;
            let lines = super::progress::append_in(&mut tx, log, text).await?;
            tx.commit().await?;
            Ok(lines)
        })
        .await
    }

    /// Records a change; returns its id.
    pub async fn add_change(&self, c: &ChangeRecord) -> Result<ChangeId, StoreError> {
        let props: serde_json::Map<String, Value> = c
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::Array(vec![v.clone(), "Change".into()])))
            .collect();
        let props = Value::Object(props).to_string();
        let files = serde_json::to_string(&c.files).unwrap_or_else(|_| "[]".into());
        self.retrying("add_change", || async {
            let row = sqlx::query(
                "INSERT INTO changes (author, committer, comments, branch, revision, revlink, \
                 when_timestamp, category, repository, codebase, project, properties, files) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 RETURNING changeid",
            )
            .bind(&c.author)
            .bind(&c.committer)
            .bind(&c.comments)
            .bind(&c.branch)
            .bind(&c.revision)
            .bind(&c.revlink)
            .bind(c.when_timestamp.unwrap_or_else(|| self.now()))
            .bind(&c.category)
            .bind(&c.repository)
            .bind(&c.codebase)
            .bind(&c.project)
            .bind(&props)
            .bind(&files)
            .fetch_one(&self.pool)
            .await?;
            Ok(row.try_get("changeid")?)
        })
        .await
    }

    /// What `master` holds that is older than `before` (Unix seconds): unfinished builds
    /// `(build, brid)`, claims on incomplete requests, and worker slots `(worker, slot,
    /// brid)`. The master compares these with what it is really running, to repair
    /// bookkeeping a database outage interrupted.
    #[allow(clippy::type_complexity)]
    pub async fn held_by(
        &self,
        master: MasterId,
        before: i64,
    ) -> Result<
        (
            Vec<(BuildId, BuildRequestId)>,
            Vec<BuildRequestId>,
            Vec<(WorkerId, i64, BuildRequestId)>,
        ),
        StoreError,
    > {
        self.retrying("held_by", || async {
            let builds = sqlx::query(
                "SELECT id, buildrequestid FROM builds \
                 WHERE masterid = $1 AND complete_at IS NULL AND started_at < $2",
            )
            .bind(master)
            .bind(before)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("buildrequestid")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let claims = sqlx::query(
                "SELECT c.brid FROM buildrequest_claims c JOIN buildrequests r ON r.id = c.brid \
                 WHERE c.masterid = $1 AND r.complete = 0 AND c.claimed_at < $2",
            )
            .bind(master)
            .bind(before)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("brid"))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let leases = sqlx::query(
                "SELECT workerid, slot, brid FROM worker_leases \
                 WHERE masterid = $1 AND acquired_at < $2",
            )
            .bind(master)
            .bind(before)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("workerid")?,
                    r.try_get("slot")?,
                    r.try_get("brid")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok((builds, claims, leases))
        })
        .await
    }

    /// The ids of this master's unfinished builds (to stop them on shutdown).
    pub async fn running_builds_of(&self, master: MasterId) -> Result<Vec<BuildId>, StoreError> {
        self.retrying("running_builds_of", || async {
            let rows = sqlx::query(
                "SELECT id FROM builds WHERE masterid = $1 AND complete_at IS NULL ORDER BY id",
            )
            .bind(master)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?)
        })
        .await
    }
}

async fn insert_buildset(
    tx: &mut super::WriteTx,
    now: i64,
    b: &NewBuildset,
) -> Result<(BuildsetId, Vec<(BuilderId, BuildRequestId)>), StoreError> {
    let bsid: BuildsetId = sqlx::query(
        "INSERT INTO buildsets (reason, submitted_at, scheduler, changeid) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&b.reason)
    .bind(now)
    .bind(&b.scheduler)
    .bind(b.changeid)
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
    // One statement per 500 properties, as a build's (store::progress::begin_step).
    let props: Vec<_> = b.properties.iter().collect();
    for chunk in props.chunks(500) {
        let sql = format!(
            "INSERT INTO buildset_properties (buildsetid, property_name, property_value) \
             VALUES {}",
            super::progress::rows_sharing_first(chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql).bind(bsid);
        for (name, (value, source)) in chunk {
            q = q
                .bind(name.as_str())
                .bind(Value::Array(vec![value.clone(), Value::String(source.clone())]).to_string());
        }
        q.execute(&mut **tx).await?;
    }
    let mut brids = Vec::with_capacity(b.builders.len());
    for builder in &b.builders {
        let brid: BuildRequestId = sqlx::query(
            "INSERT INTO buildrequests (buildsetid, builderid, priority, submitted_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(bsid)
        .bind(*builder)
        .bind(b.priority)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?
        .try_get("id")?;
        brids.push((*builder, brid));
    }
    Ok((bsid, brids))
}
