#!/usr/bin/env python3
"""Mesh-wide meta API: autobahn-python (asyncio) sessions on three switchyard nodes, one of
which the test harness SIGKILLs and restarts while the script watches from another node.

Usage (normally run by tests/interop_mesh.rs, which owns the nodes):
    autobahn_mesh_meta.py --url ws://127.0.0.1:PORT_A/ws --url ws://127.0.0.1:PORT_B/ws
                          --url ws://127.0.0.1:PORT_C/ws [--realm realm1] [--timeout 120]

The realm must have no other sessions. The script talks to the harness over its standard
streams: it prints `@@ kill C` when node C should be SIGKILLed and reads one line back
(`killed`); then it prints `@@ restart C` and reads `restarted ws://HOST:PORT/ws`, node C's
new URL.

What it checks, from a session on node A, as a user of the meta API would:
  * wamp.session.count / list include the sessions on B and C (5 in all), and
    wamp.session.get of a session on C says what C's WELCOME said;
  * wamp.subscription.lookup of a topic subscribed only on B and C finds a subscription
    whose list_subscribers / count_subscribers name the subscribers on both nodes;
  * wamp.registration.lookup of a procedure registered (roundrobin) only on B and C finds a
    registration whose list_callees / count_callees name the callees on both nodes;
  * after C is SIGKILLed, the count drops to 3 within the heartbeat timeout (3.5 s; C's
    sockets close, so it is noticed at once), and C's subscriber and callee leave the lists;
  * after C restarts, new sessions on it are counted again, and its new subscriber and callee
    appear in the same subscription's and registration's lists.

Output: `PASS mesh_meta_api` or `FAIL mesh_meta_api: <reason>` (with the last WAMP messages
of each session), then `1 passed, 0 failed` or `0 passed, 1 failed`; exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import autobahn_scenarios as base  # noqa: E402  (also selects asyncio for txaio)
from autobahn_mesh import MeshCtx  # noqa: E402
from autobahn_scenarios import Failure, Inbox, answer, check, check_id  # noqa: E402

import txaio  # noqa: E402
from autobahn.wamp.types import RegisterOptions  # noqa: E402

A, B, C = 0, 1, 2
MAPPING = ("json", "msgpack", "cbor")
HEARTBEAT_TIMEOUT = 3.5  # switchyard's default mesh.heartbeat_timeout_ms
SLACK = 2.5  # polling and a busy machine


async def meta(s, proc, *args):
    return await answer(s.call(proc, *args), what=f"{proc}{args!r} on {s.label}")


async def until(ctx, s, proc, args, ok, what, timeout=10.0):
    """Calls `proc` until `ok(answer)` (every 50 ms, bounded); returns (answer, seconds)."""
    ctx.step(f"waiting for {what}")
    t0 = time.monotonic()
    while True:
        got = await meta(s, proc, *args)
        if ok(got):
            return got, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise Failure(f"{what}: {proc}{tuple(args)!r} on node A still answers {got!r} after {timeout}s")
        await asyncio.sleep(0.05)


async def harness(ctx, request, expect):
    """Asks the harness for `request` on stdout; returns its one-line answer."""
    ctx.step(f"waiting for the harness to {request}")
    print(f"@@ {request}", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    line = line.strip()
    check(line.startswith(expect), f"harness answered {line!r} to {request!r}")
    return line


def ids(*sessions):
    return sorted(s.joined_sid for s in sessions)


async def scenario(ctx):
    ma = await ctx.connect(A, "A/json meta caller")
    sb = await ctx.connect(B, "B/msgpack subscriber")
    kb = await ctx.connect(B, "B/msgpack callee")
    sc = await ctx.connect(C, "C/cbor subscriber")
    kc = await ctx.connect(C, "C/cbor callee")

    # Sessions
    everyone = ids(ma, sb, kb, sc, kc)
    await until(ctx, ma, "wamp.session.count", [], lambda n: n == 5, "5 sessions counted on node A")
    listed = await meta(ma, "wamp.session.list")
    check(sorted(listed) == everyone, f"wamp.session.list on A = {sorted(listed)!r}, want {everyone!r}")
    wc = sc.joined.result()
    d = await meta(ma, "wamp.session.get", sc.joined_sid)
    check(d.get("session") == sc.joined_sid, f"get(C's session) on A: {d!r}")
    for key in ("authid", "authrole", "authmethod"):
        check(d.get(key) == getattr(wc, key), f"get(C's session) on A: {key} {d.get(key)!r}, C's WELCOME said {getattr(wc, key)!r}")
    n = await meta(ma, "wamp.session.count", [wc.authrole])
    check(n == 5, f"wamp.session.count([{wc.authrole!r}]) on A = {n!r}")

    # Subscriptions: only on B and C
    topic = ctx.uri("meta.topic")
    box = Inbox()
    sub_b = await answer(sb.subscribe(box.handler("b"), topic), what=f"SUBSCRIBE {topic} on B")
    await answer(sc.subscribe(box.handler("c"), topic), what=f"SUBSCRIBE {topic} on C")
    found, _ = await until(ctx, ma, "wamp.subscription.lookup", [topic], lambda v: v is not None, f"lookup({topic}) on A")
    check_id(found, "wamp.subscription.lookup on A")
    subs, _ = await until(
        ctx, ma, "wamp.subscription.list_subscribers", [found],
        lambda v: sorted(v or []) == ids(sb, sc), "subscribers on B and C listed on A",
    )
    n = await meta(ma, "wamp.subscription.count_subscribers", found)
    check(n == 2, f"count_subscribers on A = {n!r}")
    on_b = await meta(sb, "wamp.subscription.lookup", topic)
    check(on_b == sub_b.id, f"lookup on B = {on_b!r}, B's SUBSCRIBED said {sub_b.id}")

    # Registrations: only on B and C
    proc = ctx.uri("meta.proc")
    rr = RegisterOptions(invoke="roundrobin")
    await answer(kb.register(lambda: "b", proc, options=rr), what=f"REGISTER {proc} on B")
    await answer(kc.register(lambda: "c", proc, options=rr), what=f"REGISTER {proc} on C")
    reg, _ = await until(ctx, ma, "wamp.registration.lookup", [proc], lambda v: v is not None, f"lookup({proc}) on A")
    check_id(reg, "wamp.registration.lookup on A")
    await until(
        ctx, ma, "wamp.registration.list_callees", [reg],
        lambda v: sorted(v or []) == ids(kb, kc), "callees on B and C listed on A",
    )
    n = await meta(ma, "wamp.registration.count_callees", reg)
    check(n == 2, f"count_callees on A = {n!r}")
    answers = {await answer(ma.call(proc), what=f"CALL {proc} from A") for _ in range(4)}
    check(answers == {"b", "c"}, f"roundrobin over B and C answered {answers!r}")

    # Node C is SIGKILLed
    await harness(ctx, "kill C", "killed")
    _, took = await until(ctx, ma, "wamp.session.count", [], lambda n: n == 3, "C's sessions gone from the count")
    ctx.note(f"count dropped {took * 1000:.0f} ms after the kill was reported")
    check(took < HEARTBEAT_TIMEOUT + SLACK, f"C's sessions counted for {took:.1f}s after the kill")
    subs = await meta(ma, "wamp.subscription.list_subscribers", found)
    check(sorted(subs) == ids(sb), f"list_subscribers on A after the kill = {subs!r}")
    callees = await meta(ma, "wamp.registration.list_callees", reg)
    check(sorted(callees) == ids(kb), f"list_callees on A after the kill = {callees!r}")
    n = await meta(ma, "wamp.registration.count_callees", reg)
    check(n == 1, f"count_callees on A after the kill = {n!r}")

    # Node C restarts (new port): new sessions there are counted again
    line = await harness(ctx, "restart C", "restarted ")
    url = line.split(" ", 1)[1]
    check(urllib.parse.urlparse(url).scheme == "ws", f"harness gave {url!r} for C")
    ctx.cfg.urls[C] = url
    sc2 = await ctx.connect(C, "C/cbor subscriber (restarted node)")
    kc2 = await ctx.connect(C, "C/cbor callee (restarted node)")
    await answer(sc2.subscribe(box.handler("c2"), topic), what=f"SUBSCRIBE {topic} on restarted C")
    await answer(kc2.register(lambda: "c2", proc, options=rr), what=f"REGISTER {proc} on restarted C")
    await until(ctx, ma, "wamp.session.count", [], lambda n: n == 5, "C's new sessions counted", timeout=20.0)
    listed = await meta(ma, "wamp.session.list")
    check(sorted(listed) == ids(ma, sb, kb, sc2, kc2), f"wamp.session.list on A after the restart = {sorted(listed)!r}")
    await until(
        ctx, ma, "wamp.subscription.list_subscribers", [found],
        lambda v: sorted(v or []) == ids(sb, sc2), "C's new subscriber listed on A",
    )
    await until(
        ctx, ma, "wamp.registration.list_callees", [reg],
        lambda v: sorted(v or []) == ids(kb, kc2), "C's new callee listed on A",
    )


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", action="append", default=[], help="ws://127.0.0.1:PORT/ws of a node (A, B, C)")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--timeout", type=float, default=120.0, help="hard timeout (s)")
    ap.add_argument("--wire", type=int, default=12, help="on FAIL, show the last N WAMP messages of each session")
    ap.add_argument("--verbose", action="store_true", help="autobahn debug logging")
    args = ap.parse_args(argv)
    if len(args.url) != 3:
        ap.error("give exactly three --url (nodes A, B, C of one mesh)")
    args.urls = list(args.url)
    return args


async def run(args):
    ctx = MeshCtx(args, MAPPING)
    ok = await base.run_scenario(args, ctx, "mesh_meta_api", lambda: scenario(ctx))
    print(f"{int(ok)} passed, {int(not ok)} failed", flush=True)
    return ok


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    txaio.start_logging(level="debug" if args.verbose else "critical")
    return 0 if asyncio.run(run(args)) else 1


if __name__ == "__main__":
    sys.exit(main())
