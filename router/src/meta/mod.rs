//! The WAMP meta APIs (session, subscription, registration), served by one in-process
//! service session per realm, as Crossbar's `RouterServiceAgent` serves them.
//!
//! The service session is an ordinary in-process session with role `trusted`: it registers
//! the `wamp.*` procedures in its realm and answers their INVOCATIONs from its own task, and
//! it publishes the meta events (`wamp.session.on_join`, `wamp.subscription.on_create`, ...)
//! synchronously from whatever task caused them. Authorization applies to clients as to any
//! other URI. Actions of router-internal and `trusted` sessions raise no meta events and such
//! sessions are hidden from the API (Crossbar's "restricted" sessions).
//!
//! In a mesh, the session, subscription and registration procedures answer for the whole
//! mesh: this node's own sessions, subscribers and callees plus what peers announced (the
//! realm's [`Directory`](crate::directory::Directory)). IDs: a session has one ID mesh-wide;
//! a subscription is answered with this node's ID when it has one for the (match policy, URI),
//! else with the ID of the peer with the smallest node name, and any node's ID for it is
//! accepted and resolves to the subscribers on every node; a registration is answered with
//! this node's ID (remote callees are stand-ins in this node's dealer), and a peer's
//! registration ID resolves to it too. Kills reach sessions on every node (`crate::kill`,
//! `crate::mesh::kill`); each node publishes the meta events of its own sessions, and they
//! cross the mesh like any event.
//!
//! The service is the realm's [`RealmObserver`]: the realm reports what sessions did and this
//! module publishes the meta events. The procedures are answered by family: `session`,
//! `subscription` and `registration`, reading their arguments through `args`.

mod args;
mod registration;
mod session;
mod subscription;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use parking_lot::Mutex;

use crate::context::Context;
use crate::kill::KillOrder;
use crate::outbound::Taken;
use crate::protocol::{local, Connection};
use crate::realm::{InterestChange, Realm, RealmObserver};
use crate::session::SessionHandle;
use crate::uri::errors;
use crate::wire::{code, Dict, Id, Message, Payload, Value};
use crate::WampError;
use registration::registration_details;
use subscription::subscription_details;

/// Every procedure the service registers: exactly what WELCOME announces.
pub const PROCEDURES: &[&str] = &[
    "wamp.session.count",
    "wamp.session.list",
    "wamp.session.get",
    "wamp.session.kill",
    "wamp.session.kill_by_authid",
    "wamp.session.kill_by_authrole",
    "wamp.session.kill_all",
    "wamp.session.add_testament",
    "wamp.session.flush_testaments",
    "wamp.subscription.list",
    "wamp.subscription.lookup",
    "wamp.subscription.match",
    "wamp.subscription.get",
    "wamp.subscription.list_subscribers",
    "wamp.subscription.count_subscribers",
    "wamp.subscription.get_events",
    "wamp.registration.list",
    "wamp.registration.lookup",
    "wamp.registration.match",
    "wamp.registration.get",
    "wamp.registration.list_callees",
    "wamp.registration.count_callees",
];

/// A realm's meta service: the sending half of its in-process session.
pub struct MetaService {
    /// `None` once the router shut down (dropping it leaves the realm and breaks the
    /// realm → service → context → realm reference cycle).
    conn: Mutex<Option<Connection>>,
    next_request: AtomicU64,
}

impl MetaService {
    /// Publishes a meta event. Called synchronously by whatever task caused it.
    fn publish(&self, topic: &str, args: Vec<Value>) {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(conn) = self.conn.lock().as_mut() {
            conn.handle(Message::Publish {
                request,
                options: Dict::new(),
                topic: topic.to_owned(),
                payload: Payload::new(args, Dict::new()),
            });
        }
    }

    fn send(&self, msg: Message) {
        if let Some(conn) = self.conn.lock().as_mut() {
            conn.handle(msg);
        }
    }

    /// The events of a subscribe or register (`[on_create, on_add, on_remove, on_delete]`),
    /// or of their reverse, with the creation details from `details`. None for restricted
    /// sessions or the meta API's own URIs (Crossbar's rule: "not for the meta API itself").
    fn lifecycle(
        &self,
        by: &SessionHandle,
        change: &InterestChange<'_>,
        [on_create, on_add, on_remove, on_delete]: [&str; 4],
        details: impl FnOnce() -> Option<Value>,
    ) {
        if by.is_restricted() || crate::uri::is_reserved(change.uri) {
            return;
        }
        let (s, id) = (Value::from(by.id()), Value::from(change.id));
        if change.added {
            if change.changed {
                if let Some(d) = details() {
                    self.publish(on_create, vec![s.clone(), d]);
                }
            }
            self.publish(on_add, vec![s, id]);
        } else {
            self.publish(on_remove, vec![s.clone(), id.clone()]);
            if change.changed {
                self.publish(on_delete, vec![s, id]);
            }
        }
    }
}

/// The meta events, from what the realm reports. Sessions the API hides (router-internal,
/// `trusted`, mesh stand-ins) raise none.
impl RealmObserver for MetaService {
    fn joined(&self, _realm: &Realm, session: &SessionHandle) {
        if !session.is_restricted() {
            self.publish("wamp.session.on_join", vec![session.info.details()]);
        }
    }

    fn left(&self, _realm: &Realm, session: &SessionHandle) {
        if !session.is_restricted() {
            self.publish("wamp.session.on_leave", vec![Value::from(session.id())]);
        }
    }

    fn subscription(&self, realm: &Realm, by: &SessionHandle, change: &InterestChange<'_>) {
        let names = [
            "wamp.subscription.on_create",
            "wamp.subscription.on_subscribe",
            "wamp.subscription.on_unsubscribe",
            "wamp.subscription.on_delete",
        ];
        self.lifecycle(by, change, names, || {
            realm
                .broker
                .subscription(change.id)
                .map(|info| subscription_details(&info))
        });
    }

    fn registration(&self, realm: &Realm, by: &SessionHandle, change: &InterestChange<'_>) {
        let names = [
            "wamp.registration.on_create",
            "wamp.registration.on_register",
            "wamp.registration.on_unregister",
            "wamp.registration.on_delete",
        ];
        self.lifecycle(by, change, names, || {
            realm
                .dealer
                .registration(change.id)
                .map(|info| registration_details(&info))
        });
    }
}

/// Starts the meta service of every realm that enables it. Needs a tokio runtime; the
/// [`Router`](crate::Router) constructors call it when one is running.
pub(crate) fn start(ctx: &Context) {
    for realm in ctx.realms() {
        if !realm.config.meta_api || realm.meta_api_running() {
            continue;
        }
        if let Err(e) = start_realm(ctx, realm) {
            tracing::error!(realm = realm.name(), "meta API not started: {e}");
        }
    }
}

fn start_realm(ctx: &Context, realm: &Arc<Realm>) -> Result<(), String> {
    let session = local::connect(ctx, realm.name(), "switchyard", "trusted", true)?;
    let (mut conn, queue) = session.into_parts();
    for (i, name) in PROCEDURES.iter().enumerate() {
        conn.handle(Message::Register {
            request: i as Id + 1,
            options: Dict::new(),
            procedure: (*name).to_owned(),
        });
    }
    // Registering is synchronous: every REGISTERED is already queued.
    let mut batch = std::collections::VecDeque::new();
    let mut names: HashMap<Id, &'static str> = HashMap::new();
    if let Some(Taken::Items) = queue.take(&mut batch).now_or_never() {
        for msg in batch.drain(..) {
            match msg {
                Message::Registered {
                    request,
                    registration,
                } => {
                    names.insert(registration, PROCEDURES[request as usize - 1]);
                }
                other => return Err(format!("unexpected {other:?} while registering")),
            }
        }
    }
    if names.len() != PROCEDURES.len() {
        return Err("not every meta procedure could be registered".into());
    }
    let service = Arc::new(MetaService {
        conn: Mutex::new(Some(conn)),
        next_request: AtomicU64::new(0),
    });
    if realm.set_observer(service.clone()).is_err() {
        return Err("meta service already running".into());
    }
    let shutdown = ctx.shutdown().clone();
    let realm = realm.clone();
    let ctx = ctx.clone();
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
                if let Message::Invocation {
                    request,
                    registration,
                    details,
                    payload,
                } = msg
                {
                    let name = names.get(&registration).copied().unwrap_or("");
                    let caller = details.get("caller").and_then(Value::as_u64);
                    let no_kwargs = Dict::new();
                    let kwargs = payload.kwargs().unwrap_or(&no_kwargs);
                    // A kill that other mesh nodes carry out too is answered once they have.
                    let order = KillOrder::from_call(name, caller, payload.args(), kwargs);
                    if let Some(across) = order.and_then(|o| realm.cluster()?.kill(o.ok()?)) {
                        let service = service.clone();
                        tokio::spawn(async move { service.send(reply(request, across.await)) });
                        continue;
                    }
                    let result = call(&ctx, &realm, caller, name, payload.args(), kwargs);
                    service.send(reply(request, result));
                }
            }
        }
        service.conn.lock().take();
    });
    Ok(())
}

/// The YIELD or ERROR answering INVOCATION `request`.
fn reply(request: Id, result: Result<Payload, WampError>) -> Message {
    match result {
        Ok(payload) => Message::Yield {
            request,
            options: Dict::new(),
            payload,
        },
        Err(e) => Message::error(code::INVOCATION, request, &e.uri, Some(e.message)),
    }
}

/// One meta procedure call: who asks, in which realm, with what arguments.
pub(super) struct Call<'a> {
    ctx: &'a Context,
    realm: &'a Realm,
    caller: Option<Id>,
    /// A trusted caller (router code) also sees what is reserved to the router.
    trusted: bool,
    args: &'a [Value],
    kwargs: &'a Dict,
}

impl Call<'_> {
    /// As Crossbar (`is_protected_uri`): subscriptions and registrations on `wamp.` URIs are
    /// the router's own business; only trusted callers see them through the meta API.
    fn hidden(&self, uri: &str) -> bool {
        !self.trusted && crate::uri::is_reserved(uri)
    }

    /// Refuses what is [`Call::hidden`] from this caller.
    fn protected(&self, uri: &str) -> Result<(), WampError> {
        if self.hidden(uri) {
            Err(WampError::new(
                errors::NOT_AUTHORIZED,
                format!("'{uri}' is reserved to the router"),
            ))
        } else {
            Ok(())
        }
    }
}

/// Runs one meta procedure.
fn call(
    ctx: &Context,
    realm: &Realm,
    caller: Option<Id>,
    name: &str,
    args: &[Value],
    kwargs: &Dict,
) -> Result<Payload, WampError> {
    let trusted = caller
        .and_then(|id| realm.session(id))
        .is_some_and(|s| s.is_restricted());
    let c = Call {
        ctx,
        realm,
        caller,
        trusted,
        args,
        kwargs,
    };
    match name.split('.').nth(1) {
        Some("session") => session::call(&c, name),
        Some("subscription") => subscription::call(&c, name),
        Some("registration") => registration::call(&c, name),
        _ => Err(args::no_such_procedure(name)),
    }
}
