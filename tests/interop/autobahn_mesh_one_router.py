#!/usr/bin/env python3
"""The mesh as one router: autobahn-python (asyncio) sessions spread over three switchyard
nodes, every new session on the next node, with no settle delay and no retry anywhere.

Usage (normally run by tests/interop_mesh.rs, which owns the nodes):
    autobahn_mesh_one_router.py --url ws://127.0.0.1:PORT_A/ws --url ws://127.0.0.1:PORT_B/ws
                                --url ws://127.0.0.1:PORT_C/ws [--realm realm1]
                                [--guarded-realm buildbot] [--rounds 100] [--only REGEX]

What it checks (what a client sees on one router):
  * subscription_ids: three sessions on three nodes subscribing to one URI with one match
    policy get one subscription ID (exact, prefix, wildcard; the policies' IDs differ), and
    wamp.subscription.lookup on a fourth node answers it;
  * shared_registration[POLICY] for roundrobin, random, first, last: three callees on three
    nodes get one registration ID; calls from a fourth session made right after the last
    REGISTERED all succeed, answered by the callees the policy picks;
  * call_after_registered: ROUNDS times in a row, a callee registers a new procedure and a
    session on the next node calls it right after REGISTERED: every call succeeds;
  * publish_after_subscribed: ROUNDS times in a row, a subscriber subscribes to a new topic
    and a session on the next node publishes right after SUBSCRIBED: every event arrives;
  * kill_across_nodes: wamp.session.kill of a session on another node, called right after
    that session joined, ends it (GOODBYE wamp.close.killed); kill_by_authid ends the
    sessions with that authid on two other nodes and spares the caller; on the guarded
    realm (the build master's, on nodes started with --no-master) an anonymous caller's kill
    of a session on another node is refused (wamp.error.not_authorized) and the session stays;
  * meta_events_once: watchers on all three nodes see wamp.session.on_join / on_leave of
    sessions on the other nodes, and wamp.subscription.on_create / on_subscribe /
    on_unsubscribe / on_delete of their subscription, each exactly once, with the mesh-wide
    subscription ID (created once though two nodes subscribe, deleted once).

Output: one `PASS <name>` / `FAIL <name>: <reason>` line per scenario (on FAIL, the last WAMP
messages of each session), and a final `N passed, M failed`; exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import autobahn_scenarios as base  # noqa: E402  (also selects asyncio for txaio)
from autobahn_mesh import NODES, MeshCtx  # noqa: E402
from autobahn_scenarios import Client, Failure, Inbox, answer, check, check_id, expect_app_error  # noqa: E402

import txaio  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp.types import ComponentConfig, PublishOptions, RegisterOptions, SubscribeOptions  # noqa: E402

MAPPING = ("json", "msgpack", "cbor")
EVENT_WAIT = 2.0  # an event or answer that must come (the router does not make it wait)


class NamedClient(Client):
    """A Client that joins with the authid in its config's extra (anonymous otherwise)."""

    def onConnect(self):
        self.join(self.config.realm, authid=self.config.extra.get("authid"))


class OneRouterCtx(MeshCtx):
    """MeshCtx whose sessions go to the next node each time, on any realm, with an authid."""

    def __init__(self, cfg):
        super().__init__(cfg, MAPPING)
        self.turn = 0

    async def next(self, label=None, realm=None, authid=None):
        node = self.turn % 3
        self.turn += 1
        return await self.open(node, label, realm, authid)

    async def open(self, node, label, realm, authid):
        url = self.cfg.urls[node]
        ser = self.mapping[node]
        label = f"{NODES[node]}/{ser}#{len(self.sessions) + 1} {label or ''}".strip()
        self.step(f"connecting {label} to {url}")
        u = urllib.parse.urlparse(url)
        config = ComponentConfig(realm=realm or self.cfg.realm, extra={"authid": authid})
        sess = NamedClient(config, label)
        sess.node = NODES[node]
        factory = WampWebSocketClientFactory(lambda: sess, url=url, serializers=[base.make_serializer(ser)])
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


SCENARIOS = []


def scenario(variants=(None,)):
    def deco(fn):
        SCENARIOS.append((fn.__name__.removeprefix("sc_"), fn, list(variants)))
        return fn

    return deco


def nothing(*args, **kwargs):
    return None


@scenario()
async def sc_subscription_ids(ctx, _):
    ids = {}
    subscribers = [await ctx.next(f"subscriber {i}") for i in range(3)]
    for match, topic in (("exact", ctx.uri("ids")), ("prefix", ctx.uri("ids")), ("wildcard", ctx.uri("ids..x"))):
        opts = SubscribeOptions(match=match)
        got = []
        for s in subscribers:
            sub = await answer(s.subscribe(nothing, topic, options=opts), what=f"SUBSCRIBE {match} {topic} on {s.node}")
            check_id(sub.id, f"subscription id on {s.node}")
            got.append(sub.id)
        check(len(set(got)) == 1, f"{match} {topic}: nodes A, B, C gave subscription ids {got}")
        ids[match] = got[0]
    check(len(set(ids.values())) == 3, f"the three match policies share ids: {ids}")
    other = await ctx.next("meta caller")
    found = await answer(other.call("wamp.subscription.lookup", ctx.uri("ids..x"), {"match": "wildcard"}), what="lookup")
    check(found == ids["wildcard"], f"wamp.subscription.lookup on {other.node} = {found!r}, SUBSCRIBED said {ids['wildcard']}")


@scenario(["roundrobin", "random", "first", "last"])
async def sc_shared_registration(ctx, policy):
    proc = ctx.uri(f"shared.{policy}")
    opts = RegisterOptions(invoke=policy)
    callees, ids = [], []
    for i in range(3):
        s = await ctx.next(f"callee {i}")
        reg = await answer(s.register(lambda i=i: i, proc, options=opts), what=f"REGISTER {policy} on {s.node}")
        callees.append(s)
        ids.append(reg.id)
    check(len(set(ids)) == 1, f"{policy}: callees on A, B, C got registration ids {ids}")
    caller = await ctx.next("caller")
    got = [await answer(caller.call(proc), timeout=EVENT_WAIT, what=f"CALL {proc} #{n} from {caller.node}") for n in range(6)]
    want = {
        "roundrobin": lambda g: set(g) == {0, 1, 2},
        "random": lambda g: set(g) <= {0, 1, 2},
        "first": lambda g: set(g) == {0},
        "last": lambda g: set(g) == {2},
    }[policy]
    check(want(got), f"{policy}: 6 calls from node {caller.node} were answered by callees {got} (0, 1, 2 in registration order)")
    n = await answer(caller.call("wamp.registration.count_callees", ids[0]), what="count_callees")
    check(n == 3, f"wamp.registration.count_callees({ids[0]}) on {caller.node} = {n!r}")


@scenario()
async def sc_call_after_registered(ctx, _):
    callees = [await ctx.next(f"callee {i}") for i in range(3)]
    callers = [await ctx.next(f"caller {i}") for i in range(3)]
    for i in range(ctx.cfg.rounds):
        callee, caller = callees[i % 3], callers[(i + 1) % 3]
        proc = ctx.uri(f"ryw.p{i}")
        ctx.step(f"round {i}: REGISTER on {callee.node}, CALL from {caller.node}")
        await answer(callee.register(lambda i=i: i, proc), what=f"REGISTER {proc} on {callee.node}")
        try:
            got = await asyncio.wait_for(base._shielded(caller.call(proc)), EVENT_WAIT)
        except Exception as e:
            raise Failure(f"round {i}: CALL from node {caller.node} right after REGISTERED on {callee.node} failed: {e!r}")
        check(got == i, f"round {i}: answer {got!r}")


@scenario()
async def sc_publish_after_subscribed(ctx, _):
    subscribers = [await ctx.next(f"subscriber {i}") for i in range(3)]
    publishers = [await ctx.next(f"publisher {i}") for i in range(3)]
    box = Inbox()
    for i in range(ctx.cfg.rounds):
        sub, pub = subscribers[i % 3], publishers[(i + 1) % 3]
        topic = ctx.uri(f"ryw.t{i}")
        ctx.step(f"round {i}: SUBSCRIBE on {sub.node}, PUBLISH from {pub.node}")
        await answer(sub.subscribe(box.handler(i), topic), what=f"SUBSCRIBE {topic} on {sub.node}")
        await answer(pub.publish(topic, i, options=PublishOptions(acknowledge=True)), what=f"PUBLISH {topic}")
        await box.wait_for(lambda r, i=i: r.tag == i, EVENT_WAIT, f"round {i}: the EVENT published on {pub.node} right after SUBSCRIBED on {sub.node}")


async def killed(victim):
    try:
        await asyncio.wait_for(asyncio.shield(victim.closed), EVENT_WAIT)
    except asyncio.TimeoutError:
        raise Failure(f"{victim.label} not closed within {EVENT_WAIT}s of the kill")
    reason = getattr(victim.leave_details, "reason", None)
    check(reason == "wamp.close.killed", f"{victim.label} left with {reason!r}, not wamp.close.killed")


@scenario()
async def sc_kill_across_nodes(ctx, _):
    victim = await ctx.next("victim")
    killer = await ctx.next("killer")
    await answer(killer.call("wamp.session.kill", victim.joined_sid), what=f"kill of {victim.node}'s session from {killer.node}")
    await killed(victim)
    await expect_app_error(killer.call("wamp.session.kill", victim.joined_sid), "wamp.error.no_such_session", what="kill of a gone session")

    authid = f"joe-{os.getpid()}"
    joes = [await ctx.next(f"authid {authid}", authid=authid) for _ in range(2)]
    bystander = await ctx.next("bystander")
    caller = await ctx.next(f"killer with authid {authid}", authid=authid)
    got = await answer(caller.call("wamp.session.kill_by_authid", authid), what="kill_by_authid")
    want = sorted(j.joined_sid for j in joes)
    check(sorted(got) == want, f"kill_by_authid({authid}) from {caller.node} ended {sorted(got)}, want {want} (on {[j.node for j in joes]})")
    for j in joes:
        await killed(j)
    check(caller.is_attached() and bystander.is_attached(), "the caller or a bystander was killed too")

    # The master's realm: anonymous clients may not kill there, on any node.
    realm = ctx.cfg.guarded_realm
    guarded = await ctx.next("guarded victim", realm=realm)
    anon = await ctx.next("anonymous killer", realm=realm)
    await expect_app_error(anon.call("wamp.session.kill", guarded.joined_sid), "wamp.error.not_authorized", what=f"anonymous kill on {realm}")
    await expect_app_error(anon.call("wamp.session.kill_by_authrole", "anonymous"), "wamp.error.not_authorized", what=f"anonymous kill_by_authrole on {realm}")
    check(guarded.is_attached(), f"the session on {realm} was killed by an anonymous caller")


META = [
    "wamp.session.on_join",
    "wamp.session.on_leave",
    "wamp.subscription.on_create",
    "wamp.subscription.on_subscribe",
    "wamp.subscription.on_unsubscribe",
    "wamp.subscription.on_delete",
]


@scenario()
async def sc_meta_events_once(ctx, _):
    watchers = []
    for i in range(3):
        w = await ctx.next(f"watcher {i}")
        box = Inbox()
        for topic in META:
            await answer(w.subscribe(box.handler(topic), topic), what=f"SUBSCRIBE {topic} on {w.node}")
        watchers.append((w, box))
    s1 = await ctx.next("s1")
    s2 = await ctx.next("s2")
    topic = ctx.uri("watched")
    sub1 = await answer(s1.subscribe(nothing, topic), what=f"SUBSCRIBE on {s1.node}")
    sub2 = await answer(s2.subscribe(nothing, topic), what=f"SUBSCRIBE on {s2.node}")
    check(sub1.id == sub2.id, f"subscription ids differ: {sub1.id} / {sub2.id}")
    await answer(sub1.unsubscribe(), what=f"UNSUBSCRIBE on {s1.node}")
    await answer(sub2.unsubscribe(), what=f"UNSUBSCRIBE on {s2.node}")
    ids = {s1.joined_sid: "s1", s2.joined_sid: "s2"}
    s1.leave()
    s2.leave()
    sid = sub1.id

    def about(r):
        """(event, session name) for events about s1, s2 and their subscription."""
        if r.tag == "wamp.session.on_join":
            who = r.args[0].get("session") if isinstance(r.args[0], dict) else None
            return (r.tag, ids.get(who)) if who in ids else None
        if r.args and r.args[0] in ids:
            if r.tag != "wamp.session.on_leave":
                check(r.args[1] == sid if not r.tag.endswith("on_create") else r.args[1].get("id") == sid,
                      f"{r.tag} names subscription {r.args[1]!r}, not {sid}")
            return (r.tag, ids[r.args[0]])
        return None

    want = sorted([
        ("wamp.session.on_join", "s1"), ("wamp.session.on_join", "s2"),
        ("wamp.subscription.on_create", "s1"),
        ("wamp.subscription.on_subscribe", "s1"), ("wamp.subscription.on_subscribe", "s2"),
        ("wamp.subscription.on_unsubscribe", "s1"), ("wamp.subscription.on_unsubscribe", "s2"),
        ("wamp.subscription.on_delete", "s2"),
        ("wamp.session.on_leave", "s1"), ("wamp.session.on_leave", "s2"),
    ])
    for w, box in watchers:
        ctx.step(f"watcher on {w.node}: waiting for the meta events of s1 ({s1.node}) and s2 ({s2.node})")
        await box.wait_for(lambda r: len([x for x in box.items if about(x)]) >= len(want), EVENT_WAIT,
                           f"{len(want)} meta events on {w.node}")
    await asyncio.sleep(0.3)  # the duplicate check: nothing more may come
    for w, box in watchers:
        got = sorted(filter(None, (about(r) for r in box.items)))
        check(got == want, f"watcher on {w.node} saw {got}, want each once: {want}")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", action="append", default=[], help="ws://127.0.0.1:PORT/ws of a node (A, B, C)")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--guarded-realm", default="buildbot", help="the build master's realm (kills for masters only)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--only", default=None, help="regex on scenario names")
    ap.add_argument("--timeout", type=float, default=60.0, help="hard timeout per scenario (s)")
    ap.add_argument("--wire", type=int, default=12, help="on FAIL, show the last N WAMP messages of each session")
    ap.add_argument("--verbose", action="store_true", help="autobahn debug logging")
    args = ap.parse_args(argv)
    if len(args.url) != 3:
        ap.error("give exactly three --url (nodes A, B, C of one mesh)")
    args.urls = list(args.url)
    return args


async def run_all(args):
    passed = failed = 0
    for name, fn, variants in SCENARIOS:
        for v in variants:
            full = f"{name}[{v}]" if v else name
            if args.only and not re.search(args.only, full):
                continue
            ctx = OneRouterCtx(args)
            if await base.run_scenario(args, ctx, full, lambda: fn(ctx, v)):
                passed += 1
            else:
                failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    txaio.start_logging(level="debug" if args.verbose else "critical")
    return 1 if asyncio.run(run_all(args)) else 0


if __name__ == "__main__":
    sys.exit(main())
