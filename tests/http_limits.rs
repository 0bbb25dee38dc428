//! HTTP on the shared port under attack: requests whose bodies stall after complete headers
//! are cut at `[limits] http_body_timeout_ms` / `http_request_timeout_ms` (408, then the
//! connection closes), so they cannot exhaust `max_connections`; a streamed response (the
//! event stream) is not cut by the request timeout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::masters::{free_port, master_section, Node, TempDir, TOKEN};
use common::*;
use switchyard_router::transport::{HttpFuture, HttpMount, HttpService, ListenerConfig};
use switchyard_router::RouterConfig;

/// Sends a request head announcing a 100-byte body, then only 10 bytes of it.
fn stalled_post(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"a\": 1234"
    )
    .unwrap();
    s
}

/// Reads until the server closes the connection (bounded by 10 s); what it answered and when.
fn until_closed(mut s: TcpStream) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    assert!(
        r.is_ok(),
        "the stalled connection was still open after 10 s: {r:?}"
    );
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// Whether the server still holds `s` open: a read sees neither EOF nor a reset.
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_bodies_are_cut_and_cannot_exhaust_connections() {
    let dir = TempDir::new("http-limits");
    let port = free_port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n\
         [transport]\nmax_connections = 4\n\
         [limits]\nhttp_body_timeout_ms = 400\nhttp_request_timeout_ms = 1000\n{}",
        master_section("m", "", 1, 1, &[("b", "true")], "")
    );
    let node = Node::start(dir.path(), "m", port, &config);
    let addr = node.addr();

    // The event stream stays open past the request timeout: only the request side is bounded.
    let mut events = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    write!(
        events,
        "GET /api/v2/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
         Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();

    // A body that stalls on the REST API gets 408 once the body timeout passes.
    let (answer, took) = until_closed(stalled_post(addr, "/api/v2/forceschedulers/force"));
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer:?}");
    assert!(
        answer.contains("http_body_timeout_ms"),
        "answer: {answer:?}"
    );
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");

    // Many stalled bodies (twice max_connections) do not lock WAMP clients out.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| stalled_post(addr, "/api/v2/forceschedulers/force"))
        .collect();
    let started = Instant::now();
    let mut c = tokio::time::timeout(Duration::from_secs(5), async {
        let mut c = Client::websocket(&node.ws_url(), "wamp.2.json").await;
        c.join("realm1").await;
        c
    })
    .await
    .expect("a WAMP client could not join while stalled bodies were held");
    c.subscribe("com.still.works", opts(&[])).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for s in stalled {
        let (answer, _) = until_closed(s);
        assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer:?}");
    }

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut head = [0u8; 12];
    events.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(
        still_open(&mut events),
        "the event stream was cut by the request timeout"
    );
}

/// A service that reads its body without a deadline of its own (as a mounted service might).
struct Careless;

impl HttpService for Careless {
    fn call(&self, req: hyper::Request<hyper::body::Incoming>, _: SocketAddr) -> HttpFuture {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let n = req.into_body().collect().await.map(|b| b.to_bytes().len());
            hyper::Response::new(switchyard_router::transport::full_body(format!("{n:?}")))
        })
    }
}

#[tokio::test]
async fn the_request_timeout_bounds_a_service_that_waits_for_a_stalled_body() {
    let mut config = RouterConfig::default();
    config.limits.http_request_timeout = Duration::from_millis(300);
    config.limits.http_body_timeout = Duration::from_secs(60);
    let listener = ListenerConfig {
        http_mounts: vec![HttpMount::new("/careless", Arc::new(Careless))],
        ..ListenerConfig::default()
    };
    let r = TestRouter::with_listener(
        config,
        Arc::new(switchyard_router::auth::AllowAll),
        listener,
    )
    .await;
    let addr = r.addr;
    let (answer, took) =
        tokio::task::spawn_blocking(move || until_closed(stalled_post(addr, "/careless")))
            .await
            .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer:?}");
    assert!(
        answer.contains("http_request_timeout_ms"),
        "answer: {answer:?}"
    );
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
}
