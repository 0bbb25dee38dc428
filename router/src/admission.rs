//! What the router checks in a client's requests before acting on them, outside the session
//! state machine: the sizes of HELLO's names, the per-session caps on subscriptions and
//! registrations, and whether a CALL or PUBLISH discloses its sender.

use crate::auth::Authorization;
use crate::realm::Realm;
use crate::uri::{self, errors};
use crate::wire::{Dict, Value};
use crate::WampError;

/// Longest realm name, `authid` and `authrole` a HELLO may carry, in bytes.
pub const MAX_HELLO_NAME_BYTES: usize = 256;

/// Refuses a HELLO whose realm, `authid` or `authrole` is longer than
/// [`MAX_HELLO_NAME_BYTES`], before any authenticator sees (or logs) them.
pub(crate) fn hello_sizes(realm: &str, details: &Dict) -> Result<(), String> {
    let long = |what: &str, len: usize| {
        format!("HELLO {what} is {len} bytes; at most {MAX_HELLO_NAME_BYTES} are accepted")
    };
    if realm.len() > MAX_HELLO_NAME_BYTES {
        return Err(long("realm", realm.len()));
    }
    for key in ["authid", "authrole"] {
        if let Some(Value::String(v)) = details.get(key) {
            if v.len() > MAX_HELLO_NAME_BYTES {
                return Err(long(key, v.len()));
            }
        }
    }
    Ok(())
}

/// The ERROR for a SUBSCRIBE or REGISTER past a per-session cap (`what`: "subscriptions" or
/// "registrations"): `wamp.error.unavailable`, as for too many calls in flight.
pub(crate) fn cap_error(what: &str, max: usize) -> WampError {
    WampError::new(
        errors::UNAVAILABLE,
        format!(
            "this session holds {max} {what}, the most one session may hold \
             (limits.max_{what}_per_session)"
        ),
    )
}

/// Sets `disclose_me` on a PUBLISH's options, or a CALL's of `procedure`, as the realm
/// decides: a role may force disclosure; on a realm of a Crossbar config the role alone
/// decides (the client's own `disclose_me` is overridden, as Crossbar does). Calls of the
/// router's own `wamp.` procedures always disclose (kill_all spares its caller).
pub(crate) fn disclosure(
    options: &mut Dict,
    realm: &Realm,
    auth: Authorization,
    procedure: Option<&str>,
) {
    if auth.disclose || procedure.is_some_and(uri::is_reserved) {
        options.insert("disclose_me".into(), Value::Bool(true));
    } else if realm.config.disclosure_by_role {
        options.insert("disclose_me".into(), Value::Bool(false));
    }
}
