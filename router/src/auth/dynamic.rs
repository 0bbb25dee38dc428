//! Crossbar's dynamic authenticators: a WAMP procedure, registered by an ordinary client,
//! decides who a session is.
//!
//! The router calls `authenticator(realm, authid, details)` from a trusted in-process session
//! in the authenticator's realm (`details`: session, authmethod, authid, authextra, transport,
//! and `ticket` for WAMP-Ticket). The answer is a role (a string) or a principal dict: `role`,
//! and optionally `realm`, `authid`; WAMP-CRA principals add `secret` (and `salt`,
//! `iterations`, `keylen`), cryptosign principals `pubkey`. An error from the procedure refuses
//! the session with that error's URI. Calls run in their own task; the connection waits for
//! the answer as a deferred decision ([`AuthDecision::Defer`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::wampcra::{Salt, WampCraUser};
use super::{
    random_authid, AuthDecision, AuthHost, CallAnswer, Hello, Identity, PendingAuth,
    ProcedureCaller,
};
use crate::uri::errors;
use crate::wire::{Dict, Id, Payload, Value};

/// Which method a dynamic authenticator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamicMethod {
    Anonymous,
    Ticket,
    WampCra,
    Cryptosign,
}

impl DynamicMethod {
    fn name(self) -> &'static str {
        match self {
            DynamicMethod::Anonymous => "anonymous",
            DynamicMethod::Ticket => "ticket",
            DynamicMethod::WampCra => "wampcra",
            DynamicMethod::Cryptosign => "cryptosign",
        }
    }
}

/// One transport's dynamic authenticator for one method.
pub struct DynamicAuth {
    pub method: DynamicMethod,
    /// The procedure to call.
    pub procedure: String,
    /// Where the procedure is registered (`authenticator-realm`); default: the realm HELLO
    /// asked for.
    pub realm: Option<String>,
    /// One calling session per realm, made on first use.
    clients: Mutex<HashMap<String, Arc<dyn ProcedureCaller>>>,
}

impl std::fmt::Debug for DynamicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicAuth")
            .field("method", &self.method)
            .field("procedure", &self.procedure)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// Everything a call needs, owned (it runs in its own task).
struct Call {
    client: Arc<dyn ProcedureCaller>,
    procedure: String,
    realm: String,
    authid: Option<String>,
    details: Dict,
    method: DynamicMethod,
    timeout: Duration,
}

impl DynamicAuth {
    pub fn new(method: DynamicMethod, procedure: String, realm: Option<String>) -> DynamicAuth {
        DynamicAuth {
            method,
            procedure,
            realm,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The authmethod name this authenticator answers.
    pub fn method_name(&self) -> &'static str {
        self.method.name()
    }

    fn client(&self, host: &dyn AuthHost, realm: &str) -> Result<Arc<dyn ProcedureCaller>, String> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(realm) {
            return Ok(c.clone());
        }
        let c = host.trusted_caller(realm, "switchyard-authenticator")?;
        clients.insert(realm.to_owned(), c.clone());
        Ok(c)
    }

    pub fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let auth_realm = self.realm.as_deref().unwrap_or(hello.realm);
        let client = match self.client(hello.host, auth_realm) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(realm = auth_realm, "dynamic authenticator unavailable: {e}");
                return AuthDecision::deny(
                    errors::AUTHENTICATION_FAILED,
                    "the authenticator is not available",
                );
            }
        };
        let authid = match self.method {
            // Crossbar ignores the client's authid for anonymous sessions.
            DynamicMethod::Anonymous => Some(random_authid()),
            _ => hello.authid().map(str::to_owned),
        };
        let mut details = Dict::new();
        details.insert("session".into(), Value::from(hello.session));
        details.insert("authmethod".into(), Value::from(self.method.name()));
        if let Some(a) = &authid {
            details.insert("authid".into(), Value::from(a.as_str()));
        }
        if let Some(r) = hello.details.get("authrole") {
            details.insert("authrole".into(), r.clone());
        }
        details.insert(
            "authextra".into(),
            hello
                .authextra()
                .map_or(Value::Null, |e| Value::Dict(e.clone())),
        );
        let transport = crate::session::transport_details(hello.transport);
        details.insert("transport".into(), Value::Dict(transport));
        let call = Call {
            client,
            procedure: self.procedure.clone(),
            realm: hello.realm.to_owned(),
            authid,
            details,
            method: self.method,
            timeout: hello.host.handshake_timeout(),
        };
        match self.method {
            // The ticket arrives with AUTHENTICATE: challenge first, call then.
            DynamicMethod::Ticket => AuthDecision::Challenge {
                method: "ticket".into(),
                extra: Dict::new(),
                pending: Box::new(PendingDynamicTicket { call }),
            },
            DynamicMethod::Cryptosign => {
                if let Some(denied) = super::cryptosign::check_channel_binding(hello.authextra()) {
                    return denied;
                }
                defer(call, hello.session)
            }
            _ => defer(call, hello.session),
        }
    }
}

struct PendingDynamicTicket {
    call: Call,
}

impl PendingAuth for PendingDynamicTicket {
    fn authenticate(self: Box<Self>, signature: &str, _extra: &Dict) -> AuthDecision {
        let mut call = self.call;
        // The authenticator checks the ticket; it never appears in logs.
        call.details.insert("ticket".into(), Value::from(signature));
        let session = call
            .details
            .get("session")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        defer(call, session)
    }
}

/// Runs the call in its own task; the connection waits for the decision.
fn defer(call: Call, session: Id) -> AuthDecision {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(run(call, session).await);
    });
    AuthDecision::Defer(rx)
}

async fn run(call: Call, session: Id) -> AuthDecision {
    match ask(&call).await {
        Ok(principal) => decide(call, principal, session).await,
        Err(refused) => refused,
    }
}

/// Calls the authenticator; its answer as a principal dict (a role alone becomes `{role}`),
/// or the refusal.
async fn ask(call: &Call) -> Result<Dict, AuthDecision> {
    let args = vec![
        Value::from(call.realm.as_str()),
        call.authid.as_deref().map_or(Value::Null, Value::from),
        Value::Dict(call.details.clone()),
    ];
    let answer = tokio::time::timeout(
        call.timeout,
        call.client
            .call_procedure(&call.procedure, Payload::new(args, Dict::new())),
    )
    .await;
    match answer {
        Ok(CallAnswer::Result(p)) => match p.args().first() {
            Some(Value::String(role)) => {
                let mut d = Dict::new();
                d.insert("role".into(), Value::from(role.as_str()));
                Ok(d)
            }
            Some(Value::Dict(d)) => Ok(d.clone()),
            _ => Err(AuthDecision::deny(
                errors::AUTHENTICATION_FAILED,
                "the authenticator returned no principal",
            )),
        },
        Ok(CallAnswer::Error(uri, p)) => {
            let message = p
                .args()
                .first()
                .and_then(Value::as_str)
                .unwrap_or("refused by the authenticator")
                .to_owned();
            Err(AuthDecision::Deny {
                reason: uri,
                message,
            })
        }
        Ok(CallAnswer::Gone) => Err(AuthDecision::deny(
            errors::AUTHENTICATION_FAILED,
            "the authenticator is not available",
        )),
        Err(_) => Err(AuthDecision::deny(
            errors::AUTHENTICATION_FAILED,
            "the authenticator did not answer in time",
        )),
    }
}

/// The session's identity from the principal; for WAMP-CRA and cryptosign, the challenge
/// with the secret or key the principal names.
async fn decide(call: Call, principal: Dict, session: Id) -> AuthDecision {
    let text = |k: &str| principal.get(k).and_then(Value::as_str).map(str::to_owned);
    let Some(role) = text("role") else {
        return AuthDecision::deny(errors::NO_SUCH_ROLE, "no authrole assigned");
    };
    let Some(authid) = text("authid").or(call.authid.clone()) else {
        return AuthDecision::deny(errors::NO_SUCH_PRINCIPAL, "no authid assigned");
    };
    let identity = Identity {
        authid: authid.clone(),
        authrole: role.clone(),
        authmethod: call.method.name().into(),
        authprovider: "dynamic".into(),
        realm: text("realm"),
    };
    match call.method {
        DynamicMethod::Anonymous | DynamicMethod::Ticket => AuthDecision::Accept(identity),
        DynamicMethod::WampCra => {
            let Some(secret) = text("secret") else {
                return AuthDecision::deny(
                    errors::AUTHENTICATION_FAILED,
                    "the authenticator returned no secret",
                );
            };
            let salt = match (
                text("salt"),
                principal.get("iterations").and_then(Value::as_u64),
                principal.get("keylen").and_then(Value::as_u64),
            ) {
                (Some(salt), Some(i), Some(k)) => Some(Salt {
                    salt,
                    iterations: i.min(u64::from(u32::MAX)) as u32,
                    keylen: k.clamp(1, 1024) as usize,
                }),
                _ => None,
            };
            // PBKDF2 is slow on purpose: off the async workers.
            let user = tokio::task::spawn_blocking(move || {
                WampCraUser::new(&secret, salt, role, identity.realm)
            })
            .await;
            match user {
                Ok(user) => super::wampcra::challenge(&authid, &user, session, "dynamic"),
                Err(_) => AuthDecision::deny(errors::AUTHENTICATION_FAILED, "internal error"),
            }
        }
        DynamicMethod::Cryptosign => {
            let client_key = call
                .details
                .get("authextra")
                .and_then(Value::as_dict)
                .and_then(|e| e.get("pubkey"))
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase);
            let Some(pubkey) = text("pubkey")
                .map(|k| k.to_ascii_lowercase())
                .or(client_key)
            else {
                return AuthDecision::deny(
                    errors::AUTHENTICATION_FAILED,
                    "no public key to verify against",
                );
            };
            super::cryptosign::challenge(&pubkey, identity)
        }
    }
}
