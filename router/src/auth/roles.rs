//! Crossbar's static roles: per realm, roles with permissions on URIs.
//!
//! A permission applies to a URI by `match` (exact, prefix, wildcard). Resolution follows
//! Crossbar's documented order: an exact permission, else the most specific matching wildcard,
//! else the longest string prefix, else deny. The `trusted` role exists on every realm and may
//! do anything (Crossbar's router-internal role).

use std::collections::HashMap;

use super::{Action, Authorization, Authorizer};
use crate::matcher::UriIndex;
use crate::uri::MatchPolicy;

/// One entry of a role's `permissions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permission {
    pub call: bool,
    pub register: bool,
    pub publish: bool,
    pub subscribe: bool,
    /// Force caller disclosure on calls allowed by this permission.
    pub disclose_caller: bool,
    /// Force publisher disclosure on publications allowed by this permission.
    pub disclose_publisher: bool,
}

impl Permission {
    fn authorize(&self, action: Action) -> Authorization {
        let (allow, disclose) = match action {
            Action::Call => (self.call, self.disclose_caller),
            Action::Register => (self.register, false),
            Action::Publish => (self.publish, self.disclose_publisher),
            Action::Subscribe => (self.subscribe, false),
        };
        Authorization {
            allow,
            disclose: allow && disclose,
        }
    }
}

/// A role's permissions, indexed by URI pattern.
#[derive(Debug, Default)]
pub struct Role {
    permissions: UriIndex<Permission>,
}

impl Role {
    /// Builds a role; a later permission for the same (policy, URI) replaces an earlier one.
    pub fn new(permissions: impl IntoIterator<Item = (MatchPolicy, String, Permission)>) -> Role {
        let mut index = UriIndex::default();
        for (policy, uri, p) in permissions {
            index.insert(policy, &uri, p);
        }
        Role { permissions: index }
    }

    /// The permission that governs `uri`: exact, then wildcard, then longest prefix.
    pub fn permission(&self, uri: &str) -> Option<&Permission> {
        let p = &self.permissions;
        p.exact(uri)
            .or_else(|| p.best_wildcard(uri))
            .or_else(|| p.longest_prefix(uri))
    }

    pub fn authorize(&self, uri: &str, action: Action) -> Authorization {
        self.permission(uri)
            .map_or(Authorization::DENY, |p| p.authorize(action))
    }
}

/// Realms → roles → permissions, as Crossbar's router workers configure them.
#[derive(Debug, Default)]
pub struct RoleAuthorizer {
    realms: HashMap<String, HashMap<String, Role>>,
}

/// The role every realm has and that may do anything.
pub const TRUSTED: &str = "trusted";

impl RoleAuthorizer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_role(&mut self, realm: &str, name: &str, role: Role) {
        self.realms
            .entry(realm.to_owned())
            .or_default()
            .insert(name.to_owned(), role);
    }
}

impl Authorizer for RoleAuthorizer {
    fn authorize(&self, realm: &str, authrole: &str, uri: &str, action: Action) -> Authorization {
        if authrole == TRUSTED {
            // Crossbar discloses trusted callers and publishers automatically.
            return Authorization {
                allow: true,
                disclose: matches!(action, Action::Call | Action::Publish),
            };
        }
        self.realms
            .get(realm)
            .and_then(|roles| roles.get(authrole))
            .map_or(Authorization::DENY, |r| r.authorize(uri, action))
    }

    fn has_role(&self, realm: &str, authrole: &str) -> bool {
        // Crossbar lets `anonymous` join a realm without that role (it is then denied every
        // action), and `trusted` always exists.
        authrole == TRUSTED
            || authrole == "anonymous"
            || self
                .realms
                .get(realm)
                .is_some_and(|roles| roles.contains_key(authrole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MatchPolicy::*;

    fn allow_all() -> Permission {
        Permission {
            call: true,
            register: true,
            publish: true,
            subscribe: true,
            ..Default::default()
        }
    }

    #[test]
    fn resolution_order_exact_wildcard_prefix() {
        let call_only = Permission {
            call: true,
            disclose_caller: true,
            ..Default::default()
        };
        let role = Role::new([
            (Prefix, "com.app.".to_string(), allow_all()),
            (
                Wildcard,
                "com.app..admin".to_string(),
                Permission::default(),
            ),
            (Exact, "com.app.x.admin".to_string(), call_only.clone()),
        ]);
        // Prefix alone.
        assert!(role.authorize("com.app.topic", Action::Publish).allow);
        // A matching wildcard beats the prefix.
        assert!(!role.authorize("com.app.y.admin", Action::Call).allow);
        // Exact beats both, and forces disclosure.
        let a = role.authorize("com.app.x.admin", Action::Call);
        assert_eq!(
            a,
            Authorization {
                allow: true,
                disclose: true
            }
        );
        assert!(!role.authorize("com.app.x.admin", Action::Publish).allow);
        // Nothing matches: deny.
        assert!(!role.authorize("org.other", Action::Subscribe).allow);
        // Prefix is a plain string prefix.
        let role = Role::new([(Prefix, "com.ex".to_string(), allow_all())]);
        assert!(role.authorize("com.example", Action::Call).allow);
    }

    #[test]
    fn longest_prefix_wins() {
        let role = Role::new([
            (Prefix, "com.".to_string(), allow_all()),
            (Prefix, "com.secret.".to_string(), Permission::default()),
        ]);
        assert!(role.authorize("com.public", Action::Call).allow);
        assert!(!role.authorize("com.secret.x", Action::Call).allow);
    }

    #[test]
    fn roles_per_realm_and_trusted() {
        let mut a = RoleAuthorizer::new();
        a.add_role(
            "r1",
            "user",
            Role::new([(Prefix, String::new(), allow_all())]),
        );
        assert!(
            a.authorize("r1", "user", "any.thing", Action::Register)
                .allow
        );
        assert!(
            !a.authorize("r2", "user", "any.thing", Action::Register)
                .allow
        );
        assert!(!a.authorize("r1", "nobody", "any.thing", Action::Call).allow);
        assert!(a.authorize("r2", TRUSTED, "x", Action::Call).allow);
        assert!(a.has_role("r1", "user"));
        assert!(!a.has_role("r1", "nobody"));
        assert!(a.has_role("r2", "anonymous"));
    }
}
