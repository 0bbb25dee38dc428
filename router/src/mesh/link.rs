//! One peer link: dialing (with backoff and jitter), accepting, the handshake, and the
//! reader/writer tasks of an established link.
//!
//! A link is a WebSocket on the peers' shared HTTP port (path `/mesh`, subprotocol
//! `switchyard.mesh.v1`) carrying one [`Frame`] per binary message; `wss://` peers are dialed
//! over TLS, their certificate verified against [`super::MeshConfig::tls`] for the URL's host,
//! and the handshake's challenge/response runs unchanged inside it. Every wait has a bound:
//! connect + upgrade + authentication under `handshake_timeout`, each batch write under
//! `write_timeout`, and silence on an established link under `heartbeat_timeout` (each side
//! sends a heartbeat every `heartbeat_interval`). The outbound queue is bounded; a link that
//! exceeds it is cut and the peer resyncs when it reconnects.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::fence::Fence;
use super::frame::{
    self, Frame, FrameError, FEATURE_FENCE, FEATURE_KILL, FEATURE_META, FEATURE_META_EVENTS,
    SUBPROTOCOL,
};
use super::handshake;
use super::state::LinkState;
use super::{Attach, Mesh};
use crate::logsafe::Trunc;
use crate::outbound::{Closed, Queue, Taken};
use crate::tls;

/// Why a dial or handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("a wss:// peer, but no CA certificate to verify it with (set mesh.tls_ca)")]
    NoTrustAnchors,
    #[error("{0}")]
    Connect(tls::ConnectError),
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("WebSocket: {0} (does the peer serve TLS? then dial it as wss://)")]
    NotHttp(tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the peer closed the link")]
    Closed,
    #[error("unexpected frame during the handshake: {0}")]
    Unexpected(String),
    #[error("wrong mesh secret (the handshake proofs do not verify)")]
    WrongSecret,
    #[error("refused by the peer ({code}): {reason}")]
    Refused { code: String, reason: String },
    #[error("this URL is this node itself")]
    SelfUrl,
    #[error("timed out")]
    Timeout,
    #[error("the peer announced {0}")]
    Invalid(String),
}

impl LinkError {
    /// A frame out of place, described within a log line's bounds.
    fn unexpected(frame: &Frame) -> LinkError {
        LinkError::Unexpected(Trunc(&format!("{frame:?}")).to_string())
    }

    /// A peer's refusal; its words (not yet authenticated) cut to a log line's bounds.
    fn refused(code: &str, reason: &str) -> LinkError {
        LinkError::Refused {
            code: Trunc(code).to_string(),
            reason: Trunc(reason).to_string(),
        }
    }

    /// Nothing listens there (yet): the usual state of a peer that is down or starting, not
    /// worth more than a debug line per attempt.
    fn is_unreachable(&self) -> bool {
        matches!(self, LinkError::Connect(tls::ConnectError::Tcp(_)))
    }
}

/// The shared end of an established link: what routing code sends frames to.
pub(crate) struct LinkHandle {
    pub(crate) id: u64,
    pub(crate) node: String,
    pub(crate) incarnation: u64,
    /// The URL the peer advertises (gossiped to others).
    pub(crate) url: String,
    /// The node that dialed this link (for the duplicate-link rule).
    pub(crate) dialer: String,
    pub(crate) since: Instant,
    /// The peer understands the meta directory frames (it announced [`FEATURE_META`]).
    pub(crate) meta: bool,
    /// The peer answers `fence` ([`FEATURE_FENCE`]): replies wait for its confirmation.
    pub(crate) fence: bool,
    /// The peer carries out `kill` orders ([`FEATURE_KILL`]).
    pub(crate) kill: bool,
    /// The peer takes forwarded meta events ([`FEATURE_META_EVENTS`]).
    pub(crate) meta_events: bool,
    /// The numbering of interest frames on this link and what the peer confirmed.
    pub(crate) fence_state: Fence,
    queue: Queue<Bytes>,
    stop: CancellationToken,
    /// Cancelled once everything the peer created through this link is gone.
    cleaned: CancellationToken,
    synced: AtomicBool,
}

impl LinkHandle {
    pub(crate) fn send(&self, frame: &Frame) -> Result<(), Closed> {
        self.send_bytes_checked(frame.encode())
    }

    pub(crate) fn send_bytes(&self, bytes: Bytes) {
        let _ = self.send_bytes_checked(bytes);
    }

    /// Sends a frame that changes what the peer knows of this node (interest, sessions,
    /// subscribers): numbered, so that a reply can wait for the peer to confirm it.
    pub(crate) fn send_interest(&self, bytes: Bytes) {
        self.fence_state.numbered(|| self.send_bytes(bytes));
    }

    /// Ends the resync snapshot on this link (`synced`).
    pub(crate) fn send_synced(&self) {
        self.fence_state.resynced(
            || self.send_bytes(Frame::SyncDone.encode()),
            |fence| self.send_bytes(fence.encode()),
        );
    }

    /// Resolves once the link has ended.
    pub(crate) async fn ended(&self) {
        self.stop.cancelled().await
    }

    fn send_bytes_checked(&self, bytes: Bytes) -> Result<(), Closed> {
        let n = bytes.len();
        let r = self.queue.push(bytes, n);
        if r == Err(Closed::SlowConsumer) && !self.stop.is_cancelled() {
            // The queue closed itself; the reader sees that and tears the link down.
            tracing::warn!(peer = %self.node, "mesh link queue over its limit; link cut (the peer resyncs on reconnect)");
            self.stop.cancel();
        }
        r
    }

    /// Ends the link (its tasks notice and clean up).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
        self.queue.close(Closed::Normal, false);
        self.fence_state.close();
    }

    pub(crate) fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub(crate) fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }
}

/// Who is at the other end, as the handshake established.
struct PeerHello {
    node: String,
    incarnation: u64,
    url: String,
    features: Vec<String>,
}

async fn recv<S>(ws: &mut WebSocketStream<S>) -> Result<Frame, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            None | Some(Ok(WsMessage::Close(_))) => return Err(LinkError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WsMessage::Binary(b))) => return Ok(Frame::decode(&b)?),
            Some(Ok(_)) => continue,
        }
    }
}

async fn send<S>(ws: &mut WebSocketStream<S>, frame: &Frame) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(WsMessage::Binary(frame.encode())).await?;
    Ok(())
}

fn ws_config(mesh: &Mesh) -> WebSocketConfig {
    let max = mesh.inner.router.limits().max_message_size + 4096;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Dials `url` and authenticates (dialer side).
async fn dial(
    mesh: &Mesh,
    url: &str,
) -> Result<
    (
        WebSocketStream<impl AsyncRead + AsyncWrite + Unpin + Send>,
        PeerHello,
    ),
    LinkError,
> {
    let cfg = &mesh.inner.config;
    let me = &cfg.node_name;
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let stream = match tls::connect_ws(req.uri(), cfg.tls.clone(), true).await {
        Ok(s) => s,
        Err(tls::ConnectError::NoTrustAnchors) => return Err(LinkError::NoTrustAnchors),
        Err(e) => return Err(LinkError::Connect(e)),
    };
    let plain = matches!(stream, tokio_util::either::Either::Left(_));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config(mesh)))
            .await
            .map_err(|e| {
                use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
                // A TLS server's alert where an HTTP response was expected.
                match e {
                    Error::Protocol(ProtocolError::HttparseError(_)) if plain => {
                        LinkError::NotHttp(e)
                    }
                    e => LinkError::WebSocket(e),
                }
            })?;
    let nd = handshake::nonce();
    send(
        &mut ws,
        &Frame::Hello {
            node: me.clone(),
            incarnation: mesh.inner.incarnation,
            url: mesh.inner.url.clone(),
            nonce: nd.clone(),
            features: frame::features(),
        },
    )
    .await?;
    let (node, incarnation, peer_url, na, features) = match recv(&mut ws).await? {
        Frame::Challenge {
            node,
            incarnation,
            url,
            nonce,
            features,
        } => (node, incarnation, url, nonce, features),
        Frame::Refuse { code, .. } if code == "self" => return Err(LinkError::SelfUrl),
        Frame::Refuse { code, reason } => return Err(LinkError::refused(&code, &reason)),
        other => return Err(LinkError::unexpected(&other)),
    };
    if let Err(reason) = handshake::check_announced(&node, &peer_url) {
        return Err(LinkError::Invalid(reason));
    }
    if node == *me {
        return Err(LinkError::SelfUrl);
    }
    let proof = handshake::proof(&cfg.secret, "dialer", &na, &nd, me, &node);
    send(&mut ws, &Frame::Auth { proof }).await?;
    let proof = match recv(&mut ws).await? {
        Frame::Welcome { proof } => proof,
        Frame::Refuse { code, reason } if code == "auth" => {
            let _ = reason;
            return Err(LinkError::WrongSecret);
        }
        Frame::Refuse { code, reason } => return Err(LinkError::refused(&code, &reason)),
        other => return Err(LinkError::unexpected(&other)),
    };
    if !handshake::verify(&cfg.secret, "acceptor", &nd, &na, &node, me, &proof) {
        // The acceptor accepted our proof without knowing the secret: not a mesh node.
        return Err(LinkError::WrongSecret);
    }
    Ok((
        ws,
        PeerHello {
            node,
            incarnation,
            url: peer_url,
            features,
        },
    ))
}

/// Keeps one URL linked for as long as the router runs: dial, run the link, back off, again.
pub(crate) async fn dial_loop(mesh: Mesh, url: String) {
    let cfg = mesh.inner.config.clone();
    let shutdown = mesh.inner.router.shutdown().clone();
    let mut backoff = cfg.reconnect_min;
    loop {
        if shutdown.is_triggered() {
            break;
        }
        match mesh.dial_idle(&url) {
            None => break,
            Some(true) => {
                // Linked already (perhaps dialed by the peer): wait for a change, re-check
                // at least every second.
                let changed = mesh.inner.changed.notified();
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.requested() => break,
                }
                continue;
            }
            Some(false) => {}
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(cfg.handshake_timeout, dial(&mesh, &url)) => r,
            _ = shutdown.requested() => break,
        };
        match attempt.unwrap_or(Err(LinkError::Timeout)) {
            Ok((ws, hello)) => {
                mesh.dial_update(&url, |d| d.connected(&hello.node));
                backoff = cfg.reconnect_min;
                run(mesh.clone(), ws, hello, cfg.node_name.clone()).await;
            }
            Err(LinkError::SelfUrl) => {
                tracing::info!(%url, "mesh peer URL is this node itself; not dialing it");
                mesh.dial_update(&url, |d| d.is_self());
                break;
            }
            Err(e) => {
                let refused = matches!(
                    e,
                    LinkError::WrongSecret | LinkError::Refused { .. } | LinkError::Invalid(_)
                );
                let new_cause = mesh
                    .dial_update(&url, |d| d.failed(e.to_string(), refused))
                    .unwrap_or(true);
                if refused {
                    tracing::warn!(%url, "mesh peer at {url} refused: {e}");
                } else if new_cause && !e.is_unreachable() {
                    // A TLS or protocol failure: logged once per cause, retried quietly.
                    tracing::warn!(%url, "mesh: cannot link to {url}: {e}");
                } else {
                    tracing::debug!(%url, "mesh dial failed: {e}");
                }
            }
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(cfg.reconnect_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.requested() => break,
        }
    }
}

/// Serves an upgraded WebSocket from a dialing peer (acceptor side).
pub async fn accept<S>(mesh: Mesh, io: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio_tungstenite::tungstenite::protocol::Role;
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(&mesh))).await;
    let timeout = mesh.inner.config.handshake_timeout;
    match tokio::time::timeout(timeout, accept_handshake(&mesh, &mut ws, addr)).await {
        Ok(Ok(hello)) => {
            let dialer = hello.node.clone();
            run(mesh, ws, hello, dialer).await;
        }
        Ok(Err(e)) => tracing::debug!(%addr, "mesh handshake failed: {e}"),
        Err(_) => tracing::info!(%addr, "mesh handshake timed out after {timeout:?}"),
    }
}

async fn accept_handshake<S>(
    mesh: &Mesh,
    ws: &mut WebSocketStream<S>,
    addr: SocketAddr,
) -> Result<PeerHello, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = &mesh.inner.config;
    let me = &cfg.node_name;
    let (node, incarnation, url, nd, features) = match recv(ws).await? {
        Frame::Hello {
            node,
            incarnation,
            url,
            nonce,
            features,
        } => (node, incarnation, url, nonce, features),
        other => return Err(LinkError::unexpected(&other)),
    };
    if let Err(reason) = handshake::check_announced(&node, &url) {
        tracing::info!(%addr, "refusing mesh peer: {reason}");
        let refuse = Frame::Refuse {
            code: "invalid".into(),
            reason: reason.clone(),
        };
        send(ws, &refuse).await?;
        return Err(LinkError::Invalid(reason));
    }
    if node == *me {
        let (code, reason) = if incarnation == mesh.inner.incarnation {
            ("self", "this is the dialing node itself".to_owned())
        } else {
            tracing::error!(%addr, "refusing mesh peer: it uses this node's name '{me}'");
            ("name", format!("node name '{me}' is taken"))
        };
        send(
            ws,
            &Frame::Refuse {
                code: code.into(),
                reason: reason.clone(),
            },
        )
        .await?;
        return Err(LinkError::Refused {
            code: code.into(),
            reason,
        });
    }
    let na = handshake::nonce();
    send(
        ws,
        &Frame::Challenge {
            node: me.clone(),
            incarnation: mesh.inner.incarnation,
            url: mesh.inner.url.clone(),
            nonce: na.clone(),
            features: frame::features(),
        },
    )
    .await?;
    let proof = match recv(ws).await? {
        Frame::Auth { proof } => proof,
        other => return Err(LinkError::unexpected(&other)),
    };
    if !handshake::verify(&cfg.secret, "dialer", &na, &nd, &node, me, &proof) {
        tracing::warn!(%addr, peer = %node, "refusing mesh peer '{node}' from {addr}: wrong mesh secret");
        let _ = send(
            ws,
            &Frame::Refuse {
                code: "auth".into(),
                reason: "wrong mesh secret".into(),
            },
        )
        .await;
        return Err(LinkError::WrongSecret);
    }
    let proof = handshake::proof(&cfg.secret, "acceptor", &nd, &na, me, &node);
    send(ws, &Frame::Welcome { proof }).await?;
    Ok(PeerHello {
        node,
        incarnation,
        url,
        features,
    })
}

/// Runs an authenticated link until it ends, then drops everything the peer had here.
async fn run<S>(mesh: Mesh, ws: WebSocketStream<S>, peer: PeerHello, dialer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = mesh.inner.config.clone();
    let has = |f: &str| peer.features.iter().any(|x| x == f);
    let handle = Arc::new(LinkHandle {
        id: mesh.next_link_id(),
        node: peer.node,
        incarnation: peer.incarnation,
        url: peer.url,
        dialer,
        since: Instant::now(),
        meta: has(FEATURE_META),
        fence: has(FEATURE_FENCE),
        kill: has(FEATURE_KILL),
        meta_events: has(FEATURE_META_EVENTS),
        fence_state: Fence::new(),
        queue: Queue::new(cfg.queue.clone()),
        stop: CancellationToken::new(),
        cleaned: CancellationToken::new(),
        synced: AtomicBool::new(false),
    });
    let (sink, stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, handle.clone(), cfg.write_timeout));
    if let Attach::Active { previous } = mesh.attach(&handle) {
        // The previous link's stand-ins and interest must be gone before this link's
        // resync is applied, or a stale `single` stand-in would make the fresh one lose.
        if let Some(prev) = previous {
            prev.stop();
            let wait = prev.cleaned.cancelled();
            if tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .is_err()
            {
                tracing::warn!(peer = %handle.node, "previous mesh link not cleaned up within 5 s");
            }
        }
        read_loop(&mesh, stream, &handle).await;
        mesh.detach(&handle);
    }
    handle.stop();
    handle.cleaned.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

async fn read_loop<S>(mesh: &Mesh, mut stream: SplitStream<WebSocketStream<S>>, h: &Arc<LinkHandle>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = &mesh.inner.config;
    let shutdown = mesh.inner.router.shutdown().clone();
    let mut state = LinkState::new(h.clone());
    let mut ping = tokio::time::interval(cfg.heartbeat_interval);
    let mut deadline = tokio::time::Instant::now() + cfg.heartbeat_timeout;
    loop {
        tokio::select! {
            _ = h.stop.cancelled() => break,
            _ = shutdown.requested() => break,
            _ = ping.tick() => {
                let _ = h.send(&Frame::Ping);
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(peer = %h.node, "mesh peer silent for {:?}; link dropped", cfg.heartbeat_timeout);
                break;
            }
            msg = stream.next() => match msg {
                Some(Ok(WsMessage::Binary(b))) => {
                    deadline = tokio::time::Instant::now() + cfg.heartbeat_timeout;
                    match Frame::decode(&b) {
                        Ok(frame) => state.apply(mesh, frame),
                        Err(e) => {
                            tracing::warn!(peer = %h.node, "bad mesh frame, link dropped: {e}");
                            break;
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None => break,
                Some(Err(e)) => {
                    tracing::debug!(peer = %h.node, "mesh link read failed: {e}");
                    break;
                }
                Some(Ok(_)) => {
                    deadline = tokio::time::Instant::now() + cfg.heartbeat_timeout;
                }
            }
        }
    }
    // Unlink first so nothing new is routed here, then drop the peer's state.
    mesh.detach(h);
    state.drop_all(mesh);
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, WsMessage>,
    h: Arc<LinkHandle>,
    write_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(64);
    while let Taken::Items = h.queue.take(&mut batch).await {
        let write = async {
            for b in batch.drain(..) {
                sink.feed(WsMessage::Binary(b)).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %h.node, "mesh link write failed: {e}");
                break;
            }
            Err(_) => {
                tracing::warn!(peer = %h.node, "mesh link write stalled for {write_timeout:?}; link cut");
                break;
            }
        }
        batch.clear();
    }
    h.stop();
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
