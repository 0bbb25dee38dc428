//! The master's REST API, shaped like Buildbot's data API v2, and the base change hook, both
//! served on the router's HTTP port ([`mounts`] gives the router its `/api` and
//! `/change_hook` mounts).
//!
//! - `GET /api/v2/...` reads the store (`data`): `{"<plural>": [...], "meta": {"total": N}}`,
//!   with Buildbot's query arguments (`field`, `order`, `limit`, `offset` and filters,
//!   `query`). A single item answers the same shape with one element; Buildbot leaves
//!   `meta` empty there, switchyard says `{"total": 1}`.
//! - `POST /api/v2/...` is JSON-RPC 2.0 with Buildbot's control methods (`control`): force,
//!   stop and rebuild builds, cancel requests, worker and master actions. They go to the
//!   engine through [`Control`].
//! - `POST /change_hook/base` takes a change in Buildbot's `base` dialect (`hook`).
//!
//! Authentication (`auth`, `[master.api]`): control calls and the change hook always need
//! a bearer token or an HTTP Basic user; reads need one only when `public_read` is false.
//! Unlike Buildbot, whose change hook is open unless protected by the web server, the hook
//! here requires credentials too.
//!
//! Every answer is JSON, errors included: `{"error": "..."}` (a JSON-RPC error object for
//! POSTs under `/api`). Request bodies above [`MAX_BODY`] are refused with 413. Answers are
//! passed on to the router as axum streams them, not assembled first.

pub(crate) mod auth;
mod compat;
mod control;
mod data;
mod hook;
mod query;
mod shapes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use switchyard_router::transport::BodyError;
use switchyard_router::transport::{full_body, HttpBody, HttpFuture, HttpMount, HttpService};
use tower::ServiceExt;

use crate::config::MasterConfig;
use crate::control::{Control, ControlError};
use crate::{Store, StoreError};

pub(crate) use compat::entity;

/// The largest request body accepted (a force request or a change is a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;

/// The largest body of one of axum's own plain-text error answers that is read to be
/// rewritten as JSON (they are a few dozen bytes).
const MAX_ERROR_TEXT: usize = 64 << 10;

/// What the API reads and whom it asks to act.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub config: Arc<MasterConfig>,
    pub control: Arc<dyn Control>,
}

/// The API's mounts on the router's HTTP port: `/api` and `/change_hook`.
pub fn mounts(state: ApiState) -> Vec<HttpMount> {
    let service: Arc<dyn HttpService> = Arc::new(ApiService {
        router: router(Arc::new(state)),
    });
    vec![
        HttpMount::new("/api", service.clone()),
        HttpMount::new("/change_hook", service),
    ]
}

/// The API as one service (for the Buildbot UI's mount, which forwards `api/...` to it).
pub fn service(state: ApiState) -> Arc<dyn HttpService> {
    Arc::new(ApiService {
        router: router(Arc::new(state)),
    })
}

/// The axum router behind both mounts.
fn router(state: Arc<ApiState>) -> axum::Router {
    let api = axum::Router::new()
        .route("/masters", get(data::masters))
        .route("/masters/{id}", get(data::master).post(control::master))
        .route("/builders", get(data::builders))
        .route("/builders/{builder}", get(data::builder))
        .route("/builders/{builder}/builds", get(data::builder_builds))
        .route(
            "/builders/{builder}/forceschedulers",
            get(compat::builder_forceschedulers),
        )
        .route("/builders/{builder}/workers", get(compat::builder_workers))
        .route("/workers/{worker}/builders", get(compat::worker_builders))
        .route(
            "/buildsets/{id}/properties",
            get(compat::buildset_properties),
        )
        .route("/builds/{id}/changes", get(compat::build_changes))
        .route("/changes/{id}/builds", get(compat::change_builds))
        .route("/projects", get(compat::projects))
        .route("/application.spec", get(compat::application_spec))
        .route("/logs/{id}/raw_inline", get(compat::log_raw_inline))
        .route(
            "/builders/{builder}/builds/{number}",
            get(data::builder_build),
        )
        .route(
            "/builders/{builder}/builds/{number}/steps",
            get(data::builder_build_steps),
        )
        .route(
            "/builders/{builder}/buildrequests",
            get(data::builder_buildrequests),
        )
        .route("/workers", get(data::workers))
        .route("/workers/{worker}", get(data::worker).post(control::worker))
        .route("/buildsets", get(data::buildsets))
        .route("/buildsets/{id}", get(data::buildset))
        .route("/buildrequests", get(data::buildrequests))
        .route(
            "/buildrequests/{id}",
            get(data::buildrequest).post(control::buildrequest),
        )
        .route("/builds", get(data::builds))
        .route("/builds/{id}", get(data::build).post(control::build))
        .route("/builds/{id}/steps", get(data::build_steps))
        .route("/builds/{id}/properties", get(data::build_properties))
        .route("/steps/{id}", get(data::step))
        .route("/steps/{id}/logs", get(data::step_logs))
        .route("/logs/{id}", get(data::log))
        .route("/logs/{id}/contents", get(data::log_contents))
        .route("/logs/{id}/raw", get(data::log_raw))
        .route("/changes", get(data::changes))
        .route("/changes/{id}", get(data::change))
        .route("/schedulers", get(data::schedulers))
        .route(
            "/schedulers/{id}",
            get(data::scheduler).post(control::scheduler),
        )
        .route("/forceschedulers", get(data::forceschedulers))
        .route(
            "/forceschedulers/{name}",
            get(data::forcescheduler).post(control::force),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_guard,
        ));
    axum::Router::new()
        .nest("/api/v2", api)
        .route("/change_hook/{dialect}", post(hook::change_hook))
        .with_state(state)
}

/// Reads need credentials unless `public_read`; control and the hook check their own.
async fn read_guard(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let session = req.extensions().get::<auth::SessionUser>().cloned();
    if matches!(*req.method(), Method::GET | Method::HEAD) && session.is_none() {
        let peer = req.extensions().get::<Peer>().map(|p| p.0);
        if let Err(e) = auth::for_read(req.headers(), &state.config.api) {
            auth::log_refusal(peer, req.uri().path(), &e);
            return ApiError::from(e).into_response();
        }
    }
    next.run(req).await
}

/// The client's address, for log lines about refused requests.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Why a request failed, as the client sees it: a status and a message, answered as
/// `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(#[from] auth::AuthError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The database stayed unreachable; the details are in the master's log.
    #[error("database unavailable; try again later")]
    Unavailable,
    /// A fault on this side; the details are in the master's log, not in the answer.
    #[error("internal error; see the master's log")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "API request failed in the store");
        match e {
            StoreError::Unavailable { .. } => ApiError::Unavailable,
            _ => ApiError::Internal,
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => ApiError::NotFound(m),
            ControlError::Invalid(m) => ApiError::BadRequest(m),
            ControlError::Conflict(m) => ApiError::Conflict(m),
            ControlError::NotImplemented(m) => ApiError::NotImplemented(m),
            ControlError::Store(e) => ApiError::from(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status(), &json!({ "error": self.to_string() }));
        if let ApiError::Unauthorized(_) = self {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth::challenge());
        }
        r
    }
}

/// A JSON answer.
fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut r = Response::new(Body::from(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Runs the axum router for the router's HTTP server: bounds the request body, and makes
/// every error JSON (axum's own 404 and 405 answers are empty).
struct ApiService {
    router: axum::Router,
}

impl HttpService for ApiService {
    fn call(&self, req: hyper::Request<hyper::body::Incoming>, peer: SocketAddr) -> HttpFuture {
        let router = self.router.clone();
        Box::pin(async move { serve(router, req, peer).await })
    }
}

async fn serve(
    router: axum::Router,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> hyper::Response<HttpBody> {
    let rpc = is_rpc(req.method(), req.uri().path());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error_response(
            rpc,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    // Refuse what announces itself too large before reading any of it.
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let bytes = match switchyard_router::transport::read_body(&parts, body, MAX_BODY).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(_)) => return too_large(),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "API request body not read");
            return error_response(rpc, e.status(), &e.to_string());
        }
    };
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Peer(peer));
    let response = match router.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let (parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let failed = parts.status.is_client_error() || parts.status.is_server_error();
    if !failed || is_json {
        // The handlers' own answers go out as axum streams them.
        let body = body.map_err(std::io::Error::other).boxed_unsync();
        return hyper::Response::from_parts(parts, body);
    }
    // axum's own answers: an unknown path, a wrong method, a path parameter that does not
    // decode. Keep the status and headers (Allow), make the body JSON.
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(e) => {
            tracing::debug!(%peer, path = %switchyard_router::logsafe::Trunc(&path), error = %e, "API error text not read");
            String::new()
        }
    };
    let message = match parts.status {
        StatusCode::NOT_FOUND => format!("no such path: {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("method {method} not allowed on {path}"),
        _ if !text.is_empty() => text,
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut r = error_response(rpc, parts.status, &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().append(name, value.clone());
        }
    }
    r
}

/// Whether a request is a JSON-RPC call, whose errors take JSON-RPC's shape.
fn is_rpc(method: &Method, path: &str) -> bool {
    method == Method::POST && (path == "/api" || path.starts_with("/api/"))
}

/// An error answer outside the handlers (body too large, no such path, wrong method).
fn error_response(rpc: bool, status: StatusCode, message: &str) -> hyper::Response<HttpBody> {
    let body = if rpc {
        control::rpc_error_body(&Value::Null, rpc_code_for(status), message)
    } else {
        json!({ "error": message })
    };
    let mut r = hyper::Response::new(full_body(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The JSON-RPC code for an HTTP-level refusal of a call.
fn rpc_code_for(status: StatusCode) -> i64 {
    if status.is_server_error() {
        control::INTERNAL_ERROR
    } else {
        control::INVALID_REQUEST
    }
}
