//! The connection under a session: dialing (WebSocket, optionally over TLS, or RawSocket with
//! its handshake), the writer tasks that drain the outgoing channel in batches, and the
//! [`Reader`] that decodes what arrives.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::wire::{Codec, Message, Serializer};

use super::{ClientError, ClientOptions};

/// A transport split into a frame reader and a frame writer.
// One per connection, matched on every frame: not worth a box for the WebSocket variant.
#[allow(clippy::large_enum_variant)]
pub(super) enum Io {
    Ws(tokio_tungstenite::WebSocketStream<crate::tls::MaybeTls>),
    Raw(TcpStream),
}

/// Dials `opts.url` within `opts.timeout`: a WebSocket (offering the codec's subprotocol) for
/// `ws://` and `wss://`, a RawSocket (handshake included) for `tcp://` and `rs://`.
pub(super) async fn dial(opts: &ClientOptions) -> Result<(Io, Codec), ClientError> {
    let t = opts.timeout;
    let connect_err = |reason: String| ClientError::Connect {
        url: opts.url.clone(),
        reason,
    };
    if opts.url.starts_with("ws://") || opts.url.starts_with("wss://") {
        let codec = Codec {
            batched: opts.batched,
            ..Codec::plain(opts.serializer)
        };
        let mut req = opts
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| ClientError::Url(opts.url.clone()))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            codec.subprotocol().parse().expect("ASCII subprotocol"),
        );
        let (ws, _) = tokio::time::timeout(t, async {
            // Nagle stays on, as with tokio-tungstenite's own connect (the writer batches).
            let stream = crate::tls::connect_ws(req.uri(), opts.tls.clone(), false)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            tokio_tungstenite::client_async(req, stream)
                .await
                .map_err(|e| connect_err(e.to_string()))
        })
        .await
        .map_err(|_| ClientError::Timeout(t))??;
        Ok((Io::Ws(ws), codec))
    } else if let Some(addr) = opts
        .url
        .strip_prefix("tcp://")
        .or_else(|| opts.url.strip_prefix("rs://"))
    {
        let mut stream = tokio::time::timeout(t, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(t))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let hs = [0x7f, 0xf0 | opts.serializer.rawsocket_code(), 0, 0];
        let mut reply = [0u8; 4];
        tokio::time::timeout(t, async {
            stream.write_all(&hs).await?;
            stream.read_exact(&mut reply).await
        })
        .await
        .map_err(|_| ClientError::Timeout(t))?
        .map_err(|e| connect_err(e.to_string()))?;
        if reply[0] != 0x7f || reply[1] & 0x0f == 0 {
            return Err(connect_err(format!(
                "RawSocket handshake refused (error {})",
                reply[1] >> 4
            )));
        }
        Ok((Io::Raw(stream), Codec::plain(opts.serializer)))
    } else {
        Err(ClientError::Url(opts.url.clone()))
    }
}

/// Splits `io`: spawns the writer task (draining `out`, stopped by `abort`) and returns the
/// read half.
pub(super) fn start(
    io: Io,
    codec: Codec,
    out: mpsc::Receiver<Bytes>,
    abort: &CancellationToken,
) -> Reader {
    match io {
        Io::Ws(ws) => {
            let (sink, stream) = ws.split();
            tokio::spawn(abortable(abort.clone(), ws_writer(sink, out, codec)));
            Reader::Ws(stream, codec)
        }
        Io::Raw(stream) => {
            let (r, w) = stream.into_split();
            tokio::spawn(abortable(abort.clone(), raw_writer(w, out)));
            Reader::Raw(r, BytesMut::with_capacity(64 * 1024), codec.serializer)
        }
    }
}

/// Runs `writer` until it ends or `abort` is cancelled (dropping the write half).
async fn abortable(abort: CancellationToken, writer: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = writer => {}
        _ = abort.cancelled() => {}
    }
}

async fn ws_writer<S>(mut sink: S, mut rx: mpsc::Receiver<Bytes>, codec: Codec)
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let frames: Vec<Bytes> = if codec.batched {
            let mut f = BytesMut::new();
            for m in batch.drain(..) {
                codec.append_to_batch(&mut f, &m);
            }
            vec![f.freeze()]
        } else {
            std::mem::take(&mut batch)
        };
        for f in frames {
            let msg = if codec.serializer.is_binary() {
                WsMessage::Binary(f)
            } else {
                match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(f) {
                    Ok(t) => WsMessage::Text(t),
                    Err(_) => continue,
                }
            };
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

async fn raw_writer<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::with_capacity(256);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for m in batch.drain(..) {
            buf.put_u8(0);
            buf.put_uint(m.len() as u64, 3);
            buf.extend_from_slice(&m);
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}

type WsRead =
    futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<crate::tls::MaybeTls>>;

/// The read half, decoding in the task that dispatches (no channel hop per message).
pub(super) enum Reader {
    Ws(WsRead, Codec),
    Raw(tokio::net::tcp::OwnedReadHalf, BytesMut, Serializer),
}

impl Reader {
    /// Reads at least one message (a whole frame or read buffer) into `out`; the cause once
    /// the connection is closed or sent something undecodable.
    pub(super) async fn read_batch(&mut self, out: &mut VecDeque<Message>) -> Result<(), String> {
        match self {
            Reader::Ws(stream, codec) => loop {
                let frame = match stream.next().await {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => return Err(format!("connection lost: {e}")),
                    None => return Err("the connection closed".into()),
                };
                let data: &[u8] = match &frame {
                    WsMessage::Text(t) => t.as_bytes(),
                    WsMessage::Binary(b) => b,
                    WsMessage::Close(_) => return Err("the router closed the WebSocket".into()),
                    _ => continue,
                };
                let parts = codec
                    .split_frame(data)
                    .map_err(|e| format!("bad frame from the router: {e}"))?;
                for part in parts {
                    match codec.serializer.decode(part) {
                        Ok(m) => out.push_back(m),
                        Err(e) => {
                            tracing::warn!("client: undecodable message from router: {e}");
                            return Err(format!("undecodable message from the router: {e}"));
                        }
                    }
                }
                return Ok(());
            },
            Reader::Raw(r, buf, serializer) => loop {
                let before = out.len();
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + len {
                        buf.reserve(4 + len - buf.len());
                        break;
                    }
                    let kind = buf[0] & 7;
                    let frame = buf.split_to(4 + len);
                    if kind != 0 {
                        continue;
                    }
                    match serializer.decode(&frame[4..]) {
                        Ok(m) => out.push_back(m),
                        Err(e) => {
                            tracing::warn!("client: undecodable message from router: {e}");
                            return Err(format!("undecodable message from the router: {e}"));
                        }
                    }
                }
                if out.len() > before {
                    return Ok(());
                }
                match r.read_buf(buf).await {
                    Ok(0) => return Err("the connection closed".into()),
                    Err(e) => return Err(format!("connection lost: {e}")),
                    Ok(_) => {}
                }
            },
        }
    }
}
