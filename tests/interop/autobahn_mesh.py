#!/usr/bin/env python3
"""Mesh interop: autobahn-python (asyncio) sessions spread over the nodes of a switchyard mesh.

Usage:
    autobahn_mesh.py --url ws://127.0.0.1:PORT_A/ws --url ws://127.0.0.1:PORT_B/ws
                     --url ws://127.0.0.1:PORT_C/ws [--realm realm1] [--only REGEX]
                     [--exclude REGEX] [--timeout 20] [--wire 12] [--list] [--verbose]

Nodes are named A, B, C after the order of --url (at least two; with two, C is A again).
Each scenario puts its sessions on chosen nodes, so publisher and subscribers, caller and
callees, are on different routers and every message crosses a peer link. Every scenario
runs once per serializer mapping (which serializer the sessions on each node use):
A=json B=msgpack C=cbor.batched, then A=cbor B=json.batched C=msgpack.

A subscription or registration reaches the other nodes asynchronously after
SUBSCRIBED/REGISTERED (docs/mesh.md, "Propagation window"). Scenarios therefore wait for
it in a bounded way instead of sleeping: they publish acknowledged probe events
(args[0] == "__probe__") until every subscriber has received one (at most 5 s), or call
until the procedure answers the way the final registration set would. Probe events are left
out of the assertions on the real traffic, but every scenario ends by checking that no
subscription received any publication (probe or not) twice.

What it checks:
  * PubSub across nodes: exact (two subscribers on one node and one on another, args and
    kwargs, empty payload, one publication ID everywhere), prefix and wildcard (with
    EVENT.details.topic, Buildbot's empty-component patterns, a longer prefix on a third
    node), one session with exact+prefix+wildcard subscriptions all matching a publication
    (one EVENT per subscription), exclude_me false per match policy (the publisher on A
    gets its own events, B and C get exactly one copy each; exclude_me default excludes
    only the publisher), acknowledge (PUBLISHED ID == EVENT ID on other nodes),
    eligible/exclude by remote session ID, authid and authrole, disclose_me, 300-event
    order from publishers on two nodes.
  * RPC across nodes: args/kwargs and application errors, prefix/wildcard/exact
    registrations on different nodes (precedence), shared registrations (roundrobin over
    callees on A, B and C; last; first; random; a mismatched invoke policy refused), a
    `single` registration conflicting across nodes (procedure_already_exists),
    progressive results, CANCEL kill/killnowait/skip, CALL timeout (caller gets
    wamp.error.timeout, the remote callee INTERRUPT; after cancel and timeout the caller
    has exactly one ERROR and the callee at most one INTERRUPT), a remote callee dropping its
    connection mid-call, a caller with receive_progress leaving (remote callee
    interrupted), 60 concurrent calls answered out of order.

Output: one `PASS <name>` / `FAIL <name>: <reason>` line per scenario (on FAIL, the last
WAMP messages of each session), and a final `N passed, M failed`; exit status 1 if any
failed.
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

# the helpers of the single-router scenarios (same directory)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import autobahn_scenarios as base  # noqa: E402  (also selects asyncio for txaio)
from autobahn_scenarios import (  # noqa: E402
    Client,
    Failure,
    Inbox,
    answer,
    check,
    check_id,
    expect_app_error,
    fmt_msg,
    fmt_recs,
    make_serializer,
    pending_call_request_id,
    result_parts,
    send_with_extra_options,
)

import txaio  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import message  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.types import (  # noqa: E402
    CallOptions,
    CallResult,
    ComponentConfig,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

NODES = "ABC"
A, B, C = 0, 1, 2
MAPPINGS = [("json", "msgpack", "cbor.batched"), ("cbor", "json.batched", "msgpack")]
PROBE = "__probe__"
PROPAGATION = 5.0  # bound for a subscription/registration to reach the other nodes


def is_probe(rec):
    return bool(rec.args) and rec.args[0] == PROBE


def real(box, tag=None):
    return [r for r in box.items if not is_probe(r) and (tag is None or r.tag == tag)]


class MeshCtx:
    """Per-scenario context: sessions on chosen nodes, unique URIs, cleanup."""

    counter = 0

    def __init__(self, cfg, mapping):
        self.cfg = cfg
        self.mapping = mapping
        MeshCtx.counter += 1
        self.prefix = f"com.switchyard.mesh.p{os.getpid()}.s{MeshCtx.counter}"
        self.sessions: list[tuple[Client, object]] = []
        self.step_text = "starting"
        self.notes: list[str] = []
        self.boxes: list[tuple[Inbox, str]] = []

    def step(self, text):
        self.step_text = text

    def note(self, text):
        self.notes.append(text)

    def uri(self, name):
        return f"{self.prefix}.{name}"

    def inbox(self, name):
        box = Inbox()
        self.boxes.append((box, name))
        return box

    async def connect(self, node, label=None):
        url = self.cfg.urls[node % len(self.cfg.urls)]
        ser = self.mapping[node % len(self.mapping)]
        label = label or f"{NODES[node]}/{ser}#{len(self.sessions) + 1}"
        self.step(f"connecting {label} to {url}")
        u = urllib.parse.urlparse(url)
        sess = Client(ComponentConfig(realm=self.cfg.realm), label)
        sess.node = NODES[node]
        factory = WampWebSocketClientFactory(lambda: sess, url=url, serializers=[make_serializer(ser)])
        loop = asyncio.get_running_loop()
        try:
            tr, _ = await asyncio.wait_for(loop.create_connection(factory, u.hostname, u.port), 5)
        except (OSError, asyncio.TimeoutError) as e:
            raise Failure(f"{label}: TCP connect to {url} failed: {e!r}")
        self.sessions.append((sess, tr))
        try:
            await asyncio.wait_for(asyncio.shield(sess.joined), 5)
        except asyncio.TimeoutError:
            raise Failure(f"{label}: no WELCOME within 5s")
        return sess

    async def close(self):
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
# bounded waits for propagation, and the duplicate check


async def subscribe(ctx, sess, box, tag, topic, match="exact"):
    opts = SubscribeOptions(match=match, details_arg="details")
    sub = await answer(sess.subscribe(box.handler(tag), topic, options=opts), what=f"SUBSCRIBE {match} {topic} on {sess.label}")
    check_id(sub.id, "subscription id")
    return sub


async def propagated(ctx, pub, topic, targets, timeout=PROPAGATION):
    """Publish acknowledged probe events to `topic` from `pub` until every target (inbox,
    tag) has received one. Returns the number of probes published."""
    ctx.step(f"waiting for subscriptions {[t for _, t in targets]} to reach node {pub.node} (probing {topic})")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    n = 0
    while True:
        n += 1
        await answer(pub.publish(topic, PROBE, n, options=PublishOptions(acknowledge=True)), what=f"PUBLISH probe {topic}")
        step_end = loop.time() + 0.1
        while True:
            missing = [tag for box, tag in targets if not any(is_probe(r) and r.tag == tag for r in box.items)]
            if not missing or loop.time() >= step_end:
                break
            await asyncio.sleep(0.005)
        if not missing:
            return n
        if loop.time() - t0 > timeout:
            raise Failure(f"subscriptions {missing} never received a probe published on node {pub.node} to {topic} within {timeout}s ({n} probes)")


async def no_duplicates(ctx, settle=0.3):
    """No subscription received one publication twice (probes included)."""
    ctx.step("checking for duplicate EVENTs")
    await asyncio.sleep(settle)
    for box, name in ctx.boxes:
        seen = {}
        for r in box.items:
            if r.details is None or getattr(r.details, "publication", None) is None:
                continue
            key = (r.tag, r.details.publication)
            seen[key] = seen.get(key, 0) + 1
        dups = {k: v for k, v in seen.items() if v > 1}
        check(not dups, f"{name}: duplicate EVENTs (tag, publication) -> count: {dups}; received {fmt_recs(box.items)}")


def received(sess, cls, request):
    """WAMP messages of type `cls` for `request` that reached `sess` (from its wire trace)."""
    return [m for _, d, m in getattr(sess, "trace", []) if d == "<-" and type(m) is cls and m.request == request]


async def exactly_once_after_settle(ctx, caller, rid, callee, settle=0.5):
    """After `settle`, the caller got exactly one ERROR for its CALL and the callee at most one
    INTERRUPT: the two nodes' timers/cancels did not double up."""
    await asyncio.sleep(settle)
    errors = received(caller, message.Error, rid)
    check(len(errors) == 1, f"caller on node {caller.node} got {len(errors)} ERRORs for CALL {rid}: {[fmt_msg(m) for m in errors]}")
    inv = [m for _, d, m in getattr(callee, "trace", []) if d == "<-" and type(m) is message.Invocation]
    check(len(inv) >= 1, "no INVOCATION in the callee's trace")
    last = inv[-1].request
    ints = received(callee, message.Interrupt, last)
    check(len(ints) <= 1, f"callee on node {callee.node} got {len(ints)} INTERRUPTs for INVOCATION {last}: {[fmt_msg(m) for m in ints]}")
    return errors, ints


async def wait_real(box, pred, timeout, what):
    return await box.wait_for(lambda r: not is_probe(r) and pred(r), timeout, what)


async def call_until(ctx, caller, proc, *args, accept=lambda res: True, timeout=PROPAGATION, what=None, **kwargs):
    """Call `proc` until it answers with a result `accept` likes; `no_such_procedure`
    (registration not propagated yet) is retried. Bounded."""
    what = what or f"CALL {proc} from node {caller.node}"
    ctx.step(f"waiting for registrations to reach node {caller.node}: {what}")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    last = None
    while True:
        try:
            res = await asyncio.wait_for(base._shielded(caller.call(proc, *args, **kwargs)), 3)
            if accept(res):
                return res
            last = f"result {res!r}"
        except ApplicationError as e:
            if e.error != "wamp.error.no_such_procedure":
                raise Failure(f"{what}: unexpected ERROR {e.error} {list(e.args)!r}")
            last = "no_such_procedure"
        except asyncio.TimeoutError:
            raise Failure(f"{what}: no answer within 3s")
        if loop.time() - t0 > timeout:
            raise Failure(f"{what}: not answered as expected within {timeout}s; last: {last}")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------
# scenario registry: (name, fn, params) with params a list of variants (or [None])

SCENARIOS = []


def scenario(variants=(None,)):
    def deco(fn):
        SCENARIOS.append((fn.__name__.removeprefix("sc_"), fn, list(variants)))
        return fn

    return deco


# --------------------------------------------------------------------------------------
# pub/sub


@scenario()
async def sc_pubsub_exact(ctx, _):
    pub = await ctx.connect(A)
    b1, b2, c1 = await ctx.connect(B), await ctx.connect(B), await ctx.connect(C)
    t = ctx.uri("exact")
    boxes = [(ctx.inbox(s.label), s) for s in (b1, b2, c1)]
    for box, s in boxes:
        await subscribe(ctx, s, box, "ev", t)
    await propagated(ctx, pub, t, [(box, "ev") for box, _ in boxes])
    ctx.step("publishing across the mesh")
    args = [1, "two", {"three": 3.5, "n": None, "t": True}, [1, [2]]]
    kwargs = {"a": [1, 2], "unicode": "h\u00e9llo \u2603"}
    p1 = await answer(pub.publish(t, *args, options=PublishOptions(acknowledge=True), **kwargs), what="PUBLISH acknowledge")
    check_id(p1.id, "PUBLISHED publication id")
    pub.publish(t)  # no payload at all
    pub.publish(t, "end")
    for box, s in boxes:
        await wait_real(box, lambda r: r.args == ["end"], 3, f"end EVENT at {s.label}")
        got = real(box)
        check(len(got) == 3, f"{s.label}: expected 3 EVENTs, got {fmt_recs(got)}")
        ev, empty, _ = got
        check(ev.args == args and ev.kwargs == kwargs, f"EVENT payload at {s.label}: {ev.args!r} {ev.kwargs!r}")
        check(ev.details.publication == p1.id, f"EVENT publication {ev.details.publication} at {s.label} != PUBLISHED {p1.id}")
        check(empty.args == [] and empty.kwargs == {}, f"empty EVENT at {s.label} carried {empty.args!r} {empty.kwargs!r}")
        check(ev.details.topic in (None, t), f"exact EVENT at {s.label} has details.topic {ev.details.topic!r}")
    await no_duplicates(ctx)


@scenario()
async def sc_pubsub_prefix(ctx, _):
    pub = await ctx.connect(A)
    sb, sc = await ctx.connect(B), await ctx.connect(C)
    bb, bc = ctx.inbox(sb.label), ctx.inbox(sc.label)
    base_uri = ctx.uri("pfx")
    sentinel = ctx.uri("sentinel")
    for s, box in ((sb, bb), (sc, bc)):
        await subscribe(ctx, s, box, "sentinel", sentinel)
        await subscribe(ctx, s, box, "pfx", base_uri, "prefix")
    await subscribe(ctx, sc, bc, "long", base_uri + ".a", "prefix")
    await propagated(ctx, pub, sentinel, [(bb, "sentinel"), (bc, "sentinel")])
    await propagated(ctx, pub, base_uri + ".a.probe", [(bb, "pfx"), (bc, "pfx"), (bc, "long")])
    matching = [base_uri + ".a.b", base_uri, base_uri + "extra", base_uri + ".c"]
    for topic in [base_uri + ".a.b", ctx.uri("other.pfx"), base_uri, base_uri + "extra", ctx.uri("pf"), base_uri + ".c"]:
        pub.publish(topic, topic)
    pub.publish(sentinel, "end")
    for box, s in ((bb, sb), (bc, sc)):
        await wait_real(box, lambda r: r.tag == "sentinel", 3, f"sentinel EVENT at {s.label}")
        got = [(r.details.topic, r.args) for r in real(box, "pfx")]
        want = [(m, [m]) for m in matching]
        check(got == want, f"prefix EVENTs (details.topic, args) at {s.label}: expected {want}, got {got}")
    got = [(r.details.topic, r.args) for r in real(bc, "long")]
    want = [(base_uri + ".a.b", [base_uri + ".a.b"])]
    check(got == want, f"longer prefix EVENTs at {sc.label}: expected {want}, got {got}")
    await no_duplicates(ctx)


@scenario()
async def sc_pubsub_wildcard(ctx, _):
    pub = await ctx.connect(A)
    sb, sc = await ctx.connect(B), await ctx.connect(C)
    bb, bc = ctx.inbox(sb.label), ctx.inbox(sc.label)
    p = ctx.prefix
    sentinel = ctx.uri("sentinel")
    # middle empty component (Buildbot: buildrequests..new) and trailing one (control.worker.<id>.)
    for s, box in ((sb, bb), (sc, bc)):
        await subscribe(ctx, s, box, "sentinel", sentinel)
    await subscribe(ctx, sb, bb, "mid", f"{p}.wc..x", "wildcard")
    await subscribe(ctx, sb, bb, "tail", f"{p}.ctl.worker.5.", "wildcard")
    await subscribe(ctx, sc, bc, "mid", f"{p}.wc..x", "wildcard")
    await propagated(ctx, pub, sentinel, [(bb, "sentinel"), (bc, "sentinel")])
    await propagated(ctx, pub, f"{p}.wc.probe.x", [(bb, "mid"), (bc, "mid")])
    await propagated(ctx, pub, f"{p}.ctl.worker.5.probe", [(bb, "tail")])
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
    pub.publish(sentinel, "end")
    for box, s, tags in ((bb, sb, ("mid", "tail")), (bc, sc, ("mid",))):
        await wait_real(box, lambda r: r.tag == "sentinel", 3, f"sentinel EVENT at {s.label}")
        got = [(r.tag, r.details.topic, r.args) for r in real(box) if r.tag != "sentinel"]
        want = [(tag, topic, [topic]) for topic, tag in publish if tag in tags]
        check(got == want, f"wildcard EVENTs (tag, details.topic, args) at {s.label}: expected {want}, got {got}")
    await no_duplicates(ctx)


@scenario()
async def sc_pubsub_every_policy_one_session(ctx, _):
    """A session on B and one on C each hold an exact, a prefix and a wildcard subscription
    matching one publication from A: one EVENT per subscription, one publication ID."""
    pub = await ctx.connect(A)
    subs = [await ctx.connect(B), await ctx.connect(C)]
    p = ctx.prefix
    t = f"{p}.m.x.y"
    boxes = []
    for s in subs:
        box = ctx.inbox(s.label)
        ids = set()
        for tag, topic, match in (("exact", t, "exact"), ("prefix", f"{p}.m", "prefix"), ("wildcard", f"{p}.m..y", "wildcard")):
            ids.add((await subscribe(ctx, s, box, tag, topic, match)).id)
        check(len(ids) == 3, f"three policies share subscription ids: {ids}")
        boxes.append((box, s))
    await propagated(ctx, pub, t, [(box, tag) for box, _ in boxes for tag in ("exact", "prefix", "wildcard")])
    pid = (await answer(pub.publish(t, "one", options=PublishOptions(acknowledge=True)), what="PUBLISH")).id
    pub.publish(f"{p}.m.z", "prefix-only")
    pub.publish(t, "end")
    for box, s in boxes:
        await box.wait_for(lambda r: sum(1 for x in real(box) if x.args == ["end"]) == 3, 3, f"3 end EVENTs at {s.label}")
        got = sorted((r.tag, r.details.topic if r.tag != "exact" else None, r.details.publication) for r in real(box) if r.args == ["one"])
        want = [("exact", None, pid), ("prefix", t, pid), ("wildcard", t, pid)]
        check(got == want, f"{s.label}: expected one EVENT per subscription {want}, got {got}")
        got = [(r.tag, r.details.topic) for r in real(box) if r.args == ["prefix-only"]]
        check(got == [("prefix", f"{p}.m.z")], f"{s.label}: prefix-only publication gave {got}")
    await no_duplicates(ctx)


EXCL_POLICIES = {
    # policy: (subscription topic, publication topic); Buildbot uses exact and wildcard
    "exact": ("excl.t", "excl.t"),
    "prefix": ("excl", "excl.t.more"),
    "wildcard": ("excl.br..new", "excl.br.7.new"),
}


@scenario(variants=EXCL_POLICIES)
async def sc_exclude_me_false(ctx, policy):
    """Publisher on A (subscribed itself, as a Buildbot master is) publishes with
    exclude_me=False: it gets its own events, B and C exactly one copy each."""
    sub_topic, pub_topic = (ctx.uri(x) for x in EXCL_POLICIES[policy])
    pa = await ctx.connect(A)
    sb, sc = await ctx.connect(B), await ctx.connect(C)
    boxes = [(ctx.inbox(s.label), s) for s in (pa, sb, sc)]
    for box, s in boxes:
        await subscribe(ctx, s, box, "ev", sub_topic, policy)
    # probes use exclude_me default (True): they reach B and C, never the publisher
    await propagated(ctx, pa, pub_topic, [(box, "ev") for box, s in boxes if s is not pa])
    ctx.step("publishing with exclude_me=False")
    ids = []
    for i in range(5):
        pubd = await answer(pa.publish(pub_topic, i, options=PublishOptions(exclude_me=False, acknowledge=True)), what="PUBLISH exclude_me=False")
        ids.append(pubd.id)
    pa.publish(pub_topic, "excluded")  # default exclude_me=True
    pa.publish(pub_topic, "end", options=PublishOptions(exclude_me=False))
    for box, s in boxes:
        await wait_real(box, lambda r: r.args == ["end"], 3, f"end EVENT at {s.label}")
    await no_duplicates(ctx)
    for box, s in boxes:
        got = [r.args[0] for r in real(box)]
        want = [0, 1, 2, 3, 4] + ([] if s is pa else ["excluded"]) + ["end"]
        check(got == want, f"{s.label} (node {s.node}) received {got}, expected {want}")
        got_ids = [r.details.publication for r in real(box)[:5]]
        check(got_ids == ids, f"{s.label}: publication ids {got_ids} != PUBLISHED {ids}")
        if policy != "exact":
            topics = {r.details.topic for r in real(box)}
            check(topics == {pub_topic}, f"{s.label}: details.topic {topics}")
    probes_at_publisher = [r for r in boxes[0][0].items if is_probe(r)]
    check(not probes_at_publisher, f"publisher got its own exclude_me=True probes: {fmt_recs(probes_at_publisher)}")


@scenario()
async def sc_publish_acknowledge(ctx, _):
    pub = await ctx.connect(A)
    sub = await ctx.connect(B)
    t = ctx.uri("ack")
    box = ctx.inbox(sub.label)
    await subscribe(ctx, sub, box, "ev", t)
    await propagated(ctx, pub, t, [(box, "ev")])
    p1 = await answer(pub.publish(t, "x", options=PublishOptions(acknowledge=True)), what="PUBLISH acknowledge")
    check_id(p1.id, "PUBLISHED publication id")
    p2 = await answer(pub.publish(ctx.uri("nobody.listens"), options=PublishOptions(acknowledge=True)), what="PUBLISH acknowledge (no subscribers anywhere)")
    check_id(p2.id, "PUBLISHED publication id (no subscribers)")
    check(p1.id != p2.id, f"two publications got the same id {p1.id}")
    ev = await wait_real(box, lambda r: r.args == ["x"], 3, "EVENT x")
    check(ev.details.publication == p1.id, f"EVENT publication {ev.details.publication} on node B != PUBLISHED {p1.id} on node A")
    await no_duplicates(ctx)


@scenario()
async def sc_eligible_exclude(ctx, _):
    pub = await ctx.connect(A)
    s1, s2 = await ctx.connect(B), await ctx.connect(C)
    t = ctx.uri("bw")
    i1, i2 = ctx.inbox(s1.label), ctx.inbox(s2.label)
    await subscribe(ctx, s1, i1, "ev", t)
    await subscribe(ctx, s2, i2, "ev", t)
    await propagated(ctx, pub, t, [(i1, "ev"), (i2, "ev")])
    pub.publish(t, "eligible-s1", options=PublishOptions(eligible=[s1.sid]))
    pub.publish(t, "exclude-s1", options=PublishOptions(exclude=[s1.sid]))
    pub.publish(t, "eligible-anonymous", options=PublishOptions(eligible_authrole=["anonymous"]))
    pub.publish(t, "exclude-anonymous", options=PublishOptions(exclude_authrole=["anonymous"]))
    pub.publish(t, "eligible-both-exclude-s2", options=PublishOptions(eligible=[s1.sid, s2.sid], exclude=[s2.sid]))
    pub.publish(t, "eligible-nobody", options=PublishOptions(eligible=[pub.sid]))
    authid2 = (await s2.joined).authid
    check(authid2, "no authid in WELCOME")
    pub.publish(t, "eligible-authid-s2", options=PublishOptions(eligible_authid=[authid2]))
    pub.publish(t, "exclude-authid-s2", options=PublishOptions(exclude_authid=[authid2]))
    pub.publish(t, "sentinel")
    for box, want, s in (
        (i1, ["eligible-s1", "eligible-anonymous", "eligible-both-exclude-s2", "exclude-authid-s2", "sentinel"], s1),
        (i2, ["exclude-s1", "eligible-anonymous", "eligible-authid-s2", "sentinel"], s2),
    ):
        await wait_real(box, lambda r: r.args == ["sentinel"], 3, f"sentinel at {s.label}")
        got = [r.args[0] for r in real(box)]
        check(got == want, f"{s.label} received {got}, expected {want}")
    await no_duplicates(ctx)


@scenario()
async def sc_disclose_me(ctx, _):
    pub = await ctx.connect(A)
    sub = await ctx.connect(C)
    t = ctx.uri("disclose")
    box = ctx.inbox(sub.label)
    await subscribe(ctx, sub, box, "ev", t)
    await propagated(ctx, pub, t, [(box, "ev")])
    pub.publish(t, "plain")
    send_with_extra_options(pub, message.Publish, {"disclose_me": True})
    pub.publish(t, "disclosed")
    await box.wait_for(lambda r: len(real(box)) >= 2, 3, "2 EVENTs")
    plain, disclosed = real(box)[:2]
    check(plain.details.publisher is None, f"publisher disclosed on node C without disclose_me: {plain.details.publisher}")
    check(disclosed.details.publisher == pub.sid,
          f"disclose_me=true: EVENT.details.publisher on node C = {disclosed.details.publisher!r}, expected {pub.sid} (session on node A)")
    await no_duplicates(ctx)


@scenario()
async def sc_pubsub_ordering(ctx, _):
    """300 events from one publisher on A arrive complete and in order on B and C (exact
    and prefix subscriptions), while a publisher on B also publishes to C."""
    pa, pb = await ctx.connect(A), await ctx.connect(B)
    subs = [await ctx.connect(B), await ctx.connect(C)]
    t = ctx.uri("order.x")
    tb = ctx.uri("order.y")
    boxes = []
    for s in subs:
        box = ctx.inbox(s.label)
        await subscribe(ctx, s, box, "exact", t)
        await subscribe(ctx, s, box, "prefix", ctx.uri("order"), "prefix")
        boxes.append((box, s))
    await propagated(ctx, pa, t, [(box, tag) for box, _ in boxes for tag in ("exact", "prefix")])
    await propagated(ctx, pb, tb, [(box, "prefix") for box, _ in boxes])
    n = 300
    for i in range(n):
        pa.publish(t, i, {"pad": "p" * (i % 50)})
        pb.publish(tb, -i)
    for box, s in boxes:
        await box.wait_for(lambda r: len(real(box)) >= 3 * n, 10, f"{3 * n} EVENTs at {s.label}")
        for tag in ("exact", "prefix"):
            seq = [r.args[0] for r in real(box, tag) if r.args[0] >= 0 and (tag == "exact" or r.details.topic == t)]
            check(seq == list(range(n)), f"{tag} EVENTs from A at {s.label} out of order / missing: first bad index "
                  f"{next((k for k, v in enumerate(seq) if v != k), len(seq))}, count {len(seq)}")
        seq = [-r.args[0] for r in real(box, "prefix") if r.details.topic == tb]
        check(seq == list(range(n)), f"EVENTs from B at {s.label} out of order / missing (count {len(seq)})")
    await no_duplicates(ctx)


# --------------------------------------------------------------------------------------
# RPC


@scenario()
async def sc_rpc_basic(ctx, _):
    callee = await ctx.connect(B)
    callers = [await ctx.connect(A), await ctx.connect(C)]
    p = ctx.uri("echo")

    def echo(*args, **kwargs):
        if args == (PROBE,):
            return PROBE
        return CallResult(*args, **kwargs)

    def fail(*args, **kwargs):
        raise ApplicationError("com.example.error.custom", "reason", 2, detail={"x": 1})

    reg = await answer(callee.register(echo, p), what="REGISTER")
    check_id(reg.id, "registration id")
    await answer(callee.register(fail, ctx.uri("fail")), what="REGISTER fail")
    await answer(callee.register(lambda: None, ctx.uri("nothing")), what="REGISTER nothing")
    args = [1, "two", {"three": [3]}, None, True, 1.5]
    kwargs = {"k": {"nested": ["v", 2]}, "u": "\u2603"}
    for c in callers:
        # registrations are announced in order on one link: the last one answering means all are there
        await call_until(ctx, c, ctx.uri("nothing"))
        res = await answer(c.call(p, *args, **kwargs), what=f"CALL echo from {c.label}")
        got = result_parts(res)
        check(got == (args, kwargs), f"echo RESULT at {c.label} {got!r}, expected {(args, kwargs)!r}")
        res = await answer(c.call(ctx.uri("nothing")), what="CALL nothing")
        check(res is None, f"empty RESULT {res!r}")
        e = await expect_app_error(c.call(ctx.uri("fail"), 1), "com.example.error.custom", what=f"CALL fail from {c.label}")
        check(list(e.args) == ["reason", 2], f"ERROR args {list(e.args)!r}")
        check(e.kwargs == {"detail": {"x": 1}}, f"ERROR kwargs {e.kwargs!r}")
    await expect_app_error(callers[0].call(ctx.uri("missing")), "wamp.error.no_such_procedure", what="CALL missing")


@scenario()
async def sc_rpc_pattern_registration(ctx, _):
    """prefix on B, longer prefix on C, exact on A, wildcard on C; the caller on A gets the
    exact, then longest prefix, then wildcard match with details.procedure."""
    kb, kc, ka = await ctx.connect(B), await ctx.connect(C), await ctx.connect(A)
    caller = await ctx.connect(A)
    p = ctx.prefix

    def endpoint(tag):
        def h(*args, details=None, **kwargs):
            return [tag, details.procedure]

        return h

    opts = dict(details_arg="details")
    await answer(kb.register(endpoint("prefix@B"), f"{p}.pfx", options=RegisterOptions(match="prefix", **opts)), what="REGISTER prefix")
    await answer(kc.register(endpoint("longer-prefix@C"), f"{p}.pfx.long", options=RegisterOptions(match="prefix", **opts)), what="REGISTER longer prefix")
    await answer(ka.register(endpoint("exact@A"), f"{p}.pfx.long.exact", options=RegisterOptions(**opts)), what="REGISTER exact")
    await answer(kc.register(endpoint("wildcard@C"), f"{p}.wc..x", options=RegisterOptions(match="wildcard", **opts)), what="REGISTER wildcard")
    cases = [
        (f"{p}.pfx.a.b", "prefix@B"),
        (f"{p}.pfx.long.z", "longer-prefix@C"),
        (f"{p}.pfx.long.exact", "exact@A"),
        (f"{p}.wc.q.x", "wildcard@C"),
    ]
    for proc, tag in cases:
        await call_until(ctx, caller, proc, accept=lambda r, tag=tag: isinstance(r, list) and r[0] == tag)
    for proc, tag in cases:
        res = await answer(caller.call(proc), what=f"CALL {proc}")
        want = [tag, proc]
        check(res == want, f"CALL {proc}: got {res!r}, expected {want} (registration, details.procedure)")
    await expect_app_error(caller.call(f"{p}.wc.q.r.x"), "wamp.error.no_such_procedure", what="CALL not matching wildcard")


@scenario()
async def sc_rpc_roundrobin(ctx, _):
    """Callees on A, B and C share a roundrobin registration; callers on A and C each cycle
    through all three."""
    callees = [await ctx.connect(n) for n in (A, B, C)]
    callers = [await ctx.connect(A), await ctx.connect(C)]
    p = ctx.uri("rr")
    rr = RegisterOptions(invoke="roundrobin")
    for k in callees:
        await answer(k.register(lambda node=k.node: node, p, options=rr), what=f"REGISTER roundrobin on {k.node}")
    for c in callers:
        seen = set()
        await call_until(ctx, c, p, accept=lambda r: seen.add(r) or seen == {"A", "B", "C"}, what=f"CALL {p} from {c.node} reaching all three callees")
        got = [await answer(c.call(p), what="CALL") for _ in range(9)]
        ok = all(set(got[i:i + 3]) == {"A", "B", "C"} for i in range(0, 9, 3)) and got[:3] * 3 == got
        check(ok, f"roundrobin from node {c.node} not cycling through A, B, C: {got}")
        ctx.note(f"roundrobin from {c.node}: {''.join(got)}")
    ctx.step("REGISTER with a conflicting invoke policy on node B")
    k = await ctx.connect(B)
    # as on one router: the URI Crossbar uses for a mismatched invoke policy
    await expect_app_error(k.register(lambda: "x", p, options=RegisterOptions(invoke="single")),
                           "wamp.error.procedure_exists_with_different_invocation_policy",
                           what="REGISTER single on node B of a URI with roundrobin callees on A, B, C")


@scenario()
async def sc_rpc_shared_last_first_random(ctx, _):
    caller = await ctx.connect(A)
    # last: B first, then C, then a callee local to the caller
    p = ctx.uri("last")
    opts = RegisterOptions(invoke="last")
    kb = await ctx.connect(B)
    await answer(kb.register(lambda: "B", p, options=opts), what="REGISTER last on B")
    await call_until(ctx, caller, p, accept=lambda r: r == "B")
    kc = await ctx.connect(C)
    await answer(kc.register(lambda: "C", p, options=opts), what="REGISTER last on C")
    await call_until(ctx, caller, p, accept=lambda r: r == "C", what="invoke=last picking the callee on C once known")
    got = [await answer(caller.call(p)) for _ in range(5)]
    check(got == ["C"] * 5, f"invoke=last: {got}, expected C every time")
    ka = await ctx.connect(A)
    await answer(ka.register(lambda: "A", p, options=opts), what="REGISTER last on A")
    got = [await answer(caller.call(p)) for _ in range(5)]
    check(got == ["A"] * 5, f"invoke=last after a local callee registered: {got}")
    # first: B first; later callees on C and A never get calls
    p = ctx.uri("first")
    opts = RegisterOptions(invoke="first")
    kb2, kc2, ka2 = await ctx.connect(B), await ctx.connect(C), await ctx.connect(A)
    await answer(kb2.register(lambda: "B", p, options=opts), what="REGISTER first on B")
    await call_until(ctx, caller, p, accept=lambda r: r == "B")
    await answer(kc2.register(lambda: "C", p, options=opts), what="REGISTER first on C")
    await answer(ka2.register(lambda: "A", p, options=opts), what="REGISTER first on A")
    got = [await answer(caller.call(p)) for _ in range(6)]
    check(got == ["B"] * 6, f"invoke=first: {got}, expected B (the first callee) every time")
    # random: B and C both picked
    p = ctx.uri("random")
    opts = RegisterOptions(invoke="random")
    kb3, kc3 = await ctx.connect(B), await ctx.connect(C)
    await answer(kb3.register(lambda: "B", p, options=opts), what="REGISTER random on B")
    await answer(kc3.register(lambda: "C", p, options=opts), what="REGISTER random on C")
    seen = set()
    await call_until(ctx, caller, p, accept=lambda r: seen.add(r) or seen == {"B", "C"}, what="invoke=random picking both B and C")


@scenario()
async def sc_rpc_single_conflict(ctx, _):
    kb = await ctx.connect(B)
    p = ctx.uri("single")
    await answer(kb.register(lambda: "B", p), what="REGISTER single on B")
    ka, kc = await ctx.connect(A), await ctx.connect(C)
    await call_until(ctx, ka, p, accept=lambda r: r == "B")
    await call_until(ctx, kc, p, accept=lambda r: r == "B")
    await expect_app_error(ka.register(lambda: "A", p), "wamp.error.procedure_already_exists", what="REGISTER single on A (exists on B)")
    await expect_app_error(kc.register(lambda: "C", p, options=RegisterOptions(invoke="roundrobin")),
                           "wamp.error.procedure_exists_with_different_invocation_policy",
                           what="REGISTER roundrobin on C (single exists on B)")
    got = [await answer(kc.call(p)) for _ in range(3)]
    check(got == ["B"] * 3, f"calls after the refused registrations: {got}")


@scenario()
async def sc_rpc_progressive(ctx, _):
    callee = await ctx.connect(B)
    callers = [await ctx.connect(A), await ctx.connect(C)]
    p = ctx.uri("progress")

    async def slow(n, details=None):
        if details.progress:
            for i in range(n):
                details.progress(i, step=i, node="B")
                await asyncio.sleep(0.01)
        return "done"

    await answer(callee.register(slow, p, options=RegisterOptions(details_arg="details")), what="REGISTER")
    for caller in callers:
        await call_until(ctx, caller, p, 0, accept=lambda r: r == "done")
        progress = []
        res = await answer(
            caller.call(p, 5, options=CallOptions(on_progress=lambda *a, **kw: progress.append((list(a), kw)))),
            what=f"CALL receive_progress from {caller.label}",
        )
        check(res == "done", f"final RESULT {res!r}")
        want = [([i], {"step": i, "node": "B"}) for i in range(5)]
        check(progress == want, f"progressive RESULTs at {caller.label} {progress!r}, expected {want!r}")


async def _slow_callee(ctx, node, sleep):
    callee = await ctx.connect(node)
    p = ctx.uri("slow")
    invoked = asyncio.Event()
    interrupted = asyncio.Event()

    async def slow(arg=None):
        if arg == PROBE:
            return PROBE
        invoked.set()
        try:
            await asyncio.sleep(sleep)
        except asyncio.CancelledError:
            interrupted.set()
            raise
        return "finished"

    await answer(callee.register(slow, p), what="REGISTER")
    return callee, p, invoked, interrupted


@scenario(variants=("kill", "killnowait", "skip"))
async def sc_rpc_cancel(ctx, mode):
    callee, p, invoked, interrupted = await _slow_callee(ctx, B, 4.0)
    caller = await ctx.connect(A)
    await call_until(ctx, caller, p, PROBE)
    fut = caller.call(p)
    ctx.step("waiting for INVOCATION on node B")
    await asyncio.wait_for(invoked.wait(), 3)
    rid = pending_call_request_id(caller, fut)
    ctx.step(f"sending CANCEL mode={mode} on node A")
    t0 = time.monotonic()
    caller._transport.send(message.Cancel(rid, mode=mode))
    await expect_app_error(asyncio.shield(fut), "wamp.error.canceled", timeout=2.0, what=f"CALL after CANCEL mode={mode}")
    elapsed = time.monotonic() - t0
    if mode == "skip":
        await asyncio.sleep(0.3)
        check(not interrupted.is_set(), "CANCEL mode=skip sent an INTERRUPT to the callee on node B")
    else:
        ctx.step(f"waiting for INTERRUPT at the callee on node B (mode={mode})")
        try:
            await asyncio.wait_for(interrupted.wait(), 2)
        except asyncio.TimeoutError:
            raise Failure(f"CANCEL mode={mode} on node A: callee on node B got no INTERRUPT")
    ctx.note(f"ERROR after {elapsed * 1000:.0f} ms")
    _, ints = await exactly_once_after_settle(ctx, caller, rid, callee)
    check(len(ints) == (0 if mode == "skip" else 1), f"CANCEL mode={mode}: callee on node B got {len(ints)} INTERRUPTs")
    # the callee is still usable afterwards
    res = await answer(caller.call(p, PROBE), what="CALL after the cancel")
    check(res == PROBE, f"CALL after the cancel: {res!r}")


@scenario()
async def sc_rpc_timeout(ctx, _):
    callee, p, invoked, interrupted = await _slow_callee(ctx, B, 5.0)
    caller = await ctx.connect(A)
    await call_until(ctx, caller, p, PROBE, options=CallOptions(timeout=2000))
    t0 = time.monotonic()
    ctx.step("waiting for ERROR wamp.error.timeout (CALL.Options.timeout=500 ms) on node A")
    fut = caller.call(p, options=CallOptions(timeout=500))
    rid = pending_call_request_id(caller, fut)
    await expect_app_error(fut, "wamp.error.timeout", timeout=3.0, what="CALL timeout=500 (ms)")
    elapsed = time.monotonic() - t0
    check(invoked.is_set(), "the callee on node B was never invoked")
    check(0.3 <= elapsed <= 2.5, f"timeout=500ms fired after {elapsed:.2f}s")
    ctx.step("waiting for INTERRUPT at the callee on node B")
    try:
        await asyncio.wait_for(interrupted.wait(), 2)
    except asyncio.TimeoutError:
        raise Failure("call timed out on node A, but the callee on node B got no INTERRUPT within 2s")
    ctx.note(f"wamp.error.timeout after {elapsed * 1000:.0f} ms")
    _, ints = await exactly_once_after_settle(ctx, caller, rid, callee)
    check(len(ints) == 1, f"timeout: callee on node B got {len(ints)} INTERRUPTs")
    # Whichever node's timer fires first, the callee is told the call timed out.
    check(ints[0].reason == "wamp.error.timeout", f"INTERRUPT reason {ints[0].reason!r}, want wamp.error.timeout")
    ctx.note(f"callee got {fmt_msg(ints[0])}")


@scenario()
async def sc_rpc_callee_drops_connection(ctx, _):
    callee, p, invoked, _interrupted = await _slow_callee(ctx, B, 8.0)
    caller = await ctx.connect(A)
    await call_until(ctx, caller, p, PROBE)
    fut = caller.call(p)
    await asyncio.wait_for(invoked.wait(), 3)
    ctx.step("callee on B dropping its TCP connection with a call from A outstanding")
    t0 = time.monotonic()
    callee._transport.transport.abort() if hasattr(callee._transport, "transport") else callee._transport.close()
    try:
        res = await asyncio.wait_for(asyncio.shield(fut), 3)
        raise Failure(f"caller got RESULT {res!r} from a callee that left")
    except ApplicationError as e:
        ctx.note(f"caller on A got ERROR {e.error} {list(e.args)!r} after {(time.monotonic() - t0) * 1000:.0f} ms")
    except asyncio.TimeoutError:
        raise Failure("callee on B dropped mid-call: caller on A got no ERROR within 3s")
    # the registration disappears from A (asynchronously: reg- travels the link)
    ctx.step("waiting for the registration to disappear from node A")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROPAGATION
    while True:
        try:
            res = await asyncio.wait_for(base._shielded(caller.call(p, PROBE)), 3)
        except ApplicationError as e:
            check(e.error == "wamp.error.no_such_procedure", f"CALL after callee left: ERROR {e.error}")
            break
        if loop.time() > deadline:
            raise Failure(f"CALL after the callee on B left still answered {res!r} after {PROPAGATION}s")
        await asyncio.sleep(0.05)


@scenario()
async def sc_rpc_caller_leaves_progressive(ctx, _):
    """A caller on A that asked for progressive results leaves: the callee on B gets INTERRUPT."""
    callee = await ctx.connect(B)
    caller = await ctx.connect(A)
    p = ctx.uri("stream")
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def stream(arg=None, details=None):
        if arg == PROBE:
            return PROBE
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
    await call_until(ctx, caller, p, PROBE)
    progress = []
    fut = caller.call(p, options=CallOptions(on_progress=lambda *a: progress.append(a)))
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    await asyncio.wait_for(started.wait(), 3)
    deadline = time.monotonic() + 3
    while not progress and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    check(progress, "no progressive RESULT reached the caller on A")
    ctx.step("caller on A leaving; waiting for INTERRUPT at the callee on B")
    caller.leave()
    try:
        await asyncio.wait_for(interrupted.wait(), 3)
    except asyncio.TimeoutError:
        raise Failure("callee on B got no INTERRUPT within 3s after the caller on A (receive_progress) left")


@scenario()
async def sc_rpc_concurrent_calls(ctx, _):
    """60 outstanding calls from callers on A and C, answered out of order by roundrobin
    callees on B and C."""
    kb, kc = await ctx.connect(B), await ctx.connect(C)
    callers = [await ctx.connect(A), await ctx.connect(C)]
    p = ctx.uri("delay")

    def mk(tag):
        async def delayed(i, delay):
            await asyncio.sleep(delay)
            return [tag, i]

        return delayed

    rr = RegisterOptions(invoke="roundrobin")
    await answer(kb.register(mk("B"), p, options=rr), what="REGISTER on B")
    await answer(kc.register(mk("C"), p, options=rr), what="REGISTER on C")
    for c in callers:
        seen = set()
        await call_until(ctx, c, p, -1, 0, accept=lambda r: seen.add(r[0]) or seen == {"B", "C"})
    futs = []
    for i in range(60):
        futs.append(callers[i % 2].call(p, i, ((i * 7) % 10) / 100.0))
    results = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 8)
    bad = [(i, r) for i, r in enumerate(results) if not (isinstance(r, list) and r[1] == i)]
    check(not bad, f"{len(bad)} calls got the wrong answer, e.g. {bad[:5]}")
    tags = {r[0] for r in results}
    check(tags == {"B", "C"}, f"calls not spread over both callees: {tags}")


# --------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", action="append", default=[], help="ws://127.0.0.1:PORT/ws of a node (repeat: A, B, C)")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--only", default=None, help="regex on scenario names")
    ap.add_argument("--exclude", default=None, help="regex on scenario names to skip")
    ap.add_argument("--timeout", type=float, default=20.0, help="hard timeout per scenario (s)")
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    ap.add_argument("--wire", type=int, default=12, help="on FAIL, show the last N WAMP messages of each session (0: off)")
    ap.add_argument("--verbose", action="store_true", help="autobahn debug logging")
    args = ap.parse_args(argv)
    if not args.list and len(args.url) < 2:
        ap.error("give at least two --url (nodes of one mesh)")
    for u in args.url:
        if urllib.parse.urlparse(u).scheme != "ws":
            ap.error(f"--url must be ws://HOST:PORT/PATH: {u}")
    args.urls = args.url
    return args


def expand(args):
    out = []
    for mapping in MAPPINGS:
        tag = " ".join(f"{NODES[i]}={s}" for i, s in enumerate(mapping))
        for name, fn, variants in SCENARIOS:
            for v in variants:
                full = f"{name}[{v + ', ' if v else ''}{tag}]"
                out.append((full, fn, v, mapping))
    if args.only:
        out = [x for x in out if re.search(args.only, x[0])]
    if args.exclude:
        out = [x for x in out if not re.search(args.exclude, x[0])]
    return out


async def run_all(args):
    passed, failed = 0, 0
    for name, fn, variant, mapping in expand(args):
        ctx = MeshCtx(args, mapping)
        if await base.run_scenario(args, ctx, name, lambda: fn(ctx, variant)):
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, _, _, _ in expand(args):
            print(name)
        return 0
    txaio.start_logging(level="debug" if args.verbose else "critical")
    if len(args.urls) < 3:
        print(f"note: {len(args.urls)} nodes given; node C is node A", flush=True)
    failed = asyncio.run(run_all(args))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
