//! The per-connection WAMP state machine, independent of the transport.
//!
//! ```text
//!  AwaitHello --HELLO--> (auth) --Accept--> Established --GOODBYE--> AwaitHello
//!       |                  |                     |
//!       |               Challenge            second HELLO, bad message
//!       |                  v                     v
//!       |             Challenged --AUTHENTICATE--> Established / ABORT
//!       +-- anything else: ABORT wamp.error.protocol_violation, close
//! ```
//!
//! A transport feeds decoded messages to [`Connection::handle`] and stops reading when it
//! answers [`Flow::Close`]; replies go out through the session's [`Link`]. In-process sessions
//! ([`local`]) use the very same state machine, with a link that carries decoded messages.
//!
//! This module holds the state machine and the session's own messages (GOODBYE, ABORT);
//! `handshake` takes HELLO to WELCOME; an established session's messages go to one handler
//! per message in the module of its role: `publisher` (PUBLISH), `subscriber` (SUBSCRIBE,
//! UNSUBSCRIBE), `caller` (CALL, CANCEL), `callee` (REGISTER, UNREGISTER, YIELD, ERROR), which
//! see the session through `established::Established`.

mod callee;
mod caller;
mod established;
mod handshake;
pub mod local;
mod publisher;
mod subscriber;

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::{AuthDecision, Authenticator, PendingAuth};
use crate::context::Context;
use crate::logsafe::Trunc;
use crate::metrics::RealmMessages;
use crate::outbound::Closed;
use crate::realm::Realm;
use crate::session::{Link, PeerFeatures, SessionHandle};
use crate::uri::errors;
use crate::wire::{code, Dict, Id, Message};
use established::Established;

/// Whether the transport keeps reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop reading; the link is closed (after flushing a final ABORT or GOODBYE).
    Close,
}

struct Joined {
    realm: Arc<Realm>,
    /// Where the session's messages are counted: its realm's counters, resolved at join
    /// (`None` for the router's own sessions, whose messages are not traffic worth counting).
    messages: Option<Arc<RealmMessages>>,
    session: SessionHandle,
    subscriptions: HashSet<Id>,
    registrations: HashSet<Id>,
    /// The router said GOODBYE (shutdown, kill) and waits for the peer's reply.
    goodbye_sent: bool,
}

enum State {
    AwaitHello,
    Challenged {
        realm: Arc<Realm>,
        features: PeerFeatures,
        pending: Box<dyn PendingAuth>,
        /// The ID chosen at HELLO (WAMP-CRA's challenge names it), used if accepted.
        session: Id,
    },
    /// Waiting for a deferred authentication decision (see [`Connection::deferred`]).
    Deciding {
        realm: Arc<Realm>,
        features: PeerFeatures,
        session: Id,
        /// Whether the client already answered a CHALLENGE.
        answered: bool,
    },
    Established(Box<Joined>),
    Closed,
}

/// One transport connection's WAMP session state.
pub struct Connection {
    ctx: Context,
    link: Link,
    transport: String,
    state: State,
    /// In-process connections may use the reserved `wamp.` namespace.
    internal: bool,
    /// How HELLOs on this connection authenticate: its listener's (Crossbar configures auth
    /// per transport), else the router's.
    authenticator: Arc<dyn Authenticator>,
    /// A deferred authentication decision the transport awaits ([`Connection::deferred`]).
    deferred: Option<tokio::sync::oneshot::Receiver<AuthDecision>>,
}

impl Connection {
    pub fn new(ctx: Context, link: Link, transport: impl Into<String>) -> Self {
        Connection {
            authenticator: ctx.authenticator().clone(),
            ctx,
            link,
            transport: transport.into(),
            state: State::AwaitHello,
            internal: false,
            deferred: None,
        }
    }

    /// Authenticates this connection's HELLOs with `authenticator` instead of the router's.
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    /// An in-process connection; `trusted` ones (router code) may use `wamp.` URIs and skip
    /// authorization, others are checked like any client.
    pub(crate) fn new_internal(ctx: Context, link: Link, trusted: bool) -> Self {
        Connection {
            authenticator: ctx.authenticator().clone(),
            ctx,
            link,
            transport: "local".into(),
            state: State::AwaitHello,
            internal: trusted,
            deferred: None,
        }
    }

    /// The joined session, if any.
    pub fn session(&self) -> Option<&SessionHandle> {
        match &self.state {
            State::Established(j) => Some(&j.session),
            _ => None,
        }
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    fn send(&self, msg: Message) {
        let _ = self.link.send(msg);
    }

    /// Sends a final message, closes the link behind it and leaves the realm.
    fn close_with(&mut self, msg: Message) -> Flow {
        self.link.send_and_close(msg);
        self.leave();
        self.state = State::Closed;
        Flow::Close
    }

    /// Answers a protocol violation: ABORT with the reason, log, close.
    pub fn protocol_violation(&mut self, text: impl Into<String>) -> Flow {
        let text = text.into();
        tracing::info!(transport = %self.transport, session = ?self.session().map(|s| s.id()), "protocol violation: {}", Trunc(&text));
        self.close_with(Message::abort(errors::PROTOCOL_VIOLATION, text))
    }

    /// Aborts the connection with any reason (oversize message, auth failure...).
    pub fn abort(&mut self, reason: &str, text: impl Into<String>) -> Flow {
        self.close_with(Message::abort(reason, text))
    }

    /// The router is going away: say GOODBYE and wait for the peer's (see `goodbye_timeout`).
    /// Connections without a session are closed at once.
    pub fn begin_goodbye(&mut self, reason: &str) -> Flow {
        self.say_goodbye(Message::Goodbye {
            details: Dict::new(),
            reason: reason.to_owned(),
        })
    }

    /// Where a kill of the joined session is requested (`None` before it joins).
    pub fn kill_switch(&self) -> Option<Arc<crate::session::KillSwitch>> {
        self.session().map(|s| s.kill_switch())
    }

    /// Sends the router's `goodbye` (a shutdown's, a kill's) and waits for the peer's reply
    /// (the transport bounds the wait with `goodbye_timeout`).
    pub fn say_goodbye(&mut self, goodbye: Message) -> Flow {
        match &mut self.state {
            State::Established(j) if !j.goodbye_sent => {
                j.goodbye_sent = true;
                let _ = self.link.send(goodbye);
                Flow::Continue
            }
            State::Established(_) => Flow::Continue,
            _ => {
                self.state = State::Closed;
                self.link.close(Closed::Normal, true);
                Flow::Close
            }
        }
    }

    /// The transport is gone (or the router gives up on it): clean up the session's state.
    pub fn transport_closed(&mut self) {
        self.leave();
        self.state = State::Closed;
        self.link.close(Closed::Normal, false);
    }

    fn leave(&mut self) {
        if let State::Established(j) = std::mem::replace(&mut self.state, State::AwaitHello) {
            tracing::debug!(
                session = j.session.id(),
                realm = j.realm.name(),
                "session left"
            );
            j.realm
                .leave(j.session.id(), j.subscriptions, j.registrations);
        }
    }

    /// Handles one message from the peer.
    pub fn handle(&mut self, msg: Message) -> Flow {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitHello => match msg {
                Message::Hello { realm, details } => self.hello(realm, details),
                other => self.protocol_violation(format!("{} received before HELLO", other.name())),
            },
            State::Challenged {
                realm,
                features,
                pending,
                session,
            } => match msg {
                Message::Authenticate { signature, extra } => {
                    let decision = pending.authenticate(&signature, &extra);
                    self.decide(realm, features, decision, session, true)
                }
                other => self.protocol_violation(format!(
                    "{} received instead of AUTHENTICATE",
                    other.name()
                )),
            },
            State::Deciding { .. } => self.protocol_violation(format!(
                "{} received while authentication is in progress",
                msg.name()
            )),
            State::Established(joined) => {
                if let Some(counters) = &joined.messages {
                    counters.message(msg.code());
                }
                self.state = State::Established(joined);
                self.established(msg)
            }
            State::Closed => Flow::Close,
        }
    }

    /// Whether an authentication decision is being awaited; the transport then also waits on
    /// [`Connection::deferred`] and hands its result to [`Connection::resolve_deferred`].
    pub fn has_deferred(&self) -> bool {
        self.deferred.is_some()
    }

    /// The deferred authentication decision (pending forever if there is none).
    pub async fn deferred(&mut self) -> AuthDecision {
        match self.deferred.as_mut() {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                AuthDecision::deny(
                    errors::AUTHENTICATION_FAILED,
                    "the authenticator did not answer",
                )
            }),
            None => std::future::pending().await,
        }
    }

    /// Applies a deferred decision (WELCOME, CHALLENGE or ABORT).
    pub fn resolve_deferred(&mut self, decision: AuthDecision) -> Flow {
        self.deferred = None;
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Deciding {
                realm,
                features,
                session,
                answered,
            } => self.decide(realm, features, decision, session, answered),
            other => {
                self.state = other;
                Flow::Continue
            }
        }
    }

    /// A message on an established session: each role's messages go to their handler
    /// (publisher, subscriber, caller, callee); the session's own (GOODBYE, ABORT, and what
    /// a client may not send) are handled here.
    fn established(&mut self, msg: Message) -> Flow {
        let State::Established(joined) = &mut self.state else {
            unreachable!("checked by handle")
        };
        let mut s = Established {
            ctx: &self.ctx,
            internal: self.internal,
            joined,
        };
        match msg {
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => publisher::publish(&s, request, options, topic, payload),
            Message::Subscribe {
                request,
                options,
                topic,
            } => subscriber::subscribe(&mut s, request, &options, &topic),
            Message::Unsubscribe {
                request,
                subscription,
            } => subscriber::unsubscribe(&mut s, request, subscription),
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => caller::call(&s, request, options, procedure, payload),
            Message::Cancel { request, options } => caller::cancel(&s, request, &options),
            Message::Register {
                request,
                options,
                procedure,
            } => callee::register(&mut s, request, &options, &procedure),
            Message::Unregister {
                request,
                registration,
            } => callee::unregister(&mut s, request, registration),
            Message::Yield {
                request,
                options,
                payload,
            } => callee::yield_result(&s, request, &options, payload),
            Message::Error {
                request_type: code::INVOCATION,
                request,
                error,
                payload,
                ..
            } => callee::invocation_error(&s, request, error, payload),
            other => return self.session_message(other),
        }
        Flow::Continue
    }

    /// GOODBYE and ABORT on an established session, and what a client may not send there.
    fn session_message(&mut self, msg: Message) -> Flow {
        let State::Established(j) = &mut self.state else {
            unreachable!("checked by handle")
        };
        match msg {
            Message::Error { request_type, .. } => self.protocol_violation(format!(
                "ERROR for message type {request_type}: clients only send ERROR for INVOCATION"
            )),
            Message::Goodbye { .. } if j.goodbye_sent => {
                // The peer's reply to our GOODBYE: done.
                self.leave();
                self.state = State::Closed;
                self.link.close(Closed::Normal, true);
                Flow::Close
            }
            Message::Goodbye { reason, .. } => {
                tracing::debug!(
                    session = j.session.id(),
                    "GOODBYE from peer: {}",
                    Trunc(&reason)
                );
                j.session.send(Message::Goodbye {
                    details: Dict::new(),
                    reason: errors::GOODBYE_AND_OUT.into(),
                });
                // The transport may carry a new session after this (HELLO again).
                self.leave();
                self.state = State::AwaitHello;
                Flow::Continue
            }
            Message::Abort { reason, .. } => {
                tracing::debug!(
                    session = j.session.id(),
                    "ABORT from peer: {}",
                    Trunc(&reason)
                );
                self.leave();
                self.state = State::Closed;
                self.link.close(Closed::Normal, false);
                Flow::Close
            }
            Message::Hello { .. } => {
                self.protocol_violation("HELLO received on an established session")
            }
            other => self.protocol_violation(format!(
                "{} is not a message a client sends to a router",
                other.name()
            )),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.leave();
    }
}
