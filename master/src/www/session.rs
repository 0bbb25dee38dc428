//! The web UI's login sessions: a random token in an `HttpOnly`, `SameSite=Strict` cookie,
//! looked up in a bounded table held in memory by the node that served the login (a
//! restart logs everyone out). A session expires [`SESSION_TTL`] after the login; when the
//! table is full, the session closest to expiry makes room.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use parking_lot::Mutex;

/// The cookie's name.
pub const COOKIE: &str = "switchyard_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

struct Session {
    user: String,
    expires: Instant,
}

/// The session table.
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    max: usize,
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            table: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    /// Starts a session for `user`; returns its token (256 random bits, hex).
    pub fn create(&self, user: &str) -> String {
        let token: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let now = Instant::now();
        let mut table = self.table.lock();
        table.retain(|_, s| s.expires > now);
        if table.len() >= self.max {
            let oldest = table
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.remove(&k);
            }
        }
        table.insert(
            token.clone(),
            Session {
                user: user.to_owned(),
                expires: now + self.ttl,
            },
        );
        token
    }

    /// The user of a live session.
    pub fn user(&self, token: &str) -> Option<String> {
        let mut table = self.table.lock();
        match table.get(token) {
            Some(s) if s.expires > Instant::now() => Some(s.user.clone()),
            Some(_) => {
                table.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.table.lock().remove(token);
    }

    /// The user of the session whose cookie `headers` carry.
    pub fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        token_of(headers).and_then(|t| self.user(&t))
    }

    /// `Set-Cookie` for a new session, scoped to `path`; `secure` when the UI is served
    /// over https.
    pub fn set_cookie(&self, token: &str, path: &str, secure: bool) -> HeaderValue {
        let v = format!(
            "{COOKIE}={token}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
            self.ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(path: &str) -> HeaderValue {
    let v = format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session token in the request's cookies (well-formed: 64 hex digits).
pub fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| {
            *name == COOKIE && value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_expire_and_stay_bounded() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let a = s.create("alice");
        assert_eq!(a.len(), 64);
        assert_eq!(s.user(&a).as_deref(), Some("alice"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={a}")).unwrap(),
        );
        assert_eq!(s.user_of(&headers).as_deref(), Some("alice"));
        let b = s.create("bob");
        let c = s.create("carol");
        assert_ne!(b, c);
        // Full at two: the oldest (alice) made room.
        assert_eq!(s.user(&a), None);
        assert_eq!(s.user(&c).as_deref(), Some("carol"));
        s.remove(&c);
        assert_eq!(s.user(&c), None);
        let expired = Sessions::new(Duration::ZERO, 10);
        let t = expired.create("dave");
        assert_eq!(expired.user(&t), None);
        assert!(s
            .set_cookie(&b, "/buildbot/", true)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
        let cookie = s.set_cookie(&b, "/buildbot/", false);
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("Max-Age=60"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("switchyard_session=zz"),
        );
        assert_eq!(token_of(&headers), None);
    }
}
