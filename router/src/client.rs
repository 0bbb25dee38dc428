//! A WAMP client over WebSocket (`ws://host:port/path`, or `wss://` with
//! [`ClientOptions::tls`]) or RawSocket (`tcp://host:port`), with any serializer. `switchyard bench` drives routers with it; it speaks plain WAMP, so it works
//! against any router (switchyard, Crossbar, others).
//!
//! One task reads, decodes and dispatches what arrives (no channel hop in between): replies
//! to the pending request they answer, EVENTs to their subscription's channel, INVOCATIONs and
//! INTERRUPTs to their registration's channel. A subscription's channel is installed by the reader itself when SUBSCRIBED
//! arrives, so no EVENT that follows can be missed. One writer task drains a bounded channel
//! of encoded messages and writes them in batches.
//!
//! A client joins anonymously unless [`ClientOptions::auth`] names an authid and a method:
//! WAMP-CRA (the CHALLENGE answered with `base64(HMAC-SHA256(key, challenge))`, the key being
//! the secret, or autobahn's `derive_key` of it when the challenge carries a salt) or ticket.
//! Secrets never appear in `Debug` output or logs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::auth::wampcra::{compute_signature, derive_key};
use crate::wire::{code, Codec, Dict, Id, Message, Payload, Serializer, Value};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "bad router URL {0:?}: use ws://host:port/path, wss://host:port/path or tcp://host:port"
    )]
    Url(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the router refused the session: {reason} {message}")]
    Aborted { reason: String, message: String },
    #[error("the router answered with {uri}: {args:?}")]
    Wamp { uri: String, args: Vec<Value> },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection is closed")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// How to reach and join a router.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub url: String,
    pub realm: String,
    pub serializer: Serializer,
    /// For WebSocket: offer the `.batched` subprotocol.
    pub batched: bool,
    /// Applies to connecting, joining, and every request that waits for an answer.
    pub timeout: Duration,
    /// Authenticate as this principal; `None` joins anonymously.
    pub auth: Option<ClientAuth>,
    /// For `wss://` URLs (required by them): the trust anchors the router's certificate is
    /// verified with, for the URL's host (e.g. [`crate::tls::client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>, realm: impl Into<String>) -> Self {
        ClientOptions {
            url: url.into(),
            realm: realm.into(),
            serializer: Serializer::MsgPack,
            batched: false,
            timeout: Duration::from_secs(10),
            auth: None,
            tls: None,
        }
    }
}

/// Who the client is and how it proves it (HELLO's `authid` and `authmethods`).
#[derive(Clone)]
pub struct ClientAuth {
    pub authid: String,
    pub method: AuthMethod,
}

/// An authentication method with its secret.
#[derive(Clone)]
pub enum AuthMethod {
    /// WAMP-CRA: the CHALLENGE is signed with the secret (or its salted derivation).
    WampCra { secret: String },
    /// Ticket: the ticket itself is the answer.
    Ticket { ticket: String },
}

// Secrets never reach Debug output (options are logged).
impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("authid", &self.authid)
            .field("method", &self.method.name())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Upper bounds on the PBKDF2 parameters a router may ask for: a hostile router must not make
/// the client burn minutes of CPU or gigabytes of memory.
const MAX_CRA_ITERATIONS: u64 = 10_000_000;
const MAX_CRA_KEYLEN: u64 = 1024;

impl AuthMethod {
    /// The method's name in `authmethods` and CHALLENGE.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::WampCra { .. } => "wampcra",
            AuthMethod::Ticket { .. } => "ticket",
        }
    }
}

impl ClientAuth {
    pub fn wampcra(authid: impl Into<String>, secret: impl Into<String>) -> Self {
        ClientAuth {
            authid: authid.into(),
            method: AuthMethod::WampCra {
                secret: secret.into(),
            },
        }
    }

    pub fn ticket(authid: impl Into<String>, ticket: impl Into<String>) -> Self {
        ClientAuth {
            authid: authid.into(),
            method: AuthMethod::Ticket {
                ticket: ticket.into(),
            },
        }
    }

    /// The AUTHENTICATE signature for a CHALLENGE.
    async fn answer(&self, method: &str, extra: &Dict) -> Result<String, ClientError> {
        if method != self.method.name() {
            return Err(ClientError::Protocol(format!(
                "the router challenged with {method:?}, but the client offered only {:?}",
                self.method.name()
            )));
        }
        match &self.method {
            AuthMethod::Ticket { ticket } => Ok(ticket.clone()),
            AuthMethod::WampCra { secret } => {
                let challenge = extra
                    .get("challenge")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ClientError::Protocol("WAMP-CRA CHALLENGE without a challenge".into())
                    })?
                    .to_owned();
                let Some(salt) = extra.get("salt") else {
                    return Ok(compute_signature(secret.as_bytes(), &challenge));
                };
                // autobahn's defaults when a salted challenge leaves them out.
                let salt = salt
                    .as_str()
                    .ok_or_else(|| ClientError::Protocol("WAMP-CRA salt is not a string".into()))?
                    .to_owned();
                let number = |key: &str, default: u64, max: u64| match extra.get(key) {
                    None => Ok(default),
                    Some(v) => match v.as_u64() {
                        Some(n) if (1..=max).contains(&n) => Ok(n),
                        _ => Err(ClientError::Protocol(format!(
                            "WAMP-CRA {key} must be an integer from 1 to {max}"
                        ))),
                    },
                };
                let iterations = number("iterations", 1000, MAX_CRA_ITERATIONS)? as u32;
                let keylen = number("keylen", 32, MAX_CRA_KEYLEN)? as usize;
                let secret = secret.clone();
                // PBKDF2 is slow by design: off the async threads.
                let key = tokio::task::spawn_blocking(move || {
                    derive_key(&secret, &salt, iterations, keylen)
                })
                .await
                .map_err(|e| ClientError::Protocol(format!("key derivation failed: {e}")))?;
                Ok(compute_signature(key.as_bytes(), &challenge))
            }
        }
    }
}

/// A received EVENT.
#[derive(Debug, Clone)]
pub struct Event {
    pub subscription: Id,
    pub publication: Id,
    pub details: Dict,
    pub payload: Payload,
}

/// What a registration's channel receives.
#[derive(Debug)]
pub enum CalleeMessage {
    Invocation {
        request: Id,
        registration: Id,
        details: Dict,
        payload: Payload,
    },
    Interrupt {
        request: Id,
        options: Dict,
    },
}

enum Pending {
    /// A single reply (SUBSCRIBED/REGISTERED/PUBLISHED/RESULT/ERROR/...).
    Reply(oneshot::Sender<Message>),
    /// SUBSCRIBE: install `events` for the subscription ID, then reply.
    Subscribe(oneshot::Sender<Message>, mpsc::Sender<Event>),
    /// REGISTER: install `calls` for the registration ID, then reply.
    Register(oneshot::Sender<Message>, mpsc::Sender<CalleeMessage>),
    /// A call with progressive results: every RESULT goes to the channel.
    Progressive(mpsc::Sender<Message>),
}

#[derive(Default)]
struct Routes {
    pending: HashMap<Id, Pending>,
    subscriptions: HashMap<Id, Vec<mpsc::Sender<Event>>>,
    registrations: HashMap<Id, mpsc::Sender<CalleeMessage>>,
}

struct Shared {
    routes: Mutex<Routes>,
    next_request: AtomicU64,
    out: mpsc::Sender<Bytes>,
    codec: Codec,
    timeout: Duration,
    session: Id,
    /// WELCOME's details (authid, authrole, authmethod, roles...).
    welcome: Dict,
    /// The router challenged the client (and accepted its answer) before WELCOME.
    challenged: bool,
    /// Set by [`Client::leave`]: the router's GOODBYE is then a reply, not to be answered.
    leaving: std::sync::atomic::AtomicBool,
    /// Cancelled when the reader stops: the session is over.
    closed: CancellationToken,
    /// Why the session ended (set before `closed` is cancelled).
    close_reason: Mutex<Option<String>>,
    /// Cancelled by [`Client::disconnect`]: the reader and the writer stop at once.
    abort: CancellationToken,
}

/// A joined WAMP session. Cheap to clone; all clones share the session.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// Depth of the channels handing EVENTs and INVOCATIONs to the application.
const CHANNEL_DEPTH: usize = 4096;

fn hello_details(auth: Option<&ClientAuth>) -> Dict {
    let role = |features: &[&str]| {
        let mut f = Dict::new();
        for n in features {
            f.insert((*n).into(), Value::Bool(true));
        }
        let mut r = Dict::new();
        r.insert("features".into(), Value::Dict(f));
        Value::Dict(r)
    };
    let mut roles = Dict::new();
    roles.insert(
        "publisher".into(),
        role(&["publisher_exclusion", "publisher_identification"]),
    );
    roles.insert("subscriber".into(), role(&["pattern_based_subscription"]));
    roles.insert(
        "caller".into(),
        role(&["progressive_call_results", "call_canceling", "call_timeout"]),
    );
    roles.insert(
        "callee".into(),
        role(&[
            "progressive_call_results",
            "call_canceling",
            "pattern_based_registration",
            "shared_registration",
        ]),
    );
    let mut details = Dict::new();
    details.insert("roles".into(), Value::Dict(roles));
    details.insert(
        "agent".into(),
        Value::from(concat!("switchyard-client-", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(a) = auth {
        details.insert("authid".into(), Value::from(a.authid.as_str()));
        details.insert(
            "authmethods".into(),
            Value::List(vec![Value::from(a.method.name())]),
        );
    }
    details
}

/// A transport split into a frame reader and a frame writer.
// One per connection, matched on every frame: not worth a box for the WebSocket variant.
#[allow(clippy::large_enum_variant)]
enum Io {
    Ws(tokio_tungstenite::WebSocketStream<crate::tls::MaybeTls>),
    Raw(TcpStream),
}

impl Client {
    /// Connects, joins the realm and starts the reader and writer tasks.
    pub async fn connect(opts: &ClientOptions) -> Result<Client, ClientError> {
        let t = opts.timeout;
        let connect_err = |reason: String| ClientError::Connect {
            url: opts.url.clone(),
            reason,
        };
        let (io, codec) = if opts.url.starts_with("ws://") || opts.url.starts_with("wss://") {
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
            (Io::Ws(ws), codec)
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
            (Io::Raw(stream), Codec::plain(opts.serializer))
        } else {
            return Err(ClientError::Url(opts.url.clone()));
        };
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let abort = CancellationToken::new();
        let mut reader = match io {
            Io::Ws(ws) => {
                let (sink, stream) = ws.split();
                tokio::spawn(abortable(abort.clone(), ws_writer(sink, out_rx, codec)));
                Reader::Ws(stream, codec)
            }
            Io::Raw(stream) => {
                let (r, w) = stream.into_split();
                tokio::spawn(abortable(abort.clone(), raw_writer(w, out_rx)));
                Reader::Raw(r, BytesMut::with_capacity(64 * 1024), codec.serializer)
            }
        };
        let mut inbox = VecDeque::new();
        // Join: HELLO, then WELCOME or ABORT (with a CHALLENGE and AUTHENTICATE in between
        // when authenticating).
        let hello = Message::Hello {
            realm: opts.realm.clone(),
            details: hello_details(opts.auth.as_ref()),
        };
        out_tx
            .send(encode(codec, &hello)?)
            .await
            .map_err(|_| ClientError::Closed)?;
        let mut challenged = false;
        let (session, welcome) = loop {
            let next = tokio::time::timeout(t, async {
                loop {
                    if let Some(m) = inbox.pop_front() {
                        return Some(m);
                    }
                    if reader.read_batch(&mut inbox).await.is_err() {
                        return None;
                    }
                }
            });
            match next.await.map_err(|_| ClientError::Timeout(t))? {
                Some(Message::Welcome { session, details }) => break (session, details),
                Some(Message::Abort { reason, details }) => {
                    let message = details
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    return Err(ClientError::Aborted { reason, message });
                }
                Some(Message::Challenge { method, extra }) if !challenged => {
                    let Some(auth) = &opts.auth else {
                        return Err(ClientError::Protocol(format!(
                            "the router sent a {method} CHALLENGE, but the client has no credentials"
                        )));
                    };
                    challenged = true;
                    let signature = auth.answer(&method, &extra).await?;
                    let answer = Message::Authenticate {
                        signature,
                        extra: Dict::new(),
                    };
                    out_tx
                        .send(encode(codec, &answer)?)
                        .await
                        .map_err(|_| ClientError::Closed)?;
                }
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "expected WELCOME, got {}",
                        other.name()
                    )))
                }
                None => return Err(ClientError::Closed),
            }
        };
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes::default()),
            next_request: AtomicU64::new(1),
            out: out_tx,
            codec,
            timeout: t,
            session,
            welcome,
            challenged,
            leaving: Default::default(),
            closed: CancellationToken::new(),
            abort,
            close_reason: Mutex::new(None),
        });
        tokio::spawn(dispatch(reader, inbox, shared.clone()));
        Ok(Client { shared })
    }

    pub fn session_id(&self) -> Id {
        self.shared.session
    }

    /// WELCOME's details: `authid`, `authrole`, `authmethod`, the router's roles...
    pub fn welcome_details(&self) -> &Dict {
        &self.shared.welcome
    }

    /// The authid the router gave this session.
    pub fn authid(&self) -> Option<&str> {
        self.shared.welcome.get("authid").and_then(Value::as_str)
    }

    /// The role the router gave this session.
    /// Whether the session was established through a CHALLENGE the client answered (a
    /// client that insists on authentication refuses a WELCOME without one).
    pub fn was_challenged(&self) -> bool {
        self.shared.challenged
    }

    pub fn authrole(&self) -> Option<&str> {
        self.shared.welcome.get("authrole").and_then(Value::as_str)
    }

    /// Resolves when the session is over: GOODBYE, ABORT, or the connection closed.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Drops the connection at once, without GOODBYE (for a router that stopped answering;
    /// prefer [`Client::leave`]). Pending requests fail with [`ClientError::Closed`].
    pub fn disconnect(&self) {
        self.shared.abort.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Why the session ended (`None` while it is open), e.g. `router said GOODBYE
    /// (wamp.close.system_shutdown)` or `connection lost: Connection reset by peer`.
    pub fn close_reason(&self) -> Option<String> {
        self.shared.close_reason.lock().clone()
    }

    fn request_id(&self) -> Id {
        self.shared.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a message without waiting for any answer.
    pub async fn send(&self, msg: &Message) -> Result<(), ClientError> {
        let bytes = encode(self.shared.codec, msg)?;
        self.shared
            .out
            .send(bytes)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Sends `msg` (whose request ID is `request`) and waits for its answer.
    async fn request(
        &self,
        request: Id,
        msg: Message,
        pending: Pending,
        rx: oneshot::Receiver<Message>,
    ) -> Result<Message, ClientError> {
        self.shared.routes.lock().pending.insert(request, pending);
        if let Err(e) = self.send(&msg).await {
            self.shared.routes.lock().pending.remove(&request);
            return Err(e);
        }
        let t = self.shared.timeout;
        match tokio::time::timeout(t, rx).await {
            Ok(Ok(Message::Error { error, payload, .. })) => Err(ClientError::Wamp {
                uri: error,
                args: payload.args().to_vec(),
            }),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.shared.routes.lock().pending.remove(&request);
                Err(ClientError::Timeout(t))
            }
        }
    }

    /// Publishes without acknowledgement.
    pub async fn publish(
        &self,
        topic: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<(), ClientError> {
        let request = self.request_id();
        self.send(&Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        })
        .await
    }

    /// Publishes with `acknowledge: true` and returns the publication ID.
    pub async fn publish_acknowledged(
        &self,
        topic: &str,
        mut options: Dict,
        payload: Payload,
    ) -> Result<Id, ClientError> {
        options.insert("acknowledge".into(), Value::Bool(true));
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let msg = Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        };
        match self.request(request, msg, Pending::Reply(tx), rx).await? {
            Message::Published { publication, .. } => Ok(publication),
            other => Err(ClientError::Protocol(format!(
                "expected PUBLISHED, got {}",
                other.name()
            ))),
        }
    }

    /// Subscribes; EVENTs arrive on the returned channel.
    pub async fn subscribe(
        &self,
        topic: &str,
        options: Dict,
    ) -> Result<(Id, mpsc::Receiver<Event>), ClientError> {
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let (events_tx, events_rx) = mpsc::channel(CHANNEL_DEPTH);
        let msg = Message::Subscribe {
            request,
            options,
            topic: topic.to_owned(),
        };
        match self
            .request(request, msg, Pending::Subscribe(tx, events_tx), rx)
            .await?
        {
            Message::Subscribed { subscription, .. } => Ok((subscription, events_rx)),
            other => Err(ClientError::Protocol(format!(
                "expected SUBSCRIBED, got {}",
                other.name()
            ))),
        }
    }

    /// Registers; INVOCATIONs (and INTERRUPTs) arrive on the returned channel; answer with
    /// [`Client::yield_result`] or [`Client::yield_error`].
    pub async fn register(
        &self,
        procedure: &str,
        options: Dict,
    ) -> Result<(Id, mpsc::Receiver<CalleeMessage>), ClientError> {
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let (calls_tx, calls_rx) = mpsc::channel(CHANNEL_DEPTH);
        let msg = Message::Register {
            request,
            options,
            procedure: procedure.to_owned(),
        };
        match self
            .request(request, msg, Pending::Register(tx, calls_tx), rx)
            .await?
        {
            Message::Registered { registration, .. } => Ok((registration, calls_rx)),
            other => Err(ClientError::Protocol(format!(
                "expected REGISTERED, got {}",
                other.name()
            ))),
        }
    }

    /// Calls and waits for the final RESULT.
    pub async fn call(
        &self,
        procedure: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<Payload, ClientError> {
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let msg = Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        };
        match self.request(request, msg, Pending::Reply(tx), rx).await? {
            Message::Result { payload, .. } => Ok(payload),
            other => Err(ClientError::Protocol(format!(
                "expected RESULT, got {}",
                other.name()
            ))),
        }
    }

    /// Calls with `receive_progress`; every RESULT (progressive and final) and a final ERROR
    /// arrive on the channel. Returns the call's request ID (for [`Client::cancel`]).
    pub async fn call_progressive(
        &self,
        procedure: &str,
        mut options: Dict,
        payload: Payload,
    ) -> Result<(Id, mpsc::Receiver<Message>), ClientError> {
        options.insert("receive_progress".into(), Value::Bool(true));
        let request = self.request_id();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        self.shared
            .routes
            .lock()
            .pending
            .insert(request, Pending::Progressive(tx));
        self.send(&Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        })
        .await?;
        Ok((request, rx))
    }

    /// Cancels a call made with [`Client::call_progressive`].
    pub async fn cancel(&self, request: Id, mode: &str) -> Result<(), ClientError> {
        let mut options = Dict::new();
        options.insert("mode".into(), Value::from(mode));
        self.send(&Message::Cancel { request, options }).await
    }

    pub async fn yield_result(
        &self,
        request: Id,
        options: Dict,
        payload: Payload,
    ) -> Result<(), ClientError> {
        self.send(&Message::Yield {
            request,
            options,
            payload,
        })
        .await
    }

    pub async fn yield_error(
        &self,
        request: Id,
        error: &str,
        payload: Payload,
    ) -> Result<(), ClientError> {
        self.send(&Message::Error {
            request_type: code::INVOCATION,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            payload,
        })
        .await
    }

    /// Says GOODBYE (the reader ends when the router answers or closes).
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.shared.leaving.store(true, Ordering::Relaxed);
        self.send(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.close_realm".into(),
        })
        .await
    }
}

fn encode(codec: Codec, msg: &Message) -> Result<Bytes, ClientError> {
    codec
        .serializer
        .encode(msg)
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Routes incoming messages (after WELCOME) to whoever waits for them.
async fn dispatch(mut reader: Reader, mut inbox: VecDeque<Message>, shared: Arc<Shared>) {
    let reason = loop {
        let Some(msg) = inbox.pop_front() else {
            let read = tokio::select! {
                r = reader.read_batch(&mut inbox) => r,
                _ = shared.abort.cancelled() => Err("the client disconnected".into()),
            };
            match read {
                Ok(()) => continue,
                Err(cause) => break cause,
            }
        };
        match msg {
            Message::Event {
                subscription,
                publication,
                details,
                payload,
            } => {
                let targets = shared
                    .routes
                    .lock()
                    .subscriptions
                    .get(&subscription)
                    .cloned();
                for t in targets.into_iter().flatten() {
                    let ev = Event {
                        subscription,
                        publication,
                        details: details.clone(),
                        payload: payload.clone(),
                    };
                    let _ = t.send(ev).await;
                }
            }
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => {
                let target = shared
                    .routes
                    .lock()
                    .registrations
                    .get(&registration)
                    .cloned();
                if let Some(t) = target {
                    let _ = t
                        .send(CalleeMessage::Invocation {
                            request,
                            registration,
                            details,
                            payload,
                        })
                        .await;
                }
            }
            Message::Interrupt { request, options } => {
                let targets: Vec<_> = shared
                    .routes
                    .lock()
                    .registrations
                    .values()
                    .cloned()
                    .collect();
                // INTERRUPT names the invocation, not the registration: tell every callee
                // channel (a client rarely has more than one); unknown IDs are ignored there.
                for t in targets {
                    let _ = t
                        .send(CalleeMessage::Interrupt {
                            request,
                            options: options.clone(),
                        })
                        .await;
                }
            }
            Message::Goodbye { .. } if shared.leaving.load(Ordering::Relaxed) => {
                break "the session was left (GOODBYE)".to_owned()
            }
            Message::Goodbye { reason, .. } => {
                let _ = shared
                    .out
                    .send(
                        encode(
                            shared.codec,
                            &Message::Goodbye {
                                details: Dict::new(),
                                reason: "wamp.close.goodbye_and_out".into(),
                            },
                        )
                        .unwrap_or_default(),
                    )
                    .await;
                break format!("the router said GOODBYE ({reason})");
            }
            Message::Abort { reason, details } => {
                let message = details.get("message").and_then(Value::as_str).unwrap_or("");
                break format!("the router sent ABORT ({reason}) {message}");
            }
            reply => {
                let request = match &reply {
                    Message::Subscribed { request, .. }
                    | Message::Registered { request, .. }
                    | Message::Unsubscribed { request, .. }
                    | Message::Unregistered { request, .. }
                    | Message::Published { request, .. }
                    | Message::Result { request, .. }
                    | Message::Error { request, .. } => *request,
                    _ => continue,
                };
                let progress = matches!(&reply, Message::Result { details, .. } if details.get("progress") == Some(&Value::Bool(true)));
                // Decide under the lock; await (progressive results) only after releasing it.
                let progressive = {
                    let mut routes = shared.routes.lock();
                    match routes.pending.remove(&request) {
                        Some(Pending::Reply(tx)) => {
                            let _ = tx.send(reply);
                            None
                        }
                        Some(Pending::Subscribe(tx, events)) => {
                            if let Message::Subscribed { subscription, .. } = &reply {
                                routes
                                    .subscriptions
                                    .entry(*subscription)
                                    .or_default()
                                    .push(events);
                            }
                            let _ = tx.send(reply);
                            None
                        }
                        Some(Pending::Register(tx, calls)) => {
                            if let Message::Registered { registration, .. } = &reply {
                                routes.registrations.insert(*registration, calls);
                            }
                            let _ = tx.send(reply);
                            None
                        }
                        Some(Pending::Progressive(tx)) => {
                            if progress {
                                routes
                                    .pending
                                    .insert(request, Pending::Progressive(tx.clone()));
                            }
                            Some((tx, reply))
                        }
                        None => None,
                    }
                };
                if let Some((tx, reply)) = progressive {
                    let _ = tx.send(reply).await;
                }
            }
        }
    };
    // Wake everyone still waiting: their senders drop with the routes.
    {
        let mut routes = shared.routes.lock();
        routes.pending.clear();
        routes.subscriptions.clear();
        routes.registrations.clear();
    }
    *shared.close_reason.lock() = Some(reason);
    shared.closed.cancel();
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
enum Reader {
    Ws(WsRead, Codec),
    Raw(tokio::net::tcp::OwnedReadHalf, BytesMut, Serializer),
}

impl Reader {
    /// Reads at least one message (a whole frame or read buffer) into `out`; the cause once
    /// the connection is closed or sent something undecodable.
    async fn read_batch(&mut self, out: &mut VecDeque<Message>) -> Result<(), String> {
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
