//! Buildbot's own web UI (the `buildbot-www` package, installed by the user; switchyard
//! serves its files from where they are, never bundles them) at `/buildbot/` on `ui` nodes,
//! with `[master.ui] buildbot_www = "DIR"` or `start --buildbot-www DIR`, DIR being the
//! package's `static` folder.
//!
//! Beneath [`PREFIX`] it answers what a Buildbot master answers there: `index.html` with
//! the frontend config injected (title, auth kind, the logged-in user), `config`,
//! `api/v2/...` (the REST API, forwarded with the login session), `ws` (Buildbot's JSON
//! WebSocket protocol, [`ws`]), `auth/login` and `auth/logout` ([`session`]) and `avatar`;
//! anything else is a file of DIR. `GET /` redirects to `/buildbot/`.
//!
//! Login: `auth/login` takes HTTP Basic credentials of a `[master.api] users` entry (the
//! browser asks for them on the 401) and starts a session; control calls carrying its
//! cookie act as that user. Without a session the UI reads (when `public_read`) and every
//! action is refused.

pub mod session;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};
use switchyard_router::transport::files::StaticDir;
use switchyard_router::transport::{full_body, HttpBody, HttpFuture, HttpMount, HttpService};
use switchyard_router::Shutdown;

use crate::api::{self, auth, ApiState};
use crate::config::MasterConfig;
use crate::ui::EventHub;
use session::Sessions;

/// Where the UI lives.
pub const PREFIX: &str = "/buildbot";
/// The marker in buildbot-www's `index.html` that the frontend config replaces.
const CONFIG_PLACEHOLDER: &str = "<!-- BUILDBOT_CONFIG_PLACEHOLDER -->";

/// The UI's mounts: `/buildbot` (with its WebSocket) and the redirect from `/`. Checks that
/// DIR holds buildbot-www's `index.html` with its placeholder.
pub fn mounts(dir: &Path, state: ApiState, hub: &EventHub) -> Result<Vec<HttpMount>, String> {
    let index_path = dir.join("index.html");
    let index = std::fs::read_to_string(&index_path).map_err(|e| {
        format!(
            "buildbot_www: cannot read {}: {e} (point it at the `static` folder of an \
             installed buildbot-www package)",
            index_path.display()
        )
    })?;
    if !index.contains(CONFIG_PLACEHOLDER) {
        return Err(format!(
            "buildbot_www: {} is not buildbot-www's index.html (no {CONFIG_PLACEHOLDER})",
            index_path.display()
        ));
    }
    let relay = ws::Relay::start(hub, state.clone())?;
    let www = Arc::new(Www {
        files: StaticDir {
            mount: PREFIX.into(),
            root: PathBuf::from(dir),
            default_file: "index.html".into(),
            mime_types: Default::default(),
            cache_timeout: None,
        },
        index,
        config: state.config.clone(),
        api: api::service(state),
        sessions: Sessions::new(session::SESSION_TTL, session::MAX_SESSIONS),
        relay,
        shutdown: hub.shutdown().clone(),
    });
    Ok(vec![
        HttpMount::with_upgrades(PREFIX, www),
        HttpMount::exact("/", Arc::new(RootRedirect)),
    ])
}

struct Www {
    files: StaticDir,
    index: String,
    config: Arc<MasterConfig>,
    api: Arc<dyn HttpService>,
    sessions: Sessions,
    relay: Arc<ws::Relay>,
    shutdown: Shutdown,
}

impl HttpService for Www {
    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>, peer: SocketAddr) -> HttpFuture {
        let path = req.uri().path().to_owned();
        let rest = path.strip_prefix(PREFIX).unwrap_or("").to_owned();
        let user = self.sessions.user_of(req.headers());
        if rest.starts_with("/api/") || rest == "/api" {
            return self.forward_api(req, peer, &rest, user);
        }
        let r = match rest.as_str() {
            "" => redirect(&format!("{PREFIX}/")),
            "/ws" => self.websocket(&mut req, user.as_deref()),
            "/" | "/index.html" => self.index_page(&req, user.as_deref()),
            "/config" => match only_get(req.method()) {
                Some(r) => r,
                None => json_answer(
                    StatusCode::OK,
                    &self.frontend_config(user.as_deref(), req.headers()),
                ),
            },
            "/auth/login" => self.login(req.headers(), req.uri().query()),
            "/auth/logout" => self.logout(req.headers(), req.uri().query()),
            "/avatar" => avatar(req.uri().query()),
            _ => {
                let files = self.files.clone();
                let method = req.method().clone();
                return Box::pin(async move {
                    let r = files.serve(&method, &rest).await;
                    let (parts, body) = r.into_parts();
                    hyper::Response::from_parts(
                        parts,
                        http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                            body,
                            |never| match never {},
                        )),
                    )
                });
            }
        };
        Box::pin(async move { r })
    }
}

impl Www {
    /// `api/...` → the REST API's `/api/...`, with the session's user.
    fn forward_api(
        &self,
        mut req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        rest: &str,
        user: Option<String>,
    ) -> HttpFuture {
        let target = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        match target.parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                let r = json_answer(StatusCode::BAD_REQUEST, &json!({"error": "bad URI"}));
                return Box::pin(async move { r });
            }
        }
        if let Some(user) = user {
            req.extensions_mut().insert(auth::SessionUser(user));
        }
        let answer = self.api.call(req, peer);
        Box::pin(async move {
            let mut r = answer.await;
            // A browser meets a Basic challenge on a script's request with a password
            // prompt (headless: a request that never ends). The UI logs in through
            // `auth/login`; a refused action here is a 403, as Buildbot answers it.
            if r.status() == StatusCode::UNAUTHORIZED {
                r.headers_mut().remove(header::WWW_AUTHENTICATE);
                *r.status_mut() = StatusCode::FORBIDDEN;
            }
            r
        })
    }

    /// The config the UI boots with (Buildbot's `get_www_frontend_config_dict`).
    fn frontend_config(&self, user: Option<&str>, headers: &HeaderMap) -> Value {
        let auth_name = if self.config.api.users.is_empty() {
            "NoAuth"
        } else {
            "UserPasswordAuth"
        };
        // Without public_read, only a logged-in user may see anything (the UI then shows
        // its login page to everyone else).
        let any_access = self.config.api.public_read || user.is_some();
        let user = match user {
            Some(u) => json!({"anonymous": false, "username": u}),
            None => json!({"anonymous": true}),
        };
        let title = self
            .config
            .ui
            .title
            .clone()
            .unwrap_or_else(|| "switchyard".into());
        json!({
            "title": title,
            "titleURL": "",
            "buildbotURL": self.buildbot_url(headers),
            "multiMaster": true,
            "ui_default_config": {},
            "versions": [["switchyard", env!("CARGO_PKG_VERSION")]],
            "auth": {"name": auth_name, "oauth2": false, "fa_icon": "", "autologin": false},
            "avatar_methods": [],
            "plugins": {},
            "user": user,
            "user_any_access_allowed": any_access,
            "project_widgets": [],
            "port": "",
        })
    }

    fn index_page(
        &self,
        req: &hyper::Request<hyper::body::Incoming>,
        user: Option<&str>,
    ) -> hyper::Response<HttpBody> {
        if let Some(r) = only_get(req.method()) {
            return r;
        }
        // `<` escaped: the config (user names, title) cannot close the script element.
        let config = self
            .frontend_config(user, req.headers())
            .to_string()
            .replace('<', "\\u003c");
        let page = self.index.replacen(
            CONFIG_PLACEHOLDER,
            &format!("<script id=\"bb-config\">window.buildbotFrontendConfig = {config};</script>"),
            1,
        );
        let mut r = hyper::Response::new(full_body(page));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        r
    }

    /// The UI's own URL, which it compares with the address bar: `[master.ui] buildbot_url`,
    /// else `http://<Host>/buildbot/`.
    fn buildbot_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.config.ui.buildbot_url {
            return url.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
            })
            .unwrap_or("localhost");
        format!("http://{host}{PREFIX}/")
    }

    /// `auth/login`: HTTP Basic credentials of a configured user start a session; without
    /// them, a 401 makes the browser ask.
    fn login(&self, headers: &HeaderMap, query: Option<&str>) -> hyper::Response<HttpBody> {
        let principal = if headers.contains_key(header::AUTHORIZATION) {
            auth::for_control(headers, &self.config.api)
        } else {
            Err(auth::AuthError::Missing)
        };
        match principal {
            Ok(auth::Principal::User(user)) => {
                let secure = self
                    .config
                    .ui
                    .buildbot_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://"));
                let token = self.sessions.create(&user);
                tracing::info!(user, "web UI login");
                let mut r = redirect(&after_auth(query));
                r.headers_mut().insert(
                    header::SET_COOKIE,
                    self.sessions
                        .set_cookie(&token, &format!("{PREFIX}/"), secure),
                );
                r
            }
            Ok(auth::Principal::Token) => json_answer(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "log in with a user's name and password, not a token"}),
            ),
            Err(e) => {
                auth::log_refusal(None, "/buildbot/auth/login", &e);
                let mut r = json_answer(StatusCode::UNAUTHORIZED, &json!({"error": e.to_string()}));
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, auth::challenge());
                r
            }
        }
    }

    fn logout(&self, headers: &HeaderMap, query: Option<&str>) -> hyper::Response<HttpBody> {
        if let Some(token) = session::token_of(headers) {
            self.sessions.remove(&token);
        }
        let mut r = redirect(&after_auth(query));
        r.headers_mut().insert(
            header::SET_COOKIE,
            session::clear_cookie(&format!("{PREFIX}/")),
        );
        r
    }

    /// `ws`: Buildbot's WebSocket protocol ([`ws`]), for readers allowed to read.
    fn websocket(
        &self,
        req: &mut hyper::Request<hyper::body::Incoming>,
        user: Option<&str>,
    ) -> hyper::Response<HttpBody> {
        let h = req.headers();
        let upgrade = h
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !upgrade {
            return json_answer(
                StatusCode::UPGRADE_REQUIRED,
                &json!({"error": "this path speaks Buildbot's WebSocket protocol only"}),
            );
        }
        if user.is_none() {
            if let Err(e) = auth::for_read(h, &self.config.api) {
                return json_answer(StatusCode::FORBIDDEN, &json!({"error": e.to_string()}));
            }
        }
        if !same_origin(h) {
            return json_answer(
                StatusCode::FORBIDDEN,
                &json!({"error": "origin not allowed"}),
            );
        }
        let key = match (
            h.get(header::SEC_WEBSOCKET_VERSION),
            h.get(header::SEC_WEBSOCKET_KEY),
        ) {
            (Some(v), Some(k)) if v.as_bytes() == b"13" => k.clone(),
            _ => {
                return json_answer(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "a WebSocket upgrade needs version 13 and a key"}),
                )
            }
        };
        let Some((events, permit)) = self.relay.connect() else {
            return json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "too many WebSocket clients; try again later"}),
            );
        };
        let on_upgrade = hyper::upgrade::on(req);
        let shutdown = self.shutdown.clone();
        self.shutdown.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => ws::serve(upgraded, events, permit, shutdown).await,
                Err(e) => tracing::debug!(error = %e, "Buildbot WebSocket upgrade failed"),
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut r = hyper::Response::new(full_body(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        r
    }
}

/// A browser's `Origin`, when sent, must name the host it connects to: another site's page
/// cannot read the bus through a visitor's browser.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Where `auth/login` and `auth/logout` send the browser: the UI, at the page given in
/// `redirect` (a path of the UI's own router, after `#`).
fn after_auth(query: Option<&str>) -> String {
    let target = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("redirect="))
        .unwrap_or("");
    let safe: String = target
        .chars()
        .take(512)
        .filter(|c| c.is_ascii_alphanumeric() || "/-_.~%?=&+:,".contains(*c))
        .collect();
    if safe.starts_with('/') {
        format!("{PREFIX}/#{safe}")
    } else {
        format!("{PREFIX}/")
    }
}

/// `avatar`: a neutral picture (no avatar service is configured).
fn avatar(query: Option<&str>) -> hyper::Response<HttpBody> {
    let _ = query;
    let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"32\" height=\"32\">\
               <circle cx=\"16\" cy=\"16\" r=\"16\" fill=\"#ccc\"/></svg>";
    let mut r = hyper::Response::new(full_body(svg));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

/// `GET /` (not a WebSocket upgrade) → `/buildbot/`.
struct RootRedirect;

impl HttpService for RootRedirect {
    fn call(&self, req: hyper::Request<hyper::body::Incoming>, _peer: SocketAddr) -> HttpFuture {
        let r = only_get(req.method()).unwrap_or_else(|| redirect(&format!("{PREFIX}/")));
        Box::pin(async move { r })
    }
}

fn only_get(method: &Method) -> Option<hyper::Response<HttpBody>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut r = json_answer(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": format!("method {method} not allowed here")}),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(r)
}

fn redirect(to: &str) -> hyper::Response<HttpBody> {
    let mut r = hyper::Response::new(full_body(format!("see {to}\n")));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn json_answer(status: StatusCode, value: &Value) -> hyper::Response<HttpBody> {
    let mut r = hyper::Response::new(full_body(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_in_the_ui() {
        assert_eq!(
            after_auth(Some("redirect=/builders/1")),
            "/buildbot/#/builders/1"
        );
        assert_eq!(after_auth(Some("redirect=https://evil")), "/buildbot/");
        assert_eq!(after_auth(Some("redirect=/a\"<b")), "/buildbot/#/ab");
        assert_eq!(after_auth(None), "/buildbot/");
    }

    #[test]
    fn origins_must_match_the_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
