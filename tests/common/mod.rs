//! Test harness: an in-process router on 127.0.0.1:0 and raw WAMP clients (WebSocket and
//! RawSocket) that send and receive individual messages, so tests assert exactly what
//! arrives on the wire.
#![allow(dead_code)]

pub mod browser;
pub mod masters;
pub mod mesh;
pub mod node;
pub mod tls;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use switchyard_router::auth::{Anonymous, Authorizer};
use switchyard_router::transport::{self, ListenerConfig};
use switchyard_router::wire::{Codec, Dict, Id, Message, Payload, Serializer, Value};
use switchyard_router::{Router, RouterConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Any client byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

pub const WAIT: Duration = Duration::from_secs(5);

/// A router serving on a free loopback port.
pub struct TestRouter {
    pub addr: SocketAddr,
    pub router: Router,
}

impl TestRouter {
    pub async fn start() -> TestRouter {
        Self::with_config(RouterConfig::default()).await
    }

    pub async fn with_config(config: RouterConfig) -> TestRouter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new(config);
        tokio::spawn(transport::serve(
            listener,
            router.clone(),
            ListenerConfig::default(),
        ));
        TestRouter { addr, router }
    }

    /// A router with an authorizer, serving `listener` (which carries its own auth and TLS).
    pub async fn with_listener(
        config: RouterConfig,
        authorizer: Arc<dyn Authorizer>,
        listener_config: ListenerConfig,
    ) -> TestRouter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::with_auth(config, Arc::new(Anonymous::default()), authorizer);
        tokio::spawn(transport::serve(listener, router.clone(), listener_config));
        TestRouter { addr, router }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self, subprotocol: &str) -> Client {
        Client::websocket(&self.url(), subprotocol).await
    }

    /// A client joined to `realm1` with full roles.
    pub async fn joined(&self, subprotocol: &str) -> (Client, Id) {
        let mut c = self.client(subprotocol).await;
        let id = c.join("realm1").await;
        (c, id)
    }
}

enum Wire {
    Ws(Box<WebSocketStream<BoxIo>>),
    Raw { stream: BoxIo, buf: BytesMut },
}

/// A raw WAMP client: no client library, every message explicit.
pub struct Client {
    wire: Wire,
    pub codec: Codec,
    next_request: Id,
    /// Messages received while waiting for something else.
    pending: std::collections::VecDeque<Message>,
}

/// HELLO details announcing every client role with the advanced features tests use.
pub fn client_roles() -> Dict {
    let features = |names: &[&str]| {
        let mut f = Dict::new();
        for n in names {
            f.insert((*n).into(), Value::Bool(true));
        }
        let mut r = Dict::new();
        r.insert("features".into(), Value::Dict(f));
        Value::Dict(r)
    };
    let mut roles = Dict::new();
    roles.insert(
        "publisher".into(),
        features(&["publisher_exclusion", "publisher_identification"]),
    );
    roles.insert(
        "subscriber".into(),
        features(&["pattern_based_subscription"]),
    );
    roles.insert(
        "caller".into(),
        features(&["progressive_call_results", "call_canceling", "call_timeout"]),
    );
    roles.insert(
        "callee".into(),
        features(&[
            "progressive_call_results",
            "call_canceling",
            "pattern_based_registration",
        ]),
    );
    let mut details = Dict::new();
    details.insert("roles".into(), Value::Dict(roles));
    details
}

pub fn args(values: Vec<Value>) -> Payload {
    Payload::new(values, Dict::new())
}

impl Client {
    pub async fn websocket(url: &str, subprotocol: &str) -> Client {
        let req = url.into_client_request().unwrap();
        let host = req.uri().host().unwrap().to_owned();
        let port = req.uri().port_u16().unwrap();
        let tcp = TcpStream::connect((host.as_str(), port)).await.unwrap();
        // Nagle off, as real clients do: two small writes in a row must not wait for an ACK.
        tcp.set_nodelay(true).unwrap();
        Self::websocket_over(Box::new(tcp), url, subprotocol).await
    }

    /// A WebSocket client over an already connected stream (plain or TLS).
    pub async fn websocket_over(io: BoxIo, url: &str, subprotocol: &str) -> Client {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
        let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, io))
            .await
            .unwrap()
            .unwrap();
        let got = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .unwrap()
            .to_str()
            .unwrap();
        let codec = Codec::from_subprotocol(got).unwrap();
        Client {
            wire: Wire::Ws(Box::new(ws)),
            codec,
            next_request: 1,
            pending: Default::default(),
        }
    }

    /// RawSocket with the given serializer; panics if the router refuses the handshake.
    pub async fn rawsocket(addr: SocketAddr, serializer: Serializer) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::rawsocket_over(Box::new(tcp), serializer).await
    }

    /// RawSocket over an already connected stream (plain or TLS).
    pub async fn rawsocket_over(mut stream: BoxIo, serializer: Serializer) -> Client {
        stream
            .write_all(&[0x7f, 0xf0 | serializer.rawsocket_code(), 0, 0])
            .await
            .unwrap();
        let mut reply = [0u8; 4];
        tokio::time::timeout(WAIT, stream.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply[0], 0x7f);
        assert_eq!(
            reply[1] & 0x0f,
            serializer.rawsocket_code(),
            "router refused: {reply:02x?}"
        );
        Client {
            wire: Wire::Raw {
                stream,
                buf: BytesMut::new(),
            },
            codec: Codec::plain(serializer),
            next_request: 1,
            pending: Default::default(),
        }
    }

    pub fn request_id(&mut self) -> Id {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    pub async fn send(&mut self, msg: &Message) {
        let bytes = self.codec.serializer.encode(msg).unwrap();
        self.send_bytes(bytes).await;
    }

    /// Sends one message's bytes as they are (framed for the transport, batched if negotiated).
    pub async fn send_bytes(&mut self, bytes: Bytes) {
        let payload = if self.codec.batched {
            let mut f = BytesMut::new();
            self.codec.append_to_batch(&mut f, &bytes);
            f.freeze()
        } else {
            bytes
        };
        self.send_frame(payload).await;
    }

    /// Sends a transport frame with exactly these bytes.
    pub async fn send_frame(&mut self, payload: Bytes) {
        match &mut self.wire {
            Wire::Ws(ws) => {
                let frame = if self.codec.serializer.is_binary() {
                    WsMessage::Binary(payload)
                } else {
                    WsMessage::Text(String::from_utf8_lossy(&payload).into_owned().into())
                };
                ws.send(frame).await.unwrap();
            }
            Wire::Raw { stream, .. } => {
                let mut f = BytesMut::new();
                f.put_u8(0);
                f.put_uint(payload.len() as u64, 3);
                f.extend_from_slice(&payload);
                stream.write_all(&f).await.unwrap();
            }
        }
    }

    /// The next message, or None if the connection closed. Panics after [`WAIT`].
    pub async fn recv_opt(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(WAIT, self.read_messages())
            .await
            .expect("no message within 5 s")?;
        self.pending.pop_front()
    }

    /// The next message within `d`; `None` if the connection closed or nothing came.
    pub async fn recv_opt_for(&mut self, d: Duration) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(d, self.read_messages()).await.ok()??;
        self.pending.pop_front()
    }

    async fn read_messages(&mut self) -> Option<()> {
        loop {
            match &mut self.wire {
                Wire::Ws(ws) => match ws.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(WsMessage::Close(_))) => return None,
                    Some(Ok(WsMessage::Text(t))) => {
                        self.decode_frame(t.as_bytes());
                        return Some(());
                    }
                    Some(Ok(WsMessage::Binary(b))) => {
                        self.decode_frame(&b);
                        return Some(());
                    }
                    Some(Ok(_)) => continue,
                },
                Wire::Raw { stream, buf } => {
                    if buf.len() >= 4 {
                        let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
                        if buf.len() >= 4 + len {
                            let kind = buf[0] & 7;
                            let frame = buf.split_to(4 + len);
                            if kind == 0 {
                                let msg = self.codec.serializer.decode(&frame[4..]).unwrap();
                                self.pending.push_back(msg);
                                return Some(());
                            }
                            continue;
                        }
                    }
                    match stream.read_buf(buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    fn decode_frame(&mut self, data: &[u8]) {
        for part in self.codec.split_frame(data).unwrap() {
            self.pending
                .push_back(self.codec.serializer.decode(part).unwrap());
        }
    }

    pub async fn recv(&mut self) -> Message {
        self.recv_opt()
            .await
            .expect("connection closed while waiting for a message")
    }

    /// Asserts the connection ends (after any messages already on their way).
    pub async fn expect_closed(&mut self) {
        tokio::time::timeout(WAIT, async { while self.recv_opt().await.is_some() {} })
            .await
            .expect("connection still open after 5 s");
    }

    /// Asserts nothing arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(m) = self.pending.pop_front() {
            panic!("expected silence, got {m:?}");
        }
        if let Ok(r) = tokio::time::timeout(d, self.read_messages()).await {
            panic!(
                "expected silence, got {:?} / {:?}",
                r,
                self.pending.pop_front()
            );
        }
    }

    pub async fn hello(&mut self, realm: &str, details: Dict) -> Message {
        self.send(&Message::Hello {
            realm: realm.into(),
            details,
        })
        .await;
        self.recv().await
    }

    pub async fn join(&mut self, realm: &str) -> Id {
        match self.hello(realm, client_roles()).await {
            Message::Welcome { session, .. } => session,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, topic: &str, options: Dict) -> Id {
        let request = self.request_id();
        self.send(&Message::Subscribe {
            request,
            options,
            topic: topic.into(),
        })
        .await;
        match self.recv().await {
            Message::Subscribed {
                request: r,
                subscription,
            } if r == request => subscription,
            other => panic!("expected SUBSCRIBED, got {other:?}"),
        }
    }

    pub async fn register(&mut self, procedure: &str, options: Dict) -> Id {
        let request = self.request_id();
        self.send(&Message::Register {
            request,
            options,
            procedure: procedure.into(),
        })
        .await;
        match self.recv().await {
            Message::Registered {
                request: r,
                registration,
            } if r == request => registration,
            other => panic!("expected REGISTERED, got {other:?}"),
        }
    }

    pub async fn publish(&mut self, topic: &str, options: Dict, payload: Payload) -> Id {
        let request = self.request_id();
        self.send(&Message::Publish {
            request,
            options,
            topic: topic.into(),
            payload,
        })
        .await;
        request
    }

    pub async fn call(&mut self, procedure: &str, options: Dict, payload: Payload) -> Id {
        let request = self.request_id();
        self.send(&Message::Call {
            request,
            options,
            procedure: procedure.into(),
            payload,
        })
        .await;
        request
    }

    /// Receives an ERROR and returns its URI, checking the request type and ID.
    pub async fn expect_error(&mut self, request_type: u64, request: Id) -> String {
        match self.recv().await {
            Message::Error {
                request_type: t,
                request: r,
                error,
                ..
            } if t == request_type && r == request => error,
            other => panic!("expected ERROR for {request_type}/{request}, got {other:?}"),
        }
    }

    /// Receives an ABORT and returns its reason.
    pub async fn expect_abort(&mut self) -> String {
        match self.recv().await {
            Message::Abort { reason, .. } => reason,
            other => panic!("expected ABORT, got {other:?}"),
        }
    }
}

/// Opens a TCP connection, sends a RawSocket handshake and returns the 4-byte reply.
pub async fn raw_handshake(addr: SocketAddr, hs: [u8; 4]) -> (TcpStream, [u8; 4]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hs).await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    (stream, reply)
}

/// Builds an options/details dict from pairs.
pub fn opts(pairs: &[(&str, Value)]) -> Dict {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A running `switchyard start --listen 127.0.0.1:0`, killed on drop.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts the real binary with extra arguments and waits for its "listening on" line.
    pub fn start(extra: &[&str]) -> Process {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["start", "--no-master", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn switchyard");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("switchyard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Process { child, addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls a meta procedure; the first positional result, or the error URI.
pub async fn meta(c: &mut Client, procedure: &str, a: Vec<Value>) -> Result<Value, String> {
    let req = c.call(procedure, opts(&[]), args(a)).await;
    loop {
        match c.recv().await {
            Message::Result {
                request, payload, ..
            } if request == req => {
                return Ok(payload.args().first().cloned().unwrap_or(Value::Null));
            }
            Message::Error { request, error, .. } if request == req => return Err(error),
            Message::Event { .. } => continue,
            other => panic!("{procedure}: expected RESULT or ERROR, got {other:?}"),
        }
    }
}

/// Calls a meta procedure until its answer satisfies `ok` (every 50 ms, at most 20 s).
pub async fn meta_until(
    c: &mut Client,
    procedure: &str,
    a: Vec<Value>,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = meta(c, procedure, a.clone()).await;
        match &answer {
            Ok(v) if ok(v) => return v.clone(),
            _ if tokio::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}: {procedure} answers {answer:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A list of IDs, sorted.
pub fn id_set(v: &Value) -> Vec<Id> {
    let Value::List(l) = v else {
        panic!("expected a list of IDs, got {v:?}")
    };
    let mut ids: Vec<Id> = l.iter().map(|x| x.as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

pub fn sorted(mut v: Vec<Id>) -> Vec<Id> {
    v.sort_unstable();
    v
}

pub fn count_is(n: u64) -> impl Fn(&Value) -> bool {
    move |v| v.as_u64() == Some(n)
}

pub type FakeLink =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A fake mesh peer named `name` speaking the protocol by hand: it dials the node
/// `acceptor_name` at `addr`, completes the handshake with `secret` announcing `features`, and
/// returns the link and the node's features.
pub async fn fake_peer(
    addr: SocketAddr,
    acceptor_name: &str,
    name: &str,
    secret: &str,
    features: &[&str],
) -> (FakeLink, Vec<String>) {
    use futures_util::SinkExt;
    use switchyard_router::mesh::frame::{Frame, SUBPROTOCOL};
    use switchyard_router::mesh::handshake;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as Ws;

    let mut req = format!("ws://{addr}/mesh").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let nd = handshake::nonce();
    ws.send(Ws::Binary(
        Frame::Hello {
            node: name.into(),
            incarnation: 1,
            url: "ws://127.0.0.1:9/mesh".into(),
            nonce: nd.clone(),
            features: features.iter().map(|f| f.to_string()).collect(),
        }
        .encode(),
    ))
    .await
    .unwrap();
    let Frame::Challenge {
        node: acceptor,
        nonce: na,
        features,
        ..
    } = fake_recv(&mut ws).await
    else {
        panic!("expected CHALLENGE")
    };
    let me = acceptor_name;
    assert_eq!(acceptor, me);
    let proof = handshake::proof(secret, "dialer", &na, &nd, name, me);
    ws.send(Ws::Binary(Frame::Auth { proof }.encode()))
        .await
        .unwrap();
    let Frame::Welcome { proof } = fake_recv(&mut ws).await else {
        panic!("expected WELCOME")
    };
    assert!(handshake::verify(
        secret, "acceptor", &nd, &na, me, name, &proof
    ));
    (ws, features)
}

pub async fn fake_recv(ws: &mut FakeLink) -> switchyard_router::mesh::frame::Frame {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Ws::Binary(b)))) => {
                return switchyard_router::mesh::frame::Frame::decode(&b).unwrap()
            }
            Ok(Some(Ok(Ws::Ping(_) | Ws::Pong(_)))) => continue,
            other => panic!("expected a mesh frame, got {other:?}"),
        }
    }
}

pub async fn fake_send(ws: &mut FakeLink, frame: &switchyard_router::mesh::frame::Frame) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        frame.encode(),
    ))
    .await
    .unwrap();
}
