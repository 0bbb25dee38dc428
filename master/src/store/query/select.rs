//! What the database evaluates for the tables that grow with every build: a [`Table`] names
//! the columns it can filter and order on; [`Table::condition`] and [`Table::order_key`] turn
//! a data API field into SQL taken from that whitelist (never from the request), with the
//! values bound as parameters, and [`Store`]'s `select` runs a [`Selection`] of them as one
//! page of rows and one count.
//!
//! Conditions follow Python's comparison semantics, which the API applies to everything else
//! in Rust, so a filter gives the same rows wherever it runs: `NULL` equals only `NULL`, `!=`
//! is true between `NULL` and a value, and `<`, `<=`, `>`, `>=` are false when either side is
//! `NULL`. Ordering puts `NULL` first (last when descending) on both backends, and the row id
//! breaks ties. Text columns take `=` and `!=` only: SQLite and PostgreSQL collate text
//! differently, so text ordering and ranges stay in Rust.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::{Backend, Store};
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

impl Store {
    /// Runs a [`Selection`] on `table`: the page of rows and the count before paging.
    pub(super) async fn select<T>(
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
