//! Stand-in sessions that carry calls across a peer link.
//!
//! At the caller's node, a callee on another node is a [`ProxyCallee`] stand-in registered in
//! the dealer like any callee: the dealer's INVOCATION and INTERRUPT to it become `call` and
//! `cancel` frames. At the callee's node, one [`ReturnPath`] stand-in per link and realm is
//! the caller of every forwarded call: the dealer's RESULT and ERROR to it become `result` and
//! `error` frames. So both nodes run the dealer's own pending/timeout/cancel logic, and a
//! node that loses the link fails or interrupts exactly the calls that crossed it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::frame::{Frame, Principal};
use super::link::LinkHandle;
use crate::dealer::{ORIGIN_CALLER_AUTHID, ORIGIN_CALLER_AUTHROLE};
use crate::id::random_id;
use crate::outbound::Closed;
use crate::session::{Link, MeshSink, PeerFeatures, Session, SessionHandle, SessionInfo};
use crate::wire::{Id, Message, Value, MAX_ID};

fn stand_in(link: &LinkHandle, realm: &str, sink: Arc<dyn MeshSink>, id: Id) -> SessionHandle {
    let info = SessionInfo {
        id,
        realm: realm.to_owned(),
        authid: format!("mesh:{}", link.node),
        authrole: "mesh".into(),
        authmethod: "mesh".into(),
        authprovider: "switchyard".into(),
        internal: true,
        transport: format!("mesh {}", link.node),
    };
    // The real callee's node decides about canceling and progress; the stand-in passes both.
    let features = PeerFeatures {
        callee_call_canceling: true,
    };
    Session::new(info, features, Link::Mesh(sink))
}

/// A callee on another node, as this node's dealer sees it.
struct ProxyCallee {
    link: Arc<LinkHandle>,
    realm: String,
    proxy: Id,
    /// The registration and callee session IDs on the callee's node.
    registration: Id,
    callee: Id,
    /// The registered URI: the called procedure for exact registrations.
    pattern: String,
}

impl MeshSink for ProxyCallee {
    fn send(&self, msg: Message) -> Result<(), Closed> {
        match msg {
            Message::Invocation {
                request,
                mut details,
                payload,
                ..
            } => {
                let procedure = details
                    .get("procedure")
                    .and_then(Value::as_str)
                    .unwrap_or(&self.pattern)
                    .to_owned();
                let mut take = |key: &str| match details.remove(key) {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                let by = Principal {
                    authid: take(ORIGIN_CALLER_AUTHID),
                    authrole: take(ORIGIN_CALLER_AUTHROLE),
                };
                self.link.send(&Frame::Call {
                    realm: self.realm.clone(),
                    proxy: self.proxy,
                    request,
                    registration: self.registration,
                    callee: self.callee,
                    procedure,
                    details,
                    payload,
                    by: Some(by),
                })
            }
            Message::Interrupt { request, options } => {
                let text = |key: &str, default: &str| {
                    options
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or(default)
                        .to_owned()
                };
                self.link.send(&Frame::Cancel {
                    realm: self.realm.clone(),
                    proxy: self.proxy,
                    request,
                    mode: text("mode", "killnowait"),
                    reason: text("reason", crate::uri::errors::CANCELED),
                })
            }
            _ => Ok(()),
        }
    }
}

pub(crate) fn proxy_callee(
    link: &Arc<LinkHandle>,
    realm: &str,
    registration: Id,
    callee: Id,
    pattern: &str,
) -> SessionHandle {
    let proxy = random_id();
    let sink = Arc::new(ProxyCallee {
        link: link.clone(),
        realm: realm.to_owned(),
        proxy,
        registration,
        callee,
        pattern: pattern.to_owned(),
    });
    stand_in(link, realm, sink, proxy)
}

#[derive(Default)]
struct Calls {
    next: u64,
    /// Our call request ID → (origin's stand-in callee, origin's invocation request).
    by_local: HashMap<Id, (Id, Id)>,
    by_origin: HashMap<(Id, Id), Id>,
}

/// The caller of every call forwarded to this node over one link, in one realm.
pub(crate) struct ReturnPath {
    link: Arc<LinkHandle>,
    realm: String,
    calls: Mutex<Calls>,
}

impl ReturnPath {
    pub(crate) fn new(link: &Arc<LinkHandle>, realm: &str) -> (SessionHandle, Arc<ReturnPath>) {
        let rp = Arc::new(ReturnPath {
            link: link.clone(),
            realm: realm.to_owned(),
            calls: Mutex::new(Calls::default()),
        });
        (stand_in(link, realm, rp.clone(), random_id()), rp)
    }

    /// Records a forwarded call and returns the request ID it gets here.
    pub(crate) fn begin(&self, proxy: Id, request: Id) -> Id {
        let mut c = self.calls.lock();
        c.next = c.next % MAX_ID + 1;
        let local = c.next;
        c.by_local.insert(local, (proxy, request));
        c.by_origin.insert((proxy, request), local);
        local
    }

    pub(crate) fn lookup(&self, proxy: Id, request: Id) -> Option<Id> {
        self.calls.lock().by_origin.get(&(proxy, request)).copied()
    }

    pub(crate) fn end(&self, local: Id) -> Option<(Id, Id)> {
        let mut c = self.calls.lock();
        let origin = c.by_local.remove(&local)?;
        c.by_origin.remove(&origin);
        Some(origin)
    }
}

impl MeshSink for ReturnPath {
    fn send(&self, msg: Message) -> Result<(), Closed> {
        match msg {
            Message::Result {
                request,
                details,
                payload,
            } => {
                let progress = matches!(details.get("progress"), Some(Value::Bool(true)));
                let origin = if progress {
                    self.calls.lock().by_local.get(&request).copied()
                } else {
                    self.end(request)
                };
                let Some((proxy, request)) = origin else {
                    return Ok(());
                };
                self.link.send(&Frame::Result {
                    realm: self.realm.clone(),
                    proxy,
                    request,
                    progress,
                    payload,
                })
            }
            Message::Error {
                request,
                error,
                payload,
                ..
            } => {
                let Some((proxy, request)) = self.end(request) else {
                    return Ok(());
                };
                self.link.send(&Frame::Error {
                    realm: self.realm.clone(),
                    proxy,
                    request,
                    error,
                    payload,
                })
            }
            _ => Ok(()),
        }
    }
}
