//! The router's context: its realms by name, and what every session needs from the router
//! (limits, authentication, authorization, shutdown, counters).
//!
//! The layers from the protocol up to the meta API hold a [`Context`]; the assembled
//! [`Router`](crate::Router), which starts the meta API services, derefs to it. Cheap to clone.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::{Authenticator, Authorizer};
use crate::config::{Limits, RouterConfig};
use crate::metrics::Metrics;
use crate::realm::Realm;
use crate::shutdown::Shutdown;

struct Inner {
    realms: HashMap<String, Arc<Realm>>,
    limits: Limits,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
}

/// A cheap-to-clone handle on the router's realms and policies; every connection holds one.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl Context {
    /// The realms of `config`, with their limits, authenticated and authorized as given.
    pub fn new(
        config: RouterConfig,
        authenticator: Arc<dyn Authenticator>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Context {
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
        Context {
            inner: Arc::new(Inner {
                realms,
                limits: config.limits,
                authenticator,
                authorizer,
                shutdown: Shutdown::new(),
                metrics: Arc::default(),
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

    /// How sessions authenticate on listeners that do not configure their own.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator> {
        &self.inner.authenticator
    }

    pub fn authorizer(&self) -> &dyn Authorizer {
        &*self.inner.authorizer
    }

    /// The router's counters (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The shutdown every listener and connection of this router watches.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }
}
