//! HELLO to WELCOME: checking HELLO, authenticating (Accept, Deny, Challenge, or a deferred
//! decision), and joining the realm with WELCOME, which announces exactly the roles and
//! features the router implements.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Connection, Flow, Joined, State};
use crate::admission::hello_sizes;
use crate::auth::{AuthDecision, Hello, Identity};
use crate::id::random_id;
use crate::logsafe::Trunc;
use crate::realm::Realm;
use crate::session::{PeerFeatures, Session, SessionInfo};
use crate::uri::{self, errors, MatchPolicy};
use crate::wire::{Dict, Id, Message, Value};

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
    /// Joins an in-process session directly, skipping HELLO and authentication.
    pub(crate) fn join_internal(
        &mut self,
        realm: &str,
        roles: Dict,
        identity: Identity,
    ) -> Result<(), String> {
        let realm = self
            .ctx
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

    pub(super) fn hello(&mut self, realm_name: String, details: Dict) -> Flow {
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
        let Some(realm) = self.ctx.realm(&realm_name) else {
            tracing::info!(transport = %self.transport, "HELLO for unknown realm '{}'", Trunc(&realm_name));
            self.ctx.metrics().auth_failure(errors::NO_SUCH_REALM);
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
            host: &self.ctx,
            transport: &self.transport,
        });
        self.decide(realm, features, decision, session, false)
    }

    pub(super) fn decide(
        &mut self,
        realm: Arc<Realm>,
        features: PeerFeatures,
        decision: AuthDecision,
        session: Id,
        answered: bool,
    ) -> Flow {
        match decision {
            AuthDecision::Accept(identity) => self.accept(realm, features, identity, session),
            AuthDecision::Deny { reason, message } => {
                // The message names no secret, so it may be logged as it is sent.
                tracing::info!(transport = %self.transport, realm = realm.name(), "authentication refused: {}: {}", Trunc(&reason), Trunc(&message));
                self.ctx.metrics().auth_failure(&reason);
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

    /// An accepted identity joins its realm (the one it is bound to, else the one HELLO
    /// asked for), if that realm knows its role.
    fn accept(
        &mut self,
        realm: Arc<Realm>,
        features: PeerFeatures,
        identity: Identity,
        session: Id,
    ) -> Flow {
        // A principal bound to another realm joins that one (as Crossbar does).
        let realm = match &identity.realm {
            Some(name) if name != realm.name() => match self.ctx.realm(name) {
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
            .ctx
            .authorizer()
            .has_role(realm.name(), &identity.authrole)
        {
            tracing::info!(transport = %self.transport, realm = realm.name(), authid = %Trunc(&identity.authid),
                authrole = %Trunc(&identity.authrole), "authentication refused: no such role");
            self.ctx.metrics().auth_failure(errors::NO_SUCH_ROLE);
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
        // The router's own sessions (meta API) are not traffic worth counting.
        let messages = (!self.internal).then(|| self.ctx.metrics().realm_messages(realm.name()));
        self.state = State::Established(Box::new(Joined {
            realm,
            messages,
            session,
            subscriptions: HashSet::new(),
            registrations: HashSet::new(),
            goodbye_sent: false,
        }));
        Flow::Continue
    }
}
