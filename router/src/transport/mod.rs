//! Transports: one TCP port serves WebSocket (through HTTP) and RawSocket.
//!
//! The first byte tells them apart: RawSocket's handshake starts with 0x7F, which never starts
//! an HTTP request. Each accepted connection runs in its own task, tracked by the router's
//! [`crate::Shutdown`].

pub mod body;
pub mod bridge;
pub mod files;
pub mod http;
pub mod origin;
pub mod rawsocket;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use body::{read_body, BodyDeadline, BodyError};

use crate::auth::Authenticator;
use crate::config::Limits;
use crate::wire::Serializer;
use crate::Router;

/// Listener settings.
#[derive(Clone)]
pub struct ListenerConfig {
    /// URL paths that accept WebSocket upgrades.
    pub websocket_paths: Vec<String>,
    /// Whether RawSocket is accepted on the same port.
    pub rawsocket: bool,
    /// Most connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// How sessions on this listener authenticate (Crossbar configures auth per transport);
    /// `None` uses the router's authenticator.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// Per WebSocket path authentication, overriding `auth` (Crossbar's `web` transports
    /// configure auth per path).
    pub path_auth: HashMap<String, Arc<dyn Authenticator>>,
    /// Serve TLS (wss://, TLS RawSocket) with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limits for this listener's connections, overriding the router's (Crossbar sets message
    /// sizes and pings per transport).
    pub limits: Option<Limits>,
    /// The serializers this listener accepts; `None` accepts all.
    pub serializers: Option<Vec<Serializer>>,
    /// HTTP bridge services (Crossbar's `publisher` and `caller` paths), by URL path.
    pub http_bridges: HashMap<String, bridge::BridgeConfig>,
    /// Browser origin policies per WebSocket path (`*` for any path); none: every origin.
    pub path_origins: HashMap<String, origin::OriginPolicy>,
    /// Directories served as static files (Crossbar's `static` web paths).
    pub static_dirs: Vec<files::StaticDir>,
    /// The peer mesh, whose links upgrade on its own path (see [`crate::mesh`]).
    pub mesh: Option<crate::mesh::Mesh>,
    /// HTTP services mounted under path prefixes (the build master's REST API, change hook
    /// and web UI); the longest matching prefix serves a plain (non-upgrade) request.
    pub http_mounts: Vec<HttpMount>,
}

/// A future answering one HTTP request.
pub type HttpFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<HttpBody>> + Send>>;

/// The body every HTTP answer on the shared port has: boxed, so a mounted service may stream
/// (Server-Sent Events) as well as answer with a body held in memory ([`full_body`]).
pub type HttpBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// A body held whole in memory, as an [`HttpBody`].
pub fn full_body(bytes: impl Into<bytes::Bytes>) -> HttpBody {
    boxed(http_body_util::Full::new(bytes.into()))
}

/// Any body that cannot fail (`Full`, `Empty`), as an [`HttpBody`].
pub fn boxed<B>(body: B) -> HttpBody
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Send + 'static,
{
    use http_body_util::BodyExt;
    body.map_err(|never| match never {}).boxed_unsync()
}

/// An HTTP service sharing the router's port.
pub trait HttpService: Send + Sync + 'static {
    fn call(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> HttpFuture;
}

/// A service and the path prefix it owns (`/api` owns `/api` and `/api/...`, not `/apix`).
#[derive(Clone)]
pub struct HttpMount {
    pub prefix: String,
    pub service: Arc<dyn HttpService>,
    /// Owns `prefix` only, not the paths below it (see [`HttpMount::exact`]).
    pub exact: bool,
    /// Also gets the WebSocket upgrades on its paths (see [`HttpMount::with_upgrades`]).
    pub upgrades: bool,
}

impl HttpMount {
    /// A mount owning `prefix` and every path below it.
    pub fn new(prefix: impl Into<String>, service: Arc<dyn HttpService>) -> HttpMount {
        HttpMount {
            prefix: prefix.into(),
            service,
            exact: false,
            upgrades: false,
        }
    }

    /// A prefix mount that also answers the WebSocket upgrades below `prefix` (a protocol
    /// of its own, not WAMP: the service does the upgrade). The router's WebSocket paths
    /// keep their upgrades.
    pub fn with_upgrades(prefix: impl Into<String>, service: Arc<dyn HttpService>) -> HttpMount {
        HttpMount {
            upgrades: true,
            ..HttpMount::new(prefix, service)
        }
    }

    /// A mount owning exactly `path`, nothing below it. Unlike a prefix mount it may sit on
    /// a WebSocket path (`/`): it then answers that path's plain requests, and the router
    /// keeps the WebSocket upgrades.
    pub fn exact(path: impl Into<String>, service: Arc<dyn HttpService>) -> HttpMount {
        HttpMount {
            prefix: path.into(),
            service,
            exact: true,
            upgrades: false,
        }
    }

    /// Whether this mount owns `path`.
    pub fn owns(&self, path: &str) -> bool {
        if self.exact {
            return path == self.prefix;
        }
        let p = self.prefix.trim_end_matches('/');
        p.is_empty()
            || path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl std::fmt::Debug for HttpMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMount")
            .field("prefix", &self.prefix)
            .field("exact", &self.exact)
            .field("upgrades", &self.upgrades)
            .finish_non_exhaustive()
    }
}

/// The bridge services a listener runs, by URL path (started with the listener).
pub type Bridges = Arc<HashMap<String, bridge::HttpBridge>>;

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            websocket_paths: vec!["/ws".into(), "/".into()],
            rawsocket: true,
            max_connections: 100_000,
            auth: None,
            path_auth: HashMap::new(),
            tls: None,
            limits: None,
            serializers: None,
            http_bridges: HashMap::new(),
            path_origins: HashMap::new(),
            static_dirs: Vec::new(),
            mesh: None,
            http_mounts: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("websocket_paths", &self.websocket_paths)
            .field("rawsocket", &self.rawsocket)
            .field("max_connections", &self.max_connections)
            .field("auth", &self.auth.is_some())
            .field("path_auth", &self.path_auth.keys().collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("serializers", &self.serializers)
            .field("http_bridges", &self.http_bridges)
            .field("path_origins", &self.path_origins)
            .field("static_dirs", &self.static_dirs)
            .field("mesh", &self.mesh.is_some())
            .field("http_mounts", &self.http_mounts)
            .finish()
    }
}

/// What one connection gets from its listener: how it authenticates and its limits.
#[derive(Clone)]
pub struct Endpoint {
    pub authenticator: Arc<dyn Authenticator>,
    pub limits: Limits,
    pub serializers: Option<Vec<Serializer>>,
}

impl Endpoint {
    /// The endpoint for RawSocket connections (or WebSocket ones on `path`) of a listener.
    pub fn for_listener(router: &Router, config: &ListenerConfig, path: Option<&str>) -> Endpoint {
        let authenticator = path
            .and_then(|p| config.path_auth.get(p))
            .or(config.auth.as_ref())
            .unwrap_or(router.authenticator())
            .clone();
        Endpoint {
            authenticator,
            limits: config
                .limits
                .clone()
                .unwrap_or_else(|| router.limits().clone()),
            serializers: config.serializers.clone(),
        }
    }

    pub fn accepts(&self, serializer: Serializer) -> bool {
        self.serializers
            .as_ref()
            .is_none_or(|s| s.contains(&serializer))
    }
}

/// Waits for a kill of the connection's session (`wamp.session.kill`); never returns before
/// the connection has a session.
pub(crate) async fn kill_requested(
    switch: Option<&crate::session::KillSwitch>,
) -> crate::wire::Message {
    match switch {
        Some(s) => s.requested().await,
        None => std::future::pending().await,
    }
}

/// Accepts connections until the router shuts down.
pub async fn serve(listener: TcpListener, router: Router, config: ListenerConfig) {
    let mut bridges = HashMap::new();
    for (path, b) in &config.http_bridges {
        match bridge::HttpBridge::start(&router, b.clone()) {
            Ok(svc) => {
                bridges.insert(path.clone(), svc);
            }
            Err(e) => tracing::error!(path, "HTTP bridge not started: {e}"),
        }
    }
    let bridges: Bridges = Arc::new(bridges);
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let shutdown = router.shutdown().clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = shutdown.requested() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.requested() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                router.metrics().connection();
                let (router, config, bridges) = (router.clone(), config.clone(), bridges.clone());
                shutdown.spawn(async move {
                    handle_connection(stream, peer, router, config, bridges).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::debug!("listener stopped");
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    config: Arc<ListenerConfig>,
    bridges: Bridges,
) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let timeout = router.limits().handshake_timeout;
    if let Some(tls) = config.tls.clone() {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let tls_stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake not completed within {timeout:?}; closed");
                return;
            }
        };
        // TLS streams cannot peek: buffer them to look at the first byte.
        let mut buffered = BufReader::new(tls_stream);
        let first = match tokio::time::timeout(timeout, buffered.fill_buf()).await {
            Ok(Ok([b, ..])) => *b,
            Ok(Ok([])) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS connection failed before its first byte");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "connection sent nothing within {timeout:?}; closed");
                return;
            }
        };
        dispatch(buffered, first, peer, router, config, bridges).await;
        return;
    }
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return, // closed before sending anything
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its first byte");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "connection sent nothing within {timeout:?}; closed");
            return;
        }
    }
    dispatch(stream, first[0], peer, router, config, bridges).await;
}

/// Hands a connection to RawSocket or HTTP by its first byte.
async fn dispatch<S>(
    stream: S,
    first: u8,
    peer: SocketAddr,
    router: Router,
    config: Arc<ListenerConfig>,
    bridges: Bridges,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if first == rawsocket::MAGIC {
        if config.rawsocket {
            let endpoint = Endpoint::for_listener(&router, &config, None);
            rawsocket::serve(stream, peer, router, endpoint).await;
        } else {
            tracing::info!(%peer, "RawSocket is disabled on this listener; closed");
        }
    } else {
        http::serve(stream, peer, router, config, bridges).await;
    }
}
