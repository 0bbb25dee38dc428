//! The web UI that `ui` nodes serve on the router's port: one page (`/ui/`, hand-written
//! HTML, CSS and JavaScript embedded in the binary, no build step) that reads the REST API
//! and follows the bus live through Server-Sent Events ([`events`], `/api/v2/events`).
//!
//! [`mounts`] gives the router three mounts: `/api/v2/events` (longer than the API's `/api`,
//! so it wins for that path), `/ui` and an exact mount on `/` that sends a plain browser
//! request to `/ui/` (WebSocket upgrades on `/` stay with the router).
//!
//! The page's files are static: whatever the API returns is put in the page as text, never
//! as HTML, and a Content-Security-Policy allows only the page's own script, style and
//! origin.

pub mod events;

use std::sync::Arc;

use axum::http::{header, HeaderValue, Method, StatusCode};
use switchyard_router::transport::{full_body, HttpBody, HttpFuture, HttpMount, HttpService};
use switchyard_router::Router;

use crate::api::ApiState;
use crate::auth::BusTrust;
pub use events::EventHub;

/// Where the page lives.
pub const PREFIX: &str = "/ui";

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");

/// What the page may load: its own files and the API of its own origin, nothing inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The UI's mounts: the event stream, the page and the redirect from `/`. Subscribes the
/// node's event stream to the bus of the master's realm (an error if it cannot). With
/// `[master.ui] buildbot_www`, Buildbot's own UI too ([`crate::www`]), fed by the same
/// event hub, and `/` redirects there. Both carry only what masters published.
pub async fn mounts(router: &Router, state: ApiState) -> Result<Vec<HttpMount>, String> {
    let config = state.config.clone();
    let trust = BusTrust::new(&config.trusted_roles);
    let hub = EventHub::start(router, &config.realm, config.api.clone(), trust).await?;
    let mut mounts = vec![
        HttpMount::new(events::PATH, Arc::new(events::EventsService(hub.clone()))),
        HttpMount::new(PREFIX, Arc::new(PageService)),
    ];
    match &config.ui.buildbot_www {
        Some(dir) => mounts.extend(crate::www::mounts(dir, state, &hub)?),
        None => mounts.push(HttpMount::exact("/", Arc::new(RootRedirect))),
    }
    Ok(mounts)
}

/// Serves the page's three files.
struct PageService;

impl HttpService for PageService {
    fn call(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        _peer: std::net::SocketAddr,
    ) -> HttpFuture {
        let r = page(req.method(), req.uri().path());
        Box::pin(async move { r })
    }
}

fn page(method: &Method, path: &str) -> hyper::Response<HttpBody> {
    if path == PREFIX {
        return redirect("/ui/");
    }
    let (content, kind) = match path.strip_prefix(PREFIX).unwrap_or("") {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return text(StatusCode::NOT_FOUND, format!("no such page: {path}\n")),
    };
    if let Some(r) = only_get(method) {
        return r;
    }
    // For HEAD, hyper sends the headers (with the length) and leaves the body out.
    let mut r = hyper::Response::new(full_body(content));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Small files, embedded in the binary: revalidated on each load, so an upgrade shows.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `GET /` (not a WebSocket upgrade) → `/ui/`.
struct RootRedirect;

impl HttpService for RootRedirect {
    fn call(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        _peer: std::net::SocketAddr,
    ) -> HttpFuture {
        let r = only_get(req.method()).unwrap_or_else(|| redirect("/ui/"));
        Box::pin(async move { r })
    }
}

/// A 405 for anything but GET and HEAD.
fn only_get(method: &Method) -> Option<hyper::Response<HttpBody>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed here\n"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(r)
}

fn redirect(to: &'static str) -> hyper::Response<HttpBody> {
    let mut r = text(StatusCode::FOUND, format!("see {to}\n"));
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn text(status: StatusCode, body: String) -> hyper::Response<HttpBody> {
    let mut r = hyper::Response::new(full_body(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_files_and_their_headers() {
        for (path, kind, needle) in [
            ("/ui/", "text/html", "<script src=\"app.js\""),
            ("/ui/index.html", "text/html", "<h1"),
            ("/ui/app.js", "text/javascript", "/events"),
            ("/ui/style.css", "text/css", "body"),
        ] {
            let r = page(&Method::GET, path);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap();
            assert!(ct.starts_with(kind), "{path}: {ct}");
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let content = match path {
                "/ui/app.js" => APP_JS,
                "/ui/style.css" => STYLE_CSS,
                _ => INDEX_HTML,
            };
            assert!(content.contains(needle), "{path} lacks {needle}");
        }
        assert_eq!(page(&Method::GET, "/ui").status(), StatusCode::FOUND);
        assert_eq!(
            page(&Method::GET, "/ui/x.js").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            page(&Method::GET, "/ui/../api").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            page(&Method::POST, "/ui/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(page(&Method::HEAD, "/ui/app.js").status(), StatusCode::OK);
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        // The CSP forbids them: they would not run.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style=\""));
        let lower = INDEX_HTML.to_ascii_lowercase();
        let handler = lower.match_indices(" on").any(|(at, _)| {
            let rest = &lower[at + 3..];
            let name_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(0);
            name_len > 0 && rest[name_len..].trim_start().starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
    }
}
