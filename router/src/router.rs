//! The router: its realms, limits, authentication, shutdown, and in-process sessions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::auth::{AllowAll, Anonymous, Authenticator, Authorizer, Identity};
use crate::config::{Limits, RouterConfig};
use crate::outbound::{Queue, Taken};
use crate::protocol::{Connection, Flow};
use crate::realm::Realm;
use crate::session::{Link, SessionHandle};
use crate::shutdown::Shutdown;
use crate::wire::{Dict, Message, Value};

struct Inner {
    realms: HashMap<String, Arc<Realm>>,
    limits: Limits,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    shutdown: Shutdown,
}

/// A cheap-to-clone handle on the router; every connection task holds one.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// A router with the given realms, anonymous authentication and no restrictions.
    pub fn new(config: RouterConfig) -> Router {
        Router::with_auth(config, Arc::new(Anonymous::default()), Arc::new(AllowAll))
    }

    pub fn with_auth(
        config: RouterConfig,
        authenticator: Arc<dyn Authenticator>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Router {
        let realms = config
            .realms
            .into_iter()
            .map(|r| (r.name.clone(), Realm::new(r)))
            .collect();
        Router {
            inner: Arc::new(Inner {
                realms,
                limits: config.limits,
                authenticator,
                authorizer,
                shutdown: Shutdown::new(),
            }),
        }
    }

    pub fn realm(&self, name: &str) -> Option<Arc<Realm>> {
        self.inner.realms.get(name).cloned()
    }

    pub fn realms(&self) -> impl Iterator<Item = &Arc<Realm>> {
        self.inner.realms.values()
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn authenticator(&self) -> &dyn Authenticator {
        &*self.inner.authenticator
    }

    pub fn authorizer(&self) -> &dyn Authorizer {
        &*self.inner.authorizer
    }

    /// The shutdown every listener and connection of this router watches.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// Joins `realm` as an in-process session: a first-class WAMP session with no socket and
    /// no serialization, for code running inside the router process.
    pub fn connect_local(
        &self,
        realm: &str,
        authid: &str,
        authrole: &str,
    ) -> Result<LocalSession, String> {
        let queue = Arc::new(Queue::new(self.inner.limits.queue.clone()));
        let link = Link::Local {
            queue: queue.clone(),
        };
        let mut conn = Connection::new_internal(self.clone(), link);
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

    fn try_take(&mut self) -> Option<Message> {
        let fut = self.recv();
        futures_util::FutureExt::now_or_never(fut).flatten()
    }

    pub fn session(&self) -> Option<&SessionHandle> {
        self.conn.session()
    }
}
