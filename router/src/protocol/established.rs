//! What the role handlers (publisher, subscriber, caller, callee) see of an established
//! session: its realm and handle, what it owns, and the connection's authorization.

use std::sync::Arc;

use super::Joined;
use crate::auth::{Action, Authorization};
use crate::context::Context;
use crate::logsafe::Trunc;
use crate::realm::Realm;
use crate::session::SessionHandle;
use crate::uri::{MatchPolicy, UriCheck};
use crate::wire::{Id, Value};
use crate::WampError;

/// An established session, borrowed from its connection for one message.
pub(super) struct Established<'a> {
    pub(super) ctx: &'a Context,
    /// Router code (trusted in-process sessions): may use `wamp.` URIs, is not authorized
    /// and has no per-session caps.
    pub(super) internal: bool,
    pub(super) joined: &'a mut Joined,
}

impl Established<'_> {
    pub(super) fn realm(&self) -> &Arc<Realm> {
        &self.joined.realm
    }

    pub(super) fn session(&self) -> &SessionHandle {
        &self.joined.session
    }

    /// How strictly this realm checks URIs.
    pub(super) fn uri_check(&self) -> UriCheck {
        self.joined.realm.config.uri_check
    }

    /// Whether a permission's `disclose` alone decides disclosure (Crossbar realms).
    pub(super) fn disclosure_by_role(&self) -> bool {
        self.joined.realm.config.disclosure_by_role && !self.internal
    }

    /// What the authorizer says about `action` on `uri` (always allowed for router code).
    pub(super) fn authorization(
        &self,
        uri: &str,
        action: Action,
        policy: MatchPolicy,
    ) -> Authorization {
        if self.internal {
            return Authorization::ALLOW;
        }
        let info = &self.joined.session.info;
        let a = self.ctx.authorizer().authorize_match(
            self.joined.realm.name(),
            &info.authrole,
            &info.authid,
            uri,
            action,
            policy,
        );
        if !a.allow {
            tracing::debug!(session = info.id, authrole = %Trunc(&info.authrole),
                "not authorized to {} '{}'", action.name(), Trunc(uri));
        }
        a
    }

    pub(super) fn authorized(&self, uri: &str, action: Action, policy: MatchPolicy) -> bool {
        self.authorization(uri, action, policy).allow
    }

    /// Answers request `request` of type `request_type` with ERROR.
    pub(super) fn error(&self, e: WampError, request_type: u64, request: Id) {
        self.joined
            .session
            .send(e.to_message(request_type, request));
    }
}

/// The `match` option of SUBSCRIBE and REGISTER.
pub(super) fn match_policy(options: &crate::wire::Dict) -> Result<MatchPolicy, WampError> {
    MatchPolicy::from_option(options.get("match").and_then(Value::as_str)).ok_or_else(|| {
        WampError::new(
            crate::uri::errors::INVALID_ARGUMENT,
            "option 'match' must be exact, prefix or wildcard",
        )
    })
}
