//! Stock Buildbot workers (`buildbot-worker` 4.x) as switchyard workers: the port they
//! connect to, with Buildbot's msgpack worker protocol (`msgpack_experimental_v7`).
//!
//! # The port
//!
//! `[master.buildbot_workers] listen = "127.0.0.1:9989"` (or `switchyard start
//! --buildbot-workers ADDR`) on a node with the `builders` role; off unless configured. It
//! serves WebSocket (over TLS when `[transport.tls]` is set), any path. A worker
//! authenticates with an HTTP Basic `Authorization` header: its name and password from
//! `[[master.workers]]` (the same entry a `switchyard worker` of that name would use). The
//! password is checked in constant time (SHA-256 of both sides, compared with `subtle`); a
//! refusal is answered `401` and logged with the peer address and the offered name, never
//! the password. TLS and the WebSocket handshake each have 10 s (a connection that sends
//! nothing — what a Perspective Broker worker, Buildbot's default protocol, does — is closed
//! then with a log line saying to use `--protocol msgpack_experimental_v7`); at most
//! [`MAX_CONNECTIONS`] connections are served at once (more are closed at once).
//!
//! # A worker like any other
//!
//! Each connection is bridged into the bus (`bridge`): an in-process WAMP session joins the
//! master's realm with the worker role (`switchyard.worker`) and authid = the worker's name,
//! and registers the four procedures of a `switchyard worker`
//! (`switchyard.worker.<name>.info|run|reconnect|shutdown`, the contract in
//! [`switchyard_worker`]). So the engine needs no change: presence, worker slots and
//! `max_builds`, claims from any master of the mesh, RETRY when the connection is lost, and
//! the trust model (only masters may call a worker's procedures, enforced by the router's
//! worker guard) hold for stock workers as for switchyard workers. A builder may list both
//! kinds.
//!
//! # Graceful shutdown
//!
//! A stock worker has no `reconnect(urls)`: when the master it is connected to stops
//! gracefully, its builds finish, then the bridge closes the WebSocket (and this port refuses
//! new connections with `503`), so the worker reconnects through its own configured address
//! (a load balancer or DNS name in front of several nodes).

mod bridge;
mod codec;
mod startup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_router::Router;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// TLS plus the WebSocket handshake, each at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// The largest frame a worker may send (its output comes in chunks of at most 64 KiB).
const MAX_FRAME: usize = 4 << 20;

/// A byte stream a connection runs over (TCP, or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What the port serves.
pub struct BuildbotWorkers {
    pub router: Router,
    /// The realm the bridged sessions join (the master's).
    pub realm: String,
    /// `(name, password)` of every configured worker.
    pub passwords: Vec<(String, String)>,
    /// TLS, when the node serves it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Shared by the listener and its connections.
pub(crate) struct Port {
    router: Router,
    realm: String,
    /// Worker name → SHA-256 of its password.
    passwords: HashMap<String, [u8; 32]>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Set once a `reconnect` or `shutdown` call says this node is going away: new
    /// connections are refused (`503`) so workers reconnect elsewhere.
    closing: AtomicBool,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A worker name for a log line: at most 64 characters, printable ASCII.
fn loggable(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

impl Port {
    /// The worker an `Authorization` header authenticates, or why not (the reason never
    /// contains the password).
    fn authenticate(&self, header: Option<&[u8]>) -> Result<String, String> {
        let header = header.ok_or("no Authorization header")?;
        let encoded = header
            .strip_prefix(b"Basic ")
            .ok_or("the Authorization header is not Basic")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim_ascii())
            .map_err(|_| "the Basic credentials are not base64")?;
        let text = String::from_utf8(decoded).map_err(|_| "the credentials are not UTF-8")?;
        let (name, password) = text.split_once(':').ok_or("no ':' in the credentials")?;
        let offered = digest(password);
        // Compare against something even for an unknown name, so timing tells nothing.
        let (known, expected) = match self.passwords.get(name) {
            Some(d) => (true, *d),
            None => (false, digest("\u{0}unknown worker")),
        };
        if bool::from(offered.ct_eq(&expected)) && known {
            Ok(name.to_owned())
        } else {
            Err(format!(
                "wrong name or password for worker {:?}",
                loggable(name)
            ))
        }
    }
}

/// Serves the port until `stop` is cancelled or the router shuts down.
pub async fn serve(listener: TcpListener, opts: BuildbotWorkers, stop: CancellationToken) {
    let port = Arc::new(Port {
        router: opts.router,
        realm: opts.realm,
        passwords: opts
            .passwords
            .iter()
            .map(|(n, p)| (n.clone(), digest(p)))
            .collect(),
        tls: opts.tls.map(tokio_rustls::TlsAcceptor::from),
        closing: AtomicBool::new(false),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shutdown = port.router.shutdown().clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = shutdown.requested() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "buildbot worker port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "buildbot worker port: {MAX_CONNECTIONS} connections already; closing this one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let port = port.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match &port.tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(port.clone(), tls, peer, stop).await,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "buildbot worker port: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::info!(%peer, "buildbot worker port: TLS handshake timed out")
                        }
                    }
                }
                None => connection(port, tcp, peer, stop).await,
            }
        });
    }
}

/// One connection: the WebSocket handshake with authentication, then the bridge.
async fn connection(port: Arc<Port>, io: impl Io, peer: SocketAddr, stop: CancellationToken) {
    let mut outcome: Result<String, (StatusCode, String)> =
        Err((StatusCode::BAD_REQUEST, "no handshake".into()));
    // The callback's type is tungstenite's (its error is an HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let header = req.headers().get("authorization").map(|v| v.as_bytes());
        let result = if port.closing.load(Ordering::Relaxed) {
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is shutting down".to_owned(),
            ))
        } else {
            port.authenticate(header)
                .map_err(|why| (StatusCode::UNAUTHORIZED, why))
        };
        outcome = result.clone();
        match result {
            Ok(_) => Ok(resp),
            Err((status, why)) => {
                let mut r = ErrorResponse::new(Some(why));
                *r.status_mut() = status;
                Err(r)
            }
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            match &outcome {
                Err((status, why))
                    if *status != StatusCode::BAD_REQUEST || why != "no handshake" =>
                {
                    tracing::warn!(%peer, %status, reason = %why, "buildbot worker refused")
                }
                _ => {
                    tracing::info!(%peer, error = %e, "buildbot worker port: bad WebSocket handshake")
                }
            }
            return;
        }
        Err(_) => {
            // A Perspective Broker client waits for the server to speak first, so it sends
            // nothing at all: the likely case of a silent connection.
            tracing::warn!(
                %peer,
                "buildbot worker port: no WebSocket handshake within {HANDSHAKE_TIMEOUT:?}; a \
                 worker using Perspective Broker (pb, buildbot-worker's default) sends nothing \
                 and is not served here: create it with --protocol msgpack_experimental_v7 (or \
                 set protocol = 'msgpack_experimental_v7' in its buildbot.tac)"
            );
            return;
        }
    };
    let Ok(name) = outcome else { return };
    tracing::info!(worker = %name, %peer, "buildbot worker connected");
    bridge::run(port, ws, name, peer, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> Port {
        Port {
            router: Router::new(Default::default()),
            realm: "buildbot".into(),
            passwords: [("w1".to_string(), digest("pw:1"))].into_iter().collect(),
            tls: None,
            closing: AtomicBool::new(false),
        }
    }

    fn basic(s: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
        .into_bytes()
    }

    #[test]
    fn basic_authentication() {
        let p = port();
        // The password may contain ':' (only the first one splits).
        assert_eq!(p.authenticate(Some(&basic("w1:pw:1"))), Ok("w1".into()));
        for bad in ["w1:pw", "w2:pw:1", "w1", ""] {
            let e = p.authenticate(Some(&basic(bad))).unwrap_err();
            assert!(!e.contains("pw"), "{e}");
        }
        assert!(p.authenticate(None).is_err());
        assert!(p.authenticate(Some(b"Bearer x")).is_err());
        assert!(p.authenticate(Some(b"Basic !!!")).is_err());
    }

    #[test]
    fn log_names_are_bounded() {
        assert_eq!(loggable("a\nb"), "a?b");
        assert_eq!(loggable(&"x".repeat(100)).len(), 64);
    }
}
