//! Calls in flight: a CALL (or a call another node forwarded) picks a callee and becomes an
//! INVOCATION, recorded as pending (with its timer) until it ends (`finish.rs`).

use std::time::Duration;

use rand::Rng;

use crate::options::bool_option;
use crate::session::SessionHandle;
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Message, Payload, Value};
use crate::WampError;

use super::{
    Dealer, ForwardedCall, InvokePolicy, State, DEFAULT_CALLS_IN_FLIGHT, ORIGIN_CALLER_AUTHID,
    ORIGIN_CALLER_AUTHROLE,
};

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

/// A call in flight: who waits for its answer, and who works on it.
pub(super) struct Pending {
    pub(super) caller: SessionHandle,
    pub(super) call_request: Id,
    pub(super) callee: SessionHandle,
    pub(super) receive_progress: bool,
    /// Set when a `kill` cancel was sent: the callee's answer becomes `canceled`.
    pub(super) kill_requested: bool,
    pub(super) timer: Option<tokio::task::AbortHandle>,
}

pub(super) type InvocationKey = (Id, Id); // (callee session, invocation request)
pub(super) type CallKey = (Id, Id); // (caller session, call request)

impl Dealer {
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
}
