//! Multimaster coordination: master registration and heartbeat, claiming build requests,
//! releasing and completing them, and expiring masters that went silent.
//!
//! Modelled on Buildbot 4.3 (`buildbot/db/masters.py`, `buildbot/db/buildrequests.py`)
//! with one deliberate difference: expiring a master RELEASES its claims (Buildbot leaves
//! them, so a dead master's requests are stuck until someone cleans up by hand) and returns
//! the released request ids so the caller can publish `buildrequests.<id>.unclaimed`.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    is_foreign_key_violation, is_unique_violation, placeholders, BuildId, BuildRequestId, MasterId,
    Store,
};
use crate::{Results, StoreError};

/// Most rows one statement touches: keeps the bind count far below SQLite's and
/// PostgreSQL's limits (32766 and 65535) whatever the batch size.
const CHUNK: usize = 500;

/// What [`Store::expire_masters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Masters marked inactive by this call (publish `masters.<id>.stopped`).
    pub masters: Vec<MasterId>,
    /// Requests whose claims were released (publish `buildrequests.<id>.unclaimed`), sorted.
    pub released: Vec<BuildRequestId>,
    /// Unfinished builds of those masters, now finished with RETRY, sorted.
    pub retried_builds: Vec<BuildId>,
}

impl Expiry {
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }
}

impl Store {
    /// Registers a master by name (Buildbot uses `hostname:/basedir`), or re-activates it
    /// if the name is known; returns its id. A master that was expired calls this again.
    pub async fn register_master(&self, name: &str) -> Result<MasterId, StoreError> {
        self.retrying("register_master", || async {
            let row: AnyRow = sqlx::query(
                "INSERT INTO masters (name, active, last_active) VALUES ($1, 1, $2) \
                 ON CONFLICT (name) DO UPDATE SET active = 1, last_active = excluded.last_active, \
                 state = 'running' RETURNING id",
            )
            .bind(name)
            .bind(self.now())
            .fetch_one(&self.pool)
            .await?;
            Ok(row.try_get("id")?)
        })
        .await
    }

    /// Records that the master is alive. Fails with [`StoreError::MasterInactive`] if another
    /// master expired it meanwhile: its claims are gone and it must register again.
    pub async fn heartbeat(&self, master: MasterId) -> Result<(), StoreError> {
        self.retrying("heartbeat", || async {
            let mut tx = self.begin_write().await?;
            self.touch_master(&mut tx, master).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Marks a master inactive on a clean stop. Its claims should have been released or
    /// completed first; anything left is released here too and returned, as expiry does.
    pub async fn deactivate_master(&self, master: MasterId) -> Result<Expiry, StoreError> {
        self.retrying("deactivate_master", || async {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("UPDATE masters SET active = 0 WHERE id = $1 AND active = 1")
                .bind(master)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                tx.commit().await?;
                return Ok(Expiry::default());
            }
            let expiry = self.housekeep(&mut tx, vec![master]).await?;
            tx.commit().await?;
            Ok(expiry)
        })
        .await
    }

    /// Claims every request in `brids` for `master`, or none of them: if another master
    /// holds (or has completed) any, fails with [`StoreError::AlreadyClaimed`]; if any does
    /// not exist, with [`StoreError::UnknownBuildRequest`]. The unique
    /// key on `buildrequest_claims.brid` picks exactly one winner however many masters race.
    /// Claiming requests the caller already holds succeeds (so a retry after a lost commit
    /// acknowledgement is harmless). Also counts as a heartbeat.
    pub async fn claim_buildrequests(
        &self,
        master: MasterId,
        brids: &[BuildRequestId],
    ) -> Result<(), StoreError> {
        if brids.is_empty() {
            return Ok(());
        }
        // A fixed lock order: two masters inserting overlapping batches in opposite orders
        // would otherwise deadlock on PostgreSQL.
        let mut brids = brids.to_vec();
        brids.sort_unstable();
        brids.dedup();
        self.retrying("claim_buildrequests", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, master).await?;
            let mut inserted = Ok(());
            for chunk in brids.chunks(CHUNK) {
                let values = (0..chunk.len())
                    .map(|i| format!("(${}, $1, $2)", i + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) VALUES {values}"
                );
                let mut q = sqlx::query(&sql).bind(master).bind(now);
                for brid in chunk {
                    q = q.bind(*brid);
                }
                if let Err(e) = q.execute(&mut *tx).await {
                    inserted = Err(StoreError::from(e));
                    break;
                }
            }
            match inserted {
                Ok(()) => {
                    tx.commit().await?;
                    Ok(())
                }
                Err(e) if is_unique_violation(&e) => {
                    // PostgreSQL aborts the transaction on the error; start afresh to look.
                    tx.rollback().await?;
                    if self.all_claimed_by(master, &brids).await? {
                        Ok(())
                    } else {
                        Err(StoreError::AlreadyClaimed)
                    }
                }
                Err(e) if is_foreign_key_violation(&e) => {
                    tx.rollback().await?;
                    Err(StoreError::UnknownBuildRequest)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Claims request `brid` for `master` and takes one of `worker`'s `max_builds` slots
    /// for it, in one transaction: both or neither. The claim is arbitrated as in
    /// [`Store::claim_buildrequests`] (another master's claim, a completed or unknown
    /// request: `Err(AlreadyClaimed)`), the slot as in [`Store::acquire_worker_slot`]
    /// (`Ok(Full)` or `Ok(BuilderRunning)`, and the claim is not taken). A retry after a
    /// lost commit acknowledgement finds both and returns the slot.
    pub async fn claim_with_slot(
        &self,
        master: MasterId,
        brid: BuildRequestId,
        worker: super::WorkerId,
        max_builds: u32,
    ) -> Result<super::WorkerSlot, StoreError> {
        use super::WorkerSlot;
        let outcome = self
            .retrying("claim_with_slot", || async {
                let mut tx = self.begin_write().await?;
                let now = self.touch_master(&mut tx, master).await?;
                if !Self::claim_in(&mut tx, master, now, brid).await? {
                    tx.rollback().await?;
                    return Ok(None);
                }
                for slot in 0..i64::from(max_builds) {
                    let taken = sqlx::query(
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
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if taken == 1 {
                        tx.commit().await?;
                        return Ok(Some(WorkerSlot::Taken(slot)));
                    }
                }
                tx.rollback().await?;
                Ok(Some(WorkerSlot::Full))
            })
            .await?;
        match outcome {
            Some(WorkerSlot::Taken(slot)) => Ok(WorkerSlot::Taken(slot)),
            Some(_) => self.slot_refusal(worker, brid).await,
            None => match self.held_slot(master, worker, brid).await? {
                // Our own earlier try committed.
                Some(slot) => Ok(WorkerSlot::Taken(slot)),
                None => Err(StoreError::AlreadyClaimed),
            },
        }
    }

    /// The slot `master` holds on `worker` for `brid`, if its claim is `master`'s too.
    async fn held_slot(
        &self,
        master: MasterId,
        worker: super::WorkerId,
        brid: BuildRequestId,
    ) -> Result<Option<i64>, StoreError> {
        self.retrying("held_slot", || async {
            let row = sqlx::query(
                "SELECT l.slot FROM worker_leases l JOIN buildrequest_claims c \
                 ON c.brid = l.brid AND c.masterid = l.masterid \
                 WHERE l.workerid = $1 AND l.brid = $2 AND l.masterid = $3",
            )
            .bind(worker)
            .bind(brid)
            .bind(master)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|r| r.try_get("slot")).transpose()?)
        })
        .await
    }

    /// Releases `master`'s claims on those of `brids` that are not complete (a build that
    /// will not run here, e.g. no worker after all). Returns the released ids, sorted; ids
    /// the master does not hold are ignored.
    pub async fn unclaim_buildrequests(
        &self,
        master: MasterId,
        brids: &[BuildRequestId],
    ) -> Result<Vec<BuildRequestId>, StoreError> {
        if brids.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying("unclaim_buildrequests", || async {
            let mut tx = self.begin_write().await?;
            let mut released = Vec::new();
            for chunk in brids.chunks(CHUNK) {
                let sql = format!(
                    "DELETE FROM buildrequest_claims WHERE masterid = $1 AND brid IN ({}) \
                     AND brid IN (SELECT id FROM buildrequests WHERE complete = 0) RETURNING brid",
                    placeholders(2, chunk.len())
                );
                let mut q = sqlx::query(&sql).bind(master);
                for brid in chunk {
                    q = q.bind(*brid);
                }
                for row in q.fetch_all(&mut *tx).await? {
                    released.push(row.try_get::<i64, _>("brid")?);
                }
            }
            tx.commit().await?;
            released.sort_unstable();
            Ok(released)
        })
        .await
    }

    /// Marks `brids` complete with `results`. All or nothing: every request must be claimed
    /// by `master` and not yet complete, else [`StoreError::NotClaimed`] and nothing changes
    /// (so a master that was expired mid-build cannot report a result for a request that
    /// may already be running elsewhere). The claim rows stay, as in Buildbot, so a completed
    /// request can never be claimed again. Repeating a completion that committed succeeds.
    pub async fn complete_buildrequests(
        &self,
        master: MasterId,
        brids: &[BuildRequestId],
        results: Results,
    ) -> Result<(), StoreError> {
        if brids.is_empty() {
            return Ok(());
        }
        let mut brids = brids.to_vec();
        brids.sort_unstable();
        brids.dedup();
        self.retrying("complete_buildrequests", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, master).await?;
            let mut updated = 0;
            for chunk in brids.chunks(CHUNK) {
                let sql = format!(
                    "UPDATE buildrequests SET complete = 1, results = $1, complete_at = $2 \
                     WHERE complete = 0 AND id IN ({}) \
                     AND id IN (SELECT brid FROM buildrequest_claims WHERE masterid = $3)",
                    placeholders(4, chunk.len())
                );
                let mut q = sqlx::query(&sql)
                    .bind(results.code())
                    .bind(now)
                    .bind(master);
                for brid in chunk {
                    q = q.bind(*brid);
                }
                updated += q.execute(&mut *tx).await?.rows_affected();
            }
            if updated == brids.len() as u64 {
                tx.commit().await?;
                return Ok(());
            }
            tx.rollback().await?;
            if self.all_completed_by(master, &brids, results).await? {
                Ok(())
            } else {
                Err(StoreError::NotClaimed { masterid: master })
            }
        })
        .await
    }

    /// Expires every active master other than `by` whose last heartbeat is older than
    /// `timeout`: marks it inactive, ends its unfinished builds (and their steps) as RETRY,
    /// releases its claims on incomplete requests so any master can claim them again, and
    /// forgets which workers were connected to it. Safe with many masters expiring at once:
    /// each dead master is expired by exactly one caller, which gets it in the result.
    /// Also counts as a heartbeat for `by`.
    pub async fn expire_masters(
        &self,
        by: MasterId,
        timeout: Duration,
    ) -> Result<Expiry, StoreError> {
        self.retrying("expire_masters", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, by).await?;
            let cutoff = now.saturating_sub(timeout.as_secs() as i64);
            let dead: Vec<MasterId> = sqlx::query(
                "UPDATE masters SET active = 0 \
                 WHERE active = 1 AND id <> $1 AND last_active < $2 RETURNING id",
            )
            .bind(by)
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()?;
            if dead.is_empty() {
                tx.commit().await?;
                return Ok(Expiry::default());
            }
            let expiry = self.housekeep(&mut tx, dead).await?;
            tx.commit().await?;
            for m in &expiry.masters {
                tracing::info!(
                    master = m,
                    by,
                    released = expiry.released.len(),
                    retried_builds = expiry.retried_builds.len(),
                    "expired silent master"
                );
            }
            Ok(expiry)
        })
        .await
    }

    /// Cleans up after masters just marked inactive in `tx`.
    async fn housekeep(
        &self,
        tx: &mut super::WriteTx,
        mut masters: Vec<MasterId>,
    ) -> Result<Expiry, StoreError> {
        masters.sort_unstable();
        let now = self.now();
        // The two build/step updates bind $1 = now and $2 = RETRY; the master ids follow.
        let list = placeholders(3, masters.len());
        let with_list = |sql: &str| -> String { sql.replace("{list}", &list) };

        let sql = with_list(
            "UPDATE builds SET complete_at = $1, results = $2, \
             state_string = 'retry: master expired' \
             WHERE complete_at IS NULL AND masterid IN ({list}) RETURNING id",
        );
        let mut q = sqlx::query(&sql).bind(now).bind(Results::Retry.code());
        for m in &masters {
            q = q.bind(*m);
        }
        let mut retried_builds: Vec<BuildId> = q
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()?;
        retried_builds.sort_unstable();

        let sql = with_list(
            "UPDATE steps SET complete_at = $1, results = $2 WHERE complete_at IS NULL \
             AND buildid IN (SELECT id FROM builds WHERE masterid IN ({list}))",
        );
        let mut q = sqlx::query(&sql).bind(now).bind(Results::Retry.code());
        for m in &masters {
            q = q.bind(*m);
        }
        q.execute(&mut **tx).await?;

        // Completed requests keep their claim rows: those record who ran them and keep
        // them from being claimed again.
        let sql = format!(
            "DELETE FROM buildrequest_claims WHERE masterid IN ({}) \
             AND brid IN (SELECT id FROM buildrequests WHERE complete = 0) RETURNING brid",
            placeholders(1, masters.len())
        );
        let mut q = sqlx::query(&sql);
        for m in &masters {
            q = q.bind(*m);
        }
        let mut released: Vec<BuildRequestId> = q
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>("brid"))
            .collect::<Result<_, _>>()?;
        released.sort_unstable();

        // What else the dead masters held: connected workers, worker build slots, scheduler
        // ownership, the builders they served. Their logs are closed and their state shown.
        for sql in [
            "DELETE FROM connected_workers WHERE masterid IN ({list})",
            "DELETE FROM worker_leases WHERE masterid IN ({list})",
            "DELETE FROM scheduler_masters WHERE masterid IN ({list})",
            "DELETE FROM builder_masters WHERE masterid IN ({list})",
            "UPDATE masters SET state = 'stopped' WHERE id IN ({list})",
        ] {
            let sql = sql.replace("{list}", &placeholders(1, masters.len()));
            let mut q = sqlx::query(&sql);
            for m in &masters {
                q = q.bind(*m);
            }
            q.execute(&mut **tx).await?;
        }
        let sql = format!(
            "UPDATE logs SET complete = 1 WHERE complete = 0 AND stepid IN (SELECT s.id FROM \
             steps s JOIN builds b ON b.id = s.buildid WHERE b.masterid IN ({}))",
            placeholders(1, masters.len())
        );
        let mut q = sqlx::query(&sql);
        for m in &masters {
            q = q.bind(*m);
        }
        q.execute(&mut **tx).await?;

        Ok(Expiry {
            masters,
            released,
            retried_builds,
        })
    }

    /// Claims request `brid` for `master` inside `tx` if it is incomplete and unclaimed;
    /// false if another master holds it or it is complete (ON CONFLICT DO NOTHING: a lost
    /// race must not abort the transaction).
    pub(super) async fn claim_in(
        tx: &mut super::WriteTx,
        master: MasterId,
        now: i64,
        brid: BuildRequestId,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "INSERT INTO buildrequest_claims (brid, masterid, claimed_at) \
             SELECT id, $1, $2 FROM buildrequests WHERE id = $3 AND complete = 0 \
             ON CONFLICT (brid) DO NOTHING",
        )
        .bind(master)
        .bind(now)
        .bind(brid)
        .execute(&mut **tx)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Heartbeats `master` inside `tx` as the transaction's first statement (see the module
    /// doc of `store` for why it must come first); fails if the master is inactive.
    pub(super) async fn touch_master(
        &self,
        tx: &mut super::WriteTx,
        master: MasterId,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        let done = sqlx::query("UPDATE masters SET last_active = $1 WHERE id = $2 AND active = 1")
            .bind(now)
            .bind(master)
            .execute(&mut **tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::MasterInactive { masterid: master });
        }
        Ok(now)
    }

    async fn all_claimed_by(
        &self,
        master: MasterId,
        brids: &[BuildRequestId],
    ) -> Result<bool, StoreError> {
        let mut held = 0;
        for chunk in brids.chunks(CHUNK) {
            let sql = format!(
                "SELECT COUNT(*) AS n FROM buildrequest_claims c \
                 JOIN buildrequests r ON r.id = c.brid \
                 WHERE c.masterid = $1 AND r.complete = 0 AND c.brid IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(master);
            for brid in chunk {
                q = q.bind(*brid);
            }
            held += q.fetch_one(&self.pool).await?.try_get::<i64, _>("n")?;
        }
        Ok(held == brids.len() as i64)
    }

    pub(super) async fn all_completed_by(
        &self,
        master: MasterId,
        brids: &[BuildRequestId],
        results: Results,
    ) -> Result<bool, StoreError> {
        let mut done = 0;
        for chunk in brids.chunks(CHUNK) {
            let sql = format!(
                "SELECT COUNT(*) AS n FROM buildrequest_claims c \
                 JOIN buildrequests r ON r.id = c.brid \
                 WHERE c.masterid = $1 AND r.complete = 1 AND r.results = $2 \
                 AND c.brid IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(master).bind(results.code());
            for brid in chunk {
                q = q.bind(*brid);
            }
            done += q.fetch_one(&self.pool).await?.try_get::<i64, _>("n")?;
        }
        Ok(done == brids.len() as i64)
    }
}
