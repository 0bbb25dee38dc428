//! Who may read and who may act, from `[master.api]`: bearer tokens
//! (`Authorization: Bearer <token>`) and users with HTTP Basic credentials.
//!
//! Control calls and the change hook always need valid credentials: with none configured
//! they are refused with a message saying to configure some, never left open. Reads need
//! them only when `public_read` is false (with `public_read`, the header is not looked at).
//! Secrets are compared in constant time, every configured token is tried (so timing does
//! not tell which one matched), an unknown user costs the same as a wrong password, and
//! refusals are logged without the credentials.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderValue};
use switchyard_router::auth::secrets_equal;

use crate::config::ApiConfig;

/// Whoever presented valid credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// One of the configured bearer tokens.
    Token,
    /// A configured user, by name.
    User(String),
}

impl Principal {
    /// The name recorded as a forced build's owner when the request names none.
    pub fn name(&self) -> &str {
        match self {
            Principal::Token => "token",
            Principal::User(name) => name,
        }
    }
}

/// Why a request was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: send Authorization: Bearer <token> or HTTP Basic credentials"
    )]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    #[error(
        "this needs credentials, and none are configured: configure [master.api] tokens or users"
    )]
    NotConfigured,
}

/// The `WWW-Authenticate` challenge sent with every 401.
pub fn challenge() -> HeaderValue {
    HeaderValue::from_static("Basic realm=\"switchyard\"")
}

/// Checks a read (GET): open with `public_read`, else as [`for_control`].
pub fn for_read(headers: &HeaderMap, api: &ApiConfig) -> Result<(), AuthError> {
    if api.public_read {
        return Ok(());
    }
    for_control(headers, api).map(|_| ())
}

/// Checks a control call or a change: valid credentials are required.
pub fn for_control(headers: &HeaderMap, api: &ApiConfig) -> Result<Principal, AuthError> {
    if api.tokens.is_empty() && api.users.is_empty() {
        return Err(AuthError::NotConfigured);
    }
    match authenticate(headers, api)? {
        Some(p) => Ok(p),
        None => Err(AuthError::Missing),
    }
}

/// A user proven by the web UI's login session: put on the request by the UI's own mount
/// (`crate::www`) after it checked the session cookie, never read from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser(pub String);

/// Checks a control call made with a login session: the user must still be configured.
pub fn for_session(user: String, api: &ApiConfig) -> Result<Principal, AuthError> {
    if api.users.iter().any(|u| u.name == user) {
        Ok(Principal::User(user))
    } else {
        Err(AuthError::Invalid)
    }
}

/// Logs a refusal (never the credentials).
pub fn log_refusal(peer: Option<SocketAddr>, path: &str, e: &AuthError) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let path = switchyard_router::logsafe::Trunc(path);
    tracing::info!(peer, %path, reason = %e, "API request refused");
}

/// The principal the `Authorization` header proves: `None` without the header, an error
/// for a header that is malformed or proves nothing.
fn authenticate(headers: &HeaderMap, api: &ApiConfig) -> Result<Option<Principal>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Invalid)?.trim();
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        // Try them all: no early exit that would time which one matched.
        let matched = api.tokens.iter().fold(false, |found, t| {
            secrets_equal(t.as_bytes(), credentials.as_bytes()) | found
        });
        return if matched {
            Ok(Some(Principal::Token))
        } else {
            Err(AuthError::Invalid)
        };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(credentials).ok_or(AuthError::Invalid)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Invalid)?;
        let (name, password) = decoded.split_once(':').ok_or(AuthError::Invalid)?;
        let user = api.users.iter().find(|u| u.name == name);
        // An unknown user costs a comparison too.
        let expected = user.map_or(&[0u8; 32][..], |u| u.password.as_bytes());
        let ok = secrets_equal(expected, password.as_bytes());
        return match user {
            Some(u) if ok => Ok(Some(Principal::User(u.name.clone()))),
            _ => Err(AuthError::Invalid),
        };
    }
    Err(AuthError::Invalid)
}

/// Standard base64 (RFC 4648, padding optional), as HTTP Basic uses; `None` if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 || text.len() - bytes.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for group in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in group.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let produced = group.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiUser;

    fn api() -> ApiConfig {
        ApiConfig {
            public_read: false,
            tokens: vec!["0123456789abcdef-token".into()],
            token_file: None,
            users: vec![ApiUser {
                name: "admin".into(),
                password: "secret".into(),
            }],
        }
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("YWRtaW46c2VjcmV0", "admin:secret"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes(), "{enc}");
        }
        for bad in ["Z", "Zm9v!", "Zg===", "Zm9vY"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_are_checked() {
        let api = api();
        assert_eq!(
            for_control(&with_auth("Basic YWRtaW46c2VjcmV0"), &api),
            Ok(Principal::User("admin".into()))
        );
        assert_eq!(
            for_control(&with_auth("bearer 0123456789abcdef-token"), &api),
            Ok(Principal::Token)
        );
        // admin:wrong, nobody:secret, a wrong token, garbage.
        for bad in [
            "Basic YWRtaW46d3Jvbmc=",
            "Basic bm9ib2R5OnNlY3JldA==",
            "Bearer nope",
            "Basic !!!",
            "Digest x",
            "Bearer",
        ] {
            assert_eq!(
                for_control(&with_auth(bad), &api),
                Err(AuthError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(
            for_control(&HeaderMap::new(), &api),
            Err(AuthError::Missing)
        );
        assert_eq!(for_read(&HeaderMap::new(), &api), Err(AuthError::Missing));
        let open = ApiConfig {
            public_read: true,
            ..ApiConfig::default()
        };
        assert_eq!(for_read(&HeaderMap::new(), &open), Ok(()));
        assert_eq!(
            for_control(&with_auth("Basic YWRtaW46c2VjcmV0"), &open),
            Err(AuthError::NotConfigured)
        );
    }
}
