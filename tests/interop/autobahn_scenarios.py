#!/usr/bin/env python3
"""WAMP interop scenarios for switchyard, driven by autobahn-python (asyncio).

Usage:
    autobahn_scenarios.py --url ws://127.0.0.1:PORT/ws [--realm realm1]
                          [--rawsocket tcp://127.0.0.1:PORT] [--serializers json,msgpack,...]
                          [--only REGEX] [--exclude REGEX] [--timeout 10] [--wire 12]
                          [--list] [--verbose]

What it checks (per serializer json, msgpack, cbor, cbor.batched where that makes sense):
  * Session: WELCOME roles broker/dealer and their features; WebSocket at "/" and "/ws";
    the three .batched subprotocols; unknown realm -> ABORT no_such_realm; a plain HTTP
    GET is answered.
  * PubSub: exact, prefix and wildcard subscriptions (EVENT.details.topic, empty-component
    patterns as Buildbot uses them), shared subscription ids, exclude_me default/False,
    acknowledge, eligible/exclude (+authrole), disclose_me, unsubscribe, 500-event
    ordering per publisher/subscriber pair.
  * RPC: args/kwargs round trip, application errors, no_such_procedure,
    procedure_already_exists, unregister, prefix/wildcard registration (details.procedure,
    match precedence), shared registration (roundrobin), progressive results, caller
    disclose_me, CANCEL kill / killnowait / skip, CALL timeout in milliseconds, callee
    leaving mid-call (GOODBYE and dropped TCP), caller with receive_progress leaving ->
    INTERRUPT, 60 concurrent calls answered out of order.
  * Payloads: bytes and every JSON value kind across json / msgpack / cbor sessions in all
    directions; a 256 KiB payload.
  * RawSocket (same host:port, first byte 0x7F): pub/sub and RPC mixed with WebSocket
    sessions; byte-level handshake, handshake error replies, PING/PONG, and a message
    before HELLO -> ABORT protocol_violation.
  * invalid URIs on subscribe / publish(acknowledge) / register / call -> invalid_uri.

Every scenario has a hard timeout; output is one `PASS <name>` or `FAIL <name>: <reason>`
line per scenario (indented "note:" lines may follow; on FAIL the last WAMP messages of
each session are shown, see --wire), and a final `N passed, M failed`. Exit status is 1
if any scenario failed.

Against Crossbar 26.10 these fail by design (Crossbar deviates from the spec there): CALL
`timeout` (seconds, and answered with wamp.error.canceled), CANCEL mode `skip` (never
answered), disclose_me (ignored; Crossbar discloses by role config only), WELCOME lacking
dealer.call_timeout, invalid URIs on publish/register/call (connection dropped instead of
ERROR), RawSocket PING and handshake error replies, a message before HELLO (ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import traceback
import urllib.parse
from collections import namedtuple

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import message  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import (  # noqa: E402
    CBORSerializer,
    JsonSerializer,
    MsgPackSerializer,
)
from autobahn.wamp.types import (  # noqa: E402
    CallOptions,
    CallResult,
    ComponentConfig,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

MAX_ID = 2**53

SERIALIZER_CLASSES = {
    "json": JsonSerializer,
    "msgpack": MsgPackSerializer,
    "cbor": CBORSerializer,
}

# default serializer set for "per serializer" scenarios; cbor.batched is what Buildbot
# offers first, so it gets the full treatment too.
DEFAULT_SERIALIZERS = ["json", "msgpack", "cbor", "cbor.batched"]
BATCHED = ["json.batched", "msgpack.batched", "cbor.batched"]
RAW_SERIALIZERS = ["json", "msgpack", "cbor"]


def make_serializer(name: str):
    base, _, batched = name.partition(".")
    if base not in SERIALIZER_CLASSES or batched not in ("", "batched"):
        raise ValueError(f"unknown serializer {name!r}")
    return SERIALIZER_CLASSES[base](batched=bool(batched))


class Failure(Exception):
    """A scenario assertion failed (message is the report)."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def check_id(value, what):
    check(
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID,
        f"{what} is not an ID in [1, 2^53]: {value!r}",
    )


# --------------------------------------------------------------------------------------
# session plumbing


class Client(ApplicationSession):
    """An ApplicationSession that exposes join/close as futures."""

    def __init__(self, config, label):
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self.label = label
        self.joined = loop.create_future()
        self.closed = loop.create_future()
        self.leave_details = None
        self.joined_sid = None

    def onJoin(self, details):
        self.joined_sid = details.session
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details):
        self.leave_details = details
        if not self.joined.done():
            self.joined.set_exception(
                Failure(f"session {self.label}: left before join: {details.reason} {details.message!r}")
            )
        return super().onLeave(details)

    def onDisconnect(self, *args, **kwargs):
        if not self.joined.done():
            self.joined.set_exception(Failure(f"session {self.label}: transport closed before WELCOME"))
        if not self.closed.done():
            self.closed.set_result(None)
        return super().onDisconnect()

    @property
    def sid(self):
        return self._session_id

    # wire trace: every WAMP message in and out, shown for the sessions of a failed scenario
    def onOpen(self, transport):
        self.trace = getattr(self, "trace", [])
        orig_send = transport.send

        def send(msg):
            self.trace.append((time.monotonic(), "->", msg))
            return orig_send(msg)

        transport.send = send
        return super().onOpen(transport)

    def onMessage(self, msg):
        self.trace = getattr(self, "trace", [])
        self.trace.append((time.monotonic(), "<-", msg))
        return super().onMessage(msg)


def fmt_msg(msg, limit=300):
    try:
        text = repr(msg.marshal())
    except Exception:
        text = repr(msg)
    name = type(msg).__name__
    if isinstance(msg, message.Error):
        name = "Error"
    return f"{name.upper()} {text}"[:limit]


Rec = namedtuple("Rec", "tag args kwargs details")


class Inbox:
    """Collects events / invocations; bounded waits for what is expected."""

    def __init__(self):
        self.items: list[Rec] = []
        self._ev = asyncio.Event()

    def put(self, rec):
        self.items.append(rec)
        self._ev.set()

    def handler(self, tag=None, result=None):
        def h(*args, details=None, **kwargs):
            self.put(Rec(tag, list(args), kwargs, details))
            return result

        return h

    async def wait_for(self, pred, timeout, what):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for it in self.items:
                if pred(it):
                    return it
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Failure(f"no {what} within {timeout}s; received so far: {fmt_recs(self.items)}")
            self._ev.clear()
            try:
                await asyncio.wait_for(self._ev.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_tag(self, tag, timeout=3.0, what=None):
        return await self.wait_for(lambda r: r.tag == tag, timeout, what or f"item {tag!r}")

    def before(self, tag):
        """Items received before the first item with `tag` (the sentinel)."""
        out = []
        for it in self.items:
            if it.tag == tag:
                return out
            out.append(it)
        raise Failure(f"sentinel {tag!r} not received")


def fmt_recs(recs):
    out = []
    for r in recs:
        d = r.details
        extra = ""
        if d is not None:
            for attr in ("topic", "procedure", "publisher", "caller"):
                v = getattr(d, attr, None)
                if v is not None:
                    extra += f" {attr}={v}"
        out.append(f"<{r.tag} args={r.args!r} kwargs={r.kwargs!r}{extra}>")
    return "[" + ", ".join(out) + "]" if out else "nothing"


def _patched_class(base, extra_options, options_index):
    class Patched(base):
        __slots__ = ()

        def marshal(self):
            m = base.marshal(self)
            m[options_index].update(extra_options)
            return m

    return Patched


def send_with_extra_options(sess: Client, msg_type, extra_options: dict):
    """Patch the session's transport so the next outgoing `msg_type` message carries extra
    Options (autobahn 26 no longer has API for e.g. `disclose_me`). Returns an undo fn."""
    transport = sess._transport
    orig = transport.send
    index = {message.Publish: 2, message.Call: 2, message.Subscribe: 2, message.Register: 2}[msg_type]

    def send(msg):
        if type(msg) is msg_type:
            msg.__class__ = _patched_class(msg_type, extra_options, index)
            transport.send = orig
        return orig(msg)

    transport.send = send
    return lambda: setattr(transport, "send", orig)


def pending_call_request_id(sess: Client, fut):
    for rid, req in sess._call_reqs.items():
        if req.on_reply is fut:
            return rid
    raise Failure("could not find the CALL request id in the autobahn session")


def _shielded(aw):
    """Wrap a request future so that giving up on it (timeout) does not cancel it: autobahn
    would then send a CANCEL and treat the router's late answer as a protocol error,
    muddying the report. Its eventual outcome is consumed silently."""
    fut = asyncio.ensure_future(aw)
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return asyncio.shield(fut)


async def expect_app_error(aw, uri, timeout=3.0, what="request"):
    """Await `aw`; it must fail with ApplicationError(uri) within `timeout`."""
    try:
        res = await asyncio.wait_for(_shielded(aw), timeout)
    except ApplicationError as e:
        check(e.error == uri, f"{what}: expected ERROR {uri}, got ERROR {e.error} args={list(e.args)!r} kwargs={e.kwargs!r}")
        return e
    except asyncio.TimeoutError:
        raise Failure(f"{what}: expected ERROR {uri}, got no answer within {timeout}s")
    raise Failure(f"{what}: expected ERROR {uri}, got success: {res!r}")


async def answer(aw, timeout=3.0, what="request"):
    try:
        return await asyncio.wait_for(_shielded(aw), timeout)
    except asyncio.TimeoutError:
        raise Failure(f"{what}: no answer within {timeout}s")
    except ApplicationError as e:
        raise Failure(f"{what}: unexpected ERROR {e.error} args={list(e.args)!r} kwargs={e.kwargs!r}")


def result_parts(res):
    if isinstance(res, CallResult):
        return list(res.results), dict(res.kwresults)
    if res is None:
        return [], {}
    return [res], {}


class Ctx:
    """Per-scenario context: connects sessions, makes unique URIs, cleans up."""

    counter = 0

    def __init__(self, cfg):
        self.cfg = cfg
        Ctx.counter += 1
        self.prefix = f"com.switchyard.itest.p{os.getpid()}.s{Ctx.counter}"
        self.sessions: list[tuple[Client, object]] = []
        self.step_text = "starting"
        self.notes: list[str] = []

    def step(self, text):
        self.step_text = text

    def note(self, text):
        self.notes.append(text)

    def uri(self, name):
        return f"{self.prefix}.{name}"

    async def connect(self, serializer="json", transport="ws", path=None, realm=None, label=None):
        cfg = self.cfg
        realm = realm or cfg.realm
        label = label or f"{transport}/{serializer}#{len(self.sessions) + 1}"
        self.step(f"connecting {label}")
        loop = asyncio.get_running_loop()
        sess = Client(ComponentConfig(realm=realm), label)
        ser = make_serializer(serializer)
        if transport == "ws":
            path = cfg.ws_path if path is None else path
            url = f"ws://{cfg.host}:{cfg.port}{path}"
            factory = WampWebSocketClientFactory(lambda: sess, url=url, serializers=[ser])
            host, port = cfg.host, cfg.port
        elif transport == "raw":
            check(not ser.SERIALIZER_ID.endswith("batched"), "no batched serializers on RawSocket")
            factory = WampRawSocketClientFactory(lambda: sess, serializer=ser)
            host, port = cfg.raw_host, cfg.raw_port
        else:
            raise ValueError(transport)
        try:
            tr, _proto = await asyncio.wait_for(loop.create_connection(factory, host, port), 5)
        except asyncio.TimeoutError:
            raise Failure(f"{label}: TCP connect to {host}:{port} timed out")
        except OSError as e:
            raise Failure(f"{label}: TCP connect to {host}:{port} failed: {e}")
        self.sessions.append((sess, tr))
        try:
            await asyncio.wait_for(asyncio.shield(sess.joined), 5)
        except asyncio.TimeoutError:
            raise Failure(f"{label}: no WELCOME within 5s")
        return sess

    async def close(self):
        for w in getattr(self, "raw_writers", []):
            try:
                w.close()
            except Exception:
                pass
        for sess, tr in self.sessions:
            try:
                if sess.is_attached() and not sess.closed.done():
                    sess.leave()
            except Exception:
                pass
        for sess, tr in self.sessions:
            try:
                await asyncio.wait_for(asyncio.shield(sess.closed), 2)
            except Exception:
                pass
            try:
                tr.close()
            except Exception:
                pass


# --------------------------------------------------------------------------------------
# scenario registry

SCENARIOS = []


def scenario(kind="per_ser"):
    """kind: per_ser (run once per --serializers entry), once, raw (per RawSocket
    serializer), batched (per batched serializer)."""

    def deco(fn):
        SCENARIOS.append((fn.__name__.removeprefix("sc_"), fn, kind))
        return fn

    return deco


# --------------------------------------------------------------------------------------
# session-level scenarios


@scenario("once")
async def sc_welcome_roles(ctx, ser=None):
    s = await ctx.connect("json")
    check_id(s.sid, "WELCOME session id")
    details = await s.joined
    check(details.realm == ctx.cfg.realm, f"SessionDetails.realm = {details.realm!r}")
    roles = s._router_roles or {}
    check("broker" in roles and "dealer" in roles, f"WELCOME roles lack broker/dealer: {sorted(roles)}")
    wanted = {
        "broker": [
            "pattern_based_subscription",
            "publisher_exclusion",
            "subscriber_blackwhite_listing",
            "publisher_identification",
        ],
        "dealer": [
            "progressive_call_results",
            "call_canceling",
            "call_timeout",
            "caller_identification",
            "pattern_based_registration",
            "shared_registration",
        ],
    }
    missing = []
    for role, feats in wanted.items():
        for f in feats:
            if not getattr(roles[role], f, None):
                missing.append(f"{role}.{f}")
    check(not missing, f"WELCOME.details.roles features not announced: {missing}")


@scenario("once")
async def sc_ws_root_path(ctx, ser=None):
    a = await ctx.connect("json", path="/")
    b = await ctx.connect("msgpack", path="/ws")
    inbox = Inbox()
    t = ctx.uri("root")
    await answer(b.subscribe(inbox.handler("ev"), t), what="SUBSCRIBE")
    await answer(a.publish(t, "hi", options=PublishOptions(acknowledge=True)), what="PUBLISH")
    ev = await inbox.wait_tag("ev")
    check(ev.args == ["hi"], f"EVENT args {ev.args!r}")


@scenario("batched")
async def sc_batched_roundtrip(ctx, ser):
    a = await ctx.connect(ser)
    b = await ctx.connect(ser)
    inbox = Inbox()
    t = ctx.uri("batched")
    await answer(b.subscribe(inbox.handler("ev"), t), what="SUBSCRIBE")
    # several messages queued back to back
    for i in range(5):
        a.publish(t, i, {"k": [i, "x" * i]})
    await inbox.wait_for(lambda r: len(inbox.items) >= 5, 3, "5 EVENTs")
    got = [r.args for r in inbox.items]
    check(got == [[i, {"k": [i, "x" * i]}] for i in range(5)], f"EVENTs out of order or wrong: {got!r}")
    await answer(b.register(lambda x: x * 2, ctx.uri("double")), what="REGISTER")
    res = await answer(a.call(ctx.uri("double"), 21), what="CALL")
    check(res == 42, f"CALL result {res!r}")


# --------------------------------------------------------------------------------------
# pub/sub


@scenario()
async def sc_pubsub_exact(ctx, ser):
    pub = await ctx.connect(ser)
    sub = await ctx.connect(ser)
    sub_json = await ctx.connect("json")
    t = ctx.uri("exact")
    inbox, inbox2 = Inbox(), Inbox()
    opts = SubscribeOptions(details_arg="details")
    await answer(sub.subscribe(inbox.handler("ev"), t, options=opts), what="SUBSCRIBE")
    await answer(sub_json.subscribe(inbox2.handler("ev"), t, options=opts), what="SUBSCRIBE")
    ctx.step("publishing")
    args = [1, "two", {"three": 3.5, "n": None, "t": True}, [1, [2]]]
    kwargs = {"a": [1, 2], "unicode": "h\u00e9llo \u2603"}
    pub.publish(t, *args, **kwargs)
    pub.publish(t)  # no payload at all
    for box, name in ((inbox, ser), (inbox2, "json")):
        ev = await box.wait_tag("ev", what=f"EVENT at {name} subscriber")
        check(ev.args == args, f"EVENT args at {name} subscriber: {ev.args!r}")
        check(ev.kwargs == kwargs, f"EVENT kwargs at {name} subscriber: {ev.kwargs!r}")
        check_id(ev.details.publication, "EVENT publication id")
        await box.wait_for(lambda r: len(box.items) >= 2, 3, "second EVENT (no payload)")
        ev2 = box.items[1]
        check(ev2.args == [] and ev2.kwargs == {}, f"empty EVENT carried payload: {ev2.args!r} {ev2.kwargs!r}")
        if ev.details.topic not in (None, t):
            raise Failure(f"exact EVENT has wrong details.topic {ev.details.topic!r}")


@scenario()
async def sc_pubsub_prefix(ctx, ser):
    pub = await ctx.connect(ser)
    sub = await ctx.connect(ser)
    inbox = Inbox()
    base = ctx.uri("pfx")
    sentinel = ctx.uri("sentinel")
    opts = SubscribeOptions(match="prefix", details_arg="details")
    s1 = await answer(sub.subscribe(inbox.handler("pfx"), base, options=opts), what="SUBSCRIBE prefix")
    check_id(s1.id, "subscription id")
    await answer(sub.subscribe(inbox.handler("sentinel"), sentinel), what="SUBSCRIBE sentinel")
    matching = [base + ".a.b", base, base + "extra", base + ".c"]
    for topic in [base + ".a.b", ctx.uri("other.pfx"), base, base + "extra", ctx.uri("pf"), base + ".c"]:
        pub.publish(topic, topic)
    pub.publish(sentinel)
    await inbox.wait_tag("sentinel", what="sentinel EVENT")
    got = inbox.before("sentinel")
    check([r.args for r in got] == [[m] for m in matching], f"prefix EVENTs: expected {matching}, got {fmt_recs(got)}")
    topics = [r.details.topic for r in got]
    check(topics == matching, f"prefix EVENT.details.topic: expected {matching}, got {topics}")


@scenario()
async def sc_pubsub_wildcard(ctx, ser):
    pub = await ctx.connect(ser)
    sub = await ctx.connect(ser)
    inbox = Inbox()
    p = ctx.prefix
    sentinel = ctx.uri("sentinel")
    opts = SubscribeOptions(match="wildcard", details_arg="details")
    # middle empty component (Buildbot: buildrequests..new) and trailing one (control.worker.<id>.)
    await answer(sub.subscribe(inbox.handler("mid"), f"{p}.wc..x", options=opts), what="SUBSCRIBE wildcard")
    await answer(sub.subscribe(inbox.handler("tail"), f"{p}.ctl.worker.5.", options=opts), what="SUBSCRIBE wildcard")
    await answer(sub.subscribe(inbox.handler("sentinel"), sentinel), what="SUBSCRIBE sentinel")
    publish = [
        (f"{p}.wc.foo.x", "mid"),
        (f"{p}.wc.foo.bar.x", None),
        (f"{p}.wc.foo.y", None),
        (f"{p}.wc.x", None),
        (f"{p}.ctl.worker.5.stop", "tail"),
        (f"{p}.ctl.worker.55.stop", None),
        (f"{p}.ctl.worker.5.stop.now", None),
        (f"{p}.wc.bar.x", "mid"),
    ]
    for topic, _ in publish:
        pub.publish(topic, topic)
    pub.publish(sentinel)
    await inbox.wait_tag("sentinel", what="sentinel EVENT")
    got = [(r.tag, r.details.topic, r.args) for r in inbox.before("sentinel")]
    want = [(tag, topic, [topic]) for topic, tag in publish if tag]
    check(got == want, f"wildcard EVENTs (tag, details.topic, args): expected {want}, got {got}")


@scenario()
async def sc_same_subscription_id(ctx, ser):
    a = await ctx.connect(ser)
    b = await ctx.connect("json")
    ids = {}
    for match, topic in (("exact", ctx.uri("same")), ("prefix", ctx.uri("same")), ("wildcard", ctx.uri("same..x"))):
        opts = SubscribeOptions(match=match)
        sa = await answer(a.subscribe(lambda *x, **k: None, topic, options=opts), what=f"SUBSCRIBE {match}")
        sb = await answer(b.subscribe(lambda *x, **k: None, topic, options=opts), what=f"SUBSCRIBE {match}")
        check(sa.id == sb.id, f"{match} {topic}: two sessions got different subscription ids {sa.id} / {sb.id}")
        ids[match] = sa.id
    check(ids["exact"] != ids["prefix"], f"exact and prefix subscriptions on one URI share id {ids['exact']}")


@scenario()
async def sc_exclude_me(ctx, ser):
    a = await ctx.connect(ser)
    b = await ctx.connect(ser)
    t = ctx.uri("excl")
    ia, ib = Inbox(), Inbox()
    await answer(a.subscribe(ia.handler("ev"), t), what="SUBSCRIBE")
    await answer(b.subscribe(ib.handler("ev"), t), what="SUBSCRIBE")
    a.publish(t, 1)  # default exclude_me=True
    a.publish(t, 2, options=PublishOptions(exclude_me=False))
    await ib.wait_for(lambda r: len(ib.items) >= 2, 3, "2 EVENTs at the other subscriber")
    check([r.args for r in ib.items] == [[1], [2]], f"other subscriber got {fmt_recs(ib.items)}")
    await ia.wait_for(lambda r: r.args == [2], 3, "own EVENT with exclude_me=False")
    check([r.args for r in ia.items] == [[2]], f"publisher got its own events: {fmt_recs(ia.items)} (expected only the exclude_me=False one)")


@scenario()
async def sc_publish_acknowledge(ctx, ser):
    pub = await ctx.connect(ser)
    sub = await ctx.connect(ser)
    t = ctx.uri("ack")
    inbox = Inbox()
    await answer(sub.subscribe(inbox.handler("ev"), t, options=SubscribeOptions(details_arg="details")), what="SUBSCRIBE")
    p1 = await answer(pub.publish(t, "x", options=PublishOptions(acknowledge=True)), what="PUBLISH acknowledge")
    check(p1 is not None, "no Publication returned")
    check_id(p1.id, "PUBLISHED publication id")
    p2 = await answer(pub.publish(ctx.uri("nobody.listens"), options=PublishOptions(acknowledge=True)), what="PUBLISH acknowledge (no subscribers)")
    check_id(p2.id, "PUBLISHED publication id (no subscribers)")
    check(p1.id != p2.id, f"two publications got the same id {p1.id}")
    ev = await inbox.wait_tag("ev")
    check(ev.details.publication == p1.id, f"EVENT publication {ev.details.publication} != PUBLISHED {p1.id}")


@scenario()
async def sc_eligible_exclude(ctx, ser):
    pub = await ctx.connect(ser)
    s1 = await ctx.connect(ser)
    s2 = await ctx.connect("json")
    t = ctx.uri("bw")
    i1, i2 = Inbox(), Inbox()
    await answer(s1.subscribe(i1.handler("ev"), t), what="SUBSCRIBE")
    await answer(s2.subscribe(i2.handler("ev"), t), what="SUBSCRIBE")
    pub.publish(t, "eligible-s1", options=PublishOptions(eligible=[s1.sid]))
    pub.publish(t, "exclude-s1", options=PublishOptions(exclude=[s1.sid]))
    pub.publish(t, "eligible-anonymous", options=PublishOptions(eligible_authrole=["anonymous"]))
    pub.publish(t, "exclude-anonymous", options=PublishOptions(exclude_authrole=["anonymous"]))
    pub.publish(t, "eligible-both-exclude-s2", options=PublishOptions(eligible=[s1.sid, s2.sid], exclude=[s2.sid]))
    pub.publish(t, "sentinel")
    for box, want, name in (
        (i1, ["eligible-s1", "eligible-anonymous", "eligible-both-exclude-s2", "sentinel"], "s1"),
        (i2, ["exclude-s1", "eligible-anonymous", "sentinel"], "s2"),
    ):
        await box.wait_for(lambda r: r.args == ["sentinel"], 3, f"sentinel at {name}")
        got = [r.args[0] for r in box.items]
        check(got == want, f"{name} received {got}, expected {want}")


@scenario()
async def sc_disclose_me(ctx, ser):
    pub = await ctx.connect(ser)
    sub = await ctx.connect(ser)
    t = ctx.uri("disclose")
    inbox = Inbox()
    await answer(sub.subscribe(inbox.handler("ev"), t, options=SubscribeOptions(details_arg="details")), what="SUBSCRIBE")
    pub.publish(t, "plain")
    send_with_extra_options(pub, message.Publish, {"disclose_me": True})
    pub.publish(t, "disclosed")
    await inbox.wait_for(lambda r: len(inbox.items) >= 2, 3, "2 EVENTs")
    plain, disclosed = inbox.items[0], inbox.items[1]
    if plain.details.publisher is not None:
        ctx.note(f"publisher disclosed without disclose_me (router policy?): {plain.details.publisher}")
    check(
        disclosed.details.publisher == pub.sid,
        f"disclose_me=true: EVENT.details.publisher = {disclosed.details.publisher!r}, expected {pub.sid}",
    )


@scenario()
async def sc_unsubscribe(ctx, ser):
    pub = await ctx.connect(ser)
    sub = await ctx.connect(ser)
    t = ctx.uri("unsub")
    inbox = Inbox()
    s = await answer(sub.subscribe(inbox.handler("ev"), t), what="SUBSCRIBE")
    await answer(sub.subscribe(inbox.handler("sentinel"), ctx.uri("sentinel")), what="SUBSCRIBE sentinel")
    await answer(s.unsubscribe(), what="UNSUBSCRIBE")
    pub.publish(t, "after-unsubscribe")
    pub.publish(ctx.uri("sentinel"))
    await inbox.wait_tag("sentinel")
    check(inbox.before("sentinel") == [], f"EVENT after UNSUBSCRIBE: {fmt_recs(inbox.before('sentinel'))}")


# --------------------------------------------------------------------------------------
# RPC


@scenario()
async def sc_rpc_basic(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    caller_json = await ctx.connect("json")
    p = ctx.uri("echo")

    def echo(*args, **kwargs):
        return CallResult(*args, **kwargs)

    reg = await answer(callee.register(echo, p), what="REGISTER")
    check_id(reg.id, "registration id")
    await answer(callee.register(lambda a, b: a + b, ctx.uri("add")), what="REGISTER add")
    await answer(callee.register(lambda: None, ctx.uri("nothing")), what="REGISTER nothing")
    args = [1, "two", {"three": [3]}, None, True, 1.5]
    kwargs = {"k": {"nested": ["v", 2]}, "u": "\u2603"}
    for c in (caller, caller_json):
        res = await answer(c.call(p, *args, **kwargs), what="CALL echo")
        got = result_parts(res)
        check(got == (args, kwargs), f"echo RESULT {got!r}, expected {(args, kwargs)!r}")
        res = await answer(c.call(ctx.uri("add"), 2, 40), what="CALL add")
        check(res == 42, f"add RESULT {res!r}")
        res = await answer(c.call(ctx.uri("nothing")), what="CALL nothing")
        check(res is None, f"empty RESULT {res!r}")


@scenario()
async def sc_rpc_application_error(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("fail")

    def fail(*args, **kwargs):
        raise ApplicationError("com.example.error.custom", "reason", 2, detail={"x": 1})

    await answer(callee.register(fail, p), what="REGISTER")
    e = await expect_app_error(caller.call(p, 1), "com.example.error.custom", what="CALL fail")
    check(list(e.args) == ["reason", 2], f"ERROR args {list(e.args)!r}")
    check(e.kwargs == {"detail": {"x": 1}}, f"ERROR kwargs {e.kwargs!r}")


@scenario()
async def sc_rpc_no_such_procedure(ctx, ser):
    caller = await ctx.connect(ser)
    await expect_app_error(caller.call(ctx.uri("missing"), 1), "wamp.error.no_such_procedure", what="CALL")


@scenario()
async def sc_rpc_procedure_already_exists(ctx, ser):
    c1 = await ctx.connect(ser)
    c2 = await ctx.connect("json")
    p = ctx.uri("dup")
    await answer(c1.register(lambda: 1, p), what="REGISTER")
    await expect_app_error(c2.register(lambda: 2, p), "wamp.error.procedure_already_exists", what="second REGISTER (other session)")
    await expect_app_error(c1.register(lambda: 3, p), "wamp.error.procedure_already_exists", what="second REGISTER (same session)")


@scenario()
async def sc_rpc_unregister(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("unreg")
    reg = await answer(callee.register(lambda: "ok", p), what="REGISTER")
    check(await answer(caller.call(p)) == "ok", "call before UNREGISTER failed")
    await answer(reg.unregister(), what="UNREGISTER")
    await expect_app_error(caller.call(p), "wamp.error.no_such_procedure", what="CALL after UNREGISTER")
    # and it can be registered again
    await answer(callee.register(lambda: "again", p), what="REGISTER again")
    check(await answer(caller.call(p)) == "again", "call after re-REGISTER failed")


@scenario()
async def sc_rpc_pattern_registration(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.prefix

    def endpoint(tag):
        def h(*args, details=None, **kwargs):
            return [tag, details.procedure]

        return h

    opts = dict(details_arg="details")
    await answer(callee.register(endpoint("prefix"), f"{p}.pfx", options=RegisterOptions(match="prefix", **opts)), what="REGISTER prefix")
    await answer(callee.register(endpoint("longer-prefix"), f"{p}.pfx.long", options=RegisterOptions(match="prefix", **opts)), what="REGISTER longer prefix")
    await answer(callee.register(endpoint("exact"), f"{p}.pfx.long.exact", options=RegisterOptions(**opts)), what="REGISTER exact")
    await answer(callee.register(endpoint("wildcard"), f"{p}.wc..x", options=RegisterOptions(match="wildcard", **opts)), what="REGISTER wildcard")
    cases = [
        (f"{p}.pfx.a.b", "prefix"),
        (f"{p}.pfx.long.z", "longer-prefix"),
        (f"{p}.pfx.long.exact", "exact"),
        (f"{p}.wc.q.x", "wildcard"),
    ]
    for proc, tag in cases:
        res = await answer(caller.call(proc), what=f"CALL {proc}")
        want = [tag, proc]
        check(res == want, f"CALL {proc}: got {res!r}, expected {want} (registration, details.procedure)")
    await expect_app_error(caller.call(f"{p}.wc.q.r.x"), "wamp.error.no_such_procedure", what="CALL not matching wildcard")


@scenario()
async def sc_rpc_shared_roundrobin(ctx, ser):
    c1 = await ctx.connect(ser)
    c2 = await ctx.connect("json")
    c3 = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("rr")
    rr = RegisterOptions(invoke="roundrobin")
    await answer(c1.register(lambda: "c1", p, options=rr), what="REGISTER roundrobin #1")
    await answer(c2.register(lambda: "c2", p, options=rr), what="REGISTER roundrobin #2")
    got = []
    for _ in range(6):
        got.append(await answer(caller.call(p), what="CALL"))
    check(set(got) == {"c1", "c2"} and all(got[i] != got[i + 1] for i in range(5)), f"roundrobin results not alternating: {got}")
    try:
        await asyncio.wait_for(c3.register(lambda: "c3", p, options=RegisterOptions(invoke="single")), 3)
        raise Failure("REGISTER with a different invoke policy on a shared URI succeeded")
    except ApplicationError as e:
        ctx.note(f"REGISTER with a conflicting invoke policy -> ERROR {e.error}")


@scenario()
async def sc_rpc_progressive(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("progress")

    async def slow(n, details=None):
        if details.progress:
            for i in range(n):
                details.progress(i, step=i)
                await asyncio.sleep(0.01)
        return "done"

    await answer(callee.register(slow, p, options=RegisterOptions(details_arg="details")), what="REGISTER")
    progress = []
    res = await answer(
        caller.call(p, 3, options=CallOptions(on_progress=lambda *a, **kw: progress.append((list(a), kw)))),
        what="CALL receive_progress",
    )
    check(res == "done", f"final RESULT {res!r}")
    want = [([i], {"step": i}) for i in range(3)]
    check(progress == want, f"progressive RESULTs {progress!r}, expected {want!r}")


@scenario()
async def sc_rpc_caller_disclose(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("who")
    await answer(callee.register(lambda details=None: details.caller, p, options=RegisterOptions(details_arg="details")), what="REGISTER")
    res = await answer(caller.call(p), what="CALL plain")
    if res is not None:
        ctx.note(f"caller disclosed without disclose_me (router policy?): {res}")
    send_with_extra_options(caller, message.Call, {"disclose_me": True})
    res = await answer(caller.call(p), what="CALL disclose_me")
    check(res == caller.sid, f"disclose_me=true: INVOCATION.details.caller = {res!r}, expected {caller.sid}")


async def _cancel_setup(ctx, ser, sleep):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("slow")
    invoked = asyncio.Event()
    interrupted = asyncio.Event()

    async def slow():
        invoked.set()
        try:
            await asyncio.sleep(sleep)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "finished"

    await answer(callee.register(slow, p), what="REGISTER")
    fut = caller.call(p)
    ctx.step("waiting for INVOCATION")
    await asyncio.wait_for(invoked.wait(), 3)
    rid = pending_call_request_id(caller, fut)
    return caller, fut, rid, interrupted


async def _cancel(ctx, ser, mode):
    caller, fut, rid, interrupted = await _cancel_setup(ctx, ser, sleep=4.0)
    ctx.step(f"sending CANCEL mode={mode}")
    t0 = time.monotonic()
    caller._transport.send(message.Cancel(rid, mode=mode))
    ctx.step(f"waiting for ERROR wamp.error.canceled after CANCEL mode={mode}")
    await expect_app_error(asyncio.shield(fut), "wamp.error.canceled", timeout=2.0, what=f"CALL after CANCEL mode={mode}")
    elapsed = time.monotonic() - t0
    if mode == "skip":
        await asyncio.sleep(0.3)
        check(not interrupted.is_set(), "CANCEL mode=skip sent an INTERRUPT to the callee")
    else:
        ctx.step(f"waiting for INTERRUPT at callee (mode={mode})")
        try:
            await asyncio.wait_for(interrupted.wait(), 2)
        except asyncio.TimeoutError:
            raise Failure(f"CANCEL mode={mode}: callee got no INTERRUPT")
    ctx.note(f"ERROR after {elapsed * 1000:.0f} ms")


@scenario()
async def sc_rpc_cancel_kill(ctx, ser):
    await _cancel(ctx, ser, "kill")


@scenario()
async def sc_rpc_cancel_killnowait(ctx, ser):
    await _cancel(ctx, ser, "killnowait")


@scenario()
async def sc_rpc_cancel_skip(ctx, ser):
    await _cancel(ctx, ser, "skip")


@scenario()
async def sc_rpc_timeout_ms(ctx, ser):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("slow")
    interrupted = asyncio.Event()

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "too late"

    await answer(callee.register(slow, p), what="REGISTER")
    await answer(callee.register(lambda: "quick", ctx.uri("quick")), what="REGISTER quick")
    # a call that completes well within its timeout is unaffected
    res = await answer(caller.call(ctx.uri("quick"), options=CallOptions(timeout=2000)), what="CALL quick timeout=2000")
    check(res == "quick", f"quick call RESULT {res!r}")
    t0 = time.monotonic()
    ctx.step("waiting for ERROR wamp.error.timeout (CALL.Options.timeout=500 ms)")
    await expect_app_error(
        caller.call(p, options=CallOptions(timeout=500)), "wamp.error.timeout", timeout=3.0, what="CALL timeout=500 (ms)"
    )
    elapsed = time.monotonic() - t0
    check(0.3 <= elapsed <= 2.5, f"timeout=500ms fired after {elapsed:.2f}s")
    ctx.note(f"wamp.error.timeout after {elapsed * 1000:.0f} ms; callee interrupted: {interrupted.is_set()}")


async def _callee_leaves(ctx, ser, how):
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("doomed")
    invoked = asyncio.Event()

    async def slow():
        invoked.set()
        await asyncio.sleep(8)
        return "never"

    await answer(callee.register(slow, p), what="REGISTER")
    fut = caller.call(p)
    await asyncio.wait_for(invoked.wait(), 3)
    ctx.step(f"callee leaving ({how}) with a call outstanding")
    t0 = time.monotonic()
    if how == "goodbye":
        callee.leave()
    else:
        callee._transport.transport.abort() if hasattr(callee._transport, "transport") else callee._transport.close()
    try:
        res = await asyncio.wait_for(asyncio.shield(fut), 3)
        raise Failure(f"caller got RESULT {res!r} from a callee that left")
    except ApplicationError as e:
        ctx.note(f"caller got ERROR {e.error} {list(e.args)!r} after {(time.monotonic() - t0) * 1000:.0f} ms")
    except asyncio.TimeoutError:
        raise Failure(f"callee left ({how}) mid-call: caller got no ERROR within 3s")
    # the procedure is gone
    await expect_app_error(caller.call(p), "wamp.error.no_such_procedure", what="CALL after callee left")


@scenario()
async def sc_rpc_callee_leaves_goodbye(ctx, ser):
    await _callee_leaves(ctx, ser, "goodbye")


@scenario()
async def sc_rpc_callee_drops_connection(ctx, ser):
    await _callee_leaves(ctx, ser, "drop")


@scenario()
async def sc_rpc_caller_leaves_progressive(ctx, ser):
    """A caller that asked for progressive results goes away: the callee gets INTERRUPT."""
    callee = await ctx.connect(ser)
    caller = await ctx.connect(ser)
    p = ctx.uri("stream")
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def stream(details=None):
        started.set()
        try:
            for i in range(100):
                if details.progress:
                    details.progress(i)
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "end"

    await answer(callee.register(stream, p, options=RegisterOptions(details_arg="details")), what="REGISTER")
    fut = caller.call(p, options=CallOptions(on_progress=lambda *a: None))
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    await asyncio.wait_for(started.wait(), 3)
    ctx.step("caller leaving; waiting for INTERRUPT at the callee")
    caller.leave()
    try:
        await asyncio.wait_for(interrupted.wait(), 3)
    except asyncio.TimeoutError:
        raise Failure("callee got no INTERRUPT within 3s after the caller (receive_progress) left")


@scenario()
async def sc_rpc_concurrent_calls(ctx, ser):
    """Many outstanding calls from two callers, answered out of order by two callees."""
    c1 = await ctx.connect(ser)
    c2 = await ctx.connect("json")
    callers = [await ctx.connect(ser), await ctx.connect("msgpack")]
    p = ctx.uri("delay")

    def mk(tag):
        async def delayed(i, delay):
            await asyncio.sleep(delay)
            return [tag, i]

        return delayed

    rr = RegisterOptions(invoke="roundrobin")
    await answer(c1.register(mk("c1"), p, options=rr), what="REGISTER #1")
    await answer(c2.register(mk("c2"), p, options=rr), what="REGISTER #2")
    futs = []
    for i in range(60):
        futs.append(callers[i % 2].call(p, i, ((i * 7) % 10) / 100.0))
    results = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 5)
    bad = [(i, r) for i, r in enumerate(results) if not (isinstance(r, list) and r[1] == i)]
    check(not bad, f"{len(bad)} calls got the wrong answer, e.g. {bad[:5]}")
    tags = {r[0] for r in results}
    check(tags == {"c1", "c2"}, f"calls not spread over both callees: {tags}")


@scenario()
async def sc_pubsub_ordering(ctx, ser):
    """500 events from one publisher arrive complete and in order at subscribers of
    every serializer (exact and prefix subscriptions)."""
    pub = await ctx.connect(ser)
    subs = [await ctx.connect(s) for s in ("json", "msgpack", "cbor")]
    t = ctx.uri("order.x")
    boxes = []
    for i, sub in enumerate(subs):
        box = Inbox()
        await answer(sub.subscribe(box.handler("exact"), t), what="SUBSCRIBE")
        await answer(sub.subscribe(box.handler("prefix"), ctx.uri("order"), options=SubscribeOptions(match="prefix")), what="SUBSCRIBE prefix")
        boxes.append(box)
    n = 500
    for i in range(n):
        pub.publish(t, i, {"pad": "p" * (i % 50)})
    for box, sub in zip(boxes, subs):
        await box.wait_for(lambda r: len(box.items) >= 2 * n, 8, f"{2 * n} EVENTs at {sub.label}")
        for tag in ("exact", "prefix"):
            seq = [r.args[0] for r in box.items if r.tag == tag]
            check(seq == list(range(n)), f"{tag} EVENTs at {sub.label} out of order / missing: first bad index "
                  f"{next((k for k, v in enumerate(seq) if v != k), len(seq))}, count {len(seq)}")


@scenario("once")
async def sc_no_such_realm(ctx, ser=None):
    try:
        await ctx.connect("json", realm="com.switchyard.no.such.realm")
    except Failure as e:
        check("wamp.error.no_such_realm" in str(e), f"HELLO to an unknown realm: {e}")
        return
    raise Failure("HELLO to an unknown realm got WELCOME")


async def _raw_handshake(ctx, hs: bytes):
    """Open a TCP connection, send a RawSocket handshake, return (reader, writer, reply)."""
    cfg = ctx.cfg
    reader, writer = await asyncio.wait_for(asyncio.open_connection(cfg.raw_host, cfg.raw_port), 5)
    ctx.raw_writers = getattr(ctx, "raw_writers", []) + [writer]
    writer.write(hs)
    await writer.drain()
    try:
        reply = await asyncio.wait_for(reader.readexactly(4), 3)
    except asyncio.IncompleteReadError as e:
        reply = e.partial  # closed early: b"" or a partial reply
    except ConnectionError:
        reply = b""  # reset
    except asyncio.TimeoutError:
        reply = None
    return reader, writer, reply


def _hs(reply):
    if reply is None:
        return "none within 3s"
    return reply.hex() if reply else "connection closed/reset without a reply"


async def _raw_frame(reader, timeout=3):
    hdr = await asyncio.wait_for(reader.readexactly(4), timeout)
    length = int.from_bytes(hdr[1:4], "big")
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return hdr[0] & 0x07, body


@scenario("once")
async def sc_rawsocket_handshake(ctx, ser=None):
    """RawSocket at byte level: handshake echo, HELLO/WELCOME, handshake error replies."""
    import json as _json

    # JSON, max length 2^(9+15) = 16 MiB
    ctx.step("RawSocket handshake")
    reader, writer, reply = await _raw_handshake(ctx, bytes([0x7F, 0xF1, 0, 0]))
    check(reply is not None and len(reply) == 4, f"handshake: no 4-byte reply, got {reply!r}")
    check(reply[0] == 0x7F and reply[1] & 0x0F == 1 and reply[2:] == b"\0\0", f"handshake reply {reply.hex()} (want 7f?1 0000)")
    hello = _json.dumps([1, ctx.cfg.realm, {"roles": {"subscriber": {}}}]).encode()
    writer.write(bytes([0x00]) + len(hello).to_bytes(3, "big") + hello)
    await writer.drain()
    ctx.step("waiting for WELCOME over RawSocket")
    t, body = await _raw_frame(reader)
    check(t == 0 and _json.loads(body)[0] == 2, f"no WELCOME after HELLO over RawSocket: frame type {t}, {body[:200]!r}")
    writer.close()
    # unsupported serializer (5 = FlatBuffers) -> 0x7F 0x10 0 0
    ctx.step("handshake with an unsupported serializer")
    _, w, reply = await _raw_handshake(ctx, bytes([0x7F, 0xF5, 0, 0]))
    check(reply == bytes([0x7F, 0x10, 0, 0]), f"handshake with serializer 5: reply {_hs(reply)} (want 7f100000)")
    w.close()
    # reserved bytes used -> 0x7F 0x30 0 0
    ctx.step("handshake with reserved bits set")
    _, w, reply = await _raw_handshake(ctx, bytes([0x7F, 0xF2, 0, 1]))
    check(reply == bytes([0x7F, 0x30, 0, 0]), f"handshake with reserved bits set: reply {_hs(reply)} (want 7f300000)")
    w.close()


@scenario("once")
async def sc_rawsocket_ping(ctx, ser=None):
    """RawSocket PING frame (type 1) is answered by a PONG (type 2) echoing the payload."""
    import json as _json

    reader, writer, reply = await _raw_handshake(ctx, bytes([0x7F, 0xF1, 0, 0]))
    check(reply and reply[0] == 0x7F and reply[1] & 0x0F == 1, f"handshake reply {reply!r}")
    hello = _json.dumps([1, ctx.cfg.realm, {"roles": {"subscriber": {}}}]).encode()
    writer.write(bytes([0x00]) + len(hello).to_bytes(3, "big") + hello)
    await writer.drain()
    ctx.step("waiting for WELCOME over RawSocket")
    t, body = await _raw_frame(reader)
    check(t == 0 and _json.loads(body)[0] == 2, f"no WELCOME after HELLO over RawSocket: frame type {t}, {body[:200]!r}")
    payload = b"switchyard-ping"
    ctx.step("waiting for PONG")
    writer.write(bytes([0x01]) + len(payload).to_bytes(3, "big") + payload)
    await writer.drain()
    ctx.step("waiting for PONG")
    try:
        t, body = await _raw_frame(reader)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise Failure(f"PING: connection closed instead of PONG ({e!r})")
    except asyncio.TimeoutError:
        raise Failure("PING: no PONG within 3s")
    check(t == 2 and body == payload, f"PING answered by frame type {t} {body[:100]!r} (want PONG echoing the payload)")
    writer.close()


@scenario("once")
async def sc_http_without_upgrade(ctx, ser=None):
    """A plain HTTP GET (no WebSocket upgrade) on the WAMP port gets an HTTP answer, not a
    hang, and the router keeps serving."""
    cfg = ctx.cfg
    reader, writer = await asyncio.wait_for(asyncio.open_connection(cfg.host, cfg.port), 5)
    ctx.raw_writers = getattr(ctx, "raw_writers", []) + [writer]
    writer.write(f"GET {cfg.ws_path} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    ctx.step("waiting for an HTTP status line")
    try:
        line = await asyncio.wait_for(reader.readline(), 3)
    except asyncio.TimeoutError:
        raise Failure("plain HTTP GET: no response within 3s")
    check(re.match(rb"HTTP/1\.[01] \d{3} ", line or b""), f"plain HTTP GET: got {line[:100]!r}")
    ctx.note(f"plain GET {cfg.ws_path} -> {line.decode(errors='replace').strip()}")
    writer.close()
    await ctx.connect("json")


@scenario("once")
async def sc_protocol_violation(ctx, ser=None):
    """A WAMP message other than HELLO before the session is open -> ABORT
    wamp.error.protocol_violation (or at least: the connection is closed)."""
    import json as _json

    reader, writer, reply = await _raw_handshake(ctx, bytes([0x7F, 0xF1, 0, 0]))
    check(reply and reply[0] == 0x7F, f"handshake reply {reply!r}")
    ctx.step("waiting for ABORT after SUBSCRIBE before HELLO")
    sub = _json.dumps([32, 1, {}, "com.example.topic"]).encode()
    writer.write(bytes([0x00]) + len(sub).to_bytes(3, "big") + sub)
    await writer.drain()
    try:
        t, body = await _raw_frame(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        ctx.note("SUBSCRIBE before HELLO: connection closed without ABORT")
        return
    except asyncio.TimeoutError:
        raise Failure("SUBSCRIBE before HELLO: neither ABORT nor close within 3s")
    msg = _json.loads(body)
    check(t == 0 and msg[0] == 3 and msg[2] == "wamp.error.protocol_violation", f"SUBSCRIBE before HELLO answered with {msg!r}")
    try:
        rest = await asyncio.wait_for(reader.read(), 3)
    except asyncio.TimeoutError:
        raise Failure("connection stays open after ABORT protocol_violation")
    check(rest == b"", f"more data after ABORT: {rest[:100]!r}")


# --------------------------------------------------------------------------------------
# binary payloads, RawSocket, invalid URIs


@scenario("once")
async def sc_binary_payloads(ctx, ser=None):
    sess = {}
    for s in ("json", "msgpack", "cbor"):
        sess[s] = await ctx.connect(s)
    inboxes = {s: Inbox() for s in sess}
    t = ctx.uri("bin")
    for s, box in inboxes.items():
        await answer(sess[s].subscribe(box.handler("ev"), t), what=f"SUBSCRIBE {s}")
    blob = bytes(range(256)) + b"\x00switchyard"
    for src in sess:
        sess[src].publish(t, blob, src, {"b": blob, "empty": b""}, bin=blob, options=PublishOptions(exclude_me=False))
    for dst, box in inboxes.items():
        await box.wait_for(lambda r: len(box.items) >= 3, 3, f"3 EVENTs at {dst}")
        for r in box.items:
            src = r.args[1] if len(r.args) > 1 else "?"
            ok = (
                r.args[0] == blob
                and isinstance(r.args[0], bytes)
                and r.args[2] == {"b": blob, "empty": b""}
                and isinstance(r.args[2]["b"], bytes)
                and r.kwargs.get("bin") == blob
            )
            check(ok, f"binary {src} -> {dst}: received {fmt_recs([r])[:400]}")
    # RPC binary round trip: json caller, msgpack and cbor callees (and the other way round)
    await answer(sess["msgpack"].register(lambda b: [type(b).__name__, b[::-1]], ctx.uri("rev.msgpack")), what="REGISTER")
    await answer(sess["json"].register(lambda b: [type(b).__name__, b[::-1]], ctx.uri("rev.json")), what="REGISTER")
    res = await answer(sess["json"].call(ctx.uri("rev.msgpack"), blob), what="CALL json->msgpack")
    check(res == ["bytes", blob[::-1]], f"json->msgpack binary call: {res!r}"[:400])
    res = await answer(sess["cbor"].call(ctx.uri("rev.json"), blob), what="CALL cbor->json")
    check(res == ["bytes", blob[::-1]], f"cbor->json binary call: {res!r}"[:400])


PAYLOAD_VALUES = [
    0, -1, 1, 2**31, -(2**31) - 1, 2**53, -(2**53), 2**63 - 1, -(2**63), 2**64 - 1,
    1.5, -0.0, 0.1, 1e300, -2.5e-300, 1.0,
    True, False, None,
    "", "plain", "h\u00e9llo \u2603 \U0001F600 \u4e2d\u6587", "quote\" backslash\\ nl\n tab\t nul\u0000 del\u007f",
    [], {}, [[], {}, [[[]]]], {"nested": {"deep": [1, {"x": None}]}, "\u00fcml\u00e4ut": "k"},
]


@scenario("once")
async def sc_payload_fidelity(ctx, ser=None):
    """Every JSON-representable value survives json/msgpack/cbor publisher -> subscriber of
    each other serializer unchanged (ints up to 64 bit, floats stay floats, unicode
    including astral characters and escapes, empty containers, kwargs without args)."""
    names = ("json", "msgpack", "cbor")
    sess = {n: await ctx.connect(n) for n in names}
    boxes = {n: Inbox() for n in names}
    t = ctx.uri("fidelity")
    for n in names:
        await answer(sess[n].subscribe(boxes[n].handler("ev"), t), what=f"SUBSCRIBE {n}")
    for n in names:
        sess[n].publish(t, n, *PAYLOAD_VALUES, options=PublishOptions(exclude_me=False))
        sess[n].publish(t, options=PublishOptions(exclude_me=False), src=n, only="kwargs")
    problems = []
    for dst in names:
        box = boxes[dst]
        await box.wait_for(lambda r: len(box.items) >= 2 * len(names), 3, f"{2 * len(names)} EVENTs at {dst}")
        for r in box.items:
            if r.kwargs.get("only") == "kwargs":
                if r.args != [] or r.kwargs != {"src": r.kwargs.get("src"), "only": "kwargs"}:
                    problems.append(f"{r.kwargs.get('src')}->{dst}: kwargs-only EVENT became args={r.args!r} kwargs={r.kwargs!r}")
                continue
            src, vals = r.args[0], r.args[1:]
            if len(vals) != len(PAYLOAD_VALUES):
                problems.append(f"{src}->{dst}: {len(vals)} values instead of {len(PAYLOAD_VALUES)}")
                continue
            for want, got in zip(PAYLOAD_VALUES, vals):
                same = got == want and type(got) is type(want)
                if isinstance(want, float) and isinstance(got, float) and want == 0.0:
                    same = str(got) == str(want)  # keep the sign of -0.0
                if not same:
                    problems.append(f"{src}->{dst}: sent {want!r} ({type(want).__name__}), got {got!r} ({type(got).__name__})")
    check(not problems, f"{len(problems)} values changed: " + "; ".join(problems[:12]))


@scenario("once")
async def sc_large_payload(ctx, ser=None):
    a = await ctx.connect("msgpack")
    b = await ctx.connect("json")
    inbox = Inbox()
    t = ctx.uri("large")
    await answer(b.subscribe(inbox.handler("ev"), t), what="SUBSCRIBE")
    big = "x" * (256 * 1024)
    a.publish(t, big)
    ev = await inbox.wait_tag("ev", what="256 KiB EVENT")
    check(ev.args == [big], "256 KiB payload corrupted")


@scenario("raw")
async def sc_rawsocket_pubsub(ctx, ser):
    pub = await ctx.connect(ser, transport="raw")
    sub = await ctx.connect(ser, transport="raw")
    ws_sub = await ctx.connect("json")
    t = ctx.uri("raw")
    i1, i2 = Inbox(), Inbox()
    opts = SubscribeOptions(match="prefix", details_arg="details")
    await answer(sub.subscribe(i1.handler("ev"), ctx.prefix, options=opts), what="SUBSCRIBE (raw)")
    await answer(ws_sub.subscribe(i2.handler("ev"), t), what="SUBSCRIBE (ws)")
    pubd = await answer(pub.publish(t, "r", b"\x01\x02", k={"x": [1]}, options=PublishOptions(acknowledge=True)), what="PUBLISH (raw)")
    check_id(pubd.id, "publication id")
    for box, name in ((i1, "raw"), (i2, "ws")):
        ev = await box.wait_tag("ev", what=f"EVENT at {name} subscriber")
        check(ev.args == ["r", b"\x01\x02"] and ev.kwargs == {"k": {"x": [1]}}, f"{name} EVENT {fmt_recs([ev])}")
    check(i1.items[0].details.topic == t, f"prefix EVENT over RawSocket: details.topic {i1.items[0].details.topic!r}")
    # ws -> raw
    ws_sub.publish(t + ".back", "back")
    ev = await i1.wait_for(lambda r: r.args == ["back"], 3, "EVENT ws->raw")


@scenario("raw")
async def sc_rawsocket_rpc(ctx, ser):
    callee = await ctx.connect(ser, transport="raw")
    caller = await ctx.connect(ser, transport="raw")
    ws_caller = await ctx.connect("msgpack")
    p = ctx.uri("rawadd")
    await answer(callee.register(lambda a, b, **kw: CallResult(a + b, **kw), p), what="REGISTER (raw)")
    for c, name in ((caller, "raw"), (ws_caller, "ws")):
        res = await answer(c.call(p, 40, 2, tag=name), what=f"CALL ({name})")
        check(result_parts(res) == ([42], {"tag": name}), f"{name} CALL RESULT {result_parts(res)!r}")
    await expect_app_error(caller.call(ctx.uri("missing")), "wamp.error.no_such_procedure", what="CALL missing (raw)")
    # progressive over rawsocket
    async def prog(details=None):
        for i in range(2):
            details.progress(i)
        return "end"

    await answer(callee.register(prog, p + ".prog", options=RegisterOptions(details_arg="details")), what="REGISTER prog")
    seen = []
    res = await answer(caller.call(p + ".prog", options=CallOptions(on_progress=lambda *a: seen.append(a[0]))), what="CALL prog")
    check(res == "end" and seen == [0, 1], f"progressive over RawSocket: result {res!r} progress {seen!r}")


@scenario()
async def sc_invalid_uri(ctx, ser):
    """Every (request, bad URI) pair must get ERROR wamp.error.invalid_uri and leave the
    session usable; all deviations are collected (reconnecting when the router dropped
    the session) and reported together."""
    bad = ["com..bad", "com.bad uri", "com.bad#hash", ".leading", "trailing."]
    requests = []
    for uri in bad:
        requests += [
            (f"SUBSCRIBE {uri!r}", lambda s, u=uri: s.subscribe(lambda *a: None, u)),
            (f"PUBLISH(acknowledge) {uri!r}", lambda s, u=uri: s.publish(u, 1, options=PublishOptions(acknowledge=True))),
            (f"REGISTER {uri!r}", lambda s, u=uri: s.register(lambda: None, u)),
            (f"CALL {uri!r}", lambda s, u=uri: s.call(u)),
        ]
    requests.append(
        (
            "SUBSCRIBE wildcard 'com.bad uri..x'",
            lambda s: s.subscribe(lambda *a: None, "com.bad uri..x", options=SubscribeOptions(match="wildcard")),
        )
    )
    outcomes = {}  # outcome text -> [request, ...]
    s = await ctx.connect(ser)
    # autobahn validates some URIs client-side; switch that off so the router sees them
    orig_check = message.check_or_raise_uri
    message.check_or_raise_uri = lambda value, *a, **kw: value
    try:
        for what, make in requests:
            ctx.step(what)
            try:
                res = await asyncio.wait_for(_shielded(make(s)), 2.0)
                outcome = f"success ({res!r})"
            except ApplicationError as e:
                outcome = "ok" if e.error == "wamp.error.invalid_uri" else f"ERROR {e.error}"
            except asyncio.TimeoutError:
                outcome = "no answer within 2s"
            if not s.is_attached():
                reason = getattr(s.leave_details, "reason", None)
                outcome = f"session closed by the router ({reason})"
                s = await ctx.connect(ser)
            outcomes.setdefault(outcome, []).append(what)
    finally:
        message.check_or_raise_uri = orig_check
    problems = [f"{o}: {', '.join(w)}" for o, w in outcomes.items() if o != "ok"]
    # the session is still usable afterwards
    inbox = Inbox()
    await answer(s.subscribe(inbox.handler("ev"), ctx.uri("ok")), what="SUBSCRIBE after errors")
    await answer(s.publish(ctx.uri("ok"), 1, options=PublishOptions(acknowledge=True, exclude_me=False)), what="PUBLISH after errors")
    await inbox.wait_tag("ev")
    bad_count = sum(len(w) for o, w in outcomes.items() if o != "ok")
    check(not problems, f"{bad_count} of {len(requests)} requests not answered with ERROR wamp.error.invalid_uri: " + " | ".join(problems))


# --------------------------------------------------------------------------------------
# runner


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=False, default=os.environ.get("WAMP_ROUTER_URL"), help="ws://127.0.0.1:PORT/ws")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--rawsocket", default=None, help="tcp://HOST:PORT (default: host and port of --url)")
    ap.add_argument("--serializers", default=",".join(DEFAULT_SERIALIZERS), help="for per-serializer scenarios")
    ap.add_argument("--only", default=None, help="regex on scenario names")
    ap.add_argument("--exclude", default=None, help="regex on scenario names to skip")
    ap.add_argument("--timeout", type=float, default=10.0, help="hard timeout per scenario (s)")
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    ap.add_argument("--wire", type=int, default=12, help="on FAIL, show the last N WAMP messages of each session (0: off)")
    ap.add_argument("--verbose", action="store_true", help="autobahn debug logging")
    args = ap.parse_args(argv)
    if not args.list and not args.url:
        ap.error("--url is required")
    if args.url:
        u = urllib.parse.urlparse(args.url)
        if u.scheme != "ws":
            ap.error("--url must be ws://HOST:PORT/PATH")
        args.host, args.port = u.hostname, u.port or 80
        args.ws_path = u.path or "/"
        r = urllib.parse.urlparse(args.rawsocket or f"tcp://{args.host}:{args.port}")
        args.raw_host, args.raw_port = r.hostname, r.port
    args.serializers = [s for s in args.serializers.split(",") if s]
    for s in args.serializers:
        make_serializer(s)
    return args


def expand(args):
    out = []
    for name, fn, kind in SCENARIOS:
        if kind == "once":
            out.append((name, fn, None))
        else:
            sers = {"per_ser": args.serializers, "raw": RAW_SERIALIZERS, "batched": BATCHED}[kind]
            for s in sers:
                out.append((f"{name}[{s}]", fn, s))
    if args.only:
        out = [x for x in out if re.search(args.only, x[0])]
    if args.exclude:
        out = [x for x in out if not re.search(args.exclude, x[0])]
    return out


async def run_scenario(args, ctx, name, run):
    """Runs one scenario (`run()` makes its coroutine) under the hard timeout, prints its
    PASS/FAIL line, notes and (on failure) the last wire messages; returns True if it passed.
    Shared by autobahn_mesh.py and autobahn_meta.py."""
    t0 = time.monotonic()
    reason = None
    try:
        await asyncio.wait_for(run(), args.timeout)
    except asyncio.TimeoutError:
        if time.monotonic() - t0 >= args.timeout - 0.2:
            reason = f"hard timeout {args.timeout:.0f}s while: {ctx.step_text}"
        else:
            reason = f"timed out while: {ctx.step_text}"
    except Failure as e:
        reason = str(e)
    except ApplicationError as e:
        reason = f"unexpected ERROR {e.error} args={list(e.args)!r} kwargs={e.kwargs!r} while: {ctx.step_text}"
    except Exception as e:  # a bug in the scenario or autobahn trouble: show where
        tb = traceback.extract_tb(e.__traceback__)[-1]
        reason = f"{type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:{tb.lineno}) while: {ctx.step_text}"
    finally:
        try:
            await asyncio.wait_for(ctx.close(), 5)
        except Exception:
            pass
    ms = (time.monotonic() - t0) * 1000
    if reason is None:
        print(f"PASS {name}", flush=True)
    else:
        print(f"FAIL {name}: {reason}", flush=True)
    for n in ctx.notes:
        print(f"    note: {n}", flush=True)
    if reason is not None and args.wire > 0:
        for sess, _ in ctx.sessions:
            trace = getattr(sess, "trace", [])
            print(f"    wire {sess.label} (session {sess.joined_sid}), last {min(len(trace), args.wire)} of {len(trace)}:", flush=True)
            for ts, direction, msg in trace[-args.wire:]:
                print(f"      {(ts - t0) * 1000:7.0f}ms {direction} {fmt_msg(msg)}", flush=True)
    if getattr(args, "verbose", False):
        print(f"    ({ms:.0f} ms)", flush=True)
    return reason is None


async def run_all(args):
    passed, failed = 0, 0
    for name, fn, ser in expand(args):
        ctx = Ctx(args)
        if await run_scenario(args, ctx, name, lambda: fn(ctx, ser)):
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, _, _ in expand(args):
            print(name)
        return 0
    txaio.start_logging(level="debug" if args.verbose else "critical")
    failed = asyncio.run(run_all(args))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
