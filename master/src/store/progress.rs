//! A build's progress in as few write transactions as its meaning allows: a step begins
//! (build state, step, log, its first lines, and the build's properties for the first step)
//! in one, ends (last lines, log and step complete) in one, and the build ends (state and
//! result) in one with its request's completion, and its buildset's when it was the
//! last. Every write transaction costs a commit under SQLite's single write lock, and each
//! statement a round trip to the connection's thread; issue 15 measured 18 commits per
//! build as the limit of a master with 1,000 workers.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;

use super::{BuildId, BuildRequestId, BuildsetId, LogId, MasterId, StepId, Store};
use crate::{Results, StoreError};

/// What [`Store::begin_step`] writes.
pub struct StepStart<'a> {
    pub build: BuildId,
    pub number: i64,
    pub name: &'a str,
    /// The build's properties, stored with its first step.
    pub properties: Option<&'a BTreeMap<String, (Value, String)>>,
    /// The log's first lines (newline-terminated), if any.
    pub header: Option<&'a str>,
}

impl Store {
    /// Begins a step: the build's state becomes `running <name>`, the step and its `stdio`
    /// log are inserted (or found again, when a retried transaction had committed), and
    /// the header lines appended. Returns the step, the log and how many lines it has.
    pub async fn begin_step(&self, s: &StepStart<'_>) -> Result<(StepId, LogId, i64), StoreError> {
        self.retrying("begin_step", || async {
            let mut tx = self.begin_write().await?;
            let props: Vec<_> = s.properties.into_iter().flatten().collect();
            // One statement per 500 properties (bind counts stay far below the limits).
            for chunk in props.chunks(500) {
                let values = rows_sharing_first(chunk.len(), 3);
                let sql = format!(
                    "INSERT INTO build_properties (buildid, name, value, source) VALUES {values} \
                     ON CONFLICT (buildid, name) \
                     DO UPDATE SET value = excluded.value, source = excluded.source"
                );
                let mut q = sqlx::query(&sql).bind(s.build);
                for (name, (value, source)) in chunk {
                    q = q
                        .bind(name.as_str())
                        .bind(value.to_string())
                        .bind(source.as_str());
                }
                q.execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE builds SET state_string = $1 WHERE id = $2")
                .bind(format!("running {}", s.name))
                .bind(s.build)
                .execute(&mut *tx)
                .await?;
            let step: StepId = sqlx::query(
                "INSERT INTO steps (number, name, buildid, started_at, state_string) \
                 VALUES ($1, $2, $3, $4, 'running') \
                 ON CONFLICT (buildid, number) DO UPDATE SET started_at = excluded.started_at \
                 RETURNING id",
            )
            .bind(s.number)
            .bind(s.name)
            .bind(s.build)
            .bind(self.now())
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            let log: LogId = sqlx::query(
                "INSERT INTO logs (name, slug, stepid, type) VALUES ('stdio', 'stdio', $1, 't') \
                 ON CONFLICT (stepid, slug) DO UPDATE SET name = excluded.name RETURNING id",
            )
            .bind(step)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            let lines = match s.header {
                Some(text) => append_in(&mut tx, log, text).await?.1 + 1,
                None => 0,
            };
            tx.commit().await?;
            Ok((step, log, lines))
        })
        .await
    }

    /// Ends a step: appends its last lines (newline-terminated), completes its log and
    /// records its result. Returns the first and last line numbers written.
    pub async fn end_step(
        &self,
        step: StepId,
        log: LogId,
        footer: &str,
        results: Results,
        state_string: &str,
    ) -> Result<(i64, i64), StoreError> {
        self.retrying("end_step", || async {
            let mut tx = self.begin_write().await?;
            let lines = append_in(&mut tx, log, footer).await?;
            sqlx::query("UPDATE logs SET complete = 1 WHERE id = $1")
                .bind(log)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE steps SET complete_at = $1, results = $2, state_string = $3 \
                 WHERE id = $4 AND complete_at IS NULL",
            )
            .bind(self.now())
            .bind(results.code())
            .bind(state_string)
            .bind(step)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(lines)
        })
        .await
    }

    /// Ends a build with its result and final state. Only its own master may (as
    /// [`Store::finish_build`]); otherwise `NotClaimed`.
    pub async fn end_build(
        &self,
        master: MasterId,
        build: BuildId,
        results: Results,
        state_string: &str,
    ) -> Result<(), StoreError> {
        self.retrying("end_build", || async {
            let mut tx = self.begin_write().await?;
            let now = self.touch_master(&mut tx, master).await?;
            if !end_build_in(&mut tx, now, master, build, results, state_string).await? {
                return Err(StoreError::NotClaimed { masterid: master });
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Ends a build of `master` with `results` and its final state, and completes its
    /// request `brid` with the same result (and the request's buildset when it was the
    /// last), all in one transaction. Two transactions left a window: a master killed
    /// between them left a finished build whose request its restart (or its expiry)
    /// released to run again, so the request got a second SUCCESS build (the likely cause
    /// of one such request in 11,866 in a chaos soak). Returns the buildset's results if this completed it.
    /// If the build is not this master's unfinished build, or the request not its
    /// incomplete claim, nothing changes and it fails with `NotClaimed` (or
    /// `MasterInactive`), unless an earlier try committed (the request is complete with
    /// this result by this master): then it succeeds.
    pub async fn finish_build_and_request(
        &self,
        master: MasterId,
        build: BuildId,
        state_string: &str,
        brid: BuildRequestId,
        buildset: BuildsetId,
        results: Results,
    ) -> Result<Option<Results>, StoreError> {
        let done = self
            .retrying("finish_build_and_request", || async {
                let mut tx = self.begin_write().await?;
                let now = self.touch_master(&mut tx, master).await?;
                let ended =
                    end_build_in(&mut tx, now, master, build, results, state_string).await?;
                let completed = sqlx::query(
                    "UPDATE buildrequests SET complete = 1, results = $1, complete_at = $2 \
                     WHERE complete = 0 AND id = $3 \
                     AND id IN (SELECT brid FROM buildrequest_claims WHERE masterid = $4)",
                )
                .bind(results.code())
                .bind(now)
                .bind(brid)
                .bind(master)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if !ended || completed != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let set = complete_buildset_in(&mut tx, buildset, now).await?;
                tx.commit().await?;
                Ok(Some(set))
            })
            .await?;
        match done {
            Some(set) => Ok(set),
            None if self.all_completed_by(master, &[brid], results).await? => {
                self.maybe_complete_buildset(buildset).await
            }
            None => Err(StoreError::NotClaimed { masterid: master }),
        }
    }
}

/// The `VALUES` list of a multi-row INSERT whose rows share their first value: `rows` rows
/// of `$1` and `per_row` more placeholders each, numbered on from `$2`.
pub(super) fn rows_sharing_first(rows: usize, per_row: usize) -> String {
    (0..rows)
        .map(|r| {
            let own = (0..per_row).map(|c| format!(", ${}", 2 + r * per_row + c));
            format!("($1{})", own.collect::<String>())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ends `master`'s unfinished build inside `tx` with its result and final state; false if
/// it is not that (another master's, or already ended).
async fn end_build_in(
    tx: &mut super::WriteTx,
    now: i64,
    master: MasterId,
    build: BuildId,
    results: Results,
    state_string: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE builds SET complete_at = $1, results = $2, state_string = $3 \
         WHERE id = $4 AND masterid = $5 AND complete_at IS NULL",
    )
    .bind(now)
    .bind(results.code())
    .bind(state_string)
    .bind(build)
    .bind(master)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Appends newline-terminated `text` to a log inside `tx`; the first and last line numbers.
pub(super) async fn append_in(
    tx: &mut super::WriteTx,
    log: LogId,
    text: &str,
) -> Result<(i64, i64), StoreError> {
    // Callers pass whole lines; a stray partial line still counts as one.
    let lines = (text.matches('\n').count() as i64).max(1);
    let first: i64 =
        sqlx::query("UPDATE logs SET num_lines = num_lines + $1 WHERE id = $2 RETURNING num_lines")
            .bind(lines)
            .bind(log)
            .fetch_one(&mut **tx)
            .await?
            .try_get::<i64, _>("num_lines")?
            - lines;
    sqlx::query(
        "INSERT INTO logchunks (logid, first_line, last_line, content, compressed) \
         VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(log)
    .bind(first)
    .bind(first + lines - 1)
    .bind(text.as_bytes().to_vec())
    .execute(&mut **tx)
    .await?;
    Ok((first, first + lines - 1))
}

/// Marks a buildset complete inside `tx` if all its requests are; its results then. The
/// buildset's row is locked first (a no-op update), so on PostgreSQL two transactions
/// completing its last two requests are ordered and the second sees the first's request
/// complete (READ COMMITTED reads anew per statement): one of them completes the buildset.
pub(super) async fn complete_buildset_in(
    tx: &mut super::WriteTx,
    buildset: BuildsetId,
    now: i64,
) -> Result<Option<Results>, StoreError> {
    sqlx::query("UPDATE buildsets SET complete = complete WHERE id = $1")
        .bind(buildset)
        .execute(&mut **tx)
        .await?;
    let rows = sqlx::query("SELECT complete, results FROM buildrequests WHERE buildsetid = $1")
        .bind(buildset)
        .fetch_all(&mut **tx)
        .await?;
    let mut worst = Results::Success;
    for r in &rows {
        if r.try_get::<i64, _>("complete")? == 0 {
            return Ok(None);
        }
        let code: Option<i64> = r.try_get("results")?;
        if let Some(res) = code.and_then(Results::from_code) {
            worst = worst.worst(res);
        }
    }
    let done = sqlx::query(
        "UPDATE buildsets SET complete = 1, complete_at = $1, results = $2 \
         WHERE id = $3 AND complete = 0",
    )
    .bind(now)
    .bind(worst.code())
    .bind(buildset)
    .execute(&mut **tx)
    .await?;
    Ok((done.rows_affected() == 1).then_some(worst))
}

#[cfg(test)]
mod tests {
    use super::rows_sharing_first;

    #[test]
    fn multi_row_values_share_the_first_placeholder() {
        assert_eq!(rows_sharing_first(1, 2), "($1, $2, $3)");
        assert_eq!(
            rows_sharing_first(3, 3),
            "($1, $2, $3, $4), ($1, $5, $6, $7), ($1, $8, $9, $10)"
        );
        assert_eq!(rows_sharing_first(0, 3), "");
    }
}
