//! The `switchyard` binary: command line, configuration and wiring.

/// mimalloc instead of glibc's malloc: routing allocates many small, short-lived buffers
/// across threads, where glibc spent ~15% of the CPU in a fan-out profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard_router::mesh::Mesh;
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
    /// Inspect the peer mesh of a running node.
    #[command(subcommand)]
    Mesh(MeshCommand),
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
    /// Read the address from this config file.
    #[arg(long, short)]
    config: Option<PathBuf>,
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
    /// This node's name in the mesh; enables the mesh (with --mesh-secret).
    #[arg(long)]
    node_name: Option<String>,
    /// A peer to link with, ws://host:port (repeatable; added to the config's peers).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// The secret shared by every node of the mesh.
    #[arg(long, env = "SWITCHYARD_MESH_SECRET", hide_env_values = true)]
    mesh_secret: Option<String>,
    /// The URL other nodes dial to reach this one (default: ws://<listen address>/mesh).
    #[arg(long)]
    advertise: Option<String>,
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
        Command::Mesh(MeshCommand::Status(args)) => mesh_status(args),
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
    if args.node_name.is_some()
        || !args.peers.is_empty()
        || args.mesh_secret.is_some()
        || args.advertise.is_some()
    {
        let m = file.mesh.get_or_insert_with(Default::default);
        if let Some(n) = args.node_name {
            m.node_name = Some(n);
        }
        m.peers.extend(args.peers);
        if let Some(s) = args.mesh_secret {
            m.secret = Some(s);
        }
        if let Some(a) = args.advertise {
            m.advertise = Some(a);
        }
    }
    init_logging(log_level.as_deref().or(file.log_level.as_deref()));
    let mesh_config = match file.mesh_config() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    let (router_config, mut listener_config) = match file.router_config() {
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
        if let Some(mc) = mesh_config {
            if local.ip().is_unspecified() && mc.advertise.is_none() {
                tracing::warn!(
                    "listening on {local} without --advertise: peers learn this node as \
                     ws://{local}/mesh through gossip, which they cannot dial; set --advertise"
                );
            }
            let mesh = Mesh::new(router.clone(), mc, local);
            tracing::info!(node = mesh.node_name(), url = mesh.url(), "mesh enabled");
            listener_config.mesh = Some(mesh.clone());
            mesh.start();
        }
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

/// `switchyard mesh status`: GET /mesh/status from the running node and print it.
fn mesh_status(args: StatusArgs) -> ExitCode {
    use std::io::{Read, Write};
    let addr = match (&args.addr, &args.config) {
        (Some(a), _) => a.clone(),
        (None, Some(path)) => match FileConfig::load(path) {
            Ok(c) => c.listen,
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => "127.0.0.1:8080".into(),
    };
    let fetch = || -> std::io::Result<String> {
        let sock: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /mesh/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    match fetch() {
        Ok(resp) => {
            let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
            if head.starts_with("HTTP/1.1 200") {
                print!("{body}");
                ExitCode::SUCCESS
            } else {
                eprintln!("switchyard: {addr} has no mesh (is it started with --node-name?)");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("switchyard: cannot reach {addr}: {e}");
            ExitCode::from(1)
        }
    }
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
