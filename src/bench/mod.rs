//! `switchyard bench`: a WAMP load generator usable against any router.
//!
//! Scenarios: `pubsub` (P publishers → S subscribers), `rpc` (K callers with W calls in flight
//! → C callees), `idle` (N idle sessions, with the router's memory), `relay` (a trivial
//! WebSocket fan-out server, the machine's ceiling for comparison), `interest` (how long
//! SUBSCRIBED and REGISTERED take, one node or a mesh), and `master` (simulated workers and
//! forced builds against a build master, in `master`). Every figure is counted from what
//! subscribers and callers actually received; every run stops by itself.

mod interest;
mod master;
mod pubsub;
mod relay;
mod report;
mod rpc;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use switchyard_router::client::ClientOptions;
use switchyard_router::wire::Serializer;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Publish/subscribe throughput, loss and end-to-end latency.
    Pubsub(PubSubArgs),
    /// Call throughput and latency.
    Rpc(RpcArgs),
    /// Open many idle sessions and report the router's memory.
    Idle(IdleArgs),
    /// Run a trivial WebSocket relay (every frame to every other connection): the ceiling.
    Relay(RelayArgs),
    /// SUBSCRIBE and REGISTER latency (each for a new URI), one after the other from one
    /// session: on a mesh node, what waiting for the peers' confirmation adds.
    Interest(InterestArgs),
    /// Load a build master: N simulated workers (real WAMP-CRA sessions, one socket each)
    /// and M builds forced through the REST API; builds/s, submit-to-start and
    /// submit-to-complete latency, failures, duplicates, the master's CPU and RSS.
    ///
    /// Master side, configure workers `<prefix>0`..`<prefix>N-1` with `--worker-password`,
    /// all in the builder's `workers`, and a force scheduler for the builder:
    /// `--print-config` prints that TOML (append it to the node's config).
    Master(master::MasterArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SerializerArg {
    Json,
    Msgpack,
    Cbor,
}

impl From<SerializerArg> for Serializer {
    fn from(s: SerializerArg) -> Self {
        match s {
            SerializerArg::Json => Serializer::Json,
            SerializerArg::Msgpack => Serializer::MsgPack,
            SerializerArg::Cbor => Serializer::Cbor,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    Websocket,
    Rawsocket,
}

/// Options every client-side scenario shares.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Router URL (ws://host:port/path); RawSocket uses the same host and port.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    #[arg(long, default_value = "realm1")]
    pub realm: String,
    #[arg(long, value_enum, default_value = "msgpack")]
    pub serializer: SerializerArg,
    #[arg(long, value_enum, default_value = "websocket")]
    pub transport: TransportArg,
    /// Payload size in bytes (at least 24: publisher, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw throughput over time into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// A label for the report (the compare script names the router here).
    #[arg(long, default_value = "")]
    pub label: String,
}

impl Common {
    /// The client options for this run's URL, transport and serializer.
    pub fn client_options(&self) -> Result<ClientOptions, String> {
        let url = match self.transport {
            TransportArg::Websocket => self.url.clone(),
            TransportArg::Rawsocket => {
                let rest = self
                    .url
                    .strip_prefix("ws://")
                    .ok_or_else(|| format!("--url {:?} must start with ws://", self.url))?;
                let hostport = rest.split('/').next().unwrap_or(rest);
                format!("tcp://{hostport}")
            }
        };
        let mut o = ClientOptions::new(url, self.realm.clone());
        o.serializer = self.serializer.into();
        Ok(o)
    }

    pub fn duration(&self) -> Result<Duration, String> {
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be between 0 and 3600 seconds".into());
        }
        Ok(Duration::from_secs_f64(self.duration))
    }

    pub fn check_size(&self) -> Result<(), String> {
        if self.size < payload::HEADER || self.size > 1 << 20 {
            return Err(format!(
                "--size must be between {} and 1048576 bytes",
                payload::HEADER
            ));
        }
        Ok(())
    }
}

#[derive(Args, Clone, Debug)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Total publish rate (messages/s, open loop). Without it, publishers send as fast as
    /// subscribers keep up, with at most --window messages per publisher in flight.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Closed loop: messages per publisher not yet received by every subscriber.
    #[arg(long, default_value_t = 2000)]
    pub window: u64,
    /// Publish with acknowledge: true (each publisher waits for PUBLISHED within the window).
    #[arg(long)]
    pub ack: bool,
    /// Seconds to wait after publishing stops for deliveries still in flight.
    #[arg(long, default_value_t = 3.0)]
    pub grace: f64,
    /// Talk to a `switchyard bench relay` (raw frames, no WAMP) instead of a router.
    #[arg(long)]
    pub relay: bool,
    /// Connect subscribers to these URLs (round-robin) instead of --url: for a mesh, the
    /// publishers' node differs from the subscribers' nodes.
    #[arg(long = "subscriber-url")]
    pub subscriber_urls: Vec<String>,
    /// Seconds to wait after subscribing before publishing (a mesh propagates interest
    /// asynchronously).
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
    /// Extra subscribers that subscribe and then never read: a slow consumer.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// The router's process ID: sample its resident memory during the run.
    #[arg(long)]
    pub router_pid: Option<u32>,
}

#[derive(Args, Clone, Debug)]
pub struct RpcArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1)]
    pub callees: usize,
    #[arg(long, default_value_t = 1)]
    pub callers: usize,
    /// Calls in flight per caller.
    #[arg(long, default_value_t = 100)]
    pub inflight: usize,
    /// Connect callees to this URL instead of --url (a mesh: callers and callees on
    /// different nodes).
    #[arg(long)]
    pub callee_url: Option<String>,
    /// Seconds to wait after registering before calling (mesh propagation).
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
}

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many sessions to open.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// The router's process ID, to read its resident memory from /proc.
    #[arg(long)]
    pub router_pid: Option<u32>,
}

#[derive(Args, Clone, Debug)]
pub struct InterestArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many SUBSCRIBEs and REGISTERs to time.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Untimed SUBSCRIBE+REGISTER pairs first.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
}

#[derive(Args, Clone, Debug)]
pub struct RelayArgs {
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
}

/// Resident memory of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Nanoseconds since the bench started: the clock stamped into payloads. Publishers and
/// subscribers run in this one process, so the clock is shared.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The payload: publisher index, sequence number and send time, padded to --size bytes.
pub mod payload {
    use bytes::{BufMut, Bytes, BytesMut};

    pub const HEADER: usize = 24;

    pub fn make(publisher: u64, seq: u64, sent_ns: u64, size: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(size);
        b.put_u64(publisher);
        b.put_u64(seq);
        b.put_u64(sent_ns);
        b.resize(size, 0x5a);
        b.freeze()
    }

    /// (publisher, sequence, send time) if the bytes carry a header.
    pub fn parse(b: &[u8]) -> Option<(u64, u64, u64)> {
        if b.len() < HEADER {
            return None;
        }
        let n = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some((n(0), n(8), n(16)))
    }
}

/// Runs a bench subcommand; returns the process exit code.
pub fn run(cmd: BenchCommand) -> u8 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        now_ns();
        match cmd {
            BenchCommand::Pubsub(a) => pubsub::run(a).await.map(|r| r.emit()),
            BenchCommand::Rpc(a) => rpc::run(a).await.map(|r| r.emit()),
            BenchCommand::Idle(a) => rpc::idle(a).await,
            BenchCommand::Relay(a) => relay::serve(a).await,
            BenchCommand::Interest(a) => interest::run(a).await,
            BenchCommand::Master(a) => master::run(a).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("switchyard bench: {e}");
            1
        }
    }
}

/// A progress bar over the send phase (drawn only on a terminal, never with --json).
pub fn progress(duration: Duration, json: bool) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(duration.as_millis() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .expect("static template"),
    );
    pb
}
