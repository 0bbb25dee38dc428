//! The built-in WAMP client (used by `switchyard bench`) against the router, over both
//! transports.

mod common;

use common::*;
use switchyard_router::client::{CalleeMessage, Client, ClientError, ClientOptions};
use switchyard_router::wire::{Dict, Message, Payload, Serializer, Value};

fn options(url: String, serializer: Serializer, batched: bool) -> ClientOptions {
    let mut o = ClientOptions::new(url, "realm1");
    o.serializer = serializer;
    o.batched = batched;
    o
}

#[tokio::test]
async fn pubsub_and_rpc_over_both_transports() {
    let r = TestRouter::start().await;
    let urls = [
        (format!("ws://{}/ws", r.addr), Serializer::Json, true),
        (format!("ws://{}/ws", r.addr), Serializer::Cbor, false),
        (format!("tcp://{}", r.addr), Serializer::MsgPack, false),
    ];
    for (url, ser, batched) in urls {
        let a = Client::connect(&options(url.clone(), ser, batched))
            .await
            .unwrap();
        let b = Client::connect(&options(url.clone(), ser, batched))
            .await
            .unwrap();
        let (_, mut events) = b.subscribe("com.c", Dict::new()).await.unwrap();
        a.publish_acknowledged("com.c", Dict::new(), args(vec![Value::Int(1)]))
            .await
            .unwrap();
        assert_eq!(
            events.recv().await.unwrap().payload.args(),
            &[Value::Int(1)]
        );

        let (_, mut calls) = b.register("com.c.double", Dict::new()).await.unwrap();
        let callee = b.clone();
        tokio::spawn(async move {
            while let Some(CalleeMessage::Invocation {
                request, payload, ..
            }) = calls.recv().await
            {
                let n = payload.args()[0].as_u64().unwrap();
                callee
                    .yield_result(request, Dict::new(), args(vec![Value::from(n * 2)]))
                    .await
                    .unwrap();
            }
        });
        let result = a
            .call("com.c.double", Dict::new(), args(vec![Value::Int(21)]))
            .await
            .unwrap();
        assert_eq!(result.args(), &[Value::Int(42)], "{url} {ser}");
        match a.call("com.c.none", Dict::new(), Payload::default()).await {
            Err(ClientError::Wamp { uri, .. }) => assert_eq!(uri, "wamp.error.no_such_procedure"),
            other => panic!("{other:?}"),
        }
        // Leaving ends the session: its registration is gone before the next round.
        b.leave().await.unwrap();
        let realm = r.router.realm("realm1").unwrap();
        for _ in 0..100 {
            if realm.session(b.session_id()).is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(realm.session(b.session_id()).is_none());
    }
}

#[tokio::test]
async fn progressive_calls_and_cancel() {
    let r = TestRouter::start().await;
    let url = format!("ws://{}/ws", r.addr);
    let caller = Client::connect(&options(url.clone(), Serializer::MsgPack, false))
        .await
        .unwrap();
    let callee = Client::connect(&options(url, Serializer::MsgPack, false))
        .await
        .unwrap();
    let (_, mut calls) = callee.register("com.p", Dict::new()).await.unwrap();
    let (req, mut results) = caller
        .call_progressive("com.p", Dict::new(), Payload::default())
        .await
        .unwrap();
    let inv = match calls.recv().await.unwrap() {
        CalleeMessage::Invocation { request, .. } => request,
        other => panic!("{other:?}"),
    };
    let mut progress = Dict::new();
    progress.insert("progress".into(), Value::Bool(true));
    callee
        .yield_result(inv, progress, args(vec![Value::Int(1)]))
        .await
        .unwrap();
    assert!(
        matches!(results.recv().await.unwrap(), Message::Result { details, .. } if details.contains_key("progress"))
    );
    caller.cancel(req, "killnowait").await.unwrap();
    assert!(
        matches!(calls.recv().await.unwrap(), CalleeMessage::Interrupt { request, .. } if request == inv)
    );
    assert!(
        matches!(results.recv().await.unwrap(), Message::Error { error, .. } if error == "wamp.error.canceled")
    );
}

#[tokio::test]
async fn join_failures_are_reported() {
    let r = TestRouter::start().await;
    let mut o = options(format!("ws://{}/ws", r.addr), Serializer::Json, false);
    o.realm = "nope".into();
    match Client::connect(&o).await {
        Err(ClientError::Aborted { reason, .. }) => assert_eq!(reason, "wamp.error.no_such_realm"),
        other => panic!("{:?}", other.err()),
    }
    let o = options("http://x".into(), Serializer::Json, false);
    assert!(matches!(
        Client::connect(&o).await,
        Err(ClientError::Url(_))
    ));
    let o = options("tcp://127.0.0.1:1".into(), Serializer::Json, false);
    assert!(matches!(
        Client::connect(&o).await,
        Err(ClientError::Connect { .. })
    ));
}
