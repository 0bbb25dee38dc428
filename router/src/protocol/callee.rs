//! The callee role: REGISTER and UNREGISTER, and the answers to INVOCATION (YIELD, ERROR).
//! The dealer queues REGISTERED itself, under its lock, so it precedes any INVOCATION;
//! UNREGISTERED is sent here.

use super::established::{match_policy, Established};
use crate::admission::cap_error;
use crate::auth::Action;
use crate::cluster::ReplyHold;
use crate::uri::{self, errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Message, Payload};
use crate::WampError;

/// REGISTER: checked, authorized and within the session's cap, then the dealer's.
pub(super) fn register(s: &mut Established<'_>, request: Id, options: &Dict, procedure: &str) {
    // REGISTERED waits for the mesh's peers to apply the change and to have its meta
    // events (cluster::ReplyHold).
    let hold = ReplyHold::begin(s.joined.realm.cluster(), &s.joined.session);
    let result = admit(s, options, procedure).and_then(|policy| {
        s.realm()
            .dealer
            .register_tracked(s.session(), request, policy, procedure, options)
    });
    let ok = result.is_ok();
    match result {
        Ok((registration, created)) => {
            s.joined.registrations.insert(registration);
            s.realm()
                .registration_events(s.session(), registration, procedure, true, created);
        }
        Err(e) => s.error(e, code::REGISTER, request),
    }
    hold.finish(ok);
}

/// A registration's match policy and URI (outside `wamp.` unless router code), its
/// authorization, and the session's cap.
fn admit(s: &Established<'_>, options: &Dict, procedure: &str) -> Result<MatchPolicy, WampError> {
    let policy = match_policy(options)?;
    if !uri::is_valid(procedure, s.uri_check(), policy) {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!(
                "invalid procedure URI '{procedure}' for match '{}'",
                policy.name()
            ),
        ));
    }
    if uri::is_reserved(procedure) && !s.internal {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("procedure '{procedure}' is in the reserved wamp. namespace"),
        ));
    }
    if !s.authorized(procedure, Action::Register, policy) {
        return Err(WampError::new(
            errors::NOT_AUTHORIZED,
            format!("not authorized to register '{procedure}'"),
        ));
    }
    let max = s.ctx.limits().max_registrations_per_session;
    if !s.internal && s.joined.registrations.len() >= max {
        return Err(cap_error("registrations", max));
    }
    Ok(policy)
}

/// UNREGISTER of one of the session's own registrations.
pub(super) fn unregister(s: &mut Established<'_>, request: Id, registration: Id) {
    // UNREGISTERED waits for the mesh's peers to apply the change and to have its meta
    // events (cluster::ReplyHold).
    let hold = ReplyHold::begin(s.joined.realm.cluster(), &s.joined.session);
    let result = if s.joined.registrations.remove(&registration) {
        s.realm()
            .dealer
            .unregister_tracked(s.session().id(), registration)
    } else {
        Err(WampError::new(
            errors::NO_SUCH_REGISTRATION,
            format!("not registered as {registration}"),
        ))
    };
    let ok = result.is_ok();
    match result {
        Ok((deleted, procedure)) => {
            s.session().send(Message::Unregistered {
                request,
                details: None,
            });
            s.realm()
                .registration_events(s.session(), registration, &procedure, false, deleted);
        }
        Err(e) => s.error(e, code::UNREGISTER, request),
    }
    hold.finish(ok);
}

/// YIELD: a result (final or progressive) of an INVOCATION to this session.
pub(super) fn yield_result(s: &Established<'_>, request: Id, options: &Dict, payload: Payload) {
    s.realm()
        .dealer
        .yield_result(s.session().id(), request, options, payload);
}

/// ERROR answering an INVOCATION to this session.
pub(super) fn invocation_error(s: &Established<'_>, request: Id, error: String, payload: Payload) {
    s.realm()
        .dealer
        .invocation_error(s.session().id(), request, error, payload);
}
