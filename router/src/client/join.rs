//! Joining a realm: HELLO (the roles and features the client announces, and its authid and
//! method when it authenticates), then WELCOME or ABORT, with a CHALLENGE answered by
//! AUTHENTICATE in between when the router asks.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::wire::{Codec, Dict, Id, Message, Value};

use super::transport::Reader;
use super::{encode, ClientAuth, ClientError, ClientOptions};

/// What WELCOME established.
pub(super) struct Joined {
    pub session: Id,
    /// WELCOME's details.
    pub welcome: Dict,
    /// The router challenged the client (and accepted its answer).
    pub challenged: bool,
}

/// Sends HELLO on `out` and reads until WELCOME (each read within `opts.timeout`). Messages
/// read past WELCOME stay in `inbox` for the dispatcher.
pub(super) async fn join(
    opts: &ClientOptions,
    codec: Codec,
    reader: &mut Reader,
    inbox: &mut VecDeque<Message>,
    out: &mpsc::Sender<Bytes>,
) -> Result<Joined, ClientError> {
    let t = opts.timeout;
    // Join: HELLO, then WELCOME or ABORT (with a CHALLENGE and AUTHENTICATE in between
    // when authenticating).
    let hello = Message::Hello {
        realm: opts.realm.clone(),
        details: hello_details(opts.auth.as_ref()),
    };
    out.send(encode(codec, &hello)?)
        .await
        .map_err(|_| ClientError::Closed)?;
    let mut challenged = false;
    let (session, welcome) = loop {
        let next = tokio::time::timeout(t, async {
            loop {
                if let Some(m) = inbox.pop_front() {
                    return Some(m);
                }
                if reader.read_batch(inbox).await.is_err() {
                    return None;
                }
            }
        });
        match next.await.map_err(|_| ClientError::Timeout(t))? {
            Some(Message::Welcome { session, details }) => break (session, details),
            Some(Message::Abort { reason, details }) => {
                let message = details
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                return Err(ClientError::Aborted { reason, message });
            }
            Some(Message::Challenge { method, extra }) if !challenged => {
                let Some(auth) = &opts.auth else {
                    return Err(ClientError::Protocol(format!(
                        "the router sent a {method} CHALLENGE, but the client has no credentials"
                    )));
                };
                challenged = true;
                let signature = auth.answer(&method, &extra).await?;
                let answer = Message::Authenticate {
                    signature,
                    extra: Dict::new(),
                };
                out.send(encode(codec, &answer)?)
                    .await
                    .map_err(|_| ClientError::Closed)?;
            }
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected WELCOME, got {}",
                    other.name()
                )))
            }
            None => return Err(ClientError::Closed),
        }
    };
    Ok(Joined {
        session,
        welcome,
        challenged,
    })
}

fn hello_details(auth: Option<&ClientAuth>) -> Dict {
    let role = |features: &[&str]| {
        let mut f = Dict::new();
        for n in features {
            f.insert((*n).into(), Value::Bool(true));
        }
        let mut r = Dict::new();
        r.insert("features".into(), Value::Dict(f));
        Value::Dict(r)
    };
    let mut roles = Dict::new();
    roles.insert(
        "publisher".into(),
        role(&["publisher_exclusion", "publisher_identification"]),
    );
    roles.insert("subscriber".into(), role(&["pattern_based_subscription"]));
    roles.insert(
        "caller".into(),
        role(&["progressive_call_results", "call_canceling", "call_timeout"]),
    );
    roles.insert(
        "callee".into(),
        role(&[
            "progressive_call_results",
            "call_canceling",
            "pattern_based_registration",
            "shared_registration",
        ]),
    );
    let mut details = Dict::new();
    details.insert("roles".into(), Value::Dict(roles));
    details.insert(
        "agent".into(),
        Value::from(concat!("switchyard-client-", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(a) = auth {
        details.insert("authid".into(), Value::from(a.authid.as_str()));
        details.insert(
            "authmethods".into(),
            Value::List(vec![Value::from(a.method.name())]),
        );
    }
    details
}
