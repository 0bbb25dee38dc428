//! A realm: one routing domain owning a [`Broker`], a [`Dealer`] and its joined sessions.
//!
//! Sessions talk only to their realm (as in Crossbar, one Router per realm); nothing crosses
//! realms.

use std::sync::Arc;

use dashmap::DashMap;

use crate::broker::Broker;
use crate::config::RealmConfig;
use crate::dealer::Dealer;
use crate::session::SessionHandle;
use crate::wire::Id;

pub struct Realm {
    pub config: RealmConfig,
    pub broker: Broker,
    pub dealer: Dealer,
    sessions: DashMap<Id, SessionHandle>,
}

impl Realm {
    pub fn new(config: RealmConfig) -> Arc<Realm> {
        Arc::new(Realm {
            config,
            broker: Broker::default(),
            dealer: Dealer::default(),
            sessions: DashMap::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn join(&self, session: SessionHandle) {
        self.sessions.insert(session.id(), session);
    }

    /// Removes a session and everything it owned in the broker and dealer.
    pub(crate) fn leave(
        &self,
        session: Id,
        subscriptions: impl IntoIterator<Item = Id>,
        registrations: impl IntoIterator<Item = Id>,
    ) {
        self.broker.remove_session(session, subscriptions);
        self.dealer.remove_session(session, registrations);
        self.sessions.remove(&session);
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
