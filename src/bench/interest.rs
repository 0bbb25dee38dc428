//! The interest scenario: how long a SUBSCRIBE and a REGISTER take to be answered, one
//! after the other from one session, each for a new URI (so each is an interest change the
//! mesh's peers must confirm before the reply, see docs/mesh.md). Run it against one node
//! and against a node of a mesh: the difference is what read-your-writes interest costs.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_router::client::Client;
use switchyard_router::wire::Dict;

use super::report::Latency;
use super::InterestArgs;

#[derive(Serialize)]
struct InterestReport {
    scenario: &'static str,
    label: String,
    url: String,
    serializer: String,
    count: usize,
    subscribe: Latency,
    register: Latency,
}

pub async fn run(a: InterestArgs) -> Result<(), String> {
    if a.count == 0 || a.count > 5_000 {
        return Err("--count must be 1..=5000".into());
    }
    let c = &a.common;
    let opts = c.client_options()?;
    let client = Client::connect(&opts).await.map_err(|e| e.to_string())?;
    // A fresh prefix per run: every URI is new, so every request changes the interest.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let run = format!(
        "com.switchyard.bench.interest.p{}t{stamp}",
        std::process::id()
    );
    let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut subscribe, mut register) = (new(), new());
    for i in 0..(a.warmup + a.count) {
        let t0 = Instant::now();
        let (_, events) = client
            .subscribe(&format!("{run}.t{i}"), Dict::new())
            .await
            .map_err(|e| format!("SUBSCRIBE {i}: {e}"))?;
        let sub_ns = t0.elapsed().as_nanos() as u64;
        drop(events);
        let t0 = Instant::now();
        let (_, calls) = client
            .register(&format!("{run}.p{i}"), Dict::new())
            .await
            .map_err(|e| format!("REGISTER {i}: {e}"))?;
        let reg_ns = t0.elapsed().as_nanos() as u64;
        drop(calls);
        if i >= a.warmup {
            let _ = subscribe.record(sub_ns.max(1));
            let _ = register.record(reg_ns.max(1));
        }
    }
    let _ = client.leave().await;
    let report = InterestReport {
        scenario: "interest",
        label: c.label.clone(),
        url: opts.url.clone(),
        serializer: format!("{:?}", c.serializer).to_lowercase(),
        count: a.count,
        subscribe: Latency::from_histogram(&subscribe),
        register: Latency::from_histogram(&register),
    };
    if c.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "interest: {} SUBSCRIBEs and {} REGISTERs (new URIs) on {}",
            a.count, a.count, report.url
        );
        for (what, l) in [
            ("SUBSCRIBED", &report.subscribe),
            ("REGISTERED", &report.register),
        ] {
            println!(
                "  {what}: p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
                l.p50_us, l.p90_us, l.p99_us, l.max_us
            );
        }
    }
    Ok(())
}
