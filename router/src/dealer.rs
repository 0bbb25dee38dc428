//! The dealer: registrations, call routing and the life of every pending invocation.
//!
//! A CALL picks a registration (exact, then longest prefix, then the most specific wildcard),
//! a callee by the registration's `invoke` policy, and becomes an INVOCATION with a request ID
//! from the callee's own sequence. The pending invocation is keyed by (callee, invocation ID)
//! and indexed by (caller, call request ID) for CANCEL. Every way a call can end goes through
//! [`State::finish`]: YIELD, callee ERROR, cancel, timeout, caller gone, callee gone; so a
//! caller always gets exactly one final answer and nothing leaks.
//!
//! The mesh plugs in through [`DealerHook`] (it hears when a local session becomes or stops
//! being a callee) and through stand-in sessions ([`crate::session::Link::Mesh`]): a callee on
//! another node is a stand-in callee here, so shared registrations count callees mesh-wide; a
//! call forwarded from another node enters through [`Dealer::invoke_forwarded`] with a
//! stand-in caller. Both ends therefore run the same pending/timeout/cancel logic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::Rng;

use crate::matcher::UriIndex;
use crate::options::bool_option;
use crate::session::SessionHandle;
use crate::uri::{errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Message, Payload, Value};
use crate::WampError;

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

/// How CANCEL treats the callee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CancelMode {
    /// Answer the caller now; the callee is not told and its answer is discarded.
    Skip,
    /// INTERRUPT the callee and answer the caller when the callee answers.
    Kill,
    /// INTERRUPT the callee and answer the caller now.
    KillNoWait,
}

struct Registration {
    id: Id,
    policy: MatchPolicy,
    procedure: String,
    invoke: InvokePolicy,
    /// In registration order (for `first`/`last`).
    callees: Vec<SessionHandle>,
    next: usize,
    /// When this node created it (Unix ms): the mesh's conflict rule prefers the older claim.
    created_ms: u64,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registration {
    fn info(&self) -> RegistrationInfo {
        RegistrationInfo {
            id: self.id,
            policy: self.policy,
            procedure: self.procedure.clone(),
            invoke: self.invoke,
            callees: self.callees.iter().map(|c| c.id()).collect(),
            created: crate::timestamp::utc_timestamp(
                UNIX_EPOCH + std::time::Duration::from_millis(self.created_ms),
            ),
        }
    }

    fn claim(&self) -> RegistrationClaim<'_> {
        RegistrationClaim {
            id: self.id,
            policy: self.policy,
            procedure: &self.procedure,
            invoke: self.invoke,
            created_ms: self.created_ms,
        }
    }
}

/// Everything needed to start one invocation, whether the caller is local or forwarded.
struct Invoke<'a> {
    caller: &'a SessionHandle,
    request: Id,
    callee: SessionHandle,
    registration: Id,
    policy: MatchPolicy,
    procedure: &'a str,
    receive_progress: bool,
    /// `caller`, `caller_authid`, `caller_authrole` when disclosed.
    disclosed: Option<[Value; 3]>,
    timeout_ms: u64,
    payload: Payload,
}

struct Pending {
    caller: SessionHandle,
    call_request: Id,
    callee: SessionHandle,
    receive_progress: bool,
    /// Set when a `kill` cancel was sent: the callee's answer becomes `canceled`.
    kill_requested: bool,
    timer: Option<tokio::task::AbortHandle>,
}

type InvocationKey = (Id, Id); // (callee session, invocation request)
type CallKey = (Id, Id); // (caller session, call request)

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

impl State {
    /// Ends a pending invocation: removes it everywhere and stops its timer.
    fn finish(&mut self, key: InvocationKey) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        self.by_call.remove(&(p.caller.id(), p.call_request));
        if let std::collections::hash_map::Entry::Occupied(mut n) =
            self.in_flight.entry(p.caller.id())
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        if let Some(t) = &p.timer {
            t.abort();
        }
        Some(p)
    }
}

fn error_to_caller(p: &Pending, error: &str, text: &str) {
    p.caller.send(Message::error(
        code::CALL,
        p.call_request,
        error,
        Some(text.to_owned()),
    ));
}

fn interrupt(p: &Pending, invocation: Id, mode: &str, reason: &str) {
    if p.callee.features.callee_call_canceling {
        let mut options = Dict::new();
        options.insert("mode".into(), Value::from(mode));
        options.insert("reason".into(), Value::from(reason));
        p.callee.send(Message::Interrupt {
            request: invocation,
            options,
        });
    }
}

impl Dealer {
    /// Registers `session` as a callee of `procedure` under `policy` and answers REGISTERED
    /// for `request`, under the lock, so REGISTERED precedes any INVOCATION.
    pub fn register(
        &self,
        session: &SessionHandle,
        request: Id,
        policy: MatchPolicy,
        procedure: &str,
        options: &Dict,
    ) -> Result<Id, WampError> {
        self.register_tracked(session, request, policy, procedure, options)
            .map(|(id, _)| id)
    }

    /// [`Dealer::register`], also saying whether the registration was created (meta events).
    pub fn register_tracked(
        &self,
        session: &SessionHandle,
        request: Id,
        policy: MatchPolicy,
        procedure: &str,
        options: &Dict,
    ) -> Result<(Id, bool), WampError> {
        let invoke = InvokePolicy::from_option(options.get("invoke"))?;
        let mut st = self.state.lock();
        if let Some(id) = st.index.get(policy, procedure).copied() {
            let reg = st.registrations.get_mut(&id).expect("index and map agree");
            if reg.invoke != invoke {
                // Crossbar's URI for this case, so clients written against it see the same.
                return Err(WampError::new(
                    errors::PROCEDURE_EXISTS_WITH_DIFFERENT_INVOCATION_POLICY,
                    format!(
                        "procedure '{procedure}' is registered with invoke '{}', not '{}'",
                        reg.invoke.name(),
                        invoke.name()
                    ),
                ));
            }
            if reg.invoke == InvokePolicy::Single {
                return Err(WampError::new(
                    errors::PROCEDURE_ALREADY_EXISTS,
                    format!("procedure '{procedure}' is already registered"),
                ));
            }
            if reg.callees.iter().any(|c| c.id() == session.id()) {
                return Err(WampError::new(
                    errors::PROCEDURE_ALREADY_EXISTS,
                    format!("this session already registered '{procedure}'"),
                ));
            }
            reg.callees.push(session.clone());
            if let (Some(hook), false) = (&st.hook, session.is_mesh_proxy()) {
                let reg = &st.registrations[&id];
                hook.callee(&reg.claim(), session, true);
            }
            session.send(Message::Registered {
                request,
                registration: id,
            });
            return Ok((id, false));
        }
        let id = crate::id::scoped_id(&st.scope, "registration", policy, procedure, |id| {
            st.registrations.contains_key(&id)
        });
        st.index.insert(policy, procedure, id);
        let reg = Registration {
            id,
            policy,
            procedure: procedure.to_owned(),
            invoke,
            callees: vec![session.clone()],
            next: 0,
            created_ms: now_ms(),
        };
        if let (Some(hook), false) = (&st.hook, session.is_mesh_proxy()) {
            hook.callee(&reg.claim(), session, true);
        }
        st.registrations.insert(id, reg);
        session.send(Message::Registered {
            request,
            registration: id,
        });
        Ok((id, true))
    }

    /// Sets the bound on each session's calls in flight (`limits.max_calls_in_flight`).
    pub fn set_call_limit(&self, limit: usize) {
        self.state.lock().call_limit = Some(limit.max(1));
    }

    /// Installs the mesh hook (once, when the mesh starts).
    pub fn set_hook(&self, hook: Arc<dyn DealerHook>) {
        self.state.lock().hook = Some(hook);
    }

    /// Calls `f` with every local callee of every registration, under the dealer's lock, so
    /// that a snapshot and the [`DealerHook::callee`] calls are ordered.
    pub fn for_each_local_callee(&self, mut f: impl FnMut(&RegistrationClaim<'_>, &SessionHandle)) {
        let st = self.state.lock();
        for reg in st.registrations.values() {
            for c in reg.callees.iter().filter(|c| !c.is_mesh_proxy()) {
                f(&reg.claim(), c);
            }
        }
    }

    /// The registration for exactly (`policy`, `procedure`), if any.
    pub fn existing(&self, policy: MatchPolicy, procedure: &str) -> Option<Existing> {
        let st = self.state.lock();
        let id = *st.index.get(policy, procedure)?;
        let reg = &st.registrations[&id];
        Some(Existing {
            id,
            invoke: reg.invoke,
            created_ms: reg.created_ms,
            callees: reg.callees.clone(),
        })
    }

    /// Removes `callee` from registration `id` on the router's initiative, telling a local
    /// callee with UNREGISTERED (registration revocation) and the reason.
    pub fn revoke(&self, callee: &SessionHandle, id: Id, reason: &str) {
        if self.unregister(callee.id(), id).is_ok() && !callee.is_mesh_proxy() {
            let mut details = Dict::new();
            details.insert("registration".into(), Value::from(id));
            details.insert("reason".into(), Value::from(reason));
            callee.send(Message::Unregistered {
                request: 0,
                details: Some(details),
            });
        }
    }

    /// Removes `session` as a callee of registration `id`.
    pub fn unregister(&self, session: Id, id: Id) -> Result<(), WampError> {
        self.unregister_tracked(session, id).map(|_| ())
    }

    /// [`Dealer::unregister`], also saying whether the registration was deleted, and its
    /// procedure (meta events).
    pub fn unregister_tracked(&self, session: Id, id: Id) -> Result<(bool, String), WampError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let Some(reg) = st.registrations.get_mut(&id) else {
            return Err(WampError::new(
                errors::NO_SUCH_REGISTRATION,
                format!("no registration {id}"),
            ));
        };
        let Some(pos) = reg.callees.iter().position(|c| c.id() == session) else {
            return Err(WampError::new(
                errors::NO_SUCH_REGISTRATION,
                format!("session is not a callee of registration {id}"),
            ));
        };
        let removed = reg.callees.remove(pos);
        if let (Some(hook), false) = (&st.hook, removed.is_mesh_proxy()) {
            hook.callee(&reg.claim(), &removed, false);
        }
        let procedure = reg.procedure.clone();
        if reg.callees.is_empty() {
            let policy = reg.policy;
            st.registrations.remove(&id);
            st.index.remove(policy, &procedure);
            return Ok((true, procedure));
        }
        Ok((false, procedure))
    }

    /// Routes a CALL to a callee. Errors are for the caller (no such procedure, bad options).
    pub fn call(
        &self,
        caller: &SessionHandle,
        request: Id,
        options: &Dict,
        procedure: &str,
        payload: Payload,
    ) -> Result<(), WampError> {
        let receive_progress = bool_option(options, "receive_progress")?.unwrap_or(false);
        let disclose = bool_option(options, "disclose_me")?.unwrap_or(false);
        let timeout_ms = match options.get("timeout") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                WampError::new(
                    errors::INVALID_ARGUMENT,
                    "option 'timeout' must be a non-negative integer (ms)",
                )
            })?,
        };
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.by_call.contains_key(&(caller.id(), request)) {
            return Err(WampError::new(
                errors::PROTOCOL_VIOLATION,
                format!("call request {request} is already in flight"),
            ));
        }
        let limit = st.call_limit.unwrap_or(DEFAULT_CALLS_IN_FLIGHT);
        if st.in_flight.get(&caller.id()).copied().unwrap_or(0) >= limit {
            return Err(WampError::new(
                errors::UNAVAILABLE,
                format!("too many calls in flight for this session (the limit is {limit})"),
            ));
        }
        let Some((policy, reg_id)) = st.index.best_match(procedure).map(|(p, id)| (p, *id)) else {
            return Err(WampError::new(
                errors::NO_SUCH_PROCEDURE,
                format!("no callee registered for procedure '{procedure}'"),
            ));
        };
        let reg = st
            .registrations
            .get_mut(&reg_id)
            .expect("index and map agree");
        let n = reg.callees.len();
        let pick = match reg.invoke {
            InvokePolicy::Single | InvokePolicy::First => 0,
            InvokePolicy::Last => n - 1,
            InvokePolicy::Random => rand::rng().random_range(0..n),
            InvokePolicy::RoundRobin => {
                let i = reg.next % n;
                reg.next = (i + 1) % n;
                i
            }
        };
        let callee = reg.callees[pick].clone();
        let disclosed = disclose.then(|| {
            [
                Value::from(caller.id()),
                Value::from(caller.info.authid.as_str()),
                Value::from(caller.info.authrole.as_str()),
            ]
        });
        self.start(
            st,
            Invoke {
                caller,
                request,
                callee,
                registration: reg_id,
                policy,
                procedure,
                receive_progress,
                disclosed,
                timeout_ms,
                payload,
            },
        );
        Ok(())
    }

    /// Starts a call that another node forwarded to one of our local callees. `caller` is
    /// the stand-in that carries answers back to the origin; the origin's choices (progress,
    /// timeout, disclosure) arrive in `call.details`.
    pub fn invoke_forwarded(
        &self,
        caller: &SessionHandle,
        request: Id,
        call: ForwardedCall<'_>,
        payload: Payload,
    ) -> Result<(), WampError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let gone = || {
            WampError::new(
                errors::NO_SUCH_PROCEDURE,
                format!(
                    "registration {} for '{}' is gone from this node",
                    call.registration, call.procedure
                ),
            )
        };
        let reg = st.registrations.get(&call.registration).ok_or_else(gone)?;
        let callee = reg
            .callees
            .iter()
            .find(|c| c.id() == call.callee && !c.is_mesh_proxy())
            .cloned()
            .ok_or_else(gone)?;
        let policy = reg.policy;
        let d = call.details;
        let disclosed = d.get("caller").map(|id| {
            let text = |k: &str| d.get(k).cloned().unwrap_or(Value::Null);
            [id.clone(), text("caller_authid"), text("caller_authrole")]
        });
        self.start(
            st,
            Invoke {
                caller,
                request,
                callee,
                registration: call.registration,
                policy,
                procedure: call.procedure,
                receive_progress: matches!(d.get("receive_progress"), Some(Value::Bool(true))),
                disclosed,
                timeout_ms: d.get("timeout").and_then(Value::as_u64).unwrap_or(0),
                payload,
            },
        );
        Ok(())
    }

    /// Sends the INVOCATION and records the pending call (with its timer).
    fn start(&self, st: &mut State, inv: Invoke<'_>) {
        let Invoke {
            caller,
            request,
            callee,
            registration,
            policy,
            procedure,
            receive_progress,
            disclosed,
            timeout_ms,
            payload,
        } = inv;
        let invocation = callee.next_request_id();
        let mut details = Dict::new();
        if policy != MatchPolicy::Exact {
            details.insert("procedure".into(), Value::from(procedure));
        }
        // Forwarded whatever the callee announced, as Crossbar does: wampy.js handles
        // progressive invocations without announcing the feature on its callee role.
        let progress = receive_progress;
        if progress {
            details.insert("receive_progress".into(), Value::Bool(true));
        }
        if let Some([id, authid, authrole]) = disclosed {
            details.insert("caller".into(), id);
            details.insert("caller_authid".into(), authid);
            details.insert("caller_authrole".into(), authrole);
        }
        if callee.is_mesh_proxy() {
            // The callee's node authorizes the call itself, against who the caller is here
            // (whether disclosed or not): the stand-in moves these into the `call` frame.
            // (Forwarded calls only go to local callees, so `caller` is a real local session.)
            details.insert(
                ORIGIN_CALLER_AUTHID.into(),
                Value::from(caller.info.authid.as_str()),
            );
            details.insert(
                ORIGIN_CALLER_AUTHROLE.into(),
                Value::from(caller.info.authrole.as_str()),
            );
        }
        if timeout_ms > 0 {
            details.insert("timeout".into(), Value::from(timeout_ms));
        }

        let key = (callee.id(), invocation);
        let timer = (timeout_ms > 0).then(|| {
            let dealer = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
                dealer.timed_out(key);
            })
            .abort_handle()
        });
        st.by_call.insert((caller.id(), request), key);
        *st.in_flight.entry(caller.id()).or_default() += 1;
        st.pending.insert(
            key,
            Pending {
                caller: caller.clone(),
                call_request: request,
                callee: callee.clone(),
                receive_progress: progress,
                kill_requested: false,
                timer,
            },
        );
        callee.send(Message::Invocation {
            request: invocation,
            registration,
            details,
            payload,
        });
    }

    fn timed_out(&self, key: InvocationKey) {
        let mut st = self.state.lock();
        if let Some(p) = st.finish(key) {
            interrupt(&p, key.1, "killnowait", errors::TIMEOUT);
            error_to_caller(&p, errors::TIMEOUT, "the call timed out");
        }
    }

    /// A callee's YIELD: a progressive result or the final one.
    pub fn yield_result(&self, callee: Id, request: Id, options: &Dict, payload: Payload) {
        let progress = matches!(options.get("progress"), Some(Value::Bool(true)));
        let mut st = self.state.lock();
        let key = (callee, request);
        if progress {
            if let Some(p) = st.pending.get(&key) {
                if p.receive_progress && !p.kill_requested {
                    let mut details = Dict::new();
                    details.insert("progress".into(), Value::Bool(true));
                    p.caller.send(Message::Result {
                        request: p.call_request,
                        details,
                        payload,
                    });
                }
            }
            return;
        }
        // An answer to a call already answered (skip-canceled, timed out) is dropped.
        if let Some(p) = st.finish(key) {
            if p.kill_requested {
                error_to_caller(&p, errors::CANCELED, "the call was canceled");
            } else {
                p.caller.send(Message::Result {
                    request: p.call_request,
                    details: Dict::new(),
                    payload,
                });
            }
        }
    }

    /// A callee's ERROR for an invocation, forwarded to the caller.
    pub fn invocation_error(&self, callee: Id, request: Id, error: String, payload: Payload) {
        let mut st = self.state.lock();
        if let Some(p) = st.finish((callee, request)) {
            let error = if p.kill_requested {
                errors::CANCELED.to_owned()
            } else {
                error
            };
            p.caller.send(Message::Error {
                request_type: code::CALL,
                request: p.call_request,
                details: Dict::new(),
                error,
                payload,
            });
        }
    }

    /// A caller's CANCEL.
    pub fn cancel(&self, caller: Id, request: Id, options: &Dict) -> Result<(), WampError> {
        // The INTERRUPT's reason: `canceled`, unless a peer node forwards a timed-out call
        // (then `wamp.error.timeout`, as a local timeout would say).
        let reason = match options.get("reason").and_then(Value::as_str) {
            Some(errors::TIMEOUT) => errors::TIMEOUT,
            _ => errors::CANCELED,
        };
        let mode = match options.get("mode").map(|v| v.as_str()) {
            None => CancelMode::KillNoWait,
            Some(Some("skip")) => CancelMode::Skip,
            Some(Some("kill")) => CancelMode::Kill,
            Some(Some("killnowait")) => CancelMode::KillNoWait,
            _ => {
                return Err(WampError::new(
                    errors::INVALID_ARGUMENT,
                    "option 'mode' must be one of skip, kill, killnowait",
                ))
            }
        };
        let mut st = self.state.lock();
        // Canceling a call that already ended is not an error: the answer is on its way.
        let Some(&key) = st.by_call.get(&(caller, request)) else {
            return Ok(());
        };
        let callee_cancels = st.pending[&key].callee.features.callee_call_canceling;
        // A callee that cannot be interrupted is treated as `skip`.
        let mode = if callee_cancels {
            mode
        } else {
            CancelMode::Skip
        };
        match mode {
            CancelMode::Skip | CancelMode::KillNoWait => {
                let p = st.finish(key).expect("indexed call is pending");
                if mode == CancelMode::KillNoWait {
                    interrupt(&p, key.1, "killnowait", reason);
                }
                error_to_caller(&p, errors::CANCELED, "the call was canceled");
            }
            CancelMode::Kill => {
                let p = st.pending.get_mut(&key).expect("indexed call is pending");
                if !p.kill_requested {
                    p.kill_requested = true;
                    interrupt(p, key.1, "kill", reason);
                }
            }
        }
        Ok(())
    }

    /// Cleans up after a session leaves: its registrations go, its callers get an error at
    /// once, and callees working for it are interrupted.
    pub fn remove_session(&self, session: Id, registrations: impl IntoIterator<Item = Id>) {
        for id in registrations {
            let _ = self.unregister(session, id);
        }
        let mut st = self.state.lock();
        let keys: Vec<InvocationKey> = st
            .pending
            .iter()
            .filter(|(_, p)| p.callee.id() == session || p.caller.id() == session)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let p = st.finish(key).expect("collected from the map");
            if p.callee.id() == session {
                error_to_caller(
                    &p,
                    errors::CANCELED,
                    "callee disconnected from in-flight request",
                );
            } else {
                interrupt(&p, key.1, "killnowait", errors::CANCELED);
            }
        }
    }

    /// A snapshot of every registration, for meta APIs and tests.
    pub fn registrations(&self) -> Vec<RegistrationInfo> {
        let st = self.state.lock();
        st.registrations.values().map(Registration::info).collect()
    }

    /// One registration, for the meta API.
    pub fn registration(&self, id: Id) -> Option<RegistrationInfo> {
        self.state
            .lock()
            .registrations
            .get(&id)
            .map(Registration::info)
    }

    /// The registration for exactly (`policy`, `procedure`), if any.
    pub fn lookup(&self, policy: MatchPolicy, procedure: &str) -> Option<Id> {
        self.state.lock().index.get(policy, procedure).copied()
    }

    /// The registration a call to `procedure` would reach.
    pub fn best_match(&self, procedure: &str) -> Option<Id> {
        self.state
            .lock()
            .index
            .best_match(procedure)
            .map(|(_, id)| *id)
    }

    /// How many invocations are in flight.
    pub fn pending_count(&self) -> usize {
        self.state.lock().pending.len()
    }
}
