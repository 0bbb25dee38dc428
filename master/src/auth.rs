//! Who may join the master's realm as a worker, and who may touch a worker's procedures.
//!
//! A worker runs shell commands, so its procedures (`switchyard.worker.<name>.*`) are
//! callable by masters alone. Workers authenticate with WAMP-CRA (their password never
//! crosses the wire) and get the role [`WORKER_ROLE`]; every other client joins as before
//! (anonymous, the router's embedded default). [`WorkerGuard`] then enforces:
//! - a worker may register under its own name only, and do nothing else;
//! - no other session may call, register, subscribe to or publish on the worker namespace,
//!   nor register a prefix or wildcard pattern that could capture a worker's calls (a prefix
//!   of `switchyard.worker.`, anything under `switchyard.`, or a pattern whose first
//!   component is empty) — `wamp.error.not_authorized`;
//! - masters act through in-process sessions with the router's `trusted` role, which the
//!   router itself lets through.
//!
//! Everything outside the worker namespace is decided by the wrapped authorizer.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_router::auth::wampcra::{WampCra, WampCraUser};
use switchyard_router::auth::{
    Action, Anonymous, AuthDecision, Authenticator, Authorization, Authorizer, Hello,
};
use switchyard_router::uri::errors;

/// The role workers join with.
pub const WORKER_ROLE: &str = "switchyard.worker";
/// The namespace of worker procedures: `switchyard.worker.<name>.<procedure>`.
pub const WORKER_NAMESPACE: &str = "switchyard.worker.";
const TRUSTED: &str = switchyard_router::auth::roles::TRUSTED;

/// The URI of a worker's procedure.
pub fn worker_procedure(worker: &str, procedure: &str) -> String {
    format!("{WORKER_NAMESPACE}{worker}.{procedure}")
}

/// Workers by WAMP-CRA, everyone else anonymous.
pub struct MasterAuthenticator {
    workers: WampCra,
    anonymous: Anonymous,
}

impl MasterAuthenticator {
    /// `workers`: `(name, password)` pairs; they may join `realm` only.
    pub fn new<'a>(realm: &str, workers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let users: HashMap<String, WampCraUser> = workers
            .into_iter()
            .map(|(name, password)| {
                (
                    name.to_owned(),
                    WampCraUser::new(password, None, WORKER_ROLE.into(), Some(realm.to_owned())),
                )
            })
            .collect();
        MasterAuthenticator {
            workers: WampCra { users },
            anonymous: Anonymous::default(),
        }
    }
}

impl Authenticator for MasterAuthenticator {
    fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let offered = hello.authmethods();
        for method in &offered {
            match *method {
                "wampcra" => return self.workers.hello(hello),
                "anonymous" => return self.anonymous.hello(hello),
                _ => {}
            }
        }
        AuthDecision::deny(
            errors::NO_AUTH_METHOD,
            format!("cannot authenticate using any of the offered authmethods {offered:?}; this router accepts wampcra (workers) and anonymous"),
        )
    }
}

/// Guards the worker namespace in front of another authorizer.
pub struct WorkerGuard {
    inner: Arc<dyn Authorizer>,
}

impl WorkerGuard {
    pub fn new(inner: Arc<dyn Authorizer>) -> Self {
        WorkerGuard { inner }
    }
}

/// Whether a URI or pattern given to REGISTER/SUBSCRIBE/CALL/PUBLISH could reach the worker
/// namespace.
fn touches_worker_namespace(uri: &str, action: Action) -> bool {
    if uri.starts_with(WORKER_NAMESPACE) || WORKER_NAMESPACE.starts_with(uri) {
        return true;
    }
    // Registrations and subscriptions can be prefix or wildcard patterns; the authorizer
    // does not see the match policy, so refuse every pattern that could match.
    matches!(action, Action::Register | Action::Subscribe)
        && (uri.starts_with("switchyard.") || uri.split('.').next() == Some(""))
}

impl Authorizer for WorkerGuard {
    fn authorize(&self, realm: &str, authrole: &str, uri: &str, action: Action) -> Authorization {
        if authrole == WORKER_ROLE {
            return Authorization::DENY;
        }
        if touches_worker_namespace(uri, action) {
            return if authrole == TRUSTED {
                Authorization::ALLOW
            } else {
                Authorization::DENY
            };
        }
        self.inner.authorize(realm, authrole, uri, action)
    }

    fn authorize_session(
        &self,
        realm: &str,
        authrole: &str,
        authid: &str,
        uri: &str,
        action: Action,
    ) -> Authorization {
        if authrole == WORKER_ROLE && action == Action::Register {
            let own = format!("{WORKER_NAMESPACE}{authid}.");
            let rest = uri.strip_prefix(&own);
            // One component after the worker's own prefix: `switchyard.worker.w1.run`.
            if rest.is_some_and(|r| !r.is_empty() && !r.contains('.')) {
                return Authorization::ALLOW;
            }
            return Authorization::DENY;
        }
        self.authorize(realm, authrole, uri, action)
    }

    fn has_role(&self, realm: &str, authrole: &str) -> bool {
        authrole == WORKER_ROLE || self.inner.has_role(realm, authrole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_router::auth::AllowAll;

    #[test]
    fn worker_namespace_rules() {
        let g = WorkerGuard::new(Arc::new(AllowAll));
        let allow = |role: &str, id: &str, uri: &str, a: Action| {
            g.authorize_session("buildbot", role, id, uri, a).allow
        };
        // Workers register under their own name only, and do nothing else.
        assert!(allow(
            WORKER_ROLE,
            "w1",
            "switchyard.worker.w1.run",
            Action::Register
        ));
        assert!(!allow(
            WORKER_ROLE,
            "w1",
            "switchyard.worker.w2.run",
            Action::Register
        ));
        assert!(!allow(
            WORKER_ROLE,
            "w1",
            "switchyard.worker.w1.a.b",
            Action::Register
        ));
        assert!(!allow(
            WORKER_ROLE,
            "w1",
            "switchyard.worker.w1.",
            Action::Register
        ));
        assert!(!allow(WORKER_ROLE, "w1", "com.example", Action::Subscribe));
        assert!(!allow(
            WORKER_ROLE,
            "w1",
            "switchyard.worker.w2.run",
            Action::Call
        ));
        // Anonymous clients may not touch worker procedures or shadow them with patterns.
        for (uri, a) in [
            ("switchyard.worker.w1.run", Action::Call),
            ("switchyard.worker.w1.run", Action::Register),
            ("switchyard.worker.", Action::Register),
            ("switchyard.", Action::Register),
            ("switchyard", Action::Register),
            ("switchyard..w1.run", Action::Register),
            ("...run", Action::Register),
            ("switchyard.worker.w1.run", Action::Subscribe),
            ("switchyard.worker.w1.run", Action::Publish),
        ] {
            assert!(!allow("anonymous", "w1", uri, a), "{uri} {a:?}");
        }
        // Everything else is the inner authorizer's business.
        assert!(allow(
            "anonymous",
            "x",
            "org.buildbot.mq.builds.1.new",
            Action::Subscribe
        ));
        assert!(allow("anonymous", "x", "com.app.proc", Action::Register));
        assert!(allow(
            TRUSTED,
            "master",
            "switchyard.worker.w1.run",
            Action::Call
        ));
        assert!(g.has_role("buildbot", WORKER_ROLE));
    }
}
