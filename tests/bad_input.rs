//! Bad input on both transports: each case gets the right ABORT or ERROR (or RawSocket
//! handshake error), the connection closes, and a bystander session keeps working.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use switchyard_router::wire::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::RouterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A subscriber and a publisher that must keep working whatever other sessions do.
struct Bystander {
    sub: Client,
    publ: Client,
    n: i64,
}

impl Bystander {
    async fn new(r: &TestRouter) -> Bystander {
        let (mut sub, _) = r.joined("wamp.2.msgpack").await;
        let (publ, _) = r.joined("wamp.2.json").await;
        sub.subscribe("com.bystander", Dict::new()).await;
        Bystander { sub, publ, n: 0 }
    }

    async fn still_fine(&mut self) {
        self.n += 1;
        self.publ
            .publish("com.bystander", Dict::new(), args(vec![Value::Int(self.n)]))
            .await;
        match self.sub.recv().await {
            Message::Event { payload, .. } => assert_eq!(payload.args(), &[Value::Int(self.n)]),
            other => panic!("bystander got {other:?}"),
        }
    }
}

async fn expect_violation(c: &mut Client) {
    assert_eq!(c.expect_abort().await, "wamp.error.protocol_violation");
    c.expect_closed().await;
}

#[tokio::test]
async fn protocol_violations_abort_only_the_offender() {
    let r = TestRouter::start().await;
    let mut by = Bystander::new(&r).await;

    // A message before HELLO.
    let mut c = r.client("wamp.2.json").await;
    c.send(&Message::Subscribe {
        request: 1,
        options: Dict::new(),
        topic: "a.b".into(),
    })
    .await;
    expect_violation(&mut c).await;
    by.still_fine().await;

    // A second HELLO.
    let (mut c, _) = r.joined("wamp.2.json").await;
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details: client_roles(),
    })
    .await;
    expect_violation(&mut c).await;
    by.still_fine().await;

    // Malformed JSON, unknown code, wrong types and counts, IDs out of range, router-only messages.
    let bad: [&str; 8] = [
        "[32, 1, {}, \"a.b\"",
        "[255, 1]",
        "{\"not\": \"a list\"}",
        "[32, \"one\", {}, \"a.b\"]",
        "[32, 1, {}]",
        "[32, 0, {}, \"a.b\"]",
        "[48, 9007199254740993, {}, \"a.b\"]",
        "[36, 1, 2, {}]",
    ];
    for text in bad {
        let (mut c, _) = r.joined("wamp.2.json").await;
        c.send_bytes(Bytes::from(text)).await;
        expect_violation(&mut c).await;
        by.still_fine().await;
    }

    // Garbage on binary serializers.
    for sp in ["wamp.2.msgpack", "wamp.2.cbor"] {
        let (mut c, _) = r.joined(sp).await;
        c.send_bytes(Bytes::from_static(&[0xc1, 0xff, 0x00])).await;
        expect_violation(&mut c).await;
    }

    // An empty batch.
    let (mut c, _) = r.joined("wamp.2.msgpack.batched").await;
    c.send_frame(Bytes::new()).await;
    expect_violation(&mut c).await;

    // ERROR for anything but an INVOCATION.
    let (mut c, _) = r.joined("wamp.2.json").await;
    c.send_bytes(Bytes::from("[8, 48, 1, {}, \"x.y\"]")).await;
    expect_violation(&mut c).await;
    by.still_fine().await;
}

#[tokio::test]
async fn hello_problems_are_aborted_with_reasons() {
    let r = TestRouter::start().await;
    let mut c = r.client("wamp.2.json").await;
    match c.hello("no.such.realm", client_roles()).await {
        Message::Abort { reason, details } => {
            assert_eq!(reason, "wamp.error.no_such_realm");
            assert!(details["message"]
                .as_str()
                .unwrap()
                .contains("no.such.realm"));
        }
        other => panic!("{other:?}"),
    }
    c.expect_closed().await;
    let mut c = r.client("wamp.2.json").await;
    assert_eq!(
        c.hello("realm1", Dict::new()).await,
        Message::abort(
            "wamp.error.protocol_violation",
            "HELLO.Details.roles must be a non-empty dict"
        )
    );
    let mut c = r.client("wamp.2.json").await;
    assert!(
        matches!(c.hello("bad realm", client_roles()).await, Message::Abort { reason, .. } if reason == "wamp.error.invalid_uri")
    );
}

#[tokio::test]
async fn goodbye_is_answered_and_the_transport_can_rejoin() {
    let r = TestRouter::start().await;
    let (mut c, first) = r.joined("wamp.2.json").await;
    c.subscribe("com.g", Dict::new()).await;
    c.send(&Message::Goodbye {
        details: Dict::new(),
        reason: "wamp.close.close_realm".into(),
    })
    .await;
    assert_eq!(
        c.recv().await,
        Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.goodbye_and_out".into()
        }
    );
    let realm = r.router.realm("realm1").unwrap();
    assert!(realm.session(first).is_none());
    assert!(
        realm.broker.subscriptions().is_empty(),
        "the session's subscriptions went with it"
    );
    let second = c.join("realm1").await;
    assert_ne!(first, second);
}

fn small_limits() -> RouterConfig {
    let mut config = RouterConfig::default();
    config.limits.max_message_size = 64 * 1024;
    config
}

#[tokio::test]
async fn oversize_websocket_message_is_refused() {
    let r = TestRouter::with_config(small_limits()).await;
    let mut by = Bystander::new(&r).await;
    let (mut c, _) = r.joined("wamp.2.msgpack").await;
    let big = Value::Bytes(Bytes::from(vec![7u8; 100 * 1024]));
    c.publish("com.big", Dict::new(), args(vec![big])).await;
    match c.recv_opt().await {
        Some(Message::Abort { reason, .. }) => {
            assert_eq!(reason, "wamp.error.payload_size_exceeded")
        }
        None => {} // the router may close before the ABORT can be read
        other => panic!("{other:?}"),
    }
    c.expect_closed().await;
    by.still_fine().await;
}

#[tokio::test]
async fn rawsocket_handshake_errors() {
    let r = TestRouter::start().await;
    // Serializer 4 (UBJSON) is not supported.
    let (_, reply) = raw_handshake(r.addr, [0x7f, 0xf4, 0, 0]).await;
    assert_eq!(reply, [0x7f, 0x10, 0, 0]);
    // Reserved bytes set.
    let (_, reply) = raw_handshake(r.addr, [0x7f, 0xf2, 0, 1]).await;
    assert_eq!(reply, [0x7f, 0x30, 0, 0]);
    // A good one echoes the serializer with the router's own length exponent.
    let (_, reply) = raw_handshake(r.addr, [0x7f, 0xa1, 0, 0]).await;
    assert_eq!(reply, [0x7f, 0xf1, 0, 0]);
}

#[tokio::test]
async fn rawsocket_pubsub_rpc_and_ping() {
    let r = TestRouter::start().await;
    for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        let mut sub = Client::rawsocket(r.addr, ser).await;
        sub.join("realm1").await;
        let mut callee = Client::rawsocket(r.addr, ser).await;
        callee.join("realm1").await;
        let (mut ws, _) = r.joined("wamp.2.json").await;
        sub.subscribe("com.raw", Dict::new()).await;
        callee.register("com.raw.echo", Dict::new()).await;
        ws.publish("com.raw", Dict::new(), args(vec![Value::from("hi")]))
            .await;
        assert!(
            matches!(sub.recv().await, Message::Event { payload, .. } if payload.args() == [Value::from("hi")])
        );
        let req = ws
            .call("com.raw.echo", Dict::new(), args(vec![Value::Int(5)]))
            .await;
        let inv = match callee.recv().await {
            Message::Invocation {
                request, payload, ..
            } => {
                assert_eq!(payload.args(), &[Value::Int(5)]);
                request
            }
            other => panic!("{other:?}"),
        };
        callee
            .send(&Message::Yield {
                request: inv,
                options: Dict::new(),
                payload: args(vec![Value::Int(6)]),
            })
            .await;
        assert!(
            matches!(ws.recv().await, Message::Result { request, payload, .. } if request == req && payload.args() == [Value::Int(6)])
        );
    }
    // PING gets a PONG with the same payload.
    let (mut s, _) = raw_handshake(r.addr, [0x7f, 0xf2, 0, 0]).await;
    s.write_all(&[1, 0, 0, 3, b'a', b'b', b'c']).await.unwrap();
    let mut pong = [0u8; 7];
    tokio::time::timeout(WAIT, s.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pong, [2, 0, 0, 3, b'a', b'b', b'c']);
}

#[tokio::test]
async fn rawsocket_bad_frames() {
    let r = TestRouter::with_config(small_limits()).await;
    let mut by = Bystander::new(&r).await;
    // A frame longer than the router announced (2^(9+L) with L from 64 KiB = 2^16).
    let (mut s, reply) = raw_handshake(r.addr, [0x7f, 0xf2, 0, 0]).await;
    assert_eq!(reply[1] >> 4, 7);
    s.write_all(&[0, 0x01, 0x00, 0x01]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap();
    let abort = Serializer::MsgPack.decode(&buf[4..]).unwrap();
    assert!(
        matches!(abort, Message::Abort { reason, .. } if reason == "wamp.error.payload_size_exceeded")
    );
    // Reserved bits in a frame header, and an unknown frame type.
    for header in [[0x80u8, 0, 0, 0], [0x05, 0, 0, 0]] {
        let (mut s, _) = raw_handshake(r.addr, [0x7f, 0xf1, 0, 0]).await;
        s.write_all(&header).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
            .await
            .unwrap();
        let abort = Serializer::Json.decode(&buf[4..]).unwrap();
        assert!(
            matches!(abort, Message::Abort { reason, .. } if reason == "wamp.error.protocol_violation")
        );
    }
    by.still_fine().await;
}

#[tokio::test]
async fn silent_connections_are_dropped_after_the_handshake_timeout() {
    let mut config = RouterConfig::default();
    config.limits.handshake_timeout = Duration::from_millis(300);
    let r = TestRouter::with_config(config).await;
    // TCP with no bytes at all.
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    // A WebSocket that never says HELLO.
    let mut c = r.client("wamp.2.json").await;
    assert_eq!(c.expect_abort().await, "wamp.error.protocol_violation");
    c.expect_closed().await;
}

#[tokio::test]
async fn idle_websockets_are_pinged_and_dropped_without_a_pong() {
    let mut config = RouterConfig::default();
    config.limits.ping_interval = Some(Duration::from_millis(200));
    config.limits.ping_timeout = Duration::from_millis(300);
    let r = TestRouter::with_config(config).await;
    // A client that keeps reading answers the router's pings (tungstenite does): it stays.
    let (mut alive, _) = r.joined("wamp.2.json").await;
    // A client that reads nothing answers none: it is dropped after ping + timeout.
    let (mut mute, _) = r.joined("wamp.2.json").await;
    alive.expect_silence(Duration::from_millis(1500)).await;
    alive.subscribe("com.example.still.here", Dict::new()).await;
    mute.expect_closed().await;
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_memory_stays_bounded() {
    let mut config = RouterConfig::default();
    config.limits.queue.soft_bytes = 256 * 1024;
    config.limits.queue.hard_bytes = 1024 * 1024;
    config.limits.queue.slow_consumer_timeout = Duration::from_millis(200);
    let r = TestRouter::with_config(config).await;
    let mut by = Bystander::new(&r).await;
    // The slow subscriber joins and subscribes, then never reads again.
    let (mut slow, slow_id) = r.joined("wamp.2.msgpack").await;
    slow.subscribe("com.firehose", Dict::new()).await;
    let (mut publ, _) = r.joined("wamp.2.msgpack").await;
    let realm = r.router.realm("realm1").unwrap();
    let chunk = Value::Bytes(Bytes::from(vec![1u8; 16 * 1024]));
    let mut cut_off = false;
    // Bounded: at most 4,000 × 16 KiB (64 MiB) or 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0..4000 {
        publ.publish("com.firehose", Dict::new(), args(vec![chunk.clone()]))
            .await;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if realm.session(slow_id).is_none() {
                cut_off = true;
                break;
            }
            if let Some(s) = realm.session(slow_id) {
                if let switchyard_router::session::Link::Remote { queue, .. } = &s.link {
                    assert!(
                        queue.queued_bytes() <= 1024 * 1024 + 32 * 1024,
                        "queue beyond its hard limit"
                    );
                }
            }
        }
        if std::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(cut_off, "the slow consumer was never disconnected");
    by.still_fine().await;
    // The publisher is unaffected.
    let req = publ
        .publish(
            "com.firehose",
            opts(&[("acknowledge", true.into())]),
            Payload::default(),
        )
        .await;
    assert!(matches!(publ.recv().await, Message::Published { request, .. } if request == req));
    drop(slow);
}

#[tokio::test]
async fn http_paths_and_subprotocol_negotiation() {
    let r = TestRouter::start().await;
    let get = |path: &str, extra: &str| {
        let addr = r.addr;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            tokio::time::timeout(WAIT, s.read_to_string(&mut out))
                .await
                .unwrap()
                .unwrap();
            out
        }
    };
    assert!(get("/", "").await.starts_with("HTTP/1.1 200"));
    assert!(get("/ws", "").await.starts_with("HTTP/1.1 426"));
    assert!(get("/nope", "").await.starts_with("HTTP/1.1 404"));
    let resp = get(
        "/ws",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("wamp.2.json"),
        "the error lists what is supported: {resp}"
    );
    // Buildbot's offer order: the first one switchyard speaks wins.
    let c = Client::websocket(
        &r.url(),
        "wamp.2.cbor.batched, wamp.2.cbor, wamp.2.msgpack.batched, wamp.2.msgpack, wamp.2.json.batched, wamp.2.json",
    )
    .await;
    assert_eq!(c.codec.subprotocol(), "wamp.2.cbor.batched");
}
