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
//! realm's [`Directory`](crate::directory::Directory)). IDs: a session has one ID mesh-wide; a subscription is answered
//! with this node's ID when it has one for the (match policy, URI), else with the ID of the
//! peer with the smallest node name, and any node's ID for it is accepted and resolves to the
//! subscribers on every node; a registration is answered with this node's ID (remote callees
//! are stand-ins in this node's dealer), and a peer's registration ID resolves to it too.
//! Kills reach sessions on every node (`crate::kill`, `crate::mesh::kill`); each node
//! publishes the meta events of its own sessions, and they cross the mesh like any event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use parking_lot::Mutex;

use crate::broker::SubscriptionInfo;
use crate::context::Context;
use crate::dealer::RegistrationInfo;
use crate::directory::{RemoteSession, SubscriptionView};
use crate::kill::{answer_here, kill_sessions, KillOrder, KillTarget};
use crate::outbound::Taken;
use crate::protocol::{local, Connection};
use crate::realm::{InterestChange, Realm, RealmObserver};
use crate::session::{self, SessionHandle};
use crate::uri::{errors, MatchPolicy};
use crate::wire::{code, Dict, Id, Message, Payload, Value};
use crate::WampError;

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

fn one(v: Value) -> Result<Payload, WampError> {
    Ok(Payload::new(vec![v], Dict::new()))
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, WampError> {
    args.get(i).ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            format!("missing argument {i} ({name})"),
        )
    })
}

fn id_arg(args: &[Value], i: usize, name: &str) -> Result<Id, WampError> {
    arg(args, i, name)?.as_u64().ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            format!("argument {i} ({name}) must be an ID"),
        )
    })
}

fn str_arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a str, WampError> {
    arg(args, i, name)?.as_str().ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            format!("argument {i} ({name}) must be a string"),
        )
    })
}

/// `filter_authroles`: a list of roles, positional or keyword.
fn role_filter(args: &[Value], kwargs: &Dict) -> Result<Option<Vec<String>>, WampError> {
    match args.first().or_else(|| kwargs.get("filter_authroles")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => Ok(Some(
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        )),
        Some(_) => Err(WampError::new(
            errors::INVALID_ARGUMENT,
            "filter_authroles must be a list of roles",
        )),
    }
}

fn visible_sessions(realm: &Realm) -> Vec<SessionHandle> {
    realm
        .sessions()
        .into_iter()
        .filter(|s| !s.is_restricted())
        .collect()
}

/// What `wamp.session.get` says about a session on another node: what its node would say.
fn remote_session_details(id: Id, realm: &str, s: &RemoteSession) -> Value {
    session::session_details(
        id,
        realm,
        [&s.authid, &s.authrole, &s.authmethod, &s.authprovider],
        s.transport.clone(),
    )
}

fn view_of(s: &SubscriptionInfo) -> SubscriptionView {
    SubscriptionView {
        id: s.id,
        policy: s.policy,
        topic: s.topic.clone(),
        created: s.created.clone(),
    }
}

fn subscription_details(s: &SubscriptionInfo) -> Value {
    view_details(&view_of(s))
}

fn view_details(s: &SubscriptionView) -> Value {
    let mut d = Dict::new();
    d.insert("id".into(), Value::from(s.id));
    d.insert("created".into(), Value::from(s.created.as_str()));
    d.insert("uri".into(), Value::from(s.topic.as_str()));
    d.insert("match".into(), Value::from(s.policy.name()));
    Value::Dict(d)
}

fn registration_details(r: &RegistrationInfo) -> Value {
    let mut d = Dict::new();
    d.insert("id".into(), Value::from(r.id));
    d.insert("created".into(), Value::from(r.created.as_str()));
    d.insert("uri".into(), Value::from(r.procedure.as_str()));
    d.insert("match".into(), Value::from(r.policy.name()));
    d.insert("invoke".into(), Value::from(r.invoke.name()));
    Value::Dict(d)
}

fn ids(v: impl IntoIterator<Item = Id>) -> Value {
    Value::List(v.into_iter().map(Value::from).collect())
}

/// Only the IDs of sessions the API shows.
fn visible_ids(realm: &Realm, sessions: &[Id]) -> Vec<Id> {
    sessions
        .iter()
        .copied()
        .filter(|id| realm.session(*id).is_some_and(|s| !s.is_restricted()))
        .collect()
}

/// The callees of a registration the API shows: local ones by their session ID, and remote
/// ones (stand-ins here) by their session ID on their own node.
fn visible_callees(realm: &Realm, callees: &[Id]) -> Vec<Id> {
    let dir = realm.directory();
    callees
        .iter()
        .filter_map(|id| match realm.session(*id) {
            Some(s) => (!s.is_restricted()).then_some(*id),
            None => dir.callee(*id),
        })
        .collect()
}

/// A subscription by ID: this node's, or one a peer announced.
fn subscription_view(realm: &Realm, id: Id) -> Option<SubscriptionView> {
    match realm.broker.subscription(id) {
        Some(s) => Some(view_of(&s)),
        None => realm.directory().subscription(id),
    }
}

/// The subscribers the API shows for (policy, topic) on every node: this node's first.
fn mesh_subscribers(realm: &Realm, policy: MatchPolicy, topic: &str) -> Vec<Id> {
    let mut out = match realm
        .broker
        .lookup(policy, topic)
        .and_then(|id| realm.broker.subscription(id))
    {
        Some(s) => visible_ids(realm, &s.subscribers),
        None => Vec::new(),
    };
    for id in realm.directory().subscribers(policy, topic) {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn match_option(args: &[Value], kwargs: &Dict) -> Result<MatchPolicy, WampError> {
    let m = args
        .get(1)
        .and_then(Value::as_dict)
        .and_then(|o| o.get("match"))
        .or_else(|| kwargs.get("match"))
        .and_then(Value::as_str);
    MatchPolicy::from_option(m).ok_or_else(|| {
        WampError::new(
            errors::INVALID_ARGUMENT,
            "option 'match' must be exact, prefix or wildcard",
        )
    })
}

/// `add_testament(topic, args, kwargs, publish_options?, scope?)` and
/// `flush_testaments(scope?)`, as Crossbar defines them. The publish permission is checked
/// when the testament is added (roles are static), so a caller learns at once that it would
/// be refused.
fn testament(
    ctx: &Context,
    realm: &Realm,
    session: &SessionHandle,
    name: &str,
    args: &[Value],
    kwargs: &Dict,
) -> Result<Payload, WampError> {
    let get = |i: usize, k: &str| {
        args.get(i)
            .or_else(|| kwargs.get(k))
            .filter(|v| **v != Value::Null)
    };
    let scope_at = if name.ends_with("flush_testaments") {
        0
    } else {
        4
    };
    let scope = match get(scope_at, "scope") {
        None => "destroyed".to_owned(),
        Some(Value::String(s)) if s == "destroyed" || s == "detached" => s.clone(),
        Some(_) => {
            return Err(WampError::new(
                "wamp.error.testament_error",
                "scope must be destroyed or detached",
            ))
        }
    };
    if name.ends_with("flush_testaments") {
        return one(Value::from(session.flush_testaments(&scope) as u64));
    }
    let topic = str_arg(args, 0, "topic")?;
    let t_args = match get(1, "args") {
        None => Vec::new(),
        Some(Value::List(l)) => l.clone(),
        Some(_) => {
            return Err(WampError::new(
                errors::INVALID_ARGUMENT,
                "args must be a list",
            ))
        }
    };
    let t_kwargs = match get(2, "kwargs") {
        None => Dict::new(),
        Some(Value::Dict(d)) => d.clone(),
        Some(_) => {
            return Err(WampError::new(
                errors::INVALID_ARGUMENT,
                "kwargs must be a dict",
            ))
        }
    };
    let mut options = match get(3, "publish_options") {
        None => Dict::new(),
        Some(Value::Dict(d)) => d.clone(),
        Some(_) => {
            return Err(WampError::new(
                errors::INVALID_ARGUMENT,
                "publish_options must be a dict",
            ))
        }
    };
    options.remove("acknowledge");
    options.remove("exclude_me");
    if !crate::uri::is_valid(topic, realm.config.uri_check, MatchPolicy::Exact)
        || crate::uri::is_reserved(topic)
    {
        return Err(WampError::new(
            errors::INVALID_URI,
            format!("invalid testament topic '{topic}'"),
        ));
    }
    let auth = ctx.authorizer().authorize(
        realm.name(),
        &session.info.authrole,
        topic,
        crate::auth::Action::Publish,
    );
    if !auth.allow && !session.is_restricted() {
        return Err(WampError::new(
            errors::NOT_AUTHORIZED,
            format!("not authorized to publish to '{topic}'"),
        ));
    }
    if auth.disclose {
        options.insert("disclose_me".into(), Value::Bool(true));
    }
    session.add_testament(crate::session::Testament {
        topic: topic.to_owned(),
        options,
        payload: Payload::new(t_args, t_kwargs),
        scope,
    });
    one(Value::from(crate::id::random_id()))
}

fn no_such_session(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_SESSION,
        format!("no session with ID {id} exists on this realm"),
    )
}

fn no_such_subscription(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_SUBSCRIPTION,
        format!("no subscription with ID {id} exists on this realm"),
    )
}

fn no_such_registration(id: Id) -> WampError {
    WampError::new(
        errors::NO_SUCH_REGISTRATION,
        format!("no registration with ID {id} exists on this realm"),
    )
}

/// Lists pattern IDs by match policy, as `wamp.*.list` returns them.
fn by_policy(items: impl Iterator<Item = (MatchPolicy, Id)>) -> Value {
    let mut d = Dict::new();
    for p in [
        MatchPolicy::Exact,
        MatchPolicy::Prefix,
        MatchPolicy::Wildcard,
    ] {
        d.insert(p.name().into(), Value::List(Vec::new()));
    }
    for (p, id) in items {
        if let Some(Value::List(l)) = d.get_mut(p.name()) {
            l.push(Value::from(id));
        }
    }
    Value::Dict(d)
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
    // As Crossbar (`is_protected_uri`): subscriptions and registrations on `wamp.` URIs are
    // the router's own business; only trusted callers see them through the meta API.
    let trusted = caller
        .and_then(|id| realm.session(id))
        .is_some_and(|s| s.is_restricted());
    let hidden = |uri: &str| !trusted && crate::uri::is_reserved(uri);
    let protected = |uri: &str| -> Result<(), WampError> {
        if hidden(uri) {
            Err(WampError::new(
                errors::NOT_AUTHORIZED,
                format!("'{uri}' is reserved to the router"),
            ))
        } else {
            Ok(())
        }
    };
    // A subscription or registration by ID (this node's or a peer's), refused if it is
    // reserved to the router.
    let subscription = |id: Id| -> Result<SubscriptionView, WampError> {
        let s = subscription_view(realm, id).ok_or_else(|| no_such_subscription(id))?;
        protected(&s.topic)?;
        Ok(s)
    };
    let registration = |id: Id| -> Result<RegistrationInfo, WampError> {
        let r = realm
            .dealer
            .registration(id)
            .or_else(|| {
                let local = realm.directory().local_registration(id)?;
                realm.dealer.registration(local)
            })
            .ok_or_else(|| no_such_registration(id))?;
        protected(&r.procedure)?;
        Ok(r)
    };
    match name {
        "wamp.session.count" | "wamp.session.list" => {
            let filter = role_filter(args, kwargs)?;
            let role_ok = |role: &String| filter.as_ref().is_none_or(|f| f.contains(role));
            let mut sessions: Vec<Id> = visible_sessions(realm)
                .into_iter()
                .filter(|s| role_ok(&s.info.authrole))
                .map(|s| s.id())
                .collect();
            // A remote ID equal to a local one (a collision) counts once.
            let remote = realm.directory().session_ids(|s| role_ok(&s.authrole));
            sessions.extend(remote.into_iter().filter(|id| realm.session(*id).is_none()));
            if name == "wamp.session.count" {
                one(Value::from(sessions.len() as u64))
            } else {
                one(ids(sessions))
            }
        }
        "wamp.session.get" => {
            let id = id_arg(args, 0, "session_id")?;
            match realm.session(id) {
                Some(s) if !s.is_restricted() => one(s.info.details()),
                Some(_) => Err(no_such_session(id)),
                None => match realm.directory().session(id) {
                    Some(s) => one(remote_session_details(id, realm.name(), &s)),
                    None => Err(no_such_session(id)),
                },
            }
        }
        "wamp.session.kill"
        | "wamp.session.kill_by_authid"
        | "wamp.session.kill_by_authrole"
        | "wamp.session.kill_all" => {
            let order = KillOrder::from_call(name, caller, args, kwargs).expect("a kill")?;
            let killed = kill_sessions(|id| realm.session(id), || realm.sessions(), &order);
            let node = match order.target {
                KillTarget::Session(id) => realm.directory().session(id),
                _ => None,
            };
            answer_here(&order, killed, node.as_ref().map(|s| &*s.node))
        }
        "wamp.session.add_testament" | "wamp.session.flush_testaments" => {
            let session = caller
                .and_then(|id| realm.session(id))
                .ok_or_else(|| WampError::new(errors::NO_SUCH_SESSION, "the caller is unknown"))?;
            testament(ctx, realm, &session, name, args, kwargs)
        }
        "wamp.subscription.list" => {
            let local = realm.broker.subscriptions();
            let mut listed: Vec<(MatchPolicy, Id)> = local
                .iter()
                .filter(|s| {
                    !hidden(&s.topic) && !mesh_subscribers(realm, s.policy, &s.topic).is_empty()
                })
                .map(|s| (s.policy, s.id))
                .collect();
            // Peers' subscriptions this node has none of its own for.
            for (s, visible) in realm.directory().subscriptions() {
                if visible > 0
                    && !hidden(&s.topic)
                    && realm.broker.lookup(s.policy, &s.topic).is_none()
                {
                    listed.push((s.policy, s.id));
                }
            }
            one(by_policy(listed.into_iter()))
        }
        "wamp.subscription.lookup" => {
            let topic = str_arg(args, 0, "topic")?;
            let policy = match_option(args, kwargs)?;
            let found = realm.broker.lookup(policy, topic).or_else(|| {
                realm
                    .directory()
                    .subscription_for(policy, topic)
                    .map(|s| s.id)
            });
            one(found
                .filter(|_| !hidden(topic))
                .map_or(Value::Null, Value::from))
        }
        "wamp.subscription.match" => {
            let topic = str_arg(args, 0, "topic")?;
            let mut found = realm.broker.matching(topic);
            found.retain(|id| {
                realm
                    .broker
                    .subscription(*id)
                    .is_some_and(|s| !hidden(&s.topic))
            });
            for s in realm.directory().matching(topic) {
                if !hidden(&s.topic) && realm.broker.lookup(s.policy, &s.topic).is_none() {
                    found.push(s.id);
                }
            }
            one(if found.is_empty() {
                Value::Null
            } else {
                ids(found)
            })
        }
        "wamp.subscription.get" => {
            let id = id_arg(args, 0, "subscription_id")?;
            let s = subscription(id)?;
            one(view_details(&s))
        }
        "wamp.subscription.list_subscribers" | "wamp.subscription.count_subscribers" => {
            let id = id_arg(args, 0, "subscription_id")?;
            let s = subscription(id)?;
            let subscribers = mesh_subscribers(realm, s.policy, &s.topic);
            if name.ends_with("count_subscribers") {
                one(Value::from(subscribers.len() as u64))
            } else {
                one(ids(subscribers))
            }
        }
        "wamp.subscription.get_events" => {
            let id = id_arg(args, 0, "subscription_id")?;
            let limit = args
                .get(1)
                .or_else(|| kwargs.get("limit"))
                .and_then(Value::as_u64)
                .unwrap_or(10) as usize;
            let s = subscription(id)?;
            // History is kept where it is configured: this node's subscription for the URI.
            let here = realm.broker.lookup(s.policy, &s.topic).unwrap_or(id);
            match realm.broker.events(here, limit) {
                Some(mut events) => {
                    for e in &mut events {
                        if let Value::Dict(d) = e {
                            d.insert("realm".into(), Value::from(realm.name()));
                        }
                    }
                    one(Value::List(events))
                }
                None => Err(WampError::new(
                    "wamp.error.history_unavailable",
                    "event history for the given subscription is not available or enabled",
                )),
            }
        }
        "wamp.registration.list" => {
            let regs = realm.dealer.registrations();
            one(by_policy(
                regs.iter()
                    .filter(|r| {
                        !hidden(&r.procedure) && !visible_callees(realm, &r.callees).is_empty()
                    })
                    .map(|r| (r.policy, r.id)),
            ))
        }
        "wamp.registration.lookup" => {
            let procedure = str_arg(args, 0, "procedure")?;
            let policy = match_option(args, kwargs)?;
            one(realm
                .dealer
                .lookup(policy, procedure)
                .filter(|_| !hidden(procedure))
                .map_or(Value::Null, Value::from))
        }
        "wamp.registration.match" => {
            let procedure = str_arg(args, 0, "procedure")?;
            one(realm
                .dealer
                .best_match(procedure)
                .filter(|id| {
                    realm
                        .dealer
                        .registration(*id)
                        .is_some_and(|r| !hidden(&r.procedure))
                })
                .map_or(Value::Null, Value::from))
        }
        "wamp.registration.get" => {
            let id = id_arg(args, 0, "registration_id")?;
            let r = registration(id)?;
            one(registration_details(&r))
        }
        "wamp.registration.list_callees" | "wamp.registration.count_callees" => {
            let id = id_arg(args, 0, "registration_id")?;
            let r = registration(id)?;
            let callees = visible_callees(realm, &r.callees);
            if name.ends_with("count_callees") {
                one(Value::from(callees.len() as u64))
            } else {
                one(ids(callees))
            }
        }
        other => Err(WampError::new(
            errors::NO_SUCH_PROCEDURE,
            format!("no meta procedure '{other}'"),
        )),
    }
}
