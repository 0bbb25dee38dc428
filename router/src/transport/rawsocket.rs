//! WAMP over RawSocket: the 4-byte handshake, then length-prefixed frames.
//!
//! Handshake: the client sends `0x7F, LLLLSSSS, 0, 0` (it accepts messages up to 2^(9+L)
//! bytes, serializer S); the router answers with its own L and the same S, or with
//! `0x7F, EEEE0000, 0, 0` for an error. Frames: `00000TTT` (0 message, 1 PING, 2 PONG) and a
//! 24-bit length. Framing is check-then-parse over one read buffer, so a frame split across
//! reads costs no copy beyond the buffer itself.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::Endpoint;
use crate::outbound::{Closed, Queue, Taken};
use crate::protocol::{Connection, Flow};
use crate::session::Link;
use crate::uri::errors;
use crate::wire::Serializer;
use crate::Router;

/// The first byte of a RawSocket handshake.
pub const MAGIC: u8 = 0x7f;

/// Handshake error codes (upper nibble of the reply's second byte).
pub mod handshake_error {
    pub const SERIALIZER_UNSUPPORTED: u8 = 1;
    pub const LENGTH_UNACCEPTABLE: u8 = 2;
    pub const RESERVED_BITS_USED: u8 = 3;
    pub const CONNECTION_LIMIT: u8 = 4;
}

const FRAME_MESSAGE: u8 = 0;
const FRAME_PING: u8 = 1;
const FRAME_PONG: u8 = 2;

/// The largest length exponent: 2^(9+15) = 16 MiB, the most a 24-bit length can say.
const MAX_LENGTH_EXPONENT: u8 = 15;

/// The L nibble announcing at most `max` bytes.
fn length_exponent(max: usize) -> u8 {
    let mut l = 0u8;
    while l < MAX_LENGTH_EXPONENT && (1usize << (9 + l + 1)) <= max {
        l += 1;
    }
    l
}

/// Parses a client handshake into (serializer, the most the client accepts), or the error code.
pub fn parse_handshake(h: [u8; 4]) -> Result<(Serializer, usize), u8> {
    if h[0] != MAGIC || h[2] != 0 || h[3] != 0 {
        return Err(handshake_error::RESERVED_BITS_USED);
    }
    let client_max = 1usize << (9 + (h[1] >> 4));
    let serializer = Serializer::from_rawsocket_code(h[1] & 0x0f)
        .ok_or(handshake_error::SERIALIZER_UNSUPPORTED)?;
    Ok((serializer, client_max))
}

enum Control {
    Pong(Bytes),
}

/// What the handshake settled: the serializer, the most the client accepts and the most the
/// router accepts (bytes per message).
struct Agreed {
    serializer: Serializer,
    client_max: usize,
    our_max: usize,
}

/// Reads the client's handshake and answers it (both bounded by the listener's timeouts);
/// `None` when the connection ends there (refused, timed out, failed).
async fn handshake<S>(stream: &mut S, peer: SocketAddr, endpoint: &Endpoint) -> Option<Agreed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &endpoint.limits;
    let mut hs = [0u8; 4];
    match timeout(limits.handshake_timeout, stream.read_exact(&mut hs)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "RawSocket handshake read failed");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "RawSocket handshake not completed within {:?}", limits.handshake_timeout);
            return None;
        }
    }
    let parsed = parse_handshake(hs).and_then(|(s, max)| {
        if endpoint.accepts(s) {
            Ok((s, max))
        } else {
            Err(handshake_error::SERIALIZER_UNSUPPORTED)
        }
    });
    let (serializer, client_max) = match parsed {
        Ok(v) => v,
        Err(code) => {
            tracing::info!(%peer, "RawSocket handshake refused (error {code}): {hs:02x?}");
            let _ = timeout(
                limits.write_timeout,
                stream.write_all(&[MAGIC, code << 4, 0, 0]),
            )
            .await;
            return None;
        }
    };
    let our_exponent = length_exponent(limits.max_message_size);
    let reply = [
        MAGIC,
        (our_exponent << 4) | serializer.rawsocket_code(),
        0,
        0,
    ];
    match timeout(limits.write_timeout, stream.write_all(&reply)).await {
        Ok(_) => Some(Agreed {
            serializer,
            client_max,
            our_max: 1usize << (9 + our_exponent),
        }),
        Err(_) => None,
    }
}

/// Runs one RawSocket connection (plain TCP or TLS) to its end.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, router: Router, endpoint: Endpoint)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(agreed) = handshake(&mut stream, peer, &endpoint).await else {
        return;
    };
    let limits = endpoint.limits.clone();
    let label = format!("rawsocket {peer} {}", agreed.serializer);
    let (mut reader, writer) = tokio::io::split(stream);
    let queue = Arc::new(Queue::<Bytes>::new(limits.queue.clone()));
    let link = Link::Remote {
        serializer: agreed.serializer,
        queue: queue.clone(),
    };
    let mut conn = Connection::new(router.context().clone(), link, label.clone())
        .with_authenticator(endpoint.authenticator.clone());
    let (control_tx, control_rx) = mpsc::channel(8);
    let writer_task = tokio::spawn(write_loop(
        writer,
        queue.clone(),
        control_rx,
        agreed.client_max,
        limits.clone(),
        label.clone(),
        router.metrics().clone(),
    ));

    let shutdown = router.shutdown().clone();
    let mut said_goodbye = false;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let handshake_deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let mut goodbye_deadline = None;
    loop {
        if drain_frames(&mut buf, &mut conn, &agreed, &control_tx, &router, &label) == Flow::Close {
            break;
        }
        let wake = goodbye_deadline.unwrap_or(if conn.is_established() {
            tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365)
        } else {
            handshake_deadline
        });
        // The joined session's (a transport may carry a new session after GOODBYE).
        let kill = conn.kill_switch();
        tokio::select! {
            _ = shutdown.requested(), if !said_goodbye => {
                said_goodbye = true;
                if conn.begin_goodbye(errors::SYSTEM_SHUTDOWN) == Flow::Close {
                    break;
                }
                goodbye_deadline = Some(tokio::time::Instant::now() + limits.goodbye_timeout);
            }
            goodbye = super::kill_requested(kill.as_deref()), if !said_goodbye => {
                // Killed (meta API): the peer gets goodbye_timeout to answer GOODBYE.
                said_goodbye = true;
                if conn.say_goodbye(goodbye) == Flow::Close {
                    break;
                }
                goodbye_deadline = Some(tokio::time::Instant::now() + limits.goodbye_timeout);
            }
            reason = queue.closed() => {
                if reason == Closed::SlowConsumer {
                    router.metrics().slow_consumer();
                    tracing::warn!(session = ?conn.session().map(|s| s.id()), peer = %label,
                        "slow consumer: outbound queue limit exceeded; disconnected");
                }
                break;
            }
            n = reader.read_buf(&mut buf) => match n {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::debug!(peer = %label, "connection closed mid-frame");
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %label, error = %e, "RawSocket read failed");
                    break;
                }
            },
            decision = conn.deferred(), if conn.has_deferred() => {
                if conn.resolve_deferred(decision) == Flow::Close {
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if goodbye_deadline.is_none() && !conn.is_established() {
                    tracing::info!(peer = %label, "no HELLO within {:?}; closed", limits.handshake_timeout);
                    conn.abort(errors::PROTOCOL_VIOLATION, "no HELLO within the handshake timeout");
                }
                break;
            }
        }
    }
    conn.transport_closed();
    drop(control_tx);
    let _ = timeout(limits.write_timeout, writer_task).await;
}

/// Check-then-parse: handles every complete frame already in `buf` (messages to the state
/// machine, PINGs answered through the writer) and leaves a partial one for the next read.
/// `Close` on a bad frame or when the state machine closes.
fn drain_frames(
    buf: &mut BytesMut,
    conn: &mut Connection,
    agreed: &Agreed,
    control: &mpsc::Sender<Control>,
    router: &Router,
    label: &str,
) -> Flow {
    let our_max = agreed.our_max;
    while buf.len() >= 4 {
        let header = [buf[0], buf[1], buf[2], buf[3]];
        let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        if header[0] & 0xf8 != 0 {
            return conn.protocol_violation(format!(
                "RawSocket frame header {:#04x} uses reserved bits",
                header[0]
            ));
        }
        if len > our_max {
            tracing::info!(peer = %label, "frame of {len} bytes exceeds the announced {our_max}");
            return conn.abort(
                errors::PAYLOAD_SIZE_EXCEEDED,
                format!("message exceeds the limit of {our_max} bytes"),
            );
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            break;
        }
        buf.advance(4);
        let payload = buf.split_to(len).freeze();
        router.metrics().bytes_received(len);
        match header[0] & 0x07 {
            FRAME_MESSAGE => {
                let flow = match agreed.serializer.decode(&payload) {
                    Ok(msg) => conn.handle(msg),
                    Err(e) => conn.protocol_violation(e.to_string()),
                };
                if flow == Flow::Close {
                    return Flow::Close;
                }
            }
            FRAME_PING => {
                let _ = control.try_send(Control::Pong(payload));
            }
            FRAME_PONG => {}
            other => {
                return conn.protocol_violation(format!("unknown RawSocket frame type {other}"));
            }
        }
    }
    Flow::Continue
}

async fn write_loop<S: AsyncWrite>(
    mut writer: WriteHalf<S>,
    queue: Arc<Queue<Bytes>>,
    mut control: mpsc::Receiver<Control>,
    client_max: usize,
    limits: crate::Limits,
    label: String,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(64);
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            taken = queue.take(&mut batch) => match taken {
                Taken::Items => {
                    metrics.bytes_sent(batch.iter().map(Bytes::len).sum());
                    for msg in batch.drain(..) {
                        if msg.len() > client_max {
                            tracing::warn!(peer = %label, "dropping a {}-byte message: the client accepts at most {client_max}", msg.len());
                            continue;
                        }
                        out.put_u8(FRAME_MESSAGE);
                        out.put_uint(msg.len() as u64, 3);
                        out.extend_from_slice(&msg);
                    }
                    match timeout(limits.write_timeout, writer.write_all(&out)).await {
                        Ok(Ok(())) => out.clear(),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %label, error = %e, "RawSocket write failed");
                            break;
                        }
                        Err(_) => {
                            tracing::info!(peer = %label, "write stalled for {:?}; disconnected", limits.write_timeout);
                            break;
                        }
                    }
                }
                Taken::Closed(_) => {
                    let _ = timeout(limits.write_timeout, writer.shutdown()).await;
                    return;
                }
            },
            Some(Control::Pong(payload)) = control.recv() => {
                out.put_u8(FRAME_PONG);
                out.put_uint(payload.len() as u64, 3);
                out.extend_from_slice(&payload);
                if !matches!(timeout(limits.write_timeout, writer.write_all(&out)).await, Ok(Ok(()))) {
                    break;
                }
                out.clear();
            }
        }
    }
    queue.close(Closed::Normal, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_parsing() {
        assert_eq!(
            parse_handshake([0x7f, 0xf2, 0, 0]),
            Ok((Serializer::MsgPack, 1 << 24))
        );
        assert_eq!(
            parse_handshake([0x7f, 0x01, 0, 0]),
            Ok((Serializer::Json, 512))
        );
        assert_eq!(
            parse_handshake([0x7f, 0xf4, 0, 0]),
            Err(handshake_error::SERIALIZER_UNSUPPORTED)
        );
        assert_eq!(
            parse_handshake([0x7f, 0xf2, 1, 0]),
            Err(handshake_error::RESERVED_BITS_USED)
        );
    }

    #[test]
    fn length_exponent_fits_the_limit() {
        assert_eq!(length_exponent(16 << 20), 15);
        assert_eq!(length_exponent(1 << 20), 11);
        assert_eq!(length_exponent(100), 0);
    }
}
