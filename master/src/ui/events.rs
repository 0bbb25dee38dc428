//! `GET /api/v2/events`: the Buildbot bus of the master's realm as Server-Sent Events, for
//! the web UI and anything else that speaks `text/event-stream`.
//!
//! One in-process WAMP session per node subscribes to `org.buildbot.mq.` (prefix match) and
//! renders each event once, as `event: <routing key>` (the topic without the prefix) and
//! `data: <the payload dict as JSON>`, into a bounded [`broadcast`] ring that every client
//! reads. Each client has a task that takes frames from the ring and hands them to its
//! response body through a small bounded channel, so nothing grows with a slow client:
//!
//! - a client that falls a whole ring behind skips what it missed and gets
//!   `event: resync` (data `{"missed": N}`), then goes on; the page reloads its state from
//!   the REST API on it (every client gets one too if the bus outruns the renderer and
//!   events are dropped before the ring);
//! - a client that takes nothing for [`STALLED_CLIENT_TIMEOUT`] (not even the keep-alive
//!   comment sent every [`KEEPALIVE`]) is dropped;
//! - at most [`MAX_CLIENTS`] streams are open per node; beyond that the answer is 503.
//!
//! `?prefix=builds.` passes only the routing keys starting with that text. Reads are open
//! with `[master.api] public_read`; otherwise the request needs what a GET of the REST API
//! needs, or (because a browser's `EventSource` cannot send headers) the token as
//! `?access_token=...`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{json, Value as Json};
use switchyard_router::logsafe::Trunc;
use switchyard_router::service::ServiceClient;
use switchyard_router::transport::{full_body, HttpBody, HttpFuture, HttpService};
use switchyard_router::wire::{Dict, Value};
use switchyard_router::{Router, Shutdown};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};

use crate::api::auth;
use crate::auth::BusTrust;
use crate::config::ApiConfig;
use crate::engine::events::{to_json, MQ_PREFIX};

/// Where the stream is served.
pub const PATH: &str = "/api/v2/events";
/// Most event streams open at once on one node.
pub const MAX_CLIENTS: usize = 256;
/// Events kept for clients that are behind; one further behind gets `resync`.
pub const RING_CAPACITY: usize = 512;
/// Frames waiting in one client's body (the rest wait in the ring).
const CLIENT_QUEUE: usize = 16;
/// A comment goes out when nothing else did for this long, so proxies and browsers keep the
/// connection and a vanished client is noticed.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// A client whose connection takes nothing for this long is dropped.
pub const STALLED_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// An event whose rendered data is larger than this goes out as `{"truncated": true,
/// "bytes": N}` (a log append's text can be reread from the REST API).
pub const MAX_EVENT_DATA: usize = 256 << 10;
/// Bus events waiting for the renderer (it normally keeps up; past this many, events are
/// dropped and every client gets `resync`).
const BUS_QUEUE: usize = 1024;
/// How long the bus session waits before subscribing again after losing its session.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How the browser's `EventSource` should wait before reconnecting, in milliseconds.
const RETRY_MS: u64 = 3000;

/// One event as every client sends it.
pub struct BusEvent {
    /// The routing key (`builds.7.new`), for `?prefix=` filters.
    key: String,
    /// `event: ...\ndata: ...\n\n`.
    frame: Bytes,
}

impl BusEvent {
    /// The routing key (`builds.7.new`); empty for a `resync` marker (events were missed).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The event's data as one line of JSON text (`None` for a `resync` marker).
    pub fn data(&self) -> Option<&str> {
        if self.key.is_empty() {
            return None;
        }
        let text = std::str::from_utf8(&self.frame).ok()?;
        let (_, rest) = text.split_once("\ndata: ")?;
        rest.strip_suffix("\n\n")
    }
}

/// The node's event fan-out: one bus subscription, many SSE clients.
pub struct EventHub {
    ring: broadcast::Sender<Arc<BusEvent>>,
    clients: Arc<Semaphore>,
    api: ApiConfig,
    shutdown: Shutdown,
}

impl EventHub {
    /// Subscribes to the bus of `realm` (failing if that is not possible) and keeps the
    /// subscription up while the router runs.
    /// Only what masters published (by `trust`) reaches the ring: an anonymous client's
    /// forged `builds.<id>.finished` never shows in a browser.
    pub async fn start(
        router: &Router,
        realm: &str,
        api: ApiConfig,
        trust: BusTrust,
    ) -> Result<Arc<EventHub>, String> {
        let (ring, _) = broadcast::channel(RING_CAPACITY);
        let subscription = subscribe(router, realm).await?;
        let hub = Arc::new(EventHub {
            ring: ring.clone(),
            clients: Arc::new(Semaphore::new(MAX_CLIENTS)),
            api,
            shutdown: router.shutdown().clone(),
        });
        let (router, realm) = (router.clone(), realm.to_owned());
        tokio::spawn(async move { pump(router, realm, subscription, ring, trust).await });
        Ok(hub)
    }

    /// A new reader of the ring, holding one of the [`MAX_CLIENTS`] places (`None` when
    /// all are taken): for other renderings of the same events (Buildbot's WebSocket).
    pub fn subscribe(&self) -> Option<(broadcast::Receiver<Arc<BusEvent>>, OwnedSemaphorePermit)> {
        let permit = self.clients.clone().try_acquire_owned().ok()?;
        Some((self.ring.subscribe(), permit))
    }

    /// The node's shutdown signal.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// How many event streams are open.
    pub fn clients(&self) -> usize {
        MAX_CLIENTS - self.clients.available_permits()
    }

    fn answer(&self, req: &hyper::Request<hyper::body::Incoming>) -> hyper::Response<HttpBody> {
        if req.method() != Method::GET {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("method {} not allowed on {PATH}", req.method()),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        let query = parse_query(req.uri().query().unwrap_or(""));
        if let Err(e) = authorize(req.headers(), query.get("access_token"), &self.api) {
            auth::log_refusal(None, PATH, &e);
            let mut r = error(StatusCode::UNAUTHORIZED, &e.to_string());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth::challenge());
            return r;
        }
        let prefix = query.get("prefix").cloned().unwrap_or_default();
        let Ok(permit) = self.clients.clone().try_acquire_owned() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("too many event streams open ({MAX_CLIENTS}); try again later"),
            );
        };
        // Subscribed before answering: every event published after the client has the
        // headers reaches it.
        let events = self.ring.subscribe();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(feed(events, tx, prefix, permit, self.shutdown.clone()));
        let mut r = hyper::Response::new(http_body_util::BodyExt::boxed_unsync(SseBody { rx }));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Asks reverse proxies (nginx) not to buffer the stream.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    }
}

/// The hub as an HTTP service (mounted at [`PATH`]).
pub struct EventsService(pub Arc<EventHub>);

impl HttpService for EventsService {
    fn call(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        _peer: std::net::SocketAddr,
    ) -> HttpFuture {
        let r = if req.uri().path() == PATH {
            self.0.answer(&req)
        } else {
            error(
                StatusCode::NOT_FOUND,
                &format!("no such path: {}", req.uri().path()),
            )
        };
        Box::pin(async move { r })
    }
}

/// Reads need credentials unless `public_read`; `access_token` stands in for a bearer
/// header (an `EventSource` sends none).
fn authorize(
    headers: &HeaderMap,
    access_token: Option<&String>,
    api: &ApiConfig,
) -> Result<(), auth::AuthError> {
    match access_token {
        Some(token) if !headers.contains_key(header::AUTHORIZATION) => {
            let mut with = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| auth::AuthError::Invalid)?;
            with.insert(header::AUTHORIZATION, value);
            auth::for_read(&with, api)
        }
        _ => auth::for_read(headers, api),
    }
}

/// A JSON error answer, as the REST API gives.
fn error(status: StatusCode, message: &str) -> hyper::Response<HttpBody> {
    let mut r = hyper::Response::new(full_body(json!({ "error": message }).to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The UI session's subscription: its events, and the session, which lives as long as this.
type Subscription = (
    Arc<ServiceClient>,
    mpsc::Receiver<switchyard_router::service::SubscriptionEvent>,
);

/// Subscribes the node's UI session to every routing key of the realm's bus.
async fn subscribe(router: &Router, realm: &str) -> Result<Subscription, String> {
    let client = ServiceClient::start_trusted(router, realm, "ui-events")?;
    let mut options = Dict::new();
    options.insert("match".into(), Value::from("prefix"));
    let (_, events) = client
        .subscribe_with_depth(MQ_PREFIX, options, BUS_QUEUE)
        .await
        .map_err(|e| format!("cannot subscribe to {MQ_PREFIX}* on {realm}: {e}"))?;
    Ok((client, events))
}

/// Renders the bus into the ring; subscribes again if the session is lost while the router
/// runs (the clients then get `resync`).
async fn pump(
    router: Router,
    realm: String,
    subscription: Subscription,
    ring: broadcast::Sender<Arc<BusEvent>>,
    trust: BusTrust,
) {
    let shutdown = router.shutdown().clone();
    // Holding the client keeps the session (and so the subscription) open.
    let (mut client, mut events) = subscription;
    loop {
        let mut dropped = client.dropped_events();
        loop {
            let ev = tokio::select! {
                _ = shutdown.requested() => return,
                ev = events.recv() => ev,
            };
            let Some(ev) = ev else { break };
            let now_dropped = client.dropped_events();
            if now_dropped != dropped {
                // The bus outran this renderer: events were lost before reaching the ring.
                let _ = ring.send(Arc::new(BusEvent {
                    key: String::new(),
                    frame: resync_frame(now_dropped - dropped),
                }));
                dropped = now_dropped;
            }
            let Some(topic) = ev.details.get("topic").and_then(Value::as_str) else {
                continue;
            };
            if !trust.published_by_master(&ev.details) {
                tracing::debug!(topic = %Trunc(topic), publisher = %BusTrust::publisher(&ev.details),
                    "not streaming a bus event that no master published");
                continue;
            }
            let data = match (ev.payload.args().first(), ev.payload.kwargs()) {
                (Some(v), _) => to_json(v),
                (None, Some(kwargs)) => to_json(&Value::Dict(kwargs.clone())),
                (None, None) => Json::Null,
            };
            if let Some(event) = render(topic, &data) {
                // No receiver is fine: nobody is watching.
                let _ = ring.send(Arc::new(event));
            }
        }
        if shutdown.is_triggered() {
            return;
        }
        tracing::warn!(realm, "the UI's bus session closed; subscribing again");
        let _ = ring.send(Arc::new(BusEvent {
            key: String::new(),
            frame: resync_frame(0),
        }));
        loop {
            tokio::select! {
                _ = shutdown.requested() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
            match subscribe(&router, &realm).await {
                Ok((c, e)) => {
                    (client, events) = (c, e);
                    break;
                }
                Err(e) => tracing::warn!(realm, error = %e, "the UI cannot subscribe to the bus"),
            }
        }
    }
}

/// One event as an SSE frame; `None` for a topic that is not a routing key of the bus or
/// that could not be sent as one line.
fn render(topic: &str, data: &Json) -> Option<BusEvent> {
    let key = topic.strip_prefix(MQ_PREFIX)?;
    if key.is_empty() || key.contains(['\r', '\n']) {
        return None;
    }
    // serde_json escapes control characters: the data is always one line.
    let mut text = data.to_string();
    if text.len() > MAX_EVENT_DATA {
        text = json!({ "truncated": true, "bytes": text.len() }).to_string();
    }
    Some(BusEvent {
        key: key.to_owned(),
        frame: Bytes::from(format!("event: {key}\ndata: {text}\n\n")),
    })
}

fn resync_frame(missed: u64) -> Bytes {
    Bytes::from(format!("event: resync\ndata: {{\"missed\":{missed}}}\n\n"))
}

/// One client's feeder: ring → filter → the client's body, until the client goes, stalls,
/// or the router shuts down.
async fn feed(
    mut events: broadcast::Receiver<Arc<BusEvent>>,
    tx: mpsc::Sender<Bytes>,
    prefix: String,
    _permit: OwnedSemaphorePermit,
    shutdown: Shutdown,
) {
    let send = |frame: Bytes| {
        let tx = tx.clone();
        async move {
            match tokio::time::timeout(STALLED_CLIENT_TIMEOUT, tx.send(frame)).await {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false, // the client went away
                Err(_) => {
                    tracing::info!(
                        "an event stream client took nothing for {STALLED_CLIENT_TIMEOUT:?}; dropped"
                    );
                    false
                }
            }
        }
    };
    if !send(Bytes::from(format!(
        "retry: {RETRY_MS}\n: switchyard events\n\n"
    )))
    .await
    {
        return;
    }
    let mut keepalive = tokio::time::Instant::now() + KEEPALIVE;
    loop {
        let frame = tokio::select! {
            _ = shutdown.requested() => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(keepalive) => Bytes::from_static(b": keep-alive\n\n"),
            ev = events.recv() => match ev {
                Ok(ev) if ev.key.is_empty() || ev.key.starts_with(&prefix) => ev.frame.clone(),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => resync_frame(missed),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !send(frame).await {
            return;
        }
        keepalive = tokio::time::Instant::now() + KEEPALIVE;
    }
}

/// A client's response body: the frames its feeder hands over.
struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|frame| frame.map(|f| Ok(Frame::data(f))))
    }
}

/// The query's `name=value` pairs, percent-decoded (the first of repeated names wins);
/// undecodable pairs are skipped.
fn parse_query(query: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(n), Some(v)) = (percent_decode(name), percent_decode(value)) {
            out.entry(n).or_insert(v);
        }
    }
    out
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); `None` if malformed or
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_routing_key_and_one_line_of_json() {
        let ev = render(
            "org.buildbot.mq.logs.3.append",
            &json!({"content": "a\nb\r\n", "first_line": 0}),
        )
        .unwrap();
        assert_eq!(ev.key, "logs.3.append");
        let text = String::from_utf8(ev.frame.to_vec()).unwrap();
        assert_eq!(
            text,
            "event: logs.3.append\ndata: {\"content\":\"a\\nb\\r\\n\",\"first_line\":0}\n\n"
        );
        assert_eq!(ev.key(), "logs.3.append");
        assert_eq!(
            ev.data(),
            Some("{\"content\":\"a\\nb\\r\\n\",\"first_line\":0}")
        );
        assert!(render("other.topic", &Json::Null).is_none());
        assert!(render("org.buildbot.mq.", &Json::Null).is_none());
        assert!(render("org.buildbot.mq.a\nb", &Json::Null).is_none());
        let big = render(
            "org.buildbot.mq.x",
            &json!({ "content": "x".repeat(MAX_EVENT_DATA) }),
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&big.frame).contains("\"truncated\":true"));
    }

    #[test]
    fn queries_decode() {
        let q = parse_query("prefix=builds.&access_token=a%2Bb+c&prefix=no&bad=%zz&e");
        assert_eq!(q.get("prefix").map(String::as_str), Some("builds."));
        assert_eq!(q.get("access_token").map(String::as_str), Some("a+b c"));
        assert_eq!(q.get("e").map(String::as_str), Some(""));
        assert!(!q.contains_key("bad"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%C3%A9"), Some("é".into()));
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn access_token_stands_in_for_the_header() {
        let api = ApiConfig {
            public_read: false,
            tokens: vec!["tok-123".into()],
            ..ApiConfig::default()
        };
        let none = HeaderMap::new();
        assert_eq!(authorize(&none, None, &api), Err(auth::AuthError::Missing));
        assert_eq!(authorize(&none, Some(&"tok-123".to_owned()), &api), Ok(()));
        assert_eq!(
            authorize(&none, Some(&"nope".to_owned()), &api),
            Err(auth::AuthError::Invalid)
        );
        assert_eq!(
            authorize(&none, Some(&"bad\ntoken".to_owned()), &api),
            Err(auth::AuthError::Invalid)
        );
        let open = ApiConfig::default();
        assert!(open.public_read);
        assert_eq!(authorize(&none, None, &open), Ok(()));
    }
}
