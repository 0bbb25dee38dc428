//! What the router keeps of a joined session, and how messages reach it.
//!
//! A [`SessionHandle`] is shared by every structure that may send to the session (its
//! subscriptions, registrations, pending calls). Sending never blocks: it encodes for the
//! session's serializer (or hands the decoded message to an in-process session) and pushes to
//! the bounded outbound [`Queue`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::outbound::{Closed, Hold, Queue};
use crate::wire::{Dict, Id, Message, Serializer, Value, MAX_ID, SERIALIZER_COUNT};

/// Where a session's outgoing messages go.
#[derive(Clone)]
pub enum Link {
    /// A socket: messages are encoded with the negotiated serializer.
    Remote {
        serializer: Serializer,
        queue: Arc<Queue<Bytes>>,
    },
    /// An in-process session: decoded messages, no serialization at all.
    Local { queue: Arc<Queue<Message>> },
    /// A stand-in for a session on another mesh node (a remote callee, or the remote caller of
    /// a forwarded call): the mesh turns what is sent here into frames on the peer link.
    Mesh(Arc<dyn MeshSink>),
}

/// Where messages for a [`Link::Mesh`] stand-in go. Implemented by the mesh module; sending
/// must not block (it pushes to the peer link's bounded queue).
pub trait MeshSink: Send + Sync {
    fn send(&self, msg: Message) -> Result<(), Closed>;
}

/// The size an in-process message counts for against queue byte limits.
pub const LOCAL_MESSAGE_SIZE: usize = 256;

impl Link {
    /// Closes the link's queue (the connection's writer then ends the transport).
    pub fn close(&self, reason: Closed, flush_first: bool) {
        match self {
            Link::Remote { queue, .. } => queue.close(reason, flush_first),
            Link::Local { queue } => queue.close(reason, flush_first),
            // A stand-in has no queue of its own; the mesh removes it when its peer goes.
            Link::Mesh(_) => {}
        }
    }

    /// Holds back what is sent from now on until the [`Hold`] is dropped (a reply waiting for
    /// the mesh's peers, see [`crate::cluster::ReplyHold`]). A stand-in has nothing to hold.
    pub fn hold(&self) -> Option<Hold> {
        match self {
            Link::Remote { queue, .. } => Some(queue.hold()),
            Link::Local { queue } => Some(queue.hold()),
            Link::Mesh(_) => None,
        }
    }

    pub fn serializer(&self) -> Option<Serializer> {
        match self {
            Link::Remote { serializer, .. } => Some(*serializer),
            Link::Local { .. } | Link::Mesh(_) => None,
        }
    }

    /// Sends one message. Encoding failures (a value the serializer cannot carry) are logged
    /// and the message dropped; the session itself is unaffected.
    pub fn send(&self, msg: Message) -> Result<(), Closed> {
        match self {
            Link::Remote { serializer, queue } => match serializer.encode(&msg) {
                Ok(bytes) => {
                    let n = bytes.len();
                    queue.push(bytes, n)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a message that cannot be encoded");
                    Ok(())
                }
            },
            Link::Local { queue } => queue.push(msg, LOCAL_MESSAGE_SIZE),
            Link::Mesh(sink) => sink.send(msg),
        }
    }

    /// Sends a final message and closes the link behind it (the writer flushes it first).
    pub fn send_and_close(&self, msg: Message) {
        match self {
            Link::Remote { serializer, queue } => match serializer.encode(&msg) {
                Ok(b) => {
                    let n = b.len();
                    queue.push_and_close(b, n)
                }
                Err(_) => queue.close(Closed::Normal, true),
            },
            Link::Local { queue } => queue.push_and_close(msg, LOCAL_MESSAGE_SIZE),
            // A stand-in for a remote session: its own node ends it.
            Link::Mesh(_) => {}
        }
    }

    /// Sends a message that is shared by many receivers, encoding it at most once per
    /// serializer through `cache`.
    pub fn send_cached(&self, cache: &mut EncodeCache<'_>) -> Result<(), Closed> {
        match self {
            Link::Remote { serializer, queue } => match cache.bytes(*serializer) {
                Some(bytes) => {
                    let n = bytes.len();
                    queue.push(bytes, n)
                }
                None => Ok(()),
            },
            Link::Local { queue } => queue.push(cache.msg.clone(), LOCAL_MESSAGE_SIZE),
            Link::Mesh(sink) => sink.send(cache.msg.clone()),
        }
    }
}

/// Encodes one message lazily, once per serializer, for fan-out.
pub struct EncodeCache<'a> {
    msg: &'a Message,
    encoded: [Option<Option<Bytes>>; SERIALIZER_COUNT],
}

impl<'a> EncodeCache<'a> {
    pub fn new(msg: &'a Message) -> Self {
        EncodeCache {
            msg,
            encoded: Default::default(),
        }
    }

    fn bytes(&mut self, serializer: Serializer) -> Option<Bytes> {
        let msg = self.msg;
        self.encoded[serializer.index()]
            .get_or_insert_with(|| match serializer.encode(msg) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a message that cannot be encoded");
                    None
                }
            })
            .clone()
    }
}

/// Identity and authentication facts of a session, as WELCOME reported them.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: Id,
    pub realm: String,
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
    /// Router-internal sessions may publish and register under `wamp.`.
    pub internal: bool,
    /// `websocket`, `rawsocket` or `local`, with the peer address where there is one.
    pub transport: String,
}

impl SessionInfo {
    /// What `wamp.session.get` and `wamp.session.on_join` say about the session.
    pub fn details(&self) -> Value {
        session_details(
            self.id,
            &self.realm,
            [
                &self.authid,
                &self.authrole,
                &self.authmethod,
                &self.authprovider,
            ],
            transport_details(&self.transport),
        )
    }
}

/// The `transport` of a session's details.
pub fn transport_details(transport: &str) -> Dict {
    let mut t = Dict::new();
    t.insert("peer".into(), Value::from(transport));
    t
}

/// A session's details as the meta API shows them, for a session here or on another node
/// (whose node announced these facts).
pub fn session_details(
    id: Id,
    realm: &str,
    [authid, authrole, authmethod, authprovider]: [&str; 4],
    transport: Dict,
) -> Value {
    let mut d = Dict::new();
    d.insert("session".into(), Value::from(id));
    d.insert("realm".into(), Value::from(realm));
    d.insert("authid".into(), Value::from(authid));
    d.insert("authrole".into(), Value::from(authrole));
    d.insert("authmethod".into(), Value::from(authmethod));
    d.insert("authprovider".into(), Value::from(authprovider));
    d.insert("transport".into(), Value::Dict(transport));
    Value::Dict(d)
}

/// Advanced-profile features the client announced in HELLO that change what the router sends.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerFeatures {
    pub callee_call_canceling: bool,
}

impl PeerFeatures {
    pub fn from_hello(details: &Dict) -> Self {
        let feature = |role: &str, name: &str| {
            details
                .get("roles")
                .and_then(Value::as_dict)
                .and_then(|r| r.get(role))
                .and_then(Value::as_dict)
                .and_then(|r| r.get("features"))
                .and_then(Value::as_dict)
                .and_then(|f| f.get(name))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        PeerFeatures {
            callee_call_canceling: feature("callee", "call_canceling"),
        }
    }
}

/// A joined session as the broker and dealer see it.
pub struct Session {
    pub info: SessionInfo,
    pub features: PeerFeatures,
    pub link: Link,
    /// Router-issued request IDs (INVOCATION, INTERRUPT) for this session.
    next_request: AtomicU64,
    /// Publications made on the session's behalf when it goes away (testament meta API).
    testaments: parking_lot::Mutex<Vec<Testament>>,
    /// A kill asked for by the meta API, for the session's connection task to carry out.
    kill: Arc<KillSwitch>,
}

pub type SessionHandle = Arc<Session>;

/// A kill request handed from whoever kills a session to the task owning its connection,
/// which says GOODBYE and waits (bounded) for the peer's reply before closing.
#[derive(Default)]
pub struct KillSwitch {
    request: parking_lot::Mutex<Option<Message>>,
    notify: tokio::sync::Notify,
}

impl KillSwitch {
    /// Waits until a kill is requested; returns its GOODBYE (once).
    pub async fn requested(&self) -> Message {
        loop {
            if let Some(goodbye) = self.request.lock().take() {
                return goodbye;
            }
            self.notify.notified().await;
        }
    }

    fn request(&self, goodbye: Message) {
        *self.request.lock() = Some(goodbye);
        self.notify.notify_one();
    }
}

/// A publication to make when its session leaves (`wamp.session.add_testament`).
#[derive(Clone, Debug)]
pub struct Testament {
    pub topic: String,
    pub options: Dict,
    pub payload: crate::wire::Payload,
    /// `destroyed` or `detached`: switchyard has no session resumption, so both fire when the
    /// session leaves, as in Crossbar.
    pub scope: String,
}

impl Session {
    pub fn new(info: SessionInfo, features: PeerFeatures, link: Link) -> SessionHandle {
        Arc::new(Session {
            info,
            features,
            link,
            next_request: AtomicU64::new(0),
            testaments: parking_lot::Mutex::new(Vec::new()),
            kill: Arc::default(),
        })
    }

    pub fn add_testament(&self, t: Testament) {
        self.testaments.lock().push(t);
    }

    /// Drops the testaments of `scope`; returns how many there were.
    pub fn flush_testaments(&self, scope: &str) -> usize {
        let mut t = self.testaments.lock();
        let before = t.len();
        t.retain(|x| x.scope != scope);
        before - t.len()
    }

    pub(crate) fn take_testaments(&self) -> Vec<Testament> {
        std::mem::take(&mut *self.testaments.lock())
    }

    pub fn id(&self) -> Id {
        self.info.id
    }

    /// Whether this is a mesh stand-in for a session on another node (never announced to
    /// peers: only local interest propagates).
    pub fn is_mesh_proxy(&self) -> bool {
        matches!(self.link, Link::Mesh(_))
    }

    /// Sends to this session; a closed or slow session simply does not receive it (its
    /// connection task reports why and tears it down).
    pub fn send(&self, msg: Message) {
        let _ = self.link.send(msg);
    }

    pub fn send_cached(&self, cache: &mut EncodeCache<'_>) {
        let _ = self.link.send_cached(cache);
    }

    /// Ends the session from the router's side (`wamp.session.kill`): its connection task
    /// sends GOODBYE with `reason`, waits for the peer's GOODBYE (`goodbye_timeout`), then
    /// closes the transport and removes the session from the realm. An in-process session
    /// gets the GOODBYE and its queue closes behind it.
    pub fn kill(&self, reason: &str, message: Option<String>) {
        let mut details = Dict::new();
        if let Some(m) = message {
            details.insert("message".into(), Value::String(m));
        }
        let goodbye = Message::Goodbye {
            details,
            reason: reason.to_owned(),
        };
        match &self.link {
            Link::Remote { .. } => self.kill.request(goodbye),
            Link::Local { .. } | Link::Mesh(_) => self.link.send_and_close(goodbye),
        }
    }

    /// Where a kill of this session is requested (watched by its connection task).
    pub fn kill_switch(&self) -> Arc<KillSwitch> {
        self.kill.clone()
    }

    /// Router-internal and `trusted` sessions: hidden from the meta API and never killed by it
    /// (Crossbar's "restricted" sessions).
    pub fn is_restricted(&self) -> bool {
        self.info.internal || self.info.authrole == "trusted" || self.is_mesh_proxy()
    }

    /// The next router-side request ID for this session, wrapping within `[1, 2^53]`.
    pub fn next_request_id(&self) -> Id {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        n % MAX_ID + 1
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}
