//! `switchyard start`: one node, from a Crossbar node directory, a switchyard TOML file or
//! the embedded default, with the command line's overrides; run until SIGTERM/SIGINT (or
//! the build master's own stop), then taken down in order: master, mesh links, sessions.
//!
//! Tests and scripts read the `switchyard listening on ADDR` (and `switchyard metrics on
//! ADDR`) lines this prints to learn the ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use switchyard_master::config::{BuildbotWorkersConfig, MasterConfig};
use switchyard_router::auth::methods::TransportAuth;
use switchyard_router::config::RouterConfig;
use switchyard_router::mesh::{Mesh, MeshConfig};
use switchyard_router::transport::ListenerConfig;
use switchyard_router::{transport, Router};

use crate::config::{self, FileConfig};
use crate::master::{prepare_master, start_master, NodeTrust, PreparedMaster, RunningMaster};
use crate::{crossbar, init_logging, StartArgs};

/// How long the router waits for sessions to close at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `switchyard start`. Exit codes: 2 for a bad configuration, 1 for a failure to run.
pub fn start(args: StartArgs, log_level: Option<String>) -> ExitCode {
    if let Some(cbdir) = &args.cbdir {
        return start_crossbar_node(cbdir, log_level, args.metrics);
    }
    let embedded = args.config.is_none();
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(c) => c,
            Err(e) => return bad_config(e),
        },
        None => FileConfig {
            master: Some(MasterConfig::embedded_default()),
            ..FileConfig::default()
        },
    };
    let (file, no_master, metrics) = args.apply(file);
    init_logging(log_level.as_deref().or(file.log_level.as_deref()));
    match Plan::new(file, embedded, no_master, metrics) {
        Ok(plan) => runtime().block_on(plan.run()),
        Err(e) => bad_config(e),
    }
}

fn bad_config(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchyard: {e}");
    ExitCode::from(2)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

impl StartArgs {
    /// The file config with the command line's overrides applied, plus the flags that are
    /// not config keys. Files named on the command line are relative to the current
    /// directory.
    fn apply(self, mut file: FileConfig) -> (FileConfig, bool, Option<SocketAddr>) {
        let from_cwd = |p: PathBuf| std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p);
        // `--no-master` keeps the `[master]` section: the engine does not run, but the node
        // still guards the master's realm (docs/security.md).
        if let Some(m) = file.master.as_mut() {
            if let Some(db) = self.db {
                m.db = Some(db);
            }
            if let Some(d) = self.data_dir {
                m.data_dir = d;
            }
            if let Some(n) = self.master_name {
                m.name = Some(n);
            }
            if let Some(listen) = self.buildbot_workers {
                m.buildbot_workers = Some(BuildbotWorkersConfig { listen });
            }
            if let Some(d) = self.buildbot_www {
                m.ui.buildbot_www = Some(from_cwd(d));
            }
        }
        if let Some(l) = self.listen {
            file.listen = l;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            file.transport.tls = Some(config::TlsSection {
                cert: from_cwd(cert),
                key: from_cwd(key),
            });
        }
        if !self.realms.is_empty() {
            file.realms = self
                .realms
                .into_iter()
                .map(|name| config::RealmSection {
                    name,
                    uri_check: Default::default(),
                })
                .collect();
        }
        let mesh_flags = self.node_name.is_some()
            || !self.peers.is_empty()
            || self.mesh_secret.is_some()
            || self.advertise.is_some()
            || self.mesh_tls_ca.is_some();
        if mesh_flags {
            let m = file.mesh.get_or_insert_with(Default::default);
            m.node_name = self.node_name.or(m.node_name.take());
            m.peers.extend(self.peers);
            m.secret = self.mesh_secret.or(m.secret.take());
            m.advertise = self.advertise.or(m.advertise.take());
            if let Some(ca) = self.mesh_tls_ca {
                m.tls_ca = Some(from_cwd(ca));
            }
        }
        (file, self.no_master, self.metrics)
    }
}

/// Everything a node needs, checked before anything binds or starts.
struct Plan {
    addr: SocketAddr,
    router: RouterConfig,
    listener: ListenerConfig,
    mesh: Option<MeshConfig>,
    master: Option<PreparedMaster>,
    trust: NodeTrust,
    metrics: Option<SocketAddr>,
}

impl Plan {
    fn new(
        mut file: FileConfig,
        embedded: bool,
        no_master: bool,
        metrics: Option<SocketAddr>,
    ) -> Result<Plan, String> {
        let mesh = file.mesh_config().map_err(|e| e.to_string())?;
        let (router, listener) = file.router_config().map_err(|e| e.to_string())?;
        let addr = file.listen_addr().map_err(|e| e.to_string())?;
        let section = file.master.take();
        let (master, trust) = match section {
            Some(m) if !no_master && m.enabled => {
                let p = prepare_master(m, &file, embedded)?;
                let trust = NodeTrust::for_master(&p);
                (Some(p), trust)
            }
            other => (None, NodeTrust::router_only(other.as_ref())),
        };
        Ok(Plan {
            addr,
            router,
            listener,
            mesh,
            master,
            trust,
            metrics,
        })
    }

    async fn run(self) -> ExitCode {
        let Plan {
            addr,
            router: router_config,
            mut listener,
            mesh,
            master,
            trust,
            metrics,
        } = self;
        let socket = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("switchyard: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        let local = socket.local_addr().expect("bound socket has an address");
        let router = trust.router(router_config);
        let realms: Vec<String> = router.realms().map(|r| r.name().to_owned()).collect();
        tracing::info!(%local, ?realms, tls = listener.tls.is_some(), "router started");
        println!("switchyard listening on {local}");
        let node_name = mesh.as_ref().map(|m| m.node_name.clone());
        let mesh = mesh.map(|mc| start_mesh(&router, mc, local, &mut listener));
        let master = match master {
            Some(m) => {
                let peers = peer_urls(mesh.as_ref(), &listener);
                match start_master(&router, m, node_name, peers).await {
                    Ok(master) => {
                        listener.http_mounts.extend(master.http_mounts());
                        Some(master)
                    }
                    Err(e) => {
                        eprintln!("switchyard: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            None => None,
        };
        let server = tokio::spawn(transport::serve(socket, router.clone(), listener));
        let metrics_server = match serve_metrics(&router, metrics).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        wait_for_stop(master.as_ref()).await;
        if let Some(m) = master {
            m.stop().await;
        }
        if let Some(mesh) = &mesh {
            mesh.drop_links();
        }
        close_sessions(&router).await;
        server.abort();
        if let Some(m) = metrics_server {
            m.abort();
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    }
}

/// Starts the mesh and lets the listener accept its links.
fn start_mesh(
    router: &Router,
    config: MeshConfig,
    local: SocketAddr,
    listener: &mut ListenerConfig,
) -> Mesh {
    if local.ip().is_unspecified() && config.advertise.is_none() {
        let scheme = if config.listen_tls { "wss" } else { "ws" };
        tracing::warn!(
            "listening on {local} without --advertise: peers learn this node as \
             {scheme}://{local}/mesh through gossip, which they cannot dial; set --advertise"
        );
    }
    let mesh = Mesh::new(router.clone(), config, local);
    tracing::info!(node = mesh.node_name(), url = mesh.url(), "mesh enabled");
    listener.mesh = Some(mesh.clone());
    mesh.start();
    mesh
}

/// What the master tells workers to reconnect to: the live peers' client URLs.
fn peer_urls(
    mesh: Option<&Mesh>,
    listener: &ListenerConfig,
) -> Arc<dyn Fn() -> Vec<String> + Send + Sync> {
    let ws_path = listener
        .websocket_paths
        .first()
        .cloned()
        .unwrap_or_else(|| "/ws".into());
    match mesh.cloned() {
        Some(mesh) => Arc::new(move || live_peer_ws_urls(&mesh, &ws_path)),
        None => Arc::new(Vec::new),
    }
}

/// The WebSocket URLs clients use on the mesh's live peers (their mesh URL with the
/// client path), for redirecting workers.
fn live_peer_ws_urls(mesh: &Mesh, ws_path: &str) -> Vec<String> {
    mesh.status()
        .peers
        .into_iter()
        .filter(|p| p.state == "connected")
        .filter_map(|p| p.url)
        .map(|u| {
            let base = u
                .strip_suffix(mesh.path())
                .unwrap_or(&u)
                .trim_end_matches('/');
            format!("{base}{ws_path}")
        })
        .collect()
}

/// Returns when the node should stop. With a master: SIGTERM/SIGINT starts a graceful stop
/// (running builds finish until the deadline) and a second signal cuts it short; a stop
/// asked over the API ends it too.
async fn wait_for_stop(master: Option<&RunningMaster>) {
    let Some(m) = master else {
        return wait_for_signal().await;
    };
    let mut exit = m.master().exit_requested();
    let mut exit2 = m.master().exit_requested();
    tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("signal: stopping the build master gracefully (send it again to stop at once)");
            m.master().stop_gracefully();
            tokio::select! {
                _ = exit2.wait_for(|e| *e) => {}
                _ = wait_for_signal() => {
                    tracing::info!("second signal: stopping now; running builds end as RETRY");
                }
            }
        }
        _ = exit.wait_for(|e| *e) => {
            tracing::info!("the build master stopped (asked over the API)");
        }
    }
}

async fn close_sessions(router: &Router) {
    tracing::info!("shutting down: closing every session with wamp.close.system_shutdown");
    if !router.shutdown().wait(CLOSE_TIMEOUT).await {
        tracing::warn!("some connections did not close within 5 s");
    }
}

/// A Crossbar node directory, run as Crossbar would: one listener per transport, each with
/// its own auth.
fn start_crossbar_node(
    cbdir: &std::path::Path,
    log_level: Option<String>,
    metrics: Option<SocketAddr>,
) -> ExitCode {
    let node = match crossbar::Node::load(cbdir) {
        Ok(n) => n,
        Err(e) => {
            if let crossbar::NodeError::Invalid { report, .. } = &e {
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
            }
            return bad_config(e);
        }
    };
    init_logging(log_level.as_deref());
    for w in &node.warnings {
        tracing::warn!("{}: {w}", node.path.display());
    }
    let listeners: Vec<(String, SocketAddr, ListenerConfig)> = node
        .listeners
        .into_iter()
        .map(|l| (l.name, l.addr, l.config))
        .collect();
    // Every listener carries its own auth; the router-wide authenticator is never reached,
    // and is anonymous-only (Crossbar's behavior without an auth block) all the same.
    let router = Router::with_auth(
        node.router,
        Arc::new(TransportAuth::default()),
        node.authorizer,
    );
    runtime().block_on(serve_listeners(router, listeners, metrics))
}

/// Binds every listener, prints one `switchyard listening on ADDR` line each (in order), then
/// `switchyard metrics on ADDR` if asked, and serves until SIGTERM/SIGINT.
async fn serve_listeners(
    router: Router,
    listeners: Vec<(String, SocketAddr, ListenerConfig)>,
    metrics: Option<SocketAddr>,
) -> ExitCode {
    router.start_meta_api();
    let mut bound = Vec::new();
    for (name, addr, config) in listeners {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => bound.push((name, l, config)),
            Err(e) => {
                eprintln!("switchyard: cannot listen on {addr} ({name}): {e}");
                return ExitCode::from(1);
            }
        }
    }
    let realms: Vec<String> = router.realms().map(|r| r.name().to_owned()).collect();
    let mut servers = Vec::new();
    for (name, listener, config) in bound {
        let local = listener.local_addr().expect("bound socket has an address");
        tracing::info!(%local, transport = %name, tls = config.tls.is_some(), ?realms, "listening");
        println!("switchyard listening on {local}");
        servers.push(tokio::spawn(transport::serve(
            listener,
            router.clone(),
            config,
        )));
    }
    match serve_metrics(&router, metrics).await {
        Ok(Some(m)) => servers.push(m),
        Ok(None) => {}
        Err(code) => return code,
    }
    wait_for_signal().await;
    close_sessions(&router).await;
    for s in servers {
        s.abort();
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Serves `/metrics` on `addr` if asked, printing `switchyard metrics on ADDR`.
async fn serve_metrics(
    router: &Router,
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ExitCode> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let local = l.local_addr().expect("bound socket has an address");
            tracing::info!(%local, "serving Prometheus metrics at /metrics");
            println!("switchyard metrics on {local}");
            Ok(Some(tokio::spawn(
                switchyard_router::metrics::endpoint::serve(l, router.clone()),
            )))
        }
        Err(e) => {
            eprintln!("switchyard: cannot serve metrics on {addr}: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
