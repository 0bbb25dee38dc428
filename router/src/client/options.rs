//! How to reach and join a router: [`ClientOptions`], and who the client is
//! ([`ClientAuth`], [`AuthMethod`]) with the answer to a router's CHALLENGE.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::wampcra::{compute_signature, derive_key};
use crate::wire::{Dict, Serializer, Value};

use super::ClientError;

/// How to reach and join a router.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub url: String,
    pub realm: String,
    pub serializer: Serializer,
    /// For WebSocket: offer the `.batched` subprotocol.
    pub batched: bool,
    /// Applies to connecting, joining, and every request that waits for an answer.
    pub timeout: Duration,
    /// Authenticate as this principal; `None` joins anonymously.
    pub auth: Option<ClientAuth>,
    /// For `wss://` URLs (required by them): the trust anchors the router's certificate is
    /// verified with, for the URL's host (e.g. [`crate::tls::client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>, realm: impl Into<String>) -> Self {
        ClientOptions {
            url: url.into(),
            realm: realm.into(),
            serializer: Serializer::MsgPack,
            batched: false,
            timeout: Duration::from_secs(10),
            auth: None,
            tls: None,
        }
    }
}

/// Who the client is and how it proves it (HELLO's `authid` and `authmethods`).
#[derive(Clone)]
pub struct ClientAuth {
    pub authid: String,
    pub method: AuthMethod,
}

/// An authentication method with its secret.
#[derive(Clone)]
pub enum AuthMethod {
    /// WAMP-CRA: the CHALLENGE is signed with the secret (or its salted derivation).
    WampCra { secret: String },
    /// Ticket: the ticket itself is the answer.
    Ticket { ticket: String },
}

// Secrets never reach Debug output (options are logged).
impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("authid", &self.authid)
            .field("method", &self.method.name())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Upper bounds on the PBKDF2 parameters a router may ask for: a hostile router must not make
/// the client burn minutes of CPU or gigabytes of memory.
const MAX_CRA_ITERATIONS: u64 = 10_000_000;
const MAX_CRA_KEYLEN: u64 = 1024;

impl AuthMethod {
    /// The method's name in `authmethods` and CHALLENGE.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::WampCra { .. } => "wampcra",
            AuthMethod::Ticket { .. } => "ticket",
        }
    }
}

impl ClientAuth {
    pub fn wampcra(authid: impl Into<String>, secret: impl Into<String>) -> Self {
        ClientAuth {
            authid: authid.into(),
            method: AuthMethod::WampCra {
                secret: secret.into(),
            },
        }
    }

    pub fn ticket(authid: impl Into<String>, ticket: impl Into<String>) -> Self {
        ClientAuth {
            authid: authid.into(),
            method: AuthMethod::Ticket {
                ticket: ticket.into(),
            },
        }
    }

    /// The AUTHENTICATE signature for a CHALLENGE.
    pub(super) async fn answer(&self, method: &str, extra: &Dict) -> Result<String, ClientError> {
        if method != self.method.name() {
            return Err(ClientError::Protocol(format!(
                "the router challenged with {method:?}, but the client offered only {:?}",
                self.method.name()
            )));
        }
        match &self.method {
            AuthMethod::Ticket { ticket } => Ok(ticket.clone()),
            AuthMethod::WampCra { secret } => {
                let challenge = extra
                    .get("challenge")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ClientError::Protocol("WAMP-CRA CHALLENGE without a challenge".into())
                    })?
                    .to_owned();
                let Some(salt) = extra.get("salt") else {
                    return Ok(compute_signature(secret.as_bytes(), &challenge));
                };
                // autobahn's defaults when a salted challenge leaves them out.
                let salt = salt
                    .as_str()
                    .ok_or_else(|| ClientError::Protocol("WAMP-CRA salt is not a string".into()))?
                    .to_owned();
                let number = |key: &str, default: u64, max: u64| match extra.get(key) {
                    None => Ok(default),
                    Some(v) => match v.as_u64() {
                        Some(n) if (1..=max).contains(&n) => Ok(n),
                        _ => Err(ClientError::Protocol(format!(
                            "WAMP-CRA {key} must be an integer from 1 to {max}"
                        ))),
                    },
                };
                let iterations = number("iterations", 1000, MAX_CRA_ITERATIONS)? as u32;
                let keylen = number("keylen", 32, MAX_CRA_KEYLEN)? as usize;
                let secret = secret.clone();
                // PBKDF2 is slow by design: off the async threads.
                let key = tokio::task::spawn_blocking(move || {
                    derive_key(&secret, &salt, iterations, keylen)
                })
                .await
                .map_err(|e| ClientError::Protocol(format!("key derivation failed: {e}")))?;
                Ok(compute_signature(key.as_bytes(), &challenge))
            }
        }
    }
}
