//! Crossbar transports (`websocket`, `rawsocket`, `web`, `universal`), their endpoints (TCP,
//! TLS) and options, mapped onto one [`ListenerConfig`] per listening port.
//!
//! Every WebSocket path gets its own authenticator, and a path without an `auth` block admits
//! anonymous clients only, as in Crossbar; RawSocket uses the transport's (or `universal`'s
//! `rawsocket`) block the same way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use switchyard_router::auth::methods::TransportAuth;
use switchyard_router::auth::Authenticator;
use switchyard_router::config::Limits;
use switchyard_router::transport::bridge::{BridgeConfig, BridgeKind};
use switchyard_router::transport::files::StaticDir;
use switchyard_router::transport::origin::OriginPolicy;
use switchyard_router::transport::ListenerConfig;
use switchyard_router::wire::Serializer;

use super::auth::read_auth;
use super::walk::{Obj, Walker};
use super::Listener;

/// WebSocket options switchyard accepts but does not act on: they tune framing, timeouts of
/// the opening handshake or what the HTTP side shows, never who may do what.
const COSMETIC_WS_OPTIONS: &[&str] = &[
    "max_frame_size",
    "compression",
    "open_handshake_timeout",
    "close_handshake_timeout",
    "auto_fragment_size",
    "fail_by_drop",
    "echo_close_codereason",
    "tcp_nodelay",
    "validate_utf8",
    "mask_server_frames",
    "apply_mask",
    "enable_webstatus",
    "show_server_version",
    "require_websocket_subprotocol",
    "auto_ping_size",
    "auto_ping_restart_on_any_traffic",
    "external_port",
    "enable_flash_policy",
    "flash_policy",
    "enable_hybi10",
    "enable_rfc6455",
    "require_masked_client_frames",
];

/// What the parts of one transport contribute to its listener.
#[derive(Default)]
struct Parts {
    websocket_paths: Vec<String>,
    path_auth: HashMap<String, Arc<dyn Authenticator>>,
    rawsocket: Option<Arc<dyn Authenticator>>,
    serializers: Vec<Vec<Serializer>>,
    max_message_size: Vec<usize>,
    ping_interval: Option<u64>,
    ping_timeout: Option<u64>,
    http_bridges: HashMap<String, BridgeConfig>,
    path_origins: HashMap<String, OriginPolicy>,
    static_dirs: Vec<StaticDir>,
    /// Paths whose `require_tls` needs a TLS endpoint (checked once the endpoint is read).
    require_tls: Vec<String>,
}

pub fn read_transport(w: &mut Walker, path: &str, v: &Value) -> Option<Listener> {
    let obj = w.object(v, path)?;
    let kind = w.string_at(&obj, path, "type")?;
    let mut parts = Parts::default();
    match kind.as_str() {
        "websocket" => {
            w.keys(
                &obj,
                path,
                &[
                    "type",
                    "id",
                    "endpoint",
                    "serializers",
                    "options",
                    "auth",
                    "cookie",
                    "max_connections",
                ],
                &["debug", "url"],
            );
            // A plain WebSocket transport answers upgrades on any path.
            read_websocket(w, path, &obj, "*", &mut parts);
        }
        "rawsocket" => {
            w.keys(
                &obj,
                path,
                &[
                    "type",
                    "id",
                    "endpoint",
                    "serializers",
                    "options",
                    "auth",
                    "max_connections",
                ],
                &["debug"],
            );
            read_rawsocket(w, path, &obj, &mut parts);
        }
        "web" => {
            w.keys(
                &obj,
                path,
                &["type", "id", "endpoint", "paths", "max_connections"],
                &["options"],
            );
            read_paths(w, path, &obj, &mut parts);
        }
        "universal" => {
            w.keys(
                &obj,
                path,
                &[
                    "type",
                    "id",
                    "endpoint",
                    "rawsocket",
                    "websocket",
                    "web",
                    "max_connections",
                ],
                &[],
            );
            if obj.get("mqtt").is_some() {
                w.error(
                    &format!("{path}.mqtt"),
                    "MQTT is not supported by switchyard",
                );
            }
            if let Some(r) = obj.get("rawsocket") {
                let rpath = format!("{path}.rawsocket");
                if let Some(r) = w.object(r, &rpath) {
                    w.keys(&r, &rpath, &["serializers", "options", "auth"], &["debug"]);
                    read_rawsocket(w, &rpath, &r, &mut parts);
                }
            }
            if let Some(ws) = obj.get("websocket") {
                let wpath = format!("{path}.websocket");
                if let Some(ws) = w.object(ws, &wpath) {
                    for (p, cfg) in &ws {
                        let ppath = format!("{wpath}.{p}");
                        if let Some(c) = w.object(cfg, &ppath) {
                            w.keys(
                                &c,
                                &ppath,
                                &["type", "serializers", "options", "auth"],
                                &["debug", "url", "id"],
                            );
                            read_websocket(w, &ppath, &c, &url_path(p), &mut parts);
                        }
                    }
                }
            }
            if let Some(web) = obj.get("web") {
                let wpath = format!("{path}.web");
                if let Some(web) = w.object(web, &wpath) {
                    w.keys(&web, &wpath, &["paths"], &["options"]);
                    read_paths(w, &wpath, &web, &mut parts);
                }
            }
        }
        other => {
            w.error(
                &format!("{path}.type"),
                &format!("transport type \"{other}\" is not supported (websocket, rawsocket, web and universal are)"),
            );
            return None;
        }
    }
    let (addr, tls) = match obj.get("endpoint") {
        Some(e) => read_endpoint(w, &format!("{path}.endpoint"), e)?,
        None => {
            w.error(&format!("{path}.endpoint"), "missing");
            return None;
        }
    };
    if tls.is_none() {
        for p in &parts.require_tls {
            w.error(
                &format!("{p}.options.require_tls"),
                "the transport's endpoint has no TLS, so every request would be refused",
            );
        }
    }
    let mut limits = Limits::default();
    if let Some(&m) = parts.max_message_size.iter().max() {
        if parts.max_message_size.iter().any(|&x| x != m) {
            w.warning(
                path,
                &format!("parts of this transport set different max_message_size; switchyard applies the largest ({m}) to all"),
            );
        }
        limits.max_message_size = m;
    }
    if let Some(ms) = parts.ping_interval {
        limits.ping_interval = (ms > 0).then(|| std::time::Duration::from_millis(ms));
    }
    if let Some(ms) = parts.ping_timeout {
        limits.ping_timeout = std::time::Duration::from_millis(ms);
    }
    let serializers = union_serializers(w, path, &parts.serializers);
    let max_connections = match w.opt_u64(&obj, path, "max_connections") {
        Some(0) => {
            w.error(&format!("{path}.max_connections"), "must be at least 1");
            1
        }
        Some(n) => n as usize,
        None => ListenerConfig::default().max_connections,
    };
    let config = ListenerConfig {
        max_connections,
        websocket_paths: parts.websocket_paths,
        rawsocket: parts.rawsocket.is_some(),
        // RawSocket connections and anything not on a configured path: anonymous only
        // unless the transport's RawSocket part says otherwise.
        auth: Some(
            parts
                .rawsocket
                .unwrap_or_else(|| Arc::new(TransportAuth::default())),
        ),
        path_auth: parts.path_auth,
        http_bridges: parts.http_bridges,
        path_origins: parts.path_origins,
        static_dirs: parts.static_dirs,
        tls,
        limits: Some(limits),
        serializers,
        // Crossbar's router-to-router links are not this mesh; a node directory runs alone.
        mesh: None,
        http_mounts: Vec::new(),
    };
    Some(Listener {
        name: path.to_owned(),
        addr,
        config,
    })
}

/// Crossbar path keys are `/` or names without a leading slash.
fn url_path(key: &str) -> String {
    if key.starts_with('/') {
        key.to_owned()
    } else {
        format!("/{key}")
    }
}

fn union_serializers(
    w: &mut Walker,
    path: &str,
    lists: &[Vec<Serializer>],
) -> Option<Vec<Serializer>> {
    if lists.is_empty() {
        return None;
    }
    let mut all: Vec<Serializer> = Vec::new();
    for l in lists {
        for s in l {
            if !all.contains(s) {
                all.push(*s);
            }
        }
    }
    if lists.iter().any(|l| l.len() != all.len()) {
        w.warning(
            path,
            "parts of this transport list different serializers; switchyard accepts their union on every part",
        );
    }
    Some(all)
}

fn read_serializers(w: &mut Walker, path: &str, obj: &Obj) -> Option<Vec<Serializer>> {
    let v = obj.get("serializers")?;
    let spath = format!("{path}.serializers");
    let list = w.array(v, &spath)?;
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match s.as_str() {
            Some(name) => match Serializer::from_name(name) {
                Some(s) => out.push(s),
                None if matches!(name, "ubjson" | "flatbuffers") => w.warning(
                    &format!("{spath}[{i}]"),
                    &format!("serializer \"{name}\" is not implemented; clients asking for it are refused"),
                ),
                None => w.error(&format!("{spath}[{i}]"), &format!("unknown serializer \"{name}\"")),
            },
            None => w.error(&format!("{spath}[{i}]"), "must be a string"),
        }
    }
    Some(out)
}

fn read_auth_of(w: &mut Walker, path: &str, obj: &Obj) -> Arc<dyn Authenticator> {
    let auth = match obj.get("auth") {
        Some(a) => read_auth(w, &format!("{path}.auth"), a).unwrap_or_default(),
        None => TransportAuth::default(),
    };
    Arc::new(auth)
}

fn read_size(w: &mut Walker, path: &str, obj: &Obj, key: &str, parts: &mut Parts) {
    if let Some(n) = w.opt_u64(obj, path, key) {
        if (512..=(16 << 20)).contains(&n) {
            parts.max_message_size.push(n as usize);
        } else {
            w.error(
                &format!("{path}.{key}"),
                "must be between 512 and 16777216 bytes (switchyard's largest message)",
            );
        }
    }
}

fn read_rawsocket(w: &mut Walker, path: &str, obj: &Obj, parts: &mut Parts) {
    if let Some(s) = read_serializers(w, path, obj) {
        parts.serializers.push(s);
    }
    if let Some(o) = obj.get("options") {
        let opath = format!("{path}.options");
        if let Some(o) = w.object(o, &opath) {
            w.keys(&o, &opath, &["max_message_size"], &[]);
            read_size(w, &opath, &o, "max_message_size", parts);
        }
    }
    parts.rawsocket = Some(read_auth_of(w, path, obj));
}

fn read_websocket(w: &mut Walker, path: &str, obj: &Obj, url: &str, parts: &mut Parts) {
    if obj.get("cookie").is_some() {
        w.error(
            &format!("{path}.cookie"),
            "cookie tracking and cookie authentication are not supported",
        );
    }
    if let Some(s) = read_serializers(w, path, obj) {
        parts.serializers.push(s);
    }
    if let Some(o) = obj.get("options") {
        let opath = format!("{path}.options");
        if let Some(o) = w.object(o, &opath) {
            let mut honored = vec![
                "auto_ping_interval",
                "auto_ping_timeout",
                "max_message_size",
                "allowed_origins",
                "allow_null_origin",
            ];
            honored.extend_from_slice(COSMETIC_WS_OPTIONS);
            w.keys(&o, &opath, &honored, &[]);
            for key in o.keys() {
                if COSMETIC_WS_OPTIONS.contains(&key.as_str()) {
                    w.warning(
                        &format!("{opath}.{key}"),
                        "not implemented by switchyard; ignored (cosmetic)",
                    );
                }
            }
            read_size(w, &opath, &o, "max_message_size", parts);
            if let Some(ms) = w.opt_u64(&o, &opath, "auto_ping_interval") {
                parts.ping_interval = Some(ms);
            }
            if let Some(ms) = w.opt_u64(&o, &opath, "auto_ping_timeout") {
                parts.ping_timeout = Some(ms);
            }
            let mut policy = OriginPolicy::default();
            if let Some(origins) = o.get("allowed_origins") {
                let apath = format!("{opath}.allowed_origins");
                policy.allowed = w
                    .array(origins, &apath)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v.as_str() {
                        Some(s) => Some(s.to_owned()),
                        None => {
                            w.error(&format!("{apath}[{i}]"), "must be a string");
                            None
                        }
                    })
                    .collect();
            }
            if o.contains_key("allow_null_origin") {
                policy.allow_null = w.flag(&o, &opath, "allow_null_origin");
            }
            if policy != OriginPolicy::default() {
                parts.path_origins.insert(url.to_owned(), policy);
            }
        }
    }
    let auth = read_auth_of(w, path, obj);
    if parts.websocket_paths.iter().any(|p| p == url) {
        w.error(path, &format!("WebSocket path {url} is configured twice"));
    }
    parts.websocket_paths.push(url.to_owned());
    parts.path_auth.insert(url.to_owned(), auth);
}

fn read_paths(w: &mut Walker, path: &str, obj: &Obj, parts: &mut Parts) {
    let ppath = format!("{path}.paths");
    let Some(paths) = obj.get("paths") else {
        w.error(&ppath, "missing");
        return;
    };
    let Some(paths) = w.object(paths, &ppath) else {
        return;
    };
    for (key, cfg) in &paths {
        let p = format!("{ppath}.{key}");
        let Some(c) = w.object(cfg, &p) else {
            continue;
        };
        match c.get("type").and_then(Value::as_str) {
            Some("websocket") => {
                w.keys(
                    &c,
                    &p,
                    &["type", "serializers", "options", "auth", "cookie"],
                    &["debug", "url", "id"],
                );
                read_websocket(w, &p, &c, &url_path(key), parts);
            }
            Some(t @ ("publisher" | "caller")) => {
                w.keys(&c, &p, &["type", "realm", "role", "options", "id"], &[]);
                let kind = if t == "publisher" {
                    BridgeKind::Publisher
                } else {
                    BridgeKind::Caller
                };
                let realm = w.string_at(&c, &p, "realm").unwrap_or_default();
                let role = w.string_at(&c, &p, "role").unwrap_or_default();
                let mut post_body_limit = 16 << 20;
                if let Some(o) = c.get("options") {
                    let opath = format!("{p}.options");
                    if let Some(o) = w.object(o, &opath) {
                        w.keys(
                            &o,
                            &opath,
                            &[
                                "post_body_limit",
                                "require_tls",
                                "key",
                                "secret",
                                "require_ip",
                            ],
                            &["debug", "timestamp_delta_limit"],
                        );
                        for k in ["key", "secret"] {
                            if o.get(k).is_some() {
                                w.error(
                                    &format!("{opath}.{k}"),
                                    "signed bridge requests are not implemented by switchyard",
                                );
                            }
                        }
                        if o.get("require_ip").is_some() {
                            w.error(
                                &format!("{opath}.require_ip"),
                                "client IP restrictions are not implemented by switchyard",
                            );
                        }
                        if w.flag(&o, &opath, "require_tls") {
                            parts.require_tls.push(p.clone());
                        }
                        match w.opt_u64(&o, &opath, "post_body_limit") {
                            // 0 is Crossbar's "no limit": switchyard's message limit applies.
                            None | Some(0) => {}
                            Some(n) => post_body_limit = n.min(16 << 20) as usize,
                        }
                    }
                }
                parts.http_bridges.insert(
                    url_path(key),
                    BridgeConfig {
                        kind,
                        realm,
                        role,
                        post_body_limit,
                    },
                );
            }
            Some("static") => {
                w.keys(
                    &c,
                    &p,
                    &["type", "directory", "options", "id", "package", "resource"],
                    &[],
                );
                if c.contains_key("package") || c.contains_key("resource") {
                    w.error(
                        &p,
                        "static files from a Python package are not supported; use \"directory\"",
                    );
                    continue;
                }
                let Some(directory) = w.string_at(&c, &p, "directory") else {
                    continue;
                };
                let root = w.resolve(&directory);
                if !root.is_dir() {
                    w.error(
                        &format!("{p}.directory"),
                        &format!("{} is not a directory", root.display()),
                    );
                }
                let mut dir = StaticDir {
                    mount: url_path(key),
                    root,
                    default_file: "index.html".into(),
                    mime_types: HashMap::new(),
                    cache_timeout: None,
                };
                if let Some(o) = c.get("options") {
                    let opath = format!("{p}.options");
                    if let Some(o) = w.object(o, &opath) {
                        w.keys(
                            &o,
                            &opath,
                            &[
                                "mime_types",
                                "cache_timeout",
                                "default_file",
                                "enable_directory_listing",
                            ],
                            &[],
                        );
                        if w.flag(&o, &opath, "enable_directory_listing") {
                            w.warning(
                                &format!("{opath}.enable_directory_listing"),
                                "directory listings are not served by switchyard",
                            );
                        }
                        if let Some(f) = w.opt_string(&o, &opath, "default_file") {
                            dir.default_file = f;
                        }
                        dir.cache_timeout = w.opt_u64(&o, &opath, "cache_timeout");
                        if let Some(m) = o.get("mime_types") {
                            let mpath = format!("{opath}.mime_types");
                            if let Some(m) = w.object(m, &mpath) {
                                for (ext, t) in &m {
                                    match t.as_str() {
                                        Some(t) => {
                                            dir.mime_types.insert(
                                                ext.trim_start_matches('.').to_ascii_lowercase(),
                                                t.to_owned(),
                                            );
                                        }
                                        None => {
                                            w.error(&format!("{mpath}.{ext}"), "must be a string")
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                parts.static_dirs.push(dir);
            }
            // Content, not routing: the node still routes WAMP the same without it.
            Some(t @ ("nodeinfo" | "redirect" | "json" | "resource")) => w.warning(
                &p,
                &format!("web path type \"{t}\" is not served by switchyard (HTTP 404); ignored"),
            ),
            Some(t) => w.error(
                &format!("{p}.type"),
                &format!("web path type \"{t}\" is not supported by switchyard"),
            ),
            None => w.error(&format!("{p}.type"), "missing"),
        }
    }
}

fn read_endpoint(
    w: &mut Walker,
    path: &str,
    v: &Value,
) -> Option<(SocketAddr, Option<Arc<rustls::ServerConfig>>)> {
    let e = w.object(v, path)?;
    w.keys(
        &e,
        path,
        &["type", "port", "interface", "version", "tls"],
        &["backlog", "shared", "user_timeout"],
    );
    match e.get("type").and_then(Value::as_str) {
        Some("tcp") => {}
        Some(other) => {
            w.error(
                &format!("{path}.type"),
                &format!("endpoint type \"{other}\" is not supported (tcp is)"),
            );
            return None;
        }
        None => {
            w.error(&format!("{path}.type"), "missing (\"tcp\")");
            return None;
        }
    }
    let port = match w.opt_u64(&e, path, "port") {
        Some(p) if p <= 65535 => p as u16,
        Some(_) => {
            w.error(&format!("{path}.port"), "must be 0..65535");
            return None;
        }
        None => {
            w.error(&format!("{path}.port"), "missing");
            return None;
        }
    };
    let version = w.opt_u64(&e, path, "version").unwrap_or(4);
    let default_ip = match version {
        4 => "0.0.0.0",
        6 => "::",
        _ => {
            w.error(&format!("{path}.version"), "must be 4 or 6");
            return None;
        }
    };
    let interface = w
        .opt_string(&e, path, "interface")
        .unwrap_or_else(|| default_ip.to_owned());
    let ip: IpAddr = match interface.parse() {
        Ok(ip) => ip,
        Err(_) => {
            w.error(
                &format!("{path}.interface"),
                &format!("\"{interface}\" is not an IP address"),
            );
            return None;
        }
    };
    let tls = match e.get("tls") {
        Some(t) => Some(read_tls(w, &format!("{path}.tls"), t)?),
        None => None,
    };
    Some((SocketAddr::new(ip, port), tls))
}

fn read_tls(w: &mut Walker, path: &str, v: &Value) -> Option<Arc<rustls::ServerConfig>> {
    let t = w.object(v, path)?;
    w.keys(
        &t,
        path,
        &["key", "certificate", "chain_certificates"],
        &["dhparam", "ciphers"],
    );
    let key_file = w.string_at(&t, path, "key")?;
    let cert_file = w.string_at(&t, path, "certificate")?;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    let mut load_certs = |w: &mut Walker, p: &str, file: &str| {
        let full = w.resolve(file);
        match CertificateDer::pem_file_iter(&full) {
            Ok(iter) => {
                let before = chain.len();
                for c in iter {
                    match c {
                        Ok(c) => chain.push(c),
                        Err(e) => w.error(p, &format!("{}: {e}", full.display())),
                    }
                }
                if chain.len() == before {
                    w.error(p, &format!("{}: no PEM certificate in it", full.display()));
                }
            }
            Err(e) => w.error(p, &format!("cannot read {}: {e}", full.display())),
        }
    };
    load_certs(w, &format!("{path}.certificate"), &cert_file);
    if let Some(extra) = t.get("chain_certificates") {
        let cpath = format!("{path}.chain_certificates");
        for (i, f) in w
            .array(extra, &cpath)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match f.as_str() {
                Some(f) => load_certs(w, &format!("{cpath}[{i}]"), f),
                None => w.error(&format!("{cpath}[{i}]"), "must be a file name"),
            }
        }
    }
    let key_path = w.resolve(&key_file);
    let key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(k) => k,
        Err(e) => {
            w.error(
                &format!("{path}.key"),
                &format!(
                    "cannot read a PEM private key from {}: {e}",
                    key_path.display()
                ),
            );
            return None;
        }
    };
    if chain.is_empty() {
        return None;
    }
    match rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
    {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            w.error(
                path,
                &format!("key and certificate do not make a TLS configuration: {e}"),
            );
            None
        }
    }
}
