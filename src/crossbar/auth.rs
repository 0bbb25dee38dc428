//! Crossbar `auth` blocks and realm roles, mapped onto the router's authenticators and
//! [`Role`]s. Secrets are read here and never appear in any report or log.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use switchyard_router::auth::cryptosign::{parse_public_key, Cryptosign, CryptosignPrincipal};
use switchyard_router::auth::dynamic::{DynamicAuth, DynamicMethod};
use switchyard_router::auth::methods::{AnonymousConfig, TransportAuth};
use switchyard_router::auth::roles::{Permission, Role};
use switchyard_router::auth::ticket::{Ticket, TicketPrincipal};
use switchyard_router::auth::wampcra::{Salt, WampCra, WampCraUser};
use switchyard_router::uri::{self, MatchPolicy, UriCheck};

use super::walk::{Obj, Walker};

/// Methods Crossbar knows that switchyard does not implement (yet).
const UNSUPPORTED_METHODS: &[&str] = &[
    "scram",
    "tls",
    "cookie",
    "anonymous-proxy",
    "cryptosign-proxy",
];

/// Reads a transport's (or WebSocket path's) `auth` block.
pub fn read_auth(w: &mut Walker, path: &str, v: &Value) -> Option<TransportAuth> {
    let obj = w.object(v, path)?;
    let mut auth = TransportAuth::default();
    for (method, config) in &obj {
        let mpath = format!("{path}.{method}");
        if UNSUPPORTED_METHODS.contains(&method.as_str()) {
            w.error(
                &mpath,
                &format!("authentication method \"{method}\" is not supported by switchyard"),
            );
            continue;
        }
        let Some(c) = w.object(config, &mpath) else {
            continue;
        };
        match c.get("type").and_then(Value::as_str) {
            Some("static") => {}
            Some("dynamic") => {
                let method = match method.as_str() {
                    "anonymous" => DynamicMethod::Anonymous,
                    "ticket" => DynamicMethod::Ticket,
                    "wampcra" => DynamicMethod::WampCra,
                    "cryptosign" => DynamicMethod::Cryptosign,
                    other => {
                        w.error(
                            &mpath,
                            &format!("unknown authentication method \"{other}\""),
                        );
                        continue;
                    }
                };
                w.keys(
                    &c,
                    &mpath,
                    &["type", "authenticator", "authenticator-realm"],
                    &[],
                );
                let Some(procedure) = w.string_at(&c, &mpath, "authenticator") else {
                    continue;
                };
                if !uri::is_valid(&procedure, UriCheck::Loose, MatchPolicy::Exact) {
                    w.error(
                        &format!("{mpath}.authenticator"),
                        &format!("\"{procedure}\" is not a valid procedure URI"),
                    );
                }
                let realm = w.opt_string(&c, &mpath, "authenticator-realm");
                auth.dynamic
                    .push(Arc::new(DynamicAuth::new(method, procedure, realm)));
                continue;
            }
            Some("function") => {
                w.error(
                    &format!("{mpath}.type"),
                    "\"function\" authenticators (Python code) are not supported; use \"static\" or \"dynamic\"",
                );
                continue;
            }
            Some(t) => {
                w.error(&format!("{mpath}.type"), &format!("unknown type \"{t}\""));
                continue;
            }
            None => {
                w.error(&format!("{mpath}.type"), "missing (\"static\")");
                continue;
            }
        }
        match method.as_str() {
            "anonymous" => {
                w.keys(&c, &mpath, &["type", "role", "authid", "realm"], &[]);
                auth.anonymous = Some(AnonymousConfig {
                    role: w
                        .opt_string(&c, &mpath, "role")
                        .unwrap_or_else(|| "anonymous".into()),
                    authid: w.opt_string(&c, &mpath, "authid"),
                    realm: w.opt_string(&c, &mpath, "realm"),
                });
            }
            "ticket" => auth.ticket = Some(read_ticket(w, &mpath, &c)),
            "wampcra" => auth.wampcra = Some(read_wampcra(w, &mpath, &c)),
            "cryptosign" => auth.cryptosign = Some(read_cryptosign(w, &mpath, &c)),
            other => w.error(
                &mpath,
                &format!("unknown authentication method \"{other}\""),
            ),
        }
    }
    Some(auth)
}

/// The principals map of a method: `{authid: {...}}`.
fn principals(w: &mut Walker, path: &str, obj: &Obj, key: &str) -> Vec<(String, String, Obj)> {
    let ppath = format!("{path}.{key}");
    let Some(map) = obj.get(key) else {
        w.error(&ppath, "missing");
        return Vec::new();
    };
    let Some(map) = w.object(map, &ppath) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (authid, p) in &map {
        let path = format!("{ppath}.{authid}");
        if let Some(o) = w.object(p, &path) {
            out.push((authid.clone(), path, o));
        }
    }
    out
}

/// A secret, literal or `${VAR}` from the environment as Crossbar's `maybe_from_env` reads it.
/// An unset variable is an error: Crossbar would leave a principal nobody can log in as.
fn secret(w: &mut Walker, p: &Obj, path: &str, key: &str) -> String {
    let Some(value) = w.string_at(p, path, key) else {
        return String::new();
    };
    let Some(var) = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .filter(|v| !v.is_empty())
    else {
        return value;
    };
    match std::env::var(var) {
        Ok(v) => v,
        Err(_) => {
            w.error(
                &format!("{path}.{key}"),
                &format!("environment variable ${var} is not set"),
            );
            String::new()
        }
    }
}

fn role_and_realm(w: &mut Walker, path: &str, p: &Obj) -> (String, Option<String>) {
    if p.get("extra").is_some() {
        w.warning(
            &format!("{path}.extra"),
            "authextra for the client is not sent by switchyard; ignored",
        );
    }
    let role = w.string_at(p, path, "role").unwrap_or_default();
    (role, w.opt_string(p, path, "realm"))
}

fn read_ticket(w: &mut Walker, path: &str, c: &Obj) -> Ticket {
    w.keys(c, path, &["type", "principals"], &[]);
    let mut t = Ticket::default();
    for (authid, ppath, p) in principals(w, path, c, "principals") {
        w.keys(&p, &ppath, &["ticket", "role", "realm", "extra"], &[]);
        let (role, realm) = role_and_realm(w, &ppath, &p);
        let ticket = secret(w, &p, &ppath, "ticket");
        t.principals.insert(
            authid,
            TicketPrincipal {
                ticket,
                role,
                realm,
            },
        );
    }
    t
}

fn read_wampcra(w: &mut Walker, path: &str, c: &Obj) -> WampCra {
    w.keys(c, path, &["type", "users"], &[]);
    let mut users = HashMap::new();
    for (authid, ppath, p) in principals(w, path, c, "users") {
        w.keys(
            &p,
            &ppath,
            &[
                "secret",
                "role",
                "realm",
                "extra",
                "salt",
                "iterations",
                "keylen",
            ],
            &[],
        );
        let (role, realm) = role_and_realm(w, &ppath, &p);
        let secret = secret(w, &p, &ppath, "secret");
        let salt = w.opt_string(&p, &ppath, "salt");
        let iterations = w.opt_u64(&p, &ppath, "iterations");
        let keylen = w.opt_u64(&p, &ppath, "keylen");
        // Crossbar salts only when all three are given; a partial set would silently fall
        // back to the plain secret, which clients configured for salting cannot match.
        let salt = match (salt, iterations, keylen) {
            (Some(salt), Some(i), Some(k))
                if i > 0 && i <= u64::from(u32::MAX) && (1..=1024).contains(&k) =>
            {
                Some(Salt {
                    salt,
                    iterations: i as u32,
                    keylen: k as usize,
                })
            }
            (None, None, None) => None,
            (Some(_), Some(_), Some(_)) => {
                w.error(&ppath, "iterations must be 1..2^32 and keylen 1..1024");
                None
            }
            _ => {
                w.error(&ppath, "salt, iterations and keylen must be given together");
                None
            }
        };
        users.insert(authid, WampCraUser::new(&secret, salt, role, realm));
    }
    WampCra { users }
}

fn read_cryptosign(w: &mut Walker, path: &str, c: &Obj) -> Cryptosign {
    w.keys(c, path, &["type", "principals", "trustroots"], &[]);
    if c.get("trustroots").is_some() {
        w.error(
            &format!("{path}.trustroots"),
            "certificate trustroots are not supported",
        );
    }
    let mut cs = Cryptosign::default();
    for (authid, ppath, p) in principals(w, path, c, "principals") {
        w.keys(
            &p,
            &ppath,
            &["authorized_keys", "role", "realm", "extra"],
            &[],
        );
        let (role, realm) = role_and_realm(w, &ppath, &p);
        let kpath = format!("{ppath}.authorized_keys");
        let keys = match p.get("authorized_keys") {
            Some(v) => w.array(v, &kpath).unwrap_or_default(),
            None => {
                w.error(&kpath, "missing");
                Vec::new()
            }
        };
        let mut authorized_keys = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match k.as_str().map(|s| (s, parse_public_key(s))) {
                Some((s, Ok(_))) => authorized_keys.push(s.to_ascii_lowercase()),
                Some((_, Err(e))) => w.error(&format!("{kpath}[{i}]"), &e),
                None => w.error(&format!("{kpath}[{i}]"), "must be a hex string"),
            }
        }
        cs.principals.insert(
            authid,
            CryptosignPrincipal {
                authorized_keys,
                role,
                realm,
            },
        );
    }
    cs
}

/// autobahn's `convert_starred_uri`: `a.b.*` is prefix `a.b.`, other stars are wildcard
/// components, no star is exact.
fn starred(uri: &str) -> (String, MatchPolicy) {
    let stars = uri.matches('*').count();
    if stars == 0 {
        (uri.to_owned(), MatchPolicy::Exact)
    } else if stars == 1 && uri.ends_with('*') {
        (uri[..uri.len() - 1].to_owned(), MatchPolicy::Prefix)
    } else {
        (uri.replace('*', ""), MatchPolicy::Wildcard)
    }
}

/// Reads one role: `{name, permissions: [...]}`.
pub fn read_role(w: &mut Walker, path: &str, v: &Value) -> Option<(String, Role)> {
    let obj = w.object(v, path)?;
    w.keys(
        &obj,
        path,
        &["name", "permissions", "id", "authorizer"],
        &[],
    );
    if obj.get("authorizer").is_some() {
        w.error(
            &format!("{path}.authorizer"),
            "dynamic authorizers are not supported; list static permissions",
        );
    }
    let name = w.string_at(&obj, path, "name")?;
    let perms = match obj.get("permissions") {
        Some(v) => w
            .array(v, &format!("{path}.permissions"))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut entries = Vec::new();
    for (i, p) in perms.iter().enumerate() {
        let ppath = format!("{path}.permissions[{i}]");
        let Some(p) = w.object(p, &ppath) else {
            continue;
        };
        w.keys(
            &p,
            &ppath,
            &["uri", "match", "allow", "disclose", "cache", "validate"],
            &[],
        );
        if p.get("validate").is_some() {
            w.error(
                &format!("{ppath}.validate"),
                "payload validation is not supported",
            );
        }
        let raw = w.opt_string(&p, &ppath, "uri").unwrap_or_default();
        let (uri_text, policy) = match p.get("match") {
            None | Some(Value::Null) => starred(&raw),
            Some(m) => match m.as_str().and_then(|m| MatchPolicy::from_option(Some(m))) {
                Some(policy) => (raw.clone(), policy),
                None => {
                    w.error(
                        &format!("{ppath}.match"),
                        "must be exact, prefix or wildcard",
                    );
                    continue;
                }
            },
        };
        // An empty prefix (`""` or `"*"`) matches every URI, as in Crossbar.
        let match_all = uri_text.is_empty() && policy == MatchPolicy::Prefix;
        if !match_all && !uri::is_valid(&uri_text, UriCheck::Loose, policy) {
            w.error(
                &format!("{ppath}.uri"),
                &format!(
                    "\"{raw}\" is not a valid URI for match \"{}\"",
                    policy.name()
                ),
            );
        }
        let mut perm = Permission::default();
        if let Some(a) = p.get("allow") {
            let apath = format!("{ppath}.allow");
            if let Some(a) = w.object(a, &apath) {
                w.keys(
                    &a,
                    &apath,
                    &["call", "register", "publish", "subscribe"],
                    &[],
                );
                perm.call = w.flag(&a, &apath, "call");
                perm.register = w.flag(&a, &apath, "register");
                perm.publish = w.flag(&a, &apath, "publish");
                perm.subscribe = w.flag(&a, &apath, "subscribe");
            }
        }
        if let Some(d) = p.get("disclose") {
            let dpath = format!("{ppath}.disclose");
            if let Some(d) = w.object(d, &dpath) {
                w.keys(&d, &dpath, &["caller", "publisher"], &[]);
                perm.disclose_caller = w.flag(&d, &dpath, "caller");
                perm.disclose_publisher = w.flag(&d, &dpath, "publisher");
            }
        }
        // `cache` only tunes Crossbar's authorization cache; switchyard's answers are the
        // same without one, so it is honored by construction.
        entries.push((policy, uri_text, perm));
    }
    Some((name, Role::new(entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starred_uris_as_autobahn_converts_them() {
        assert_eq!(starred("com.a"), ("com.a".into(), MatchPolicy::Exact));
        assert_eq!(starred("com.a.*"), ("com.a.".into(), MatchPolicy::Prefix));
        assert_eq!(starred("*"), ("".into(), MatchPolicy::Prefix));
        assert_eq!(
            starred("com.*.b.*"),
            ("com..b.".into(), MatchPolicy::Wildcard)
        );
    }
}
