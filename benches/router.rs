//! Criterion micro-benchmarks of the router's hot paths: decode and encode per serializer,
//! URI matching with 100,000 subscriptions, one publish fanned out to 1..1000 sessions, and
//! one PUBLISH and one CALL through the session state machine (in-process sessions: the
//! protocol's checks, authorization and routing, no sockets).
//!
//! `cargo bench --bench router` (add `-- --quick` for a fast pass).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_router::broker::Broker;
use switchyard_router::matcher::UriIndex;
use switchyard_router::outbound::{Queue, QueueLimits};
use switchyard_router::session::{Link, PeerFeatures, Session, SessionHandle, SessionInfo};
use switchyard_router::uri::MatchPolicy;
use switchyard_router::wire::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::{LocalSession, RealmConfig, Router, RouterConfig};

fn event(size: usize) -> Message {
    let mut kw = Dict::new();
    kw.insert("builderid".into(), Value::Int(7));
    kw.insert("state".into(), Value::from("building"));
    Message::Publish {
        request: 12345,
        options: Dict::new(),
        topic: "org.buildbot.mq.builds.42.update".into(),
        payload: Payload::new(vec![Value::Bytes(Bytes::from(vec![0x5au8; size]))], kw),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        for size in [64usize, 4096] {
            let msg = event(size);
            let bytes = ser.encode(&msg).unwrap();
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(
                BenchmarkId::new(format!("decode/{ser}"), size),
                &bytes,
                |b, bytes| b.iter(|| black_box(ser.decode(black_box(bytes)).unwrap())),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("encode/{ser}"), size),
                &msg,
                |b, msg| b.iter(|| black_box(ser.encode(black_box(msg)).unwrap())),
            );
        }
    }
    g.finish();
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match_100k");
    let n = 100_000u32;
    let mut exact = UriIndex::default();
    let mut prefix = UriIndex::default();
    let mut wildcard = UriIndex::default();
    for i in 0..n {
        exact.insert(MatchPolicy::Exact, &format!("com.app.topic{i}.update"), i);
        prefix.insert(MatchPolicy::Prefix, &format!("com.app.t{i}"), i);
        wildcard.insert(MatchPolicy::Wildcard, &format!("com.app..t{i}"), i);
    }
    let count = |idx: &UriIndex<u32>, uri: &str| {
        let mut k = 0;
        idx.for_each_match(uri, |_, _| k += 1);
        k
    };
    g.bench_function("exact", |b| {
        b.iter(|| black_box(count(&exact, black_box("com.app.topic77777.update"))))
    });
    g.bench_function("prefix", |b| {
        b.iter(|| black_box(count(&prefix, black_box("com.app.t77777.x.y"))))
    });
    g.bench_function("wildcard", |b| {
        b.iter(|| black_box(count(&wildcard, black_box("com.app.x.t77777"))))
    });
    g.bench_function("miss_all_three", |b| {
        b.iter(|| {
            black_box(
                count(&exact, "org.other.x")
                    + count(&prefix, "org.other.x")
                    + count(&wildcard, "org.other.x"),
            )
        })
    });
    g.finish();
}

fn session(id: u64, queue: Arc<Queue<Bytes>>) -> SessionHandle {
    let info = SessionInfo {
        id,
        realm: "realm1".into(),
        authid: format!("s{id}"),
        authrole: "anonymous".into(),
        authmethod: "anonymous".into(),
        authprovider: "static".into(),
        internal: false,
        transport: "bench".into(),
    };
    let ser = if id % 2 == 0 {
        Serializer::MsgPack
    } else {
        Serializer::Json
    };
    Session::new(
        info,
        PeerFeatures::default(),
        Link::Remote {
            serializer: ser,
            queue,
        },
    )
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_fanout");
    for subscribers in [1usize, 10, 100, 1000] {
        let broker = Broker::default();
        let limits = QueueLimits {
            max_messages: usize::MAX,
            hard_bytes: usize::MAX,
            soft_bytes: usize::MAX,
            ..Default::default()
        };
        let queues: Vec<Arc<Queue<Bytes>>> = (0..subscribers)
            .map(|_| Arc::new(Queue::new(limits.clone())))
            .collect();
        for (i, q) in queues.iter().enumerate() {
            broker.subscribe(
                &session(i as u64 + 10, q.clone()),
                1,
                MatchPolicy::Exact,
                "com.fan",
            );
        }
        let publisher = session(1, Arc::new(Queue::new(limits.clone())));
        let payload = Payload::new(vec![Value::Bytes(Bytes::from(vec![1u8; 64]))], Dict::new());
        let mut sink = std::collections::VecDeque::new();
        g.throughput(Throughput::Elements(subscribers as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    broker
                        .publish(&publisher, "com.fan", &Dict::new(), payload.clone())
                        .unwrap();
                    for q in &queues {
                        q.drain_now(&mut sink);
                    }
                    sink.clear();
                })
            },
        );
    }
    g.finish();
}

/// The next message already queued for `s`.
fn next(s: &mut LocalSession) -> Message {
    futures_util::FutureExt::now_or_never(s.recv())
        .flatten()
        .expect("a queued message")
}

/// PUBLISH to one subscriber, and CALL → INVOCATION → YIELD → RESULT, each through
/// `Connection::handle` of ordinary (authorized, counted) in-process sessions.
fn protocol(c: &mut Criterion) {
    let router = Router::new(RouterConfig {
        realms: vec![RealmConfig::new("bench")],
        ..Default::default()
    });
    let session = |name: &str| {
        router
            .connect_local_untrusted("bench", name, "anonymous")
            .unwrap()
    };
    let (mut publisher, mut subscriber) = (session("pub"), session("sub"));
    let (mut caller, mut callee) = (session("caller"), session("callee"));
    subscriber.send(Message::Subscribe {
        request: 1,
        options: Dict::new(),
        topic: "com.bench.topic".into(),
    });
    next(&mut subscriber);
    callee.send(Message::Register {
        request: 1,
        options: Dict::new(),
        procedure: "com.bench.echo".into(),
    });
    next(&mut callee);
    let payload = Payload::new(vec![Value::Bytes(Bytes::from(vec![1u8; 64]))], Dict::new());
    let mut g = c.benchmark_group("protocol");
    g.bench_function("publish_1_subscriber", |b| {
        let mut request = 0;
        b.iter(|| {
            request += 1;
            publisher.send(Message::Publish {
                request,
                options: Dict::new(),
                topic: "com.bench.topic".into(),
                payload: payload.clone(),
            });
            black_box(next(&mut subscriber));
        })
    });
    g.bench_function("call_and_yield", |b| {
        let mut request = 0;
        b.iter(|| {
            request += 1;
            caller.send(Message::Call {
                request,
                options: Dict::new(),
                procedure: "com.bench.echo".into(),
                payload: payload.clone(),
            });
            let Message::Invocation { request: inv, .. } = next(&mut callee) else {
                panic!("INVOCATION expected");
            };
            callee.send(Message::Yield {
                request: inv,
                options: Dict::new(),
                payload: payload.clone(),
            });
            black_box(next(&mut caller));
        })
    });
    g.finish();
}

criterion_group!(benches, codec, matching, fanout, protocol);
criterion_main!(benches);
