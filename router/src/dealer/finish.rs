//! How a call in flight ends. Every ending goes through `State::finish`: YIELD (progressive
//! results pass on the way), callee ERROR, CANCEL (skip, kill, killnowait), timeout, caller
//! gone, callee gone; so a caller always gets exactly one final answer and nothing leaks.

use crate::uri::errors;
use crate::wire::{code, Dict, Id, Message, Payload, Value};
use crate::WampError;

use super::calls::{InvocationKey, Pending};
use super::{Dealer, State};

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
    /// The timer of a call with a `timeout` fired.
    pub(super) fn timed_out(&self, key: InvocationKey) {
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
}
