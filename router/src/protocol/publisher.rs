//! The publisher role: PUBLISH (PUBLISHED or ERROR when the publisher asks for an
//! acknowledgement).

use super::established::Established;
use crate::admission::disclosure;
use crate::auth::Action;
use crate::uri::{self, errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Message, Payload, Value};
use crate::WampError;

/// PUBLISH: checked, authorized, then fanned out by the broker.
pub(super) fn publish(
    s: &Established<'_>,
    request: Id,
    mut options: Dict,
    topic: String,
    payload: Payload,
) {
    let ack = matches!(options.get("acknowledge"), Some(Value::Bool(true)));
    let result = admit(s, &mut options, &topic).and_then(|()| {
        s.realm()
            .broker
            .publish(s.session(), &topic, &options, payload)
    });
    match result {
        Ok(publication) if ack => s.session().send(Message::Published {
            request,
            publication,
        }),
        Ok(_) => {}
        Err(e) if ack => s.error(e, code::PUBLISH, request),
        Err(e) => tracing::debug!(
            session = s.session().id(),
            "unacknowledged publish failed: {e}"
        ),
    }
}

/// A publication's URI (valid, outside `wamp.` unless router code) and authorization; a
/// permission's disclosure rule is applied to its options.
fn admit(s: &Established<'_>, options: &mut Dict, topic: &str) -> Result<(), WampError> {
    if !uri::is_valid(topic, s.uri_check(), MatchPolicy::Exact) {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("invalid topic URI '{topic}'"),
        ));
    }
    if uri::is_reserved(topic) && !s.internal {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("topic '{topic}' is in the reserved wamp. namespace"),
        ));
    }
    let auth = s.authorization(topic, Action::Publish, MatchPolicy::Exact);
    if !auth.allow {
        return Err(WampError::new(
            errors::NOT_AUTHORIZED,
            format!("not authorized to publish to '{topic}'"),
        ));
    }
    disclosure(options, s.disclosure_by_role(), auth, None);
    Ok(())
}
