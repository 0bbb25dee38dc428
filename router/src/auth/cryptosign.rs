//! WAMP-Cryptosign (Ed25519) with static principals and their authorized keys.
//!
//! HELLO carries `authextra.pubkey` (hex); the router answers with 32 random bytes (hex) and
//! the client returns `hex(signature64 ‖ challenge32)`. Channel binding (`tls-unique`) does not
//! exist in TLS 1.3 and is refused, as Crossbar refuses it on transports without it.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};
use subtle::ConstantTimeEq;

use super::{AuthDecision, Hello, Identity, PendingAuth};
use crate::uri::errors;
use crate::wire::{Dict, Value};

/// One principal (`auth.cryptosign.principals.<authid>`).
#[derive(Clone, Debug)]
pub struct CryptosignPrincipal {
    /// Lowercase hex Ed25519 public keys.
    pub authorized_keys: Vec<String>,
    pub role: String,
    pub realm: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Cryptosign {
    pub principals: HashMap<String, CryptosignPrincipal>,
}

/// Checks that `hex` is a valid Ed25519 public key (for config validation).
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(hex).map_err(|e| format!("not hex: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

struct PendingCryptosign {
    key: VerifyingKey,
    challenge: [u8; 32],
    identity: Identity,
}

impl Cryptosign {
    pub fn hello(&self, hello: &Hello<'_>) -> AuthDecision {
        let extra = hello.authextra();
        let get = |k: &str| extra.and_then(|e| e.get(k));
        if let Some(denied) = check_channel_binding(extra) {
            return denied;
        }
        let Some(pubkey) = get("pubkey").and_then(Value::as_str) else {
            return AuthDecision::deny(
                errors::AUTHENTICATION_FAILED,
                "WAMP-Cryptosign needs authextra.pubkey in HELLO",
            );
        };
        let pubkey = pubkey.to_ascii_lowercase();
        let authid = match hello.authid() {
            Some(a) => a.to_owned(),
            // Without an authid the key names the principal, if exactly one has it.
            None => {
                let mut owners = self
                    .principals
                    .iter()
                    .filter(|(_, p)| p.authorized_keys.contains(&pubkey));
                match (owners.next(), owners.next()) {
                    (Some((a, _)), None) => a.clone(),
                    (None, _) => {
                        return AuthDecision::deny(
                            errors::NO_SUCH_PRINCIPAL,
                            "no principal has the public key offered",
                        )
                    }
                    _ => {
                        return AuthDecision::deny(
                            errors::AUTHENTICATION_FAILED,
                            "several principals have this public key; send an authid",
                        )
                    }
                }
            }
        };
        let Some(p) = self.principals.get(&authid) else {
            return AuthDecision::deny(
                errors::NO_SUCH_PRINCIPAL,
                format!("no principal with authid \"{authid}\" exists"),
            );
        };
        if !p.authorized_keys.contains(&pubkey) {
            return AuthDecision::deny(
                errors::AUTHENTICATION_FAILED,
                "extra.pubkey provided does not match any one of authorized_keys for the principal",
            );
        }
        challenge(
            &pubkey,
            Identity {
                authid,
                authrole: p.role.clone(),
                authmethod: "cryptosign".into(),
                authprovider: "static".into(),
                realm: p.realm.clone(),
            },
        )
    }
}

/// Refuses a channel binding (none exists on TLS 1.3, and switchyard offers none).
pub(crate) fn check_channel_binding(extra: Option<&Dict>) -> Option<AuthDecision> {
    match extra.and_then(|e| e.get("channel_binding")) {
        None | Some(Value::Null) => None,
        Some(other) => Some(AuthDecision::deny(
            errors::AUTHENTICATION_FAILED,
            format!("channel binding {other:?} is not supported on this transport"),
        )),
    }
}

/// The CHALLENGE for a client holding the private half of `pubkey` (hex).
pub fn challenge(pubkey: &str, identity: Identity) -> AuthDecision {
    {
        let Ok(key) = parse_public_key(pubkey) else {
            return AuthDecision::deny(errors::AUTHENTICATION_FAILED, "invalid public key");
        };
        let challenge: [u8; 32] = rand::random();
        let mut extra = Dict::new();
        extra.insert("challenge".into(), Value::from(hex::encode(challenge)));
        extra.insert("channel_binding".into(), Value::Null);
        AuthDecision::Challenge {
            method: "cryptosign".into(),
            extra,
            pending: Box::new(PendingCryptosign {
                key,
                challenge,
                identity,
            }),
        }
    }
}

impl PendingAuth for PendingCryptosign {
    fn authenticate(self: Box<Self>, signature: &str, _extra: &Dict) -> AuthDecision {
        let denied = |why: &str| AuthDecision::deny(errors::AUTHENTICATION_FAILED, why);
        let Ok(signed) = hex::decode(signature) else {
            return denied("signed message is not hex");
        };
        if signed.len() != 96 {
            return denied("signed message must be 96 bytes (signature and challenge)");
        }
        let (sig, message) = signed.split_at(64);
        let sig = Signature::from_slice(sig).expect("64 bytes");
        if !bool::from(message.ct_eq(&self.challenge)) {
            return denied("the message signed is not the challenge sent");
        }
        match self.key.verify_strict(message, &sig) {
            Ok(()) => AuthDecision::Accept(self.identity),
            Err(_) => denied("signed message has an invalid signature"),
        }
    }
}
