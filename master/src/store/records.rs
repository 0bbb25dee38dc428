//! Record keeping around the claim protocol: builders, workers, buildsets and their
//! requests, builds, and which worker is connected to which master. Enough for the queue
//! and the build runner; steps, logs and log chunks have tables but no operations yet.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    is_unique_violation, BuildId, BuildRequestId, BuilderId, BuildsetId, MasterId, Store, WorkerId,
};
use crate::{Results, StoreError};

/// How often `add_build` retries when another master took the same build number.
const NUMBER_RACE_TRIES: usize = 10;

/// A row of `buildrequests`, with the claim joined in (as the data API shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub id: BuildRequestId,
    pub buildsetid: BuildsetId,
    pub builderid: BuilderId,
    pub priority: i64,
    pub complete: bool,
    pub results: Option<Results>,
    pub submitted_at: i64,
    pub complete_at: Option<i64>,
    pub claimed_by_masterid: Option<MasterId>,
    pub claimed_at: Option<i64>,
}

/// A row of `builds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: BuildId,
    pub number: i64,
    pub builderid: BuilderId,
    pub buildrequestid: BuildRequestId,
    pub workerid: Option<WorkerId>,
    pub masterid: MasterId,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub state_string: String,
    pub results: Option<Results>,
}

const BUILDREQUEST_COLUMNS: &str = "r.id, r.buildsetid, r.builderid, r.priority, r.complete, \
     r.results, r.submitted_at, r.complete_at, c.masterid AS claimed_by, c.claimed_at";

fn results_of(code: Option<i64>) -> Option<Results> {
    code.and_then(Results::from_code)
}

fn buildrequest_from_row(row: &AnyRow) -> Result<BuildRequest, sqlx::Error> {
    Ok(BuildRequest {
        id: row.try_get("id")?,
        buildsetid: row.try_get("buildsetid")?,
        builderid: row.try_get("builderid")?,
        priority: row.try_get("priority")?,
        complete: row.try_get::<i64, _>("complete")? != 0,
        results: results_of(row.try_get("results")?),
        submitted_at: row.try_get("submitted_at")?,
        complete_at: row.try_get("complete_at")?,
        claimed_by_masterid: row.try_get("claimed_by")?,
        claimed_at: row.try_get("claimed_at")?,
    })
}

fn build_from_row(row: &AnyRow) -> Result<Build, sqlx::Error> {
    Ok(Build {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        builderid: row.try_get("builderid")?,
        buildrequestid: row.try_get("buildrequestid")?,
        workerid: row.try_get("workerid")?,
        masterid: row.try_get("masterid")?,
        started_at: row.try_get("started_at")?,
        complete_at: row.try_get("complete_at")?,
        state_string: row.try_get("state_string")?,
        results: results_of(row.try_get("results")?),
    })
}

impl Store {
    /// The id of the builder named `name`, created if new (config is applied at every start).
    pub async fn ensure_builder(&self, name: &str) -> Result<BuilderId, StoreError> {
        self.ensure_named("ensure_builder", "builders", name).await
    }

    /// The id of the worker named `name`, created if new.
    pub async fn ensure_worker(&self, name: &str) -> Result<WorkerId, StoreError> {
        self.ensure_named("ensure_worker", "workers", name).await
    }

    pub(super) async fn ensure_named(
        &self,
        op: &'static str,
        table: &'static str,
        name: &str,
    ) -> Result<i64, StoreError> {
        // DO UPDATE (a no-op write), not DO NOTHING, so RETURNING yields the existing row.
        let sql = format!(
            "INSERT INTO {table} (name) VALUES ($1) \
             ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id"
        );
        self.retrying(op, || async {
            let row = sqlx::query(&sql).bind(name).fetch_one(&self.pool).await?;
            Ok(row.try_get("id")?)
        })
        .await
    }

    /// Sets one boolean column of one row (`sql`: `UPDATE <table> SET <flag> = $1 WHERE id =
    /// $2`); false if there is no such row.
    pub(super) async fn set_flag(
        &self,
        op: &'static str,
        sql: &'static str,
        id: i64,
        value: bool,
    ) -> Result<bool, StoreError> {
        self.retrying(op, || async {
            let done = sqlx::query(sql)
                .bind(i64::from(value))
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    /// Enables or disables a scheduler (Buildbot's `schedulers/<id>` `enable`); false if
    /// there is no such scheduler.
    pub async fn set_scheduler_enabled(
        &self,
        scheduler: i64,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE schedulers SET enabled = $1 WHERE id = $2";
        self.set_flag("set_scheduler_enabled", sql, scheduler, enabled)
            .await
    }

    /// Whether a scheduler fires (an unknown one: yes, as it is created enabled).
    pub async fn scheduler_enabled(&self, scheduler: i64) -> Result<bool, StoreError> {
        self.retrying("scheduler_enabled", || async {
            let row = sqlx::query("SELECT enabled FROM schedulers WHERE id = $1")
                .bind(scheduler)
                .fetch_optional(&self.pool)
                .await?;
            Ok(match row {
                Some(r) => r.try_get::<i64, _>("enabled")? != 0,
                None => true,
            })
        })
        .await
    }

    /// Queues a buildset with one request per builder, as Buildbot's `addBuildset`; returns
    /// the buildset id and `(builderid, brid)` pairs in the order given.
    pub async fn add_buildset(
        &self,
        reason: &str,
        builders: &[BuilderId],
        priority: i64,
    ) -> Result<(BuildsetId, Vec<(BuilderId, BuildRequestId)>), StoreError> {
        self.retrying("add_buildset", || async {
            let now = self.now();
            let mut tx = self.begin_write().await?;
            let bsid: BuildsetId = sqlx::query(
                "INSERT INTO buildsets (reason, submitted_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(reason)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            let mut brids = Vec::with_capacity(builders.len());
            for builder in builders {
                let brid: BuildRequestId = sqlx::query(
                    "INSERT INTO buildrequests (buildsetid, builderid, priority, submitted_at) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(bsid)
                .bind(*builder)
                .bind(priority)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
                .try_get("id")?;
                brids.push((*builder, brid));
            }
            tx.commit().await?;
            Ok((bsid, brids))
        })
        .await
    }

    /// Incomplete, unclaimed requests, highest priority first, then oldest: what a master
    /// offers to its idle workers. `builder` narrows to one builder.
    pub async fn unclaimed_buildrequests(
        &self,
        builder: Option<BuilderId>,
        limit: i64,
    ) -> Result<Vec<BuildRequest>, StoreError> {
        let sql = format!(
            "SELECT {BUILDREQUEST_COLUMNS} FROM buildrequests r \
             LEFT JOIN buildrequest_claims c ON c.brid = r.id \
             WHERE r.complete = 0 AND c.brid IS NULL AND ($1 < 0 OR r.builderid = $1) \
             ORDER BY r.priority DESC, r.submitted_at, r.id LIMIT $2"
        );
        self.retrying("unclaimed_buildrequests", || async {
            let rows = sqlx::query(&sql)
                .bind(builder.unwrap_or(-1))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows
                .iter()
                .map(buildrequest_from_row)
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The builders with at least one unclaimed, incomplete request: the queue's first,
    /// cheap question, so a pass with nothing to start reads no workers.
    pub async fn builders_with_unclaimed(
        &self,
    ) -> Result<std::collections::HashSet<BuilderId>, StoreError> {
        self.retrying("builders_with_unclaimed", || async {
            let rows = sqlx::query(
                "SELECT DISTINCT r.builderid FROM buildrequests r \
                 LEFT JOIN buildrequest_claims c ON c.brid = r.id \
                 WHERE r.complete = 0 AND c.brid IS NULL",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get("builderid"))
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    pub async fn get_buildrequest(
        &self,
        brid: BuildRequestId,
    ) -> Result<Option<BuildRequest>, StoreError> {
        let sql = format!(
            "SELECT {BUILDREQUEST_COLUMNS} FROM buildrequests r \
             LEFT JOIN buildrequest_claims c ON c.brid = r.id WHERE r.id = $1"
        );
        self.retrying("get_buildrequest", || async {
            let row = sqlx::query(&sql)
                .bind(brid)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.as_ref().map(buildrequest_from_row).transpose()?)
        })
        .await
    }

    /// Every claim row as `(brid, masterid)`, sorted by brid (for checks and the data API).
    pub async fn claims(&self) -> Result<Vec<(BuildRequestId, MasterId)>, StoreError> {
        self.retrying("claims", || async {
            let rows = sqlx::query("SELECT brid, masterid FROM buildrequest_claims ORDER BY brid")
                .fetch_all(&self.pool)
                .await?;
            Ok(rows
                .iter()
                .map(|r| Ok((r.try_get("brid")?, r.try_get("masterid")?)))
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// Starts a build of a request `master` holds, numbered next for its builder; returns
    /// `(build id, number)`. If the request already has an unfinished build on this master,
    /// returns that one (see the retry note in `store`). Fails with
    /// [`StoreError::NotClaimed`] if the claim is not (or no longer) the master's.
    pub async fn add_build(
        &self,
        master: MasterId,
        brid: BuildRequestId,
        worker: Option<WorkerId>,
        state_string: &str,
    ) -> Result<(BuildId, i64), StoreError> {
        let mut tries = 0;
        loop {
            let attempt = self
                .retrying("add_build", || async {
                    let mut tx = self.begin_write().await?;
                    let now = self.touch_master(&mut tx, master).await?;
                    let builder: Option<BuilderId> = sqlx::query(
                        "SELECT r.builderid FROM buildrequests r \
                         JOIN buildrequest_claims c ON c.brid = r.id \
                         WHERE r.id = $1 AND r.complete = 0 AND c.masterid = $2",
                    )
                    .bind(brid)
                    .bind(master)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("builderid"))
                    .transpose()?;
                    let Some(builder) = builder else {
                        return Err(StoreError::NotClaimed { masterid: master });
                    };
                    // One unfinished build per request and master: finding one means an
                    // earlier try committed and only its acknowledgement was lost.
                    if let Some(row) = sqlx::query(
                        "SELECT id, number FROM builds \
                         WHERE buildrequestid = $1 AND masterid = $2 AND complete_at IS NULL",
                    )
                    .bind(brid)
                    .bind(master)
                    .fetch_optional(&mut *tx)
                    .await?
                    {
                        tx.commit().await?;
                        return Ok((row.try_get("id")?, row.try_get("number")?));
                    }
                    // Two masters can read the same MAX(number); the UNIQUE (builderid,
                    // number) key makes one of them fail, and it tries again.
                    let row = sqlx::query(
                        "INSERT INTO builds (number, builderid, buildrequestid, workerid, \
                         masterid, started_at, state_string) \
                         SELECT COALESCE(MAX(number), 0) + 1, $1, $2, $3, $4, $5, $6 \
                         FROM builds WHERE builderid = $1 RETURNING id, number",
                    )
                    .bind(builder)
                    .bind(brid)
                    .bind(worker)
                    .bind(master)
                    .bind(now)
                    .bind(state_string)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok((row.try_get("id")?, row.try_get("number")?))
                })
                .await;
            match attempt {
                Err(e) if is_unique_violation(&e) && tries < NUMBER_RACE_TRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// Finishes a build. Only its own master may (an expired master's builds were already
    /// finished as RETRY by the master that expired it): otherwise `NotClaimed`.
    pub async fn finish_build(
        &self,
        master: MasterId,
        build: BuildId,
        results: Results,
    ) -> Result<(), StoreError> {
        self.retrying("finish_build", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, master).await?;
            let done = sqlx::query(
                "UPDATE builds SET complete_at = $1, results = $2 \
                 WHERE id = $3 AND masterid = $4 AND complete_at IS NULL",
            )
            .bind(now)
            .bind(results.code())
            .bind(build)
            .bind(master)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotClaimed { masterid: master });
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn get_build(&self, build: BuildId) -> Result<Option<Build>, StoreError> {
        self.retrying("get_build", || async {
            let row = sqlx::query(
                "SELECT id, number, builderid, buildrequestid, workerid, masterid, started_at, \
                 complete_at, state_string, results FROM builds WHERE id = $1",
            )
            .bind(build)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.as_ref().map(build_from_row).transpose()?)
        })
        .await
    }

    /// Records that `worker` is connected to `master` (idempotent).
    pub async fn worker_connected(
        &self,
        master: MasterId,
        worker: WorkerId,
    ) -> Result<(), StoreError> {
        self.retrying("worker_connected", || async {
            sqlx::query(
                "INSERT INTO connected_workers (masterid, workerid) VALUES ($1, $2) \
                 ON CONFLICT (masterid, workerid) DO NOTHING",
            )
            .bind(master)
            .bind(worker)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// The masters `worker` is connected to (Buildbot's `connected_to`), sorted.
    pub async fn worker_connected_to(&self, worker: WorkerId) -> Result<Vec<MasterId>, StoreError> {
        self.retrying("worker_connected_to", || async {
            let rows = sqlx::query(
                "SELECT masterid FROM connected_workers WHERE workerid = $1 ORDER BY masterid",
            )
            .bind(worker)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get("masterid"))
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Whether a master is marked active (for tests and the data API).
    pub async fn master_active(&self, master: MasterId) -> Result<Option<bool>, StoreError> {
        self.retrying("master_active", || async {
            let row = sqlx::query("SELECT active FROM masters WHERE id = $1")
                .bind(master)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row
                .map(|r| r.try_get::<i64, _>("active").map(|a| a != 0))
                .transpose()?)
        })
        .await
    }

    /// Completes (up to `limit`) incomplete buildsets whose requests have all completed:
    /// the repair for a stop or a crash between a request's completion and its buildset's.
    /// Returns each with its results, to publish `buildsets.<id>.complete`.
    pub async fn complete_finished_buildsets(
        &self,
        limit: i64,
    ) -> Result<Vec<(BuildsetId, Results)>, StoreError> {
        let candidates: Vec<BuildsetId> = self
            .retrying("finished_buildsets", || async {
                let rows = sqlx::query(
                    "SELECT s.id FROM buildsets s WHERE s.complete = 0 \
                     AND EXISTS (SELECT 1 FROM buildrequests r WHERE r.buildsetid = s.id) \
                     AND NOT EXISTS (SELECT 1 FROM buildrequests r \
                                     WHERE r.buildsetid = s.id AND r.complete = 0) \
                     ORDER BY s.id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.try_get("id"))
                    .collect::<Result<_, _>>()?)
            })
            .await?;
        let mut done = Vec::new();
        for bsid in candidates {
            if let Some(results) = self.maybe_complete_buildset(bsid).await? {
                done.push((bsid, results));
            }
        }
        Ok(done)
    }
}
