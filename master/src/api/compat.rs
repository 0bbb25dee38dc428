//! What Buildbot's own web UI (buildbot-www) reads beyond the plain collections: builds'
//! `properties` (`property=`), the links between resources (`builders/<id>/workers`,
//! `builds/<id>/changes`, ...), `projects`, `application.spec` and `logs/<id>/raw_inline`,
//! and the force schedulers' parameters in Buildbot's nested schema.

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::data::{
    collection, find_build, find_builder, find_log, force_schedulers, path_id, worker_values,
};
use super::query::{self, Resource, ResultSpec};
use super::shapes::{build_json, change_json};
use super::{ApiError, ApiState};
use crate::store::{Selection, Table};

type St = State<Arc<ApiState>>;
use std::sync::Arc;

/// Most builds whose properties one answer includes.
const MAX_PROPERTY_BUILDS: usize = 5000;

/// Adds `properties` (`{"name": [value, source]}`, only the names asked for, `*` for all)
/// to each build row, as Buildbot's `property=` does.
pub(super) async fn add_build_properties(
    st: &ApiState,
    names: &[String],
    rows: &mut [Value],
) -> Result<(), ApiError> {
    if names.is_empty() {
        return Ok(());
    }
    if rows.len() > MAX_PROPERTY_BUILDS {
        return Err(ApiError::BadRequest(format!(
            "property= is answered for at most {MAX_PROPERTY_BUILDS} builds: add a limit"
        )));
    }
    let all = names.iter().any(|n| n == "*");
    let ids: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.get("buildid").and_then(Value::as_i64))
        .collect();
    let mut by_build: std::collections::HashMap<i64, Map<String, Value>> = Default::default();
    for (build, p) in st.store.builds_properties(&ids).await? {
        if all || names.contains(&p.name) {
            by_build
                .entry(build)
                .or_default()
                .insert(p.name, json!([p.value, p.source]));
        }
    }
    for row in rows.iter_mut() {
        let Some(id) = row.get("buildid").and_then(Value::as_i64) else {
            continue;
        };
        let props = by_build.remove(&id).unwrap_or_default();
        if let Value::Object(map) = row {
            map.insert("properties".into(), Value::Object(props));
        }
    }
    Ok(())
}

/// Sets each force scheduler's `enabled` from the database (Buildbot's `enable`, shared by
/// every master).
pub(super) async fn force_enabled(
    st: &ApiState,
    mut rows: Vec<Value>,
) -> Result<Vec<Value>, crate::StoreError> {
    let schedulers = st.store.list_schedulers().await?;
    for row in &mut rows {
        let enabled = schedulers
            .iter()
            .find(|s| Some(s.name.as_str()) == row["name"].as_str())
            .is_none_or(|s| s.enabled);
        row["enabled"] = json!(enabled);
    }
    Ok(rows)
}

/// A force scheduler as Buildbot's data API shows it: its parameters are one nested group
/// (`username`, `reason`, `priority`) in the schema of Buildbot's `getSpec`.
pub(super) fn forcescheduler_json(s: &crate::config::SchedulerConfig) -> Value {
    let field = |name: &str, label: &str, kind: &str, default: Value, size: i64| {
        json!({
            "name": name, "fullName": name, "label": label, "tablabel": label,
            "type": kind, "default": default, "required": false, "multiple": false,
            "regex": null, "hide": false, "maxsize": null, "autopopulate": null,
            "tooltip": "", "size": size,
        })
    };
    let mut username = field("username", "Your name:", "username", json!(""), 30);
    username["need_email"] = json!(false);
    let reason = s.reason.clone().unwrap_or_else(|| "force build".into());
    json!({
        "name": s.name,
        "label": s.name,
        "button_name": s.name,
        "builder_names": s.builders,
        "enabled": true,
        "all_fields": [{
            "name": "", "fullName": null, "label": "", "tablabel": "", "type": "nested",
            "default": "", "required": false, "multiple": false, "regex": null,
            "hide": false, "maxsize": null, "autopopulate": null, "tooltip": "",
            "layout": "vertical", "columns": 1,
            "fields": [
                username,
                field("reason", "reason", "text", json!(reason), 20),
                field("priority", "priority", "int", json!(0), 10),
            ],
        }],
    })
}

fn small(resource: &Resource, q: Option<String>, rows: Vec<Value>) -> Result<Response, ApiError> {
    let spec = ResultSpec::parse(q.as_deref(), resource, true)?;
    let (rows, total) = spec.apply(rows);
    Ok(collection(resource, rows, total))
}

/// `buildsets`, with `rebuilt_buildid` (field and filter) from the rebuilds' `rebuild_of`
/// property: a `rebuilt_buildid` filter becomes a filter on the rebuilds' `bsid`s.
pub(super) async fn buildsets(st: &ApiState, q: Option<String>) -> Result<Response, ApiError> {
    let mut spec = ResultSpec::parse(q.as_deref(), &query::BUILDSETS, true)?;
    let (rebuilt, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut spec.filters)
        .into_iter()
        .partition(|f| f.field == "rebuilt_buildid");
    spec.filters = rest;
    if !rebuilt.is_empty() {
        let bsids: Vec<Value> = st
            .store
            .rebuilt_builds(None)
            .await?
            .into_iter()
            .filter(|(_, b)| {
                let row = json!({ "rebuilt_buildid": b });
                rebuilt.iter().all(|f| f.matches(&row))
            })
            .map(|(bsid, _)| json!(bsid))
            .collect();
        if bsids.is_empty() {
            return Ok(collection(&query::BUILDSETS, Vec::new(), 0));
        }
        spec.filters.push(query::Filter {
            field: "bsid",
            op: query::Op::Eq,
            values: bsids,
        });
    }
    let store = &st.store;
    let (mut rows, total) = super::data::big_rows(
        &query::BUILDSETS,
        Table::Buildsets,
        &spec,
        Vec::new(),
        |s| async move { store.select_buildsets(&s).await },
        super::shapes::buildset_json,
    )
    .await?;
    fill_rebuilt(st, &mut rows).await?;
    Ok(collection(&query::BUILDSETS, rows, total))
}

/// Sets `rebuilt_buildid` in buildset rows that show it (one query for all of them).
pub(super) async fn fill_rebuilt(st: &ApiState, rows: &mut [Value]) -> Result<(), ApiError> {
    let ids: Vec<i64> = rows
        .iter()
        .filter(|r| r.get("rebuilt_buildid").is_some())
        .filter_map(|r| r.get("bsid").and_then(Value::as_i64))
        .collect();
    let mut rebuilt = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        rebuilt.extend(st.store.rebuilt_builds(Some(chunk)).await?);
    }
    for row in rows.iter_mut() {
        let Some(build) = row
            .get("bsid")
            .and_then(Value::as_i64)
            .and_then(|b| rebuilt.get(&b))
        else {
            continue;
        };
        if let Some(slot) = row.get_mut("rebuilt_buildid") {
            *slot = json!(build);
        }
    }
    Ok(())
}

/// `builders/<id>/forceschedulers`: the force schedulers that can start this builder.
pub async fn builder_forceschedulers(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let b = find_builder(&st, &key).await?;
    let rows = force_schedulers(&st)
        .filter(|s| s.builders.contains(&b.name))
        .map(forcescheduler_json)
        .collect();
    let rows = force_enabled(&st, rows).await?;
    small(&query::FORCESCHEDULERS, q, rows)
}

/// `builders/<id>/workers`: the workers configured for this builder.
pub async fn builder_workers(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let b = find_builder(&st, &key).await?;
    let names: BTreeSet<&String> = st
        .config
        .builders
        .iter()
        .filter(|c| c.name == b.name)
        .flat_map(|c| c.workers.iter())
        .collect();
    let rows = worker_values(&st)
        .await?
        .into_iter()
        .filter(|(w, _)| names.contains(&w.name))
        .map(|(_, v)| v)
        .collect();
    small(&query::WORKERS, q, rows)
}

/// `workers/<id>/builders`: the builders configured to use this worker.
pub async fn worker_builders(
    State(st): St,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let workers = worker_values(&st).await?;
    let id = key.parse::<i64>().ok();
    let worker = workers
        .iter()
        .find(|(w, _)| Some(w.id) == id || w.name == key)
        .map(|(w, _)| w.name.clone())
        .ok_or_else(|| ApiError::NotFound(format!("no worker {key:?}")))?;
    let names: BTreeSet<&String> = st
        .config
        .builders
        .iter()
        .filter(|c| c.workers.contains(&worker))
        .map(|c| &c.name)
        .collect();
    let rows = st
        .store
        .list_builders()
        .await?
        .iter()
        .filter(|b| names.contains(&b.name))
        .map(super::shapes::builder_json)
        .collect();
    small(&query::BUILDERS, q, rows)
}

/// `buildsets/<id>/properties`: `{"name": [value, source]}`.
pub async fn buildset_properties(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    ResultSpec::parse(q.as_deref(), &query::PROPERTIES, false)?;
    let id = path_id(&id, "buildset")?;
    let found = st
        .store
        .select_buildsets(&Selection::id(Table::Buildsets, id))
        .await?;
    if found.rows.is_empty() {
        return Err(ApiError::NotFound(format!("no buildset {id}")));
    }
    let props: Map<String, Value> = st
        .store
        .buildset_properties(id)
        .await?
        .into_iter()
        .map(|(name, (value, source))| (name, json!([value, source])))
        .collect();
    Ok(collection(
        &query::PROPERTIES,
        vec![Value::Object(props)],
        1,
    ))
}

/// `builds/<id>/changes`: the change the build was made for (none for a forced build).
pub async fn build_changes(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let build = find_build(&st, &id).await?;
    let mut rows = Vec::new();
    if let Some(change) = st.store.build_changeid(build.id).await? {
        let page = st
            .store
            .select_changes(&Selection::id(Table::Changes, change))
            .await?;
        rows.extend(page.rows.iter().map(change_json));
    }
    small(&query::CHANGES, q, rows)
}

/// `changes/<id>/builds`: the builds made for a change.
pub async fn change_builds(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "change")?;
    let mut rows = Vec::new();
    for build in st.store.change_buildids(id).await? {
        let page = st
            .store
            .select_builds(&Selection::id(Table::Builds, build))
            .await?;
        rows.extend(page.rows.iter().map(build_json));
    }
    small(&query::BUILDS, q, rows)
}

pub const PROJECTS: Resource = Resource {
    plural: "projects",
    fields: &[
        ("projectid", query::Kind::Int),
        ("name", query::Kind::Text),
        ("slug", query::Kind::Text),
        ("description", query::Kind::Text),
        ("description_format", query::Kind::Text),
        ("description_html", query::Kind::Text),
        ("active", query::Kind::Bool),
    ],
};

/// `projects`: switchyard has no Buildbot projects (builders have `projectid: null`).
pub async fn projects(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    small(&PROJECTS, q, Vec::new())
}

pub const SPECS: Resource = Resource {
    plural: "specs",
    fields: &[
        ("path", query::Kind::Text),
        ("type", query::Kind::Text),
        ("plural", query::Kind::Text),
        ("type_spec", query::Kind::Object),
    ],
};

/// `application.spec`: the collections this API serves and their fields.
pub async fn application_spec(RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let kind = |k: query::Kind| match k {
        query::Kind::Int => "integer",
        query::Kind::Bool => "boolean",
        query::Kind::Text => "string",
        query::Kind::List => "list",
        query::Kind::Object => "jsonobject",
    };
    let rows = query::ALL
        .iter()
        .copied()
        .chain([&PROJECTS])
        .map(|r| {
            let fields: Vec<Value> = r
                .fields
                .iter()
                .map(|(name, k)| json!({ "name": name, "type": kind(*k) }))
                .collect();
            let singular = r.plural.trim_end_matches('s');
            json!({
                "path": r.plural,
                "type": singular,
                "plural": r.plural,
                "type_spec": { "name": singular, "fields": fields },
            })
        })
        .collect();
    small(&SPECS, q, rows)
}

/// `logs/<id>/raw_inline`: the raw log shown in the browser (still `text/plain`).
pub async fn log_raw_inline(st: St, Path(id): Path<String>) -> Result<Response, ApiError> {
    find_log(&st.0, &id).await?;
    let mut r = super::data::log_raw(st, Path(id)).await?;
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline"),
    );
    Ok(r)
}

/// One entity as the REST API shows it, by collection and id (`None` if it does not exist
/// or the collection is not one of these): for relaying bus events with full entities.
pub(crate) async fn entity(st: &ApiState, coll: &str, id: i64) -> Result<Option<Value>, ApiError> {
    use super::data::find_step;
    use super::shapes::{
        builder_json, buildrequest_json, buildset_json, log_json, master_json, step_json,
    };
    let store = &st.store;
    Ok(match coll {
        "builds" => find_build(st, &id.to_string())
            .await
            .ok()
            .map(|b| build_json(&b)),
        "steps" => find_step(st, id).await?.map(|s| step_json(&s)),
        "logs" => store.get_log(id).await?.map(|l| log_json(&l)),
        "buildrequests" => store
            .select_buildrequests(&Selection::id(Table::BuildRequests, id))
            .await?
            .rows
            .first()
            .map(buildrequest_json),
        "buildsets" => {
            let page = store
                .select_buildsets(&Selection::id(Table::Buildsets, id))
                .await?;
            let mut rows: Vec<Value> = page.rows.iter().map(buildset_json).collect();
            fill_rebuilt(st, &mut rows).await?;
            rows.pop()
        }
        "workers" => worker_values(st)
            .await?
            .into_iter()
            .find(|(w, _)| w.id == id)
            .map(|(_, v)| v),
        "masters" => store
            .list_masters()
            .await?
            .iter()
            .find(|m| m.id == id)
            .map(master_json),
        "builders" => store
            .list_builders()
            .await?
            .iter()
            .find(|b| b.id == id)
            .map(builder_json),
        _ => None,
    })
}
