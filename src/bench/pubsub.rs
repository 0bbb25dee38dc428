//! The pub/sub scenario: P publishers → S subscribers on one topic.
//!
//! Closed loop by default: a publisher keeps at most `--window` messages that some subscriber
//! has not received yet, so the run measures the rate the whole path sustains with nothing
//! dropped. With `--rate`, publishers send on a fixed schedule (open loop) and whatever does
//! not arrive within the grace period counts as lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use switchyard_router::client::{Client, Event};
use switchyard_router::wire::{Dict, Payload, Value};
use tokio::sync::{mpsc, Semaphore};

use super::relay::{RelayPublisher, RelaySubscriber};
use super::report::{Latency, Report};
use super::{now_ns, payload, progress, PubSubArgs, TransportArg};

const TOPIC: &str = "com.switchyard.bench.pubsub";

/// What subscribers share with the coordinator.
struct Counters {
    publishers: usize,
    /// `received[s * publishers + p]`: messages from publisher p that subscriber s received.
    received: Vec<AtomicU64>,
    total: AtomicU64,
    out_of_order: AtomicU64,
    /// Deliveries per 100 ms bucket since the start of sending.
    timeline: Vec<AtomicU64>,
    started_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    stop: AtomicBool,
}

impl Counters {
    fn min_received_from(&self, publisher: usize, subscribers: usize) -> u64 {
        (0..subscribers)
            .map(|s| self.received[s * self.publishers + publisher].load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    fn record(&self, subscriber: usize, bytes: &[u8], hist: &mut Histogram<u64>) {
        let Some((p, seq, sent)) = payload::parse(bytes) else {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let p = p as usize;
        if p >= self.publishers {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let prev = self.received[subscriber * self.publishers + p].fetch_add(1, Ordering::AcqRel);
        if prev != seq {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        let now = now_ns();
        let _ = hist.record(now.saturating_sub(sent).max(1));
        self.total.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        let bucket =
            (now.saturating_sub(self.started_ns.load(Ordering::Relaxed)) / 100_000_000) as usize;
        if let Some(b) = self.timeline.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Sub {
    /// The client is kept so the session stays open while events are read.
    Wamp(mpsc::Receiver<Event>, #[allow(dead_code)] Client),
    Relay(RelaySubscriber),
}

impl Sub {
    async fn next(&mut self) -> Option<Bytes> {
        match self {
            Sub::Wamp(rx, _) => loop {
                let ev = rx.recv().await?;
                if let Some(Value::Bytes(b)) = ev.payload.args().first() {
                    return Some(b.clone());
                }
            },
            Sub::Relay(r) => r.next().await,
        }
    }
}

enum Pub {
    Wamp(Client),
    Relay(RelayPublisher),
}

/// A subscriber that joins and subscribes over a raw WebSocket, then never reads: the slow
/// consumer a router must not let grow its memory.
struct StalledSubscriber {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl StalledSubscriber {
    async fn connect(url: &str, realm: &str, topic: &str) -> Result<Self, String> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message as Ws;
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "wamp.2.json".parse().expect("ascii"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| e.to_string())?;
        let hello = format!(r#"[1,"{realm}",{{"roles":{{"subscriber":{{}}}}}}]"#);
        let subscribe = format!(r#"[32,1,{{}},"{topic}"]"#);
        for frame in [hello, subscribe] {
            ws.send(Ws::Text(frame.into()))
                .await
                .map_err(|e| e.to_string())?;
            // WELCOME, then SUBSCRIBED.
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Ws::Text(_)))) => {}
                other => return Err(format!("stalled subscriber could not join: {other:?}")),
            }
        }
        Ok(StalledSubscriber { ws })
    }

    /// Whether the router still holds the connection (reads what piled up, bounded in time).
    async fn still_connected(&mut self) -> bool {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return true,
                Ok(None) | Ok(Some(Err(_))) => return false,
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => return false,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

pub async fn run(a: PubSubArgs) -> Result<Report, String> {
    let c = &a.common;
    c.check_size()?;
    let duration = c.duration()?;
    if a.publishers == 0 || a.subscribers == 0 || a.publishers > 1000 || a.subscribers > 10_000 {
        return Err("--publishers must be 1..=1000 and --subscribers 1..=10000".into());
    }
    if a.relay && c.transport == TransportArg::Rawsocket {
        return Err("--relay speaks WebSocket only".into());
    }
    let opts = c.client_options()?;
    let buckets = ((duration.as_secs_f64() + a.grace + 2.0) * 10.0) as usize;
    let counters = Arc::new(Counters {
        publishers: a.publishers,
        received: (0..a.publishers * a.subscribers)
            .map(|_| AtomicU64::new(0))
            .collect(),
        total: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        timeline: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
        started_ns: AtomicU64::new(u64::MAX),
        last_delivery_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    // Subscribers first, all subscribed before anyone publishes.
    let sub_urls: Vec<String> = if a.subscriber_urls.is_empty() {
        vec![c.url.clone()]
    } else {
        a.subscriber_urls.clone()
    };
    let mut sub_tasks = Vec::new();
    for s in 0..a.subscribers {
        let url = &sub_urls[s % sub_urls.len()];
        let mut sub = if a.relay {
            Sub::Relay(RelaySubscriber::connect(url).await?)
        } else {
            let sub_common = super::Common {
                url: url.clone(),
                ..c.clone()
            };
            let client = Client::connect(&sub_common.client_options()?)
                .await
                .map_err(|e| e.to_string())?;
            let (_, rx) = client
                .subscribe(TOPIC, Dict::new())
                .await
                .map_err(|e| e.to_string())?;
            Sub::Wamp(rx, client)
        };
        let counters = counters.clone();
        sub_tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            loop {
                tokio::select! {
                    biased;
                    b = sub.next() => match b {
                        Some(b) => counters.record(s, &b, &mut hist),
                        None => break,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {
                        if counters.stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
                if counters.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            hist
        }));
    }
    // Stalled subscribers: subscribe, then never read again.
    let mut stalled = Vec::new();
    for i in 0..a.stalled {
        let url = &sub_urls[i % sub_urls.len()];
        stalled.push(StalledSubscriber::connect(url, &c.realm, TOPIC).await?);
    }
    if a.settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(a.settle.min(30.0))).await;
    }
    // Sample the router's memory while the run lasts.
    let rss_peak = Arc::new(AtomicU64::new(0));
    let sampler = a.router_pid.map(|pid| {
        let peak = rss_peak.clone();
        let stop = counters.clone();
        tokio::spawn(async move {
            while !stop.stop.load(Ordering::Relaxed) {
                if let Some(r) = super::rss_bytes(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let mut pubs = Vec::new();
    for _ in 0..a.publishers {
        pubs.push(if a.relay {
            Pub::Relay(RelayPublisher::connect(&c.url).await?)
        } else {
            Pub::Wamp(Client::connect(&opts).await.map_err(|e| e.to_string())?)
        });
    }

    let sent = Arc::new(AtomicU64::new(0));
    let ack_errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    counters.started_ns.store(now_ns(), Ordering::Relaxed);
    let end = started + duration;
    let mut pub_tasks = Vec::new();
    for (p, publisher) in pubs.into_iter().enumerate() {
        let (counters, sent, ack_errors) = (counters.clone(), sent.clone(), ack_errors.clone());
        let (size, window, subscribers, rate, ack) =
            (c.size, a.window, a.subscribers, a.rate, a.ack);
        let per_publisher_interval =
            rate.map(|r| Duration::from_secs_f64(a.publishers as f64 / r.max(1) as f64));
        pub_tasks.push(tokio::spawn(async move {
            let acks = Arc::new(Semaphore::new(window.max(1) as usize));
            let mut publisher = publisher;
            let mut seq: u64 = 0;
            let mut delivered_min = 0u64;
            while Instant::now() < end {
                if let Some(interval) = per_publisher_interval {
                    let due = started + interval.mul_f64(seq as f64);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                } else {
                    // Closed loop: wait while `window` messages are in flight.
                    while seq - delivered_min >= window {
                        delivered_min = counters.min_received_from(p, subscribers);
                        if seq - delivered_min >= window {
                            if Instant::now() >= end {
                                break;
                            }
                            tokio::time::sleep(Duration::from_micros(100)).await;
                        }
                    }
                    if Instant::now() >= end {
                        break;
                    }
                }
                let body = payload::make(p as u64, seq, now_ns(), size);
                let ok = match &mut publisher {
                    Pub::Relay(r) => r.send(body).await.is_ok(),
                    Pub::Wamp(client) => {
                        let payload = Payload::new(vec![Value::Bytes(body)], Dict::new());
                        if ack {
                            let permit =
                                acks.clone().acquire_owned().await.expect("semaphore open");
                            let (client, errs) = (client.clone(), ack_errors.clone());
                            tokio::spawn(async move {
                                if client
                                    .publish_acknowledged(TOPIC, Dict::new(), payload)
                                    .await
                                    .is_err()
                                {
                                    errs.fetch_add(1, Ordering::Relaxed);
                                }
                                drop(permit);
                            });
                            true
                        } else {
                            client.publish(TOPIC, Dict::new(), payload).await.is_ok()
                        }
                    }
                };
                if !ok {
                    break;
                }
                seq += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            publisher
        }));
    }

    // Progress while sending.
    let pb = progress(duration, c.json);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        pb.set_position(started.elapsed().as_millis() as u64);
        pb.set_message(format!(
            "published {} delivered {} ({:.0}/s)",
            sent.load(Ordering::Relaxed),
            counters.total.load(Ordering::Relaxed),
            counters.total.load(Ordering::Relaxed) as f64 / secs
        ));
    }
    pb.finish_and_clear();
    let mut publishers = Vec::new();
    for t in pub_tasks {
        publishers.push(t.await.map_err(|e| e.to_string())?);
    }
    let sent_total = sent.load(Ordering::Relaxed);
    let send_secs = started.elapsed().as_secs_f64();
    let expected = sent_total * a.subscribers as u64;
    // Grace: wait for what is still in flight, but no longer than --grace.
    let grace_end = Instant::now() + Duration::from_secs_f64(a.grace.clamp(0.0, 60.0));
    while counters.total.load(Ordering::Relaxed) < expected && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    counters.stop.store(true, Ordering::Relaxed);
    if let Some(t) = sampler {
        let _ = t.await;
    }
    let mut stalled_connected = 0;
    for s in &mut stalled {
        if s.still_connected().await {
            stalled_connected += 1;
        }
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut hist = histogram();
    for t in sub_tasks {
        let h = t.await.map_err(|e| e.to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
    }
    drop(publishers);

    let received = counters.total.load(Ordering::Relaxed);
    let last = counters.last_delivery_ns.load(Ordering::Relaxed);
    let first = counters.started_ns.load(Ordering::Relaxed);
    // Deliveries per second over the span from the first publish to the last delivery.
    let span = ((last.saturating_sub(first)) as f64 / 1e9)
        .max(send_secs.min(0.001))
        .max(0.001);
    let mut timeline: Vec<u64> = counters
        .timeline
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    while timeline.last() == Some(&0) {
        timeline.pop();
    }
    Ok(Report {
        scenario: "pubsub".into(),
        label: c.label.clone(),
        url: if a.relay {
            format!("{} (relay)", c.url)
        } else {
            opts.url.clone()
        },
        transport: format!("{:?}", c.transport).to_lowercase(),
        serializer: if a.relay {
            "raw".into()
        } else {
            format!("{:?}", c.serializer).to_lowercase()
        },
        size: c.size,
        publishers: a.publishers,
        subscribers: a.subscribers,
        rate: a.rate,
        stalled: a.stalled,
        duration_s: send_secs,
        sent: sent_total,
        sent_per_s: sent_total as f64 / send_secs,
        expected,
        received,
        received_per_s: received as f64 / span,
        lost: expected.saturating_sub(received),
        errors: counters.out_of_order.load(Ordering::Relaxed) + ack_errors.load(Ordering::Relaxed),
        latency: Latency::from_histogram(&hist),
        router_rss_peak_mib: a.router_pid.map(|_| mib(rss_peak.load(Ordering::Relaxed))),
        router_rss_end_mib: a.router_pid.and_then(super::rss_bytes).map(mib),
        stalled_still_connected: (a.stalled > 0).then_some(stalled_connected),
        timeline,
        plot: c.plot.clone(),
        json: c.json,
        ..Default::default()
    })
}
