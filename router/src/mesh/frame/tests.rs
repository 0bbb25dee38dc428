//! Round trips, older peers' frames, malformed frames.

use super::*;

#[test]
fn frames_round_trip_with_binary_payloads() {
    let mut kw = Dict::new();
    kw.insert("b".into(), Value::Bytes(Bytes::from_static(b"\0\x01")));
    let frames = vec![
        Frame::Hello {
            node: "a".into(),
            incarnation: u64::MAX,
            url: "ws://x/mesh".into(),
            nonce: Bytes::from_static(b"nonce"),
            features: features(),
        },
        Frame::SubAdd {
            realm: "r".into(),
            policy: MatchPolicy::Prefix,
            topic: "a.b".into(),
            meta: Some((5, "2025-01-01T00:00:00.000Z".into())),
        },
        Frame::SubAdd {
            realm: "r".into(),
            policy: MatchPolicy::Exact,
            topic: "a.b".into(),
            meta: None,
        },
        Frame::SessionAdd {
            realm: "r".into(),
            session: MAX_ID,
            authid: "joe".into(),
            authrole: "user".into(),
            authmethod: "ticket".into(),
            authprovider: "static".into(),
            transport: {
                let mut t = Dict::new();
                t.insert("peer".into(), Value::from("tcp4:127.0.0.1:5"));
                t
            },
        },
        Frame::SessionDel {
            realm: "r".into(),
            session: 1,
        },
        Frame::SubscriberAdd {
            realm: "r".into(),
            subscription: 5,
            session: 6,
        },
        Frame::SubscriberDel {
            realm: "r".into(),
            subscription: 5,
            session: 6,
        },
        Frame::Peers(vec![("b".into(), "ws://b/mesh".into())]),
        Frame::RegAdd {
            realm: "r".into(),
            registration: 7,
            callee: 9,
            policy: MatchPolicy::Wildcard,
            procedure: "a..c".into(),
            invoke: InvokePolicy::RoundRobin,
            created_ms: 123,
            by: Some(Principal {
                authid: "w1".into(),
                authrole: "switchyard.worker".into(),
            }),
        },
        Frame::Call {
            realm: "r".into(),
            proxy: 3,
            request: 4,
            registration: 7,
            callee: 9,
            procedure: "a.b.c".into(),
            details: Dict::new(),
            payload: Payload::new(vec![Value::from(2u64)], Dict::new()),
            by: Some(Principal {
                authid: "master:m1".into(),
                authrole: "trusted".into(),
            }),
        },
        Frame::Publish {
            realm: "r".into(),
            publication: 1,
            topic: "t".into(),
            options: Dict::new(),
            publisher: 2,
            authid: "x".into(),
            authrole: "y".into(),
            payload: Payload::new(vec![Value::from(1u64)], kw),
        },
    ];
    for f in frames {
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
    }
}

#[test]
fn fence_and_kill_frames_round_trip() {
    use crate::kill::{KillOrder, KillTarget};
    let order = |target, except| KillOrder {
        target,
        reason: "wamp.close.killed".into(),
        message: Some("bye".into()),
        except,
    };
    let frames = vec![
        Frame::Fence { seq: 7 },
        Frame::Fenced {
            seq: u64::MAX >> 11,
        },
        Frame::Kill {
            realm: "r".into(),
            request: 1,
            order: order(KillTarget::Session(42), None),
            by: Some(Principal {
                authid: "a".into(),
                authrole: "user".into(),
            }),
        },
        Frame::Kill {
            realm: "r".into(),
            request: 2,
            order: KillOrder {
                message: None,
                ..order(KillTarget::Authid("joe".into()), Some(5))
            },
            by: None,
        },
        Frame::Kill {
            realm: "r".into(),
            request: 3,
            order: order(KillTarget::Authrole("guest".into()), None),
            by: None,
        },
        Frame::Kill {
            realm: "r".into(),
            request: 4,
            order: order(KillTarget::All, Some(9)),
            by: None,
        },
        Frame::Killed {
            realm: "r".into(),
            request: 4,
            sessions: vec![1, 2],
            error: None,
        },
        Frame::Killed {
            realm: "r".into(),
            request: 5,
            sessions: vec![],
            error: Some("wamp.error.not_authorized".into()),
        },
    ];
    for f in frames {
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
    }
    let bad = encode_list(vec![
        Value::from("kill"),
        Value::from("r"),
        Value::from(1u64),
        Value::from("session"),
        Value::from(0u64),
    ]);
    assert!(Frame::decode(&bad)
        .unwrap_err()
        .to_string()
        .contains("session must be an ID"));
}

fn encode_list(items: Vec<Value>) -> Vec<u8> {
    rmp_serde::to_vec(&ValueSer(&Value::List(items), BinaryForm::Native)).unwrap()
}

#[test]
fn older_peers_frames_decode_without_the_appended_fields() {
    let s = |v: &str| Value::from(v);
    let hello = encode_list(vec![
        s("hello"),
        s("a"),
        Value::from(1u64),
        s("ws://a/mesh"),
        Value::Bytes(Bytes::from_static(b"n")),
    ]);
    match Frame::decode(&hello).unwrap() {
        Frame::Hello { features, .. } => assert!(features.is_empty()),
        other => panic!("{other:?}"),
    }
    let sub = encode_list(vec![s("sub+"), s("r"), s("exact"), s("t")]);
    match Frame::decode(&sub).unwrap() {
        Frame::SubAdd { meta, .. } => assert_eq!(meta, None),
        other => panic!("{other:?}"),
    }
    let reg = encode_list(vec![
        s("reg+"),
        s("r"),
        Value::from(1u64),
        Value::from(2u64),
        s("exact"),
        s("p"),
        s("single"),
        Value::from(5u64),
    ]);
    match Frame::decode(&reg).unwrap() {
        Frame::RegAdd { by, .. } => assert_eq!(by, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_meta_frames_are_errors_naming_the_cause() {
    let s = |v: &str| Value::from(v);
    let cases = [
        (
            vec![s("session+"), s("r"), Value::from(0u64)],
            "session must be an ID",
        ),
        (
            vec![s("session-"), s("r"), Value::from(MAX_ID + 1)],
            "session must be an ID",
        ),
        (
            vec![s("session+"), s("r"), Value::from(3u64), Value::from(7u64)],
            "expected a string",
        ),
        (
            vec![s("subscriber+"), s("r"), s("x"), Value::from(1u64)],
            "subscription must be an ID",
        ),
        (
            vec![s("sub+"), s("r"), s("exact"), s("t"), Value::from(9u64)],
            "too few elements",
        ),
        (
            vec![
                s("hello"),
                s("a"),
                Value::from(1u64),
                s("u"),
                Value::Bytes(Bytes::new()),
                s("x"),
            ],
            "features",
        ),
    ];
    for (items, want) in cases {
        let e = Frame::decode(&encode_list(items.clone())).unwrap_err();
        assert!(e.to_string().contains(want), "{items:?}: {e}");
    }
}
