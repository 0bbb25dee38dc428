//! `switchyard bench master`: load on a build master. N simulated workers in this process,
//! each a real WAMP-CRA session over its own socket that registers the procedures of a
//! `switchyard worker` (the contract in `switchyard_worker`) and answers `run` after
//! a chosen time with a chosen amount of output; M builds forced through the REST API, at a
//! rate or all at once. Measured from this process's clock: submit → the worker's `run` call
//! (start), submit → `buildsets.<id>.complete` on the bus (complete).
//!
//! Master side, the workers must be configured: names `<prefix>0` .. `<prefix>N-1`, all with
//! the same password, each in the builder's `workers`, and the builder in a force scheduler
//! (`--print-config` prints that TOML).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use switchyard_router::client::{CalleeMessage, Client, ClientAuth, ClientOptions};
use switchyard_router::wire::{Dict, Payload, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rss_bytes;

#[derive(Args, Clone, Debug)]
pub struct MasterArgs {
    /// Router URL the simulated workers join (repeat for a mesh: round-robin). The bench
    /// watches the bus on every one (rejoining a node that restarts), so a completion is
    /// seen while any node is up.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// The master's HTTP address for the REST API (repeat: forces go round-robin).
    #[arg(long = "api", default_value = "127.0.0.1:8080")]
    pub apis: Vec<String>,
    #[arg(long, default_value = "buildbot")]
    pub realm: String,
    /// API token (or set SWITCHYARD_BENCH_TOKEN).
    #[arg(long, env = "SWITCHYARD_BENCH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// How many simulated workers.
    #[arg(long, default_value_t = 10)]
    pub workers: usize,
    /// Worker names are this prefix followed by 0..N-1.
    #[arg(long, default_value = "bench-")]
    pub worker_prefix: String,
    /// The password every simulated worker uses.
    #[arg(long, default_value = "bench")]
    pub worker_password: String,
    /// How many builds to force.
    #[arg(long, default_value_t = 200)]
    pub builds: usize,
    /// Forces per second (open loop); without it, all at once.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Force requests in flight at most.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value = "bench")]
    pub builder: String,
    #[arg(long, default_value = "force")]
    pub scheduler: String,
    /// How long a simulated step runs, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub step_ms: u64,
    /// Bytes of output each step sends (in lines of 64 bytes).
    #[arg(long, default_value_t = 128)]
    pub output_bytes: usize,
    /// Give up waiting for completions after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Master process IDs (repeat for several nodes): CPU time and peak RSS.
    #[arg(long = "router-pid")]
    pub router_pids: Vec<u32>,
    /// Print the master-side TOML for these workers and this builder, then exit.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long)]
    pub json: bool,
    /// Draw completions per second into this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    #[arg(long, default_value = "")]
    pub label: String,
}

/// What the workers and the bus saw, keyed by the `bench_id` property of each force.
#[derive(Default)]
struct Seen {
    submitted: HashMap<u64, Instant>,
    bsid_of: HashMap<u64, u64>,
    runs: HashMap<u64, Vec<Instant>>,
    /// bsid → (time, results, watcher), every complete event (each URL has a watcher).
    completes: HashMap<u64, Vec<(Instant, i64, usize)>>,
    force_errors: u64,
}

#[derive(Serialize, Debug, Default)]
pub struct MasterReport {
    pub scenario: &'static str,
    pub label: String,
    pub workers: usize,
    pub builds: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub step_ms: u64,
    pub completed: u64,
    pub builds_per_s: f64,
    pub failures: u64,
    /// Builds run more than once (extra `run` calls for one forced build).
    pub duplicates: u64,
    /// Extra `buildsets.<id>.complete` events for one buildset.
    pub duplicate_completions: u64,
    pub missing: u64,
    pub submit_to_start_ms: Percentiles,
    pub submit_to_complete_ms: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_cpu_ms_per_build: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_rss_peak_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_rss_connected_mib: Option<f64>,
    #[serde(skip)]
    timeline: Vec<u64>,
}

#[derive(Serialize, Debug, Default)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            samples: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// The master-side TOML the simulated workers need.
pub fn config_for(a: &MasterArgs) -> String {
    let mut s = String::new();
    let names: Vec<String> = (0..a.workers)
        .map(|i| format!("{}{i}", a.worker_prefix))
        .collect();
    for n in &names {
        s.push_str(&format!(
            "[[master.workers]]\nname = {n:?}\npassword = {:?}\nmax_builds = 1\n",
            a.worker_password
        ));
    }
    s.push_str(&format!(
        "[[master.builders]]\nname = {:?}\nworkers = {names:?}\n\
         [[master.builders.steps]]\nname = \"step\"\nshell = \"true\"\n\
         [[master.schedulers]]\nname = {:?}\ntype = \"force\"\nbuilders = [{:?}]\n",
        a.builder, a.scheduler, a.builder
    ));
    s
}

pub async fn run(a: MasterArgs) -> Result<(), String> {
    if a.print_config {
        print!("{}", config_for(&a));
        return Ok(());
    }
    if a.workers == 0 || a.workers > 20_000 || a.builds == 0 || a.builds > 1_000_000 {
        return Err("--workers must be 1..=20000 and --builds 1..=1000000".into());
    }
    if a.urls.is_empty() || a.apis.is_empty() {
        return Err("give at least one --url and one --api".into());
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let connected = Arc::new(AtomicU64::new(0));
    // Workers join 64 at a time.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut workers = Vec::new();
    for i in 0..a.workers {
        let (name, url) = (format!("{}{i}", a.worker_prefix), i % a.urls.len());
        let (a2, seen, connected, gate) =
            (a.clone(), seen.clone(), connected.clone(), gate.clone());
        workers.push(tokio::spawn(async move {
            sim_worker(a2, name, url, seen, connected, gate).await
        }));
    }
    let mut bus = Vec::new();
    for i in 0..a.urls.len() {
        bus.push(watch_bus(&a, i, seen.clone()).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < a.workers as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} workers registered within 120 s",
                connected.load(Ordering::Relaxed),
                a.workers
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the master see them (it asks each for its info first).
    wait_master_sees_workers(&a).await?;
    let rss_connected = sum_rss(&a.router_pids);
    let cpu0 = cpu_seconds(&a.router_pids);
    let peak = Arc::new(AtomicU64::new(rss_connected.unwrap_or(0)));
    let sampler = {
        let (pids, peak) = (a.router_pids.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                if let Some(r) = sum_rss(&pids) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let pb = super::progress(Duration::from_millis(a.builds as u64), a.json);
    let start = Instant::now();
    force_all(&a, seen.clone()).await;
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);
    loop {
        let done = seen.lock().completes.len();
        pb.set_position(done as u64);
        pb.set_message(format!("{done}/{} complete", a.builds));
        if done + seen.lock().force_errors as usize >= a.builds || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer, to catch duplicates.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pb.finish_and_clear();
    sampler.abort();
    let cpu = cpu0.and_then(|c0| cpu_seconds(&a.router_pids).map(|c1| c1 - c0));
    for w in bus {
        w.abort();
    }
    for w in workers {
        w.abort();
    }
    let mut report = summarize(&a, &seen.lock(), start);
    report.master_cpu_s = cpu;
    report.master_cpu_ms_per_build = cpu
        .filter(|_| report.completed > 0)
        .map(|c| c * 1000.0 / report.completed as f64);
    report.master_rss_connected_mib = rss_connected.map(mib);
    report.master_rss_peak_mib =
        (!a.router_pids.is_empty()).then(|| mib(peak.load(Ordering::Relaxed)));
    emit(&a, report);
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn sum_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_bytes(*p)).sum()
}

/// utime + stime of the processes, in seconds (Linux's USER_HZ is 100).
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        total += ticks / 100.0;
    }
    Some(total)
}

/// One simulated worker: joins with WAMP-CRA, registers the worker's procedures and answers
/// them; when its connection drops, or a master asks it to `reconnect` (a graceful stop),
/// it joins the next URL after a second, as a `switchyard worker` does.
async fn sim_worker(
    a: MasterArgs,
    name: String,
    first: usize,
    seen: Arc<Mutex<Seen>>,
    connected: Arc<AtomicU64>,
    gate: Arc<tokio::sync::Semaphore>,
) {
    let mut counted = false;
    for attempt in 0.. {
        let url = &a.urls[(first + attempt) % a.urls.len()];
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let permit = gate.clone().acquire_owned().await;
        let Some((client, chans)) = join(&a, &name, url).await else {
            continue;
        };
        drop(permit);
        if !counted {
            counted = true;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        serve(&a, &name, Arc::new(client), chans, &seen).await;
    }
}

type Channels = Vec<tokio::sync::mpsc::Receiver<CalleeMessage>>;

async fn join(a: &MasterArgs, name: &str, url: &str) -> Option<(Client, Channels)> {
    let mut o = ClientOptions::new(url, a.realm.as_str());
    o.auth = Some(ClientAuth::wampcra(name, a.worker_password.as_str()));
    let client = match tokio::time::timeout(Duration::from_secs(10), Client::connect(&o)).await {
        Ok(Ok(c)) => c,
        other => {
            tracing::warn!(
                "bench worker {name} cannot join {url}: {:?}",
                other.map(|r| r.err())
            );
            return None;
        }
    };
    let prefix = format!("switchyard.worker.{name}.");
    let mut chans = Vec::new();
    for p in ["info", "run", "reconnect", "shutdown"] {
        match client.register(&format!("{prefix}{p}"), Dict::new()).await {
            Ok((_, rx)) => chans.push(rx),
            Err(e) => {
                tracing::warn!("bench worker {name} cannot register {p} at {url}: {e}");
                client.disconnect();
                return None;
            }
        }
    }
    Some((client, chans))
}

/// Answers calls until the session ends or a master asks the worker to move.
async fn serve(
    a: &MasterArgs,
    name: &str,
    client: Arc<Client>,
    mut chans: Channels,
    seen: &Mutex<Seen>,
) {
    let mut shutdown = chans.pop().expect("4");
    let mut reconnect = chans.pop().expect("4");
    let mut run = chans.pop().expect("4");
    let mut info = chans.pop().expect("4");
    loop {
        tokio::select! {
            m = info.recv() => match m {
                Some(CalleeMessage::Invocation { request, .. }) => {
                    let mut k = Dict::new();
                    k.insert("name".into(), Value::from(name));
                    k.insert("version".into(), Value::from("bench"));
                    k.insert("running".into(), Value::Int(0));
                    let _ = client.yield_result(request, Dict::new(), Payload::new(vec![], k)).await;
                }
                Some(_) => {}
                None => return,
            },
            m = run.recv() => match m {
                Some(CalleeMessage::Invocation { request, payload, .. }) => {
                    let id = payload.kwargs()
                        .and_then(|k| k.get("properties"))
                        .and_then(Value::as_dict)
                        .and_then(|p| p.get("bench_id"))
                        .and_then(|v| match v { Value::Int(i) => Some(*i as u64), v => v.as_u64() });
                    if let Some(id) = id {
                        seen.lock().runs.entry(id).or_default().push(Instant::now());
                    }
                    let (client, a) = (client.clone(), a.clone());
                    tokio::spawn(async move { answer_run(&client, request, &a).await });
                }
                Some(_) => {}
                None => return,
            },
            m = reconnect.recv() => match m {
                Some(CalleeMessage::Invocation { request, .. }) => {
                    let _ = client.yield_result(request, Dict::new(), Payload::default()).await;
                    // Let running steps answer, then move on.
                    tokio::time::sleep(Duration::from_millis(a.step_ms + 200)).await;
                    let _ = client.leave().await;
                    client.disconnect();
                    return;
                }
                Some(_) => {}
                None => return,
            },
            m = shutdown.recv() => if m.is_none() { return },
        }
    }
}

async fn answer_run(client: &Client, request: u64, a: &MasterArgs) {
    if a.step_ms > 0 {
        tokio::time::sleep(Duration::from_millis(a.step_ms)).await;
    }
    let mut left = a.output_bytes;
    while left > 0 {
        let n = left.min(16 * 1024);
        let lines = n.div_ceil(64);
        let text = format!("{}\n", "x".repeat(63)).repeat(lines);
        let mut k = Dict::new();
        k.insert("stream".into(), Value::from("stdout"));
        k.insert("data".into(), Value::from(text));
        let mut opts = Dict::new();
        opts.insert("progress".into(), Value::Bool(true));
        let _ = client
            .yield_result(request, opts, Payload::new(vec![], k))
            .await;
        left -= n;
    }
    let mut k = Dict::new();
    k.insert("rc".into(), Value::Int(0));
    k.insert("timed_out".into(), Value::Bool(false));
    k.insert("output_limit".into(), Value::Bool(false));
    k.insert("elapsed".into(), Value::Float(a.step_ms as f64 / 1000.0));
    let _ = client
        .yield_result(request, Dict::new(), Payload::new(vec![], k))
        .await;
}

/// Joins `a.urls[i]` and subscribes to the bus's buildsets.
async fn join_bus(
    a: &MasterArgs,
    i: usize,
) -> Result<
    (
        Client,
        tokio::sync::mpsc::Receiver<switchyard_router::client::Event>,
    ),
    String,
> {
    let url = a.urls[i].as_str();
    let o = ClientOptions::new(url, a.realm.as_str());
    let client = tokio::time::timeout(Duration::from_secs(10), Client::connect(&o))
        .await
        .map_err(|_| format!("cannot join {url} to watch the bus: timed out"))?
        .map_err(|e| format!("cannot join {url} to watch the bus: {e}"))?;
    let mut options = Dict::new();
    options.insert("match".into(), Value::from("prefix"));
    let (_, events) = client
        .subscribe("org.buildbot.mq.buildsets.", options)
        .await
        .map_err(|e| format!("cannot subscribe to the bus at {url}: {e}"))?;
    Ok((client, events))
}

/// Watches `buildsets.<id>.complete` on the bus through `a.urls[i]`, joining again (every
/// second) whenever that node goes away; the first join must succeed. Abort the task to
/// stop.
async fn watch_bus(
    a: &MasterArgs,
    i: usize,
    seen: Arc<Mutex<Seen>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let first = join_bus(a, i).await?;
    let a = a.clone();
    Ok(tokio::spawn(async move {
        let mut joined = Some(first);
        loop {
            if let Some((client, mut events)) = joined.take() {
                while let Some(ev) = events.recv().await {
                    record_complete(&ev, i, &seen);
                }
                client.disconnect();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            joined = join_bus(&a, i).await.ok();
        }
    }))
}

/// Records a `buildsets.<id>.complete` event (a request's keys also start with
/// `buildsets.`, and are skipped).
fn record_complete(ev: &switchyard_router::client::Event, watcher: usize, seen: &Mutex<Seen>) {
    let now = Instant::now();
    let Some(topic) = ev.details.get("topic").and_then(Value::as_str) else {
        return;
    };
    let Some(bsid) = topic
        .strip_prefix("org.buildbot.mq.buildsets.")
        .and_then(|rest| rest.strip_suffix(".complete"))
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return;
    };
    let results = ev
        .payload
        .args()
        .first()
        .and_then(Value::as_dict)
        .and_then(|d| d.get("results"))
        .and_then(|v| match v {
            Value::Int(i) => Some(*i),
            v => v.as_u64().map(|u| u as i64),
        })
        .unwrap_or(-1);
    seen.lock()
        .completes
        .entry(bsid)
        .or_default()
        .push((now, results, watcher));
}

/// Polls the REST API until the master lists every simulated worker as connected.
async fn wait_master_sees_workers(a: &MasterArgs) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = http(
            &a.apis[0],
            "GET",
            "/api/v2/workers?limit=100000",
            &a.token,
            "",
        )
        .await
        .map_err(|e| format!("GET /api/v2/workers: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let n = v["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| {
                        w["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(&a.worker_prefix))
                            && w["connected_to"].as_array().is_some_and(|c| !c.is_empty())
                    })
                    .count()
            })
            .unwrap_or(0);
        if status == 200 && n >= a.workers {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the master lists {n} of {} workers connected after 120 s (HTTP {status}); \
                 is it configured for them? (see --print-config)",
                a.workers
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Forces every build, at `--rate` or all at once, `--concurrency` requests in flight.
async fn force_all(a: &MasterArgs, seen: Arc<Mutex<Seen>>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.builds as u64 {
        if let Some(rate) = a.rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        let permit = gate.clone().acquire_owned().await.expect("open");
        let (a, seen) = (a.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let body = json!({"jsonrpc": "2.0", "id": i, "method": "force",
                "params": {"builderNames": [a.builder], "reason": "bench",
                           "properties": {"bench_id": i}}})
            .to_string();
            seen.lock().submitted.insert(i, Instant::now());
            let api = &a.apis[i as usize % a.apis.len()];
            let path = format!("/api/v2/forceschedulers/{}", a.scheduler);
            let answer = http(api, "POST", &path, &a.token, &body).await;
            let bsid = answer.ok().and_then(|(status, text)| {
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                (status == 200).then(|| v["result"][0].as_u64()).flatten()
            });
            let mut s = seen.lock();
            match bsid {
                Some(b) => {
                    s.bsid_of.insert(i, b);
                }
                None => s.force_errors += 1,
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// One HTTP/1.1 request (Connection: close), 30 s bounded; returns status and body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&out).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer within 30 s".to_string())??;
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn summarize(a: &MasterArgs, s: &Seen, start: Instant) -> MasterReport {
    let mut to_start = Histogram::<u64>::new(3).expect("histogram");
    let mut to_complete = Histogram::<u64>::new(3).expect("histogram");
    let (mut completed, mut failures, mut duplicates, mut missing) = (0u64, 0u64, 0u64, 0u64);
    let mut duplicate_completions = 0u64;
    let mut last = start;
    let mut done_at = Vec::new();
    for (id, submitted) in &s.submitted {
        let runs = s.runs.get(id).map(Vec::as_slice).unwrap_or(&[]);
        duplicates += runs.len().saturating_sub(1) as u64;
        if let Some(first) = runs.first() {
            let _ = to_start.record(first.duration_since(*submitted).as_micros() as u64);
        }
        let Some(bsid) = s.bsid_of.get(id) else {
            continue;
        };
        let events = s.completes.get(bsid).map(Vec::as_slice).unwrap_or(&[]);
        // The first to arrive, whichever watcher saw it.
        match events.iter().min_by_key(|(at, _, _)| *at) {
            Some((at, results, _)) => {
                completed += 1;
                // Each watcher sees every event once: more from one watcher are extra.
                for w in 0..a.urls.len() {
                    let n = events.iter().filter(|e| e.2 == w).count() as u64;
                    duplicate_completions += n.saturating_sub(1);
                }
                if *results != 0 {
                    failures += 1;
                }
                last = last.max(*at);
                done_at.push(at.duration_since(start));
                let _ = to_complete.record(at.duration_since(*submitted).as_micros() as u64);
            }
            _ => missing += 1,
        }
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    let mut timeline = vec![0u64; (elapsed * 10.0) as usize + 1];
    for d in done_at {
        let i = (d.as_secs_f64() * 10.0) as usize;
        if let Some(slot) = timeline.get_mut(i) {
            *slot += 1;
        }
    }
    MasterReport {
        scenario: "master",
        label: a.label.clone(),
        workers: a.workers,
        builds: a.builds,
        rate: a.rate,
        step_ms: a.step_ms,
        completed,
        builds_per_s: if elapsed > 0.0 {
            completed as f64 / elapsed
        } else {
            0.0
        },
        failures: failures + s.force_errors,
        duplicates,
        duplicate_completions,
        missing,
        submit_to_start_ms: Percentiles::of(&to_start),
        submit_to_complete_ms: Percentiles::of(&to_complete),
        timeline,
        ..Default::default()
    }
}

fn emit(a: &MasterArgs, r: MasterReport) {
    if let Some(p) = &a.plot {
        if let Err(e) = draw(&r, p) {
            eprintln!("switchyard bench: cannot draw {}: {e}", p.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&r).expect("report serializes"));
        return;
    }
    println!("master {}", r.label);
    println!(
        "  {} workers, {} builds{}, step {} ms",
        r.workers,
        r.builds,
        r.rate.map(|x| format!(" at {x}/s")).unwrap_or_default(),
        r.step_ms
    );
    println!(
        "  completed   {:>8} ({:.1} builds/s)",
        r.completed, r.builds_per_s
    );
    println!(
        "  failures {} duplicates {} (duplicate completion events {}) missing {}",
        r.failures, r.duplicates, r.duplicate_completions, r.missing
    );
    for (what, p) in [
        ("submit->start   ", &r.submit_to_start_ms),
        ("submit->complete", &r.submit_to_complete_ms),
    ] {
        println!(
            "  {what} ms p50 {:.1}  p99 {:.1}  max {:.1}  ({} samples)",
            p.p50, p.p99, p.max, p.samples
        );
    }
    if let (Some(c), Some(per)) = (r.master_cpu_s, r.master_cpu_ms_per_build) {
        println!("  master CPU  {c:.2} s ({per:.2} ms per build)");
    }
    if let Some(peak) = r.master_rss_peak_mib {
        println!(
            "  master RSS  peak {peak:.1} MiB (workers connected, idle: {:.1} MiB)",
            r.master_rss_connected_mib.unwrap_or(0.0)
        );
    }
}

fn draw(r: &MasterReport, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let per_s: Vec<f64> = r.timeline.iter().map(|n| *n as f64 * 10.0).collect();
    let max = per_s.iter().cloned().fold(1.0, f64::max);
    let secs = per_s.len() as f64 / 10.0;
    let mut chart = ChartBuilder::on(&root)
        .caption("builds completed per second", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs.max(0.1), 0f64..max * 1.1)?;
    chart.configure_mesh().x_desc("seconds").draw()?;
    chart.draw_series(LineSeries::new(
        per_s.iter().enumerate().map(|(i, v)| (i as f64 / 10.0, *v)),
        &BLUE,
    ))?;
    root.present()?;
    Ok(())
}
