//! Broker behaviour over real WebSocket connections: match policies, exclusion, eligibility,
//! disclosure, acknowledgements, and binary payloads across serializers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use switchyard_router::wire::{code, Dict, Message, Payload, Value};

const SUBPROTOCOLS: [&str; 6] = [
    "wamp.2.json",
    "wamp.2.msgpack",
    "wamp.2.cbor",
    "wamp.2.json.batched",
    "wamp.2.msgpack.batched",
    "wamp.2.cbor.batched",
];

#[tokio::test]
async fn welcome_announces_roles_for_every_subprotocol() {
    let r = TestRouter::start().await;
    for sp in SUBPROTOCOLS {
        let mut c = r.client(sp).await;
        assert_eq!(c.codec.subprotocol(), sp);
        match c.hello("realm1", client_roles()).await {
            Message::Welcome { session, details } => {
                assert!((1..=1u64 << 53).contains(&session));
                assert_eq!(details["realm"], Value::from("realm1"));
                assert_eq!(details["authrole"], Value::from("anonymous"));
                assert_eq!(details["authmethod"], Value::from("anonymous"));
                let roles = details["roles"].as_dict().unwrap();
                let broker = roles["broker"].as_dict().unwrap()["features"]
                    .as_dict()
                    .unwrap();
                let dealer = roles["dealer"].as_dict().unwrap()["features"]
                    .as_dict()
                    .unwrap();
                for f in [
                    "pattern_based_subscription",
                    "publisher_exclusion",
                    "subscriber_blackwhite_listing",
                ] {
                    assert_eq!(broker[f], Value::Bool(true), "{sp}: broker {f}");
                }
                for f in [
                    "progressive_call_results",
                    "call_canceling",
                    "call_timeout",
                    "shared_registration",
                ] {
                    assert_eq!(dealer[f], Value::Bool(true), "{sp}: dealer {f}");
                }
            }
            other => panic!("{sp}: expected WELCOME, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn exact_subscription_receives_events_in_order_on_every_subprotocol() {
    let r = TestRouter::start().await;
    for sp in SUBPROTOCOLS {
        let (mut sub, _) = r.joined(sp).await;
        let (mut publ, _) = r.joined("wamp.2.json").await;
        let sid = sub.subscribe("com.example.topic", Dict::new()).await;
        for i in 0..50 {
            publ.publish("com.example.topic", Dict::new(), args(vec![Value::Int(i)]))
                .await;
        }
        for i in 0..50 {
            match sub.recv().await {
                Message::Event {
                    subscription,
                    details,
                    payload,
                    ..
                } => {
                    assert_eq!(subscription, sid);
                    assert!(
                        !details.contains_key("topic"),
                        "exact events carry no topic"
                    );
                    assert_eq!(payload.args(), &[Value::Int(i)], "{sp}");
                }
                other => panic!("{sp}: expected EVENT, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn prefix_and_wildcard_events_carry_the_topic_and_share_ids() {
    let r = TestRouter::start().await;
    let (mut a, _) = r.joined("wamp.2.msgpack").await;
    let (mut b, _) = r.joined("wamp.2.cbor").await;
    let (mut publ, _) = r.joined("wamp.2.json").await;
    let wild = opts(&[("match", "wildcard".into())]);
    let prefix = opts(&[("match", "prefix".into())]);
    let a_wild = a
        .subscribe("org.buildbot.mq.buildrequests..new", wild.clone())
        .await;
    let b_wild = b
        .subscribe("org.buildbot.mq.buildrequests..new", wild)
        .await;
    assert_eq!(
        a_wild, b_wild,
        "same pattern and policy share a subscription ID"
    );
    let b_prefix = b.subscribe("org.buildbot.mq", prefix).await;
    assert_ne!(b_prefix, b_wild);

    publ.publish(
        "org.buildbot.mq.buildrequests.42.new",
        Dict::new(),
        args(vec!["x".into()]),
    )
    .await;
    match a.recv().await {
        Message::Event {
            subscription,
            details,
            ..
        } => {
            assert_eq!(subscription, a_wild);
            assert_eq!(
                details["topic"],
                Value::from("org.buildbot.mq.buildrequests.42.new")
            );
        }
        other => panic!("{other:?}"),
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        match b.recv().await {
            Message::Event {
                subscription,
                details,
                ..
            } => {
                assert_eq!(
                    details["topic"],
                    Value::from("org.buildbot.mq.buildrequests.42.new")
                );
                got.push(subscription);
            }
            other => panic!("{other:?}"),
        }
    }
    got.sort();
    let mut want = vec![b_wild, b_prefix];
    want.sort();
    assert_eq!(got, want, "one EVENT per matching subscription");

    // A wildcard component matches exactly one component; prefix is a string prefix.
    publ.publish(
        "org.buildbot.mq.buildrequests.42.claimed",
        Dict::new(),
        Payload::default(),
    )
    .await;
    publ.publish("org.buildbot.mqx", Dict::new(), Payload::default())
        .await;
    for topic in [
        "org.buildbot.mq.buildrequests.42.claimed",
        "org.buildbot.mqx",
    ] {
        match b.recv().await {
            Message::Event {
                subscription,
                details,
                ..
            } => {
                assert_eq!(subscription, b_prefix);
                assert_eq!(details["topic"], Value::from(topic));
            }
            other => panic!("{other:?}"),
        }
    }
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn publisher_exclusion_and_acknowledge() {
    let r = TestRouter::start().await;
    let (mut c, _) = r.joined("wamp.2.json").await;
    c.subscribe("com.me", Dict::new()).await;
    // Default exclude_me=true: no event back; acknowledge gives PUBLISHED.
    let req = c
        .publish(
            "com.me",
            opts(&[("acknowledge", true.into())]),
            Payload::default(),
        )
        .await;
    match c.recv().await {
        Message::Published {
            request,
            publication,
        } => {
            assert_eq!(request, req);
            assert!((1..=1u64 << 53).contains(&publication));
        }
        other => panic!("{other:?}"),
    }
    c.expect_silence(Duration::from_millis(200)).await;
    // exclude_me=false (what Buildbot masters send): the publisher gets its own event.
    c.publish(
        "com.me",
        opts(&[("exclude_me", false.into())]),
        args(vec![Value::Int(1)]),
    )
    .await;
    assert!(matches!(c.recv().await, Message::Event { .. }));
}

#[tokio::test]
async fn eligible_and_exclude_by_session_authid_authrole() {
    let r = TestRouter::start().await;
    let (mut publ, _) = r.joined("wamp.2.json").await;
    let (mut s1, id1) = r.joined("wamp.2.json").await;
    let (mut s2, id2) = r.joined("wamp.2.msgpack").await;
    s1.subscribe("com.t", Dict::new()).await;
    s2.subscribe("com.t", Dict::new()).await;

    publ.publish(
        "com.t",
        opts(&[("eligible", Value::List(vec![id2.into()]))]),
        args(vec![1u64.into()]),
    )
    .await;
    publ.publish(
        "com.t",
        opts(&[("exclude", Value::List(vec![id2.into()]))]),
        args(vec![2u64.into()]),
    )
    .await;
    publ.publish(
        "com.t",
        opts(&[("exclude_authrole", Value::List(vec!["anonymous".into()]))]),
        args(vec![3u64.into()]),
    )
    .await;
    publ.publish(
        "com.t",
        opts(&[("eligible_authrole", Value::List(vec!["anonymous".into()]))]),
        args(vec![4u64.into()]),
    )
    .await;
    let first = |m: Message| match m {
        Message::Event { payload, .. } => payload.args()[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(first(s1.recv().await), Value::Int(2));
    assert_eq!(first(s1.recv().await), Value::Int(4));
    assert_eq!(first(s2.recv().await), Value::Int(1));
    assert_eq!(first(s2.recv().await), Value::Int(4));
    s1.expect_silence(Duration::from_millis(100)).await;
    s2.expect_silence(Duration::from_millis(100)).await;
    let _ = id1;

    // A malformed list is refused (with acknowledge) and delivers nothing.
    let req = publ
        .publish(
            "com.t",
            opts(&[("acknowledge", true.into()), ("eligible", "nope".into())]),
            Payload::default(),
        )
        .await;
    assert_eq!(
        publ.expect_error(code::PUBLISH, req).await,
        "wamp.error.invalid_argument"
    );
    s1.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn disclose_me_identifies_the_publisher() {
    let r = TestRouter::start().await;
    let (mut publ, pid) = r.joined("wamp.2.json").await;
    let (mut sub, _) = r.joined("wamp.2.json").await;
    sub.subscribe("com.d", Dict::new()).await;
    publ.publish(
        "com.d",
        opts(&[("disclose_me", true.into())]),
        Payload::default(),
    )
    .await;
    match sub.recv().await {
        Message::Event { details, .. } => {
            assert_eq!(details["publisher"], Value::from(pid));
            assert_eq!(details["publisher_authrole"], Value::from("anonymous"));
            assert!(details.contains_key("publisher_authid"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_unknown_ids_are_errors() {
    let r = TestRouter::start().await;
    let (mut sub, _) = r.joined("wamp.2.json").await;
    let (mut publ, _) = r.joined("wamp.2.json").await;
    let sid = sub.subscribe("com.u", Dict::new()).await;
    let req = sub.request_id();
    sub.send(&Message::Unsubscribe {
        request: req,
        subscription: sid,
    })
    .await;
    assert_eq!(
        sub.recv().await,
        Message::Unsubscribed {
            request: req,
            details: None
        }
    );
    publ.publish("com.u", Dict::new(), Payload::default()).await;
    sub.expect_silence(Duration::from_millis(200)).await;
    let req = sub.request_id();
    sub.send(&Message::Unsubscribe {
        request: req,
        subscription: sid,
    })
    .await;
    assert_eq!(
        sub.expect_error(code::UNSUBSCRIBE, req).await,
        "wamp.error.no_such_subscription"
    );
    assert!(r
        .router
        .realm("realm1")
        .unwrap()
        .broker
        .subscriptions()
        .is_empty());
}

#[tokio::test]
async fn invalid_and_reserved_uris_are_refused() {
    let r = TestRouter::start().await;
    let (mut c, _) = r.joined("wamp.2.json").await;
    for topic in ["com..bad", "com.bad topic", "com.#"] {
        let req = c.request_id();
        c.send(&Message::Subscribe {
            request: req,
            options: Dict::new(),
            topic: topic.into(),
        })
        .await;
        assert_eq!(
            c.expect_error(code::SUBSCRIBE, req).await,
            "wamp.error.invalid_uri",
            "{topic}"
        );
    }
    let req = c
        .publish(
            "com..x",
            opts(&[("acknowledge", true.into())]),
            Payload::default(),
        )
        .await;
    assert_eq!(
        c.expect_error(code::PUBLISH, req).await,
        "wamp.error.invalid_uri"
    );
    let req = c
        .publish(
            "wamp.session.on_join",
            opts(&[("acknowledge", true.into())]),
            Payload::default(),
        )
        .await;
    assert_eq!(
        c.expect_error(code::PUBLISH, req).await,
        "wamp.error.invalid_uri"
    );
    let req = c.request_id();
    c.send(&Message::Subscribe {
        request: req,
        options: opts(&[("match", "regex".into())]),
        topic: "a".into(),
    })
    .await;
    assert_eq!(
        c.expect_error(code::SUBSCRIBE, req).await,
        "wamp.error.invalid_argument"
    );
    // The session is still usable.
    c.subscribe("com.fine", Dict::new()).await;
}

#[tokio::test]
async fn strict_realm_rejects_loose_uris() {
    let mut config = switchyard_router::RouterConfig::default();
    config.realms[0].uri_check = switchyard_router::uri::UriCheck::Strict;
    let r = TestRouter::with_config(config).await;
    let (mut c, _) = r.joined("wamp.2.json").await;
    let req = c.request_id();
    c.send(&Message::Subscribe {
        request: req,
        options: Dict::new(),
        topic: "com.Example-Topic".into(),
    })
    .await;
    assert_eq!(
        c.expect_error(code::SUBSCRIBE, req).await,
        "wamp.error.invalid_uri"
    );
    c.subscribe("com.example_topic", Dict::new()).await;
}

#[tokio::test]
async fn binary_payloads_convert_across_serializers() {
    let r = TestRouter::start().await;
    let (mut json, _) = r.joined("wamp.2.json").await;
    let (mut mp, _) = r.joined("wamp.2.msgpack").await;
    let (mut cbor, _) = r.joined("wamp.2.cbor.batched").await;
    for c in [&mut json, &mut mp, &mut cbor] {
        c.subscribe("com.bin", Dict::new()).await;
    }
    let blob = Bytes::from_static(b"\x00\x01\x02binary\xfe\xff");
    let mut kw = Dict::new();
    kw.insert("blob".into(), Value::Bytes(blob.clone()));
    // The JSON publisher sends the "\u0000"+base64 form, written by hand.
    let raw = format!(
        r#"[16, 99, {{"exclude_me": false}}, "com.bin", ["\u0000{}"], {{"blob": "\u0000{}"}}]"#,
        "AAECYmluYXJ5/v8=", "AAECYmluYXJ5/v8="
    );
    json.send_bytes(Bytes::from(raw)).await;
    for c in [&mut json, &mut mp, &mut cbor] {
        match c.recv().await {
            Message::Event { payload, .. } => {
                assert_eq!(
                    payload.args(),
                    &[Value::Bytes(blob.clone())],
                    "{:?}",
                    c.codec
                );
                assert_eq!(payload.kwargs(), Some(&kw));
            }
            other => panic!("{other:?}"),
        }
    }
    // And back: a MsgPack publisher's bin arrives at the JSON subscriber as "\u0000"+base64.
    mp.publish(
        "com.bin",
        Dict::new(),
        Payload::new(vec![Value::Bytes(blob.clone())], Dict::new()),
    )
    .await;
    assert!(
        matches!(json.recv().await, Message::Event { payload, .. } if payload.args() == [Value::Bytes(blob.clone())])
    );
}
