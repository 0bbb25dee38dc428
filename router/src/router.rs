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
    metrics: Arc<crate::metrics::Metrics>,
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
            .map(|r| {
                let realm = Realm::new(r);
                realm
                    .dealer
                    .set_call_limit(config.limits.max_calls_in_flight);
                (realm.name().to_owned(), realm)
            })
            .collect();
        let router = Router {
            inner: Arc::new(Inner {
                realms,
                limits: config.limits,
                authenticator,
                authorizer,
                shutdown: Shutdown::new(),
                metrics: Arc::default(),
            }),
        };
        // The meta API service sessions run as tasks; without a runtime (a router built
        // before one starts) the caller starts them with `start_meta_api` later.
        if tokio::runtime::Handle::try_current().is_ok() {
            router.start_meta_api();
        }
        router
    }

    /// Starts the meta API service of every realm that enables it (idempotent). Must run
    /// inside a tokio runtime; the constructors call it when they are.
    pub fn start_meta_api(&self) {
        crate::meta::start(self);
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

    /// How sessions authenticate on listeners that do not configure their own.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.inner.authenticator
    }

    pub fn authorizer(&self) -> &dyn Authorizer {
        &*self.inner.authorizer
    }

    /// The router's counters (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
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
        self.connect_in_process(realm, authid, authrole, true)
    }

    /// Joins `realm` in-process like [`Router::connect_local`], but as an ordinary client:
    /// its role's permissions apply and it may not use `wamp.` URIs (the HTTP bridge acts
    /// for outside callers this way).
    pub fn connect_local_untrusted(
        &self,
        realm: &str,
        authid: &str,
        authrole: &str,
    ) -> Result<LocalSession, String> {
        self.connect_in_process(realm, authid, authrole, false)
    }

    fn connect_in_process(
        &self,
        realm: &str,
        authid: &str,
        authrole: &str,
        trusted: bool,
    ) -> Result<LocalSession, String> {
        let queue = Arc::new(Queue::new(self.inner.limits.queue.clone()));
        let link = Link::Local {
            queue: queue.clone(),
        };
        let mut conn = Connection::new_internal(self.clone(), link, trusted);
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
