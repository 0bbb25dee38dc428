//! WAMP over WebSocket: the reader runs the session state machine, a separate writer task
//! drains the session's queue in batches.
//!
//! Reader: frame → split (batched subprotocols) → decode → [`Connection::handle`]. It also
//! pings an idle peer and drops one that does not answer. Writer: takes everything queued,
//! feeds it to the socket (one frame per message, or one frame per batch for `.batched`
//! subprotocols) and flushes once, under a write timeout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::Endpoint;
use crate::outbound::{Closed, Queue, Taken};
use crate::protocol::{Connection, Flow};
use crate::session::Link;
use crate::uri::errors;
use crate::wire::Codec;
use crate::Router;

/// What the reader tells the writer.
enum Control {
    Ping,
    /// The peer's JSON batches use this separator; answer with the same.
    JsonSeparator(u8),
}

/// When the reader wakes up by itself: the handshake's end (no HELLO yet), an idle peer's
/// ping, the pong's deadline, or the end of the wait for the peer's GOODBYE.
struct Clock {
    idle: Option<Duration>,
    ping_timeout: Duration,
    /// A year away: "never" for an established session without pings.
    far: Instant,
    said_goodbye: bool,
    awaiting_pong: bool,
    deadline: Instant,
    /// Without a HELLO by then, the connection is dropped.
    handshake: Option<Instant>,
}

/// What the clock says when it rings.
enum Alarm {
    /// Nothing is due yet.
    Wait,
    /// The peer has been idle: ping it.
    Ping,
    NoHello,
    NoPong,
    /// The peer did not answer our GOODBYE in time.
    NoGoodbye,
}

impl Clock {
    fn new(limits: &crate::Limits) -> Clock {
        let now = Instant::now();
        let far = now + Duration::from_secs(86_400 * 365);
        Clock {
            idle: limits.ping_interval,
            ping_timeout: limits.ping_timeout,
            far,
            said_goodbye: false,
            awaiting_pong: false,
            deadline: limits.ping_interval.map(|d| now + d).unwrap_or(far),
            handshake: Some(now + limits.handshake_timeout),
        }
    }

    fn wake(&self) -> Instant {
        self.handshake
            .map_or(self.deadline, |h| h.min(self.deadline))
    }

    /// The router said GOODBYE (shutdown, kill): the peer has `timeout` to answer.
    fn goodbye(&mut self, timeout: Duration) {
        self.said_goodbye = true;
        self.deadline = Instant::now() + timeout;
    }

    /// The peer sent a frame: it is alive.
    fn heard(&mut self) {
        if !self.said_goodbye {
            self.awaiting_pong = false;
            self.deadline = self.idle.map(|d| Instant::now() + d).unwrap_or(self.far);
        }
    }

    /// The session is established: the handshake deadline is over.
    fn joined(&mut self, established: bool) {
        if established {
            self.handshake = None;
        }
    }

    fn ring(&mut self, established: bool) -> Alarm {
        if self.handshake.is_some_and(|h| Instant::now() >= h) && !established {
            return Alarm::NoHello;
        }
        self.handshake = None;
        if Instant::now() < self.deadline {
            Alarm::Wait
        } else if self.said_goodbye {
            Alarm::NoGoodbye
        } else if self.awaiting_pong {
            Alarm::NoPong
        } else {
            self.awaiting_pong = true;
            self.deadline = Instant::now() + self.ping_timeout;
            Alarm::Ping
        }
    }
}

/// Runs one WebSocket WAMP connection to its end.
pub async fn serve<S>(io: S, peer: SocketAddr, mut codec: Codec, router: Router, endpoint: Endpoint)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = endpoint.limits.clone();
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size))
        // Eagerly allocated per connection: 8 KiB keeps 10,000 idle sessions small; large
        // messages just take more reads.
        .read_buffer_size(8 * 1024);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let (sink, mut stream) = ws.split();
    let queue = Arc::new(Queue::<Bytes>::new(limits.queue.clone()));
    let link = Link::Remote {
        serializer: codec.serializer,
        queue: queue.clone(),
    };
    let label = format!("websocket {peer} {}", codec.subprotocol());
    let mut conn = Connection::new(router.context().clone(), link, label.clone())
        .with_authenticator(endpoint.authenticator.clone());
    let (control_tx, control_rx) = mpsc::channel(4);
    let writer = tokio::spawn(write_loop(
        sink,
        queue.clone(),
        control_rx,
        codec,
        limits.clone(),
        label.clone(),
        router.metrics().clone(),
    ));

    let shutdown = router.shutdown().clone();
    let mut clock = Clock::new(&limits);
    loop {
        // The joined session's (a transport may carry a new session after GOODBYE).
        let kill = conn.kill_switch();
        tokio::select! {
            _ = shutdown.requested(), if !clock.said_goodbye => {
                clock.goodbye(limits.goodbye_timeout);
                if conn.begin_goodbye(errors::SYSTEM_SHUTDOWN) == Flow::Close {
                    break;
                }
            }
            goodbye = super::kill_requested(kill.as_deref()), if !clock.said_goodbye => {
                // Killed (meta API): the peer gets goodbye_timeout to answer GOODBYE.
                clock.goodbye(limits.goodbye_timeout);
                if conn.say_goodbye(goodbye) == Flow::Close {
                    break;
                }
            }
            reason = queue.closed() => {
                if reason == Closed::SlowConsumer {
                    router.metrics().slow_consumer();
                    tracing::warn!(session = ?conn.session().map(|s| s.id()), peer = %label,
                        "slow consumer: outbound queue limit exceeded; disconnected");
                }
                break;
            }
            frame = stream.next() => {
                let frame = match frame {
                    None => break,
                    Some(Ok(f)) => f,
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::info!(peer = %label, "message over the size limit: {e}");
                        conn.abort(errors::PAYLOAD_SIZE_EXCEEDED, format!("message exceeds the limit of {} bytes", limits.max_message_size));
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %label, error = %e, "WebSocket read failed");
                        break;
                    }
                };
                clock.heard();
                if read(&mut conn, &mut codec, &frame, &control_tx, &router).await == Flow::Close {
                    break;
                }
                clock.joined(conn.is_established());
            }
            decision = conn.deferred(), if conn.has_deferred() => {
                if conn.resolve_deferred(decision) == Flow::Close {
                    break;
                }
                clock.joined(conn.is_established());
            }
            _ = sleep_until(clock.wake()) => match clock.ring(conn.is_established()) {
                Alarm::Wait => {}
                Alarm::Ping => {
                    let _ = control_tx.try_send(Control::Ping);
                }
                Alarm::NoHello => {
                    tracing::info!(peer = %label, "no HELLO within {:?}; closed", limits.handshake_timeout);
                    conn.abort(errors::PROTOCOL_VIOLATION, "no HELLO within the handshake timeout");
                    break;
                }
                Alarm::NoPong => {
                    tracing::info!(peer = %label, "no pong within {:?}; disconnected", limits.ping_timeout);
                    break;
                }
                Alarm::NoGoodbye => break,
            }
        }
    }
    conn.transport_closed();
    drop(control_tx);
    // The writer flushes a final ABORT/GOODBYE if one was queued, then closes the socket.
    if timeout(limits.write_timeout, writer).await.is_err() {
        tracing::debug!(peer = %label, "writer did not finish in time");
    }
}

/// One data frame from the peer: its messages to the state machine (a JSON batch separator
/// the peer uses is echoed through the writer).
async fn read(
    conn: &mut Connection,
    codec: &mut Codec,
    frame: &WsMessage,
    control: &mpsc::Sender<Control>,
    router: &Router,
) -> Flow {
    let data: &[u8] = match frame {
        WsMessage::Text(t) => t.as_bytes(),
        WsMessage::Binary(b) => b,
        // Keep reading: tungstenite flushes its close reply on the next poll, which then ends
        // the stream, so the peer sees a clean 1000 close.
        WsMessage::Close(_) => return Flow::Continue,
        _ => return Flow::Continue, // tungstenite answers pings itself
    };
    if let Some(sep) = codec.frame_json_separator(data) {
        if sep != codec.json_separator {
            codec.json_separator = sep;
            let _ = control.send(Control::JsonSeparator(sep)).await;
        }
    }
    router.metrics().bytes_received(data.len());
    handle_frame(conn, *codec, data)
}

fn handle_frame(conn: &mut Connection, codec: Codec, data: &[u8]) -> Flow {
    let parts = match codec.split_frame(data) {
        Ok(p) => p,
        Err(e) => return conn.protocol_violation(e.to_string()),
    };
    for part in parts {
        let msg = match codec.serializer.decode(part) {
            Ok(m) => m,
            Err(e) => return conn.protocol_violation(e.to_string()),
        };
        if conn.handle(msg) == Flow::Close {
            return Flow::Close;
        }
    }
    Flow::Continue
}

fn frame_for(codec: Codec, payload: Bytes) -> WsMessage {
    if codec.serializer.is_binary() {
        WsMessage::Binary(payload)
    } else {
        match Utf8Bytes::try_from(payload) {
            Ok(t) => WsMessage::Text(t),
            // serde_json only writes UTF-8; this arm exists so a bug cannot panic the writer.
            Err(_) => WsMessage::Text(Utf8Bytes::from_static("")),
        }
    }
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, WsMessage>,
    queue: Arc<Queue<Bytes>>,
    mut control: mpsc::Receiver<Control>,
    mut codec: Codec,
    limits: crate::Limits,
    label: String,
    metrics: Arc<crate::metrics::Metrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(64);
    let close_frame = |code: CloseCode, reason: &'static str| {
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }))
    };
    loop {
        tokio::select! {
            // Control first: a separator change must apply before the reply it concerns.
            biased;
            Some(c) = control.recv() => match c {
                Control::Ping => {
                    if timeout(limits.write_timeout, sink.send(WsMessage::Ping(Bytes::new()))).await.is_err() {
                        break;
                    }
                }
                Control::JsonSeparator(sep) => codec.json_separator = sep,
            },
            taken = queue.take(&mut batch) => match taken {
                Taken::Items => {
                    metrics.bytes_sent(batch.iter().map(Bytes::len).sum());
                    let write = async {
                        if codec.batched {
                            let mut frame = BytesMut::new();
                            for msg in batch.drain(..) {
                                if !frame.is_empty() && frame.len() + msg.len() + 4 > limits.max_message_size {
                                    sink.feed(frame_for(codec, frame.split().freeze())).await?;
                                }
                                codec.append_to_batch(&mut frame, &msg);
                            }
                            sink.feed(frame_for(codec, frame.freeze())).await?;
                        } else {
                            for msg in batch.drain(..) {
                                sink.feed(frame_for(codec, msg)).await?;
                            }
                        }
                        sink.flush().await
                    };
                    match timeout(limits.write_timeout, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %label, error = %e, "WebSocket write failed");
                            break;
                        }
                        Err(_) => {
                            tracing::info!(peer = %label, "write stalled for {:?}; disconnected", limits.write_timeout);
                            break;
                        }
                    }
                    batch.clear();
                }
                Taken::Closed(reason) => {
                    let frame = match reason {
                        Closed::SlowConsumer => close_frame(CloseCode::Policy, "slow consumer"),
                        Closed::Normal => close_frame(CloseCode::Normal, ""),
                    };
                    let _ = timeout(limits.write_timeout, sink.send(frame)).await;
                    return;
                }
            },
        }
    }
    // The socket failed: stop the reader too.
    queue.close(Closed::Normal, false);
}
