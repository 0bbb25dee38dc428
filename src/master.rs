//! Wiring the build master into `switchyard start`: validating its config, loading worker
//! passwords, opening the store, naming the master, and mounting its HTTP services (the
//! REST API and the web UI on `ui` nodes, the change hook on `scheduler` nodes).

use std::sync::Arc;

use switchyard_master::api::{self, ApiState};
use switchyard_master::config::{MasterConfig, Role};
use switchyard_master::control::Control;
use switchyard_master::engine::secrets::{load_api_token, worker_passwords};
use switchyard_master::engine::{Master, MasterOptions};
use switchyard_master::ui;
use switchyard_master::Store;
use switchyard_router::transport::HttpMount;
use switchyard_router::Router;

use crate::config::FileConfig;

/// A validated master config with its workers' passwords.
pub struct PreparedMaster {
    pub config: Arc<MasterConfig>,
    pub passwords: Vec<(String, String)>,
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
    Ok(PreparedMaster {
        config: Arc::new(config),
        passwords,
    })
}

/// A started master and the HTTP services it serves on the router's port.
pub struct RunningMaster {
    master: Master,
    mounts: Vec<HttpMount>,
}

impl RunningMaster {
    pub fn http_mounts(&self) -> Vec<HttpMount> {
        self.mounts.clone()
    }

    pub async fn stop(self) {
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
/// name, else `<hostname>:<absolute data folder>` (Buildbot's `hostname:basedir`).
pub async fn start_master(
    router: &Router,
    prepared: PreparedMaster,
    node_name: Option<String>,
    peer_urls: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
) -> Result<RunningMaster, String> {
    let config = prepared.config;
    let store = match &config.db {
        Some(url) => Store::connect(url).await,
        None => Store::open_data_dir(&config.data_dir).await,
    }
    .map_err(|e| format!("master database: {e}"))?;
    let meshed = node_name.is_some();
    let name = config.name.clone().or(node_name).unwrap_or_else(|| {
        let dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        format!("{}:{}", hostname(), dir.display())
    });
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
    Ok(RunningMaster { master, mounts })
}
