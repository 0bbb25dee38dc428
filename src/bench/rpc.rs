//! The RPC scenario (K callers × W calls in flight → C callees on one procedure, shared
//! round-robin when C > 1) and the idle-sessions memory scenario.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchyard_router::client::{CalleeMessage, Client};
use switchyard_router::wire::{Dict, Payload, Value};

use super::report::{Latency, Report};
use super::{now_ns, payload, progress, rss_bytes, IdleArgs, RpcArgs};

const PROCEDURE: &str = "com.switchyard.bench.echo";

pub async fn run(a: RpcArgs) -> Result<Report, String> {
    let c = &a.common;
    c.check_size()?;
    let duration = c.duration()?;
    if a.callees == 0 || a.callers == 0 || a.inflight == 0 || a.inflight > 10_000 {
        return Err("--callees and --callers must be at least 1, --inflight 1..=10000".into());
    }
    let opts = c.client_options()?;
    let mut options = Dict::new();
    if a.callees > 1 {
        options.insert("invoke".into(), Value::from("roundrobin"));
    }
    let callee_opts = match &a.callee_url {
        Some(url) => super::Common {
            url: url.clone(),
            ..c.clone()
        }
        .client_options()?,
        None => opts.clone(),
    };
    let mut callees = Vec::new();
    for _ in 0..a.callees {
        let client = Client::connect(&callee_opts)
            .await
            .map_err(|e| e.to_string())?;
        let (_, mut calls) = client
            .register(PROCEDURE, options.clone())
            .await
            .map_err(|e| e.to_string())?;
        let echo = client.clone();
        callees.push(tokio::spawn(async move {
            while let Some(m) = calls.recv().await {
                if let CalleeMessage::Invocation {
                    request, payload, ..
                } = m
                {
                    if echo
                        .yield_result(request, Dict::new(), payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }));
        // Keep the callee session alive until the end (the task holds a clone).
        drop(client);
    }
    if a.settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.settle.min(30.0))).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + duration;
    let mut callers = Vec::new();
    for k in 0..a.callers {
        let client = Client::connect(&opts).await.map_err(|e| e.to_string())?;
        for w in 0..a.inflight {
            let (client, done, errors) = (client.clone(), done.clone(), errors.clone());
            let size = c.size;
            callers.push(tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
                let mut seq = 0u64;
                while Instant::now() < end {
                    let body = payload::make((k * 100_000 + w) as u64, seq, now_ns(), size);
                    let sent = now_ns();
                    let p = Payload::new(vec![Value::Bytes(body)], Dict::new());
                    match client.call(PROCEDURE, Dict::new(), p).await {
                        Ok(_) => {
                            let _ = hist.record(now_ns().saturating_sub(sent).max(1));
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    seq += 1;
                }
                hist
            }));
        }
    }
    let pb = progress(duration, c.json);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        pb.set_position(started.elapsed().as_millis() as u64);
        pb.set_message(format!(
            "calls {} ({:.0}/s)",
            done.load(Ordering::Relaxed),
            done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
        ));
    }
    pb.finish_and_clear();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for t in callers {
        hist.add(t.await.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let secs = started.elapsed().as_secs_f64();
    for t in callees {
        t.abort();
    }
    let received = done.load(Ordering::Relaxed);
    Ok(Report {
        scenario: "rpc".into(),
        label: c.label.clone(),
        url: opts.url.clone(),
        transport: format!("{:?}", c.transport).to_lowercase(),
        serializer: format!("{:?}", c.serializer).to_lowercase(),
        size: c.size,
        callers: a.callers,
        callees: a.callees,
        inflight: a.inflight,
        duration_s: secs,
        sent: received + errors.load(Ordering::Relaxed),
        sent_per_s: (received + errors.load(Ordering::Relaxed)) as f64 / secs,
        expected: received + errors.load(Ordering::Relaxed),
        received,
        received_per_s: received as f64 / secs,
        lost: 0,
        errors: errors.load(Ordering::Relaxed),
        latency: Latency::from_histogram(&hist),
        plot: None,
        json: c.json,
        ..Default::default()
    })
}

pub async fn idle(a: IdleArgs) -> Result<(), String> {
    let opts = a.common.client_options()?;
    if a.sessions == 0 || a.sessions > 100_000 {
        return Err("--sessions must be 1..=100000".into());
    }
    let before = a.router_pid.and_then(rss_bytes);
    let mut clients = Vec::with_capacity(a.sessions);
    let started = Instant::now();
    for i in 0..a.sessions {
        match Client::connect(&opts).await {
            Ok(c) => clients.push(c),
            Err(e) => return Err(format!("session {i}: {e} (raise `ulimit -n`?)")),
        }
    }
    let opened = started.elapsed();
    // Let the router settle, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = a.router_pid.and_then(rss_bytes);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let line = serde_json::json!({
        "scenario": "idle",
        "label": a.common.label,
        "sessions": clients.len(),
        "open_s": opened.as_secs_f64(),
        "router_rss_before_mib": before.map(mib),
        "router_rss_after_mib": after.map(mib),
        "per_session_kib": match (before, after) {
            (Some(b), Some(x)) => Some(x.saturating_sub(b) as f64 / 1024.0 / clients.len() as f64),
            _ => None,
        },
    });
    if a.common.json {
        println!("{line}");
    } else {
        println!(
            "idle: {} sessions open in {:.1} s",
            clients.len(),
            opened.as_secs_f64()
        );
        if let (Some(b), Some(x)) = (before, after) {
            println!(
                "  router RSS {:.1} MiB -> {:.1} MiB ({:.1} KiB per session)",
                mib(b),
                mib(x),
                (x.saturating_sub(b)) as f64 / 1024.0 / clients.len() as f64
            );
        }
    }
    for c in &clients {
        let _ = c.leave().await;
    }
    Ok(())
}
