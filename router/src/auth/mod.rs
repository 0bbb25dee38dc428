//! Authentication and authorization: the interfaces the session state machine calls, and the
//! implementations Crossbar configures.
//!
//! As in Crossbar, authenticating a HELLO answers Accept, Deny or Challenge; a challenge is
//! answered by AUTHENTICATE and then Accept or Deny. Authorization answers whether a session
//! may perform an action on a URI, and whether its identity is disclosed while doing it.
//! switchyard's defaults accept anonymous clients and allow everything; configured methods and
//! roles plug in behind the same traits.
//!
//! - [`methods`]: the per-transport method selection ([`methods::TransportAuth`]);
//! - [`ticket`], [`wampcra`], [`cryptosign`]: one module per challenge-response method;
//! - [`dynamic`]: Crossbar's dynamic authenticators (a WAMP procedure decides);
//! - [`roles`]: Crossbar's static roles and permissions ([`roles::RoleAuthorizer`]).

pub mod cryptosign;
pub mod dynamic;
pub mod methods;
pub mod roles;
pub mod ticket;
pub mod wampcra;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use subtle::ConstantTimeEq;

use crate::uri::MatchPolicy;
use crate::wire::{Dict, Id, Payload, Value};

/// Who a session is once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
    /// A realm the principal is bound to, which replaces the one HELLO asked for (Crossbar's
    /// principals may carry a `realm`); `None` keeps the requested realm.
    pub realm: Option<String>,
}

/// The answer to a HELLO or an AUTHENTICATE.
pub enum AuthDecision {
    Accept(Identity),
    /// Refused: the ABORT reason URI and a message for the client (no secrets in it).
    Deny {
        reason: String,
        message: String,
    },
    /// Ask the client: CHALLENGE with `method` and `extra`; the pending state checks the answer.
    Challenge {
        method: String,
        extra: Dict,
        pending: Box<dyn PendingAuth>,
    },
    /// The decision takes a while (a dynamic authenticator is being called): the connection
    /// waits for it without reading further messages' effects, then applies it.
    Defer(tokio::sync::oneshot::Receiver<AuthDecision>),
}

impl AuthDecision {
    pub fn deny(reason: &str, message: impl Into<String>) -> AuthDecision {
        AuthDecision::Deny {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// An authentication waiting for the client's AUTHENTICATE.
pub trait PendingAuth: Send {
    /// Checks the signature. Returning another `Challenge` is treated as a denial.
    fn authenticate(self: Box<Self>, signature: &str, extra: &Dict) -> AuthDecision;
}

/// What an authenticator sees of a HELLO.
pub struct Hello<'a> {
    pub realm: &'a str,
    pub details: &'a Dict,
    /// The ID the session gets if it is accepted (WAMP-CRA puts it in its challenge).
    pub session: Id,
    /// What the router lends authenticators (dynamic authenticators call WAMP procedures).
    pub host: &'a dyn AuthHost,
    /// The transport, as the meta API describes it (`websocket 127.0.0.1:5555 wamp.2.json`).
    pub transport: &'a str,
}

impl Hello<'_> {
    pub fn authid(&self) -> Option<&str> {
        self.details.get("authid").and_then(Value::as_str)
    }

    /// The methods the client offers, in its order of preference; `["anonymous"]` if none.
    pub fn authmethods(&self) -> Vec<&str> {
        match self.details.get("authmethods").and_then(Value::as_list) {
            Some(l) if !l.is_empty() => l.iter().filter_map(Value::as_str).collect(),
            _ => vec!["anonymous"],
        }
    }

    pub fn authextra(&self) -> Option<&Dict> {
        self.details.get("authextra").and_then(Value::as_dict)
    }
}

/// What authenticators may ask of the router while they decide: dynamic authenticators call
/// a WAMP procedure from a trusted in-process session. The layer that runs in-process clients
/// implements it (`service`), so authentication needs nothing above this module.
pub trait AuthHost: Send + Sync {
    /// A trusted in-process session (role `trusted`) in `realm`, as `authid`, that calls
    /// procedures.
    fn trusted_caller(&self, realm: &str, authid: &str)
        -> Result<Arc<dyn ProcedureCaller>, String>;

    /// How long a session may take to authenticate (bounds an authenticator's calls).
    fn handshake_timeout(&self) -> Duration;
}

/// Calls WAMP procedures, for an authenticator.
pub trait ProcedureCaller: Send + Sync {
    /// Calls `procedure`; the answer arrives when the callee answers (unbounded: the caller
    /// bounds the wait).
    fn call_procedure<'a>(
        &'a self,
        procedure: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, CallAnswer>;
}

/// How a [`ProcedureCaller`]'s call ended.
#[derive(Debug)]
pub enum CallAnswer {
    Result(Payload),
    /// A WAMP error: its URI and payload.
    Error(String, Payload),
    /// The session or the router went away before answering.
    Gone,
}

/// Decides how a HELLO is authenticated.
pub trait Authenticator: Send + Sync {
    fn hello(&self, hello: &Hello<'_>) -> AuthDecision;
}

/// Accepts every client as `anonymous` (switchyard's embedded default), keeping the authid
/// the client asked for, else a random one as Crossbar assigns.
#[derive(Clone, Debug)]
pub struct Anonymous {
    pub authrole: String,
}

impl Default for Anonymous {
    fn default() -> Self {
        Anonymous {
            authrole: "anonymous".into(),
        }
    }
}

impl Authenticator for Anonymous {
    fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let authid = hello
            .authid()
            .map(str::to_owned)
            .unwrap_or_else(random_authid);
        AuthDecision::Accept(Identity {
            authid,
            authrole: self.authrole.clone(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            realm: None,
        })
    }
}

/// An authid like Crossbar's anonymous ones: `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`.
pub fn random_authid() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"3479ACEFHJLMNPRTUVWXY";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(29);
    for i in 0..24 {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

/// Compares two secrets in time independent of their contents. Both are hashed first so that
/// not even their lengths leak through timing.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.as_slice().ct_eq(hb.as_slice()).into()
}

/// An action a session performs on a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
    Call,
    Register,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Call => "call",
            Action::Register => "register",
        }
    }
}

/// The answer to an authorization question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Authorization {
    pub allow: bool,
    /// Disclose the caller (CALL) or publisher (PUBLISH) even if it did not ask to be.
    pub disclose: bool,
}

impl Authorization {
    pub const ALLOW: Authorization = Authorization {
        allow: true,
        disclose: false,
    };
    pub const DENY: Authorization = Authorization {
        allow: false,
        disclose: false,
    };
}

/// Decides whether a session may perform an action on a URI.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, realm: &str, authrole: &str, uri: &str, action: Action) -> Authorization;

    /// Like [`Authorizer::authorize`], for authorizers whose rules depend on who the session
    /// is, not only its role (a build worker may register under its own name only). The
    /// router calls this one.
    fn authorize_session(
        &self,
        realm: &str,
        authrole: &str,
        _authid: &str,
        uri: &str,
        action: Action,
    ) -> Authorization {
        self.authorize(realm, authrole, uri, action)
    }

    /// Like [`Authorizer::authorize_session`], for SUBSCRIBE and REGISTER, which also name a
    /// match policy (a worker may register its own exact procedure names only, never a
    /// pattern). The router calls this one for those two actions; the mesh calls it for a
    /// peer's registrations, with the callee's identity as the peer reports it.
    fn authorize_match(
        &self,
        realm: &str,
        authrole: &str,
        authid: &str,
        uri: &str,
        action: Action,
        _policy: MatchPolicy,
    ) -> Authorization {
        self.authorize_session(realm, authrole, authid, uri, action)
    }

    /// Whether a session may join `realm` under `authrole` at all (Crossbar refuses a role the
    /// realm does not define with `wamp.error.no_such_role`).
    fn has_role(&self, _realm: &str, _authrole: &str) -> bool {
        true
    }
}

/// Allows everything (the embedded default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &str, _: &str, _: &str, _: Action) -> Authorization {
        Authorization::ALLOW
    }
}
