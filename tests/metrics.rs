//! Prometheus metrics: what the router counts, and `/metrics` served by the binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use common::*;
use switchyard_router::metrics::endpoint::render;
use switchyard_router::wire::{Dict, Message, Value};

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn counts_sessions_messages_bytes_and_auth_failures() {
    let r = TestRouter::start().await;
    let (mut a, _) = r.joined("wamp.2.json").await;
    let (mut b, _) = r.joined("wamp.2.msgpack").await;
    b.subscribe("com.m", Dict::new()).await;
    for _ in 0..3 {
        a.publish("com.m", Dict::new(), args(vec![Value::Int(1)]))
            .await;
        assert!(matches!(b.recv().await, Message::Event { .. }));
    }
    // A HELLO for a realm that does not exist is refused.
    let mut c = r.client("wamp.2.json").await;
    c.hello("nope", client_roles()).await;

    let text = render(&r.router);
    assert_eq!(
        sample(&text, r#"switchyard_sessions{realm="realm1"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"switchyard_subscriptions{realm="realm1"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"switchyard_messages_received_total{realm="realm1",type="PUBLISH"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"switchyard_messages_received_total{realm="realm1",type="SUBSCRIBE"}"#
        ),
        Some(1.0)
    );
    assert!(sample(&text, "switchyard_bytes_received_total").unwrap() > 0.0);
    assert!(sample(&text, "switchyard_bytes_sent_total").unwrap() > 0.0);
    assert!(sample(&text, "switchyard_connections_total").unwrap() >= 3.0);
    assert_eq!(
        sample(
            &text,
            r#"switchyard_auth_failures_total{reason="wamp.error.no_such_realm"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains("# TYPE switchyard_messages_received_total counter"));
}

#[test]
fn binary_serves_metrics_when_asked() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "start",
            "--no-master",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l);
    }
    let addr = lines[1]
        .trim()
        .strip_prefix("switchyard metrics on ")
        .expect(&lines[1]);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    assert!(
        resp.contains(r#"switchyard_sessions{realm="realm1"} 0"#),
        "{resp}"
    );
}
