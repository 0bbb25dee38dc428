//! Static files, as Crossbar's `static` web path service serves them: a directory mounted at
//! a URL path, `index.html` (or `default_file`) for directories, MIME types by extension
//! (plus configured ones), and an optional `Cache-Control: max-age`.
//!
//! Only files under the directory are served: the request path is decoded component by
//! component, `..` and absolute components are refused, and the final path is checked to
//! stay inside the canonical root (so symlinks cannot lead out either).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// One mounted directory.
#[derive(Clone, Debug)]
pub struct StaticDir {
    /// URL path it is mounted at (`/` or `/name`).
    pub mount: String,
    pub root: PathBuf,
    /// Served for a directory (Crossbar's `default_file`, default `index.html`).
    pub default_file: String,
    /// Extra MIME types by extension (`.ext` or `ext`).
    pub mime_types: HashMap<String, String>,
    /// `Cache-Control: max-age` in seconds.
    pub cache_timeout: Option<u64>,
}

/// What a static answer carries (the whole file, in memory).
pub type Body = Full<Bytes>;

fn mime(ext: &str) -> &'static str {
    match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r
}

/// Percent-decodes one path component.
fn decode(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = component.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl StaticDir {
    /// Whether `path` is under this mount; returns the rest of the path.
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.mount == "/" {
            return Some(path);
        }
        let rest = path.strip_prefix(&self.mount)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    /// The file for a request path under the mount, if it is safely inside the root.
    fn resolve(&self, rest: &str) -> Option<PathBuf> {
        let mut rel = PathBuf::new();
        for c in rest.split('/').filter(|c| !c.is_empty()) {
            let c = decode(c)?;
            let p = Path::new(&c);
            // One normal component each: no "..", no root, no drive, no embedded separators.
            let mut comps = p.components();
            match (comps.next(), comps.next()) {
                (Some(Component::Normal(_)), None) => rel.push(p),
                _ => return None,
            }
        }
        Some(self.root.join(rel))
    }

    pub async fn serve(&self, method: &Method, rest: &str) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            return status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        let Some(mut file) = self.resolve(rest) else {
            return status(StatusCode::NOT_FOUND, "not found\n");
        };
        if tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_dir()) {
            file.push(&self.default_file);
        }
        // Symlinks must not lead out of the root either.
        let (Ok(root), Ok(real)) = (
            tokio::fs::canonicalize(&self.root).await,
            tokio::fs::canonicalize(&file).await,
        ) else {
            return status(StatusCode::NOT_FOUND, "not found\n");
        };
        if !real.starts_with(&root) {
            return status(StatusCode::NOT_FOUND, "not found\n");
        }
        let body = match tokio::fs::read(&real).await {
            Ok(b) => b,
            Err(_) => return status(StatusCode::NOT_FOUND, "not found\n"),
        };
        let ext = real
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let content_type = self
            .mime_types
            .get(&ext)
            .or_else(|| self.mime_types.get(&format!(".{ext}")))
            .cloned()
            .unwrap_or_else(|| mime(&ext).to_owned());
        let len = body.len();
        let mut r = Response::new(Full::new(if method == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(body)
        }));
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(s) = self.cache_timeout {
            if let Ok(v) = HeaderValue::from_str(&format!("max-age={s}")) {
                h.insert(header::CACHE_CONTROL, v);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> StaticDir {
        StaticDir {
            mount: "/app".into(),
            root: PathBuf::from("/srv/web"),
            default_file: "index.html".into(),
            mime_types: HashMap::new(),
            cache_timeout: None,
        }
    }

    #[test]
    fn paths_stay_inside() {
        let d = dir();
        assert_eq!(d.strip("/app/x.js"), Some("/x.js"));
        assert_eq!(d.strip("/app"), Some(""));
        assert_eq!(d.strip("/apple"), None);
        assert_eq!(d.resolve("/a/b.js"), Some(PathBuf::from("/srv/web/a/b.js")));
        assert_eq!(d.resolve("/../etc/passwd"), None);
        assert_eq!(d.resolve("/a/%2e%2e/%2e%2e/etc"), None);
        assert_eq!(d.resolve("/a%2fb"), None);
        assert_eq!(d.resolve("/%zz"), None);
    }
}
