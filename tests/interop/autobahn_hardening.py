#!/usr/bin/env python3
"""Protocol corners and per-session limits, checked with autobahn-python (asyncio).

Usage:
    autobahn_hardening.py caps --url ws://127.0.0.1:P/ws --max-subs N --max-regs M
    autobahn_hardening.py prefix --url ws://127.0.0.1:P/ws
    autobahn_hardening.py kill --url ws://127.0.0.1:P/ws
    autobahn_hardening.py disclose --url ws://127.0.0.1:P/ws   (the Crossbar fixture node)

caps: one session subscribes N topics and registers M procedures; the next SUBSCRIBE and
  REGISTER get ERROR wamp.error.unavailable naming limits.max_subscriptions_per_session /
  limits.max_registrations_per_session; its earlier subscriptions and registrations keep
  working, and another session subscribes and registers as usual.
prefix: SUBSCRIBE and REGISTER {match: prefix} "conf..bad" get wamp.error.invalid_uri (as in
  Crossbar, only wildcard patterns may have empty components); "conf.good." and wildcard
  "conf..bad" are accepted.
kill: wamp.session.kill on a session: the victim (a busy client that handles GOODBYE
  0.3 s after it arrives) receives GOODBYE with the reason and message, its GOODBYE reply
  is sent on an open transport (no "Attempt to send on a closed
  protocol"), its onLeave and onDisconnect fire, and the WebSocket closes cleanly.
disclose: on the fixture's realm1, roles decide disclosure: bob (role user: caller false,
  publisher true) calling with disclose_me is not disclosed, his publication without
  disclose_me is; carol (role backend: both false) publishing with disclose_me is not; an
  anonymous call of com.example.public.* (caller true) is disclosed without asking.

Prints `PASS <name>` or `FAIL <name>: <reason>`; exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import autobahn_scenarios as base  # noqa: E402  (selects asyncio for txaio)
from autobahn_scenarios import send_with_extra_options  # noqa: E402

from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import auth, message  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import JsonSerializer  # noqa: E402
from autobahn.wamp.types import (  # noqa: E402
    ComponentConfig,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)

TIMEOUT = 10
Failure = base.Failure
check = base.check


class Session(ApplicationSession):
    """A session that records its join, leave, disconnect, failed sends and clean close."""

    def __init__(self, realm, authid=None, authmethods=None, secret=None, ticket=None,
                 goodbye_delay=0.0):
        super().__init__(ComponentConfig(realm=realm))
        self.goodbye_delay = goodbye_delay
        loop = asyncio.get_running_loop()
        self.joined = loop.create_future()
        self.left = loop.create_future()
        self.disconnected = loop.create_future()
        self.login_id, self.login_methods = authid, authmethods or ["anonymous"]
        self.login_secret, self.login_ticket = secret, ticket
        self.send_errors = []
        self.was_clean = None

    def onConnect(self):
        self.join(self.config.realm, authmethods=self.login_methods, authid=self.login_id)

    def onChallenge(self, challenge):
        if challenge.method == "ticket":
            return self.login_ticket
        if challenge.method == "wampcra":
            key = self.login_secret.encode()
            if "salt" in challenge.extra:
                key = auth.derive_key(self.login_secret, challenge.extra["salt"],
                                      challenge.extra["iterations"], challenge.extra["keylen"])
            return auth.compute_wcs(key, challenge.extra["challenge"])
        raise Exception(f"unexpected challenge {challenge.method}")

    def onOpen(self, transport):
        orig_send, orig_close = transport.send, transport.onClose

        def send(msg):
            try:
                return orig_send(msg)
            except Exception as e:  # autobahn raises TransportLost on a closed protocol
                self.send_errors.append(f"{type(msg).__name__}: {type(e).__name__}: {e}")
                raise

        def on_close(was_clean, code, reason):
            self.was_clean = was_clean
            return orig_close(was_clean, code, reason)

        transport.send = send
        transport.onClose = on_close
        return super().onOpen(transport)

    def onMessage(self, msg):
        # A busy client: its event loop handles the router's GOODBYE a moment later (the
        # WebSocket layer below still processes frames as they arrive).
        if isinstance(msg, message.Goodbye) and self.goodbye_delay:
            asyncio.get_running_loop().call_later(
                self.goodbye_delay, ApplicationSession.onMessage, self, msg)
            return
        return super().onMessage(msg)

    def onJoin(self, details):
        self.joined.done() or self.joined.set_result(details)

    def onLeave(self, details):
        self.left.done() or self.left.set_result(details)
        if not self.joined.done():
            self.joined.set_exception(Failure(f"refused: {details.reason} {details.message}"))
        return super().onLeave(details)

    def onDisconnect(self):
        self.disconnected.done() or self.disconnected.set_result(None)
        if not self.joined.done():
            self.joined.set_exception(Failure("transport closed before WELCOME"))


async def connect(url, realm="realm1", **kw) -> Session:
    u = urllib.parse.urlparse(url)
    sess = Session(realm, **kw)
    factory = WampWebSocketClientFactory(lambda: sess, url=url, serializers=[JsonSerializer()])
    await asyncio.wait_for(asyncio.get_running_loop().create_connection(factory, u.hostname, u.port), TIMEOUT)
    await asyncio.wait_for(asyncio.shield(sess.joined), TIMEOUT)
    return sess


async def app_error(aw, uri, what):
    try:
        await asyncio.wait_for(aw, TIMEOUT)
    except ApplicationError as e:
        check(e.error == uri, f"{what}: expected {uri}, got {e.error} {e.args!r}")
        return str(e.args[0]) if e.args else ""
    raise Failure(f"{what}: expected ERROR {uri}, it succeeded")


async def caps(args):
    a = await connect(args.url)
    got = asyncio.Queue()
    for i in range(args.max_subs):
        await a.subscribe(lambda x, i=i: got.put_nowait((i, x)), f"com.caps.t{i}")
    text = await app_error(a.subscribe(lambda x: None, "com.caps.over"), "wamp.error.unavailable",
                           "SUBSCRIBE past the cap")
    check("limits.max_subscriptions_per_session" in text and str(args.max_subs) in text,
          f"SUBSCRIBE error text does not name the limit: {text!r}")
    for i in range(args.max_regs):
        await a.register(lambda x, i=i: (i, x), f"com.caps.p{i}")
    text = await app_error(a.register(lambda: None, "com.caps.pover"), "wamp.error.unavailable",
                           "REGISTER past the cap")
    check("limits.max_registrations_per_session" in text and str(args.max_regs) in text,
          f"REGISTER error text does not name the limit: {text!r}")
    # Earlier subscriptions and registrations keep working; other sessions are unaffected.
    b = await connect(args.url)
    await b.publish("com.caps.t0", "hello", options=PublishOptions(acknowledge=True))
    i, x = await asyncio.wait_for(got.get(), TIMEOUT)
    check((i, x) == (0, "hello"), f"event {(i, x)!r}")
    r = await b.call(f"com.caps.p{args.max_regs - 1}", 7)
    check(list(r) == [args.max_regs - 1, 7], f"call returned {r!r}")
    await b.subscribe(lambda x: None, "com.caps.over")
    await b.register(lambda: 1, "com.caps.pover")


async def prefix(args):
    s = await connect(args.url)
    for what, aw in [
        ("SUBSCRIBE prefix conf..bad", s.subscribe(lambda: None, "conf..bad", options=SubscribeOptions(match="prefix"))),
        ("REGISTER prefix conf..bad", s.register(lambda: None, "conf..bad", options=RegisterOptions(match="prefix"))),
        ("SUBSCRIBE prefix .conf", s.subscribe(lambda: None, ".conf", options=SubscribeOptions(match="prefix"))),
    ]:
        await app_error(aw, "wamp.error.invalid_uri", what)
    await s.subscribe(lambda: None, "conf.good.", options=SubscribeOptions(match="prefix"))
    await s.register(lambda: None, "conf.good.", options=RegisterOptions(match="prefix"))
    await s.subscribe(lambda: None, "conf..bad", options=SubscribeOptions(match="wildcard"))


async def kill(args):
    victim = await connect(args.url, goodbye_delay=0.3)
    killer = await connect(args.url)
    await killer.call("wamp.session.kill", victim._session_id,
                      reason="com.example.kicked", message="go away")
    details = await asyncio.wait_for(asyncio.shield(victim.left), TIMEOUT)
    check(details.reason == "com.example.kicked", f"GOODBYE reason {details.reason!r}")
    check(details.message == "go away", f"GOODBYE message {details.message!r}")
    await asyncio.wait_for(asyncio.shield(victim.disconnected), TIMEOUT)
    check(victim.send_errors == [], f"the victim's sends failed: {victim.send_errors}")
    check(victim.was_clean is True, f"the WebSocket did not close cleanly (was_clean={victim.was_clean})")
    n = await killer.call("wamp.session.count")
    check(n == 1, f"wamp.session.count after the kill: {n}")


async def disclose(args):
    carol = await connect(args.url, authid="carol", authmethods=["wampcra"], secret="carol-secret")
    bob = await connect(args.url, authid="bob", authmethods=["wampcra"], secret="bob-secret")
    anon = await connect(args.url)
    calls = asyncio.Queue()
    await carol.register(lambda details=None: calls.put_nowait(details.caller) or 1,
                         "com.example.secret.who", options=RegisterOptions(details_arg="details"))
    await carol.register(lambda details=None: calls.put_nowait(details.caller) or 1,
                         "com.example.public.who", options=RegisterOptions(details_arg="details"))
    send_with_extra_options(bob, message.Call, {"disclose_me": True})
    await bob.call("com.example.secret.who")
    caller = await asyncio.wait_for(calls.get(), TIMEOUT)
    check(caller is None, f"bob asked disclose_me, his role says caller: false, callee saw {caller!r}")
    await anon.call("com.example.public.who")
    caller = await asyncio.wait_for(calls.get(), TIMEOUT)
    check(caller == anon._session_id, f"role says caller: true, callee saw {caller!r}")

    events = asyncio.Queue()
    await anon.subscribe(lambda x, details=None: events.put_nowait((x, details.publisher)),
                         "com.example.news", options=SubscribeOptions(details_arg="details"))
    send_with_extra_options(carol, message.Publish, {"disclose_me": True})
    await carol.publish("com.example.news", "from carol", options=PublishOptions(acknowledge=True))
    x, publisher = await asyncio.wait_for(events.get(), TIMEOUT)
    check((x, publisher) == ("from carol", None),
          f"carol asked disclose_me, her role says publisher: false; subscriber saw {publisher!r}")
    await bob.publish("com.example.news", "from bob", options=PublishOptions(acknowledge=True))
    x, publisher = await asyncio.wait_for(events.get(), TIMEOUT)
    check((x, publisher) == ("from bob", bob._session_id),
          f"bob's role says publisher: true; subscriber saw {publisher!r}")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["caps", "prefix", "kill", "disclose"])
    p.add_argument("--url", required=True)
    p.add_argument("--max-subs", type=int, default=0)
    p.add_argument("--max-regs", type=int, default=0)
    args = p.parse_args()
    try:
        await globals()[args.scenario](args)
    except Exception as e:  # noqa: BLE001  (any failure is reported)
        print(f"FAIL {args.scenario}: {type(e).__name__}: {e}")
        return 1
    print(f"PASS {args.scenario}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
