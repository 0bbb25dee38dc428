//! Registrations: REGISTER (shared registrations and their `invoke` policy), UNREGISTER and
//! revocation, and the lookups (exact, best match) the call path and the meta API use.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::session::SessionHandle;
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Message, Value};
use crate::WampError;

use super::{Dealer, Existing, InvokePolicy, RegistrationClaim, RegistrationInfo};

/// A procedure under a match policy, and its callees.
pub(super) struct Registration {
    pub(super) id: Id,
    pub(super) policy: MatchPolicy,
    pub(super) procedure: String,
    pub(super) invoke: InvokePolicy,
    /// In registration order (for `first`/`last`).
    pub(super) callees: Vec<SessionHandle>,
    pub(super) next: usize,
    /// When this node created it (Unix ms): the mesh's conflict rule prefers the older claim.
    pub(super) created_ms: u64,
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

    pub(super) fn claim(&self) -> RegistrationClaim<'_> {
        RegistrationClaim {
            id: self.id,
            policy: self.policy,
            procedure: &self.procedure,
            invoke: self.invoke,
            created_ms: self.created_ms,
        }
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

    /// Calls `f` with every local callee of every registration, under the dealer's lock, so
    /// that a snapshot and the [`DealerHook::callee`](super::DealerHook::callee) calls are
    /// ordered.
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
}
