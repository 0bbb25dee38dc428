//! Authentication and authorization interfaces.
//!
//! As in Crossbar, authenticating a HELLO answers Accept, Deny or Challenge; a challenge is
//! answered by AUTHENTICATE and then Accept or Deny. Authorization answers whether a session
//! may perform an action on a URI. switchyard's defaults accept anonymous clients and allow
//! everything; configured methods and roles plug in behind the same traits.

use crate::wire::{Dict, Value};

/// Who a session is once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
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
}

/// An authentication waiting for the client's AUTHENTICATE.
pub trait PendingAuth: Send {
    /// Checks the signature. Returning another `Challenge` is treated as a denial.
    fn authenticate(self: Box<Self>, signature: &str, extra: &Dict) -> AuthDecision;
}

/// Decides how a HELLO is authenticated.
pub trait Authenticator: Send + Sync {
    fn hello(&self, realm: &str, details: &Dict) -> AuthDecision;
}

/// Accepts every client as `anonymous`, with a random authid as Crossbar assigns one.
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
    fn hello(&self, _realm: &str, details: &Dict) -> AuthDecision {
        let authid = details
            .get("authid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(random_authid);
        AuthDecision::Accept(Identity {
            authid,
            authrole: self.authrole.clone(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
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

/// An action a session performs on a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
    Call,
    Register,
}

/// Decides whether a session may perform an action on a URI.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, realm: &str, authrole: &str, uri: &str, action: Action) -> bool;
}

/// Allows everything (the embedded default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &str, _: &str, _: &str, _: Action) -> bool {
        true
    }
}
