//! A WAMP client over WebSocket (`ws://host:port/path`, or `wss://` with
//! [`ClientOptions::tls`]) or RawSocket (`tcp://host:port`), with any serializer.
//! `switchyard bench` drives routers with it; it speaks plain WAMP, so it works against any
//! router (switchyard, Crossbar, others).
//!
//! One task reads, decodes and dispatches what arrives (no channel hop in between): replies
//! to the pending request they answer, EVENTs to their subscription's channel, INVOCATIONs and
//! INTERRUPTs to their registration's channel. A subscription's channel is installed by the
//! reader itself when SUBSCRIBED arrives, so no EVENT that follows can be missed. One writer
//! task drains a bounded channel of encoded messages and writes them in batches.
//!
//! A client joins anonymously unless [`ClientOptions::auth`] names an authid and a method:
//! WAMP-CRA (the CHALLENGE answered with `base64(HMAC-SHA256(key, challenge))`, the key being
//! the secret, or autobahn's `derive_key` of it when the challenge carries a salt) or ticket.
//! Secrets never appear in `Debug` output or logs.
//!
//! Inside (this file: [`Client`], its shared state, [`ClientError`]): `options.rs` (how to
//! reach and join a router, credentials and the CHALLENGE answer), `transport.rs` (dialing,
//! the writer tasks, the reader), `join.rs` (HELLO → WELCOME), `requests.rs` (request/reply
//! bookkeeping; publish, call, cancel, leave), `subscriber.rs` and `callee.rs` (SUBSCRIBE and
//! REGISTER, and what their channels receive), `dispatch.rs` (the reader task).

mod callee;
mod dispatch;
mod join;
mod options;
mod requests;
mod subscriber;
mod transport;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::{Codec, Dict, Id, Message, Value};

pub use callee::CalleeMessage;
pub use options::{AuthMethod, ClientAuth, ClientOptions};
pub use subscriber::Event;

use requests::Routes;

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

/// What every clone of a [`Client`] and the reader task share.
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

impl Client {
    /// Connects, joins the realm and starts the reader and writer tasks.
    pub async fn connect(opts: &ClientOptions) -> Result<Client, ClientError> {
        let (io, codec) = transport::dial(opts).await?;
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let abort = CancellationToken::new();
        let mut reader = transport::start(io, codec, out_rx, &abort);
        let mut inbox = VecDeque::new();
        let joined = join::join(opts, codec, &mut reader, &mut inbox, &out_tx).await?;
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes::default()),
            next_request: AtomicU64::new(1),
            out: out_tx,
            codec,
            timeout: opts.timeout,
            session: joined.session,
            welcome: joined.welcome,
            challenged: joined.challenged,
            leaving: Default::default(),
            closed: CancellationToken::new(),
            abort,
            close_reason: Mutex::new(None),
        });
        tokio::spawn(dispatch::dispatch(reader, inbox, shared.clone()));
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

    /// Whether the session was established through a CHALLENGE the client answered (a
    /// client that insists on authentication refuses a WELCOME without one).
    pub fn was_challenged(&self) -> bool {
        self.shared.challenged
    }

    /// The role the router gave this session.
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
}

fn encode(codec: Codec, msg: &Message) -> Result<Bytes, ClientError> {
    codec
        .serializer
        .encode(msg)
        .map_err(|e| ClientError::Protocol(e.to_string()))
}
