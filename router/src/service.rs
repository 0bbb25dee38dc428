//! An in-process WAMP client for router services that answer outside requests (the HTTP
//! bridge): many concurrent requests share one in-process session, each awaiting its own
//! answer.
//!
//! Requests are sent synchronously through the session's state machine (under a mutex, so
//! request IDs and messages stay paired); one task reads the session's queue and hands each
//! RESULT, ERROR or PUBLISHED to the request waiting for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::outbound::Taken;
use crate::protocol::Connection;
use crate::wire::{Dict, Id, Message, Payload, MAX_ID};
use crate::Router;

type Waiters = Mutex<HashMap<Id, oneshot::Sender<Message>>>;

pub struct ServiceClient {
    conn: Mutex<Connection>,
    waiters: Arc<Waiters>,
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
        router: &Router,
        realm: &str,
        authid: &str,
        authrole: &str,
    ) -> Result<Arc<ServiceClient>, String> {
        let session = router.connect_local_untrusted(realm, authid, authrole)?;
        Ok(Self::run(router, session))
    }

    /// Joins `realm` as router code (role `trusted`, no authorization), as Crossbar's service
    /// session calls dynamic authenticators.
    pub fn start_trusted(
        router: &Router,
        realm: &str,
        authid: &str,
    ) -> Result<Arc<ServiceClient>, String> {
        let session = router.connect_local(realm, authid, "trusted")?;
        Ok(Self::run(router, session))
    }

    fn run(router: &Router, session: crate::LocalSession) -> Arc<ServiceClient> {
        let (conn, queue) = session.into_parts();
        let waiters: Arc<Waiters> = Arc::new(Mutex::new(HashMap::new()));
        let client = Arc::new(ServiceClient {
            conn: Mutex::new(conn),
            waiters: waiters.clone(),
            next: AtomicU64::new(0),
        });
        let shutdown = router.shutdown().clone();
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
                    let request = match &msg {
                        Message::Result {
                            request, details, ..
                        } if !details.contains_key("progress") => *request,
                        Message::Error { request, .. } | Message::Published { request, .. } => {
                            *request
                        }
                        _ => continue,
                    };
                    if let Some(tx) = waiters.lock().remove(&request) {
                        let _ = tx.send(msg);
                    }
                }
            }
            // Dropping the senders answers every waiter with `Gone`.
            waiters.lock().clear();
        });
        client
    }

    /// Sends the message `make` builds for a fresh request ID and waits for its answer.
    async fn request(&self, make: impl FnOnce(Id) -> Message) -> Answer {
        let request = self.next.fetch_add(1, Ordering::Relaxed) % MAX_ID + 1;
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(request, tx);
        self.conn.lock().handle(make(request));
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
}
