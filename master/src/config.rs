//! The master's configuration: workers, builders and their steps, schedulers, and the REST
//! API's access rules — the `[master]` section of `switchyard.toml`.
//!
//! Every table rejects unknown keys. [`MasterConfig::validate`] checks what serde cannot
//! (duplicate names, a scheduler naming an unknown builder, a worker with no password, a
//! step that is not exactly one of shell / command / git) and names the offending entry,
//! so a bad config stops start-up with a message instead of misbehaving later.
//!
//! With no `[master]` section at all the embedded default applies
//! ([`MasterConfig::embedded_default`]): one local worker whose password is generated into
//! the data folder, one `hello` builder running a shell step, one force scheduler.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Why a master configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("master config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// `[master]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Run the build master in this process (default true; false: a pure router).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// This master's name in the `masters` table; default the mesh node name, else the host
    /// name (two live masters may not share a name).
    pub name: Option<String>,
    /// The data folder: the embedded SQLite database and generated worker passwords.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `postgres://...` for masters on several hosts; default SQLite in `data_dir`.
    pub db: Option<String>,
    /// The realm workers join and build events are published on.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// How often this master records that it is alive.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_interval_s: f64,
    /// A master silent this long is expired by the others: its claims are released and its
    /// running builds end as RETRY (Buildbot waits 10 minutes).
    #[serde(default = "default_expiry_s")]
    pub expiry_timeout_s: f64,
    /// How often the queue is polled when no event arrives (events normally wake it).
    #[serde(default = "default_poll_s")]
    pub poll_interval_s: f64,
    /// What this node does: `ui` (REST API and web UI), `scheduler` (periodic schedulers and
    /// the change hook), `builders` (claims and runs build requests). Default: all three
    /// (symmetric multimaster); an empty list makes a master that only keeps the bus.
    #[serde(default = "all_roles")]
    pub roles: Vec<Role>,
    /// With the `builders` role: run only these builders (default: all configured).
    pub run_builders: Option<Vec<String>>,
    /// A graceful stop waits this long for running builds, then ends them as RETRY.
    #[serde(default = "default_shutdown_deadline_s")]
    pub shutdown_deadline_s: f64,
    #[serde(default)]
    pub api: ApiConfig,
    /// WAMP roles trusted like a switchyard master on the bus: this master acts on their
    /// control messages (`org.buildbot.mq.control.*`), the web UI shows their events, and
    /// they may kill sessions on the master's realm through the meta API. Default: none
    /// (only switchyard masters, on any node of the mesh). See docs/security.md.
    #[serde(default)]
    pub trusted_roles: Vec<String>,
    #[serde(default)]
    pub ui: UiConfig,
    #[serde(default)]
    pub workers: Vec<WorkerConfig>,
    #[serde(default)]
    pub builders: Vec<BuilderConfig>,
    #[serde(default)]
    pub schedulers: Vec<SchedulerConfig>,
    /// `[master.buildbot_workers]`: a port for stock `buildbot-worker`s (off by default).
    pub buildbot_workers: Option<BuildbotWorkersConfig>,
}

/// `[master.buildbot_workers]`: where stock Buildbot workers connect (Buildbot's msgpack
/// worker protocol, see `bbworker`). Served on nodes with the `builders` role only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildbotWorkersConfig {
    /// host:port, e.g. `127.0.0.1:9989` (Buildbot's conventional worker port).
    pub listen: String,
}

/// `[master.ui]`: the web UIs of `ui` nodes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// The `static` folder of an installed `buildbot-www` package: Buildbot's own UI is then
    /// served at `/buildbot/` (and `/` redirects there).
    pub buildbot_www: Option<PathBuf>,
    /// The title Buildbot's UI shows (default `switchyard`).
    pub title: Option<String>,
    /// The UI's public URL (`https://ci.example.org/buildbot/`), which Buildbot's UI compares
    /// with the address bar; default `http://<the request's Host>/buildbot/`.
    pub buildbot_url: Option<String>,
}

/// `[master.api]`: who may read and who may control.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Read endpoints (GET) need no authentication.
    #[serde(default = "yes")]
    pub public_read: bool,
    /// Bearer tokens accepted for every endpoint (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file holding one more token (first line); relative to the data folder. The
    /// embedded default generates `<data_dir>/api.token` on first start.
    pub token_file: Option<PathBuf>,
    /// Users accepted with HTTP Basic authentication.
    #[serde(default)]
    pub users: Vec<ApiUser>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_read: true,
            tokens: Vec::new(),
            token_file: None,
            users: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiUser {
    pub name: String,
    pub password: String,
}

/// `[[master.workers]]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub name: String,
    /// The worker's WAMP-CRA secret. Never logged, never returned by the API.
    pub password: Option<String>,
    /// Read the password from this file instead (first line, trimmed).
    pub password_file: Option<PathBuf>,
    /// Builds this worker runs at once, across every master.
    #[serde(default = "one")]
    pub max_builds: u32,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("max_builds", &self.max_builds)
            .finish()
    }
}

/// `[[master.builders]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderConfig {
    pub name: String,
    pub description: Option<String>,
    /// Workers this builder may run on.
    pub workers: Vec<String>,
    pub steps: Vec<StepConfig>,
}

/// One step: exactly one of `shell`, `command` or `git`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub name: String,
    /// A shell command line, run with `/bin/sh -c`.
    pub shell: Option<String>,
    /// An argv, run without a shell.
    pub command: Option<Vec<String>>,
    /// A checkout with the worker's system git.
    pub git: Option<GitStep>,
    /// Directory relative to the worker's build folder for this builder (default `build`).
    pub workdir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit; the command is killed and the step fails when it is exceeded.
    pub timeout_s: Option<f64>,
    /// Stop the build when this step fails (default true).
    #[serde(default = "yes")]
    pub halt_on_failure: bool,
    /// A failure of this step makes the build WARNINGS rather than FAILURE.
    #[serde(default)]
    pub warn_on_failure: bool,
}

/// `git = { repo = "...", branch = "main" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitStep {
    pub repo: String,
    /// Default branch; a change's or a forced build's `branch` property overrides it.
    pub branch: Option<String>,
}

/// What a step asks the worker to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCommand {
    Shell(String),
    Argv(Vec<String>),
    Git {
        repo: String,
        branch: Option<String>,
    },
}

impl StepConfig {
    pub fn command(&self) -> StepCommand {
        match (&self.shell, &self.command, &self.git) {
            (Some(s), _, _) => StepCommand::Shell(s.clone()),
            (_, Some(c), _) => StepCommand::Argv(c.clone()),
            (_, _, Some(g)) => StepCommand::Git {
                repo: g.repo.clone(),
                branch: g.branch.clone(),
            },
            _ => unreachable!("validated: exactly one of shell/command/git"),
        }
    }

    pub fn workdir(&self) -> &str {
        self.workdir.as_deref().unwrap_or("build")
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s.map(Duration::from_secs_f64)
    }
}

/// `[[master.schedulers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SchedulerKind,
    pub builders: Vec<String>,
    /// periodic: seconds between buildsets.
    pub interval_s: Option<f64>,
    /// change: only changes on this branch (default: any branch).
    pub branch: Option<String>,
    /// change: only changes of this project (default: any).
    pub project: Option<String>,
    /// force: the reason when the request gives none.
    pub reason: Option<String>,
    /// Properties every buildset of this scheduler gets.
    #[serde(default)]
    pub properties: BTreeMap<String, toml_value::Value>,
}

/// TOML values for properties, kept as JSON so they go to the API unchanged.
pub mod toml_value {
    /// A property value: any JSON value (TOML tables and arrays map onto it).
    pub type Value = serde_json::Value;
}

/// A node role (see [`MasterConfig::roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ui,
    Scheduler,
    Builders,
}

fn all_roles() -> Vec<Role> {
    vec![Role::Ui, Role::Scheduler, Role::Builders]
}

fn default_shutdown_deadline_s() -> f64 {
    600.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    Force,
    Periodic,
    Change,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("switchyard-data")
}
fn default_realm() -> String {
    "buildbot".into()
}
fn default_heartbeat_s() -> f64 {
    5.0
}
fn default_expiry_s() -> f64 {
    30.0
}
fn default_poll_s() -> f64 {
    2.0
}

/// The embedded default worker's name.
pub const DEFAULT_WORKER: &str = "local";

impl MasterConfig {
    /// What `switchyard start` runs with no config file: a `local` worker (password generated
    /// into `<data_dir>/workers/local.password` at start-up), a `hello` builder with one
    /// shell step, and a `force` scheduler for it.
    pub fn embedded_default() -> MasterConfig {
        MasterConfig {
            enabled: true,
            name: None,
            data_dir: default_data_dir(),
            db: None,
            realm: default_realm(),
            heartbeat_interval_s: default_heartbeat_s(),
            expiry_timeout_s: default_expiry_s(),
            poll_interval_s: default_poll_s(),
            roles: all_roles(),
            run_builders: None,
            shutdown_deadline_s: default_shutdown_deadline_s(),
            api: ApiConfig {
                token_file: Some(PathBuf::from("api.token")),
                ..ApiConfig::default()
            },
            trusted_roles: Vec::new(),
            ui: UiConfig::default(),
            workers: vec![WorkerConfig {
                name: DEFAULT_WORKER.into(),
                password: None,
                password_file: Some(PathBuf::from(format!("workers/{DEFAULT_WORKER}.password"))),
                max_builds: 1,
            }],
            builders: vec![BuilderConfig {
                name: "hello".into(),
                description: Some("says hello from the worker's host".into()),
                workers: vec![DEFAULT_WORKER.into()],
                steps: vec![StepConfig {
                    name: "hello".into(),
                    shell: Some("echo \"hello from switchyard on $(uname -n)\"; uname -a".into()),
                    command: None,
                    git: None,
                    workdir: None,
                    env: BTreeMap::new(),
                    timeout_s: Some(60.0),
                    halt_on_failure: true,
                    warn_on_failure: false,
                }],
            }],
            schedulers: vec![SchedulerConfig {
                name: "force".into(),
                kind: SchedulerKind::Force,
                builders: vec!["hello".into()],
                interval_s: None,
                branch: None,
                project: None,
                reason: None,
                properties: BTreeMap::new(),
            }],
            buildbot_workers: None,
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval_s)
    }

    pub fn expiry_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.expiry_timeout_s)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_s)
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether this node runs `builder` (the `builders` role, and in `run_builders` if set).
    pub fn runs_builder(&self, builder: &str) -> bool {
        self.has_role(Role::Builders)
            && self
                .run_builders
                .as_ref()
                .is_none_or(|only| only.iter().any(|b| b == builder))
    }

    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_deadline_s)
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerConfig> {
        self.workers.iter().find(|w| w.name == name)
    }

    pub fn builder(&self, name: &str) -> Option<&BuilderConfig> {
        self.builders.iter().find(|b| b.name == name)
    }

    pub fn scheduler(&self, name: &str) -> Option<&SchedulerConfig> {
        self.schedulers.iter().find(|s| s.name == name)
    }

    /// Checks everything serde cannot; the message names the offending entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{what} must be a positive number of seconds"
                )))
            }
        };
        positive(self.heartbeat_interval_s, "heartbeat_interval_s")?;
        positive(self.expiry_timeout_s, "expiry_timeout_s")?;
        positive(self.poll_interval_s, "poll_interval_s")?;
        positive(self.shutdown_deadline_s, "shutdown_deadline_s")?;
        for b in self.run_builders.iter().flatten() {
            if self.builder(b).is_none() {
                return Err(invalid(format!("run_builders names unknown builder {b:?}")));
            }
        }
        if self.expiry_timeout_s < 2.0 * self.heartbeat_interval_s {
            return Err(invalid(format!(
                "expiry_timeout_s ({}) must be at least twice heartbeat_interval_s ({}), or a \
                 live master could be expired between two heartbeats",
                self.expiry_timeout_s, self.heartbeat_interval_s
            )));
        }
        if let Some(db) = &self.db {
            if !(db.starts_with("postgres://")
                || db.starts_with("postgresql://")
                || db.starts_with("sqlite:"))
            {
                return Err(invalid(format!(
                    "db {db:?}: expected postgres://... (or sqlite:...)"
                )));
            }
        }
        let name_ok = |kind: &str, name: &str| {
            // Names go into WAMP URIs (workers) and routing keys: no dots, spaces or '#'.
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                Err(invalid(format!(
                    "{kind} name {name:?}: use letters, digits, '-' and '_' only"
                )))
            } else {
                Ok(())
            }
        };
        unique("worker", self.workers.iter().map(|w| w.name.as_str()))?;
        unique("builder", self.builders.iter().map(|b| b.name.as_str()))?;
        unique("scheduler", self.schedulers.iter().map(|s| s.name.as_str()))?;
        for w in &self.workers {
            name_ok("worker", &w.name)?;
            match (&w.password, &w.password_file) {
                (None, None) => {
                    return Err(invalid(format!(
                        "worker {:?} has no password: set password or password_file",
                        w.name
                    )))
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "worker {:?}: set password or password_file, not both",
                        w.name
                    )))
                }
                (Some(p), None) if p.is_empty() => {
                    return Err(invalid(format!("worker {:?}: empty password", w.name)))
                }
                _ => {}
            }
            if w.max_builds == 0 {
                return Err(invalid(format!(
                    "worker {:?}: max_builds must be >= 1",
                    w.name
                )));
            }
        }
        for b in &self.builders {
            name_ok("builder", &b.name)?;
            if b.workers.is_empty() {
                return Err(invalid(format!("builder {:?} lists no workers", b.name)));
            }
            for w in &b.workers {
                if self.worker(w).is_none() {
                    return Err(invalid(format!(
                        "builder {:?} names unknown worker {w:?}",
                        b.name
                    )));
                }
            }
            if b.steps.is_empty() {
                return Err(invalid(format!("builder {:?} has no steps", b.name)));
            }
            unique(
                &format!("step of builder {:?}", b.name),
                b.steps.iter().map(|s| s.name.as_str()),
            )?;
            for s in &b.steps {
                let kinds = [s.shell.is_some(), s.command.is_some(), s.git.is_some()]
                    .iter()
                    .filter(|k| **k)
                    .count();
                if kinds != 1 {
                    return Err(invalid(format!(
                        "step {:?} of builder {:?}: set exactly one of shell, command, git",
                        s.name, b.name
                    )));
                }
                if s.command.as_ref().is_some_and(|c| c.is_empty()) {
                    return Err(invalid(format!(
                        "step {:?} of builder {:?}: command is empty",
                        s.name, b.name
                    )));
                }
                let wd = s.workdir();
                if wd.starts_with('/') || wd.split('/').any(|c| c == "..") {
                    return Err(invalid(format!(
                        "step {:?} of builder {:?}: workdir {wd:?} must be relative, without '..'",
                        s.name, b.name
                    )));
                }
                if let Some(t) = s.timeout_s {
                    positive(t, &format!("timeout_s of step {:?}", s.name))?;
                }
            }
        }
        for s in &self.schedulers {
            name_ok("scheduler", &s.name)?;
            if s.builders.is_empty() {
                return Err(invalid(format!("scheduler {:?} names no builders", s.name)));
            }
            for b in &s.builders {
                if self.builder(b).is_none() {
                    return Err(invalid(format!(
                        "scheduler {:?} names unknown builder {b:?}",
                        s.name
                    )));
                }
            }
            match s.kind {
                SchedulerKind::Periodic => match s.interval_s {
                    Some(i) => positive(i, &format!("interval_s of scheduler {:?}", s.name))?,
                    None => {
                        return Err(invalid(format!(
                            "periodic scheduler {:?} needs interval_s",
                            s.name
                        )))
                    }
                },
                _ if s.interval_s.is_some() => {
                    return Err(invalid(format!(
                        "scheduler {:?}: interval_s applies to periodic schedulers only",
                        s.name
                    )))
                }
                _ => {}
            }
        }
        unique("API user", self.api.users.iter().map(|u| u.name.as_str()))?;
        if self.api.tokens.iter().any(|t| t.len() < 16) {
            return Err(invalid("api tokens must be at least 16 characters"));
        }
        Ok(())
    }
}

fn unique<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(invalid(format!("duplicate {kind} name {n:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<MasterConfig, String> {
        let c: MasterConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    const GOOD: &str = r#"
        [[workers]]
        name = "w1"
        password = "pw"
        [[builders]]
        name = "b1"
        workers = ["w1"]
        [[builders.steps]]
        name = "s"
        shell = "true"
        [[schedulers]]
        name = "f"
        type = "force"
        builders = ["b1"]
    "#;

    #[test]
    fn embedded_default_is_valid() {
        MasterConfig::embedded_default().validate().unwrap();
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.realm, "buildbot");
        assert_eq!(
            c.builders[0].steps[0].command(),
            StepCommand::Shell("true".into())
        );
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            (
                GOOD.replace("builders = [\"b1\"]", "builders = [\"nope\"]"),
                "unknown builder \"nope\"",
            ),
            (
                GOOD.replace("password = \"pw\"", ""),
                "worker \"w1\" has no password",
            ),
            (
                format!("{GOOD}\n[[workers]]\nname = \"w1\"\npassword = \"x\""),
                "duplicate worker name \"w1\"",
            ),
            (
                GOOD.replace("shell = \"true\"", "shell = \"true\"\ncommand = [\"x\"]"),
                "exactly one of shell",
            ),
            (
                GOOD.replace("type = \"force\"", "type = \"periodic\""),
                "needs interval_s",
            ),
            (
                GOOD.replace("workers = [\"w1\"]", "workers = [\"w2\"]"),
                "unknown worker \"w2\"",
            ),
            (
                format!("frobnicate = 1\n{GOOD}"),
                "unknown field `frobnicate`",
            ),
            (
                GOOD.replace("name = \"w1\"\n", "name = \"w.1\"\n"),
                "letters, digits",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn passwords_are_redacted_in_debug() {
        let c = parse(GOOD).unwrap();
        let dbg = format!("{:?}", c.workers[0]);
        assert!(!dbg.contains("pw\""), "{dbg}");
        assert!(dbg.contains("redacted"));
    }
}
