//! switchyard's own configuration file (TOML) and its mapping onto the router's model.
//!
//! Every table rejects unknown keys, so a typo is an error that names the key instead of a
//! setting silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use switchyard_router::config::{Limits, RealmConfig, RouterConfig};
use switchyard_router::mesh::MeshConfig;
use switchyard_router::outbound::QueueLimits;
use switchyard_router::transport::ListenerConfig;
use switchyard_router::uri::{self, MatchPolicy, UriCheck};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("config: {key}: {source}")]
    Tls {
        key: &'static str,
        source: Box<switchyard_router::tls::TlsError>,
    },
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on, `host:port`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) unless RUST_LOG is set.
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub transport: TransportSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default = "default_realms")]
    pub realms: Vec<RealmSection>,
    /// The peer mesh; absent means a standalone router.
    #[serde(default)]
    pub mesh: Option<MeshSection>,
    /// The build master; absent in a config file means a pure router. With no config file
    /// at all the embedded default master runs.
    #[serde(default)]
    pub master: Option<switchyard_master::config::MasterConfig>,
    /// The folder relative file names (TLS certificates and keys) are resolved against: the
    /// config file's folder, else the current directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[mesh]`: this node's name, its peers and the shared secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    pub node_name: Option<String>,
    /// Peer URLs, `ws://host:port` or `wss://host:port` (this node's own URL may be listed
    /// too).
    #[serde(default)]
    pub peers: Vec<String>,
    pub secret: Option<String>,
    /// The URL peers should dial to reach this node (default: `ws://<listen>/mesh`, or
    /// `wss://` with `[transport.tls]`).
    pub advertise: Option<String>,
    /// CA certificate(s), PEM, that `wss://` peers' certificates must chain to (relative to
    /// the config file's folder). Required when a peer is `wss://`.
    pub tls_ca: Option<PathBuf>,
    pub heartbeat_interval_ms: Option<u64>,
    pub heartbeat_timeout_ms: Option<u64>,
    pub handshake_timeout_ms: Option<u64>,
    pub reconnect_max_ms: Option<u64>,
    /// Most sessions one peer may add to this node's meta API answers.
    pub max_remote_sessions: Option<usize>,
    /// Most (subscriber, subscription) entries one peer may add to them.
    pub max_remote_subscribers: Option<usize>,
    /// How long SUBSCRIBED, REGISTERED, UNSUBSCRIBED, UNREGISTERED wait for the peers to
    /// confirm the change (default: heartbeat_timeout_ms + 500).
    pub interest_ack_timeout_ms: Option<u64>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_realms() -> Vec<RealmSection> {
    ["realm1", "buildbot"]
        .into_iter()
        .map(|name| RealmSection {
            name: name.into(),
            uri_check: UriCheckName::Loose,
        })
        .collect()
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: default_listen(),
            log_level: None,
            transport: TransportSection::default(),
            limits: LimitsSection::default(),
            realms: default_realms(),
            mesh: None,
            master: None,
            base_dir: PathBuf::from("."),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    #[serde(default = "default_ws_paths")]
    pub websocket_paths: Vec<String>,
    #[serde(default = "yes")]
    pub rawsocket: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Serve TLS (wss://, TLS RawSocket) on `listen` with this certificate and key.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[transport.tls]`: PEM files, relative to the config file's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn default_ws_paths() -> Vec<String> {
    vec!["/ws".into(), "/".into()]
}
fn yes() -> bool {
    true
}
fn default_max_connections() -> usize {
    100_000
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            websocket_paths: default_ws_paths(),
            rawsocket: true,
            max_connections: default_max_connections(),
            tls: None,
        }
    }
}

/// Limits; every field optional, defaulting to the router's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_message_size: Option<usize>,
    pub queue_soft_bytes: Option<usize>,
    pub queue_hard_bytes: Option<usize>,
    pub queue_max_messages: Option<usize>,
    pub slow_consumer_timeout_ms: Option<u64>,
    pub handshake_timeout_ms: Option<u64>,
    /// 0 disables WebSocket pings.
    pub ping_interval_ms: Option<u64>,
    pub ping_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub goodbye_timeout_ms: Option<u64>,
    /// Most calls one session may have in flight (default 10000).
    pub max_calls_in_flight: Option<usize>,
    /// How long an HTTP request body may take to arrive (default 30000).
    pub http_body_timeout_ms: Option<u64>,
    /// How long an HTTP request may take until its response starts (default 30000).
    pub http_request_timeout_ms: Option<u64>,
    /// Most subscriptions one session may hold (default 10000).
    pub max_subscriptions_per_session: Option<usize>,
    /// Most registrations one session may hold (default 10000).
    pub max_registrations_per_session: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmSection {
    pub name: String,
    #[serde(default)]
    pub uri_check: UriCheckName,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum UriCheckName {
    #[default]
    Loose,
    Strict,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok(config)
    }

    /// A file name from the config, relative to its folder (absolute names stay as they are).
    pub fn resolve(&self, file: &Path) -> PathBuf {
        self.base_dir.join(file)
    }

    /// The listener's TLS configuration, if `[transport.tls]` is set.
    pub fn server_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        let Some(t) = &self.transport.tls else {
            return Ok(None);
        };
        switchyard_router::tls::server_config(&self.resolve(&t.cert), &self.resolve(&t.key))
            .map(Some)
            .map_err(|source| ConfigError::Tls {
                key: "transport.tls",
                source: Box::new(source),
            })
    }

    /// The trust anchors of `[mesh] tls_ca`, if set.
    pub fn mesh_tls_ca(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let Some(ca) = self.mesh.as_ref().and_then(|m| m.tls_ca.as_ref()) else {
            return Ok(None);
        };
        switchyard_router::tls::client_config(&self.resolve(ca))
            .map(Some)
            .map_err(|source| ConfigError::Tls {
                key: "mesh.tls_ca",
                source: Box::new(source),
            })
    }

    pub fn parse(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            ConfigError::Invalid(format!("listen = {:?} is not host:port ({e})", self.listen))
        })
    }

    /// Validates and converts to the router's model.
    pub fn router_config(&self) -> Result<(RouterConfig, ListenerConfig), ConfigError> {
        if self.realms.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one [[realms]] entry is required".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut realms = Vec::new();
        for r in &self.realms {
            if !uri::is_valid(&r.name, UriCheck::Loose, MatchPolicy::Exact) {
                return Err(ConfigError::Invalid(format!(
                    "realms.name {:?} is not a valid URI",
                    r.name
                )));
            }
            if !seen.insert(r.name.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "realm {:?} is declared twice",
                    r.name
                )));
            }
            realms.push(RealmConfig {
                meta_api: true,
                event_history: Vec::new(),
                disclosure_by_role: false,
                name: r.name.clone(),
                uri_check: match r.uri_check {
                    UriCheckName::Loose => UriCheck::Loose,
                    UriCheckName::Strict => UriCheck::Strict,
                },
            });
        }
        let l = &self.limits;
        let d = Limits::default();
        let ms = Duration::from_millis;
        let max_message_size = l.max_message_size.unwrap_or(d.max_message_size);
        if !(512..=(16 << 20)).contains(&max_message_size) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_message_size = {max_message_size} must be between 512 and 16777216"
            )));
        }
        let queue = QueueLimits {
            soft_bytes: l.queue_soft_bytes.unwrap_or(d.queue.soft_bytes),
            hard_bytes: l.queue_hard_bytes.unwrap_or(d.queue.hard_bytes),
            max_messages: l.queue_max_messages.unwrap_or(d.queue.max_messages),
            slow_consumer_timeout: l
                .slow_consumer_timeout_ms
                .map(ms)
                .unwrap_or(d.queue.slow_consumer_timeout),
        };
        if queue.soft_bytes > queue.hard_bytes {
            return Err(ConfigError::Invalid(
                "limits.queue_soft_bytes must not exceed limits.queue_hard_bytes".into(),
            ));
        }
        let limits = Limits {
            max_message_size,
            queue,
            handshake_timeout: l
                .handshake_timeout_ms
                .map(ms)
                .unwrap_or(d.handshake_timeout),
            ping_interval: match l.ping_interval_ms {
                Some(0) => None,
                Some(v) => Some(ms(v)),
                None => d.ping_interval,
            },
            ping_timeout: l.ping_timeout_ms.map(ms).unwrap_or(d.ping_timeout),
            write_timeout: l.write_timeout_ms.map(ms).unwrap_or(d.write_timeout),
            goodbye_timeout: l.goodbye_timeout_ms.map(ms).unwrap_or(d.goodbye_timeout),
            max_calls_in_flight: l
                .max_calls_in_flight
                .unwrap_or(d.max_calls_in_flight)
                .max(1),
            http_body_timeout: l
                .http_body_timeout_ms
                .map(|v| ms(v.max(1)))
                .unwrap_or(d.http_body_timeout),
            http_request_timeout: l
                .http_request_timeout_ms
                .map(|v| ms(v.max(1)))
                .unwrap_or(d.http_request_timeout),
            max_subscriptions_per_session: l
                .max_subscriptions_per_session
                .unwrap_or(d.max_subscriptions_per_session)
                .max(1),
            max_registrations_per_session: l
                .max_registrations_per_session
                .unwrap_or(d.max_registrations_per_session)
                .max(1),
        };
        for p in &self.transport.websocket_paths {
            if !p.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "transport.websocket_paths entry {p:?} must start with '/'"
                )));
            }
        }
        let listener = ListenerConfig {
            websocket_paths: self.transport.websocket_paths.clone(),
            rawsocket: self.transport.rawsocket,
            max_connections: self.transport.max_connections,
            tls: self.server_tls()?,
            mesh: None,
            ..ListenerConfig::default()
        };
        Ok((RouterConfig { realms, limits }, listener))
    }

    /// The mesh settings, if this node is part of a mesh.
    pub fn mesh_config(&self) -> Result<Option<MeshConfig>, ConfigError> {
        let Some(m) = &self.mesh else {
            return Ok(None);
        };
        let invalid = |s: &str| Err(ConfigError::Invalid(s.to_owned()));
        let Some(name) = m.node_name.clone().filter(|n| !n.is_empty()) else {
            return invalid("mesh.node_name (or --node-name) is required for a mesh");
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid("mesh.node_name may only contain letters, digits, '-', '_' and '.'");
        }
        if name.len() > switchyard_router::mesh::handshake::MAX_NODE_NAME_BYTES {
            return invalid("mesh.node_name may be at most 128 bytes long");
        }
        let Some(secret) = m.secret.clone().filter(|s| !s.is_empty()) else {
            return invalid("mesh.secret (or --mesh-secret) is required for a mesh");
        };
        for p in m.peers.iter().chain(m.advertise.iter()) {
            if !p.starts_with("ws://") && !p.starts_with("wss://") {
                return Err(ConfigError::Invalid(format!(
                    "mesh peer {p:?} must be a ws://host:port or wss://host:port URL"
                )));
            }
        }
        let tls = self.mesh_tls_ca()?;
        if tls.is_none() {
            if let Some(p) = m.peers.iter().find(|p| p.starts_with("wss://")) {
                return Err(ConfigError::Invalid(format!(
                    "mesh peer {p:?} is wss://, but mesh.tls_ca (or --mesh-tls-ca) is not set: \
                     name the CA certificate(s) peers' certificates must chain to"
                )));
            }
        }
        let listen_tls = self.transport.tls.is_some();
        match m.advertise.as_deref() {
            Some(a) if listen_tls && a.starts_with("ws://") => tracing::warn!(
                "mesh.advertise is {a:?} but this node serves TLS ([transport.tls]): \
                 peers dialing it in clear text will fail"
            ),
            Some(a) if !listen_tls && a.starts_with("wss://") => tracing::warn!(
                "mesh.advertise is {a:?} but this node does not serve TLS: fine behind a \
                 TLS-terminating proxy, otherwise peers will fail to link"
            ),
            _ => {}
        }
        if listen_tls && tls.is_none() {
            tracing::warn!(
                "this node serves TLS but mesh.tls_ca is not set: it cannot dial wss:// peers"
            );
        }
        let ms = Duration::from_millis;
        let mut c = MeshConfig::new(name, secret);
        c.peers = m.peers.clone();
        c.advertise = m.advertise.clone();
        c.listen_tls = listen_tls;
        c.tls = tls;
        if let Some(v) = m.heartbeat_interval_ms {
            c.heartbeat_interval = ms(v.max(10));
        }
        if let Some(v) = m.heartbeat_timeout_ms {
            c.heartbeat_timeout = ms(v);
        }
        if c.heartbeat_timeout <= c.heartbeat_interval {
            return invalid("mesh.heartbeat_timeout_ms must exceed mesh.heartbeat_interval_ms");
        }
        if let Some(v) = m.handshake_timeout_ms {
            c.handshake_timeout = ms(v.max(10));
        }
        if let Some(v) = m.reconnect_max_ms {
            c.reconnect_max = ms(v.max(10));
        }
        if let Some(v) = m.max_remote_sessions {
            c.max_remote_sessions = v;
        }
        if let Some(v) = m.max_remote_subscribers {
            c.max_remote_subscribers = v;
        }
        c.interest_ack_timeout = m.interest_ack_timeout_ms.map(ms);
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e =
            FileConfig::parse("listen = \"127.0.0.1:1\"\nlisten_port = 5\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
        let e = FileConfig::parse("[limits]\nmax_msg_size = 5\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("max_msg_size"), "{e}");
        let e = FileConfig::parse("[[realms]]\nname = \"a\"\ncheck = \"strict\"\n", "x.toml")
            .unwrap_err();
        assert!(e.to_string().contains("check"), "{e}");
    }

    #[test]
    fn mesh_table_is_checked() {
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"ws://127.0.0.1:1\"]\n",
            "x",
        )
        .unwrap();
        let m = c.mesh_config().unwrap().unwrap();
        assert_eq!(m.node_name, "a");
        assert_eq!(m.peers, ["ws://127.0.0.1:1"]);
        assert_eq!(m.max_remote_sessions, 100_000);
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\nmax_remote_sessions = 5\nmax_remote_subscribers = 7\n",
            "x",
        )
        .unwrap();
        let m = c.mesh_config().unwrap().unwrap();
        assert_eq!((m.max_remote_sessions, m.max_remote_subscribers), (5, 7));
        assert_eq!(m.interest_ack_timeout(), Duration::from_millis(4000));
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\ninterest_ack_timeout_ms = 250\n",
            "x",
        )
        .unwrap();
        let m = c.mesh_config().unwrap().unwrap();
        assert_eq!(m.interest_ack_timeout(), Duration::from_millis(250));
        let c = FileConfig::parse("[mesh]\nnode_name = \"a\"\n", "x").unwrap();
        assert!(c.mesh_config().unwrap_err().to_string().contains("secret"));
        let e = FileConfig::parse("[mesh]\nnode = \"a\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("node"), "{e}");
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"http://x\"]\n",
            "x",
        )
        .unwrap();
        assert!(c.mesh_config().unwrap_err().to_string().contains("ws://"));
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file() {
        let mut c = FileConfig::parse(
            "[transport.tls]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\n",
            "x",
        )
        .unwrap();
        c.base_dir = PathBuf::from("/etc/switchyard");
        let t = c.transport.tls.as_ref().unwrap();
        assert_eq!(c.resolve(&t.cert), Path::new("/etc/switchyard/c.pem"));
        assert_eq!(c.resolve(&t.key), Path::new("/abs/k.pem"));
        let e = c.router_config().unwrap_err().to_string();
        assert!(
            e.contains("transport.tls") && e.contains("/etc/switchyard/c.pem"),
            "{e}"
        );
        let e = FileConfig::parse("[transport.tls]\ncert = \"c.pem\"\n", "x").unwrap_err();
        assert!(e.to_string().contains("key"), "{e}");
    }

    #[test]
    fn wss_peers_need_a_ca() {
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"wss://127.0.0.1:1\"]\n",
            "x",
        )
        .unwrap();
        let e = c.mesh_config().unwrap_err().to_string();
        assert!(e.contains("mesh.tls_ca"), "{e}");
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"wss://127.0.0.1:1\"]\ntls_ca = \"/nonexistent/ca.pem\"\n",
            "x",
        )
        .unwrap();
        let e = c.mesh_config().unwrap_err().to_string();
        assert!(
            e.contains("mesh.tls_ca") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        // ws:// peers and a wss:// advertised URL need no CA.
        let c = FileConfig::parse(
            "[mesh]\nnode_name = \"a\"\nsecret = \"s\"\npeers = [\"ws://127.0.0.1:1\"]\nadvertise = \"wss://a.example:443\"\n",
            "x",
        )
        .unwrap();
        let m = c.mesh_config().unwrap().unwrap();
        assert!(m.tls.is_none() && !m.listen_tls);
    }

    #[test]
    fn defaults_give_two_open_realms() {
        let (rc, lc) = FileConfig::default().router_config().unwrap();
        let names: Vec<_> = rc.realms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["realm1", "buildbot"]);
        assert!(lc.rawsocket);
    }

    #[test]
    fn bad_values_are_explained() {
        let c = FileConfig::parse("[[realms]]\nname = \"a b\"\n", "x").unwrap();
        assert!(c
            .router_config()
            .unwrap_err()
            .to_string()
            .contains("not a valid URI"));
        let c =
            FileConfig::parse("[[realms]]\nname = \"a\"\n[[realms]]\nname = \"a\"\n", "x").unwrap();
        assert!(c.router_config().unwrap_err().to_string().contains("twice"));
        let c = FileConfig::parse("listen = \"nope\"\n", "x").unwrap();
        assert!(c
            .listen_addr()
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        let e = FileConfig::parse("[[realms]]\nname = \"a\"\nuri_check = \"sloppy\"\n", "x")
            .unwrap_err();
        assert!(
            e.to_string().contains("sloppy") || e.to_string().contains("variant"),
            "{e}"
        );
    }
}
