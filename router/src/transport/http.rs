//! HTTP on the shared port: WebSocket upgrades on the configured paths, a plain page
//! elsewhere.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::body::BodyDeadline;
use super::{boxed, full_body, websocket, Bridges, Endpoint, HttpBody, ListenerConfig};
use crate::wire::Codec;
use crate::Router;

type Body = HttpBody;

use crate::mesh::frame::SUBPROTOCOL as MESH_SUBPROTOCOL;

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full_body(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves HTTP/1.1 on one connection (keep-alive, with upgrades), plain or TLS.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    config: Arc<ListenerConfig>,
    bridges: Bridges,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = config.limits.as_ref().unwrap_or(router.limits());
    let timeout = limits.handshake_timeout;
    let (body_limit, request_limit) = (limits.http_body_timeout, limits.http_request_timeout);
    let shutdown = router.shutdown().clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (router, config, bridges) = (router.clone(), config.clone(), bridges.clone());
        req.extensions_mut().insert(BodyDeadline {
            at: tokio::time::Instant::now() + body_limit,
            limit: body_limit,
        });
        let answer = async move {
            if let Some(b) = bridges.get(req.uri().path()) {
                return b.serve(req).await.map(boxed);
            }
            if let Some(m) = mount_for(&req, &config) {
                return m.service.call(req, peer).await;
            }
            if let Some(r) = serve_static(&req, &config).await {
                return r.map(boxed);
            }
            handle(req, peer, router, &config)
        };
        within(request_limit, peer, answer)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.requested() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn).await;
        }
    }
}

/// Bounds the time from a request's head to its response head (a streamed body goes on
/// unbounded); past it the client gets 408 and the connection closes, so a request whose
/// body stalls costs a connection for `limit`, not forever.
async fn within(
    limit: std::time::Duration,
    peer: SocketAddr,
    answer: impl std::future::Future<Output = Response<Body>>,
) -> Result<Response<Body>, Infallible> {
    Ok(match tokio::time::timeout(limit, answer).await {
        Ok(r) => r,
        Err(_) => {
            tracing::debug!(%peer, "HTTP request timed out after {limit:?}");
            let mut r = text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request not complete within {} ms (limits.http_request_timeout_ms)\n",
                    limit.as_millis()
                ),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    })
}

/// The mounted service owning a plain request's path (the longest prefix wins). WebSocket
/// upgrades stay with the router (except below a mount made
/// [`super::HttpMount::with_upgrades`], off the WebSocket paths), and so do the plain
/// requests on a WebSocket path unless a mount owns exactly that path
/// ([`super::HttpMount::exact`]).
fn mount_for<'a>(
    req: &Request<Incoming>,
    config: &'a ListenerConfig,
) -> Option<&'a super::HttpMount> {
    if config.http_mounts.is_empty() {
        return None;
    }
    let upgrade = header_has_token(req, header::UPGRADE, "websocket");
    let path = req.uri().path();
    let ws_path = config.websocket_paths.iter().any(|p| p == path);
    config
        .http_mounts
        .iter()
        .filter(|m| !upgrade || (m.upgrades && !ws_path))
        .filter(|m| m.owns(path) && (m.exact || !ws_path))
        .max_by_key(|m| (m.prefix.len(), m.exact))
}

/// Static files for a plain request under a mounted directory (the longest mount wins);
/// WebSocket paths and upgrades are left to [`handle`].
async fn serve_static(
    req: &Request<Incoming>,
    config: &ListenerConfig,
) -> Option<Response<super::files::Body>> {
    if config.static_dirs.is_empty()
        || header_has_token(req, header::UPGRADE, "websocket")
        || config.websocket_paths.iter().any(|p| p == req.uri().path())
    {
        return None;
    }
    let path = req.uri().path();
    let (dir, rest) = config
        .static_dirs
        .iter()
        .filter_map(|d| d.strip(path).map(|rest| (d, rest)))
        .max_by_key(|(d, _)| d.mount.len())?;
    Some(dir.serve(req.method(), rest).await)
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Picks the WAMP subprotocol: the client's first offer that switchyard speaks.
fn choose_subprotocol(
    req: &Request<Incoming>,
    endpoint: &Endpoint,
) -> Result<Option<Codec>, String> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|p| Codec::from_subprotocol(p).filter(|c| endpoint.accepts(c.serializer)))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "none of the offered WebSocket subprotocols ({}) is supported; use one of: {}",
                offered.join(", "),
                Codec::SUBPROTOCOLS.join(", ")
            )
        })
}

fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    config: &ListenerConfig,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let is_upgrade = header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket");
    if let Some(mesh) = &config.mesh {
        // A peer may dial the mesh path or any WebSocket path (the WAMP URL people know,
        // `ws://host:port/ws`): the mesh subprotocol tells a peer link from a WAMP client.
        let peer_link = is_upgrade
            && header_has_token(&req, header::SEC_WEBSOCKET_PROTOCOL, MESH_SUBPROTOCOL)
            && config
                .websocket_paths
                .iter()
                .any(|p| p == &path || p == "*");
        if path == mesh.path() || peer_link {
            return mesh_upgrade(req, peer, router, mesh.clone(), is_upgrade);
        }
        if path == format!("{}/status", mesh.path()) && !is_upgrade {
            let body = serde_json::to_string_pretty(&mesh.status()).unwrap_or_default();
            let mut r = text(StatusCode::OK, body + "\n");
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return r;
        }
    }
    // `*` answers upgrades on any path (a Crossbar `websocket` transport does).
    let ws_path = if config.websocket_paths.contains(&path) {
        Some(path.as_str())
    } else if config.websocket_paths.iter().any(|p| p == "*") {
        Some("*")
    } else {
        None
    };
    if !is_upgrade {
        return if path == "/" {
            text(
                StatusCode::OK,
                "switchyard: a WAMP v2 router. Connect with a WebSocket WAMP client.\n",
            )
        } else if ws_path.is_some() {
            // As Crossbar answers: this path only speaks WebSocket.
            let mut r = text(
                StatusCode::UPGRADE_REQUIRED,
                "this path accepts WAMP over WebSocket only\n",
            );
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            r
        } else {
            text(StatusCode::NOT_FOUND, format!("no resource at {path}\n"))
        };
    }
    let Some(ws_path) = ws_path else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint at {path}\n"),
        );
    };
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13\n",
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    if let Some(policy) = config.path_origins.get(ws_path) {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("invalid"));
        if !policy.allows(origin) {
            let shown = origin.map(crate::logsafe::Trunc);
            tracing::info!(%peer, origin = ?shown, "WebSocket upgrade refused: origin not allowed");
            return text(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let endpoint = Endpoint::for_listener(&router, config, Some(ws_path));
    let (codec, echo_protocol) = match choose_subprotocol(&req, &endpoint) {
        Ok(Some(c)) => (c, true),
        // A client that offers no subprotocol gets JSON, as Crossbar does.
        Ok(None) => (Codec::plain(crate::wire::Serializer::Json), false),
        Err(e) => {
            tracing::info!(%peer, "WebSocket upgrade refused: {}", crate::logsafe::Trunc(&e));
            return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tasks = router.shutdown().clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                websocket::serve(TokioIo::new(upgraded), peer, codec, router, endpoint).await
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = Response::new(full_body(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header"),
    );
    if echo_protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&codec.subprotocol()).expect("ASCII subprotocol"),
        );
    }
    resp
}

/// A peer link's upgrade: only the mesh subprotocol is accepted on the mesh path.
fn mesh_upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    mesh: crate::mesh::Mesh,
    is_upgrade: bool,
) -> Response<Body> {
    use crate::mesh::frame::SUBPROTOCOL;
    if !is_upgrade || !header_has_token(&req, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("the mesh endpoint takes WebSocket upgrades with subprotocol {SUBPROTOCOL}\n"),
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    router.shutdown().spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => crate::mesh::link::accept(mesh, TokioIo::new(upgraded), peer).await,
            Err(e) => tracing::debug!(%peer, error = %e, "mesh upgrade failed"),
        }
    });
    let mut resp = Response::new(full_body(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    resp
}
