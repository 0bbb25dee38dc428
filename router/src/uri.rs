//! URI validation (loose and strict rules) and the error URIs the router sends.

/// How strictly a realm checks URIs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UriCheck {
    /// Components are non-empty and contain no whitespace, `.` or `#` (WAMP's loose rule).
    #[default]
    Loose,
    /// Components use only `[0-9a-z_]`.
    Strict,
}

/// How a subscription or registration matches URIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchPolicy {
    Exact,
    /// A plain string prefix: `com.example` matches `com.example2`, as Crossbar does.
    Prefix,
    /// Empty components match exactly one component.
    Wildcard,
}

impl MatchPolicy {
    pub fn from_option(v: Option<&str>) -> Option<MatchPolicy> {
        match v {
            None | Some("exact") => Some(MatchPolicy::Exact),
            Some("prefix") => Some(MatchPolicy::Prefix),
            Some("wildcard") => Some(MatchPolicy::Wildcard),
            Some(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }
}

fn component_ok(c: &str, check: UriCheck) -> bool {
    match check {
        UriCheck::Loose => !c.chars().any(|ch| ch.is_whitespace() || ch == '#'),
        UriCheck::Strict => c
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_'),
    }
}

/// Whether `uri` is valid for use under `policy` (patterns may have empty components).
pub fn is_valid(uri: &str, check: UriCheck, policy: MatchPolicy) -> bool {
    if uri.is_empty() {
        // An empty prefix would match everything; Crossbar refuses it too.
        return false;
    }
    // Wildcard patterns may have empty components anywhere, prefixes only as the last one
    // (`com.example.`), as Crossbar decides.
    let components = uri.split('.').count();
    uri.split('.').enumerate().all(|(i, c)| {
        if c.is_empty() {
            match policy {
                MatchPolicy::Wildcard => true,
                MatchPolicy::Prefix => i + 1 == components,
                MatchPolicy::Exact => false,
            }
        } else {
            component_ok(c, check)
        }
    })
}

/// Whether `uri` is in the `wamp.` namespace that only the router itself may publish or
/// register under.
pub fn is_reserved(uri: &str) -> bool {
    uri.starts_with("wamp.")
}

/// The standard error and close URIs.
pub mod errors {
    pub const INVALID_URI: &str = "wamp.error.invalid_uri";
    pub const NO_SUCH_PROCEDURE: &str = "wamp.error.no_such_procedure";
    pub const PROCEDURE_ALREADY_EXISTS: &str = "wamp.error.procedure_already_exists";
    /// Crossbar's error for a shared registration with a conflicting `invoke` policy.
    pub const PROCEDURE_EXISTS_WITH_DIFFERENT_INVOCATION_POLICY: &str =
        "wamp.error.procedure_exists_with_different_invocation_policy";
    pub const NO_SUCH_REGISTRATION: &str = "wamp.error.no_such_registration";
    pub const NO_SUCH_SUBSCRIPTION: &str = "wamp.error.no_such_subscription";
    pub const INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";
    pub const CANCELED: &str = "wamp.error.canceled";
    pub const PAYLOAD_SIZE_EXCEEDED: &str = "wamp.error.payload_size_exceeded";
    pub const PROTOCOL_VIOLATION: &str = "wamp.error.protocol_violation";
    pub const NOT_AUTHORIZED: &str = "wamp.error.not_authorized";
    pub const NO_SUCH_REALM: &str = "wamp.error.no_such_realm";
    pub const AUTHENTICATION_FAILED: &str = "wamp.error.authentication_failed";
    pub const NO_MATCHING_AUTH_METHOD: &str = "wamp.error.no_matching_auth_method";
    /// What Crossbar (and autobahn's `ApplicationError.NO_AUTH_METHOD`) sends when none of the
    /// offered authmethods is configured.
    pub const NO_AUTH_METHOD: &str = "wamp.error.no_auth_method";
    pub const NO_SUCH_PRINCIPAL: &str = "wamp.error.no_such_principal";
    pub const NO_SUCH_ROLE: &str = "wamp.error.no_such_role";
    pub const NO_SUCH_SESSION: &str = "wamp.error.no_such_session";
    pub const TIMEOUT: &str = "wamp.error.timeout";
    pub const OPTION_NOT_ALLOWED: &str = "wamp.error.option_not_allowed";
    pub const UNAVAILABLE: &str = "wamp.error.unavailable";
    pub const SYSTEM_SHUTDOWN: &str = "wamp.close.system_shutdown";
    pub const CLOSE_REALM: &str = "wamp.close.close_realm";
    pub const GOODBYE_AND_OUT: &str = "wamp.close.goodbye_and_out";
    pub const KILLED: &str = "wamp.close.killed";
}

#[cfg(test)]
mod tests {
    use super::*;
    use MatchPolicy::*;
    use UriCheck::*;

    #[test]
    fn loose_rules() {
        assert!(is_valid("com.myapp.topic1", Loose, Exact));
        assert!(is_valid("com.MyApp.Topic-1", Loose, Exact));
        assert!(!is_valid("com..topic", Loose, Exact));
        assert!(!is_valid("com.my app", Loose, Exact));
        assert!(!is_valid("com.a#b", Loose, Exact));
        assert!(!is_valid("", Loose, Exact));
        assert!(!is_valid(".com", Loose, Exact));
        assert!(is_valid("com..topic", Loose, Wildcard));
        assert!(is_valid(
            "org.buildbot.mq.buildrequests..new",
            Loose,
            Wildcard
        ));
        assert!(is_valid("com.example.", Loose, Prefix));
        assert!(!is_valid("conf..bad", Loose, Prefix));
        assert!(!is_valid(".com.example", Loose, Prefix));
        assert!(is_valid("conf..bad", Loose, Wildcard));
    }

    #[test]
    fn strict_rules() {
        assert!(is_valid("com.myapp.topic_1", Strict, Exact));
        assert!(!is_valid("com.MyApp", Strict, Exact));
        assert!(!is_valid("com.my-app", Strict, Exact));
    }
}
