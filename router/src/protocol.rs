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
//! use the very same state machine, with a link that carries decoded messages.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::{Action, AuthDecision, Identity, PendingAuth};
use crate::id::random_id;
use crate::outbound::Closed;
use crate::realm::Realm;
use crate::session::{Link, PeerFeatures, Session, SessionHandle, SessionInfo};
use crate::uri::{self, errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Message, Value};
use crate::{Router, WampError};

/// Whether the transport keeps reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop reading; the link is closed (after flushing a final ABORT or GOODBYE).
    Close,
}

struct Joined {
    realm: Arc<Realm>,
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
    },
    Established(Box<Joined>),
    Closed,
}

/// One transport connection's WAMP session state.
pub struct Connection {
    router: Router,
    link: Link,
    transport: String,
    state: State,
    /// In-process connections may use the reserved `wamp.` namespace.
    internal: bool,
}

fn features_dict(names: &[&str]) -> Value {
    let mut f = Dict::new();
    for n in names {
        f.insert((*n).to_owned(), Value::Bool(true));
    }
    let mut role = Dict::new();
    role.insert("features".into(), Value::Dict(f));
    Value::Dict(role)
}

/// The roles and features WELCOME announces: exactly what the broker and dealer implement.
fn router_roles() -> Value {
    let mut roles = Dict::new();
    roles.insert(
        "broker".into(),
        features_dict(&[
            "publisher_exclusion",
            "publisher_identification",
            "subscriber_blackwhite_listing",
            "pattern_based_subscription",
        ]),
    );
    roles.insert(
        "dealer".into(),
        features_dict(&[
            "progressive_call_results",
            "call_canceling",
            "call_timeout",
            "caller_identification",
            "pattern_based_registration",
            "shared_registration",
        ]),
    );
    Value::Dict(roles)
}

impl Connection {
    pub fn new(router: Router, link: Link, transport: impl Into<String>) -> Self {
        Connection {
            router,
            link,
            transport: transport.into(),
            state: State::AwaitHello,
            internal: false,
        }
    }

    /// An in-process connection (trusted router code): may use `wamp.` URIs.
    pub(crate) fn new_internal(router: Router, link: Link) -> Self {
        Connection {
            router,
            link,
            transport: "local".into(),
            state: State::AwaitHello,
            internal: true,
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
        let size = 64;
        match &self.link {
            Link::Remote { serializer, queue } => match serializer.encode(&msg) {
                Ok(b) => queue.push_and_close(b, size),
                Err(_) => queue.close(Closed::Normal, true),
            },
            Link::Local { queue } => queue.push_and_close(msg, size),
            Link::Mesh(_) => {}
        }
        self.leave();
        self.state = State::Closed;
        Flow::Close
    }

    /// Answers a protocol violation: ABORT with the reason, log, close.
    pub fn protocol_violation(&mut self, text: impl Into<String>) -> Flow {
        let text = text.into();
        tracing::info!(transport = %self.transport, session = ?self.session().map(|s| s.id()), "protocol violation: {text}");
        self.close_with(Message::abort(errors::PROTOCOL_VIOLATION, text))
    }

    /// Aborts the connection with any reason (oversize message, auth failure...).
    pub fn abort(&mut self, reason: &str, text: impl Into<String>) -> Flow {
        self.close_with(Message::abort(reason, text))
    }

    /// The router is going away: say GOODBYE and wait for the peer's (see `goodbye_timeout`).
    /// Connections without a session are closed at once.
    pub fn begin_goodbye(&mut self, reason: &str) -> Flow {
        match &mut self.state {
            State::Established(j) if !j.goodbye_sent => {
                j.goodbye_sent = true;
                let msg = Message::Goodbye {
                    details: Dict::new(),
                    reason: reason.to_owned(),
                };
                let _ = self.link.send(msg);
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
            } => match msg {
                Message::Authenticate { signature, extra } => {
                    let decision = pending.authenticate(&signature, &extra);
                    self.decide(realm, features, decision, true)
                }
                other => self.protocol_violation(format!(
                    "{} received instead of AUTHENTICATE",
                    other.name()
                )),
            },
            State::Established(joined) => {
                self.state = State::Established(joined);
                self.established(msg)
            }
            State::Closed => Flow::Close,
        }
    }

    /// Joins an in-process session directly, skipping HELLO and authentication.
    pub(crate) fn join_internal(
        &mut self,
        realm: &str,
        roles: Dict,
        identity: Identity,
    ) -> Result<(), String> {
        let realm = self
            .router
            .realm(realm)
            .ok_or_else(|| format!("no realm named '{realm}'"))?;
        let mut details = Dict::new();
        details.insert("roles".into(), Value::Dict(roles));
        self.welcome(realm, PeerFeatures::from_hello(&details), identity);
        Ok(())
    }

    fn hello(&mut self, realm_name: String, details: Dict) -> Flow {
        if !uri::is_valid(&realm_name, uri::UriCheck::Loose, MatchPolicy::Exact) {
            return self.abort(
                errors::INVALID_URI,
                format!("invalid realm URI '{realm_name}'"),
            );
        }
        if !matches!(details.get("roles"), Some(Value::Dict(r)) if !r.is_empty()) {
            return self.protocol_violation("HELLO.Details.roles must be a non-empty dict");
        }
        let Some(realm) = self.router.realm(&realm_name) else {
            tracing::info!(transport = %self.transport, "HELLO for unknown realm '{realm_name}'");
            return self.abort(
                errors::NO_SUCH_REALM,
                format!("no realm named '{realm_name}'"),
            );
        };
        let features = PeerFeatures::from_hello(&details);
        let decision = self.router.authenticator().hello(&realm_name, &details);
        self.decide(realm, features, decision, false)
    }

    fn decide(
        &mut self,
        realm: Arc<Realm>,
        features: PeerFeatures,
        decision: AuthDecision,
        answered: bool,
    ) -> Flow {
        match decision {
            AuthDecision::Accept(identity) => self.welcome(realm, features, identity),
            AuthDecision::Deny { reason, message } => {
                tracing::info!(transport = %self.transport, realm = realm.name(), "authentication refused: {reason}");
                self.abort(&reason, message)
            }
            AuthDecision::Challenge { .. } if answered => self.abort(
                errors::AUTHENTICATION_FAILED,
                "authentication did not complete",
            ),
            AuthDecision::Challenge {
                method,
                extra,
                pending,
            } => {
                self.send(Message::Challenge { method, extra });
                self.state = State::Challenged {
                    realm,
                    features,
                    pending,
                };
                Flow::Continue
            }
        }
    }

    fn welcome(&mut self, realm: Arc<Realm>, features: PeerFeatures, who: Identity) -> Flow {
        let id = random_id();
        let info = SessionInfo {
            id,
            realm: realm.name().to_owned(),
            authid: who.authid,
            authrole: who.authrole,
            authmethod: who.authmethod,
            authprovider: who.authprovider,
            internal: self.internal,
            transport: self.transport.clone(),
        };
        let mut details = Dict::new();
        details.insert("realm".into(), Value::from(realm.name()));
        details.insert("authid".into(), Value::from(info.authid.as_str()));
        details.insert("authrole".into(), Value::from(info.authrole.as_str()));
        details.insert("authmethod".into(), Value::from(info.authmethod.as_str()));
        details.insert(
            "authprovider".into(),
            Value::from(info.authprovider.as_str()),
        );
        details.insert("roles".into(), router_roles());
        details.insert(
            "agent".into(),
            Value::from(concat!("switchyard-", env!("CARGO_PKG_VERSION"))),
        );
        let session = Session::new(info, features, self.link.clone());
        // WELCOME is queued before the session becomes visible, so it precedes any EVENT.
        self.send(Message::Welcome {
            session: id,
            details,
        });
        realm.join(session.clone());
        tracing::debug!(session = id, realm = realm.name(), transport = %self.transport, "session joined");
        self.state = State::Established(Box::new(Joined {
            realm,
            session,
            subscriptions: HashSet::new(),
            registrations: HashSet::new(),
            goodbye_sent: false,
        }));
        Flow::Continue
    }

    fn established(&mut self, msg: Message) -> Flow {
        let State::Established(j) = &mut self.state else {
            unreachable!("checked by handle")
        };
        let internal = self.internal;
        let authorized = |j: &Joined, uri: &str, action: Action| {
            internal
                || self.router.authorizer().authorize(
                    j.realm.name(),
                    &j.session.info.authrole,
                    uri,
                    action,
                )
        };
        let check = j.realm.config.uri_check;
        match msg {
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => {
                let ack = matches!(options.get("acknowledge"), Some(Value::Bool(true)));
                let result = if !uri::is_valid(&topic, check, MatchPolicy::Exact) {
                    Err(WampError::new(
                        errors::INVALID_URI,
                        format!("invalid topic URI '{topic}'"),
                    ))
                } else if uri::is_reserved(&topic) && !internal {
                    Err(WampError::new(
                        errors::INVALID_URI,
                        format!("topic '{topic}' is in the reserved wamp. namespace"),
                    ))
                } else if !authorized(j, &topic, Action::Publish) {
                    Err(WampError::new(
                        errors::NOT_AUTHORIZED,
                        format!("not authorized to publish to '{topic}'"),
                    ))
                } else {
                    j.realm
                        .broker
                        .publish(&j.session, &topic, &options, payload)
                };
                match result {
                    Ok(publication) if ack => j.session.send(Message::Published {
                        request,
                        publication,
                    }),
                    Ok(_) => {}
                    Err(e) if ack => j.session.send(e.to_message(code::PUBLISH, request)),
                    Err(e) => tracing::debug!(
                        session = j.session.id(),
                        "unacknowledged publish failed: {e}"
                    ),
                }
            }
            Message::Subscribe {
                request,
                options,
                topic,
            } => {
                let policy = MatchPolicy::from_option(options.get("match").and_then(Value::as_str));
                let result = match policy {
                    None => Err(WampError::new(
                        errors::INVALID_ARGUMENT,
                        "option 'match' must be exact, prefix or wildcard",
                    )),
                    Some(p) if !uri::is_valid(&topic, check, p) => Err(WampError::new(
                        errors::INVALID_URI,
                        format!("invalid topic URI '{topic}' for match '{}'", p.name()),
                    )),
                    Some(_) if !authorized(j, &topic, Action::Subscribe) => Err(WampError::new(
                        errors::NOT_AUTHORIZED,
                        format!("not authorized to subscribe to '{topic}'"),
                    )),
                    Some(p) => Ok(j.realm.broker.subscribe(&j.session, request, p, &topic)),
                };
                match result {
                    Ok(subscription) => {
                        j.subscriptions.insert(subscription);
                    }
                    Err(e) => j.session.send(e.to_message(code::SUBSCRIBE, request)),
                }
            }
            Message::Unsubscribe {
                request,
                subscription,
            } => {
                let result = if j.subscriptions.remove(&subscription) {
                    j.realm.broker.unsubscribe(j.session.id(), subscription)
                } else {
                    Err(WampError::new(
                        errors::NO_SUCH_SUBSCRIPTION,
                        format!("not subscribed to {subscription}"),
                    ))
                };
                match result {
                    Ok(()) => j.session.send(Message::Unsubscribed {
                        request,
                        details: None,
                    }),
                    Err(e) => j.session.send(e.to_message(code::UNSUBSCRIBE, request)),
                }
            }
            Message::Register {
                request,
                options,
                procedure,
            } => {
                let policy = MatchPolicy::from_option(options.get("match").and_then(Value::as_str));
                let result = match policy {
                    None => Err(WampError::new(
                        errors::INVALID_ARGUMENT,
                        "option 'match' must be exact, prefix or wildcard",
                    )),
                    Some(p) if !uri::is_valid(&procedure, check, p) => Err(WampError::new(
                        errors::INVALID_URI,
                        format!(
                            "invalid procedure URI '{procedure}' for match '{}'",
                            p.name()
                        ),
                    )),
                    Some(_) if uri::is_reserved(&procedure) && !internal => Err(WampError::new(
                        errors::INVALID_URI,
                        format!("procedure '{procedure}' is in the reserved wamp. namespace"),
                    )),
                    Some(_) if !authorized(j, &procedure, Action::Register) => Err(WampError::new(
                        errors::NOT_AUTHORIZED,
                        format!("not authorized to register '{procedure}'"),
                    )),
                    Some(p) => j
                        .realm
                        .dealer
                        .register(&j.session, request, p, &procedure, &options),
                };
                match result {
                    Ok(registration) => {
                        j.registrations.insert(registration);
                    }
                    Err(e) => j.session.send(e.to_message(code::REGISTER, request)),
                }
            }
            Message::Unregister {
                request,
                registration,
            } => {
                let result = if j.registrations.remove(&registration) {
                    j.realm.dealer.unregister(j.session.id(), registration)
                } else {
                    Err(WampError::new(
                        errors::NO_SUCH_REGISTRATION,
                        format!("not registered as {registration}"),
                    ))
                };
                match result {
                    Ok(()) => j.session.send(Message::Unregistered {
                        request,
                        details: None,
                    }),
                    Err(e) => j.session.send(e.to_message(code::UNREGISTER, request)),
                }
            }
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => {
                let result = if !uri::is_valid(&procedure, check, MatchPolicy::Exact) {
                    Err(WampError::new(
                        errors::INVALID_URI,
                        format!("invalid procedure URI '{procedure}'"),
                    ))
                } else if !authorized(j, &procedure, Action::Call) {
                    Err(WampError::new(
                        errors::NOT_AUTHORIZED,
                        format!("not authorized to call '{procedure}'"),
                    ))
                } else {
                    j.realm
                        .dealer
                        .call(&j.session, request, &options, &procedure, payload)
                };
                if let Err(e) = result {
                    j.session.send(e.to_message(code::CALL, request));
                }
            }
            Message::Cancel { request, options } => {
                if let Err(e) = j.realm.dealer.cancel(j.session.id(), request, &options) {
                    j.session.send(e.to_message(code::CANCEL, request));
                }
            }
            Message::Yield {
                request,
                options,
                payload,
            } => {
                j.realm
                    .dealer
                    .yield_result(j.session.id(), request, &options, payload);
            }
            Message::Error {
                request_type: code::INVOCATION,
                request,
                error,
                payload,
                ..
            } => {
                j.realm
                    .dealer
                    .invocation_error(j.session.id(), request, error, payload);
            }
            Message::Error { request_type, .. } => {
                return self.protocol_violation(format!(
                    "ERROR for message type {request_type}: clients only send ERROR for INVOCATION"
                ))
            }
            Message::Goodbye { .. } if j.goodbye_sent => {
                // The peer's reply to our GOODBYE: done.
                self.leave();
                self.state = State::Closed;
                self.link.close(Closed::Normal, true);
                return Flow::Close;
            }
            Message::Goodbye { reason, .. } => {
                tracing::debug!(session = j.session.id(), "GOODBYE from peer: {reason}");
                j.session.send(Message::Goodbye {
                    details: Dict::new(),
                    reason: errors::GOODBYE_AND_OUT.into(),
                });
                // The transport may carry a new session after this (HELLO again).
                self.leave();
                self.state = State::AwaitHello;
            }
            Message::Abort { reason, .. } => {
                tracing::debug!(session = j.session.id(), "ABORT from peer: {reason}");
                self.leave();
                self.state = State::Closed;
                self.link.close(Closed::Normal, false);
                return Flow::Close;
            }
            Message::Hello { .. } => {
                return self.protocol_violation("HELLO received on an established session")
            }
            other => {
                return self.protocol_violation(format!(
                    "{} is not a message a client sends to a router",
                    other.name()
                ))
            }
        }
        Flow::Continue
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.leave();
    }
}
