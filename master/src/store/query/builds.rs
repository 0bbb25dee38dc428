//! Builds and steps, each read as a page of a [`Selection`], and what hangs off them: a
//! build's properties, a step's logs and a log's chunks.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, json_column, Page, Selection, Table};
use crate::store::{BuildId, BuildRequestId, BuilderId, MasterId, Store, WorkerId};
use crate::StoreError;

/// A row of `builds`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRow {
    pub id: BuildId,
    pub number: i64,
    pub builderid: BuilderId,
    pub buildrequestid: BuildRequestId,
    pub workerid: Option<WorkerId>,
    pub masterid: MasterId,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub locks_duration_s: i64,
    pub state_string: String,
    pub results: Option<i64>,
}

/// A row of `steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub id: i64,
    pub number: i64,
    pub name: String,
    pub buildid: BuildId,
    pub started_at: Option<i64>,
    pub complete_at: Option<i64>,
    pub state_string: String,
    pub results: Option<i64>,
    /// `[{"name": ..., "url": ...}]`.
    pub urls: Value,
    pub hidden: bool,
}

/// A row of `logs`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub stepid: i64,
    pub complete: bool,
    pub num_lines: i64,
    /// s(tdio), t(ext), h(tml), d(ata).
    pub kind: String,
}

/// A row of `logchunks`: lines `first_line..=last_line`, newline-terminated.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunkRow {
    pub first_line: i64,
    pub last_line: i64,
    pub content: Vec<u8>,
    /// 0: plain; anything else is a compression this master does not write.
    pub compressed: i64,
}

/// A row of `build_properties`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyRow {
    pub name: String,
    pub value: Value,
    pub source: String,
}

fn build_from_row(row: &AnyRow) -> Result<BuildRow, sqlx::Error> {
    Ok(BuildRow {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        builderid: row.try_get("builderid")?,
        buildrequestid: row.try_get("buildrequestid")?,
        workerid: row.try_get("workerid")?,
        masterid: row.try_get("masterid")?,
        started_at: row.try_get("started_at")?,
        complete_at: row.try_get("complete_at")?,
        locks_duration_s: row.try_get("locks_duration_s")?,
        state_string: row.try_get("state_string")?,
        results: row.try_get("results")?,
    })
}

fn step_from_row(row: &AnyRow) -> Result<StepRow, sqlx::Error> {
    Ok(StepRow {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        name: row.try_get("name")?,
        buildid: row.try_get("buildid")?,
        started_at: row.try_get("started_at")?,
        complete_at: row.try_get("complete_at")?,
        state_string: row.try_get("state_string")?,
        results: row.try_get("results")?,
        urls: json_column(row.try_get("urls_json")?),
        hidden: flag(row, "hidden")?,
    })
}

fn log_from_row(row: &AnyRow) -> Result<LogRow, sqlx::Error> {
    Ok(LogRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        stepid: row.try_get("stepid")?,
        complete: flag(row, "complete")?,
        num_lines: row.try_get("num_lines")?,
        kind: row.try_get("type")?,
    })
}

const LOG_COLUMNS: &str = "id, name, slug, stepid, complete, num_lines, type";

impl Store {
    pub async fn select_builds(&self, selection: &Selection) -> Result<Page<BuildRow>, StoreError> {
        self.select("select_builds", Table::Builds, selection, build_from_row)
            .await
    }

    pub async fn select_steps(&self, selection: &Selection) -> Result<Page<StepRow>, StoreError> {
        self.select("select_steps", Table::Steps, selection, step_from_row)
            .await
    }

    /// A build's properties, by name.
    pub async fn build_properties(&self, build: BuildId) -> Result<Vec<PropertyRow>, StoreError> {
        self.retrying("build_properties", || async {
            let rows = sqlx::query(
                "SELECT name, value, source FROM build_properties WHERE buildid = $1 \
                 ORDER BY name",
            )
            .bind(build)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    Ok(PropertyRow {
                        name: r.try_get("name")?,
                        value: json_column(r.try_get("value")?),
                        source: r.try_get("source")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// A step's logs, by id.
    pub async fn step_logs(&self, step: i64) -> Result<Vec<LogRow>, StoreError> {
        let sql = format!("SELECT {LOG_COLUMNS} FROM logs WHERE stepid = $1 ORDER BY id");
        self.retrying("step_logs", || async {
            let rows = sqlx::query(&sql).bind(step).fetch_all(&self.pool).await?;
            Ok(rows.iter().map(log_from_row).collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn get_log(&self, log: i64) -> Result<Option<LogRow>, StoreError> {
        let sql = format!("SELECT {LOG_COLUMNS} FROM logs WHERE id = $1");
        self.retrying("get_log", || async {
            let row = sqlx::query(&sql)
                .bind(log)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.as_ref().map(log_from_row).transpose()?)
        })
        .await
    }

    /// The chunks of `log` holding any of lines `first..=last`, in order.
    pub async fn log_chunks(
        &self,
        log: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<LogChunkRow>, StoreError> {
        self.retrying("log_chunks", || async {
            let rows = sqlx::query(
                "SELECT first_line, last_line, content, compressed FROM logchunks \
                 WHERE logid = $1 AND first_line <= $2 AND last_line >= $3 \
                 ORDER BY first_line",
            )
            .bind(log)
            .bind(last)
            .bind(first)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    Ok(LogChunkRow {
                        first_line: r.try_get("first_line")?,
                        last_line: r.try_get("last_line")?,
                        content: r.try_get("content")?,
                        compressed: r.try_get("compressed")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }
}
