//! The reader task: routes what arrives after WELCOME to whoever waits for it, answers the
//! router's GOODBYE, and wakes everyone when the session ends.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::wire::{Dict, Message, Value};

use super::transport::Reader;
use super::{callee, encode, requests, subscriber, CalleeMessage, Event, Shared};

/// Routes incoming messages (after WELCOME) to whoever waits for them.
pub(super) async fn dispatch(
    mut reader: Reader,
    mut inbox: VecDeque<Message>,
    shared: Arc<Shared>,
) {
    let reason = loop {
        let Some(msg) = inbox.pop_front() else {
            let read = tokio::select! {
                r = reader.read_batch(&mut inbox) => r,
                _ = shared.abort.cancelled() => Err("the client disconnected".into()),
            };
            match read {
                Ok(()) => continue,
                Err(cause) => break cause,
            }
        };
        match msg {
            Message::Event {
                subscription,
                publication,
                details,
                payload,
            } => {
                let event = Event {
                    subscription,
                    publication,
                    details,
                    payload,
                };
                subscriber::deliver(&shared, event).await;
            }
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => {
                let invocation = CalleeMessage::Invocation {
                    request,
                    registration,
                    details,
                    payload,
                };
                callee::deliver_invocation(&shared, registration, invocation).await;
            }
            Message::Interrupt { request, options } => {
                callee::deliver_interrupt(&shared, request, options).await;
            }
            Message::Goodbye { .. } if shared.leaving.load(Ordering::Relaxed) => {
                break "the session was left (GOODBYE)".to_owned()
            }
            Message::Goodbye { reason, .. } => {
                let _ = shared
                    .out
                    .send(
                        encode(
                            shared.codec,
                            &Message::Goodbye {
                                details: Dict::new(),
                                reason: "wamp.close.goodbye_and_out".into(),
                            },
                        )
                        .unwrap_or_default(),
                    )
                    .await;
                break format!("the router said GOODBYE ({reason})");
            }
            Message::Abort { reason, details } => {
                let message = details.get("message").and_then(Value::as_str).unwrap_or("");
                break format!("the router sent ABORT ({reason}) {message}");
            }
            reply => requests::route_reply(&shared, reply).await,
        }
    };
    // Wake everyone still waiting: their senders drop with the routes.
    {
        let mut routes = shared.routes.lock();
        routes.pending.clear();
        routes.subscriptions.clear();
        routes.registrations.clear();
    }
    *shared.close_reason.lock() = Some(reason);
    shared.closed.cancel();
}
