//! Read queries for the REST data API: every table as rows, and for the tables that grow with
//! every build (buildsets, build requests, builds, steps, changes) a [`Selection`] the database
//! evaluates itself, so `?limit=10` over a million builds reads ten rows and one count.
//!
//! # What the database evaluates
//! A [`Table`] names the columns it can filter and order on; [`Table::condition`] and
//! [`Table::order_key`] turn a data API field into SQL taken from that whitelist (never from
//! the request), with the values bound as parameters. Conditions follow Python's comparison
//! semantics, which the API applies to everything else in Rust, so a filter gives the same
//! rows wherever it runs: `NULL` equals only `NULL`, `!=` is true between `NULL` and a value,
//! and `<`, `<=`, `>`, `>=` are false when either side is `NULL`. Ordering puts `NULL` first
//! (last when descending) on both backends, and the row id breaks ties. Text columns take
//! `=` and `!=` only: SQLite and PostgreSQL collate text differently, so text ordering and
//! ranges stay in Rust.
//!
//! Times are Unix seconds and flags 0/1 in the database; rows here turn flags into `bool`
//! and JSON columns into [`serde_json::Value`].

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Backend, BuildId, BuildRequestId, BuilderId, BuildsetId, MasterId, Store, WorkerId};
use crate::StoreError;

/// A comparison of a column with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The collections the database filters, orders and pages for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Buildsets,
    BuildRequests,
    Builds,
    Steps,
    Changes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    /// A 64-bit integer, possibly NULL.
    Int,
    /// 0/1 in the database, a JSON boolean in the API.
    Bool,
    /// Text: equality only (see the module doc).
    Text,
}

/// A data API field the database can evaluate, and the SQL expression that computes it.
struct Column {
    field: &'static str,
    sql: &'static str,
    kind: ColumnKind,
    /// Whether the expression can be NULL: only then does ordering need a NULL-placing term,
    /// which would keep the database from walking an index (`ORDER BY id DESC LIMIT 10`).
    nullable: bool,
}

/// A column that is never NULL.
const fn col(field: &'static str, sql: &'static str, kind: ColumnKind) -> Column {
    Column {
        field,
        sql,
        kind,
        nullable: false,
    }
}

/// A column that may be NULL.
const fn opt(field: &'static str, sql: &'static str, kind: ColumnKind) -> Column {
    Column {
        field,
        sql,
        kind,
        nullable: true,
    }
}

use ColumnKind::{Bool, Int, Text};

const BUILDSET_COLUMNS: &[Column] = &[
    col("bsid", "s.id", Int),
    opt("external_idstring", "s.external_idstring", Text),
    opt("reason", "s.reason", Text),
    col("submitted_at", "s.submitted_at", Int),
    col("complete", "s.complete", Bool),
    opt("complete_at", "s.complete_at", Int),
    opt("results", "s.results", Int),
    opt("parent_buildid", "s.parent_buildid", Int),
    opt("parent_relationship", "s.parent_relationship", Text),
];

const BUILDREQUEST_COLUMNS: &[Column] = &[
    col("buildrequestid", "r.id", Int),
    col("buildsetid", "r.buildsetid", Int),
    col("builderid", "r.builderid", Int),
    col("priority", "r.priority", Int),
    col(
        "claimed",
        "(CASE WHEN c.brid IS NULL THEN 0 ELSE 1 END)",
        Bool,
    ),
    opt("claimed_at", "c.claimed_at", Int),
    opt("claimed_by_masterid", "c.masterid", Int),
    col("complete", "r.complete", Bool),
    opt("results", "r.results", Int),
    col("submitted_at", "r.submitted_at", Int),
    opt("complete_at", "r.complete_at", Int),
    col("waited_for", "r.waited_for", Bool),
];

const BUILD_COLUMNS: &[Column] = &[
    col("buildid", "b.id", Int),
    col("number", "b.number", Int),
    col("builderid", "b.builderid", Int),
    col("buildrequestid", "b.buildrequestid", Int),
    opt("workerid", "b.workerid", Int),
    col("masterid", "b.masterid", Int),
    col("started_at", "b.started_at", Int),
    col(
        "complete",
        "(CASE WHEN b.complete_at IS NULL THEN 0 ELSE 1 END)",
        Bool,
    ),
    opt("complete_at", "b.complete_at", Int),
    col("locks_duration_s", "b.locks_duration_s", Int),
    col("state_string", "b.state_string", Text),
    opt("results", "b.results", Int),
];

const STEP_COLUMNS: &[Column] = &[
    col("stepid", "st.id", Int),
    col("number", "st.number", Int),
    col("name", "st.name", Text),
    col("buildid", "st.buildid", Int),
    opt("started_at", "st.started_at", Int),
    col(
        "complete",
        "(CASE WHEN st.complete_at IS NULL THEN 0 ELSE 1 END)",
        Bool,
    ),
    opt("complete_at", "st.complete_at", Int),
    col("state_string", "st.state_string", Text),
    opt("results", "st.results", Int),
    col("hidden", "st.hidden", Bool),
];

const CHANGE_COLUMNS: &[Column] = &[
    col("changeid", "ch.changeid", Int),
    col("author", "ch.author", Text),
    opt("committer", "ch.committer", Text),
    opt("branch", "ch.branch", Text),
    opt("revision", "ch.revision", Text),
    col("when_timestamp", "ch.when_timestamp", Int),
    opt("category", "ch.category", Text),
    col("repository", "ch.repository", Text),
    col("codebase", "ch.codebase", Text),
    col("project", "ch.project", Text),
];

impl Table {
    fn columns(self) -> &'static [Column] {
        match self {
            Table::Buildsets => BUILDSET_COLUMNS,
            Table::BuildRequests => BUILDREQUEST_COLUMNS,
            Table::Builds => BUILD_COLUMNS,
            Table::Steps => STEP_COLUMNS,
            Table::Changes => CHANGE_COLUMNS,
        }
    }

    /// The row id: the default order and the last tie-breaker.
    fn id_sql(self) -> &'static str {
        self.columns()[0].sql
    }

    fn column(self, field: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.field == field)
    }

    /// `field <cmp> value` as a database condition, or `None` when the database cannot
    /// evaluate it (an unknown field, a text range, a value of the wrong type), in which case
    /// the caller filters in Rust. `values` are the data API's JSON scalars; several values
    /// mean "equal to any" for [`Cmp::Eq`] and "equal to none" for [`Cmp::Ne`], and the
    /// ordering comparisons take exactly one non-null value.
    pub fn condition(self, field: &str, cmp: Cmp, values: &[Value]) -> Option<Condition> {
        let column = self.column(field)?;
        if values.is_empty() {
            return None;
        }
        let ordering = !matches!(cmp, Cmp::Eq | Cmp::Ne);
        if ordering && (column.kind == Text || values.len() != 1 || values[0].is_null()) {
            return None;
        }
        let binds = values
            .iter()
            .map(|v| match (column.kind, v) {
                (_, Value::Null) => Some(None),
                (Int, Value::Number(n)) => n.as_i64().map(|i| Some(Bind::Int(i))),
                (Bool, Value::Bool(b)) => Some(Some(Bind::Int(i64::from(*b)))),
                (Text, Value::String(s)) => Some(Some(Bind::Text(s.clone()))),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Condition {
            sql: column.sql,
            cmp,
            values: binds,
        })
    }

    /// Ordering by `field` in the database, or `None` if it cannot (text, unknown field).
    pub fn order_key(self, field: &str, descending: bool) -> Option<OrderKey> {
        let column = self.column(field)?;
        (column.kind != Text).then_some(OrderKey {
            sql: column.sql,
            nullable: column.nullable,
            descending,
        })
    }

    fn table_sql(self) -> &'static str {
        match self {
            Table::Buildsets => "buildsets s",
            Table::BuildRequests => {
                "buildrequests r LEFT JOIN buildrequest_claims c ON c.brid = r.id"
            }
            Table::Builds => "builds b",
            Table::Steps => "steps st",
            Table::Changes => "changes ch",
        }
    }

    fn select_sql(self) -> &'static str {
        match self {
            Table::Buildsets => {
                "s.id, s.external_idstring, s.reason, s.submitted_at, s.complete, \
                 s.complete_at, s.results, s.parent_buildid, s.parent_relationship"
            }
            Table::BuildRequests => {
                "r.id, r.buildsetid, r.builderid, r.priority, r.complete, r.results, \
                 r.submitted_at, r.complete_at, r.waited_for, c.masterid AS claimed_by, \
                 c.claimed_at"
            }
            Table::Builds => {
                "b.id, b.number, b.builderid, b.buildrequestid, b.workerid, b.masterid, \
                 b.started_at, b.complete_at, b.locks_duration_s, b.state_string, b.results"
            }
            Table::Steps => {
                "st.id, st.number, st.name, st.buildid, st.started_at, st.complete_at, \
                 st.state_string, st.results, st.urls_json, st.hidden"
            }
            Table::Changes => {
                "ch.changeid, ch.author, ch.committer, ch.comments, ch.branch, ch.revision, \
                 ch.revlink, ch.when_timestamp, ch.category, ch.repository, ch.codebase, \
                 ch.project, ch.properties, ch.files"
            }
        }
    }
}

/// A value bound to a query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bind {
    Int(i64),
    Text(String),
}

/// A condition the database evaluates; made only by [`Table::condition`], so its SQL comes
/// from the table's whitelist.
#[derive(Debug, Clone)]
pub struct Condition {
    sql: &'static str,
    cmp: Cmp,
    /// `None` is NULL.
    values: Vec<Option<Bind>>,
}

/// One ORDER BY key; made only by [`Table::order_key`].
#[derive(Debug, Clone)]
pub struct OrderKey {
    sql: &'static str,
    nullable: bool,
    descending: bool,
}

/// Which rows of a [`Table`] to read: all conditions hold, sorted by `order` then by id, and
/// the page `offset..offset + limit` of that.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderKey>,
    pub limit: Option<i64>,
    pub offset: i64,
}

impl Selection {
    /// The row of `table` with this id.
    pub fn id(table: Table, id: i64) -> Selection {
        Selection {
            conditions: vec![Condition {
                sql: table.id_sql(),
                cmp: Cmp::Eq,
                values: vec![Some(Bind::Int(id))],
            }],
            ..Selection::default()
        }
    }
}

/// A page of rows and how many rows matched before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub total: i64,
}

/// SQL text and binds being assembled; placeholders are numbered as binds are added.
#[derive(Default)]
struct SqlBuilder {
    binds: Vec<Bind>,
}

impl SqlBuilder {
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    fn condition(&mut self, c: &Condition) -> String {
        let col = c.sql;
        let parts: Vec<String> = c
            .values
            .iter()
            .map(|v| match (c.cmp, v) {
                (Cmp::Eq, None) => format!("{col} IS NULL"),
                (Cmp::Eq, Some(b)) => format!("{col} = {}", self.bind(b.clone())),
                (Cmp::Ne, None) => format!("{col} IS NOT NULL"),
                (Cmp::Ne, Some(b)) => {
                    format!("({col} IS NULL OR {col} <> {})", self.bind(b.clone()))
                }
                // Table::condition never makes a NULL range; keep it false if it ever did.
                (_, None) => "1 = 0".to_string(),
                (op, Some(b)) => {
                    let sym = match op {
                        Cmp::Lt => "<",
                        Cmp::Le => "<=",
                        Cmp::Gt => ">",
                        _ => ">=",
                    };
                    format!("{col} {sym} {}", self.bind(b.clone()))
                }
            })
            .collect();
        let joiner = if c.cmp == Cmp::Eq { " OR " } else { " AND " };
        format!("({})", parts.join(joiner))
    }

    fn where_clause(&mut self, conditions: &[Condition]) -> String {
        if conditions.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = conditions.iter().map(|c| self.condition(c)).collect();
        format!(" WHERE {}", parts.join(" AND "))
    }
}

fn order_clause(table: Table, order: &[OrderKey]) -> String {
    let mut keys: Vec<String> = Vec::with_capacity(order.len() * 2 + 1);
    for k in order {
        let dir = if k.descending { "DESC" } else { "ASC" };
        if k.nullable {
            // NULL first ascending, last descending, on both backends.
            keys.push(format!(
                "(CASE WHEN {} IS NULL THEN 0 ELSE 1 END) {dir}",
                k.sql
            ));
        }
        keys.push(format!("{} {dir}", k.sql));
    }
    // The id breaks ties, unless it is already a key.
    if !order.iter().any(|k| k.sql == table.id_sql()) {
        keys.push(format!("{} ASC", table.id_sql()));
    }
    format!(" ORDER BY {}", keys.join(", "))
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

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

/// A row of `buildsets`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildsetRow {
    pub id: BuildsetId,
    pub external_idstring: Option<String>,
    pub reason: Option<String>,
    pub submitted_at: i64,
    pub complete: bool,
    pub complete_at: Option<i64>,
    pub results: Option<i64>,
    pub parent_buildid: Option<BuildId>,
    pub parent_relationship: Option<String>,
}

/// A row of `buildrequests` with its claim.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequestRow {
    pub id: BuildRequestId,
    pub buildsetid: BuildsetId,
    pub builderid: BuilderId,
    pub priority: i64,
    pub complete: bool,
    pub results: Option<i64>,
    pub submitted_at: i64,
    pub complete_at: Option<i64>,
    pub waited_for: bool,
    pub claimed_by_masterid: Option<MasterId>,
    pub claimed_at: Option<i64>,
}

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

/// A row of `changes`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub id: i64,
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    pub when_timestamp: i64,
    pub category: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    /// `{"name": [value, source]}`.
    pub properties: Value,
    /// `["path", ...]`.
    pub files: Value,
}

/// A row of `schedulers`, with the master running it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerRow {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub master: Option<MasterRow>,
}

/// A row of `build_properties`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyRow {
    pub name: String,
    pub value: Value,
    pub source: String,
}

/// A JSON text column; text that is not JSON is handed out as a string rather than lost.
fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn flag(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(col)? != 0)
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

fn buildset_from_row(row: &AnyRow) -> Result<BuildsetRow, sqlx::Error> {
    Ok(BuildsetRow {
        id: row.try_get("id")?,
        external_idstring: row.try_get("external_idstring")?,
        reason: row.try_get("reason")?,
        submitted_at: row.try_get("submitted_at")?,
        complete: flag(row, "complete")?,
        complete_at: row.try_get("complete_at")?,
        results: row.try_get("results")?,
        parent_buildid: row.try_get("parent_buildid")?,
        parent_relationship: row.try_get("parent_relationship")?,
    })
}

fn buildrequest_from_row(row: &AnyRow) -> Result<BuildRequestRow, sqlx::Error> {
    Ok(BuildRequestRow {
        id: row.try_get("id")?,
        buildsetid: row.try_get("buildsetid")?,
        builderid: row.try_get("builderid")?,
        priority: row.try_get("priority")?,
        complete: flag(row, "complete")?,
        results: row.try_get("results")?,
        submitted_at: row.try_get("submitted_at")?,
        complete_at: row.try_get("complete_at")?,
        waited_for: flag(row, "waited_for")?,
        claimed_by_masterid: row.try_get("claimed_by")?,
        claimed_at: row.try_get("claimed_at")?,
    })
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

fn change_from_row(row: &AnyRow) -> Result<ChangeRow, sqlx::Error> {
    Ok(ChangeRow {
        id: row.try_get("changeid")?,
        author: row.try_get("author")?,
        committer: row.try_get("committer")?,
        comments: row.try_get("comments")?,
        branch: row.try_get("branch")?,
        revision: row.try_get("revision")?,
        revlink: row.try_get("revlink")?,
        when_timestamp: row.try_get("when_timestamp")?,
        category: row.try_get("category")?,
        repository: row.try_get("repository")?,
        codebase: row.try_get("codebase")?,
        project: row.try_get("project")?,
        properties: json_column(row.try_get("properties")?),
        files: json_column(row.try_get("files")?),
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

    pub async fn select_buildsets(
        &self,
        selection: &Selection,
    ) -> Result<Page<BuildsetRow>, StoreError> {
        self.select(
            "select_buildsets",
            Table::Buildsets,
            selection,
            buildset_from_row,
        )
        .await
    }

    pub async fn select_buildrequests(
        &self,
        selection: &Selection,
    ) -> Result<Page<BuildRequestRow>, StoreError> {
        self.select(
            "select_buildrequests",
            Table::BuildRequests,
            selection,
            buildrequest_from_row,
        )
        .await
    }

    pub async fn select_builds(&self, selection: &Selection) -> Result<Page<BuildRow>, StoreError> {
        self.select("select_builds", Table::Builds, selection, build_from_row)
            .await
    }

    pub async fn select_steps(&self, selection: &Selection) -> Result<Page<StepRow>, StoreError> {
        self.select("select_steps", Table::Steps, selection, step_from_row)
            .await
    }

    pub async fn select_changes(
        &self,
        selection: &Selection,
    ) -> Result<Page<ChangeRow>, StoreError> {
        self.select("select_changes", Table::Changes, selection, change_from_row)
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

    /// Runs a [`Selection`] on `table`: the page of rows and the count before paging.
    async fn select<T>(
        &self,
        op: &'static str,
        table: Table,
        selection: &Selection,
        from_row: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Page<T>, StoreError> {
        let mut sql = SqlBuilder::default();
        let filter = sql.where_clause(&selection.conditions);
        let count_sql = format!("SELECT COUNT(*) AS n FROM {}{filter}", table.table_sql());
        let count_binds = sql.binds.clone();
        let mut rows_sql = format!(
            "SELECT {} FROM {}{filter}{}",
            table.select_sql(),
            table.table_sql(),
            order_clause(table, &selection.order)
        );
        match (selection.limit, selection.offset.max(0)) {
            (Some(limit), offset) => {
                let l = sql.bind(Bind::Int(limit.max(0)));
                let o = sql.bind(Bind::Int(offset));
                rows_sql.push_str(&format!(" LIMIT {l} OFFSET {o}"));
            }
            (None, 0) => {}
            (None, offset) => {
                let o = sql.bind(Bind::Int(offset));
                // SQLite takes OFFSET only after a LIMIT; -1 means none.
                match self.backend {
                    Backend::Sqlite => rows_sql.push_str(&format!(" LIMIT -1 OFFSET {o}")),
                    Backend::Postgres => rows_sql.push_str(&format!(" OFFSET {o}")),
                }
            }
        }
        let binds = sql.binds;
        self.retrying(op, || async {
            let total: i64 = bind_all(sqlx::query(&count_sql), &count_binds)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
            let rows = bind_all(sqlx::query(&rows_sql), &binds)
                .fetch_all(&self.pool)
                .await?;
            Ok(Page {
                rows: rows.iter().map(from_row).collect::<Result<_, _>>()?,
                total,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_come_from_the_whitelist_only() {
        assert!(Table::Builds
            .condition("builderid", Cmp::Eq, &[json!(3)])
            .is_some());
        assert!(Table::Builds
            .condition("nope", Cmp::Eq, &[json!(3)])
            .is_none());
        assert!(Table::Builds
            .condition("builderid; DROP TABLE builds", Cmp::Eq, &[json!(3)])
            .is_none());
        // Wrong value types, text ranges, NULL ranges and multi-value ranges stay in Rust.
        assert!(Table::Builds
            .condition("builderid", Cmp::Eq, &[json!("x")])
            .is_none());
        assert!(Table::Builds
            .condition("state_string", Cmp::Lt, &[json!("x")])
            .is_none());
        assert!(Table::Builds
            .condition("results", Cmp::Lt, &[Value::Null])
            .is_none());
        assert!(Table::Builds
            .condition("results", Cmp::Lt, &[json!(1), json!(2)])
            .is_none());
        assert!(Table::Builds.order_key("state_string", false).is_none());
        assert!(Table::Builds.order_key("complete_at", true).is_some());
    }

    #[test]
    fn sql_follows_python_null_semantics() {
        let mut b = SqlBuilder::default();
        let c = Table::Builds
            .condition("results", Cmp::Ne, &[json!(2), Value::Null])
            .unwrap();
        assert_eq!(
            b.condition(&c),
            "((b.results IS NULL OR b.results <> $1) AND b.results IS NOT NULL)"
        );
        let c = Table::Builds
            .condition("complete", Cmp::Eq, &[json!(true)])
            .unwrap();
        assert_eq!(
            b.condition(&c),
            "((CASE WHEN b.complete_at IS NULL THEN 0 ELSE 1 END) = $2)"
        );
        assert_eq!(b.binds, vec![Bind::Int(2), Bind::Int(1)]);
    }

    #[test]
    fn ordering_by_an_indexed_column_stays_plain() {
        let by = |keys: &[(&str, bool)]| {
            let keys: Vec<OrderKey> = keys
                .iter()
                .map(|(f, d)| Table::Builds.order_key(f, *d).unwrap())
                .collect();
            order_clause(Table::Builds, &keys)
        };
        assert_eq!(by(&[]), " ORDER BY b.id ASC");
        assert_eq!(by(&[("buildid", true)]), " ORDER BY b.id DESC");
        assert_eq!(by(&[("number", true)]), " ORDER BY b.number DESC, b.id ASC");
        assert_eq!(
            by(&[("results", false)]),
            " ORDER BY (CASE WHEN b.results IS NULL THEN 0 ELSE 1 END) ASC, b.results ASC, \
             b.id ASC"
        );
    }
}
