//! WAMP-CRA with static users, plain and salted, byte for byte as autobahn computes it.
//!
//! The challenge is a JSON string (authid, authrole, authmethod, authprovider, session, nonce,
//! timestamp); the signature is `base64(HMAC-SHA256(key, challenge))`. The key is the secret,
//! or for salted users `base64(PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen))`, whose
//! base64 *text* is the HMAC key (autobahn's `derive_key`). The derived key is computed once
//! when the config is loaded, not per HELLO: PBKDF2 is deliberately slow and a flood of HELLOs
//! must not make the router burn CPU on it.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{AuthDecision, Hello, Identity, PendingAuth};
use crate::uri::errors;
use crate::wire::{Dict, Id, Value};

type HmacSha256 = Hmac<Sha256>;

/// The PBKDF2 parameters a salted user's challenge announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salt {
    pub salt: String,
    pub iterations: u32,
    pub keylen: usize,
}

/// One WAMP-CRA user (`auth.wampcra.users.<authid>`).
#[derive(Clone)]
pub struct WampCraUser {
    /// The HMAC key: the secret itself, or the base64 text of its PBKDF2 derivation.
    key: Vec<u8>,
    salt: Option<Salt>,
    pub role: String,
    pub realm: Option<String>,
}

impl std::fmt::Debug for WampCraUser {
    // The key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WampCraUser")
            .field("salt", &self.salt)
            .field("role", &self.role)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl WampCraUser {
    pub fn new(secret: &str, salt: Option<Salt>, role: String, realm: Option<String>) -> Self {
        let key = match &salt {
            None => secret.as_bytes().to_vec(),
            Some(s) => derive_key(secret, &s.salt, s.iterations, s.keylen).into_bytes(),
        };
        WampCraUser {
            key,
            salt,
            role,
            realm,
        }
    }
}

/// autobahn's `derive_key`: base64 of PBKDF2-HMAC-SHA256.
pub fn derive_key(secret: &str, salt: &str, iterations: u32, keylen: usize) -> String {
    let mut out = vec![0u8; keylen];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt.as_bytes(), iterations, &mut out);
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// autobahn's `compute_wcs`: base64 of HMAC-SHA256(key, challenge).
pub fn compute_signature(key: &[u8], challenge: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(challenge.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Clone, Debug, Default)]
pub struct WampCra {
    pub users: HashMap<String, WampCraUser>,
}

struct PendingCra {
    key: Vec<u8>,
    challenge: String,
    identity: Identity,
}

impl WampCra {
    pub fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let Some(authid) = hello.authid() else {
            return AuthDecision::deny(
                errors::NO_SUCH_PRINCIPAL,
                "WAMP-CRA needs an authid in HELLO",
            );
        };
        let Some(user) = self.users.get(authid) else {
            return AuthDecision::deny(
                errors::NO_SUCH_PRINCIPAL,
                format!("no principal with authid \"{authid}\" exists"),
            );
        };
        challenge(authid, user, hello.session, "static")
    }
}

/// The CHALLENGE for `user` (its pending state checks the answer).
pub fn challenge(
    authid: &str,
    user: &WampCraUser,
    session: Id,
    authprovider: &str,
) -> AuthDecision {
    {
        let identity = Identity {
            authid: authid.to_owned(),
            authrole: user.role.clone(),
            authmethod: "wampcra".into(),
            authprovider: authprovider.into(),
            realm: user.realm.clone(),
        };
        let challenge = serde_json::json!({
            "authid": identity.authid,
            "authrole": identity.authrole,
            "authmethod": "wampcra",
            "authprovider": authprovider,
            "session": session,
            "nonce": nonce(),
            "timestamp": crate::timestamp::utc_timestamp(std::time::SystemTime::now()),
        })
        .to_string();
        let mut extra = Dict::new();
        extra.insert("challenge".into(), Value::from(challenge.as_str()));
        if let Some(s) = &user.salt {
            extra.insert("salt".into(), Value::from(s.salt.as_str()));
            extra.insert("iterations".into(), Value::from(u64::from(s.iterations)));
            extra.insert("keylen".into(), Value::from(s.keylen as u64));
        }
        AuthDecision::Challenge {
            method: "wampcra".into(),
            extra,
            pending: Box::new(PendingCra {
                key: user.key.clone(),
                challenge,
                identity,
            }),
        }
    }
}

impl PendingAuth for PendingCra {
    fn authenticate(self: Box<Self>, signature: &str, _extra: &Dict) -> AuthDecision {
        let denied = || {
            AuthDecision::deny(
                errors::AUTHENTICATION_FAILED,
                "WAMP-CRA client signature is invalid",
            )
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
            return denied();
        };
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(self.challenge.as_bytes());
        // `verify_slice` compares in constant time.
        match mac.verify_slice(&sig) {
            Ok(()) => AuthDecision::Accept(self.identity),
            Err(_) => denied(),
        }
    }
}

/// A random 64-character nonce (autobahn's `newid(64)` alphabet).
fn nonce() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_key_matches_autobahn() {
        // autobahn.wamp.auth.derive_key(b"secret123", b"salt123", 100, 16)
        assert_eq!(
            derive_key("secret123", "salt123", 100, 16),
            include_str!("testdata/derive_key_100_16.txt").trim()
        );
        // autobahn.wamp.auth.compute_wcs(b"secret123", b"hello")
        assert_eq!(
            compute_signature(b"secret123", "hello"),
            include_str!("testdata/compute_wcs_hello.txt").trim()
        );
    }
}
