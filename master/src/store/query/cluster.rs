//! The small tables, read whole and in id order: masters, builders (with the masters serving
//! them), workers (with the masters they are connected to) and schedulers (with the master
//! running each).

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, json_column};
use crate::store::{BuilderId, MasterId, Store, WorkerId};
use crate::StoreError;

/// A row of `masters`.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterRow {
    pub id: MasterId,
    pub name: String,
    pub active: bool,
    pub last_active: i64,
    /// running | draining | stopped.
    pub state: String,
}

/// A row of `builders`, with the masters serving it (`builder_masters`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderRow {
    pub id: BuilderId,
    pub name: String,
    pub description: Option<String>,
    pub masterids: Vec<MasterId>,
}

/// A row of `workers`, with the masters it is connected to. No secret is stored here.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub name: String,
    /// What the worker reported about itself (`workers.info`).
    pub info: Value,
    pub paused: bool,
    pub graceful: bool,
    pub connected_to: Vec<MasterId>,
}

/// A row of `schedulers`, with the master running it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerRow {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub master: Option<MasterRow>,
}

fn master_from_row(row: &AnyRow) -> Result<MasterRow, sqlx::Error> {
    Ok(MasterRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        active: flag(row, "active")?,
        last_active: row.try_get("last_active")?,
        state: row.try_get("state")?,
    })
}

/// `(key, value)` pairs from rows sorted by key, grouped per key.
fn group_pairs(pairs: Vec<(i64, i64)>) -> std::collections::HashMap<i64, Vec<i64>> {
    let mut map: std::collections::HashMap<i64, Vec<i64>> = std::collections::HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    map
}

impl Store {
    /// Every master, by id.
    pub async fn list_masters(&self) -> Result<Vec<MasterRow>, StoreError> {
        self.retrying("list_masters", || async {
            let rows =
                sqlx::query("SELECT id, name, active, last_active, state FROM masters ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.iter().map(master_from_row).collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Every builder, by id, with the masters serving it.
    pub async fn list_builders(&self) -> Result<Vec<BuilderRow>, StoreError> {
        self.retrying("list_builders", || async {
            let rows = sqlx::query("SELECT id, name, description FROM builders ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
            let served = self
                .pairs("builder_masters", "builderid", "masterid")
                .await?;
            let mut served = group_pairs(served);
            Ok(rows
                .iter()
                .map(|r| {
                    let id: i64 = r.try_get("id")?;
                    Ok(BuilderRow {
                        id,
                        name: r.try_get("name")?,
                        description: r.try_get("description")?,
                        masterids: served.remove(&id).unwrap_or_default(),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// Every worker, by id, with the masters it is connected to.
    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        self.retrying("list_workers", || async {
            let rows =
                sqlx::query("SELECT id, name, info, paused, graceful FROM workers ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
            let connected = self
                .pairs("connected_workers", "workerid", "masterid")
                .await?;
            let mut connected = group_pairs(connected);
            Ok(rows
                .iter()
                .map(|r| {
                    let id: i64 = r.try_get("id")?;
                    Ok(WorkerRow {
                        id,
                        name: r.try_get("name")?,
                        info: json_column(r.try_get("info")?),
                        paused: flag(r, "paused")?,
                        graceful: flag(r, "graceful")?,
                        connected_to: connected.remove(&id).unwrap_or_default(),
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// Every scheduler, by id, with the master running it.
    pub async fn list_schedulers(&self) -> Result<Vec<SchedulerRow>, StoreError> {
        self.retrying("list_schedulers", || async {
            let rows = sqlx::query(
                "SELECT s.id AS sid, s.name AS sname, s.enabled, m.id, m.name, m.active, \
                 m.last_active, m.state FROM schedulers s \
                 LEFT JOIN scheduler_masters sm ON sm.schedulerid = s.id \
                 LEFT JOIN masters m ON m.id = sm.masterid ORDER BY s.id",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let master = match r.try_get::<Option<i64>, _>("id")? {
                        Some(_) => Some(master_from_row(r)?),
                        None => None,
                    };
                    Ok(SchedulerRow {
                        id: r.try_get("sid")?,
                        name: r.try_get("sname")?,
                        enabled: flag(r, "enabled")?,
                        master,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// `(a, b)` pairs of a two-column link table, sorted.
    async fn pairs(
        &self,
        table: &'static str,
        a: &'static str,
        b: &'static str,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let sql = format!("SELECT {a}, {b} FROM {table} ORDER BY {a}, {b}");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get(a)?, r.try_get(b)?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }
}
