//! The `switchyard` binary: command line, configuration and wiring.

// clap turns the argument docs below into `--help` text, where `<name>` is a placeholder,
// not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

/// mimalloc instead of glibc's malloc: routing allocates many small, short-lived buffers
/// across threads, where glibc spent ~15% of the CPU in a fan-out profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cli_http;
mod config;
mod crossbar;
mod master;
mod node;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::FileConfig;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A Crossbar-compatible WAMP v2 router, peer mesh and build master in one binary"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, env = "SWITCHYARD_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router and the build master (embedded defaults: 127.0.0.1:8080, realms realm1
    /// and buildbot, anonymous clients, a master with SQLite in ./switchyard-data).
    Start(StartArgs),
    /// Check a Crossbar node directory's configuration and report every issue.
    Check(CheckArgs),
    /// Measure a WAMP router (switchyard, Crossbar or any other): pub/sub, RPC, idle sessions.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Inspect the peer mesh of a running node.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Run a build worker: join a router and run commands for the build masters.
    Worker(WorkerArgs),
    /// Stop a running master gracefully (or at once), or cancel a pending graceful stop,
    /// through its REST API.
    Shutdown(ShutdownArgs),
}

#[derive(Args)]
struct WorkerArgs {
    /// A router URL, ws://host:port/path, wss://host:port/path or tcp://host:port
    /// (repeatable; tried in turn).
    #[arg(long = "connect", required = true, value_name = "URL")]
    connect: Vec<String>,
    /// The worker's name: its WAMP-CRA authid and the <name> of its procedures.
    #[arg(long)]
    name: String,
    /// The worker's WAMP-CRA secret (visible to other local users in the process list:
    /// prefer --password-file or SWITCHYARD_WORKER_PASSWORD).
    #[arg(long, conflicts_with = "password_file")]
    password: Option<String>,
    /// Read the secret from this file (its first line). Without --password or
    /// --password-file: $SWITCHYARD_WORKER_PASSWORD, then <data-dir>/workers/<name>.password.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// The realm to join.
    #[arg(long, default_value = "buildbot")]
    realm: String,
    /// Commands run in workdirs under this directory (created if missing).
    #[arg(long, default_value = "switchyard-worker")]
    basedir: PathBuf,
    /// The master's data directory, where it writes its embedded worker's password.
    #[arg(long, default_value = "switchyard-data")]
    data_dir: PathBuf,
    /// More concurrent commands are refused (switchyard.error.busy).
    #[arg(long, default_value_t = 32)]
    max_commands: usize,
    /// CA certificates (PEM) that wss:// routers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Show this node's peers and their state (asks the running node over HTTP).
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The node's address, host:port (default: `listen` from --config, else 127.0.0.1:8080).
    #[arg(long)]
    addr: Option<String>,
    /// Read the address from this config file; a node with [transport.tls] is asked over
    /// TLS, its certificate verified with the file's mesh.tls_ca (unless --tls-ca is given).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The node serves TLS: ask it over TLS, verifying its certificate (for the host of the
    /// address) with these CA certificates (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

#[derive(Args)]
struct ShutdownArgs {
    /// The node's address, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Stop at once: running builds end as RETRY (default: graceful).
    #[arg(long, conflicts_with = "cancel")]
    now: bool,
    /// Cancel a pending graceful stop.
    #[arg(long)]
    cancel: bool,
    /// Which master: its id, or `self` for the node's own.
    #[arg(long, default_value = "self")]
    master: String,
    /// An API token (default: SWITCHYARD_API_TOKEN, else ./switchyard-data/api.token).
    #[arg(long, env = "SWITCHYARD_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the API token from this file.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The node serves TLS: connect over TLS, verifying its certificate (for the host of
    /// --addr) with these CA certificates (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// Crossbar node directory holding config.json or config.yaml.
    #[arg(long, default_value = ".crossbar")]
    cbdir: PathBuf,
}

#[derive(Args)]
struct StartArgs {
    /// A switchyard TOML config file.
    #[arg(long, short, conflicts_with = "cbdir")]
    config: Option<PathBuf>,
    /// A Crossbar node directory: run its config.json (or config.yaml) as Crossbar would
    /// (`--cbdir` alone means `.crossbar`, Crossbar's default).
    #[arg(long, num_args = 0..=1, default_missing_value = ".crossbar", conflicts_with_all = ["listen", "realms", "tls_cert", "tls_key"])]
    cbdir: Option<PathBuf>,
    /// Listen address, host:port (port 0 picks a free port); overrides the config file.
    #[arg(long)]
    listen: Option<String>,
    /// Serve these realms instead of the configured ones (repeatable).
    #[arg(long = "realm")]
    realms: Vec<String>,
    /// Serve TLS (wss://, TLS RawSocket) with this certificate chain, PEM (with --tls-key;
    /// overrides [transport.tls]).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (host:port; off by default).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// This node's name in the mesh; enables the mesh (with --mesh-secret).
    #[arg(long)]
    node_name: Option<String>,
    /// A peer to link with, ws://host:port or wss://host:port (repeatable; added to the
    /// config's peers).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// CA certificates (PEM) that wss:// peers' certificates must chain to (overrides
    /// mesh.tls_ca).
    #[arg(long, value_name = "FILE")]
    mesh_tls_ca: Option<PathBuf>,
    /// The secret shared by every node of the mesh.
    #[arg(long, env = "SWITCHYARD_MESH_SECRET", hide_env_values = true)]
    mesh_secret: Option<String>,
    /// The URL other nodes dial to reach this one (default: ws://<listen address>/mesh, or
    /// wss:// when serving TLS).
    #[arg(long)]
    advertise: Option<String>,
    /// Run the router only, without the build master.
    #[arg(long, env = "SWITCHYARD_NO_MASTER", value_parser = clap::builder::BoolishValueParser::new())]
    no_master: bool,
    /// The master's database: postgres://... for masters on several hosts (default: SQLite
    /// in the data folder).
    #[arg(long, env = "SWITCHYARD_DB")]
    db: Option<String>,
    /// The master's data folder (SQLite database, generated worker passwords).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This master's name (default: the mesh node name, else the host name).
    #[arg(long)]
    master_name: Option<String>,
    /// Serve stock buildbot-workers (Buildbot's msgpack worker protocol) on this host:port,
    /// e.g. 127.0.0.1:9989 (overrides [master.buildbot_workers] listen; `builders` nodes).
    #[arg(long, value_name = "ADDR")]
    buildbot_workers: Option<String>,
    /// Serve Buildbot's own web UI at /buildbot/ from this folder: the `static` folder of an
    /// installed buildbot-www package (as `[master.ui] buildbot_www`).
    #[arg(long)]
    buildbot_www: Option<PathBuf>,
}

fn init_logging(level: Option<&str>) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    // Colours only on a terminal: logs written to files and journals stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => node::start(args, cli.log_level),
        Command::Check(args) => check(&args.cbdir),
        Command::Bench(cmd) => {
            init_logging(Some(cli.log_level.as_deref().unwrap_or("warn")));
            ExitCode::from(bench::run(cmd))
        }
        Command::Mesh(MeshCommand::Status(args)) => mesh_status(args),
        Command::Worker(args) => worker(args, cli.log_level),
        Command::Shutdown(args) => shutdown(args),
    }
}

/// The worker's secret: --password, --password-file, $SWITCHYARD_WORKER_PASSWORD, then the
/// file the master writes for its embedded worker. `Err` is the message for the user.
fn worker_password(args: &WorkerArgs) -> Result<String, String> {
    let read = |path: &std::path::Path| -> Result<String, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(format!("the password file {} is empty", path.display()));
        }
        Ok(line.to_owned())
    };
    if let Some(p) = &args.password {
        if p.is_empty() {
            return Err("--password is empty".into());
        }
        return Ok(p.clone());
    }
    if let Some(f) = &args.password_file {
        return read(f);
    }
    if let Ok(p) = std::env::var("SWITCHYARD_WORKER_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    // Only a plain name can be a file name (the worker refuses others anyway).
    if switchyard_worker::valid_name(&args.name) {
        let f = args
            .data_dir
            .join("workers")
            .join(format!("{}.password", args.name));
        if f.exists() {
            return read(&f);
        }
    }
    Err(format!(
        "no password for worker {:?}: give --password, --password-file or \
         SWITCHYARD_WORKER_PASSWORD, or run where {}/workers/{}.password exists (--data-dir)",
        args.name,
        args.data_dir.display(),
        args.name
    ))
}

/// `switchyard worker`: runs until SIGTERM/SIGINT or a `shutdown` call; exit 0 then.
fn worker(args: WorkerArgs, log_level: Option<String>) -> ExitCode {
    use switchyard_worker::{run_worker, CancellationToken, WorkerOptions};
    let password = match worker_password(&args) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("switchyard: {msg}");
            return ExitCode::from(2);
        }
    };
    let tls = match args
        .tls_ca
        .as_deref()
        .map(switchyard_router::tls::client_config)
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("switchyard: --tls-ca: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(log_level.as_deref());
    let mut opts = WorkerOptions::new(args.name.clone(), args.connect, password);
    opts.tls = tls;
    opts.realm = args.realm;
    opts.basedir = args.basedir;
    opts.max_commands = args.max_commands;
    let name = args.name;
    opts.on_connect = Some(std::sync::Arc::new(move |url: &str| {
        // Tests and scripts read this line.
        println!("switchyard worker {name} connected to {url}");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                node::wait_for_signal().await;
                tracing::info!("signal received: leaving and killing running commands");
                shutdown.cancel();
            })
        };
        let result = run_worker(opts, shutdown).await;
        signals.abort();
        match result {
            Ok(()) => {
                tracing::info!("worker stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard: {e}");
                ExitCode::from(2)
            }
        }
    })
}

fn check(cbdir: &std::path::Path) -> ExitCode {
    match crossbar::Node::load(cbdir) {
        Ok(node) => {
            for w in &node.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: ok ({} realm(s), {} transport(s), {} warning(s))",
                node.path.display(),
                node.router.realms.len(),
                node.listeners.len(),
                node.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let crossbar::NodeError::Invalid { report, .. } = &e {
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
            }
            eprintln!("switchyard: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a Crossbar node directory: one listener per transport, each with its own auth.
/// `switchyard shutdown`: POST the JSON-RPC `stop` (or `cancel_stop`) to
/// `/api/v2/masters/<id>` and print the answer.
fn shutdown(args: ShutdownArgs) -> ExitCode {
    let tls = match args
        .tls_ca
        .as_deref()
        .map(switchyard_router::tls::client_config)
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("switchyard: --tls-ca: {e}");
            return ExitCode::from(2);
        }
    };
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                eprintln!("switchyard: cannot read {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => std::fs::read_to_string("switchyard-data/api.token")
            .ok()
            .map(|t| t.trim().to_owned()),
    };
    let Some(token) = token else {
        eprintln!(
            "switchyard: no API token: pass --token or --token-file, set SWITCHYARD_API_TOKEN, \
             or run from the folder holding switchyard-data/api.token"
        );
        return ExitCode::from(2);
    };
    let (method, params) = if args.cancel {
        ("cancel_stop", serde_json::json!({}))
    } else {
        ("stop", serde_json::json!({"graceful": !args.now}))
    };
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let addr = args.addr.clone();
    let request = format!(
        "POST /api/v2/masters/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        args.master,
        body.len()
    );
    match cli_http::exchange(&addr, tls, &request, Duration::from_secs(30)) {
        Ok(resp) => {
            let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
            let ok = head.starts_with("HTTP/1.1 200")
                && serde_json::from_str::<serde_json::Value>(body)
                    .map(|v| v.get("error").is_none())
                    .unwrap_or(false);
            if ok {
                println!("{body}");
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "switchyard: {addr} refused: {} {body}",
                    head.lines().next().unwrap_or("")
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("switchyard: cannot reach {addr}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `switchyard mesh status`: GET /mesh/status from the running node and print it (over TLS
/// when given a CA, or when --config names a node serving TLS).
fn mesh_status(args: StatusArgs) -> ExitCode {
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let addr = match (&args.addr, &file) {
        (Some(a), _) => a.clone(),
        (None, Some(c)) => c.listen.clone(),
        (None, None) => "127.0.0.1:8080".into(),
    };
    let tls = match (&args.tls_ca, &file) {
        (Some(ca), _) => match switchyard_router::tls::client_config(ca) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("switchyard: --tls-ca: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(c)) if c.transport.tls.is_some() => match c.mesh_tls_ca() {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                eprintln!(
                    "switchyard: the node serves TLS ([transport.tls]) and the config has no \
                     mesh.tls_ca to verify it with: give --tls-ca FILE"
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let request = format!("GET /mesh/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    match cli_http::exchange(&addr, tls, &request, Duration::from_secs(5)) {
        Ok(resp) => {
            let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
            if head.starts_with("HTTP/1.1 200") {
                print!("{body}");
                ExitCode::SUCCESS
            } else if head.is_empty() {
                eprintln!(
                    "switchyard: {addr} closed the connection without an answer \
                     (does it serve TLS? give --tls-ca)"
                );
                ExitCode::from(1)
            } else {
                eprintln!("switchyard: {addr} has no mesh (is it started with --node-name?)");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("switchyard: cannot reach {scheme}://{addr}: {e}");
            ExitCode::from(1)
        }
    }
}
