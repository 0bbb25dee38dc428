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

use crate::admission::{cap_error, disclosure, hello_sizes};
use crate::auth::{
    Action, AuthDecision, Authenticator, Authorization, Hello, Identity, PendingAuth,
};
use crate::cluster::ReplyHold;
use crate::id::random_id;
use crate::logsafe::Trunc;
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
    router: Router,
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

fn features_dict(names: &[&str]) -> Value {
    let mut f = Dict::new();
    for n in names {
        f.insert((*n).to_owned(), Value::Bool(true));
    }
    let mut role = Dict::new();
    role.insert("features".into(), Value::Dict(f));
    Value::Dict(role)
}

/// The roles and features WELCOME announces: exactly what the broker and dealer implement,
/// plus the meta APIs where the realm serves them.
fn router_roles(meta_api: bool, event_history: bool) -> Value {
    let mut broker = vec![
        "publisher_exclusion",
        "publisher_identification",
        "subscriber_blackwhite_listing",
        "pattern_based_subscription",
        "event_retention",
    ];
    let mut dealer = vec![
        "progressive_call_results",
        "call_canceling",
        "call_timeout",
        "caller_identification",
        "pattern_based_registration",
        "shared_registration",
    ];
    if meta_api && event_history {
        broker.push("event_history");
    }
    if meta_api {
        broker.extend(["session_meta_api", "subscription_meta_api"]);
        dealer.extend([
            "session_meta_api",
            "registration_meta_api",
            "testament_meta_api",
        ]);
    }
    let mut roles = Dict::new();
    roles.insert("broker".into(), features_dict(&broker));
    roles.insert("dealer".into(), features_dict(&dealer));
    Value::Dict(roles)
}

impl Connection {
    pub fn new(router: Router, link: Link, transport: impl Into<String>) -> Self {
        Connection {
            authenticator: router.authenticator().clone(),
            router,
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
    pub(crate) fn new_internal(router: Router, link: Link, trusted: bool) -> Self {
        Connection {
            authenticator: router.authenticator().clone(),
            router,
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
                // The router's own sessions (meta API) are not traffic worth counting.
                if !self.internal {
                    self.router
                        .metrics()
                        .message(joined.realm.name(), msg.name());
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
        self.welcome(
            realm,
            PeerFeatures::from_hello(&details),
            identity,
            random_id(),
        );
        Ok(())
    }

    fn hello(&mut self, realm_name: String, details: Dict) -> Flow {
        if let Err(text) = hello_sizes(&realm_name, &details) {
            tracing::info!(transport = %self.transport, "HELLO refused: {text}");
            return self.abort(errors::INVALID_ARGUMENT, text);
        }
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
            tracing::info!(transport = %self.transport, "HELLO for unknown realm '{}'", Trunc(&realm_name));
            self.router.metrics().auth_failure(errors::NO_SUCH_REALM);
            return self.abort(
                errors::NO_SUCH_REALM,
                format!("no realm named '{realm_name}'"),
            );
        };
        let features = PeerFeatures::from_hello(&details);
        let session = random_id();
        let decision = self.authenticator.hello(&Hello {
            realm: &realm_name,
            details: &details,
            session,
            router: &self.router,
            transport: &self.transport,
        });
        self.decide(realm, features, decision, session, false)
    }

    fn decide(
        &mut self,
        realm: Arc<Realm>,
        features: PeerFeatures,
        decision: AuthDecision,
        session: Id,
        answered: bool,
    ) -> Flow {
        match decision {
            AuthDecision::Accept(identity) => {
                // A principal bound to another realm joins that one (as Crossbar does).
                let realm = match &identity.realm {
                    Some(name) if name != realm.name() => match self.router.realm(name) {
                        Some(r) => r,
                        None => {
                            return self.abort(
                                errors::NO_SUCH_REALM,
                                format!("no realm named '{name}' (assigned by authentication)"),
                            )
                        }
                    },
                    _ => realm,
                };
                if !self
                    .router
                    .authorizer()
                    .has_role(realm.name(), &identity.authrole)
                {
                    tracing::info!(transport = %self.transport, realm = realm.name(), authid = %Trunc(&identity.authid),
                        authrole = %Trunc(&identity.authrole), "authentication refused: no such role");
                    self.router.metrics().auth_failure(errors::NO_SUCH_ROLE);
                    return self.abort(
                        errors::NO_SUCH_ROLE,
                        format!(
                            "realm '{}' has no role '{}'",
                            realm.name(),
                            identity.authrole
                        ),
                    );
                }
                tracing::debug!(transport = %self.transport, realm = realm.name(), authid = %Trunc(&identity.authid),
                    authmethod = %identity.authmethod, "authenticated");
                self.welcome(realm, features, identity, session)
            }
            AuthDecision::Deny { reason, message } => {
                // The message names no secret, so it may be logged as it is sent.
                tracing::info!(transport = %self.transport, realm = realm.name(), "authentication refused: {}: {}", Trunc(&reason), Trunc(&message));
                self.router.metrics().auth_failure(&reason);
                self.abort(&reason, message)
            }
            AuthDecision::Defer(rx) => {
                self.deferred = Some(rx);
                self.state = State::Deciding {
                    realm,
                    features,
                    session,
                    answered,
                };
                Flow::Continue
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
                    session,
                };
                Flow::Continue
            }
        }
    }

    fn welcome(
        &mut self,
        realm: Arc<Realm>,
        features: PeerFeatures,
        who: Identity,
        id: Id,
    ) -> Flow {
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
        details.insert(
            "roles".into(),
            router_roles(realm.meta_api_running(), realm.broker.has_history()),
        );
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
        let max_subs = self.router.limits().max_subscriptions_per_session;
        let max_regs = self.router.limits().max_registrations_per_session;
        let authorization = |j: &Joined, uri: &str, action: Action, policy: MatchPolicy| {
            if internal {
                return Authorization::ALLOW;
            }
            let a = self.router.authorizer().authorize_match(
                j.realm.name(),
                &j.session.info.authrole,
                &j.session.info.authid,
                uri,
                action,
                policy,
            );
            if !a.allow {
                tracing::debug!(session = j.session.id(), authrole = %Trunc(&j.session.info.authrole),
                    "not authorized to {} '{}'", action.name(), Trunc(uri));
            }
            a
        };
        let authorized = |j: &Joined, uri: &str, action: Action, policy: MatchPolicy| {
            authorization(j, uri, action, policy).allow
        };
        let check = j.realm.config.uri_check;
        match msg {
            Message::Publish {
                request,
                mut options,
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
                } else {
                    let auth = authorization(j, &topic, Action::Publish, MatchPolicy::Exact);
                    if !auth.allow {
                        Err(WampError::new(
                            errors::NOT_AUTHORIZED,
                            format!("not authorized to publish to '{topic}'"),
                        ))
                    } else {
                        let by_role = j.realm.config.disclosure_by_role && !internal;
                        disclosure(&mut options, by_role, auth, None);
                        j.realm
                            .broker
                            .publish(&j.session, &topic, &options, payload)
                    }
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
                // SUBSCRIBED waits for the mesh's peers to apply the change and to have its
                // meta events (cluster::ReplyHold).
                let hold = ReplyHold::begin(j.realm.cluster(), &j.session);
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
                    Some(p) if !authorized(j, &topic, Action::Subscribe, p) => Err(WampError::new(
                        errors::NOT_AUTHORIZED,
                        format!("not authorized to subscribe to '{topic}'"),
                    )),
                    Some(_) if !internal && j.subscriptions.len() >= max_subs => {
                        Err(cap_error("subscriptions", max_subs))
                    }
                    Some(p) => Ok(j.realm.broker.subscribe_tracked(
                        &j.session,
                        request,
                        p,
                        &topic,
                        matches!(options.get("get_retained"), Some(Value::Bool(true))),
                    )),
                };
                let ok = result.is_ok();
                match result {
                    Ok((subscription, created)) => {
                        j.subscriptions.insert(subscription);
                        j.realm.subscription_events(
                            &j.session,
                            subscription,
                            &topic,
                            true,
                            created,
                        );
                    }
                    Err(e) => j.session.send(e.to_message(code::SUBSCRIBE, request)),
                }
                hold.finish(ok);
            }
            Message::Unsubscribe {
                request,
                subscription,
            } => {
                let hold = ReplyHold::begin(j.realm.cluster(), &j.session);
                let result = if j.subscriptions.remove(&subscription) {
                    j.realm
                        .broker
                        .unsubscribe_tracked(j.session.id(), subscription)
                } else {
                    Err(WampError::new(
                        errors::NO_SUCH_SUBSCRIPTION,
                        format!("not subscribed to {subscription}"),
                    ))
                };
                let ok = result.is_ok();
                match result {
                    Ok((deleted, topic)) => {
                        j.session.send(Message::Unsubscribed {
                            request,
                            details: None,
                        });
                        j.realm.subscription_events(
                            &j.session,
                            subscription,
                            &topic,
                            false,
                            deleted,
                        );
                    }
                    Err(e) => j.session.send(e.to_message(code::UNSUBSCRIBE, request)),
                }
                hold.finish(ok);
            }
            Message::Register {
                request,
                options,
                procedure,
            } => {
                let hold = ReplyHold::begin(j.realm.cluster(), &j.session);
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
                    Some(p) if !authorized(j, &procedure, Action::Register, p) => {
                        Err(WampError::new(
                            errors::NOT_AUTHORIZED,
                            format!("not authorized to register '{procedure}'"),
                        ))
                    }
                    Some(_) if !internal && j.registrations.len() >= max_regs => {
                        Err(cap_error("registrations", max_regs))
                    }
                    Some(p) => j
                        .realm
                        .dealer
                        .register_tracked(&j.session, request, p, &procedure, &options),
                };
                let ok = result.is_ok();
                match result {
                    Ok((registration, created)) => {
                        j.registrations.insert(registration);
                        j.realm.registration_events(
                            &j.session,
                            registration,
                            &procedure,
                            true,
                            created,
                        );
                    }
                    Err(e) => j.session.send(e.to_message(code::REGISTER, request)),
                }
                hold.finish(ok);
            }
            Message::Unregister {
                request,
                registration,
            } => {
                let hold = ReplyHold::begin(j.realm.cluster(), &j.session);
                let result = if j.registrations.remove(&registration) {
                    j.realm
                        .dealer
                        .unregister_tracked(j.session.id(), registration)
                } else {
                    Err(WampError::new(
                        errors::NO_SUCH_REGISTRATION,
                        format!("not registered as {registration}"),
                    ))
                };
                let ok = result.is_ok();
                match result {
                    Ok((deleted, procedure)) => {
                        j.session.send(Message::Unregistered {
                            request,
                            details: None,
                        });
                        j.realm.registration_events(
                            &j.session,
                            registration,
                            &procedure,
                            false,
                            deleted,
                        );
                    }
                    Err(e) => j.session.send(e.to_message(code::UNREGISTER, request)),
                }
                hold.finish(ok);
            }
            Message::Call {
                request,
                mut options,
                procedure,
                payload,
            } => {
                let result = if !uri::is_valid(&procedure, check, MatchPolicy::Exact) {
                    Err(WampError::new(
                        errors::INVALID_URI,
                        format!("invalid procedure URI '{procedure}'"),
                    ))
                } else {
                    let auth = authorization(j, &procedure, Action::Call, MatchPolicy::Exact);
                    if !auth.allow {
                        Err(WampError::new(
                            errors::NOT_AUTHORIZED,
                            format!("not authorized to call '{procedure}'"),
                        ))
                    } else {
                        let by_role = j.realm.config.disclosure_by_role && !internal;
                        disclosure(&mut options, by_role, auth, Some(&procedure));
                        j.realm
                            .dealer
                            .call(&j.session, request, &options, &procedure, payload)
                    }
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
