//! The dealer: registrations, call routing and the life of every pending invocation.
//!
//! A CALL picks a registration (exact, then longest prefix, then the most specific wildcard),
//! a callee by the registration's `invoke` policy, and becomes an INVOCATION with a request ID
//! from the callee's own sequence. The pending invocation is keyed by (callee, invocation ID)
//! and indexed by (caller, call request ID) for CANCEL. Every way a call can end goes through
//! `State::finish` (`finish.rs`): YIELD, callee ERROR, cancel, timeout, caller gone, callee
//! gone; so a caller always gets exactly one final answer and nothing leaks.
//!
//! The mesh plugs in through [`DealerHook`] (it hears when a local session becomes or stops
//! being a callee) and through stand-in sessions ([`crate::session::Link::Mesh`]): a callee on
//! another node is a stand-in callee here, so shared registrations count callees mesh-wide; a
//! call forwarded from another node enters through [`Dealer::invoke_forwarded`] with a
//! stand-in caller. Both ends therefore run the same pending/timeout/cancel logic.
//!
//! Inside: this file holds the dealer's state, the hook and the types the mesh and the meta
//! API see; `registrations.rs` REGISTER/UNREGISTER and matching; `calls.rs` a CALL (local or
//! forwarded) becoming an INVOCATION; `finish.rs` every way a call in flight ends.

mod calls;
mod finish;
mod registrations;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::matcher::UriIndex;
use crate::session::SessionHandle;
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Value};
use crate::WampError;

use calls::{CallKey, InvocationKey, Pending};
use registrations::Registration;

/// How a shared registration picks among its callees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokePolicy {
    Single,
    RoundRobin,
    Random,
    First,
    Last,
}

impl InvokePolicy {
    pub fn from_option(v: Option<&Value>) -> Result<Self, WampError> {
        match v.map(|v| v.as_str()) {
            None | Some(Some("single")) => Ok(InvokePolicy::Single),
            Some(Some("roundrobin")) => Ok(InvokePolicy::RoundRobin),
            Some(Some("random")) => Ok(InvokePolicy::Random),
            Some(Some("first")) => Ok(InvokePolicy::First),
            Some(Some("last")) => Ok(InvokePolicy::Last),
            _ => Err(WampError::new(
                errors::INVALID_ARGUMENT,
                "option 'invoke' must be one of single, roundrobin, random, first, last",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InvokePolicy::Single => "single",
            InvokePolicy::RoundRobin => "roundrobin",
            InvokePolicy::Random => "random",
            InvokePolicy::First => "first",
            InvokePolicy::Last => "last",
        }
    }
}

/// A registration as the mesh announces it to peers.
#[derive(Clone, Copy, Debug)]
pub struct RegistrationClaim<'a> {
    pub id: Id,
    pub policy: MatchPolicy,
    pub procedure: &'a str,
    pub invoke: InvokePolicy,
    pub created_ms: u64,
}

/// The mesh's view of a dealer.
pub trait DealerHook: Send + Sync {
    /// A local session became (`present`) or stopped being a callee of a registration.
    /// Called under the dealer's lock, so calls come in the order of changes. Peers learn
    /// the callee's identity too: they authorize the registration themselves.
    fn callee(&self, registration: &RegistrationClaim<'_>, callee: &SessionHandle, present: bool);
}

/// An existing registration that conflicts with a new claim (see the mesh's conflict rule).
pub struct Existing {
    pub id: Id,
    pub invoke: InvokePolicy,
    pub created_ms: u64,
    pub callees: Vec<SessionHandle>,
}

/// INVOCATION details keys that carry the caller's identity to a mesh stand-in callee; the
/// stand-in moves them into its `call` frame (they never reach a client).
pub(crate) const ORIGIN_CALLER_AUTHID: &str = "x_switchyard_origin_authid";
pub(crate) const ORIGIN_CALLER_AUTHROLE: &str = "x_switchyard_origin_authrole";

/// A call forwarded by another node to one specific local callee.
pub struct ForwardedCall<'a> {
    /// The local registration the origin picked (it learned the ID from our announcement).
    pub registration: Id,
    pub callee: Id,
    /// The URI the caller called.
    pub procedure: &'a str,
    /// The origin's INVOCATION details: `receive_progress`, `timeout`, `caller*` disclosure.
    pub details: &'a Dict,
}

#[derive(Default)]
struct State {
    /// The realm's name: registration IDs are derived from it (see `id::scoped_id`).
    scope: String,
    registrations: HashMap<Id, Registration>,
    index: UriIndex<Id>,
    pending: HashMap<InvocationKey, Pending>,
    by_call: HashMap<CallKey, InvocationKey>,
    hook: Option<Arc<dyn DealerHook>>,
    /// Calls in flight per caller session, bounded by `call_limit`.
    in_flight: HashMap<Id, usize>,
    /// Most calls one session may have in flight (`None`: [`DEFAULT_CALLS_IN_FLIGHT`]).
    call_limit: Option<usize>,
}

/// The default bound on one session's calls in flight, so a caller cannot grow the
/// dealer's pending table without limit.
pub const DEFAULT_CALLS_IN_FLIGHT: usize = 10_000;

/// A realm's registrations and calls in flight.
#[derive(Default, Clone)]
pub struct Dealer {
    state: Arc<Mutex<State>>,
}

impl Dealer {
    /// The dealer of realm `name` (its registration IDs are derived from the name).
    pub fn for_realm(name: &str) -> Dealer {
        let d = Dealer::default();
        d.state.lock().scope = name.to_owned();
        d
    }
}

/// What a registration looks like from outside (meta API, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationInfo {
    pub id: Id,
    pub policy: MatchPolicy,
    pub procedure: String,
    pub invoke: InvokePolicy,
    pub callees: Vec<Id>,
    /// When the registration was created (ISO 8601, for the meta API).
    pub created: String,
}

impl Dealer {
    /// Sets the bound on each session's calls in flight (`limits.max_calls_in_flight`).
    pub fn set_call_limit(&self, limit: usize) {
        self.state.lock().call_limit = Some(limit.max(1));
    }

    /// Installs the mesh hook (once, when the mesh starts).
    pub fn set_hook(&self, hook: Arc<dyn DealerHook>) {
        self.state.lock().hook = Some(hook);
    }
    /// How many invocations are in flight.
    pub fn pending_count(&self) -> usize {
        self.state.lock().pending.len()
    }
}
