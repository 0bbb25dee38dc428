//! Transports: one TCP port serves WebSocket (through HTTP) and RawSocket.
//!
//! The first byte tells them apart: RawSocket's handshake starts with 0x7F, which never starts
//! an HTTP request. Each accepted connection runs in its own task, tracked by the router's
//! [`crate::Shutdown`].

pub mod http;
pub mod rawsocket;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::Router;

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// URL paths that accept WebSocket upgrades.
    pub websocket_paths: Vec<String>,
    /// Whether RawSocket is accepted on the same port.
    pub rawsocket: bool,
    /// Most connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// The peer mesh, whose links upgrade on its own path (see [`crate::mesh`]).
    pub mesh: Option<crate::mesh::Mesh>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            websocket_paths: vec!["/ws".into(), "/".into()],
            rawsocket: true,
            max_connections: 100_000,
            mesh: None,
        }
    }
}

/// Accepts connections until the router shuts down.
pub async fn serve(listener: TcpListener, router: Router, config: ListenerConfig) {
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
                let (router, config) = (router.clone(), config.clone());
                shutdown.spawn(async move {
                    handle_connection(stream, peer, router, config).await;
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
) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let mut first = [0u8; 1];
    let timeout = router.limits().handshake_timeout;
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
    if first[0] == rawsocket::MAGIC {
        if config.rawsocket {
            rawsocket::serve(stream, peer, router).await;
        } else {
            tracing::info!(%peer, "RawSocket is disabled on this listener; closed");
        }
    } else {
        http::serve(stream, peer, router, config).await;
    }
}
