//! Mesh frames: what two nodes say to each other over a peer link, and their encoding.
//!
//! A frame is a MsgPack array whose first element names it (`["pub", ...]`), built from the
//! router's own [`Value`] so payloads (binary included) cross the mesh untouched, whatever
//! serializer the publisher and the subscribers use. One frame per WebSocket binary message.
//!
//! Compatibility: a receiver ignores trailing elements it does not know, so fields are only
//! ever appended. `hello` and `challenge` end with the sender's feature list; frame kinds an
//! older peer would not understand (the meta directory's `session±`, `subscriber±`; `fence`;
//! `kill`; forwarded meta events) are sent only on links whose peer announced the feature
//! ([`FEATURE_META`], [`FEATURE_FENCE`], [`FEATURE_KILL`], [`FEATURE_META_EVENTS`]).

use bytes::Bytes;

use crate::dealer::InvokePolicy;
use crate::kill::{KillOrder, KillTarget};
use crate::uri::MatchPolicy;
use crate::wire::{BinaryForm, Dict, Id, Payload, Value, ValueSeed, ValueSer, MAX_ID};

/// The WebSocket subprotocol peer links speak.
pub const SUBPROTOCOL: &str = "switchyard.mesh.v1";

/// The feature a node announces in `hello`/`challenge` when it understands the meta
/// directory frames (`session+`, `session-`, `subscriber+`, `subscriber-`).
pub const FEATURE_META: &str = "meta";

/// The feature of a node that answers `fence` with `fenced` (read-your-writes interest).
pub const FEATURE_FENCE: &str = "fence";

/// The feature of a node that carries out `kill` frames (the meta API's kills mesh-wide).
pub const FEATURE_KILL: &str = "kill";

/// The feature of a node that delivers forwarded meta events (`wamp.session.on_join`, ...)
/// to its clients and keeps them from its own router sessions.
pub const FEATURE_META_EVENTS: &str = "meta-events";

/// The features this node announces.
pub fn features() -> Vec<String> {
    [
        FEATURE_META,
        FEATURE_FENCE,
        FEATURE_KILL,
        FEATURE_META_EVENTS,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Who a session is, as the node it is connected to vouches (peers are authenticated by the
/// mesh secret, so their word is trusted): the receiving node authorizes forwarded calls and
/// registrations against it. Absent from older nodes, which is authorized as nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    pub authid: String,
    pub authrole: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Dialer → acceptor: who I am, and a fresh nonce for the acceptor to prove itself on.
    Hello {
        node: String,
        incarnation: u64,
        url: String,
        nonce: Bytes,
        /// What the dialer understands beyond the base protocol (absent from older nodes).
        features: Vec<String>,
    },
    /// Acceptor → dialer: who I am, and my nonce for the dialer to prove itself on.
    Challenge {
        node: String,
        incarnation: u64,
        url: String,
        nonce: Bytes,
        features: Vec<String>,
    },
    /// Dialer → acceptor: the dialer's proof over both nonces.
    Auth { proof: Bytes },
    /// Acceptor → dialer: the dialer is authenticated; here is the acceptor's own proof.
    Welcome { proof: Bytes },
    /// Either side: the handshake failed; `code` is machine-readable (`self`, `auth`, `name`).
    Refuse { code: String, reason: String },
    /// Heartbeat; any frame resets the receiver's timer.
    Ping,
    /// Gossip: peers the sender is linked to, as (node, URL to dial).
    Peers(Vec<(String, String)>),
    /// The sender's full interest snapshot has been sent on this link.
    SyncDone,
    SubAdd {
        realm: String,
        policy: MatchPolicy,
        topic: String,
        /// The sender's subscription ID and creation time (ISO 8601), for the meta API;
        /// absent from older nodes.
        meta: Option<(Id, String)>,
    },
    SubDel {
        realm: String,
        policy: MatchPolicy,
        topic: String,
    },
    RegAdd {
        realm: String,
        registration: Id,
        callee: Id,
        policy: MatchPolicy,
        procedure: String,
        invoke: InvokePolicy,
        created_ms: u64,
        /// The callee's identity (appended; absent from older nodes).
        by: Option<Principal>,
    },
    RegDel {
        realm: String,
        registration: Id,
        callee: Id,
    },
    /// A local session of the sender joined the realm (meta directory; not sent for
    /// router-internal and `trusted` sessions, which the meta API hides).
    SessionAdd {
        realm: String,
        session: Id,
        authid: String,
        authrole: String,
        authmethod: String,
        authprovider: String,
        /// As `wamp.session.get` shows it (`{"peer": ...}`).
        transport: Dict,
    },
    /// That session left.
    SessionDel { realm: String, session: Id },
    /// A local session of the sender subscribed to the sender's subscription `subscription`
    /// (announced by `sub+` before).
    SubscriberAdd {
        realm: String,
        subscription: Id,
        session: Id,
    },
    SubscriberDel {
        realm: String,
        subscription: Id,
        session: Id,
    },
    Publish {
        realm: String,
        publication: Id,
        topic: String,
        options: Dict,
        publisher: Id,
        authid: String,
        authrole: String,
        payload: Payload,
    },
    /// A call for one of the receiver's callees. `proxy`/`request` identify it at the origin.
    Call {
        realm: String,
        proxy: Id,
        request: Id,
        registration: Id,
        callee: Id,
        procedure: String,
        details: Dict,
        payload: Payload,
        /// The caller's identity (appended; absent from older nodes).
        by: Option<Principal>,
    },
    Cancel {
        realm: String,
        proxy: Id,
        request: Id,
        mode: String,
        /// Why: `wamp.error.canceled`, or `wamp.error.timeout` when the caller's node timed
        /// the call out; the callee's INTERRUPT carries it.
        reason: String,
    },
    Result {
        realm: String,
        proxy: Id,
        request: Id,
        progress: bool,
        payload: Payload,
    },
    Error {
        realm: String,
        proxy: Id,
        request: Id,
        error: String,
        payload: Payload,
    },
    /// Asks the receiver to answer `fenced` once it has applied every frame sent before this
    /// one (read-your-writes interest; [`FEATURE_FENCE`]).
    Fence { seq: u64 },
    /// Every frame sent before `fence {seq}` is applied here.
    Fenced { seq: u64 },
    /// Kill the receiver's sessions the order is for (the meta API's `wamp.session.kill*`,
    /// [`FEATURE_KILL`]); the receiver authorizes it against `by` and answers `killed`.
    Kill {
        realm: String,
        request: Id,
        order: KillOrder,
        by: Option<Principal>,
    },
    /// The sessions a `kill` ended, or why none was (an error URI).
    Killed {
        realm: String,
        request: Id,
        sessions: Vec<Id>,
        error: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("mesh frame is not valid MsgPack: {0}")]
    Decode(String),
    #[error("mesh frame: {0}")]
    Shape(String),
}

fn payload_values(p: &Payload) -> [Value; 2] {
    [
        Value::List(p.args().to_vec()),
        Value::Dict(p.kwargs().cloned().unwrap_or_default()),
    ]
}

fn policy_name(p: MatchPolicy) -> Value {
    Value::from(p.name())
}

impl Frame {
    pub fn encode(&self) -> Bytes {
        let s = |v: &str| Value::from(v);
        let id = |v: Id| Value::from(v);
        let mut items: Vec<Value> = match self {
            Frame::Hello {
                node,
                incarnation,
                url,
                nonce,
                features,
            } => vec![
                s("hello"),
                s(node),
                id(*incarnation),
                s(url),
                Value::Bytes(nonce.clone()),
                strings(features),
            ],
            Frame::Challenge {
                node,
                incarnation,
                url,
                nonce,
                features,
            } => vec![
                s("challenge"),
                s(node),
                id(*incarnation),
                s(url),
                Value::Bytes(nonce.clone()),
                strings(features),
            ],
            Frame::Auth { proof } => vec![s("auth"), Value::Bytes(proof.clone())],
            Frame::Welcome { proof } => vec![s("welcome"), Value::Bytes(proof.clone())],
            Frame::Refuse { code, reason } => vec![s("refuse"), s(code), s(reason)],
            Frame::Ping => vec![s("ping")],
            Frame::Peers(peers) => vec![
                s("peers"),
                Value::List(
                    peers
                        .iter()
                        .map(|(n, u)| Value::List(vec![s(n), s(u)]))
                        .collect(),
                ),
            ],
            Frame::SyncDone => vec![s("synced")],
            Frame::SubAdd {
                realm,
                policy,
                topic,
                meta,
            } => {
                let mut v = vec![s("sub+"), s(realm), policy_name(*policy), s(topic)];
                if let Some((subscription, created)) = meta {
                    v.extend([id(*subscription), s(created)]);
                }
                v
            }
            Frame::SubDel {
                realm,
                policy,
                topic,
            } => vec![s("sub-"), s(realm), policy_name(*policy), s(topic)],
            Frame::RegAdd {
                realm,
                registration,
                callee,
                policy,
                procedure,
                invoke,
                created_ms,
                by,
            } => {
                let mut v = vec![
                    s("reg+"),
                    s(realm),
                    id(*registration),
                    id(*callee),
                    policy_name(*policy),
                    s(procedure),
                    s(invoke.name()),
                    id(*created_ms),
                ];
                push_principal(&mut v, by);
                v
            }
            Frame::RegDel {
                realm,
                registration,
                callee,
            } => vec![s("reg-"), s(realm), id(*registration), id(*callee)],
            Frame::SessionAdd {
                realm,
                session,
                authid,
                authrole,
                authmethod,
                authprovider,
                transport,
            } => vec![
                s("session+"),
                s(realm),
                id(*session),
                s(authid),
                s(authrole),
                s(authmethod),
                s(authprovider),
                Value::Dict(transport.clone()),
            ],
            Frame::SessionDel { realm, session } => {
                vec![s("session-"), s(realm), id(*session)]
            }
            Frame::SubscriberAdd {
                realm,
                subscription,
                session,
            } => vec![s("subscriber+"), s(realm), id(*subscription), id(*session)],
            Frame::SubscriberDel {
                realm,
                subscription,
                session,
            } => vec![s("subscriber-"), s(realm), id(*subscription), id(*session)],
            Frame::Publish {
                realm,
                publication,
                topic,
                options,
                publisher,
                authid,
                authrole,
                payload,
            } => {
                let mut v = vec![
                    s("pub"),
                    s(realm),
                    id(*publication),
                    s(topic),
                    Value::Dict(options.clone()),
                    id(*publisher),
                    s(authid),
                    s(authrole),
                ];
                v.extend(payload_values(payload));
                v
            }
            Frame::Call {
                realm,
                proxy,
                request,
                registration,
                callee,
                procedure,
                details,
                payload,
                by,
            } => {
                let mut v = vec![
                    s("call"),
                    s(realm),
                    id(*proxy),
                    id(*request),
                    id(*registration),
                    id(*callee),
                    s(procedure),
                    Value::Dict(details.clone()),
                ];
                v.extend(payload_values(payload));
                push_principal(&mut v, by);
                v
            }
            Frame::Cancel {
                realm,
                proxy,
                request,
                mode,
                reason,
            } => vec![
                s("cancel"),
                s(realm),
                id(*proxy),
                id(*request),
                s(mode),
                s(reason),
            ],
            Frame::Result {
                realm,
                proxy,
                request,
                progress,
                payload,
            } => {
                let mut v = vec![
                    s("result"),
                    s(realm),
                    id(*proxy),
                    id(*request),
                    Value::Bool(*progress),
                ];
                v.extend(payload_values(payload));
                v
            }
            Frame::Error {
                realm,
                proxy,
                request,
                error,
                payload,
            } => {
                let mut v = vec![s("error"), s(realm), id(*proxy), id(*request), s(error)];
                v.extend(payload_values(payload));
                v
            }
            Frame::Fence { seq } => vec![s("fence"), id(*seq)],
            Frame::Fenced { seq } => vec![s("fenced"), id(*seq)],
            Frame::Kill {
                realm,
                request,
                order,
                by,
            } => {
                let (kind, value) = match &order.target {
                    KillTarget::Session(x) => ("session", id(*x)),
                    KillTarget::Authid(x) => ("authid", s(x)),
                    KillTarget::Authrole(x) => ("authrole", s(x)),
                    KillTarget::All => ("all", Value::Null),
                };
                let message = order.message.as_deref().map_or(Value::Null, s);
                let mut v = vec![s("kill"), s(realm), id(*request), s(kind), value];
                v.extend([s(&order.reason), message, id(order.except.unwrap_or(0))]);
                push_principal(&mut v, by);
                v
            }
            Frame::Killed {
                realm,
                request,
                sessions,
                error,
            } => vec![
                s("killed"),
                s(realm),
                id(*request),
                Value::List(sessions.iter().map(|x| id(*x)).collect()),
                error.as_deref().map_or(Value::Null, s),
            ],
        };
        items.shrink_to_fit();
        let value = Value::List(items);
        let bytes = rmp_serde::to_vec(&ValueSer(&value, BinaryForm::Native))
            .expect("a Value always encodes to MsgPack");
        Bytes::from(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        use serde::de::DeserializeSeed;
        let mut de = rmp_serde::Deserializer::new(bytes);
        let value = ValueSeed(BinaryForm::Native)
            .deserialize(&mut de)
            .map_err(|e| FrameError::Decode(e.to_string()))?;
        let Value::List(items) = value else {
            return Err(FrameError::Shape("not an array".into()));
        };
        let mut c = Cursor {
            items: items.into_iter(),
        };
        let tag = c.string()?;
        let frame = match tag.as_str() {
            "hello" => Frame::Hello {
                node: c.string()?,
                incarnation: c.id()?,
                url: c.string()?,
                nonce: c.bytes()?,
                features: c.features()?,
            },
            "challenge" => Frame::Challenge {
                node: c.string()?,
                incarnation: c.id()?,
                url: c.string()?,
                nonce: c.bytes()?,
                features: c.features()?,
            },
            "auth" => Frame::Auth { proof: c.bytes()? },
            "welcome" => Frame::Welcome { proof: c.bytes()? },
            "refuse" => Frame::Refuse {
                code: c.string()?,
                reason: c.string()?,
            },
            "ping" => Frame::Ping,
            "peers" => {
                let Value::List(list) = c.next()? else {
                    return Err(FrameError::Shape("peers: not a list".into()));
                };
                let mut peers = Vec::with_capacity(list.len());
                for p in list {
                    let mut pc = Cursor {
                        items: match p {
                            Value::List(l) => l.into_iter(),
                            _ => return Err(FrameError::Shape("peers: bad entry".into())),
                        },
                    };
                    peers.push((pc.string()?, pc.string()?));
                }
                Frame::Peers(peers)
            }
            "synced" => Frame::SyncDone,
            "sub+" => Frame::SubAdd {
                realm: c.string()?,
                policy: c.policy()?,
                topic: c.string()?,
                meta: match c.items.next() {
                    None => None,
                    Some(v) => Some((wamp_id(v, "subscription")?, c.string()?)),
                },
            },
            "sub-" => Frame::SubDel {
                realm: c.string()?,
                policy: c.policy()?,
                topic: c.string()?,
            },
            "reg+" => Frame::RegAdd {
                realm: c.string()?,
                registration: c.id()?,
                callee: c.id()?,
                policy: c.policy()?,
                procedure: c.string()?,
                invoke: InvokePolicy::from_option(Some(&c.next()?))
                    .map_err(|e| FrameError::Shape(e.message))?,
                created_ms: c.id()?,
                by: c.principal()?,
            },
            "reg-" => Frame::RegDel {
                realm: c.string()?,
                registration: c.id()?,
                callee: c.id()?,
            },
            "session+" => Frame::SessionAdd {
                realm: c.string()?,
                session: c.wamp_id("session")?,
                authid: c.string()?,
                authrole: c.string()?,
                authmethod: c.string()?,
                authprovider: c.string()?,
                transport: c.dict()?,
            },
            "session-" => Frame::SessionDel {
                realm: c.string()?,
                session: c.wamp_id("session")?,
            },
            "subscriber+" => Frame::SubscriberAdd {
                realm: c.string()?,
                subscription: c.wamp_id("subscription")?,
                session: c.wamp_id("session")?,
            },
            "subscriber-" => Frame::SubscriberDel {
                realm: c.string()?,
                subscription: c.wamp_id("subscription")?,
                session: c.wamp_id("session")?,
            },
            "pub" => Frame::Publish {
                realm: c.string()?,
                publication: c.id()?,
                topic: c.string()?,
                options: c.dict()?,
                publisher: c.id()?,
                authid: c.string()?,
                authrole: c.string()?,
                payload: c.payload()?,
            },
            "call" => Frame::Call {
                realm: c.string()?,
                proxy: c.id()?,
                request: c.id()?,
                registration: c.id()?,
                callee: c.id()?,
                procedure: c.string()?,
                details: c.dict()?,
                payload: c.payload()?,
                by: c.principal()?,
            },
            "cancel" => Frame::Cancel {
                realm: c.string()?,
                proxy: c.id()?,
                request: c.id()?,
                mode: c.string()?,
                reason: c.string()?,
            },
            "result" => Frame::Result {
                realm: c.string()?,
                proxy: c.id()?,
                request: c.id()?,
                progress: matches!(c.next()?, Value::Bool(true)),
                payload: c.payload()?,
            },
            "error" => Frame::Error {
                realm: c.string()?,
                proxy: c.id()?,
                request: c.id()?,
                error: c.string()?,
                payload: c.payload()?,
            },
            "fence" => Frame::Fence { seq: c.id()? },
            "fenced" => Frame::Fenced { seq: c.id()? },
            "kill" => Frame::Kill {
                realm: c.string()?,
                request: c.id()?,
                order: KillOrder {
                    target: c.kill_target()?,
                    reason: c.string()?,
                    message: c.optional_string()?,
                    except: Some(c.id()?).filter(|x| *x != 0),
                },
                by: c.principal()?,
            },
            "killed" => Frame::Killed {
                realm: c.string()?,
                request: c.id()?,
                sessions: match c.next()? {
                    Value::List(l) => l
                        .into_iter()
                        .map(|v| wamp_id(v, "killed session"))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(FrameError::Shape("killed: not a list".into())),
                },
                error: c.optional_string()?,
            },
            other => return Err(FrameError::Shape(format!("unknown frame '{other}'"))),
        };
        Ok(frame)
    }
}

fn push_principal(v: &mut Vec<Value>, by: &Option<Principal>) {
    if let Some(p) = by {
        v.push(Value::from(p.authid.as_str()));
        v.push(Value::from(p.authrole.as_str()));
    }
}

fn strings(v: &[String]) -> Value {
    Value::List(v.iter().map(|x| Value::from(x.as_str())).collect())
}

/// A WAMP ID: an integer in [1, 2^53].
fn wamp_id(v: Value, what: &str) -> Result<Id, FrameError> {
    match v.as_u64() {
        Some(id) if (1..=MAX_ID).contains(&id) => Ok(id),
        Some(n) => Err(FrameError::Shape(format!(
            "{what} must be an ID in [1, 2^53], got {n}"
        ))),
        None => Err(FrameError::Shape(format!(
            "{what} must be an ID in [1, 2^53], got {}",
            v.type_name()
        ))),
    }
}

struct Cursor {
    items: std::vec::IntoIter<Value>,
}

impl Cursor {
    fn next(&mut self) -> Result<Value, FrameError> {
        self.items
            .next()
            .ok_or_else(|| FrameError::Shape("too few elements".into()))
    }
    fn string(&mut self) -> Result<String, FrameError> {
        match self.next()? {
            Value::String(s) => Ok(s),
            v => Err(FrameError::Shape(format!(
                "expected a string, got {}",
                v.type_name()
            ))),
        }
    }
    fn id(&mut self) -> Result<u64, FrameError> {
        self.next()?
            .as_u64()
            .ok_or_else(|| FrameError::Shape("expected an unsigned integer".into()))
    }
    fn wamp_id(&mut self, what: &str) -> Result<Id, FrameError> {
        wamp_id(self.next()?, what)
    }
    /// A trailing feature list; absent (an older peer) means none.
    fn features(&mut self) -> Result<Vec<String>, FrameError> {
        match self.items.next() {
            None => Ok(Vec::new()),
            Some(Value::List(l)) => l
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(FrameError::Shape("features: not a list of strings".into())),
                })
                .collect(),
            Some(_) => Err(FrameError::Shape("features: not a list".into())),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, FrameError> {
        match self.next()? {
            Value::Bytes(b) => Ok(b),
            _ => Err(FrameError::Shape("expected bytes".into())),
        }
    }
    fn dict(&mut self) -> Result<Dict, FrameError> {
        match self.next()? {
            Value::Dict(d) => Ok(d),
            _ => Err(FrameError::Shape("expected a dict".into())),
        }
    }
    fn policy(&mut self) -> Result<MatchPolicy, FrameError> {
        let s = self.string()?;
        MatchPolicy::from_option(Some(&s))
            .ok_or_else(|| FrameError::Shape(format!("bad match policy '{s}'")))
    }
    fn optional_string(&mut self) -> Result<Option<String>, FrameError> {
        match self.next()? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            v => Err(FrameError::Shape(format!(
                "expected a string or nil, got {}",
                v.type_name()
            ))),
        }
    }
    fn kill_target(&mut self) -> Result<KillTarget, FrameError> {
        let kind = self.string()?;
        Ok(match kind.as_str() {
            "session" => KillTarget::Session(self.wamp_id("session")?),
            "authid" => KillTarget::Authid(self.string()?),
            "authrole" => KillTarget::Authrole(self.string()?),
            "all" => {
                self.next()?;
                KillTarget::All
            }
            _ => return Err(FrameError::Shape("kill: bad target".into())),
        })
    }
    /// A trailing (authid, authrole); absent (an older peer) means unknown.
    fn principal(&mut self) -> Result<Option<Principal>, FrameError> {
        if self.items.len() == 0 {
            return Ok(None);
        }
        Ok(Some(Principal {
            authid: self.string()?,
            authrole: self.string()?,
        }))
    }
    fn payload(&mut self) -> Result<Payload, FrameError> {
        let args = match self.next()? {
            Value::List(l) => l,
            _ => return Err(FrameError::Shape("expected payload args".into())),
        };
        Ok(Payload::new(args, self.dict()?))
    }
}

#[cfg(test)]
mod tests;
