//! The session's request/reply bookkeeping: the requests waiting for their answer
//! ([`Pending`], by request ID, in [`Routes`]), and the requests whose answer is a reply
//! (publish with acknowledgement, call, progressive call, cancel, leave).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use crate::wire::{Dict, Id, Message, Payload, Value};

use super::{CalleeMessage, Client, ClientError, Event, Shared, CHANNEL_DEPTH};

/// What waits for the answer to a request.
pub(super) enum Pending {
    /// A single reply (SUBSCRIBED/REGISTERED/PUBLISHED/RESULT/ERROR/...).
    Reply(oneshot::Sender<Message>),
    /// SUBSCRIBE: install `events` for the subscription ID, then reply.
    Subscribe(oneshot::Sender<Message>, mpsc::Sender<Event>),
    /// REGISTER: install `calls` for the registration ID, then reply.
    Register(oneshot::Sender<Message>, mpsc::Sender<CalleeMessage>),
    /// A call with progressive results: every RESULT goes to the channel.
    Progressive(mpsc::Sender<Message>),
}

/// Where the reader hands what arrives: requests waiting for their answer, and the channels
/// of subscriptions and registrations.
#[derive(Default)]
pub(super) struct Routes {
    pub pending: HashMap<Id, Pending>,
    pub subscriptions: HashMap<Id, Vec<mpsc::Sender<Event>>>,
    pub registrations: HashMap<Id, mpsc::Sender<CalleeMessage>>,
}

impl Client {
    /// Sends `msg` (whose request ID is `request`) and waits for its answer.
    pub(super) async fn request(
        &self,
        request: Id,
        msg: Message,
        pending: Pending,
        rx: oneshot::Receiver<Message>,
    ) -> Result<Message, ClientError> {
        self.shared.routes.lock().pending.insert(request, pending);
        if let Err(e) = self.send(&msg).await {
            self.shared.routes.lock().pending.remove(&request);
            return Err(e);
        }
        let t = self.shared.timeout;
        match tokio::time::timeout(t, rx).await {
            Ok(Ok(Message::Error { error, payload, .. })) => Err(ClientError::Wamp {
                uri: error,
                args: payload.args().to_vec(),
            }),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.shared.routes.lock().pending.remove(&request);
                Err(ClientError::Timeout(t))
            }
        }
    }

    /// Publishes without acknowledgement.
    pub async fn publish(
        &self,
        topic: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<(), ClientError> {
        let request = self.request_id();
        self.send(&Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        })
        .await
    }

    /// Publishes with `acknowledge: true` and returns the publication ID.
    pub async fn publish_acknowledged(
        &self,
        topic: &str,
        mut options: Dict,
        payload: Payload,
    ) -> Result<Id, ClientError> {
        options.insert("acknowledge".into(), Value::Bool(true));
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let msg = Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        };
        match self.request(request, msg, Pending::Reply(tx), rx).await? {
            Message::Published { publication, .. } => Ok(publication),
            other => Err(ClientError::Protocol(format!(
                "expected PUBLISHED, got {}",
                other.name()
            ))),
        }
    }

    /// Calls and waits for the final RESULT.
    pub async fn call(
        &self,
        procedure: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<Payload, ClientError> {
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let msg = Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        };
        match self.request(request, msg, Pending::Reply(tx), rx).await? {
            Message::Result { payload, .. } => Ok(payload),
            other => Err(ClientError::Protocol(format!(
                "expected RESULT, got {}",
                other.name()
            ))),
        }
    }

    /// Calls with `receive_progress`; every RESULT (progressive and final) and a final ERROR
    /// arrive on the channel. Returns the call's request ID (for [`Client::cancel`]).
    pub async fn call_progressive(
        &self,
        procedure: &str,
        mut options: Dict,
        payload: Payload,
    ) -> Result<(Id, mpsc::Receiver<Message>), ClientError> {
        options.insert("receive_progress".into(), Value::Bool(true));
        let request = self.request_id();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        self.shared
            .routes
            .lock()
            .pending
            .insert(request, Pending::Progressive(tx));
        self.send(&Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        })
        .await?;
        Ok((request, rx))
    }

    /// Cancels a call made with [`Client::call_progressive`].
    pub async fn cancel(&self, request: Id, mode: &str) -> Result<(), ClientError> {
        let mut options = Dict::new();
        options.insert("mode".into(), Value::from(mode));
        self.send(&Message::Cancel { request, options }).await
    }

    /// Says GOODBYE (the reader ends when the router answers or closes).
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.shared.leaving.store(true, Ordering::Relaxed);
        self.send(&Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.close_realm".into(),
        })
        .await
    }
}

/// Hands a reply to the request it answers (installing a subscription's or registration's
/// channel first); anything that answers no request is dropped.
pub(super) async fn route_reply(shared: &Shared, reply: Message) {
    let request = match &reply {
        Message::Subscribed { request, .. }
        | Message::Registered { request, .. }
        | Message::Unsubscribed { request, .. }
        | Message::Unregistered { request, .. }
        | Message::Published { request, .. }
        | Message::Result { request, .. }
        | Message::Error { request, .. } => *request,
        _ => return,
    };
    let progress = matches!(&reply, Message::Result { details, .. } if details.get("progress") == Some(&Value::Bool(true)));
    // Decide under the lock; await (progressive results) only after releasing it.
    let progressive = {
        let mut routes = shared.routes.lock();
        match routes.pending.remove(&request) {
            Some(Pending::Reply(tx)) => {
                let _ = tx.send(reply);
                None
            }
            Some(Pending::Subscribe(tx, events)) => {
                if let Message::Subscribed { subscription, .. } = &reply {
                    routes
                        .subscriptions
                        .entry(*subscription)
                        .or_default()
                        .push(events);
                }
                let _ = tx.send(reply);
                None
            }
            Some(Pending::Register(tx, calls)) => {
                if let Message::Registered { registration, .. } = &reply {
                    routes.registrations.insert(*registration, calls);
                }
                let _ = tx.send(reply);
                None
            }
            Some(Pending::Progressive(tx)) => {
                if progress {
                    routes
                        .pending
                        .insert(request, Pending::Progressive(tx.clone()));
                }
                Some((tx, reply))
            }
            None => None,
        }
    };
    if let Some((tx, reply)) = progressive {
        let _ = tx.send(reply).await;
    }
}
