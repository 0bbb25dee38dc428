//! The router: a [`Context`] (realms, limits, authentication, shutdown, counters) with the
//! meta API services of its realms started, and in-process sessions on it.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::{AllowAll, Anonymous, Authenticator, Authorizer};
use crate::config::RouterConfig;
use crate::context::Context;
use crate::protocol::local::{self, LocalSession};

/// A cheap-to-clone handle on the router; derefs to its [`Context`].
#[derive(Clone)]
pub struct Router {
    ctx: Context,
}

impl Deref for Router {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
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
        let router = Router {
            ctx: Context::new(config, authenticator, authorizer),
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
        crate::meta::start(&self.ctx);
    }

    /// The realms and policies, as the layers below the router hold them.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Joins `realm` as an in-process session: a first-class WAMP session with no socket and
    /// no serialization, for code running inside the router process.
    pub fn connect_local(
        &self,
        realm: &str,
        authid: &str,
        authrole: &str,
    ) -> Result<LocalSession, String> {
        local::connect(&self.ctx, realm, authid, authrole, true)
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
        local::connect(&self.ctx, realm, authid, authrole, false)
    }
}
