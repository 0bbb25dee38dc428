//! An in-process WAMP client for code running inside the router process (the HTTP bridge,
//! the build master): many concurrent requests share one in-process session, each awaiting
//! its own answer; calls may stream progressive results and be canceled; subscriptions
//! deliver their EVENTs on a channel.
//!
//! Requests are sent synchronously through the session's state machine (under a mutex, so
//! request IDs and messages stay paired); one task reads the session's queue and hands each
//! RESULT, ERROR, PUBLISHED or SUBSCRIBED to the request waiting for it, and each EVENT to its
//! subscription's channel. The reader installs a subscription's channel when SUBSCRIBED
//! arrives, before any EVENT for it can be read, so none is missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthHost, CallAnswer, ProcedureCaller};
use crate::context::Context;
use crate::outbound::Taken;
use crate::protocol::local::{self, LocalSession};
use crate::protocol::Connection;
use crate::wire::{Dict, Id, Message, Payload, MAX_ID};

/// Who waits for what a request brings back.
enum Waiter {
    /// One answer: RESULT, ERROR, PUBLISHED, SUBSCRIBED, UNSUBSCRIBED.
    Reply(oneshot::Sender<Message>),
    /// A call with progressive results: every RESULT and the final RESULT or ERROR.
    Progressive(mpsc::Sender<Message>),
    /// SUBSCRIBE: install the channel under the subscription ID, then reply.
    Subscribe(oneshot::Sender<Message>, mpsc::Sender<SubscriptionEvent>),
}

#[derive(Default)]
struct Routes {
    waiters: HashMap<Id, Waiter>,
    subscriptions: HashMap<Id, mpsc::Sender<SubscriptionEvent>>,
    /// EVENTs dropped because their subscription's channel was full.
    dropped: u64,
}

type SharedRoutes = Arc<Mutex<Routes>>;

/// An EVENT delivered to a subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionEvent {
    pub publication: Id,
    pub details: Dict,
    pub payload: Payload,
}

/// Depth of a subscription's event channel; a subscriber that falls this far behind loses
/// events (logged), so one slow consumer cannot stall the session's reader.
const EVENT_CHANNEL_DEPTH: usize = 4096;

/// Depth of a progressive call's channel; when it is full the reader waits, which pushes
/// back on the callee through the session's bounded queue.
const PROGRESS_CHANNEL_DEPTH: usize = 256;

pub struct ServiceClient {
    conn: Mutex<Connection>,
    routes: SharedRoutes,
    next: AtomicU64,
}

/// How a request ended.
#[derive(Debug)]
pub enum Answer {
    Result(Payload),
    Published(Id),
    /// A WAMP error: its URI and payload.
    Error(String, Payload),
    /// The session or the router went away before answering.
    Gone,
}

impl ServiceClient {
    /// Joins `realm` as `authid`/`authrole`, subject to that role's permissions, and starts
    /// the reader task. Needs a tokio runtime.
    pub fn start(
        ctx: &Context,
        realm: &str,
        authid: &str,
        authrole: &str,
    ) -> Result<Arc<ServiceClient>, String> {
        let session = local::connect(ctx, realm, authid, authrole, false)?;
        Ok(Self::run(ctx, session))
    }

    /// Joins `realm` as router code (role `trusted`, no authorization), as Crossbar's service
    /// session calls dynamic authenticators.
    pub fn start_trusted(
        ctx: &Context,
        realm: &str,
        authid: &str,
    ) -> Result<Arc<ServiceClient>, String> {
        let session = local::connect(ctx, realm, authid, "trusted", true)?;
        Ok(Self::run(ctx, session))
    }

    fn run(ctx: &Context, session: LocalSession) -> Arc<ServiceClient> {
        let (conn, queue) = session.into_parts();
        let routes: SharedRoutes = Arc::default();
        let client = Arc::new(ServiceClient {
            conn: Mutex::new(conn),
            routes: routes.clone(),
            next: AtomicU64::new(0),
        });
        let shutdown = ctx.shutdown().clone();
        tokio::spawn(async move {
            loop {
                let mut batch = std::collections::VecDeque::new();
                let taken = tokio::select! {
                    _ = shutdown.requested() => break,
                    t = queue.take(&mut batch) => t,
                };
                if let Taken::Closed(_) = taken {
                    break;
                }
                for msg in batch {
                    dispatch(&routes, msg).await;
                }
            }
            // Dropping the senders answers every waiter with `Gone` and ends every
            // subscription's stream.
            let mut r = routes.lock();
            r.waiters.clear();
            r.subscriptions.clear();
        });
        client
    }

    /// Sends the message `make` builds for a fresh request ID and waits for its answer.
    async fn request(&self, make: impl FnOnce(Id) -> Message) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.send_request(Waiter::Reply(tx), make);
        match rx.await {
            Ok(Message::Result { payload, .. }) => Answer::Result(payload),
            Ok(Message::Published { publication, .. }) => Answer::Published(publication),
            Ok(Message::Error { error, payload, .. }) => Answer::Error(error, payload),
            _ => Answer::Gone,
        }
    }

    pub async fn call(&self, procedure: &str, payload: Payload) -> Answer {
        self.call_with(procedure, Dict::new(), payload).await
    }

    pub async fn call_with(&self, procedure: &str, options: Dict, payload: Payload) -> Answer {
        self.request(|request| Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        })
        .await
    }

    /// Publishes with acknowledgement, so errors (not authorized, bad options) come back.
    pub async fn publish(&self, topic: &str, mut options: Dict, payload: Payload) -> Answer {
        options.insert("acknowledge".into(), crate::wire::Value::Bool(true));
        self.request(|request| Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        })
        .await
    }

    /// Publishes without acknowledgement (fire and forget, as Buildbot's masters publish).
    pub fn publish_unacknowledged(&self, topic: &str, options: Dict, payload: Payload) {
        let request = self.next_request();
        self.conn.lock().handle(Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        });
    }

    /// Calls with `receive_progress`: the channel yields every progressive RESULT, then the
    /// final RESULT or ERROR, then ends. The returned request ID cancels the call.
    pub fn call_progressive(
        &self,
        procedure: &str,
        mut options: Dict,
        payload: Payload,
    ) -> (Id, mpsc::Receiver<Message>) {
        options.insert("receive_progress".into(), crate::wire::Value::Bool(true));
        let (tx, rx) = mpsc::channel(PROGRESS_CHANNEL_DEPTH);
        let request = self.send_request(Waiter::Progressive(tx), |request| Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        });
        (request, rx)
    }

    /// Cancels a call (`mode`: `skip`, `kill` or `killnowait`); its answer arrives as usual.
    pub fn cancel(&self, request: Id, mode: &str) {
        let mut options = Dict::new();
        options.insert("mode".into(), crate::wire::Value::from(mode));
        self.conn
            .lock()
            .handle(Message::Cancel { request, options });
    }

    /// Subscribes; EVENTs arrive on the returned channel (bounded: see
    /// `EVENT_CHANNEL_DEPTH`). Err carries the ERROR's URI.
    pub async fn subscribe(
        &self,
        topic: &str,
        options: Dict,
    ) -> Result<(Id, mpsc::Receiver<SubscriptionEvent>), String> {
        self.subscribe_with_depth(topic, options, EVENT_CHANNEL_DEPTH)
            .await
    }

    /// [`ServiceClient::subscribe`] with a channel of `depth` events: beyond that, events
    /// are dropped (and counted, see [`ServiceClient::dropped_events`]).
    pub async fn subscribe_with_depth(
        &self,
        topic: &str,
        options: Dict,
        depth: usize,
    ) -> Result<(Id, mpsc::Receiver<SubscriptionEvent>), String> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (events_tx, events_rx) = mpsc::channel(depth.max(1));
        self.send_request(Waiter::Subscribe(reply_tx, events_tx), |request| {
            Message::Subscribe {
                request,
                options,
                topic: topic.to_owned(),
            }
        });
        match reply_rx.await {
            Ok(Message::Subscribed { subscription, .. }) => Ok((subscription, events_rx)),
            Ok(Message::Error { error, .. }) => Err(error),
            _ => Err("the session closed".into()),
        }
    }

    /// How many EVENTs this session's subscriptions have dropped so far because their
    /// subscriber fell a whole channel behind.
    pub fn dropped_events(&self) -> u64 {
        self.routes.lock().dropped
    }

    fn next_request(&self) -> Id {
        self.next.fetch_add(1, Ordering::Relaxed) % MAX_ID + 1
    }

    /// Registers `waiter` under a fresh request ID, then sends the request (in that order,
    /// so the answer always finds its waiter).
    fn send_request(&self, waiter: Waiter, make: impl FnOnce(Id) -> Message) -> Id {
        let request = self.next_request();
        self.routes.lock().waiters.insert(request, waiter);
        self.conn.lock().handle(make(request));
        request
    }
}

/// Dynamic authenticators call their procedure through a trusted service session.
impl AuthHost for Context {
    fn trusted_caller(
        &self,
        realm: &str,
        authid: &str,
    ) -> Result<Arc<dyn ProcedureCaller>, String> {
        Ok(ServiceClient::start_trusted(self, realm, authid)?)
    }

    fn handshake_timeout(&self) -> std::time::Duration {
        self.limits().handshake_timeout
    }
}

impl ProcedureCaller for ServiceClient {
    fn call_procedure<'a>(
        &'a self,
        procedure: &'a str,
        payload: Payload,
    ) -> futures_util::future::BoxFuture<'a, CallAnswer> {
        Box::pin(async move {
            match self.call(procedure, payload).await {
                Answer::Result(p) => CallAnswer::Result(p),
                Answer::Error(uri, p) => CallAnswer::Error(uri, p),
                Answer::Published(_) | Answer::Gone => CallAnswer::Gone,
            }
        })
    }
}

/// Hands one message from the session's queue to whoever waits for it.
async fn dispatch(routes: &Mutex<Routes>, msg: Message) {
    let request = match &msg {
        Message::Event {
            subscription,
            publication,
            details,
            payload,
        } => {
            let tx = routes.lock().subscriptions.get(subscription).cloned();
            if let Some(tx) = tx {
                let event = SubscriptionEvent {
                    publication: *publication,
                    details: details.clone(),
                    payload: payload.clone(),
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
                    routes.lock().dropped += 1;
                    tracing::warn!(
                        subscription,
                        "in-process subscriber is {EVENT_CHANNEL_DEPTH} events behind; event dropped"
                    );
                }
            }
            return;
        }
        Message::Result { request, .. }
        | Message::Error { request, .. }
        | Message::Published { request, .. }
        | Message::Subscribed { request, .. }
        | Message::Unsubscribed { request, .. } => *request,
        _ => return,
    };
    let progress = matches!(&msg, Message::Result { details, .. }
        if details.get("progress").and_then(crate::wire::Value::as_bool) == Some(true));
    let waiter = {
        let mut r = routes.lock();
        match r.waiters.get(&request) {
            Some(Waiter::Progressive(tx)) if progress => Some(Waiter::Progressive(tx.clone())),
            Some(_) => r.waiters.remove(&request),
            None => None,
        }
    };
    match waiter {
        Some(Waiter::Reply(tx)) => {
            let _ = tx.send(msg);
        }
        Some(Waiter::Progressive(tx)) => {
            let _ = tx.send(msg).await;
        }
        Some(Waiter::Subscribe(tx, events)) => {
            if let Message::Subscribed { subscription, .. } = &msg {
                routes.lock().subscriptions.insert(*subscription, events);
            }
            let _ = tx.send(msg);
        }
        None => {}
    }
}
