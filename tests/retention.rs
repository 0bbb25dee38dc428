//! Event retention: `retain` on PUBLISH keeps the last event per topic; `get_retained` on
//! SUBSCRIBE replays what the subscription covers, marked `retained`, right after SUBSCRIBED.

mod common;

use std::time::Duration;

use common::*;
use switchyard_router::wire::{Dict, Message, Value};

#[tokio::test]
async fn retained_events_are_replayed_to_late_subscribers_who_ask() {
    let r = TestRouter::start().await;
    let (mut publisher, pub_id) = r.joined("wamp.2.json").await;
    publisher
        .publish(
            "com.example.state",
            opts(&[("retain", true.into())]),
            args(vec![Value::from("old")]),
        )
        .await;
    publisher
        .publish(
            "com.example.state",
            opts(&[
                ("retain", true.into()),
                ("disclose_me", true.into()),
                ("acknowledge", true.into()),
            ]),
            args(vec![Value::from("latest")]),
        )
        .await;
    // Acknowledged: both retained publishes have been routed before anyone subscribes.
    assert!(matches!(publisher.recv().await, Message::Published { .. }));
    // Not retained: never replayed.
    publisher
        .publish(
            "com.example.other",
            Dict::new(),
            args(vec![Value::from("x")]),
        )
        .await;

    let (mut late, _) = r.joined("wamp.2.msgpack").await;
    let sub = late
        .subscribe("com.example.state", opts(&[("get_retained", true.into())]))
        .await;
    match late.recv().await {
        Message::Event {
            subscription,
            details,
            payload,
            ..
        } => {
            assert_eq!(subscription, sub);
            assert_eq!(details["retained"], Value::Bool(true));
            assert_eq!(details["publisher"], Value::from(pub_id));
            assert_eq!(payload.args(), &[Value::from("latest")]);
        }
        other => panic!("{other:?}"),
    }
    late.expect_silence(Duration::from_millis(100)).await;

    // A prefix subscription gets the topic too; one without get_retained gets nothing.
    let (mut p, _) = r.joined("wamp.2.json").await;
    p.subscribe(
        "com.example.",
        opts(&[("match", "prefix".into()), ("get_retained", true.into())]),
    )
    .await;
    match p.recv().await {
        Message::Event { details, .. } => {
            assert_eq!(details["topic"], Value::from("com.example.state"))
        }
        other => panic!("{other:?}"),
    }
    let (mut plain, _) = r.joined("wamp.2.json").await;
    plain.subscribe("com.example.state", Dict::new()).await;
    plain.expect_silence(Duration::from_millis(100)).await;
}
