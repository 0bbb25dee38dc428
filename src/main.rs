//! The `switchyard` binary: command line, configuration and wiring.

mod bench;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard_router::{transport, Router};
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
    /// Run the router (embedded defaults: 127.0.0.1:8080, realms realm1 and buildbot, anonymous).
    Start(StartArgs),
    /// Measure a WAMP router (switchyard, Crossbar or any other): pub/sub, RPC, idle sessions.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args)]
struct StartArgs {
    /// A switchyard TOML config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, host:port (port 0 picks a free port); overrides the config file.
    #[arg(long)]
    listen: Option<String>,
    /// Serve these realms instead of the configured ones (repeatable).
    #[arg(long = "realm")]
    realms: Vec<String>,
}

fn init_logging(level: Option<&str>) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => start(args, cli.log_level),
        Command::Bench(cmd) => {
            init_logging(Some(cli.log_level.as_deref().unwrap_or("warn")));
            ExitCode::from(bench::run(cmd))
        }
    }
}

fn start(args: StartArgs, log_level: Option<String>) -> ExitCode {
    let mut file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::from(2);
            }
        },
        None => FileConfig::default(),
    };
    if let Some(l) = args.listen {
        file.listen = l;
    }
    if !args.realms.is_empty() {
        file.realms = args
            .realms
            .iter()
            .map(|name| config::RealmSection {
                name: name.clone(),
                uri_check: Default::default(),
            })
            .collect();
    }
    init_logging(log_level.as_deref().or(file.log_level.as_deref()));
    let (router_config, listener_config) = match file.router_config() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = match file.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("switchyard: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        let local = listener.local_addr().expect("bound socket has an address");
        let router = Router::new(router_config);
        let realms: Vec<String> = router.realms().map(|r| r.name().to_owned()).collect();
        tracing::info!(%local, ?realms, "router started");
        // Tests and scripts read this line to learn the port.
        println!("switchyard listening on {local}");
        let server = tokio::spawn(transport::serve(listener, router.clone(), listener_config));
        wait_for_signal().await;
        tracing::info!("shutting down: closing every session with wamp.close.system_shutdown");
        let clean = router.shutdown().wait(Duration::from_secs(5)).await;
        server.abort();
        if !clean {
            tracing::warn!("some connections did not close within 5 s");
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
