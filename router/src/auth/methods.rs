//! Authentication as one transport configures it (Crossbar's `auth` block): which methods it
//! accepts and with which principals.
//!
//! The client's `authmethods` are tried in its order; the first one the transport configures
//! decides. A transport without any `auth` block admits anonymous clients as role `anonymous`,
//! as Crossbar does. No acceptable method: ABORT `wamp.error.no_auth_method` (Crossbar's URI).

use std::sync::Arc;

use super::cryptosign::Cryptosign;
use super::dynamic::DynamicAuth;
use super::ticket::Ticket;
use super::wampcra::WampCra;
use super::{random_authid, AuthDecision, Authenticator, Hello, Identity};
use crate::uri::errors;

/// WAMP-Anonymous as a transport configures it (`auth.anonymous`).
#[derive(Clone, Debug)]
pub struct AnonymousConfig {
    pub role: String,
    /// A fixed authid for every anonymous session; `None` gives each a random one. The
    /// client's own authid is ignored, as Crossbar ignores it.
    pub authid: Option<String>,
    /// A realm anonymous sessions are bound to, whatever HELLO asked for.
    pub realm: Option<String>,
}

impl Default for AnonymousConfig {
    fn default() -> Self {
        AnonymousConfig {
            role: "anonymous".into(),
            authid: None,
            realm: None,
        }
    }
}

/// The methods one transport (or one WebSocket path) accepts.
#[derive(Clone, Debug, Default)]
pub struct TransportAuth {
    pub anonymous: Option<AnonymousConfig>,
    pub ticket: Option<Ticket>,
    pub wampcra: Option<WampCra>,
    pub cryptosign: Option<Cryptosign>,
    /// Methods decided by a WAMP procedure (`type: dynamic`), instead of the static ones.
    pub dynamic: Vec<Arc<DynamicAuth>>,
}

impl TransportAuth {
    fn is_unconfigured(&self) -> bool {
        self.anonymous.is_none()
            && self.ticket.is_none()
            && self.wampcra.is_none()
            && self.cryptosign.is_none()
            && self.dynamic.is_empty()
    }

    fn anonymous(config: &AnonymousConfig) -> AuthDecision {
        AuthDecision::Accept(Identity {
            authid: config.authid.clone().unwrap_or_else(random_authid),
            authrole: config.role.clone(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            realm: config.realm.clone(),
        })
    }
}

impl Authenticator for TransportAuth {
    fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let offered = hello.authmethods();
        if self.is_unconfigured() {
            if offered.contains(&"anonymous") {
                return Self::anonymous(&AnonymousConfig::default());
            }
        } else {
            for method in &offered {
                let decision = match *method {
                    "anonymous" => self.anonymous.as_ref().map(Self::anonymous),
                    "ticket" => self.ticket.as_ref().map(|t| t.hello(hello)),
                    "wampcra" => self.wampcra.as_ref().map(|c| c.hello(hello)),
                    "cryptosign" => self.cryptosign.as_ref().map(|c| c.hello(hello)),
                    _ => None,
                }
                .or_else(|| {
                    self.dynamic
                        .iter()
                        .find(|d| d.method_name() == *method)
                        .map(|d| d.hello(hello))
                });
                if let Some(d) = decision {
                    return d;
                }
            }
        }
        AuthDecision::deny(
            errors::NO_AUTH_METHOD,
            format!(
                "cannot authenticate using any of the offered authmethods {:?}",
                offered
            ),
        )
    }
}
