//! The control endpoints: JSON-RPC 2.0 over `POST`, with Buildbot's methods.
//!
//! A call is `{"jsonrpc": "2.0", "method": ..., "params": {...}, "id": N}` sent as
//! `application/json` (as Buildbot demands: a browser form cannot send that type, so another
//! site cannot make a logged-in browser call these); the answer is `{"jsonrpc": "2.0",
//! "result": ..., "id": N}` or `{"jsonrpc": "2.0", "error": {"code", "message"}, "id": N}`.
//! Batches and notifications are not supported (as in Buildbot). `params` may be left out.
//!
//! | path | methods |
//! |---|---|
//! | `/forceschedulers/<name>` | `force`: `builderNames`, `builderid`, `reason`, `owner` (or `username`), `properties`, and any other param as a property; result `[bsid, {"<builderid>": brid}]` |
//! | `/builds/<id>` | `stop` (`reason`), `rebuild` (`reason`; result as `force`) |
//! | `/buildrequests/<id>` | `cancel` (`reason`) |
//! | `/workers/<id or name>` | `stop`, `kill`, `pause`, `unpause` (`reason`) |
//! | `/masters/<id>` | `stop` (`graceful`, default true), `cancel_stop`; result: the master's state |
//!
//! Errors map onto HTTP statuses and JSON-RPC codes: no credentials 401 (-32600), malformed
//! JSON 400 (-32700), a malformed call 400 (-32600), bad params 400 (-32602), an unknown
//! method 200 (-32601), and from [`ControlError`]: `NotFound` 404 (-32600, as Buildbot answers
//! a path naming nothing), `Invalid` 400 (-32602), `Conflict` 409 (-32000),
//! `NotImplemented` 200 (-32601), the database unavailable 503 (-32603), any
//! other failure 500 (-32603).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::auth::{self, Principal};
use super::{json_response, ApiState, Peer};
use crate::config::SchedulerKind;
use crate::control::{Buildset, ControlError, ForceRequest, MasterAction, WorkerAction};
use crate::StoreError;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined (JSON-RPC reserves -32000..-32099 for servers): a conflict.
pub const CONFLICT: i64 = -32000;

/// The default `reason` of stop, cancel and worker actions (Buildbot's).
const NO_REASON: &str = "no reason";

/// A failed call: the HTTP status, the JSON-RPC code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RpcError {
    status: StatusCode,
    code: i64,
    message: String,
}

impl RpcError {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid_request(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message)
    }

    fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::BAD_REQUEST, INVALID_PARAMS, message)
    }

    fn not_found(message: impl Into<String>) -> RpcError {
        RpcError::new(StatusCode::NOT_FOUND, INVALID_REQUEST, message)
    }
}

impl From<ControlError> for RpcError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => RpcError::not_found(m),
            ControlError::Invalid(m) => RpcError::invalid_params(m),
            ControlError::Conflict(m) => RpcError::new(StatusCode::CONFLICT, CONFLICT, m),
            ControlError::NotImplemented(m) => RpcError::new(StatusCode::OK, METHOD_NOT_FOUND, m),
            ControlError::Store(e) => RpcError::from(e),
        }
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "API control call failed in the store");
        match e {
            StoreError::Unavailable { .. } => RpcError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                INTERNAL_ERROR,
                "database unavailable; try again later",
            ),
            _ => RpcError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                INTERNAL_ERROR,
                "internal error; see the master's log",
            ),
        }
    }
}

/// A JSON-RPC error answer body.
pub fn rpc_error_body(id: &Value, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "error": { "code": code, "message": message },
        "id": id,
    })
}

fn error_response(id: &Value, e: &RpcError) -> Response {
    json_response(e.status, &rpc_error_body(id, e.code, &e.message))
}

/// What a control path names.
#[derive(Debug, Clone)]
enum Target {
    ForceScheduler(String),
    Build(String),
    BuildRequest(String),
    Worker(String),
    Master(String),
    Scheduler(String),
}

type St = State<Arc<ApiState>>;

pub async fn force(
    State(st): St,
    Path(name): Path<String>,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(
        &st,
        Target::ForceScheduler(name),
        peer,
        session,
        &headers,
        &body,
    )
    .await
}

pub async fn build(
    State(st): St,
    Path(id): Path<String>,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&st, Target::Build(id), peer, session, &headers, &body).await
}

pub async fn buildrequest(
    State(st): St,
    Path(id): Path<String>,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(
        &st,
        Target::BuildRequest(id),
        peer,
        session,
        &headers,
        &body,
    )
    .await
}

pub async fn worker(
    State(st): St,
    Path(key): Path<String>,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&st, Target::Worker(key), peer, session, &headers, &body).await
}

pub async fn scheduler(
    State(st): St,
    Path(id): Path<String>,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&st, Target::Scheduler(id), peer, session, &headers, &body).await
}

pub async fn master(
    State(st): St,
    Path(id): Path<String>,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(&st, Target::Master(id), peer, session, &headers, &body).await
}

/// Authenticates, decodes and runs one call.
async fn call(
    st: &ApiState,
    target: Target,
    peer: Option<Extension<Peer>>,
    session: Option<Extension<auth::SessionUser>>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let checked = match session {
        Some(Extension(auth::SessionUser(user))) => auth::for_session(user, &st.config.api),
        None => auth::for_control(headers, &st.config.api),
    };
    let principal = match checked {
        Ok(p) => p,
        Err(e) => {
            auth::log_refusal(peer.map(|p| p.0 .0), &format!("{target:?}"), &e);
            let mut r = error_response(
                &Value::Null,
                &RpcError::new(StatusCode::UNAUTHORIZED, INVALID_REQUEST, e.to_string()),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth::challenge());
            return r;
        }
    };
    let (method, id, params) = match decode(headers, body) {
        Ok(call) => call,
        Err((id, e)) => return error_response(&id, &e),
    };
    match dispatch(st, &target, &method, params, &principal).await {
        Ok(result) => json_response(
            StatusCode::OK,
            &json!({ "jsonrpc": "2.0", "result": result, "id": id }),
        ),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(on = %switchyard_router::logsafe::Trunc(&format!("{target:?}")), method = %switchyard_router::logsafe::Trunc(&method), code = e.code, "control call failed");
            }
            error_response(&id, &e)
        }
    }
}

/// A decoded call: method, id and params.
type Call = (String, Value, Map<String, Value>);

/// `(method, id, params)` of a JSON-RPC 2.0 request, or the error and the id to answer with.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Call, (Value, RpcError)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err((
            Value::Null,
            RpcError::invalid_request("invalid content-type (use application/json)"),
        ));
    }
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        (
            Value::Null,
            RpcError::new(
                StatusCode::BAD_REQUEST,
                PARSE_ERROR,
                format!("JSON parse error: {e}"),
            ),
        )
    })?;
    let mut request = match request {
        Value::Object(map) => map,
        Value::Array(_) => {
            return Err((
                Value::Null,
                RpcError::invalid_request("JSON-RPC batch requests are not supported"),
            ))
        }
        _ => {
            return Err((
                Value::Null,
                RpcError::invalid_request("the JSON-RPC request must be an object"),
            ))
        }
    };
    let id = request.remove("id").unwrap_or(Value::Null);
    let fail = |msg: &str| Err((id.clone(), RpcError::invalid_request(msg)));
    if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
        return Err((
            Value::Null,
            RpcError::invalid_request("'id' must be a string, number, or null"),
        ));
    }
    if request.get("jsonrpc") != Some(&Value::from("2.0")) {
        return fail("only JSON-RPC 2.0 is supported: set \"jsonrpc\": \"2.0\"");
    }
    let method = match request.remove("method") {
        Some(Value::String(m)) => m,
        _ => return fail("'method' must be a string"),
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return fail("'params' must be an object"),
    };
    Ok((method, id, params))
}

async fn dispatch(
    st: &ApiState,
    target: &Target,
    method: &str,
    params: Map<String, Value>,
    principal: &Principal,
) -> Result<Value, RpcError> {
    let control = &st.control;
    match (target, method) {
        (Target::ForceScheduler(name), "force") => force_call(st, name, params, principal).await,
        (Target::Build(id), "stop") => {
            let id = path_id(id, "build")?;
            control.stop_build(id, reason(&params)?).await?;
            Ok(Value::Null)
        }
        (Target::Build(id), "rebuild") => {
            let id = path_id(id, "build")?;
            let reason = opt_string(&params, "reason")?.unwrap_or_else(|| "rebuild".into());
            Ok(buildset_result(&control.rebuild(id, reason).await?))
        }
        (Target::BuildRequest(id), "cancel") => {
            let id = path_id(id, "build request")?;
            control.cancel_buildrequest(id, reason(&params)?).await?;
            Ok(Value::Null)
        }
        (Target::Worker(key), "stop" | "kill" | "pause" | "unpause") => {
            let action = match method {
                "stop" => WorkerAction::Stop,
                "kill" => WorkerAction::Kill,
                "pause" => WorkerAction::Pause,
                _ => WorkerAction::Unpause,
            };
            let worker = find_worker(st, key).await?;
            control
                .worker_action(worker, action, reason(&params)?)
                .await?;
            Ok(Value::Null)
        }
        (Target::Scheduler(id), "enable") => {
            let id = path_id(id, "scheduler")?;
            let Some(Value::Bool(enabled)) = params.get("enabled") else {
                return Err(RpcError::invalid_params("'enabled' must be a boolean"));
            };
            control.set_scheduler_enabled(id, *enabled).await?;
            Ok(Value::Null)
        }
        (Target::Master(id), "stop" | "cancel_stop") => {
            // `self`: the master of the node answering (what `switchyard shutdown` uses).
            let id = match (id.as_str(), control.local_master()) {
                ("self", Some(local)) => local,
                _ => path_id(id, "master")?,
            };
            let action = if method == "stop" {
                let graceful = match params.get("graceful") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(RpcError::invalid_params("'graceful' must be a boolean"))
                    }
                };
                MasterAction::Stop { graceful }
            } else {
                MasterAction::CancelStop
            };
            Ok(control.master_action(id, action).await?)
        }
        _ => Err(RpcError::new(
            StatusCode::OK,
            METHOD_NOT_FOUND,
            format!("no method '{method}' here ({})", describe(target)),
        )),
    }
}

fn describe(target: &Target) -> &'static str {
    match target {
        Target::ForceScheduler(_) => "force schedulers have: force",
        Target::Build(_) => "builds have: stop, rebuild",
        Target::BuildRequest(_) => "build requests have: cancel",
        Target::Worker(_) => "workers have: stop, kill, pause, unpause",
        Target::Master(_) => "masters have: stop, cancel_stop",
        Target::Scheduler(_) => "schedulers have: enable",
    }
}

/// Params `force` reads itself; any other param becomes a build property.
const FORCE_PARAMS: [&str; 6] = [
    "builderNames",
    "builderid",
    "reason",
    "owner",
    "username",
    "properties",
];

async fn force_call(
    st: &ApiState,
    scheduler: &str,
    mut params: Map<String, Value>,
    principal: &Principal,
) -> Result<Value, RpcError> {
    let known = st
        .config
        .scheduler(scheduler)
        .is_some_and(|s| s.kind == SchedulerKind::Force);
    if !known {
        return Err(RpcError::not_found(format!(
            "no force scheduler named {scheduler:?}"
        )));
    }
    let mut builder_names = match params.get("builderNames") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RpcError::invalid_params("'builderNames' must be a list of strings"))?,
        Some(_) => {
            return Err(RpcError::invalid_params(
                "'builderNames' must be a list of strings",
            ))
        }
    };
    match params.get("builderid") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let id = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| RpcError::invalid_params("'builderid' must be an integer"))?;
            let builders = st.store.list_builders().await?;
            let name = builders
                .into_iter()
                .find(|b| b.id == id)
                .map(|b| b.name)
                .ok_or_else(|| RpcError::not_found(format!("no builder {id}")))?;
            if !builder_names.contains(&name) {
                builder_names.push(name);
            }
        }
    }
    let reason = opt_string(&params, "reason")?;
    let owner = match opt_string(&params, "owner")? {
        Some(o) if !o.is_empty() => Some(o),
        _ => opt_string(&params, "username")?.filter(|u| !u.is_empty()),
    }
    .unwrap_or_else(|| principal.name().to_owned());
    let explicit = match params.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(RpcError::invalid_params("'properties' must be an object")),
    };
    let mut properties: BTreeMap<String, Value> = params
        .into_iter()
        .filter(|(k, _)| !FORCE_PARAMS.contains(&k.as_str()))
        .collect();
    properties.extend(explicit);
    let request = ForceRequest {
        scheduler: scheduler.to_owned(),
        builder_names: (!builder_names.is_empty()).then_some(builder_names),
        reason,
        owner: Some(owner),
        properties,
    };
    let buildset = st.control.force(request).await?;
    Ok(buildset_result(&buildset))
}

/// Buildbot's `[bsid, {"<builderid>": brid, ...}]`.
fn buildset_result(b: &Buildset) -> Value {
    let brids: Map<String, Value> = b
        .requests
        .iter()
        .map(|(builder, brid)| (builder.to_string(), Value::from(*brid)))
        .collect();
    json!([b.buildset, brids])
}

fn path_id(raw: &str, what: &str) -> Result<i64, RpcError> {
    raw.parse()
        .map_err(|_| RpcError::not_found(format!("no {what} {raw:?}")))
}

/// A worker by id or name.
async fn find_worker(st: &ApiState, key: &str) -> Result<i64, RpcError> {
    if let Ok(id) = key.parse::<i64>() {
        return Ok(id);
    }
    st.store
        .list_workers()
        .await?
        .into_iter()
        .find(|w| w.name == key)
        .map(|w| w.id)
        .ok_or_else(|| RpcError::not_found(format!("no worker {key:?}")))
}

fn opt_string(params: &Map<String, Value>, key: &str) -> Result<Option<String>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "'{key}' must be a string"
        ))),
    }
}

fn reason(params: &Map<String, Value>) -> Result<String, RpcError> {
    Ok(opt_string(params, "reason")?.unwrap_or_else(|| NO_REASON.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    }

    #[test]
    fn decodes_calls_and_refuses_malformed_ones() {
        let (m, id, p) = decode(
            &json_headers(),
            br#"{"jsonrpc":"2.0","method":"force","params":{"a":1},"id":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            (m.as_str(), id, p["a"].clone()),
            ("force", json!("x"), json!(1))
        );
        let (_, _, p) = decode(
            &json_headers(),
            br#"{"jsonrpc":"2.0","method":"stop","id":1}"#,
        )
        .unwrap();
        assert!(p.is_empty());

        for (body, code, id) in [
            (&b"{nope"[..], PARSE_ERROR, Value::Null),
            (br#"[{"jsonrpc":"2.0"}]"#, INVALID_REQUEST, Value::Null),
            (
                br#"{"jsonrpc":"1.0","method":"x","id":3}"#,
                INVALID_REQUEST,
                json!(3),
            ),
            (
                br#"{"jsonrpc":"2.0","method":5,"id":3}"#,
                INVALID_REQUEST,
                json!(3),
            ),
            (
                br#"{"jsonrpc":"2.0","method":"x","params":[1],"id":3}"#,
                INVALID_REQUEST,
                json!(3),
            ),
            (
                br#"{"jsonrpc":"2.0","method":"x","id":{}}"#,
                INVALID_REQUEST,
                Value::Null,
            ),
        ] {
            let (got_id, e) = decode(&json_headers(), body).unwrap_err();
            assert_eq!(
                (e.code, got_id),
                (code, id),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
        let (_, e) = decode(
            &HeaderMap::new(),
            br#"{"jsonrpc":"2.0","method":"x","id":1}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("content-type"));
    }
}
