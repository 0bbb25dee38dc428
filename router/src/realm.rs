//! A realm: one routing domain owning a [`Broker`], a [`Dealer`] and its joined sessions.
//!
//! Sessions talk only to their realm (as in Crossbar, one Router per realm); nothing crosses
//! realms.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::config::RealmConfig;
use crate::dealer::Dealer;
use crate::directory::Directory;
use crate::mesh::RealmMesh;
use crate::meta::{self, MetaService};
use crate::session::SessionHandle;
use crate::wire::{Id, Value};

pub struct Realm {
    pub config: RealmConfig,
    pub broker: Broker,
    pub dealer: Dealer,
    sessions: DashMap<Id, SessionHandle>,
    /// What peers announced about their sessions, subscriptions and callees (filled by the
    /// mesh, read by the meta API; empty without a mesh).
    directory: Arc<Directory>,
    /// The meta API service, once started (see [`crate::meta`]).
    meta: OnceLock<Arc<MetaService>>,
    /// The mesh side of this realm, once the router is part of a mesh: it announces joins
    /// and leaves to peers and holds what peers announced (the meta API answers with both).
    mesh: OnceLock<Arc<RealmMesh>>,
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
            meta: OnceLock::new(),
            mesh: OnceLock::new(),
            membership: Mutex::new(()),
        })
    }

    pub(crate) fn set_meta(&self, service: Arc<MetaService>) -> Result<(), Arc<MetaService>> {
        self.meta.set(service)
    }

    /// Attaches the mesh (once, when the mesh is created).
    pub(crate) fn set_mesh(&self, mesh: Arc<RealmMesh>) {
        let _ = self.mesh.set(mesh);
    }

    /// The mesh side of this realm, if the router is part of a mesh.
    pub fn mesh(&self) -> Option<&Arc<RealmMesh>> {
        self.mesh.get()
    }

    /// The other nodes of the mesh, for read-your-writes replies and kills across nodes.
    pub fn cluster(&self) -> Option<&dyn Cluster> {
        self.mesh.get().map(|m| m.as_ref() as &dyn Cluster)
    }

    /// What peers announced in this realm (see [`Directory`]).
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    pub fn meta_api_running(&self) -> bool {
        self.meta.get().is_some()
    }

    /// Publishes a meta event if the realm serves the meta API and `by` is a session whose
    /// actions are visible (not router-internal or `trusted`).
    pub(crate) fn meta_event(
        &self,
        by: &SessionHandle,
        topic: &str,
        args: impl FnOnce() -> Vec<Value>,
    ) {
        if by.is_restricted() {
            return;
        }
        if let Some(m) = self.meta.get() {
            m.publish(topic, args());
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn join(&self, session: SessionHandle) {
        let _order = self.membership.lock();
        self.sessions.insert(session.id(), session.clone());
        if let Some(mesh) = self.mesh.get() {
            mesh.session_joined(&session);
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

    /// Removes a session and everything it owned in the broker and dealer, with the meta
    /// events Crossbar sends for each (unsubscribe/delete, unregister/delete, then leave).
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
        let sid = Value::from(session);
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
                if let Some(mesh) = self.mesh.get() {
                    mesh.session_left(&handle);
                }
            }
        }
        self.meta_event(&handle, "wamp.session.on_leave", || vec![sid]);
    }

    /// Meta events for a subscribe (`added`) or unsubscribe, with creation or deletion.
    pub(crate) fn subscription_events(
        &self,
        by: &SessionHandle,
        id: Id,
        uri: &str,
        added: bool,
        changed: bool,
    ) {
        let names = [
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
        ];
        // Created or deleted mesh-wide only if no peer holds it (registrations need no such
        // check: remote callees are in the dealer).
        let changed = changed && self.directory.subscription(id).is_none();
        self.lifecycle_events(by, id, uri, added, changed, names, || {
            self.broker
                .subscription(id)
                .map(|info| meta::subscription_details(&info))
        });
    }

    /// Meta events for a register (`added`) or unregister, with creation or deletion.
    pub(crate) fn registration_events(
        &self,
        by: &SessionHandle,
        id: Id,
        uri: &str,
        added: bool,
        changed: bool,
    ) {
        let names = [
            "wamp.registration.on_create",
            "wamp.registration.on_register",
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
        ];
        self.lifecycle_events(by, id, uri, added, changed, names, || {
            self.dealer
                .registration(id)
                .map(|info| meta::registration_details(&info))
        });
    }

    /// The shared shape of both: `[on_create, on_add, on_remove, on_delete]`, with the
    /// creation details from `details`. None for restricted sessions or the meta API's own
    /// URIs (Crossbar's rule: "not for the meta API itself").
    #[allow(clippy::too_many_arguments)]
    fn lifecycle_events(
        &self,
        by: &SessionHandle,
        id: Id,
        uri: &str,
        added: bool,
        changed: bool,
        [on_create, on_add, on_remove, on_delete]: [&str; 4],
        details: impl FnOnce() -> Option<Value>,
    ) {
        if by.is_restricted() || self.meta.get().is_none() || crate::uri::is_reserved(uri) {
            return;
        }
        let s = Value::from(by.id());
        if added {
            if changed {
                if let Some(d) = details() {
                    self.meta_event(by, on_create, || vec![s.clone(), d]);
                }
            }
            self.meta_event(by, on_add, || vec![s.clone(), Value::from(id)]);
        } else {
            self.meta_event(by, on_remove, || vec![s.clone(), Value::from(id)]);
            if changed {
                self.meta_event(by, on_delete, || vec![s.clone(), Value::from(id)]);
            }
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
