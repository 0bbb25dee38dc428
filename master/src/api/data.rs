//! The read endpoints (`GET /api/v2/...`): rows from the store as Buildbot's data API shows
//! them, under the query arguments of [`super::query`].
//!
//! Small collections (masters, builders, workers, schedulers, a step's logs) are read whole
//! and shaped in Rust. The ones that grow with every build (buildsets, build requests,
//! builds, steps, changes) are filtered, sorted and paged by the database when the query
//! allows it (see [`ResultSpec::pushdown`]); otherwise at most [`MAX_SCAN`] matching rows
//! are read, and a query that would need more is refused with a 400 saying how to narrow it.
//!
//! Workers never show a password: their JSON is built from the `workers` table, which has
//! none, and from builder names in the config.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::query::{self, Resource, ResultSpec, MAX_SCAN};
use super::shapes::{
    build_json, builder_json, buildrequest_json, buildset_json, change_json, log_json, master_json,
    scheduler_json, step_json, worker_json,
};
use super::{json_response, ApiError, ApiState};
use crate::config::SchedulerKind;
use crate::store::{
    BuildRow, BuilderRow, Condition, LogRow, Page, Selection, StepRow, Table, WorkerRow,
};
use crate::StoreError;

type St = State<Arc<ApiState>>;

/// Most text one log answer carries; `/raw` says where it was cut.
const MAX_LOG_TEXT: usize = 32 << 20;

/// Lines read from the store per query while assembling a log.
const LOG_LINES_PER_READ: i64 = 50_000;

pub(super) fn collection(resource: &Resource, rows: Vec<Value>, total: usize) -> Response {
    let mut body = Map::new();
    body.insert(resource.plural.to_owned(), Value::Array(rows));
    body.insert("meta".to_owned(), json!({ "total": total }));
    json_response(StatusCode::OK, &Value::Object(body))
}

fn single(resource: &Resource, row: Value) -> Response {
    collection(resource, vec![row], 1)
}

/// A collection read whole: the query applies in Rust.
fn small_collection(
    resource: &Resource,
    query: Option<String>,
    rows: Vec<Value>,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(query.as_deref(), resource, true)?;
    let (rows, total) = spec.apply(rows);
    Ok(collection(resource, rows, total))
}

/// One item, or a 404 naming what is missing.
fn one(
    resource: &Resource,
    query: Option<String>,
    row: Option<Value>,
    missing: impl FnOnce() -> String,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(query.as_deref(), resource, false)?;
    let row = row.ok_or_else(|| ApiError::NotFound(missing()))?;
    Ok(single(resource, spec.project(row)))
}

/// A collection of a table that can be huge: see the module doc.
pub(super) async fn big_collection<T, F, Fut>(
    resource: &Resource,
    table: Table,
    query: Option<String>,
    path_conditions: Vec<Condition>,
    select: F,
    to_json: fn(&T) -> Value,
) -> Result<Response, ApiError>
where
    F: FnOnce(Selection) -> Fut,
    Fut: Future<Output = Result<Page<T>, StoreError>>,
{
    let spec = ResultSpec::parse(query.as_deref(), resource, true)?;
    let (rows, total) = big_rows(resource, table, &spec, path_conditions, select, to_json).await?;
    Ok(collection(resource, rows, total))
}

/// The rows and total of [`big_collection`], for a parsed query.
pub(super) async fn big_rows<T, F, Fut>(
    resource: &Resource,
    table: Table,
    spec: &ResultSpec,
    path_conditions: Vec<Condition>,
    select: F,
    to_json: fn(&T) -> Value,
) -> Result<(Vec<Value>, usize), ApiError>
where
    F: FnOnce(Selection) -> Fut,
    Fut: Future<Output = Result<Page<T>, StoreError>>,
{
    let plan = spec.pushdown(table, path_conditions);
    let page = select(plan.selection).await?;
    let rows: Vec<Value> = page.rows.iter().map(to_json).collect();
    if plan.paged {
        let total = usize::try_from(page.total).unwrap_or(0);
        let rows = rows.into_iter().map(|r| plan.rest.project(r)).collect();
        return Ok((rows, total));
    }
    if rows.len() > MAX_SCAN {
        return Err(ApiError::BadRequest(format!(
            "this query matches more than {MAX_SCAN} {plural} before its text filters or \
             ordering apply, which the database does not evaluate; narrow it with filters on \
             numeric or boolean fields (eq, ne, lt, le, gt, ge; text fields: eq, ne only) and \
             order by numeric fields only",
            plural = resource.plural
        )));
    }
    Ok(plan.rest.apply(rows))
}

/// A path segment that must be an id; anything else names nothing (404).
pub(super) fn path_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no {what} {raw:?}")))
}

/// `field = id` on `table`, for conditions the path implies.
pub(super) fn path_condition(table: Table, field: &str, id: i64) -> Result<Condition, ApiError> {
    table
        .condition(field, crate::store::Cmp::Eq, &[Value::from(id)])
        .ok_or_else(|| {
            tracing::error!(?table, field, "path condition on a column the store lacks");
            ApiError::Internal
        })
}

pub(super) async fn worker_values(state: &ApiState) -> Result<Vec<(WorkerRow, Value)>, ApiError> {
    let workers = state.store.list_workers().await?;
    let builders = state.store.list_builders().await?;
    Ok(workers
        .into_iter()
        .map(|w| {
            let v = worker_json(&w, state, &builders);
            (w, v)
        })
        .collect())
}

// ---- masters ----

pub async fn masters(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let rows = st.store.list_masters().await?;
    small_collection(&query::MASTERS, q, rows.iter().map(master_json).collect())
}

pub async fn master(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "master")?;
    let row = st
        .store
        .list_masters()
        .await?
        .into_iter()
        .find(|m| m.id == id);
    one(&query::MASTERS, q, row.as_ref().map(master_json), || {
        format!("no master {id}")
    })
}

// ---- builders ----

/// A builder by id, or by name (names are letters, digits, '-' and '_').
pub(super) async fn find_builder(st: &ApiState, key: &str) -> Result<BuilderRow, ApiError> {
    let builders = st.store.list_builders().await?;
    let by_id = key
        .parse::<i64>()
        .ok()
        .and_then(|id| builders.iter().position(|b| b.id == id));
    let found = by_id.or_else(|| builders.iter().position(|b| b.name == key));
    found
        .map(|i| builders[i].clone())
        .ok_or_else(|| ApiError::NotFound(format!("no builder {key:?}")))
}

pub async fn builders(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let rows = st.store.list_builders().await?;
    small_collection(&query::BUILDERS, q, rows.iter().map(builder_json).collect())
}

pub async fn builder(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), &query::BUILDERS, false)?;
    let b = find_builder(&st, &key).await?;
    Ok(single(&query::BUILDERS, spec.project(builder_json(&b))))
}

pub async fn builder_builds(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let b = find_builder(&st, &key).await?;
    let cond = path_condition(Table::Builds, "builderid", b.id)?;
    builds_where(&st, q, vec![cond]).await
}

/// Builds, with the `properties` asked for by `property=`.
async fn builds_where(
    st: &ApiState,
    q: Option<String>,
    conditions: Vec<Condition>,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), &query::BUILDS, true)?;
    let store = &st.store;
    let (mut rows, total) = big_rows(
        &query::BUILDS,
        Table::Builds,
        &spec,
        conditions,
        |s| async move { store.select_builds(&s).await },
        build_json,
    )
    .await?;
    super::compat::add_build_properties(st, &spec.properties, &mut rows).await?;
    Ok(collection(&query::BUILDS, rows, total))
}

/// Build `number` of a builder.
async fn find_builder_build(st: &ApiState, key: &str, number: &str) -> Result<BuildRow, ApiError> {
    let b = find_builder(st, key).await?;
    let n = path_id(number, "build number")?;
    let selection = Selection {
        conditions: vec![
            path_condition(Table::Builds, "builderid", b.id)?,
            path_condition(Table::Builds, "number", n)?,
        ],
        ..Selection::default()
    };
    st.store
        .select_builds(&selection)
        .await?
        .rows
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no build {n} of builder {:?}", b.name)))
}

pub async fn builder_build(
    State(st): St,
    Path((key, number)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), &query::BUILDS, false)?;
    let build = find_builder_build(&st, &key, &number).await?;
    let mut rows = vec![spec.project(build_json(&build))];
    super::compat::add_build_properties(&st, &spec.properties, &mut rows).await?;
    Ok(collection(&query::BUILDS, rows, 1))
}

pub async fn builder_build_steps(
    State(st): St,
    Path((key, number)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let build = find_builder_build(&st, &key, &number).await?;
    steps_of(&st, build.id, q).await
}

pub async fn builder_buildrequests(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let b = find_builder(&st, &key).await?;
    let cond = path_condition(Table::BuildRequests, "builderid", b.id)?;
    let store = &st.store;
    big_collection(
        &query::BUILDREQUESTS,
        Table::BuildRequests,
        q,
        vec![cond],
        |s| async move { store.select_buildrequests(&s).await },
        buildrequest_json,
    )
    .await
}

// ---- workers ----

pub async fn workers(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let rows = worker_values(&st).await?;
    small_collection(
        &query::WORKERS,
        q,
        rows.into_iter().map(|(_, v)| v).collect(),
    )
}

pub async fn worker(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let rows = worker_values(&st).await?;
    let id = key.parse::<i64>().ok();
    let found = rows
        .iter()
        .position(|(w, _)| Some(w.id) == id)
        .or_else(|| rows.iter().position(|(w, _)| w.name == key));
    let row = found.map(|i| rows[i].1.clone());
    one(&query::WORKERS, q, row, || format!("no worker {key:?}"))
}

// ---- buildsets, build requests, builds ----

pub async fn buildsets(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    super::compat::buildsets(&st, q).await
}

pub async fn buildset(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "buildset")?;
    let page = st
        .store
        .select_buildsets(&Selection::id(Table::Buildsets, id))
        .await?;
    let mut rows: Vec<Value> = page.rows.iter().map(buildset_json).collect();
    super::compat::fill_rebuilt(&st, &mut rows).await?;
    one(&query::BUILDSETS, q, rows.pop(), || {
        format!("no buildset {id}")
    })
}

pub async fn buildrequests(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let store = &st.store;
    big_collection(
        &query::BUILDREQUESTS,
        Table::BuildRequests,
        q,
        Vec::new(),
        |s| async move { store.select_buildrequests(&s).await },
        buildrequest_json,
    )
    .await
}

pub async fn buildrequest(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "build request")?;
    let page = st
        .store
        .select_buildrequests(&Selection::id(Table::BuildRequests, id))
        .await?;
    one(
        &query::BUILDREQUESTS,
        q,
        page.rows.first().map(buildrequest_json),
        || format!("no build request {id}"),
    )
}

pub async fn builds(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    builds_where(&st, q, Vec::new()).await
}

pub(super) async fn find_build(st: &ApiState, raw: &str) -> Result<BuildRow, ApiError> {
    let id = path_id(raw, "build")?;
    st.store
        .select_builds(&Selection::id(Table::Builds, id))
        .await?
        .rows
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no build {id}")))
}

pub async fn build(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), &query::BUILDS, false)?;
    let build = find_build(&st, &id).await?;
    let mut rows = vec![spec.project(build_json(&build))];
    super::compat::add_build_properties(&st, &spec.properties, &mut rows).await?;
    Ok(collection(&query::BUILDS, rows, 1))
}

pub async fn build_steps(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let build = find_build(&st, &id).await?;
    steps_of(&st, build.id, q).await
}

async fn steps_of(st: &ApiState, build: i64, q: Option<String>) -> Result<Response, ApiError> {
    let cond = path_condition(Table::Steps, "buildid", build)?;
    let store = &st.store;
    big_collection(
        &query::STEPS,
        Table::Steps,
        q,
        vec![cond],
        |s| async move { store.select_steps(&s).await },
        step_json,
    )
    .await
}

/// `{"properties": [{"name": [value, source], ...}]}`, as Buildbot.
pub async fn build_properties(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    ResultSpec::parse(q.as_deref(), &query::PROPERTIES, false)?;
    let build = find_build(&st, &id).await?;
    let props: Map<String, Value> = st
        .store
        .build_properties(build.id)
        .await?
        .into_iter()
        .map(|p| (p.name, json!([p.value, p.source])))
        .collect();
    Ok(single(&query::PROPERTIES, Value::Object(props)))
}

// ---- steps and logs ----

pub(super) async fn find_step(st: &ApiState, id: i64) -> Result<Option<StepRow>, ApiError> {
    Ok(st
        .store
        .select_steps(&Selection::id(Table::Steps, id))
        .await?
        .rows
        .into_iter()
        .next())
}

pub async fn step(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "step")?;
    let row = find_step(&st, id).await?;
    one(&query::STEPS, q, row.as_ref().map(step_json), || {
        format!("no step {id}")
    })
}

pub async fn step_logs(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "step")?;
    let spec = ResultSpec::parse(q.as_deref(), &query::LOGS, true)?;
    if find_step(&st, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no step {id}")));
    }
    let rows = st.store.step_logs(id).await?;
    let (rows, total) = spec.apply(rows.iter().map(log_json).collect());
    Ok(collection(&query::LOGS, rows, total))
}

pub(super) async fn find_log(st: &ApiState, raw: &str) -> Result<LogRow, ApiError> {
    let id = path_id(raw, "log")?;
    st.store
        .get_log(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no log {id}")))
}

pub async fn log(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), &query::LOGS, false)?;
    let log = find_log(&st, &id).await?;
    Ok(single(&query::LOGS, spec.project(log_json(&log))))
}

/// Lines of a log as one text, and whether [`MAX_LOG_TEXT`] cut it short.
struct LogText {
    text: String,
    /// The first line not included.
    next_line: i64,
    truncated: bool,
}

/// Lines `first..=last` of `log`; with `strip_stream`, each line loses its first character
/// (stdio logs tag lines with their stream: `o`, `e`, `h`, `i`).
async fn read_log(
    st: &ApiState,
    log: &LogRow,
    first: i64,
    last: i64,
    strip_stream: bool,
) -> Result<LogText, ApiError> {
    let mut out = LogText {
        text: String::new(),
        next_line: first,
        truncated: false,
    };
    'reads: while out.next_line <= last {
        let batch_last = last.min(out.next_line.saturating_add(LOG_LINES_PER_READ - 1));
        let chunks = st
            .store
            .log_chunks(log.id, out.next_line, batch_last)
            .await?;
        if chunks.is_empty() {
            break;
        }
        let before = out.next_line;
        for chunk in chunks {
            if chunk.compressed != 0 {
                return Err(ApiError::NotImplemented(format!(
                    "log {} is stored compressed (method {}), which this master cannot read",
                    log.id, chunk.compressed
                )));
            }
            let content = String::from_utf8_lossy(&chunk.content);
            for (i, line) in content.split_inclusive('\n').enumerate() {
                let n = chunk.first_line.saturating_add(i as i64);
                if n < out.next_line {
                    continue;
                }
                if n > batch_last {
                    break;
                }
                let line = if strip_stream {
                    line.char_indices().nth(1).map_or("", |(at, _)| &line[at..])
                } else {
                    line
                };
                if out.text.len() + line.len() > MAX_LOG_TEXT {
                    out.truncated = true;
                    break 'reads;
                }
                out.text.push_str(line);
                out.next_line = n + 1;
            }
        }
        if out.next_line == before {
            // The chunks did not hold the line asked for (a gap): stop rather than loop.
            break;
        }
    }
    Ok(out)
}

/// Buildbot's `logchunks` form: `offset` is the first line, `limit` the most lines.
pub async fn log_contents(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), &query::LOGCHUNKS, false)?;
    let log = find_log(&st, &id).await?;
    let first = i64::try_from(spec.offset).unwrap_or(i64::MAX);
    let last = match spec.limit {
        Some(limit) => first.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)) - 1,
        None => log.num_lines - 1,
    };
    let text = if last >= first {
        read_log(&st, &log, first, last, false).await?.text
    } else {
        String::new()
    };
    let chunk = spec.project(json!({ "logid": log.id, "firstline": first, "content": text }));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "logchunks": [chunk], "meta": {} }),
    ))
}

/// The whole log as text, stdio stream tags removed, as a download named like Buildbot's
/// (`<builder>_build_<n>_step_<step>_log_<slug>`). Always `text/plain`, HTML logs included:
/// build output is not trusted to render in the API's origin.
pub async fn log_raw(State(st): St, Path(id): Path<String>) -> Result<Response, ApiError> {
    let log = find_log(&st, &id).await?;
    let read = read_log(&st, &log, 0, log.num_lines - 1, log.kind == "s").await?;
    let mut text = read.text;
    if read.truncated {
        text.push_str(&format!(
            "\n[switchyard: log cut at {} MiB; read on with /api/v2/logs/{}/contents?offset={}]\n",
            MAX_LOG_TEXT >> 20,
            log.id,
            read.next_line
        ));
    }
    let filename = raw_filename(&st, &log).await?;
    let mut r = (StatusCode::OK, text).into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn raw_filename(st: &ApiState, log: &LogRow) -> Result<String, ApiError> {
    let mut parts = Vec::new();
    if let Some(step) = find_step(st, log.stepid).await? {
        if let Some(build) = st
            .store
            .select_builds(&Selection::id(Table::Builds, step.buildid))
            .await?
            .rows
            .first()
        {
            if let Some(b) = st
                .store
                .list_builders()
                .await?
                .iter()
                .find(|b| b.id == build.builderid)
            {
                parts.push(b.name.clone());
            }
            parts.extend(["build".to_owned(), build.number.to_string()]);
        }
        parts.extend(["step".to_owned(), step.name]);
    }
    parts.extend(["log".to_owned(), log.slug.clone()]);
    // Header-safe: step names are free text.
    Ok(parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect())
}

// ---- changes and schedulers ----

pub async fn changes(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let store = &st.store;
    big_collection(
        &query::CHANGES,
        Table::Changes,
        q,
        Vec::new(),
        |s| async move { store.select_changes(&s).await },
        change_json,
    )
    .await
}

pub async fn change(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "change")?;
    let page = st
        .store
        .select_changes(&Selection::id(Table::Changes, id))
        .await?;
    one(
        &query::CHANGES,
        q,
        page.rows.first().map(change_json),
        || format!("no change {id}"),
    )
}

pub async fn schedulers(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let rows = st.store.list_schedulers().await?;
    small_collection(
        &query::SCHEDULERS,
        q,
        rows.iter().map(scheduler_json).collect(),
    )
}

pub async fn scheduler(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "scheduler")?;
    let rows = st.store.list_schedulers().await?;
    let row = rows.iter().find(|s| s.id == id).map(scheduler_json);
    one(&query::SCHEDULERS, q, row, || format!("no scheduler {id}"))
}

pub(super) fn force_schedulers(
    st: &ApiState,
) -> impl Iterator<Item = &crate::config::SchedulerConfig> {
    st.config
        .schedulers
        .iter()
        .filter(|s| s.kind == SchedulerKind::Force)
}

pub async fn forceschedulers(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let rows = force_schedulers(&st)
        .map(super::compat::forcescheduler_json)
        .collect();
    let rows = super::compat::force_enabled(&st, rows).await?;
    small_collection(&query::FORCESCHEDULERS, q, rows)
}

pub async fn forcescheduler(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let rows = force_schedulers(&st)
        .filter(|s| s.name == name)
        .map(super::compat::forcescheduler_json)
        .collect();
    let row = super::compat::force_enabled(&st, rows).await?.pop();
    one(&query::FORCESCHEDULERS, q, row, || {
        format!("no force scheduler {name:?}")
    })
}
