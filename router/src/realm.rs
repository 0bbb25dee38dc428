//! A realm: one routing domain owning a [`Broker`], a [`Dealer`] and its joined sessions.
//!
//! Sessions talk only to their realm (as in Crossbar, one Router per realm); nothing crosses
//! realms.
//!
//! The layers above plug in through two traits defined here, as they plug into the broker and
//! dealer through `BrokerHook` and `DealerHook`: a [`RealmHook`] is told of every join and
//! leave in order (the mesh announces them to peers), and a [`RealmObserver`] is told what
//! sessions did (the meta API turns that into meta events). The protocol and the meta API ask
//! the other nodes of a mesh through the realm's [`Cluster`] (implemented by the mesh). The
//! realm knows neither module.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::config::RealmConfig;
use crate::dealer::Dealer;
use crate::directory::Directory;
use crate::session::SessionHandle;
use crate::wire::Id;

/// Told of every join and leave, in order: called under the realm's membership lock, which
/// `Realm::for_each_session_ordered` shares (the mesh announces sessions to peers; its
/// snapshot for a new peer link and these calls cannot interleave). Must not block.
pub trait RealmHook: Send + Sync {
    fn joined(&self, session: &SessionHandle);
    fn left(&self, session: &SessionHandle);
}

/// Told what the realm's sessions did, after the realm did it, by the task that caused it
/// (the meta API implements it and publishes the meta events). Router-internal and `trusted`
/// sessions are reported too: the observer decides what to show.
pub trait RealmObserver: Send + Sync {
    /// A session joined (its WELCOME is queued).
    fn joined(&self, realm: &Realm, session: &SessionHandle);
    /// A session left, after everything it owned was removed.
    fn left(&self, realm: &Realm, session: &SessionHandle);
    /// `by` subscribed or unsubscribed.
    fn subscription(&self, realm: &Realm, by: &SessionHandle, change: &InterestChange<'_>);
    /// `by` registered or unregistered.
    fn registration(&self, realm: &Realm, by: &SessionHandle, change: &InterestChange<'_>);
}

/// One subscribe or unsubscribe (register or unregister), as a [`RealmObserver`] is told of it.
#[derive(Clone, Copy, Debug)]
pub struct InterestChange<'a> {
    /// The subscription (registration) ID.
    pub id: Id,
    pub uri: &'a str,
    /// Subscribed (registered), else unsubscribed (unregistered).
    pub added: bool,
    /// The subscription (registration) was created or deleted with it.
    pub changed: bool,
}

pub struct Realm {
    pub config: RealmConfig,
    pub broker: Broker,
    pub dealer: Dealer,
    sessions: DashMap<Id, SessionHandle>,
    /// What peers announced about their sessions, subscriptions and callees (filled by the
    /// mesh, read by the meta API; empty without a mesh).
    directory: Arc<Directory>,
    /// The meta API service, once started.
    observer: OnceLock<Arc<dyn RealmObserver>>,
    /// The mesh side of this realm, once the router is part of a mesh.
    hook: OnceLock<Arc<dyn RealmHook>>,
    /// The other nodes of the mesh, once the router is part of one.
    cluster: OnceLock<Arc<dyn Cluster>>,
    /// Orders joins and leaves (and their announcements) with the mesh's snapshot of the
    /// sessions on a new peer link, as the broker's and dealer's locks order theirs.
    membership: Mutex<()>,
}

impl Realm {
    pub fn new(config: RealmConfig) -> Arc<Realm> {
        let broker = Broker::for_realm(&config.name);
        let dealer = Dealer::for_realm(&config.name);
        for h in &config.event_history {
            broker.keep_history(h.policy, &h.uri, h.limit);
        }
        Arc::new(Realm {
            config,
            broker,
            dealer,
            sessions: DashMap::new(),
            directory: Arc::default(),
            observer: OnceLock::new(),
            hook: OnceLock::new(),
            cluster: OnceLock::new(),
            membership: Mutex::new(()),
        })
    }

    /// Attaches the observer (the meta API service); there is at most one.
    pub(crate) fn set_observer(
        &self,
        observer: Arc<dyn RealmObserver>,
    ) -> Result<(), Arc<dyn RealmObserver>> {
        self.observer.set(observer)
    }

    /// Attaches the membership hook (once, when the mesh is created).
    pub(crate) fn set_hook(&self, hook: Arc<dyn RealmHook>) {
        let _ = self.hook.set(hook);
    }

    /// The other nodes of the mesh, for read-your-writes replies and kills across nodes.
    pub fn cluster(&self) -> Option<&dyn Cluster> {
        self.cluster.get().map(|c| c.as_ref())
    }

    /// Attaches the other nodes (once, when the mesh is created).
    pub(crate) fn set_cluster(&self, cluster: Arc<dyn Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// What peers announced in this realm (see [`Directory`]).
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Whether the realm serves the meta API (its service is the realm's observer).
    pub fn meta_api_running(&self) -> bool {
        self.observer.get().is_some()
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Adds a session whose WELCOME is queued; the hook, then the observer, are told.
    pub(crate) fn join(&self, session: SessionHandle) {
        {
            let _order = self.membership.lock();
            self.sessions.insert(session.id(), session.clone());
            if let Some(hook) = self.hook.get() {
                hook.joined(&session);
            }
        }
        if let Some(o) = self.observer.get() {
            o.joined(self, &session);
        }
    }

    /// Calls `f` with every joined session, ordered with joins and leaves (and therefore
    /// with their announcements to peers).
    pub(crate) fn for_each_session_ordered(&self, mut f: impl FnMut(&SessionHandle)) {
        let _order = self.membership.lock();
        for e in self.sessions.iter() {
            f(e.value());
        }
    }

    /// Removes a session and everything it owned in the broker and dealer, telling the
    /// observer of each in the order Crossbar sends their meta events (unsubscribe/delete,
    /// unregister/delete, then leave).
    pub(crate) fn leave(
        &self,
        session: Id,
        subscriptions: impl IntoIterator<Item = Id>,
        registrations: impl IntoIterator<Item = Id>,
    ) {
        let Some(handle) = self.session(session) else {
            self.broker.remove_session(session, subscriptions);
            self.dealer.remove_session(session, registrations);
            return;
        };
        // Testaments first, while the session is still a publisher (as Crossbar orders it).
        for t in handle.take_testaments() {
            if let Err(e) = self
                .broker
                .publish(&handle, &t.topic, &t.options, t.payload)
            {
                tracing::info!(session, topic = %crate::logsafe::Trunc(&t.topic), "testament not published: {e}");
            }
        }
        for id in subscriptions {
            if let Ok((deleted, topic)) = self.broker.unsubscribe_tracked(session, id) {
                self.subscription_events(&handle, id, &topic, false, deleted);
            }
        }
        for id in registrations {
            if let Ok((deleted, procedure)) = self.dealer.unregister_tracked(session, id) {
                self.registration_events(&handle, id, &procedure, false, deleted);
            }
        }
        // Registrations are gone already; this ends the calls in flight.
        self.dealer.remove_session(session, []);
        {
            let _order = self.membership.lock();
            if self.sessions.remove(&session).is_some() {
                if let Some(hook) = self.hook.get() {
                    hook.left(&handle);
                }
            }
        }
        if let Some(o) = self.observer.get() {
            o.left(self, &handle);
        }
    }

    /// Tells the observer of a subscribe (`added`) or unsubscribe, with creation or deletion
    /// (`changed`).
    pub(crate) fn subscription_events(
        &self,
        by: &SessionHandle,
        id: Id,
        uri: &str,
        added: bool,
        changed: bool,
    ) {
        if let Some(o) = self.observer.get() {
            // Created or deleted mesh-wide only if no peer holds it (registrations need no
            // such check: remote callees are in the dealer).
            let changed = changed && self.directory.subscription(id).is_none();
            let change = InterestChange {
                id,
                uri,
                added,
                changed,
            };
            o.subscription(self, by, &change);
        }
    }

    /// Tells the observer of a register (`added`) or unregister, with creation or deletion
    /// (`changed`).
    pub(crate) fn registration_events(
        &self,
        by: &SessionHandle,
        id: Id,
        uri: &str,
        added: bool,
        changed: bool,
    ) {
        if let Some(o) = self.observer.get() {
            let change = InterestChange {
                id,
                uri,
                added,
                changed,
            };
            o.registration(self, by, &change);
        }
    }

    pub fn session(&self, id: Id) -> Option<SessionHandle> {
        self.sessions.get(&id).map(|s| s.clone())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session_ids(&self) -> Vec<Id> {
        self.sessions.iter().map(|e| *e.key()).collect()
    }

    /// Every joined session, for shutdown and meta APIs.
    pub fn sessions(&self) -> Vec<SessionHandle> {
        self.sessions.iter().map(|e| e.value().clone()).collect()
    }
}
