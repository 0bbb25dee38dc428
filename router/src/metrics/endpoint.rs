//! The `/metrics` endpoint: the Prometheus text exposition of a router's counters, with the
//! gauges (sessions, subscriptions, registrations) read from its realms when scraped.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Metrics;
use crate::realm::Realm;
use crate::wire::code_name;
use crate::Router;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus text exposition (format 0.0.4) of `router`'s metrics.
pub fn render(router: &Router) -> String {
    let mut out = String::new();
    let mut realms: Vec<_> = router.realms().cloned().collect();
    realms.sort_by(|a, b| a.name().cmp(b.name()));
    realm_gauges(&mut out, &realms);
    counters(&mut out, router.metrics());
    out
}

/// A gauge read from each realm: its name, its help, how to read it.
type RealmGauge = (&'static str, &'static str, fn(&Realm) -> usize);

/// The gauges read from each realm when scraped.
fn realm_gauges(out: &mut String, realms: &[Arc<Realm>]) {
    let gauges: [RealmGauge; 4] = [
        (
            "switchyard_sessions",
            "Sessions joined, by realm (router-internal sessions excluded).",
            |r| r.sessions().iter().filter(|s| !s.info.internal).count(),
        ),
        (
            "switchyard_subscriptions",
            "Subscriptions, by realm.",
            |r| r.broker.subscriptions().len(),
        ),
        (
            "switchyard_registrations",
            "Registrations, by realm (meta API procedures included).",
            |r| r.dealer.registrations().len(),
        ),
        (
            "switchyard_calls_in_flight",
            "Invocations awaiting a callee's answer, by realm.",
            |r| r.dealer.pending_count(),
        ),
    ];
    for (name, help, count) in gauges {
        header(out, name, "gauge", help);
        for r in realms {
            let n = count(r);
            let _ = writeln!(out, "{name}{{realm=\"{}\"}} {n}", label(r.name()));
        }
    }
}

/// The counters the router keeps as it runs.
fn counters(out: &mut String, m: &Metrics) {
    header(
        out,
        "switchyard_messages_received_total",
        "counter",
        "WAMP messages received from joined sessions, by realm and type.",
    );
    let mut msgs = Vec::new();
    for e in m.messages.iter() {
        for (code, n) in e.value().counted() {
            msgs.push(((e.key().clone(), code_name(code)), n));
        }
    }
    msgs.sort();
    for ((realm, kind), n) in msgs {
        let _ = writeln!(
            out,
            "switchyard_messages_received_total{{realm=\"{}\",type=\"{kind}\"}} {n}",
            label(&realm)
        );
    }
    header(
        out,
        "switchyard_auth_failures_total",
        "counter",
        "Sessions refused at HELLO or AUTHENTICATE, by ABORT reason.",
    );
    let mut fails: Vec<_> = m
        .auth_failures
        .iter()
        .map(|e| (e.key().clone(), e.value().load(Relaxed)))
        .collect();
    fails.sort();
    for (reason, n) in fails {
        let _ = writeln!(
            out,
            "switchyard_auth_failures_total{{reason=\"{}\"}} {n}",
            label(&reason)
        );
    }
    for (name, help, v) in [
        (
            "switchyard_bytes_received_total",
            "WAMP payload bytes received (after framing).",
            &m.bytes_received,
        ),
        (
            "switchyard_bytes_sent_total",
            "WAMP payload bytes written to sockets.",
            &m.bytes_sent,
        ),
        (
            "switchyard_slow_consumer_disconnects_total",
            "Sessions cut off because their outbound queue overflowed.",
            &m.slow_consumers,
        ),
        (
            "switchyard_connections_total",
            "TCP connections accepted.",
            &m.connections,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
}

/// Serves `GET /metrics` on `listener` until the router shuts down.
pub async fn serve(listener: TcpListener, router: Router) {
    let shutdown = router.shutdown().clone();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.requested() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let router = router.clone();
                async move {
                    let mut resp = if req.uri().path() == "/metrics" {
                        let mut r = Response::new(Full::new(Bytes::from(render(&router))));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        r
                    } else {
                        Response::new(Full::new(Bytes::from_static(b"see /metrics\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *resp.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
