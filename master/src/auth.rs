//! Who may join the master's realm as a worker, who may touch a worker's procedures, who
//! may kill sessions there, and whose word on the bus a master acts on. The whole trust
//! model, principal by principal, is docs/security.md.
//!
//! A worker runs shell commands, so its procedures (`switchyard.worker.<name>.*`) are
//! callable by masters alone. Workers authenticate with WAMP-CRA (their password never
//! crosses the wire) and get the role [`WORKER_ROLE`]; every other client joins as before
//! (anonymous, the router's embedded default). [`WorkerGuard`] then enforces, on every node
//! of a mesh (router-only nodes included), for local sessions and for the calls,
//! publications and registrations peers forward (authorized here against the identity the
//! peer vouches for):
//! - a worker may register its own exact procedure names only (no prefix or wildcard), and
//!   do nothing else;
//! - no other session may call, register, subscribe to or publish on the worker namespace,
//!   nor register a prefix or wildcard pattern that could capture a worker's calls (a prefix
//!   of `switchyard.worker.`, anything under `switchyard.`, or a pattern whose first
//!   component is empty) — `wamp.error.not_authorized`;
//! - on the master's realm only masters (and [`BusTrust`]'s configured roles) may call the
//!   meta API's `wamp.session.kill*`, so nobody else can disconnect workers or masters;
//! - masters act through in-process sessions with the router's `trusted` role (authid
//!   `master:<name>`), which the router itself lets through.
//!
//! Everything outside those rules is decided by the wrapped authorizer.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_router::auth::wampcra::{WampCra, WampCraUser};
use switchyard_router::auth::{
    Action, Anonymous, AuthDecision, Authenticator, Authorization, Authorizer, Hello,
};
use switchyard_router::uri::{errors, MatchPolicy};
use switchyard_router::wire::{Dict, Value};

// The worker's contract owns its role and procedure names; the master grants and guards them.
pub use switchyard_worker::{worker_procedure, WORKER_NAMESPACE, WORKER_ROLE};
const TRUSTED: &str = switchyard_router::auth::roles::TRUSTED;
/// The authid prefix of a master's in-process session: `master:<name>`.
pub const MASTER_AUTHID_PREFIX: &str = "master:";
/// The meta procedures that disconnect sessions.
const KILL_PREFIX: &str = "wamp.session.kill";

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
                "wampcra" if self.workers.users.is_empty() => {
                    return AuthDecision::deny(
                        errors::NO_SUCH_PRINCIPAL,
                        "this node knows no worker (it runs no build master, or its [master] \
                         section lists none): connect workers to a node whose master lists them",
                    )
                }
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

/// Who is trusted like a master on the bus: switchyard masters (role `trusted`, authid
/// `master:<name>`, on this node or vouched for by a mesh peer) and the operator's
/// `[master] trusted_roles`.
#[derive(Clone, Debug, Default)]
pub struct BusTrust {
    roles: Vec<String>,
}

impl BusTrust {
    pub fn new(trusted_roles: &[String]) -> Self {
        BusTrust {
            roles: trusted_roles.to_vec(),
        }
    }

    /// Whether a session with this identity speaks for a master.
    pub fn is_master(&self, authid: &str, authrole: &str) -> bool {
        (authrole == TRUSTED && authid.starts_with(MASTER_AUTHID_PREFIX))
            || self.roles.iter().any(|r| r == authrole)
    }

    /// Whether an EVENT was published by a master. Masters publish with `disclose_me`, so
    /// the router (or the peer it crossed from) put their identity in the details; an event
    /// without it comes from someone else.
    pub fn published_by_master(&self, details: &Dict) -> bool {
        let text = |k: &str| details.get(k).and_then(Value::as_str);
        match (text("publisher_authid"), text("publisher_authrole")) {
            (Some(authid), Some(authrole)) => self.is_master(authid, authrole),
            _ => false,
        }
    }

    /// Who published an EVENT, for a log line (bounded).
    pub fn publisher(details: &Dict) -> String {
        let text = |k: &str| details.get(k).and_then(Value::as_str).unwrap_or("?");
        format!(
            "{}/{}",
            switchyard_router::logsafe::Trunc(text("publisher_authid")),
            switchyard_router::logsafe::Trunc(text("publisher_authrole"))
        )
    }
}

/// Guards the worker namespace and the master realm's session kills in front of another
/// authorizer. Installed on every node that routes the master's realm, with or without a
/// master.
pub struct WorkerGuard {
    inner: Arc<dyn Authorizer>,
    /// The master's realm (`[master] realm`): kills there are for masters only.
    realm: String,
    trust: BusTrust,
}

impl WorkerGuard {
    pub fn new(inner: Arc<dyn Authorizer>, realm: &str, trust: BusTrust) -> Self {
        WorkerGuard {
            inner,
            realm: realm.to_owned(),
            trust,
        }
    }
}

/// Whether a URI or pattern given to REGISTER/SUBSCRIBE/CALL/PUBLISH could reach the worker
/// namespace.
fn touches_worker_namespace(uri: &str, action: Action) -> bool {
    if uri.starts_with(WORKER_NAMESPACE) || WORKER_NAMESPACE.starts_with(uri) {
        return true;
    }
    // Registrations and subscriptions can be prefix or wildcard patterns; refuse every
    // pattern that could match (the match policy is not needed to be safe here).
    matches!(action, Action::Register | Action::Subscribe)
        && (uri.starts_with("switchyard.") || uri.split('.').next() == Some(""))
}

impl Authorizer for WorkerGuard {
    fn authorize(&self, realm: &str, authrole: &str, uri: &str, action: Action) -> Authorization {
        // Without an authid only the role can vouch: a master's in-process session is
        // `trusted` (the router lets those through before asking), an operator's role is
        // configured.
        self.authorize_session(realm, authrole, "", uri, action)
    }

    fn authorize_session(
        &self,
        realm: &str,
        authrole: &str,
        authid: &str,
        uri: &str,
        action: Action,
    ) -> Authorization {
        // REGISTER comes through authorize_match; anything else here is exact.
        self.authorize_match(realm, authrole, authid, uri, action, MatchPolicy::Exact)
    }

    fn authorize_match(
        &self,
        realm: &str,
        authrole: &str,
        authid: &str,
        uri: &str,
        action: Action,
        policy: MatchPolicy,
    ) -> Authorization {
        if authrole == WORKER_ROLE {
            return worker_may(authid, uri, action, policy);
        }
        let master = authrole == TRUSTED || self.trust.is_master(authid, authrole);
        if touches_worker_namespace(uri, action) {
            return if authrole == TRUSTED {
                Authorization::ALLOW
            } else {
                Authorization::DENY
            };
        }
        if action == Action::Call && uri.starts_with(KILL_PREFIX) && realm == self.realm && !master
        {
            return Authorization::DENY;
        }
        self.inner
            .authorize_match(realm, authrole, authid, uri, action, policy)
    }

    fn has_role(&self, realm: &str, authrole: &str) -> bool {
        authrole == WORKER_ROLE || self.inner.has_role(realm, authrole)
    }
}

/// A worker registers its own exact procedure names (`switchyard.worker.<own name>.<proc>`)
/// and does nothing else.
fn worker_may(authid: &str, uri: &str, action: Action, policy: MatchPolicy) -> Authorization {
    if action != Action::Register || policy != MatchPolicy::Exact {
        return Authorization::DENY;
    }
    let own = format!("{WORKER_NAMESPACE}{authid}.");
    let rest = uri.strip_prefix(&own);
    // One component after the worker's own prefix: `switchyard.worker.w1.run`.
    if !authid.is_empty() && rest.is_some_and(|r| !r.is_empty() && !r.contains('.')) {
        Authorization::ALLOW
    } else {
        Authorization::DENY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_router::auth::AllowAll;

    #[test]
    fn worker_namespace_rules() {
        let g = WorkerGuard::new(Arc::new(AllowAll), "buildbot", BusTrust::default());
        let allow = |role: &str, id: &str, uri: &str, a: Action| {
            g.authorize_session("buildbot", role, id, uri, a).allow
        };
        let register = |role: &str, id: &str, uri: &str, p: MatchPolicy| {
            g.authorize_match("buildbot", role, id, uri, Action::Register, p)
                .allow
        };
        // A worker registers exact names only: no pattern that could capture other calls.
        assert!(register(
            WORKER_ROLE,
            "w1",
            "switchyard.worker.w1.run",
            MatchPolicy::Exact
        ));
        for p in [MatchPolicy::Prefix, MatchPolicy::Wildcard] {
            assert!(!register(WORKER_ROLE, "w1", "switchyard.worker.w1.run", p));
        }
        // An identity a peer did not name is nobody.
        assert!(!register(
            WORKER_ROLE,
            "",
            "switchyard.worker..run",
            MatchPolicy::Exact
        ));
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

    #[test]
    fn only_masters_kill_sessions_on_the_master_realm() {
        let trust = BusTrust::new(&["bb-master".to_owned()]);
        let g = WorkerGuard::new(Arc::new(AllowAll), "buildbot", trust);
        let call = |realm: &str, role: &str, id: &str, uri: &str| {
            g.authorize_session(realm, role, id, uri, Action::Call)
                .allow
        };
        for uri in [
            "wamp.session.kill",
            "wamp.session.kill_by_authid",
            "wamp.session.kill_by_authrole",
            "wamp.session.kill_all",
        ] {
            assert!(!call("buildbot", "anonymous", "x", uri), "{uri}");
            assert!(!call("buildbot", WORKER_ROLE, "w1", uri), "{uri}");
            assert!(call("buildbot", TRUSTED, "master:m1", uri), "{uri}");
            assert!(call("buildbot", "bb-master", "bb1", uri), "{uri}");
            // Other realms keep the wrapped authorizer's rules (Crossbar's open default).
            assert!(call("realm1", "anonymous", "x", uri), "{uri}");
        }
        assert!(call("buildbot", "anonymous", "x", "wamp.session.count"));
    }

    #[test]
    fn bus_trust_needs_a_disclosed_master_identity() {
        let trust = BusTrust::new(&["bb-master".to_owned()]);
        let details = |authid: &str, authrole: &str| {
            let mut d = Dict::new();
            d.insert("publisher_authid".into(), Value::from(authid));
            d.insert("publisher_authrole".into(), Value::from(authrole));
            d
        };
        assert!(trust.published_by_master(&details("master:a", TRUSTED)));
        assert!(trust.published_by_master(&details("bb1", "bb-master")));
        assert!(!trust.published_by_master(&details("master:a", "anonymous")));
        assert!(!trust.published_by_master(&details("ui-events", TRUSTED)));
        assert!(!trust.published_by_master(&Dict::new()));
    }
}
