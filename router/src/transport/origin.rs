//! WebSocket `Origin` checks as Crossbar (autobahn) makes them: `allowed_origins` are
//! wildcard patterns (`*` matches anything) over `scheme://host:port`, with the port filled in
//! from the scheme; a `null` (or `file://`) origin passes only with `allow_null_origin`;
//! clients that send no `Origin` (anything but a browser) always pass.
//!
//! One difference: an origin on its scheme's default port also matches patterns written
//! without a port (`https://*.example.com` admits `https://app.example.com`), as the
//! pattern's author evidently meant; autobahn would require `https://*.example.com:443`.

/// One WebSocket path's origin policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPolicy {
    pub allowed: Vec<String>,
    pub allow_null: bool,
}

impl Default for OriginPolicy {
    /// Crossbar's defaults: every origin, `null` included.
    fn default() -> Self {
        OriginPolicy {
            allowed: vec!["*".into()],
            allow_null: true,
        }
    }
}

/// `*` matches any run of characters (possibly empty); everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The forms of an Origin header patterns are matched against (`scheme://host:port`, and
/// `scheme://host` on the default port), or `None` for a null origin; `Err` if it has no host.
fn normalize(origin: &str) -> Result<Option<Vec<String>>, ()> {
    let origin = origin.trim();
    if origin.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    let (scheme, rest) = origin.split_once("://").ok_or(())?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "file" {
        return Ok(None);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(())?;
        (h.to_owned(), after.strip_prefix(':').map(str::to_owned))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(());
    }
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => "None",
    };
    let port = port.unwrap_or_else(|| default_port.to_owned());
    let host = host.to_ascii_lowercase();
    let mut forms = vec![format!("{scheme}://{host}:{port}")];
    if port == default_port {
        forms.push(format!("{scheme}://{host}"));
    }
    Ok(Some(forms))
}

impl OriginPolicy {
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match normalize(origin) {
            Err(()) => false,
            Ok(None) => self.allow_null,
            Ok(Some(forms)) => self
                .allowed
                .iter()
                .any(|p| forms.iter().any(|o| glob(p, o))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], allow_null: bool) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            allow_null,
        }
    }

    #[test]
    fn autobahn_semantics() {
        let p = policy(&["https://*.example.com:*", "http://localhost:8080"], false);
        assert!(p.allows(None), "non-browser clients send no Origin");
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("https://app.example.com:8443")));
        assert!(!p.allows(Some("https://example.com.evil.org")));
        assert!(!p.allows(Some("http://app.example.com")));
        assert!(p.allows(Some("http://localhost:8080")));
        assert!(!p.allows(Some("http://localhost")));
        let no_port = policy(&["https://*.example.com"], true);
        assert!(no_port.allows(Some("https://app.example.com")));
        assert!(!no_port.allows(Some("https://app.example.com:8443")));
        assert!(!p.allows(Some("null")));
        assert!(!p.allows(Some("file:///tmp/x.html")));
        assert!(!p.allows(Some("not an origin")));
        let open = OriginPolicy::default();
        assert!(open.allows(Some("https://anything:1")) && open.allows(Some("null")));
        assert!(!policy(&["*"], false).allows(Some("null")));
    }

    #[test]
    fn globbing() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYc"));
        assert!(!glob("a*b", "aXc"));
        assert!(glob("http://*:80", "http://h:80"));
    }
}
