//! Crossbar's HTTP bridge services: `publisher` (POST JSON to publish) and `caller` (POST
//! JSON to call), with Crossbar's request and response formats, so scripts and webhooks that
//! post to Crossbar keep working.
//!
//! - publisher: `{"topic", "args"?, "kwargs"?, "options"?}` → `200 {"id": publication}`;
//! - caller: `{"procedure", "args"?, "kwargs"?}` → `200 {"args"?, "kwargs"?}`;
//! - a WAMP error → `200 {"error", "args", "kwargs"}` (as Crossbar answers);
//! - bad requests → 400, too large → 413, other methods → 405, OPTIONS → CORS preflight.
//!
//! Each service acts through one in-process session with the configured realm and role, so
//! that role's permissions apply to everything posted.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeSeed;

use crate::service::{Answer, ServiceClient};
use crate::wire::{BinaryForm, Dict, DictSer, Payload, Value, ValueSeed};
use crate::Router;

/// Which bridge service a path runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeKind {
    Publisher,
    Caller,
}

/// A bridge path's configuration.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub kind: BridgeKind,
    pub realm: String,
    pub role: String,
    /// Largest request body accepted, in bytes.
    pub post_body_limit: usize,
}

/// A running bridge service.
pub struct HttpBridge {
    config: BridgeConfig,
    client: Arc<ServiceClient>,
}

type Body = Full<Bytes>;

impl HttpBridge {
    pub fn start(router: &Router, config: BridgeConfig) -> Result<HttpBridge, String> {
        let authid = match config.kind {
            BridgeKind::Publisher => "http-publisher",
            BridgeKind::Caller => "http-caller",
        };
        let client = ServiceClient::start(router, &config.realm, authid, &config.role)?;
        Ok(HttpBridge { config, client })
    }

    pub async fn serve(&self, req: Request<Incoming>) -> Response<Body> {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut resp = self.handle(req).await;
        // Crossbar's headers: CORS for browsers, never cached.
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            origin
                .filter(|o| o.as_bytes() != b"null")
                .unwrap_or(HeaderValue::from_static("*")),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store,no-cache,must-revalidate,max-age=0"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        resp
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match *req.method() {
            Method::OPTIONS => {
                let mut r = json(StatusCode::OK, Bytes::new());
                let allow = HeaderValue::from_static("POST,PUT,OPTIONS");
                r.headers_mut().insert(header::ALLOW, allow.clone());
                r.headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
                if let Some(h) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    r.headers_mut()
                        .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
                }
                return r;
            }
            Method::POST | Method::PUT => {}
            _ => {
                return deny(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "HTTP method not allowed (use POST or PUT)",
                )
            }
        }
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let mut parts = ct.split(';').map(str::trim);
            if parts.next() != Some("application/json") {
                return deny(
                    StatusCode::BAD_REQUEST,
                    "bad or missing content type (must be application/json)",
                );
            }
            if parts.any(|p| {
                p.starts_with("charset=") && !matches!(p, "charset=utf-8" | "charset=utf8")
            }) {
                return deny(StatusCode::BAD_REQUEST, "body must be UTF-8");
            }
        }
        let (parts, body) = req.into_parts();
        let body = match super::read_body(&parts, body, self.config.post_body_limit).await {
            Ok(b) => b,
            Err(e) => return deny(e.status(), &e.to_string()),
        };
        let parsed = ValueSeed(BinaryForm::Base64String)
            .deserialize(&mut serde_json::Deserializer::from_slice(&body));
        let mut event = match parsed {
            Ok(Value::Dict(d)) => d,
            Ok(_) => return deny(StatusCode::BAD_REQUEST, "body must be a JSON object"),
            Err(e) => return deny(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
        };
        let args = match event.remove("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::List(l)) => l,
            Some(_) => return deny(StatusCode::BAD_REQUEST, "'args' must be a list"),
        };
        let kwargs = match event.remove("kwargs") {
            None | Some(Value::Null) => Dict::new(),
            Some(Value::Dict(d)) => d,
            Some(_) => return deny(StatusCode::BAD_REQUEST, "'kwargs' must be an object"),
        };
        let payload = Payload::new(args, kwargs);
        let answer = match self.config.kind {
            BridgeKind::Publisher => {
                let Some(Value::String(topic)) = event.remove("topic") else {
                    return deny(StatusCode::BAD_REQUEST, "missing 'topic' in request body");
                };
                let options = match event.remove("options") {
                    None | Some(Value::Null) => Dict::new(),
                    Some(Value::Dict(d)) => d,
                    Some(_) => return deny(StatusCode::BAD_REQUEST, "'options' must be an object"),
                };
                self.client.publish(&topic, options, payload).await
            }
            BridgeKind::Caller => {
                let Some(Value::String(procedure)) = event.remove("procedure") else {
                    return deny(
                        StatusCode::BAD_REQUEST,
                        "missing 'procedure' in request body",
                    );
                };
                self.client.call(&procedure, payload).await
            }
        };
        let mut out = Dict::new();
        let status = match answer {
            Answer::Published(id) => {
                out.insert("id".into(), Value::from(id));
                StatusCode::OK
            }
            Answer::Result(p) => {
                if !p.args().is_empty() {
                    out.insert("args".into(), Value::List(p.args().to_vec()));
                }
                if let Some(k) = p.kwargs().filter(|k| !k.is_empty()) {
                    out.insert("kwargs".into(), Value::Dict(k.clone()));
                }
                StatusCode::OK
            }
            Answer::Error(error, p) => {
                out.insert("error".into(), Value::from(error));
                out.insert("args".into(), Value::List(p.args().to_vec()));
                out.insert(
                    "kwargs".into(),
                    Value::Dict(p.kwargs().cloned().unwrap_or_default()),
                );
                StatusCode::OK
            }
            Answer::Gone => {
                out.insert("error".into(), Value::from("wamp.error.runtime_error"));
                out.insert(
                    "args".into(),
                    Value::List(vec![Value::from("the router is shutting down")]),
                );
                out.insert("kwargs".into(), Value::Dict(Dict::new()));
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        json(status, encode(&out))
    }
}

fn encode(d: &Dict) -> Bytes {
    Bytes::from(serde_json::to_vec(&DictSer(d, BinaryForm::Base64String)).unwrap_or_default())
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

/// Crossbar's shape for a refused request.
fn deny(status: StatusCode, reason: &str) -> Response<Body> {
    let mut d = Dict::new();
    d.insert("error".into(), Value::from(reason));
    d.insert("args".into(), Value::List(Vec::new()));
    d.insert("kwargs".into(), Value::Dict(Dict::new()));
    json(status, encode(&d))
}
