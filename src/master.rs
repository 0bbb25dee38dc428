//! Wiring the build master into `switchyard start`: validating its config, loading worker
//! passwords, opening the store, naming the master, and mounting its HTTP services (the
//! REST API and the web UI on `ui` nodes, the change hook on `scheduler` nodes).

use std::sync::Arc;

use switchyard_master::api::{self, ApiState};
use switchyard_master::auth::{BusTrust, MasterAuthenticator, WorkerGuard};
use switchyard_master::bbworker::{self, BuildbotWorkers};
use switchyard_master::config::{MasterConfig, Role};
use switchyard_master::control::Control;
use switchyard_master::engine::secrets::{load_api_token, worker_passwords};
use switchyard_master::engine::{Master, MasterOptions};
use switchyard_master::ui;
use switchyard_master::Store;
use switchyard_router::auth::AllowAll;
use switchyard_router::config::RouterConfig;
use switchyard_router::transport::HttpMount;
use switchyard_router::Router;
use tokio_util::sync::CancellationToken;

use crate::config::FileConfig;

/// A validated master config with its workers' passwords.
pub struct PreparedMaster {
    pub config: Arc<MasterConfig>,
    pub passwords: Vec<(String, String)>,
    /// The node's TLS, for the stock-worker port (when both are configured).
    pub buildbot_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Checks the master section against the rest of the file and loads the worker passwords
/// (generating the embedded default worker's on first start).
pub fn prepare_master(
    mut config: MasterConfig,
    file: &FileConfig,
    embedded: bool,
) -> Result<PreparedMaster, String> {
    config.validate().map_err(|e| e.to_string())?;
    if !file.realms.iter().any(|r| r.name == config.realm) {
        return Err(format!(
            "master config: realm {:?} is not one of the router's realms {:?}",
            config.realm,
            file.realms
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
        ));
    }
    let passwords = worker_passwords(&config, embedded).map_err(|e| e.to_string())?;
    load_api_token(&mut config, embedded).map_err(|e| e.to_string())?;
    let buildbot_tls = match (&config.buildbot_workers, &file.transport.tls) {
        (Some(_), Some(tls)) => Some(
            switchyard_router::tls::server_config(&tls.cert, &tls.key)
                .map_err(|e| format!("[transport.tls] for the buildbot worker port: {e}"))?,
        ),
        _ => None,
    };
    Ok(PreparedMaster {
        config: Arc::new(config),
        passwords,
        buildbot_tls,
    })
}

/// What every node enforces on the master's realm, whether or not it runs the engine
/// (docs/security.md): workers authenticate by WAMP-CRA with the passwords of
/// `[master] workers`, everyone else is anonymous, and [`WorkerGuard`] keeps the worker
/// namespace and session kills for masters.
pub struct NodeTrust {
    realm: String,
    passwords: Vec<(String, String)>,
    trusted_roles: Vec<String>,
}

impl NodeTrust {
    pub fn for_master(p: &PreparedMaster) -> NodeTrust {
        NodeTrust {
            realm: p.config.realm.clone(),
            passwords: p.passwords.clone(),
            trusted_roles: p.config.trusted_roles.clone(),
        }
    }

    /// A node that runs no engine (`--no-master`, `enabled = false`, or no `[master]`
    /// section: then the default realm `buildbot` is guarded). It guards the master's realm
    /// like any node but accepts no worker: masters learn of workers from their own node's
    /// registrations, so a worker is refused here with a message saying where to connect.
    pub fn router_only(section: Option<&MasterConfig>) -> NodeTrust {
        let default = MasterConfig::embedded_default();
        let m = section.unwrap_or(&default);
        NodeTrust {
            realm: m.realm.clone(),
            passwords: Vec::new(),
            trusted_roles: m.trusted_roles.clone(),
        }
    }

    pub fn router(&self, config: RouterConfig) -> Router {
        let workers = self.passwords.iter().map(|(n, p)| (n.as_str(), p.as_str()));
        let guard = WorkerGuard::new(
            Arc::new(AllowAll),
            &self.realm,
            BusTrust::new(&self.trusted_roles),
        );
        Router::with_auth(
            config,
            Arc::new(MasterAuthenticator::new(&self.realm, workers)),
            Arc::new(guard),
        )
    }
}

/// A started master and the HTTP services it serves on the router's port.
pub struct RunningMaster {
    master: Master,
    mounts: Vec<HttpMount>,
    /// Stops the stock-worker port and its connections.
    buildbot_workers: CancellationToken,
}

impl RunningMaster {
    pub fn http_mounts(&self) -> Vec<HttpMount> {
        self.mounts.clone()
    }

    pub async fn stop(self) {
        self.buildbot_workers.cancel();
        self.master.stop().await;
    }

    pub fn master(&self) -> &Master {
        &self.master
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Opens the store and starts the master. Its name: `[master] name`, else the mesh node
/// name, else the host name: short, and no path of this machine in the UI and API. Two
/// live masters sharing a database cannot share a name (the second is refused, saying so).
pub async fn start_master(
    router: &Router,
    prepared: PreparedMaster,
    node_name: Option<String>,
    peer_urls: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
) -> Result<RunningMaster, String> {
    let config = prepared.config.clone();
    let store = match &config.db {
        Some(url) => Store::connect(url).await,
        None => Store::open_data_dir(&config.data_dir).await,
    }
    .map_err(|e| format!("master database: {e}"))?;
    let meshed = node_name.is_some();
    let name = config.name.clone().or(node_name).unwrap_or_else(hostname);
    let master = Master::start(
        router,
        config.clone(),
        store.clone(),
        MasterOptions {
            name,
            workers_anywhere: meshed,
            peer_urls,
        },
    )
    .await
    .map_err(|e| format!("build master: {e}"))?;
    println!(
        "switchyard master {} started (id {}, {})",
        master.name(),
        master.id(),
        match &config.db {
            Some(_) => "PostgreSQL".to_string(),
            None => format!("SQLite in {}", config.data_dir.display()),
        }
    );
    // The REST API and the web UI on `ui` nodes, the change hook on `scheduler` nodes.
    let control: Arc<dyn Control> = master.control();
    let state = ApiState {
        store,
        config: config.clone(),
        control,
    };
    let mut mounts: Vec<HttpMount> = api::mounts(state.clone())
        .into_iter()
        .filter(|m| match m.prefix.as_str() {
            "/change_hook" => config.has_role(Role::Scheduler),
            _ => config.has_role(Role::Ui),
        })
        .collect();
    if config.has_role(Role::Ui) {
        match ui::mounts(router, state).await {
            Ok(m) => mounts.extend(m),
            Err(e) => {
                master.stop().await;
                return Err(format!("web UI: {e}"));
            }
        }
    }
    let buildbot_workers = CancellationToken::new();
    if config.buildbot_workers.is_some() && !config.has_role(Role::Builders) {
        tracing::warn!("[master.buildbot_workers] is set, but this node has no `builders` role: the port is not served");
    }
    if let Some(bw) = config
        .buildbot_workers
        .as_ref()
        .filter(|_| config.has_role(Role::Builders))
    {
        let listener = match tokio::net::TcpListener::bind(&bw.listen).await {
            Ok(l) => l,
            Err(e) => {
                master.stop().await;
                return Err(format!(
                    "cannot listen for buildbot workers on {}: {e}",
                    bw.listen
                ));
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| bw.listen.clone());
        tracing::info!(%local, tls = prepared.buildbot_tls.is_some(), "buildbot worker port listening");
        // Tests and scripts read this line to learn the port.
        println!("switchyard buildbot workers listening on {local}");
        tokio::spawn(bbworker::serve(
            listener,
            BuildbotWorkers {
                router: router.clone(),
                realm: config.realm.clone(),
                passwords: prepared.passwords.clone(),
                tls: prepared.buildbot_tls.clone(),
            },
            buildbot_workers.clone(),
        ));
    }
    Ok(RunningMaster {
        master,
        mounts,
        buildbot_workers,
    })
}
