//! In-process sessions: the very same state machine as a socket's, with a [`Link::Local`]
//! whose queue carries decoded [`Message`]s, so router code (the meta API, the build master)
//! pays no serialization at all.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Connection, Flow};
use crate::auth::Identity;
use crate::context::Context;
use crate::outbound::{Queue, Taken};
use crate::session::{Link, SessionHandle};
use crate::wire::{Dict, Message, Value};

/// Joins `realm` in-process as `authid`/`authrole`; `trusted` sessions (router code) may use
/// `wamp.` URIs and skip authorization, others are checked like any client.
pub fn connect(
    ctx: &Context,
    realm: &str,
    authid: &str,
    authrole: &str,
    trusted: bool,
) -> Result<LocalSession, String> {
    let queue = Arc::new(Queue::new(ctx.limits().queue.clone()));
    let link = Link::Local {
        queue: queue.clone(),
    };
    let mut conn = Connection::new_internal(ctx.clone(), link, trusted);
    let mut roles = Dict::new();
    for role in ["publisher", "subscriber", "caller", "callee"] {
        let mut features = Dict::new();
        for f in ["call_canceling", "progressive_call_results"] {
            features.insert(f.into(), Value::Bool(true));
        }
        let mut r = Dict::new();
        r.insert("features".into(), Value::Dict(features));
        roles.insert(role.into(), Value::Dict(r));
    }
    let identity = Identity {
        authid: authid.to_owned(),
        authrole: authrole.to_owned(),
        authmethod: "local".into(),
        authprovider: "switchyard".into(),
        realm: None,
    };
    conn.join_internal(realm, roles, identity)?;
    let mut session = LocalSession {
        conn,
        queue,
        inbox: VecDeque::new(),
    };
    match session.try_take() {
        Some(Message::Welcome { .. }) => Ok(session),
        other => Err(format!("joining realm '{realm}' failed: {other:?}")),
    }
}

/// An in-process session: send [`Message`]s in, receive [`Message`]s out.
pub struct LocalSession {
    conn: Connection,
    queue: Arc<Queue<Message>>,
    inbox: VecDeque<Message>,
}

impl LocalSession {
    /// Handles a message as if the session had sent it over a transport.
    pub fn send(&mut self, msg: Message) -> Flow {
        self.conn.handle(msg)
    }

    /// The next message for this session; `None` once the session is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Some(m);
            }
            match self.queue.take(&mut self.inbox).await {
                Taken::Items => {}
                Taken::Closed(_) => return None,
            }
        }
    }

    /// The session's sending half (its state machine) and receiving half (its queue), for
    /// a service that sends from several tasks and receives in one.
    pub(crate) fn into_parts(self) -> (Connection, Arc<Queue<Message>>) {
        (self.conn, self.queue)
    }

    fn try_take(&mut self) -> Option<Message> {
        let fut = self.recv();
        futures_util::FutureExt::now_or_never(fut).flatten()
    }

    pub fn session(&self) -> Option<&SessionHandle> {
        self.conn.session()
    }
}
