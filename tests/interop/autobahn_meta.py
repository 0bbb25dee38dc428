#!/usr/bin/env python3
"""WAMP meta API interop: autobahn-python (asyncio) clients using every meta API of switchyard.

Usage:
    autobahn_meta.py --url ws://127.0.0.1:PORT/ws [--realm realm1] [--only REGEX]
                     [--exclude REGEX] [--timeout 10] [--wire 12] [--list] [--verbose]

What it checks, asserting what a user of the API would rely on:
  * Session: wamp.session.count / list (with and without filter_authroles), get (session,
    authid, authrole and realm as the session's own WELCOME announced; no_such_session for
    an unknown ID); on_join (the session dict) and on_leave (the session ID).
  * Killing: wamp.session.kill (default reason wamp.close.killed and a custom reason and
    message, as the victim sees them in GOODBYE; on_leave fires; the killer stays joined;
    no_such_session for an unknown ID), kill_by_authid (returns the killed session IDs),
    kill_by_authrole and kill_all (every other session of the realm goes, the caller stays).
  * Subscriptions: wamp.subscription.list / lookup (exact and prefix, the ID SUBSCRIBED gave)
    / match / get / list_subscribers / count_subscribers, and no_such_subscription; the
    on_create / on_subscribe / on_unsubscribe / on_delete events with the session ID and
    subscription details, including when the last subscriber's session leaves.
  * Registrations: the same for wamp.registration.* (list, lookup, match, get with invoke
    policy, list_callees / count_callees over a shared registration) and on_create /
    on_register / on_unregister / on_delete.
  * Testaments: wamp.session.add_testament published when the session drops its TCP
    connection, says GOODBYE, or is killed ("detached" scope too: Crossbar has no session
    resumption); flush_testaments removes them (returns count); bad scope ->
    wamp.error.testament_error.
  * Protected URIs: like Crossbar, the wamp.* subscriptions and registrations (the router's
    own meta procedures, clients' subscriptions to meta events) are hidden from
    lookup/match/list, and get/list_subscribers answer wamp.error.not_authorized.
  * Retention: publish(retain=True) then subscribe(get_retained=True) gets the last retained
    event (details.retained), a subscriber without get_retained gets none; a newer retained
    event replaces the older one. wamp.subscription.get_events on a realm without event
    history: wamp.error.history_unavailable (as Crossbar without a store).

Against Crossbar 26.10 (tests/interop/crossbar/start.sh) these fail by design, Crossbar
deviating from the spec or from what a user can rely on: session_kill (Crossbar's GOODBYE
reason is wamp.close.normal unless a reason is passed; the spec's wamp.close.killed is
expected), session_kill_by_authrole (Crossbar kills the caller too when it has that role,
so its CALL never gets a RESULT), session_kill_all (not implemented by Crossbar),
subscription_api (Crossbar's wamp.subscription.list leaves wildcard subscriptions out),
subscription_events and registration_events (when a session leaves, Crossbar's
on_unsubscribe / on_delete / on_unregister carry session None instead of its ID).

Output: one `PASS <name>` / `FAIL <name>: <reason>` line per scenario (on FAIL, the last
WAMP messages of each session), and a final `N passed, M failed`; exit status 1 if any
failed. Other sessions on the realm disturb the kill_by_authrole / kill_all scenarios (they
kill every session of the realm but the caller), so run this against a router of its own.
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
    Ctx,
    Failure,
    Inbox,
    answer,
    check,
    check_id,
    expect_app_error,
    fmt_msg,
    fmt_recs,
)

import txaio  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.types import (  # noqa: E402
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append((fn.__name__.removeprefix("sc_"), fn))
    return fn


async def meta(s, proc, *args, what=None, **kwargs):
    return await answer(s.call(proc, *args, **kwargs), what=what or proc)


async def watch(ctx, s, topics):
    """Subscribes `s` to meta topics; one Inbox, items tagged with the topic."""
    box = Inbox()
    for t in topics:
        await answer(s.subscribe(box.handler(t), t), what=f"SUBSCRIBE {t}")
    return box


async def wait_left(sess, what, timeout=3.0):
    try:
        await asyncio.wait_for(asyncio.shield(sess.closed), timeout)
    except asyncio.TimeoutError:
        raise Failure(f"{what}: session {sess.joined_sid} still connected after {timeout}s")


async def quiet(box, pred, seconds, what):
    """Nothing matching `pred` arrives in `box` within `seconds`."""
    await asyncio.sleep(seconds)
    bad = [r for r in box.items if pred(r)]
    check(not bad, f"{what}: {fmt_recs(bad)}")


def welcome(sess):
    return sess.joined.result()


# --------------------------------------------------------------------------------------
# sessions


@scenario
async def sc_session_count_list_get(ctx):
    a = await ctx.connect("json")
    b = await ctx.connect("msgpack")
    c = await ctx.connect("cbor")
    wb = welcome(b)
    ctx.step("count/list")
    n = await meta(a, "wamp.session.count")
    check(isinstance(n, int) and n >= 3, f"wamp.session.count = {n!r} with 3 sessions joined")
    ids = await meta(a, "wamp.session.list")
    check(isinstance(ids, list), f"wamp.session.list returned {ids!r}")
    for s in (a, b, c):
        check(s.joined_sid in ids, f"wamp.session.list {ids!r} lacks session {s.joined_sid}")
    check(len(ids) == n, f"count {n} != len(list) {len(ids)}")
    role = wb.authrole
    ids_r = await meta(a, "wamp.session.list", [role])
    check(all(s.joined_sid in ids_r for s in (a, b, c)), f"list(filter_authroles=[{role!r}]) = {ids_r!r}")
    n_r = await meta(c, "wamp.session.count", [role])
    check(n_r == len(ids_r), f"count([{role!r}]) = {n_r!r}, list gave {len(ids_r)}")
    none = await meta(a, "wamp.session.list", ["com.switchyard.no-such-role"])
    check(none == [], f"list(filter_authroles=[unknown]) = {none!r}")
    n0 = await meta(a, "wamp.session.count", filter_authroles=["com.switchyard.no-such-role"])
    check(n0 == 0, f"count(filter_authroles=[unknown] as keyword) = {n0!r}")
    ctx.step("get")
    d = await meta(a, "wamp.session.get", b.joined_sid)
    check(isinstance(d, dict), f"wamp.session.get returned {d!r}")
    check(d.get("session") == b.joined_sid, f"get: session {d.get('session')!r} != {b.joined_sid}")
    check(d.get("authid") == wb.authid, f"get: authid {d.get('authid')!r}, WELCOME said {wb.authid!r}")
    check(d.get("authrole") == wb.authrole, f"get: authrole {d.get('authrole')!r}, WELCOME said {wb.authrole!r}")
    check(d.get("authmethod") == wb.authmethod, f"get: authmethod {d.get('authmethod')!r}, WELCOME said {wb.authmethod!r}")
    if "realm" in d:
        check(d["realm"] == ctx.cfg.realm, f"get: realm {d['realm']!r}")
    # a session asks about itself
    d2 = await meta(b, "wamp.session.get", b.joined_sid)
    check(d2.get("session") == b.joined_sid, f"get(own id): {d2!r}")
    await expect_app_error(a.call("wamp.session.get", 1), "wamp.error.no_such_session", what="get(unknown id)")
    ctx.step("count after a leave")
    c.leave()
    await wait_left(c, "leave")
    ids2 = await meta(a, "wamp.session.list")
    check(c.joined_sid not in ids2, f"session {c.joined_sid} still listed after GOODBYE: {ids2!r}")
    await expect_app_error(a.call("wamp.session.get", c.joined_sid), "wamp.error.no_such_session", what="get(left session)")


@scenario
async def sc_session_on_join_on_leave(ctx):
    w = await ctx.connect("json", label="watcher")
    box = await watch(ctx, w, ["wamp.session.on_join", "wamp.session.on_leave"])
    s = await ctx.connect("cbor", label="joiner")
    ws = welcome(s)
    ctx.step("on_join")
    ev = await box.wait_for(
        lambda r: r.tag == "wamp.session.on_join" and r.args and isinstance(r.args[0], dict) and r.args[0].get("session") == s.joined_sid,
        3,
        f"wamp.session.on_join for session {s.joined_sid}",
    )
    d = ev.args[0]
    check(d.get("authid") == ws.authid and d.get("authrole") == ws.authrole, f"on_join details {d!r} vs WELCOME authid={ws.authid!r} authrole={ws.authrole!r}")
    check(d.get("authmethod") == ws.authmethod, f"on_join authmethod {d.get('authmethod')!r}")
    ctx.step("on_leave (GOODBYE)")
    s.leave()
    ev = await box.wait_for(
        lambda r: r.tag == "wamp.session.on_leave" and r.args and r.args[0] == s.joined_sid, 3, f"wamp.session.on_leave for {s.joined_sid}"
    )
    ctx.step("on_leave (TCP dropped)")
    s2 = await ctx.connect("msgpack", label="dropper")
    await box.wait_for(lambda r: r.tag == "wamp.session.on_join" and r.args[0].get("session") == s2.joined_sid, 3, "on_join of 2nd")
    ctx.sessions[-1][1].abort()
    await box.wait_for(
        lambda r: r.tag == "wamp.session.on_leave" and r.args and r.args[0] == s2.joined_sid, 3, f"wamp.session.on_leave for dropped {s2.joined_sid}"
    )
    n = len([r for r in box.items if r.tag == "wamp.session.on_leave" and r.args[0] in (s.joined_sid, s2.joined_sid)])
    check(n == 2, f"on_leave fired {n} times for 2 sessions")


@scenario
async def sc_session_kill(ctx):
    killer = await ctx.connect("json", label="killer")
    box = await watch(ctx, killer, ["wamp.session.on_leave"])
    v1 = await ctx.connect("msgpack", label="victim1")
    v2 = await ctx.connect("cbor", label="victim2")
    ctx.step("kill with default reason")
    res = await meta(killer, "wamp.session.kill", v1.joined_sid)
    check(res is None, f"wamp.session.kill returned {res!r}")
    await wait_left(v1, "killed victim1")
    check(v1.leave_details is not None, "victim1 saw no GOODBYE")
    check(v1.leave_details.reason == "wamp.close.killed", f"victim1 GOODBYE reason {v1.leave_details.reason!r}, expected wamp.close.killed")
    await box.wait_for(lambda r: r.args and r.args[0] == v1.joined_sid, 3, f"on_leave for killed {v1.joined_sid}")
    ctx.step("kill with reason and message")
    await meta(killer, "wamp.session.kill", v2.joined_sid, reason="com.switchyard.itest.kicked", message="go away")
    await wait_left(v2, "killed victim2")
    ld = v2.leave_details
    check(ld is not None and ld.reason == "com.switchyard.itest.kicked", f"victim2 GOODBYE reason {getattr(ld, 'reason', None)!r}")
    check(ld.message == "go away", f"victim2 GOODBYE message {ld.message!r}")
    await box.wait_for(lambda r: r.args and r.args[0] == v2.joined_sid, 3, f"on_leave for killed {v2.joined_sid}")
    ctx.step("killer still usable")
    check(killer.is_attached(), "the killer lost its session")
    ids = await meta(killer, "wamp.session.list")
    check(v1.joined_sid not in ids and v2.joined_sid not in ids and killer.joined_sid in ids, f"list after kills: {ids!r}")
    await expect_app_error(killer.call("wamp.session.kill", v1.joined_sid), "wamp.error.no_such_session", what="kill(gone session)")


@scenario
async def sc_session_kill_by_authid(ctx):
    killer = await ctx.connect("json", label="killer")
    box = await watch(ctx, killer, ["wamp.session.on_leave"])
    victim = await ctx.connect("msgpack", label="victim")
    bystander = await ctx.connect("json", label="bystander")
    authid = welcome(victim).authid
    check(authid, f"victim has no authid: {authid!r}")
    if welcome(bystander).authid == authid or welcome(killer).authid == authid:
        raise Failure(f"anonymous sessions share authid {authid!r}; cannot test kill_by_authid selectively")
    killed = await meta(killer, "wamp.session.kill_by_authid", authid, reason="com.switchyard.itest.byauthid")
    check(killed == [victim.joined_sid], f"kill_by_authid({authid!r}) returned {killed!r}, expected [{victim.joined_sid}]")
    await wait_left(victim, "victim")
    check(victim.leave_details.reason == "com.switchyard.itest.byauthid", f"victim GOODBYE reason {victim.leave_details.reason!r}")
    await box.wait_for(lambda r: r.args and r.args[0] == victim.joined_sid, 3, "on_leave for victim")
    check(bystander.is_attached(), "bystander was killed too")
    none = await meta(killer, "wamp.session.kill_by_authid", "com.switchyard.no-such-authid")
    check(none == [], f"kill_by_authid(unknown) returned {none!r}")


@scenario
async def sc_session_kill_by_authrole(ctx):
    killer = await ctx.connect("json", label="killer")
    box = await watch(ctx, killer, ["wamp.session.on_leave"])
    vs = [await ctx.connect(ser, label=f"victim-{ser}") for ser in ("msgpack", "cbor", "json.batched")]
    role = welcome(vs[0]).authrole
    none = await meta(killer, "wamp.session.kill_by_authrole", "com.switchyard.no-such-role")
    check(none == [], f"kill_by_authrole(unknown) returned {none!r}")
    check(all(v.is_attached() for v in vs), "kill_by_authrole(unknown role) killed someone")
    killed = await meta(killer, "wamp.session.kill_by_authrole", role)
    check(isinstance(killed, list), f"kill_by_authrole returned {killed!r}")
    for v in vs:
        check(v.joined_sid in killed, f"kill_by_authrole({role!r}) returned {killed!r}, lacks {v.joined_sid}")
        await wait_left(v, v.label)
        check(v.leave_details.reason == "wamp.close.killed", f"{v.label} GOODBYE reason {v.leave_details.reason!r}")
        await box.wait_for(lambda r, v=v: r.args and r.args[0] == v.joined_sid, 3, f"on_leave for {v.label}")
    check(killer.joined_sid not in killed, f"the caller is in its own kill list {killed!r}")
    check(killer.is_attached(), "kill_by_authrole killed the caller")
    n = await meta(killer, "wamp.session.count")
    check(n == 1, f"count after kill_by_authrole = {n!r} (only the caller should be left)")


@scenario
async def sc_session_kill_all(ctx):
    killer = await ctx.connect("cbor", label="killer")
    box = await watch(ctx, killer, ["wamp.session.on_leave"])
    vs = [await ctx.connect(ser, label=f"victim-{ser}") for ser in ("json", "msgpack")]
    n = await meta(killer, "wamp.session.kill_all", reason="com.switchyard.itest.all", message="everyone out")
    check(n == len(vs), f"kill_all returned {n!r}, expected {len(vs)}")
    for v in vs:
        await wait_left(v, v.label)
        ld = v.leave_details
        check(ld.reason == "com.switchyard.itest.all" and ld.message == "everyone out", f"{v.label} GOODBYE {ld.reason!r} {ld.message!r}")
        await box.wait_for(lambda r, v=v: r.args and r.args[0] == v.joined_sid, 3, f"on_leave for {v.label}")
    check(killer.is_attached(), "kill_all killed the caller")
    ids = await meta(killer, "wamp.session.list")
    check(ids == [killer.joined_sid], f"list after kill_all: {ids!r}")


# --------------------------------------------------------------------------------------
# subscriptions


@scenario
async def sc_subscription_api(ctx):
    s1 = await ctx.connect("json", label="sub1")
    s2 = await ctx.connect("msgpack", label="sub2")
    q = await ctx.connect("cbor", label="query")
    t = ctx.uri("topic.a")
    noop = lambda *a, **k: None  # noqa: E731
    sub1 = await answer(s1.subscribe(noop, t), what="SUBSCRIBE exact")
    subp = await answer(s1.subscribe(noop, ctx.prefix, options=SubscribeOptions(match="prefix")), what="SUBSCRIBE prefix")
    wc = ctx.prefix + "..a"
    subw = await answer(s2.subscribe(noop, wc, options=SubscribeOptions(match="wildcard")), what="SUBSCRIBE wildcard")
    ctx.step("lookup")
    got = await meta(q, "wamp.subscription.lookup", t)
    check(got == sub1.id, f"lookup({t!r}) = {got!r}, SUBSCRIBED gave {sub1.id}")
    got = await meta(q, "wamp.subscription.lookup", t, {"match": "exact"})
    check(got == sub1.id, f"lookup(exact) = {got!r}")
    got = await meta(q, "wamp.subscription.lookup", ctx.prefix, {"match": "prefix"})
    check(got == subp.id, f"lookup(prefix) = {got!r}, SUBSCRIBED gave {subp.id}")
    got = await meta(q, "wamp.subscription.lookup", wc, {"match": "wildcard"})
    check(got == subw.id, f"lookup(wildcard) = {got!r}, SUBSCRIBED gave {subw.id}")
    got = await meta(q, "wamp.subscription.lookup", ctx.prefix)
    check(got is None, f"lookup of the prefix URI with exact policy = {got!r}")
    got = await meta(q, "wamp.subscription.lookup", ctx.uri("nobody"))
    check(got is None, f"lookup(unsubscribed topic) = {got!r}")
    ctx.step("match")
    got = await meta(q, "wamp.subscription.match", t)
    check(isinstance(got, list) and sorted(got) == sorted([sub1.id, subp.id, subw.id]), f"match({t!r}) = {got!r}, expected {[sub1.id, subp.id, subw.id]}")
    got = await meta(q, "wamp.subscription.match", ctx.uri("other.b"))
    check(got == [subp.id], f"match(prefix-only topic) = {got!r}")
    got = await meta(q, "wamp.subscription.match", "com.switchyard.nomatch.x")
    check(got is None, f"match(no subscription) = {got!r}")
    ctx.step("list")
    lst = await meta(q, "wamp.subscription.list")
    check(isinstance(lst, dict) and set(lst) >= {"exact", "prefix", "wildcard"}, f"list = {lst!r}")
    check(sub1.id in lst["exact"] and subp.id in lst["prefix"] and subw.id in lst["wildcard"], f"list {lst!r} lacks {sub1.id}/{subp.id}/{subw.id}")
    ctx.step("get")
    d = await meta(q, "wamp.subscription.get", sub1.id)
    check(d.get("id") == sub1.id and d.get("uri") == t and d.get("match") == "exact", f"get(exact) = {d!r}")
    check(isinstance(d.get("created"), str) and d["created"], f"get: created {d.get('created')!r}")
    d = await meta(q, "wamp.subscription.get", subw.id)
    check(d.get("uri") == wc and d.get("match") == "wildcard", f"get(wildcard) = {d!r}")
    ctx.step("subscribers")
    got = await meta(q, "wamp.subscription.list_subscribers", sub1.id)
    check(got == [s1.joined_sid], f"list_subscribers = {got!r}, expected [{s1.joined_sid}]")
    sub1b = await answer(s2.subscribe(noop, t), what="second SUBSCRIBE exact")
    check(sub1b.id == sub1.id, f"second subscriber got subscription {sub1b.id}, first {sub1.id}")
    got = await meta(q, "wamp.subscription.list_subscribers", sub1.id)
    check(sorted(got) == sorted([s1.joined_sid, s2.joined_sid]), f"list_subscribers with two = {got!r}")
    n = await meta(q, "wamp.subscription.count_subscribers", sub1.id)
    check(n == 2, f"count_subscribers = {n!r}")
    await answer(sub1.unsubscribe(), what="UNSUBSCRIBE sub1")
    got = await meta(q, "wamp.subscription.list_subscribers", sub1.id)
    check(got == [s2.joined_sid], f"list_subscribers after one unsubscribed = {got!r}")
    n = await meta(q, "wamp.subscription.count_subscribers", sub1.id)
    check(n == 1, f"count_subscribers after one unsubscribed = {n!r}")
    ctx.step("subscription deleted")
    await answer(sub1b.unsubscribe(), what="UNSUBSCRIBE last")
    got = await meta(q, "wamp.subscription.lookup", t)
    check(got is None, f"lookup after the last subscriber left = {got!r}")
    lst = await meta(q, "wamp.subscription.list")
    check(sub1.id not in lst.get("exact", []), f"deleted subscription still listed: {lst!r}")
    for p in ("get", "list_subscribers", "count_subscribers"):
        await expect_app_error(q.call(f"wamp.subscription.{p}", sub1.id), "wamp.error.no_such_subscription", what=f"{p}(deleted)")
    ctx.step("session leaves")
    s2.leave()
    await wait_left(s2, "sub2")
    got = await meta(q, "wamp.subscription.lookup", wc, {"match": "wildcard"})
    check(got is None, f"wildcard subscription of a left session still looked up: {got!r}")


@scenario
async def sc_subscription_events(ctx):
    w = await ctx.connect("json", label="watcher")
    topics = [f"wamp.subscription.on_{e}" for e in ("create", "subscribe", "unsubscribe", "delete")]
    box = await watch(ctx, w, topics)
    s1 = await ctx.connect("msgpack", label="sub1")
    s2 = await ctx.connect("cbor", label="sub2")
    t = ctx.uri("ev")
    noop = lambda *a, **k: None  # noqa: E731

    def ev(kind, sid, sub_id=None):
        def p(r):
            if r.tag != f"wamp.subscription.on_{kind}" or len(r.args) < 2 or r.args[0] != sid:
                return False
            if kind == "create":
                return isinstance(r.args[1], dict) and r.args[1].get("uri") == t
            return r.args[1] == sub_id

        return p

    ctx.step("first subscribe")
    sub1 = await answer(s1.subscribe(noop, t), what="SUBSCRIBE 1")
    r = await box.wait_for(ev("create", s1.joined_sid), 3, f"on_create by {s1.joined_sid}")
    d = r.args[1]
    check(d.get("id") == sub1.id and d.get("match") == "exact" and d.get("created"), f"on_create details {d!r}, subscription {sub1.id}")
    await box.wait_for(ev("subscribe", s1.joined_sid, sub1.id), 3, "on_subscribe by sub1")
    ctx.step("second subscribe")
    sub2 = await answer(s2.subscribe(noop, t), what="SUBSCRIBE 2")
    await box.wait_for(ev("subscribe", s2.joined_sid, sub2.id), 3, "on_subscribe by sub2")
    creates = [r for r in box.items if r.tag.endswith("on_create") and r.args[1].get("uri") == t]
    check(len(creates) == 1, f"on_create fired {len(creates)} times for one subscription")
    ctx.step("unsubscribe (not last)")
    await answer(sub2.unsubscribe(), what="UNSUBSCRIBE 2")
    await box.wait_for(ev("unsubscribe", s2.joined_sid, sub1.id), 3, "on_unsubscribe by sub2")
    ctx.step("last subscriber's session leaves")
    s1.leave()
    await box.wait_for(ev("unsubscribe", s1.joined_sid, sub1.id), 3, "on_unsubscribe by sub1 on leave")
    await box.wait_for(ev("delete", s1.joined_sid, sub1.id), 3, "on_delete by sub1 on leave")
    dels = [r for r in box.items if r.tag.endswith("on_delete") and r.args[1] == sub1.id]
    check(len(dels) == 1, f"on_delete fired {len(dels)} times")
    check(not any(r.tag.endswith("on_delete") and r.args[0] == s2.joined_sid for r in box.items), "on_delete attributed to sub2")
    ctx.step("explicit unsubscribe of the last subscriber")
    t2 = ctx.uri("ev2")
    sub3 = await answer(s2.subscribe(noop, t2, options=SubscribeOptions(match="prefix")), what="SUBSCRIBE prefix")
    r = await box.wait_for(lambda r: r.tag.endswith("on_create") and r.args[0] == s2.joined_sid and r.args[1].get("uri") == t2, 3, "on_create prefix")
    check(r.args[1].get("match") == "prefix" and r.args[1].get("id") == sub3.id, f"on_create details {r.args[1]!r}")
    await answer(sub3.unsubscribe(), what="UNSUBSCRIBE prefix")
    await box.wait_for(lambda r: r.tag.endswith("on_unsubscribe") and r.args == [s2.joined_sid, sub3.id], 3, "on_unsubscribe prefix")
    await box.wait_for(lambda r: r.tag.endswith("on_delete") and r.args == [s2.joined_sid, sub3.id], 3, "on_delete prefix")
    ctx.step("no meta events for wamp.* subscriptions")
    await quiet(box, lambda r: r.tag.endswith("on_create") and str(r.args[1].get("uri", "")).startswith("wamp."), 0.2, "meta events about the meta topics")


# --------------------------------------------------------------------------------------
# registrations


@scenario
async def sc_registration_api(ctx):
    c1 = await ctx.connect("json", label="callee1")
    c2 = await ctx.connect("msgpack", label="callee2")
    q = await ctx.connect("cbor", label="query")
    p = ctx.uri("proc.a")
    f = lambda *a, **k: "ok"  # noqa: E731
    shared = RegisterOptions(invoke="roundrobin")
    r1 = await answer(c1.register(f, p, options=shared), what="REGISTER exact (roundrobin)")
    rp = await answer(c1.register(f, ctx.prefix, options=RegisterOptions(match="prefix")), what="REGISTER prefix")
    wc = ctx.prefix + "..a"
    rw = await answer(c2.register(f, wc, options=RegisterOptions(match="wildcard")), what="REGISTER wildcard")
    ctx.step("lookup")
    got = await meta(q, "wamp.registration.lookup", p)
    check(got == r1.id, f"lookup({p!r}) = {got!r}, REGISTERED gave {r1.id}")
    got = await meta(q, "wamp.registration.lookup", ctx.prefix, {"match": "prefix"})
    check(got == rp.id, f"lookup(prefix) = {got!r}, REGISTERED gave {rp.id}")
    got = await meta(q, "wamp.registration.lookup", wc, {"match": "wildcard"})
    check(got == rw.id, f"lookup(wildcard) = {got!r}, REGISTERED gave {rw.id}")
    got = await meta(q, "wamp.registration.lookup", ctx.uri("nothing"))
    check(got is None, f"lookup(unregistered) = {got!r}")
    ctx.step("match (the registration a CALL would use)")
    got = await meta(q, "wamp.registration.match", p)
    check(got == r1.id, f"match({p!r}) = {got!r}, exact registration is {r1.id}")
    got = await meta(q, "wamp.registration.match", ctx.uri("x.a"))
    check(got == rp.id, f"match(prefix beats wildcard) = {got!r}, prefix is {rp.id}")
    got = await meta(q, "wamp.registration.match", "com.switchyard.nomatch.x")
    check(got is None, f"match(nothing) = {got!r}")
    ctx.step("list")
    lst = await meta(q, "wamp.registration.list")
    check(isinstance(lst, dict) and r1.id in lst.get("exact", []) and rp.id in lst.get("prefix", []) and rw.id in lst.get("wildcard", []), f"list = {lst!r}")
    ctx.step("get")
    d = await meta(q, "wamp.registration.get", r1.id)
    check(d.get("id") == r1.id and d.get("uri") == p and d.get("match") == "exact" and d.get("invoke") == "roundrobin", f"get = {d!r}")
    check(isinstance(d.get("created"), str) and d["created"], f"get: created {d.get('created')!r}")
    d = await meta(q, "wamp.registration.get", rp.id)
    check(d.get("match") == "prefix" and d.get("invoke") == "single", f"get(prefix) = {d!r}")
    ctx.step("callees")
    got = await meta(q, "wamp.registration.list_callees", r1.id)
    check(got == [c1.joined_sid], f"list_callees = {got!r}")
    r1b = await answer(c2.register(f, p, options=shared), what="REGISTER shared 2nd callee")
    check(r1b.id == r1.id, f"shared registration IDs differ: {r1b.id} vs {r1.id}")
    got = await meta(q, "wamp.registration.list_callees", r1.id)
    check(sorted(got) == sorted([c1.joined_sid, c2.joined_sid]), f"list_callees (shared) = {got!r}")
    n = await meta(q, "wamp.registration.count_callees", r1.id)
    check(n == 2, f"count_callees = {n!r}")
    await answer(r1.unregister(), what="UNREGISTER callee1")
    n = await meta(q, "wamp.registration.count_callees", r1.id)
    check(n == 1, f"count_callees after one unregistered = {n!r}")
    got = await meta(q, "wamp.registration.list_callees", r1.id)
    check(got == [c2.joined_sid], f"list_callees after one unregistered = {got!r}")
    ctx.step("registration deleted with its last callee's session")
    c2.leave()
    await wait_left(c2, "callee2")
    got = await meta(q, "wamp.registration.lookup", p)
    check(got is None, f"lookup after last callee left = {got!r}")
    for proc in ("get", "list_callees", "count_callees"):
        await expect_app_error(q.call(f"wamp.registration.{proc}", r1.id), "wamp.error.no_such_registration", what=f"{proc}(deleted)")
    lst = await meta(q, "wamp.registration.list")
    check(r1.id not in lst.get("exact", []) and rw.id not in lst.get("wildcard", []), f"list after callee2 left: {lst!r}")


@scenario
async def sc_registration_events(ctx):
    w = await ctx.connect("json", label="watcher")
    topics = [f"wamp.registration.on_{e}" for e in ("create", "register", "unregister", "delete")]
    box = await watch(ctx, w, topics)
    c1 = await ctx.connect("msgpack", label="callee1")
    c2 = await ctx.connect("cbor", label="callee2")
    p = ctx.uri("rpc")
    f = lambda *a, **k: None  # noqa: E731
    ctx.step("first register")
    r1 = await answer(c1.register(f, p, options=RegisterOptions(invoke="first")), what="REGISTER 1")
    r = await box.wait_for(lambda r: r.tag.endswith("on_create") and r.args[0] == c1.joined_sid and r.args[1].get("uri") == p, 3, "on_create")
    d = r.args[1]
    check(d.get("id") == r1.id and d.get("match") == "exact" and d.get("invoke") == "first" and d.get("created"), f"on_create details {d!r}")
    await box.wait_for(lambda r: r.tag.endswith("on_register") and r.args == [c1.joined_sid, r1.id], 3, "on_register by callee1")
    ctx.step("second callee")
    r2 = await answer(c2.register(f, p, options=RegisterOptions(invoke="first")), what="REGISTER 2")
    await box.wait_for(lambda r: r.tag.endswith("on_register") and r.args == [c2.joined_sid, r2.id], 3, "on_register by callee2")
    n = len([r for r in box.items if r.tag.endswith("on_create") and r.args[1].get("uri") == p])
    check(n == 1, f"on_create fired {n} times")
    ctx.step("unregister")
    await answer(r1.unregister(), what="UNREGISTER 1")
    await box.wait_for(lambda r: r.tag.endswith("on_unregister") and r.args == [c1.joined_sid, r1.id], 3, "on_unregister by callee1")
    ctx.step("last callee drops its connection")
    for sess, tr in ctx.sessions:
        if sess is c2:
            tr.abort()
    await box.wait_for(lambda r: r.tag.endswith("on_unregister") and r.args == [c2.joined_sid, r1.id], 3, "on_unregister by dropped callee2")
    await box.wait_for(lambda r: r.tag.endswith("on_delete") and r.args == [c2.joined_sid, r1.id], 3, "on_delete by dropped callee2")
    check(not any(r.tag.endswith("on_delete") and r.args[0] == c1.joined_sid for r in box.items), "on_delete attributed to callee1")


@scenario
async def sc_protected_uris_hidden(ctx):
    """Crossbar (observation.is_protected_uri) hides wamp.* / crossbar.* subscriptions and
    registrations from non-trusted callers: lookup/match give None, list leaves them out,
    get/list_subscribers/list_callees answer wamp.error.not_authorized."""
    w = await ctx.connect("json", label="meta-subscriber")
    subj = await answer(w.subscribe(lambda *a: None, "wamp.session.on_join"), what="SUBSCRIBE wamp.session.on_join")
    problems = []

    async def expect(what, aw, want):
        try:
            got = await asyncio.wait_for(base._shielded(aw), 3)
        except ApplicationError as e:
            got = f"ERROR {e.error}"
        except asyncio.TimeoutError:
            got = "no answer"
        if got != want:
            problems.append(f"{what} = {got!r} (Crossbar: {want!r})")

    await expect("registration.lookup('wamp.session.count')", w.call("wamp.registration.lookup", "wamp.session.count"), None)
    await expect("registration.match('wamp.session.count')", w.call("wamp.registration.match", "wamp.session.count"), None)
    await expect("subscription.lookup('wamp.session.on_join')", w.call("wamp.subscription.lookup", "wamp.session.on_join"), None)
    await expect("subscription.match('wamp.session.on_join')", w.call("wamp.subscription.match", "wamp.session.on_join"), None)
    await expect(f"subscription.get({subj.id})", w.call("wamp.subscription.get", subj.id), "ERROR wamp.error.not_authorized")
    await expect(f"subscription.list_subscribers({subj.id})", w.call("wamp.subscription.list_subscribers", subj.id), "ERROR wamp.error.not_authorized")
    reg_id = await meta(w, "wamp.registration.lookup", "wamp.session.count")
    if reg_id is not None:  # leaked by lookup: the other procedures must not describe it either
        await expect(f"registration.get({reg_id})", w.call("wamp.registration.get", reg_id), "ERROR wamp.error.not_authorized")
        await expect(f"registration.list_callees({reg_id})", w.call("wamp.registration.list_callees", reg_id), "ERROR wamp.error.not_authorized")
    lst = await meta(w, "wamp.subscription.list")
    if subj.id in sum((v for v in lst.values() if isinstance(v, list)), []):
        problems.append(f"subscription.list shows the wamp.session.on_join subscription {subj.id}")
    check(not problems, "; ".join(problems))


# --------------------------------------------------------------------------------------
# testaments


async def testament_setup(ctx, ser="json"):
    sub = await ctx.connect("json", label="subscriber")
    box = Inbox()
    t = ctx.uri("testament")
    await answer(sub.subscribe(box.handler("ev"), t, options=SubscribeOptions(details_arg="details")), what="SUBSCRIBE testament topic")
    s = await ctx.connect(ser, label="dying")
    return sub, box, t, s


@scenario
async def sc_testament_on_tcp_drop(ctx):
    sub, box, t, s = await testament_setup(ctx, "msgpack")
    pid = await meta(s, "wamp.session.add_testament", t, ["gone", 1], {"who": s.joined_sid})
    check_id(pid, "add_testament result (publication ID)")
    await asyncio.sleep(0.2)
    check(not box.items, f"testament published while the session is alive: {fmt_recs(box.items)}")
    ctx.step("dropping TCP")
    ctx.sessions[-1][1].abort()
    ev = await box.wait_tag("ev", what="testament EVENT after TCP drop")
    check(ev.args == ["gone", 1] and ev.kwargs == {"who": s.joined_sid}, f"testament EVENT {fmt_recs([ev])}")
    await asyncio.sleep(0.2)
    check(len(box.items) == 1, f"testament delivered {len(box.items)} times")


@scenario
async def sc_testament_on_goodbye_and_kill(ctx):
    sub, box, t, s = await testament_setup(ctx, "cbor")
    await meta(s, "wamp.session.add_testament", t, ["bye"], {}, {"exclude_me": True})
    s.leave()
    ev = await box.wait_tag("ev", what="testament EVENT after GOODBYE")
    check(ev.args == ["bye"], f"testament EVENT {fmt_recs([ev])}")
    ctx.step("killed session")
    s2 = await ctx.connect("json", label="killed")
    await meta(s2, "wamp.session.add_testament", t, args=["killed"], kwargs={"k": 1})
    await meta(sub, "wamp.session.kill", s2.joined_sid)
    await wait_left(s2, "killed session")
    ev = await box.wait_for(lambda r: r.args == ["killed"], 3, "testament EVENT after kill")
    check(ev.kwargs == {"k": 1}, f"testament kwargs {ev.kwargs!r}")
    ctx.step("detached-scope testament on close")
    # Crossbar has no session resumption: a session that closes is detached and destroyed
    # at once, so it publishes "detached" testaments too (RouterSession.onLeave).
    s3 = await ctx.connect("json", label="detached")
    await meta(s3, "wamp.session.add_testament", t, ["detached"], {}, None, "detached")
    s3.leave()
    await wait_left(s3, "detached")
    await box.wait_for(lambda r: r.args == ["detached"], 3, "detached-scope testament after GOODBYE")


@scenario
async def sc_testament_flush(ctx):
    sub, box, t, s = await testament_setup(ctx, "json")
    await meta(s, "wamp.session.add_testament", t, ["one"], {})
    await meta(s, "wamp.session.add_testament", t, ["two"], {})
    n = await meta(s, "wamp.session.flush_testaments")
    check(n == 2, f"flush_testaments returned {n!r}, expected 2")
    n = await meta(s, "wamp.session.flush_testaments")
    check(n == 0, f"second flush_testaments returned {n!r}")
    n = await meta(s, "wamp.session.flush_testaments", "detached")
    check(n == 0, f"flush_testaments('detached') returned {n!r}")
    await expect_app_error(s.call("wamp.session.flush_testaments", "bogus"), "wamp.error.testament_error", what="flush_testaments(bad scope)")
    await expect_app_error(
        s.call("wamp.session.add_testament", t, [], {}, None, "bogus"), "wamp.error.testament_error", what="add_testament(bad scope)"
    )
    await meta(s, "wamp.session.add_testament", t, ["three"], {})
    ctx.step("dropping TCP after the flush")
    ctx.sessions[-1][1].abort()
    ev = await box.wait_tag("ev", what="the unflushed testament")
    await asyncio.sleep(0.2)
    got = [r.args for r in box.items]
    check(got == [["three"]], f"testament EVENTs after flush: {got!r}, expected only ['three']")


# --------------------------------------------------------------------------------------
# retention and history


@scenario
async def sc_retained_events(ctx):
    pub = await ctx.connect("json", label="publisher")
    t = ctx.uri("retained")
    ctx.step("publish retained with no subscriber")
    await answer(pub.publish(t, "old", options=PublishOptions(retain=True, acknowledge=True)), what="PUBLISH retain 1")
    await answer(pub.publish(t, "new", n=2, options=PublishOptions(retain=True, acknowledge=True)), what="PUBLISH retain 2")
    await answer(pub.publish(t, "not-retained", options=PublishOptions(acknowledge=True)), what="PUBLISH without retain")
    ctx.step("subscribe with get_retained")
    s1 = await ctx.connect("msgpack", label="late-subscriber")
    box = Inbox()
    sub = await answer(s1.subscribe(box.handler("ev"), t, options=SubscribeOptions(get_retained=True, details_arg="details")), what="SUBSCRIBE get_retained")
    ev = await box.wait_tag("ev", what="retained EVENT")
    check(ev.args == ["new"] and ev.kwargs == {"n": 2}, f"retained EVENT {fmt_recs([ev])}, expected the last retained one")
    check(getattr(ev.details, "retained", None) is True, f"retained EVENT details.retained = {getattr(ev.details, 'retained', None)!r}")
    check(ev.details.subscription.id == sub.id if hasattr(ev.details.subscription, "id") else True, "retained EVENT for another subscription")
    await asyncio.sleep(0.2)
    check(len(box.items) == 1, f"{len(box.items)} EVENTs on subscribe, expected 1: {fmt_recs(box.items)}")
    ctx.step("subscribe without get_retained")
    s2 = await ctx.connect("cbor", label="plain-subscriber")
    box2 = Inbox()
    await answer(s2.subscribe(box2.handler("ev"), t), what="SUBSCRIBE without get_retained")
    await asyncio.sleep(0.3)
    check(not box2.items, f"subscriber without get_retained got {fmt_recs(box2.items)}")
    ctx.step("live events still flow; a retained live event replaces the stored one")
    await answer(pub.publish(t, "live", options=PublishOptions(retain=True, acknowledge=True)), what="PUBLISH retain live")
    await box2.wait_for(lambda r: r.args == ["live"], 3, "live EVENT at plain subscriber")
    await box.wait_for(lambda r: r.args == ["live"], 3, "live EVENT at late subscriber")
    lv = [r for r in box.items if r.args == ["live"]][0]
    check(not getattr(lv.details, "retained", False), "live EVENT marked retained")
    s3 = await ctx.connect("json", label="third")
    box3 = Inbox()
    await answer(s3.subscribe(box3.handler("ev"), t, options=SubscribeOptions(get_retained=True)), what="SUBSCRIBE 3")
    ev = await box3.wait_tag("ev", what="retained EVENT for 3rd")
    check(ev.args == ["live"], f"3rd subscriber's retained EVENT {fmt_recs([ev])}")
    ctx.step("retained event survives its subscribers and its publisher")
    for s in (s1, s2, s3, pub):
        s.leave()
    for s in (s1, s2, s3, pub):
        await wait_left(s, s.label)
    s4 = await ctx.connect("msgpack", label="fourth")
    box4 = Inbox()
    await answer(s4.subscribe(box4.handler("ev"), t, options=SubscribeOptions(get_retained=True)), what="SUBSCRIBE 4")
    ev = await box4.wait_tag("ev", what="retained EVENT after everybody left")
    check(ev.args == ["live"], f"retained EVENT after everybody left {fmt_recs([ev])}")


@scenario
async def sc_get_events_without_history(ctx):
    s = await ctx.connect("json")
    sub = await answer(s.subscribe(lambda *a: None, ctx.uri("hist")), what="SUBSCRIBE")
    await answer(s.publish(ctx.uri("hist"), 1, options=PublishOptions(acknowledge=True, exclude_me=False)), what="PUBLISH")
    try:
        res = await asyncio.wait_for(base._shielded(s.call("wamp.subscription.get_events", sub.id, 5)), 3)
        check(isinstance(res, list), f"get_events returned {res!r}")
        ctx.note(f"realm has event history: get_events returned {len(res)} events")
    except ApplicationError as e:
        check(e.error == "wamp.error.history_unavailable", f"get_events: ERROR {e.error} {list(e.args)!r}")
    except asyncio.TimeoutError:
        raise Failure("get_events: no answer within 3s")
    # an unknown subscription: switchyard says so; Crossbar without an event store answers
    # history_unavailable before looking the subscription up
    try:
        res = await asyncio.wait_for(base._shielded(s.call("wamp.subscription.get_events", 1)), 3)
        raise Failure(f"get_events(unknown id) succeeded: {res!r}")
    except ApplicationError as e:
        ok = ("wamp.error.no_such_subscription", "wamp.error.history_unavailable")
        check(e.error in ok, f"get_events(unknown id): ERROR {e.error}, expected one of {ok}")
    except asyncio.TimeoutError:
        raise Failure("get_events(unknown id): no answer within 3s")


# --------------------------------------------------------------------------------------
# runner


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=False, default=os.environ.get("WAMP_ROUTER_URL"), help="ws://127.0.0.1:PORT/ws")
    ap.add_argument("--realm", default="realm1")
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
        args.raw_host, args.raw_port = args.host, args.port
    return args


def selected(args):
    out = list(SCENARIOS)
    if args.only:
        out = [x for x in out if re.search(args.only, x[0])]
    if args.exclude:
        out = [x for x in out if not re.search(args.exclude, x[0])]
    return out


async def run_all(args):
    passed, failed = 0, 0
    for name, fn in selected(args):
        ctx = Ctx(args)
        if await base.run_scenario(args, ctx, name, lambda: fn(ctx)):
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, _ in selected(args):
            print(name)
        return 0
    txaio.start_logging(level="debug" if args.verbose else "critical")
    failed = asyncio.run(run_all(args))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
