//! The ceiling: a trivial WebSocket relay with no WAMP bookkeeping, and its bench clients.
//!
//! A client's first frame says what it is (`pub` or `sub`); every later frame from a
//! publisher goes to every subscriber. Nothing is parsed, matched or re-encoded, so its
//! throughput is what this machine's sockets, kernel and WebSocket framing allow; router
//! figures read as a fraction of it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::RelayArgs;

type Subscribers = Arc<RwLock<Vec<mpsc::Sender<Bytes>>>>;

/// Frames queued per subscriber; a full queue makes the publisher's reader wait (no loss).
const DEPTH: usize = 8192;

pub async fn serve(a: RelayArgs) -> Result<(), String> {
    let listener = TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("relay listening on {local}");
    let subs: Subscribers = Default::default();
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => a.map_err(|e| e.to_string())?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let subs = subs.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let role = match stream.next().await {
                Some(Ok(WsMessage::Binary(b))) => b,
                _ => return,
            };
            if &role[..] == b"sub" {
                let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
                subs.write().push(tx);
                let mut batch = Vec::with_capacity(256);
                while rx.recv_many(&mut batch, 256).await > 0 {
                    for b in batch.drain(..) {
                        if sink.feed(WsMessage::Binary(b)).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            } else {
                while let Some(Ok(WsMessage::Binary(b))) = stream.next().await {
                    let targets: Vec<_> = subs.read().clone();
                    for t in targets {
                        let _ = t.send(b.clone()).await;
                    }
                }
            }
        });
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, role: &'static [u8]) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("relay {url}: {e}"))?;
    ws.send(WsMessage::Binary(Bytes::from_static(role)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

pub struct RelayPublisher {
    sink: SplitSink<Ws, WsMessage>,
}

impl RelayPublisher {
    pub async fn connect(url: &str) -> Result<Self, String> {
        let (sink, _stream) = connect(url, b"pub").await?.split();
        Ok(RelayPublisher { sink })
    }

    pub async fn send(&mut self, b: Bytes) -> Result<(), String> {
        self.sink
            .send(WsMessage::Binary(b))
            .await
            .map_err(|e| e.to_string())
    }
}

pub struct RelaySubscriber {
    stream: SplitStream<Ws>,
    _sink: SplitSink<Ws, WsMessage>,
}

impl RelaySubscriber {
    pub async fn connect(url: &str) -> Result<Self, String> {
        let (sink, stream) = connect(url, b"sub").await?.split();
        // Give the relay a moment to register the subscriber before anyone publishes.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok(RelaySubscriber {
            stream,
            _sink: sink,
        })
    }

    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.stream.next().await? {
                Ok(WsMessage::Binary(b)) => return Some(b),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}
