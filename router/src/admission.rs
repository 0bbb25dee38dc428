//! What the router checks in a client's requests before acting on them, outside the session
//! state machine: the sizes of HELLO's names, the per-session caps on subscriptions and
//! registrations, and whether a CALL or PUBLISH discloses its sender.

use crate::auth::Authorization;
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

/// Sets `disclose_me` on a PUBLISH's options, or a CALL's of `procedure`: a role may force
/// disclosure; with `by_role` (a network session on a realm of a Crossbar config,
/// [`crate::RealmConfig::disclosure_by_role`]) the role alone decides, and the client's own
/// `disclose_me` is overridden, as Crossbar does. Calls of the router's own `wamp.`
/// procedures always disclose (kill_all spares its caller).
pub(crate) fn disclosure(
    options: &mut Dict,
    by_role: bool,
    auth: Authorization,
    procedure: Option<&str>,
) {
    if auth.disclose || procedure.is_some_and(uri::is_reserved) {
        options.insert("disclose_me".into(), Value::Bool(true));
    } else if by_role {
        options.insert("disclose_me".into(), Value::Bool(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked() -> Dict {
        let mut d = Dict::new();
        d.insert("disclose_me".into(), Value::Bool(true));
        d
    }

    #[test]
    fn by_role_the_role_alone_decides() {
        let mut o = asked();
        disclosure(&mut o, true, Authorization::ALLOW, None);
        assert_eq!(o.get("disclose_me"), Some(&Value::Bool(false)));
        let forced = Authorization {
            allow: true,
            disclose: true,
        };
        let mut o = Dict::new();
        disclosure(&mut o, true, forced, Some("com.a"));
        assert_eq!(o.get("disclose_me"), Some(&Value::Bool(true)));
        let mut o = Dict::new();
        disclosure(
            &mut o,
            true,
            Authorization::ALLOW,
            Some("wamp.session.kill"),
        );
        assert_eq!(o.get("disclose_me"), Some(&Value::Bool(true)));
    }

    #[test]
    fn otherwise_the_client_may_ask() {
        let mut o = asked();
        disclosure(&mut o, false, Authorization::ALLOW, Some("com.a"));
        assert_eq!(o.get("disclose_me"), Some(&Value::Bool(true)));
        let mut o = Dict::new();
        disclosure(&mut o, false, Authorization::ALLOW, None);
        assert_eq!(o.get("disclose_me"), None);
    }

    #[test]
    fn hello_names_are_bounded() {
        let mut d = Dict::new();
        d.insert("authid".into(), Value::from("a".repeat(256).as_str()));
        assert!(hello_sizes("realm1", &d).is_ok());
        d.insert("authrole".into(), Value::from("r".repeat(257).as_str()));
        let e = hello_sizes("realm1", &d).unwrap_err();
        assert!(e.contains("authrole is 257 bytes"), "{e}");
        assert!(hello_sizes(&"x".repeat(300), &Dict::new()).is_err());
    }
}
