//! In-process sessions are first-class: they publish, subscribe, call and register with
//! socket sessions, with no serialization on their side.

mod common;

use common::*;
use switchyard_router::protocol::Flow;
use switchyard_router::wire::{Dict, Message, Value};

#[tokio::test]
async fn local_and_remote_sessions_talk_both_ways() {
    let r = TestRouter::start().await;
    let mut local = r
        .router
        .connect_local("realm1", "master-1", "master")
        .unwrap();
    let local_id = local.session().unwrap().id();
    let (mut remote, _) = r.joined("wamp.2.msgpack").await;

    // Local subscribes, remote publishes.
    assert_eq!(
        local.send(Message::Subscribe {
            request: 1,
            options: Dict::new(),
            topic: "com.in".into()
        }),
        Flow::Continue
    );
    let sid = match local.recv().await.unwrap() {
        Message::Subscribed {
            request: 1,
            subscription,
        } => subscription,
        other => panic!("{other:?}"),
    };
    remote
        .publish("com.in", Dict::new(), args(vec![Value::from("to local")]))
        .await;
    match local.recv().await.unwrap() {
        Message::Event {
            subscription,
            payload,
            ..
        } => {
            assert_eq!(subscription, sid);
            assert_eq!(payload.args(), &[Value::from("to local")]);
        }
        other => panic!("{other:?}"),
    }

    // Local registers (in the reserved namespace, which only in-process code may use).
    local.send(Message::Register {
        request: 2,
        options: Dict::new(),
        procedure: "wamp.example.echo".into(),
    });
    assert!(matches!(
        local.recv().await.unwrap(),
        Message::Registered { request: 2, .. }
    ));
    let req = remote
        .call(
            "wamp.example.echo",
            opts(&[("disclose_me", true.into())]),
            args(vec![Value::Int(9)]),
        )
        .await;
    let inv = match local.recv().await.unwrap() {
        Message::Invocation {
            request,
            payload,
            details,
            ..
        } => {
            assert_eq!(payload.args(), &[Value::Int(9)]);
            assert!(details.contains_key("caller"));
            request
        }
        other => panic!("{other:?}"),
    };
    local.send(Message::Yield {
        request: inv,
        options: Dict::new(),
        payload: args(vec![Value::Int(10)]),
    });
    assert!(
        matches!(remote.recv().await, Message::Result { request, payload, .. } if request == req && payload.args() == [Value::Int(10)])
    );

    // Remote subscribes, local publishes; the remote sees the local session's identity.
    remote.subscribe("com.out", Dict::new()).await;
    local.send(Message::Publish {
        request: 3,
        options: opts(&[("disclose_me", true.into())]),
        topic: "com.out".into(),
        payload: args(vec![]),
    });
    match remote.recv().await {
        Message::Event { details, .. } => {
            assert_eq!(details["publisher"], Value::from(local_id));
            assert_eq!(details["publisher_authid"], Value::from("master-1"));
        }
        other => panic!("{other:?}"),
    }

    // Dropping the local session cleans up after it.
    drop(local);
    let req = remote
        .call("wamp.example.echo", Dict::new(), args(vec![]))
        .await;
    assert_eq!(
        remote
            .expect_error(switchyard_router::wire::code::CALL, req)
            .await,
        "wamp.error.no_such_procedure"
    );
}

#[tokio::test]
async fn local_session_for_unknown_realm_is_an_error() {
    let r = TestRouter::start().await;
    let err = r.router.connect_local("nope", "x", "y").err().unwrap();
    assert!(err.contains("nope"));
}
