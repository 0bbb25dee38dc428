//! The caller role: CALL and CANCEL. The dealer answers with RESULT or ERROR when the call
//! ends (see ARCHITECTURE.md, "Dealer: the life of a call").

use super::established::Established;
use crate::admission::disclosure;
use crate::auth::Action;
use crate::uri::{self, errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Payload};
use crate::WampError;

/// CALL: checked, authorized, then routed by the dealer; an error is answered at once.
pub(super) fn call(
    s: &Established<'_>,
    request: Id,
    mut options: Dict,
    procedure: String,
    payload: Payload,
) {
    let result = admit(s, &mut options, &procedure).and_then(|()| {
        s.realm()
            .dealer
            .call(s.session(), request, &options, &procedure, payload)
    });
    if let Err(e) = result {
        s.error(e, code::CALL, request);
    }
}

/// A call's URI and authorization; a permission's disclosure rule is applied to its options.
fn admit(s: &Established<'_>, options: &mut Dict, procedure: &str) -> Result<(), WampError> {
    if !uri::is_valid(procedure, s.uri_check(), MatchPolicy::Exact) {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("invalid procedure URI '{procedure}'"),
        ));
    }
    let auth = s.authorization(procedure, Action::Call, MatchPolicy::Exact);
    if !auth.allow {
        return Err(WampError::new(
            errors::NOT_AUTHORIZED,
            format!("not authorized to call '{procedure}'"),
        ));
    }
    disclosure(options, s.disclosure_by_role(), auth, Some(procedure));
    Ok(())
}

/// CANCEL of one of the session's calls in flight.
pub(super) fn cancel(s: &Established<'_>, request: Id, options: &Dict) {
    if let Err(e) = s.realm().dealer.cancel(s.session().id(), request, options) {
        s.error(e, code::CANCEL, request);
    }
}
