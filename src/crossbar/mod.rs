//! Crossbar.io node directories: reads `config.json` (or `config.yaml`, or the same model in
//! `config.toml`) from a `--cbdir` and maps it onto the router's model (realms, roles,
//! listeners with their auth and TLS).
//!
//! Every file format is parsed into one JSON tree and walked by the same code, so they mean
//! exactly the same. Every key is accounted for: keys switchyard implements are honored; keys
//! it does not implement are reported by their path, as an **error** when ignoring them would
//! change security or routing (the node does not start) and as a **warning** when they are
//! cosmetic. Nothing is silently ignored.
//!
//! - [`walk`]: the path-tracking walker and the report of issues;
//! - [`auth`]: `auth` blocks (anonymous, ticket, wampcra, cryptosign) and realm roles;
//! - [`transports`]: transports, endpoints, TLS, WebSocket/RawSocket options.

mod auth;
mod transports;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use switchyard_router::auth::roles::RoleAuthorizer;
use switchyard_router::config::{Limits, RealmConfig, RouterConfig};
use switchyard_router::transport::ListenerConfig;
use switchyard_router::uri::{self, MatchPolicy, UriCheck};

pub use walk::Report;
use walk::Walker;

/// Why a node directory could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no config.json, config.yaml or config.toml in node directory {0}")]
    NoConfig(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid {format}: {message}")]
    Syntax {
        path: String,
        format: &'static str,
        message: String,
    },
    #[error("{path}: {} error(s) in the configuration:\n{}", .report.errors.len(), .report.render_errors())]
    Invalid { path: String, report: Report },
}

/// One listening transport.
pub struct Listener {
    /// `workers[0].transports[1]`, for logs.
    pub name: String,
    pub addr: std::net::SocketAddr,
    pub config: ListenerConfig,
}

/// Everything a Crossbar node directory configures that switchyard runs.
pub struct Node {
    /// The file read.
    pub path: PathBuf,
    pub router: RouterConfig,
    pub authorizer: Arc<RoleAuthorizer>,
    pub listeners: Vec<Listener>,
    /// Warnings to log at start-up (errors stop the load).
    pub warnings: Vec<String>,
}

impl Node {
    /// Loads `cbdir/config.json`, else `config.yaml`, else `config.toml` (the same model
    /// written in TOML, for people who prefer switchyard's own format).
    pub fn load(cbdir: &Path) -> Result<Node, NodeError> {
        let Some((path, format)) = [
            ("config.json", Format::Json),
            ("config.yaml", Format::Yaml),
            ("config.toml", Format::Toml),
        ]
        .into_iter()
        .map(|(f, fmt)| (cbdir.join(f), fmt))
        .find(|(p, _)| p.is_file()) else {
            return Err(NodeError::NoConfig(cbdir.display().to_string()));
        };
        let text = std::fs::read_to_string(&path).map_err(|source| NodeError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let tree = parse(&text, format).map_err(|(format, message)| NodeError::Syntax {
            path: path.display().to_string(),
            format,
            message,
        })?;
        Self::from_tree(&tree, cbdir, path)
    }

    /// Maps a parsed configuration; relative file names resolve against `cbdir`.
    pub fn from_tree(tree: &Value, cbdir: &Path, path: PathBuf) -> Result<Node, NodeError> {
        let mut w = Walker::new(cbdir);
        let node = read_node(&mut w, tree);
        let report = w.into_report();
        match node {
            Some((router, authorizer, listeners)) if report.errors.is_empty() => Ok(Node {
                path,
                router,
                authorizer: Arc::new(authorizer),
                listeners,
                warnings: report.warnings,
            }),
            _ => Err(NodeError::Invalid {
                path: path.display().to_string(),
                report,
            }),
        }
    }
}

/// The syntaxes a node configuration may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Toml,
}

/// Parses any of the formats into one tree.
pub fn parse(text: &str, format: Format) -> Result<Value, (&'static str, String)> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| ("JSON", e.to_string())),
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| ("YAML", e.to_string())),
        Format::Toml => toml::from_str(text).map_err(|e| ("TOML", e.to_string())),
    }
}

type NodeParts = (RouterConfig, RoleAuthorizer, Vec<Listener>);

fn read_node(w: &mut Walker, tree: &Value) -> Option<NodeParts> {
    let top = w.object(tree, "")?;
    w.keys(
        &top,
        "",
        &["version", "$schema", "workers", "controller"],
        &[],
    );
    match top.get("version") {
        Some(v) if v.as_u64() == Some(2) => {}
        Some(_) => w.error("version", "only configuration version 2 is supported"),
        None => w.error(
            "version",
            "missing (Crossbar node configurations say \"version\": 2)",
        ),
    }
    if let Some(c) = top.get("controller") {
        if c.as_object().is_some_and(|o| !o.is_empty()) {
            w.warning(
                "controller",
                "node controller settings (id, options, fabric) do not apply to switchyard and are ignored",
            );
        }
    }
    let workers = match top.get("workers") {
        Some(v) => w.array(v, "workers")?,
        None => {
            w.error("workers", "missing: a node needs a router worker");
            return None;
        }
    };
    let mut routers = Vec::new();
    for (i, worker) in workers.iter().enumerate() {
        let path = format!("workers[{i}]");
        let Some(obj) = w.object(worker, &path) else {
            continue;
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("router") => routers.push((path, obj)),
            Some(t @ ("container" | "guest" | "proxy" | "websocket-testee" | "xbrmm" | "hub"
            | "marketplace")) => w.error(
                &format!("{path}.type"),
                &format!("\"{t}\" workers are not supported (switchyard runs router workers only; run application components as separate processes)"),
            ),
            Some(t) => w.error(&format!("{path}.type"), &format!("unknown worker type \"{t}\"")),
            None => w.error(&format!("{path}.type"), "missing"),
        }
    }
    match routers.len() {
        0 => {
            w.error("workers", "no router worker configured");
            None
        }
        1 => {
            let (path, obj) = routers.pop().expect("one");
            read_router(w, &path, &obj)
        }
        _ => {
            // Merging workers would make each worker's realms reachable through the other's
            // transports (with their auth): a security change, so refused.
            w.error(
                &routers[1].0,
                "only one router worker is supported (each worker's realms would become reachable through every transport)",
            );
            None
        }
    }
}

fn read_router(w: &mut Walker, path: &str, obj: &walk::Obj) -> Option<NodeParts> {
    w.keys(
        obj,
        path,
        &[
            "type",
            "id",
            "realms",
            "transports",
            "components",
            "connections",
        ],
        &["options", "manhole"],
    );
    for key in ["components", "connections"] {
        if let Some(v) = obj.get(key) {
            if v.as_array().is_none_or(|a| !a.is_empty()) {
                w.error(
                    &format!("{path}.{key}"),
                    "embedded application components are not supported; run them as separate WAMP clients",
                );
            }
        }
    }
    let mut realms = Vec::new();
    let mut authorizer = RoleAuthorizer::new();
    let realm_list = match obj.get("realms") {
        Some(v) => w.array(v, &format!("{path}.realms")).unwrap_or_default(),
        None => Vec::new(),
    };
    if realm_list.is_empty() {
        w.error(
            &format!("{path}.realms"),
            "a router worker needs at least one realm",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, realm) in realm_list.iter().enumerate() {
        let rpath = format!("{path}.realms[{i}]");
        if let Some(r) = read_realm(w, &rpath, realm, &mut authorizer) {
            if !seen.insert(r.name.clone()) {
                w.error(
                    &format!("{rpath}.name"),
                    &format!("realm \"{}\" is declared twice", r.name),
                );
            }
            realms.push(r);
        }
    }
    let transport_list = match obj.get("transports") {
        Some(v) => w
            .array(v, &format!("{path}.transports"))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    if transport_list.is_empty() {
        w.error(
            &format!("{path}.transports"),
            "a router worker needs at least one transport",
        );
    }
    let mut listeners: Vec<Listener> = Vec::new();
    for (i, t) in transport_list.iter().enumerate() {
        let tpath = format!("{path}.transports[{i}]");
        if let Some(l) = transports::read_transport(w, &tpath, t) {
            if l.addr.port() != 0 && listeners.iter().any(|o| o.addr == l.addr) {
                w.error(
                    &format!("{tpath}.endpoint"),
                    &format!("another transport already listens on {}", l.addr),
                );
            }
            listeners.push(l);
        }
    }
    for l in &listeners {
        for (url, b) in &l.config.http_bridges {
            if !seen.contains(&b.realm) {
                w.error(
                    &l.name,
                    &format!(
                        "the HTTP bridge at {url} names realm \"{}\", which is not configured",
                        b.realm
                    ),
                );
            }
        }
    }
    let router = RouterConfig {
        realms,
        limits: Limits::default(),
    };
    Some((router, authorizer, listeners))
}

fn read_realm(
    w: &mut Walker,
    path: &str,
    v: &Value,
    authorizer: &mut RoleAuthorizer,
) -> Option<RealmConfig> {
    let obj = w.object(v, path)?;
    w.keys(
        &obj,
        path,
        &["name", "roles", "options", "store", "id"],
        &[],
    );
    let name = w.string_at(&obj, path, "name")?;
    if !uri::is_valid(&name, UriCheck::Loose, MatchPolicy::Exact) {
        w.error(
            &format!("{path}.name"),
            &format!("\"{name}\" is not a valid realm URI"),
        );
    }
    let mut config = RealmConfig::new(name.clone());
    // Crossbar discloses callers and publishers by the role's `disclose` only.
    config.disclosure_by_role = true;
    if let Some(opts) = obj.get("options") {
        let opath = format!("{path}.options");
        if let Some(o) = w.object(opts, &opath) {
            w.keys(
                &o,
                &opath,
                &["uri_check", "enable_meta_api"],
                &["event_dispatching_chunk_size"],
            );
            match o.get("uri_check").map(|v| v.as_str()) {
                None => {}
                Some(Some("strict")) => config.uri_check = UriCheck::Strict,
                Some(Some("loose")) => config.uri_check = UriCheck::Loose,
                Some(_) => w.error(
                    &format!("{opath}.uri_check"),
                    "must be \"strict\" or \"loose\"",
                ),
            }
            match o.get("enable_meta_api") {
                None => {}
                Some(Value::Bool(b)) => config.meta_api = *b,
                Some(_) => w.error(&format!("{opath}.enable_meta_api"), "must be a boolean"),
            }
        }
    }
    if let Some(store) = obj.get("store") {
        let spath = format!("{path}.store");
        if let Some(s) = w.object(store, &spath) {
            w.keys(
                &s,
                &spath,
                &["type", "event-history", "limit"],
                &["maxsize"],
            );
            match s.get("type").and_then(Value::as_str) {
                Some("memory") => {}
                Some(other) => w.error(
                    &format!("{spath}.type"),
                    &format!("store type \"{other}\" is not supported (memory is)"),
                ),
                None => w.error(&format!("{spath}.type"), "missing (\"memory\")"),
            }
            let default_limit = w.opt_u64(&s, &spath, "limit").unwrap_or(100) as usize;
            if let Some(h) = s.get("event-history") {
                let hpath = format!("{spath}.event-history");
                for (i, e) in w.array(h, &hpath).unwrap_or_default().iter().enumerate() {
                    let epath = format!("{hpath}[{i}]");
                    let Some(e) = w.object(e, &epath) else {
                        continue;
                    };
                    w.keys(&e, &epath, &["uri", "match", "limit"], &[]);
                    let Some(uri_text) = w.string_at(&e, &epath, "uri") else {
                        continue;
                    };
                    let policy = match e.get("match").map(|m| m.as_str()) {
                        None => MatchPolicy::Exact,
                        Some(m) => match MatchPolicy::from_option(m) {
                            Some(p) => p,
                            None => {
                                w.error(
                                    &format!("{epath}.match"),
                                    "must be exact, prefix or wildcard",
                                );
                                continue;
                            }
                        },
                    };
                    if !uri::is_valid(&uri_text, UriCheck::Loose, policy) {
                        w.error(
                            &format!("{epath}.uri"),
                            &format!("\"{uri_text}\" is not a valid URI"),
                        );
                    }
                    let limit = w
                        .opt_u64(&e, &epath, "limit")
                        .map_or(default_limit, |l| l as usize);
                    config
                        .event_history
                        .push(switchyard_router::config::EventHistory {
                            uri: uri_text,
                            policy,
                            limit: limit.clamp(1, 100_000),
                        });
                }
            }
        }
    }
    let roles = match obj.get("roles") {
        Some(v) => w.array(v, &format!("{path}.roles")).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for (i, role) in roles.iter().enumerate() {
        let rpath = format!("{path}.roles[{i}]");
        if let Some((role_name, role)) = auth::read_role(w, &rpath, role) {
            if !seen.insert(role_name.clone()) {
                w.error(
                    &format!("{rpath}.name"),
                    &format!("role \"{role_name}\" is declared twice"),
                );
            }
            authorizer.add_role(&name, &role_name, role);
        }
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(tree: Value) -> Result<Node, Report> {
        Node::from_tree(&tree, Path::new("/nonexistent"), "config.json".into()).map_err(|e| match e
        {
            NodeError::Invalid { report, .. } => report,
            other => panic!("{other}"),
        })
    }

    fn minimal(transport: Value, realm: Value) -> Value {
        json!({
            "version": 2,
            "workers": [{"type": "router", "realms": [realm], "transports": [transport]}]
        })
    }

    fn ws() -> Value {
        json!({"type": "websocket", "endpoint": {"type": "tcp", "port": 0, "interface": "127.0.0.1"}})
    }

    fn realm() -> Value {
        json!({"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
            {"uri": "", "match": "prefix", "allow": {"call": true}}]}]})
    }

    fn errors_of(tree: Value) -> Vec<String> {
        load(tree).err().expect("should be rejected").errors
    }

    #[test]
    fn minimal_node_loads() {
        let node = load(minimal(ws(), realm())).unwrap();
        assert_eq!(node.router.realms[0].name, "realm1");
        assert_eq!(node.listeners.len(), 1);
        assert!(node.warnings.is_empty(), "{:?}", node.warnings);
    }

    #[test]
    fn unknown_keys_are_errors_naming_their_path() {
        let mut t = ws();
        t["auth"] = json!({"ticket": {"type": "static", "principals": {
            "a": {"ticket": "x", "role": "anonymous", "tiket": "typo"}}}});
        let e = errors_of(minimal(t, realm()));
        assert_eq!(
            e,
            ["workers[0].transports[0].auth.ticket.principals.a.tiket: not supported by switchyard"]
        );
        let mut r = realm();
        r["roles"][0]["permissions"][0]["allow"]["publsh"] = json!(true);
        let e = errors_of(minimal(ws(), r));
        assert!(
            e[0].starts_with("workers[0].realms[0].roles[0].permissions[0].allow.publsh"),
            "{e:?}"
        );
    }

    #[test]
    fn cosmetic_keys_are_warnings() {
        let mut t = ws();
        t["endpoint"]["backlog"] = json!(100);
        t["options"] = json!({"compression": {}, "auto_ping_interval": 1000});
        t["debug"] = json!(true);
        let node = load(minimal(t, realm())).unwrap();
        let mut w = node.warnings.clone();
        w.sort();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("workers[0].transports[0].debug"));
        assert!(w[1].starts_with("workers[0].transports[0].endpoint.backlog"));
        assert!(w[2].starts_with("workers[0].transports[0].options.compression"));
        let limits = node.listeners[0].config.limits.clone().unwrap();
        assert_eq!(
            limits.ping_interval,
            Some(std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn security_and_routing_features_not_implemented_are_errors() {
        let cases = [
            (
                json!({"ticket": {"type": "function", "create": "x.y"}}),
                "auth.ticket.type",
            ),
            (
                json!({"scram": {"type": "static", "principals": {}}}),
                "auth.scram",
            ),
        ];
        for (auth, key) in cases {
            let mut t = ws();
            t["auth"] = auth;
            let e = errors_of(minimal(t, realm()));
            assert!(
                e.iter()
                    .any(|e| e.starts_with(&format!("workers[0].transports[0].{key}"))),
                "{key}: {e:?}"
            );
        }
        let mut r = realm();
        r["roles"][0] = json!({"name": "x", "authorizer": "com.authorize"});
        assert!(errors_of(minimal(ws(), r))[0].contains("roles[0].authorizer"));
        let mut t = ws();
        t["options"] =
            json!({"allowed_origins": ["https://*.example.com:*"], "allow_null_origin": false});
        let node = load(minimal(t, realm())).unwrap();
        let policy = &node.listeners[0].config.path_origins["*"];
        assert!(!policy.allow_null && policy.allows(Some("https://a.example.com")));
        let mut t = ws();
        t["options"] = json!({"allowed_origins": [7]});
        assert!(errors_of(minimal(t, realm()))[0].contains("allowed_origins[0]"));
        let mut tree = minimal(ws(), realm());
        tree["workers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "container"}));
        assert!(errors_of(tree)[0].starts_with("workers[1].type"));
        let mut r = realm();
        r["store"] = json!({"type": "memory", "event-history": [{"uri": "com.a", "limit": 10}]});
        let node = load(minimal(ws(), r)).unwrap();
        assert_eq!(node.router.realms[0].event_history[0].limit, 10);
        let mut r = realm();
        r["store"] = json!({"type": "lmdb"});
        assert!(errors_of(minimal(ws(), r))[0].contains("store.type"));
    }

    #[test]
    fn bad_values_are_explained() {
        let mut t = ws();
        t["auth"] = json!({"cryptosign": {"type": "static", "principals": {
            "d": {"authorized_keys": ["abcd"], "role": "anonymous"}}}});
        assert!(errors_of(minimal(t, realm()))[0].contains("authorized_keys[0]"));
        let mut t = ws();
        t["auth"] = json!({"wampcra": {"type": "static", "users": {
            "u": {"secret": "s", "role": "anonymous", "salt": "x"}}}});
        assert!(errors_of(minimal(t, realm()))[0].contains("together"));
        let mut t = ws();
        t["endpoint"]["type"] = json!("unix");
        assert!(errors_of(minimal(t, realm()))[0].contains("endpoint.type"));
        let mut r = realm();
        r["name"] = json!("bad realm");
        assert!(errors_of(minimal(ws(), r))[0].contains("realms[0].name"));
        assert!(errors_of(json!({"workers": []}))
            .iter()
            .any(|e| e.starts_with("version")));
        let mut t = ws();
        t["endpoint"]["tls"] = json!({"key": "k.pem", "certificate": "c.pem"});
        let e = errors_of(minimal(t, realm()));
        assert!(
            e.iter().any(|e| e.contains("endpoint.tls.certificate")),
            "{e:?}"
        );
    }

    #[test]
    fn dynamic_authenticators_load() {
        let mut t = ws();
        t["auth"] = json!({"ticket": {"type": "dynamic", "authenticator": "com.example.auth",
            "authenticator-realm": "realm1"}});
        load(minimal(t, realm())).unwrap();
        let mut t = ws();
        t["auth"] = json!({"wampcra": {"type": "dynamic", "authenticator": "bad uri"}});
        assert!(errors_of(minimal(t, realm()))[0].contains("wampcra.authenticator"));
    }

    #[test]
    fn http_bridge_paths() {
        let web = |opts: Value| {
            json!({"type": "web", "endpoint": {"type": "tcp", "port": 0, "interface": "127.0.0.1"},
                "paths": {"pub": {"type": "publisher", "realm": "realm1", "role": "anonymous",
                    "options": opts}}})
        };
        let node = load(minimal(web(json!({"post_body_limit": 100})), realm())).unwrap();
        let b = &node.listeners[0].config.http_bridges["/pub"];
        assert_eq!((b.realm.as_str(), b.post_body_limit), ("realm1", 100));
        let e = errors_of(minimal(web(json!({"secret": "s", "key": "k"})), realm()));
        assert!(
            e.iter().any(|e| e.contains("paths.pub.options.secret")),
            "{e:?}"
        );
        let e = errors_of(minimal(web(json!({"require_tls": true})), realm()));
        assert!(e[0].contains("require_tls"), "{e:?}");
        let mut t = web(json!({}));
        t["paths"]["pub"]["realm"] = json!("nowhere");
        assert!(errors_of(minimal(t, realm()))[0].contains("nowhere"));
    }

    #[test]
    fn yaml_and_json_mean_the_same() {
        let yaml = r#"
version: 2
workers:
  - type: router
    realms:
      - name: realm1
        roles:
          - name: anonymous
            permissions:
              - uri: ""
                match: prefix
                allow: {call: true}
    transports:
      - type: websocket
        endpoint: {type: tcp, port: 0, interface: 127.0.0.1}
"#;
        let from_yaml = parse(yaml, Format::Yaml).unwrap();
        assert_eq!(from_yaml, minimal(ws(), realm()));
        let toml_text = r#"
version = 2
[[workers]]
type = "router"
[[workers.realms]]
name = "realm1"
[[workers.realms.roles]]
name = "anonymous"
permissions = [{uri = "", match = "prefix", allow = {call = true}}]
[[workers.transports]]
type = "websocket"
endpoint = {type = "tcp", port = 0, interface = "127.0.0.1"}
"#;
        assert_eq!(
            parse(toml_text, Format::Toml).unwrap(),
            minimal(ws(), realm())
        );
    }
}
