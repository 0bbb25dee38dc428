//! WAMP-Ticket with static principals: HELLO names an authid, the router sends an empty
//! CHALLENGE, the client answers with its ticket in the clear (use TLS).

use std::collections::HashMap;

use super::{secrets_equal, AuthDecision, Hello, Identity, PendingAuth};
use crate::uri::errors;
use crate::wire::Dict;

/// One ticket principal (`auth.ticket.principals.<authid>` in Crossbar's config).
#[derive(Clone)]
pub struct TicketPrincipal {
    pub ticket: String,
    pub role: String,
    pub realm: Option<String>,
}

impl std::fmt::Debug for TicketPrincipal {
    // The ticket is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketPrincipal")
            .field("role", &self.role)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Ticket {
    pub principals: HashMap<String, TicketPrincipal>,
}

struct PendingTicket {
    expected: String,
    identity: Identity,
}

impl Ticket {
    pub fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let Some(authid) = hello.authid() else {
            return AuthDecision::deny(
                errors::NO_SUCH_PRINCIPAL,
                "WAMP-Ticket needs an authid in HELLO",
            );
        };
        let Some(p) = self.principals.get(authid) else {
            return AuthDecision::deny(
                errors::NO_SUCH_PRINCIPAL,
                format!("no principal with authid \"{authid}\" exists"),
            );
        };
        AuthDecision::Challenge {
            method: "ticket".into(),
            extra: Dict::new(),
            pending: Box::new(PendingTicket {
                expected: p.ticket.clone(),
                identity: Identity {
                    authid: authid.to_owned(),
                    authrole: p.role.clone(),
                    authmethod: "ticket".into(),
                    authprovider: "static".into(),
                    realm: p.realm.clone(),
                },
            }),
        }
    }
}

impl PendingAuth for PendingTicket {
    fn authenticate(self: Box<Self>, signature: &str, _extra: &Dict) -> AuthDecision {
        if secrets_equal(signature.as_bytes(), self.expected.as_bytes()) {
            AuthDecision::Accept(self.identity)
        } else {
            AuthDecision::deny(
                errors::AUTHENTICATION_FAILED,
                "ticket in static WAMP-Ticket authentication is invalid",
            )
        }
    }
}
