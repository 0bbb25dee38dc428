#!/usr/bin/env python3
"""Crossbar-style authentication and authorization with autobahn-python (asyncio), against a
node running tests/fixtures/crossbar/.crossbar/config.json (switchyard or Crossbar itself).

Usage:
    autobahn_crossbar_auth.py --ws ws://127.0.0.1:P/ws --raw tcp://127.0.0.1:P
                              --wss wss://localhost:P/ws --cafile server.crt
                              --master-ticket TICKET [--only REGEX]

Scenarios (one `PASS name` / `FAIL name: reason` line each, then `N passed, M failed`):
  anonymous joins with role anonymous, may subscribe and call public procedures and
  wamp.session.count, may not publish; ticket, WAMP-CRA (plain and salted: the client
  derives the key with autobahn's derive_key), cryptosign (autobahn's CryptosignKey) with good
  and bad credentials; roles allow and deny (ERROR wamp.error.not_authorized) and force
  disclosure; RawSocket with a ticket read from the environment; wss:// with the node's
  certificate; a principal bound to another realm; meta events on_join.

Crossbar 26.10 passes every scenario too (it refuses bad credentials with
wamp.error.not_authorized where switchyard uses the spec's authentication_failed and
no_such_principal; both are accepted here).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import ssl
import sys
import urllib.parse

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import auth  # noqa: E402
from autobahn.wamp.cryptosign import CryptosignKey  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer  # noqa: E402
from autobahn.wamp.types import ComponentConfig, PublishOptions  # noqa: E402

TIMEOUT = 10


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Refused(Exception):
    """The router ended the session before WELCOME (ABORT)."""

    def __init__(self, reason, message):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class Client(ApplicationSession):
    def __init__(self, config, join_args, on_challenge):
        super().__init__(config)
        self.join_args = join_args
        self.on_challenge = on_challenge
        loop = asyncio.get_running_loop()
        self.joined = loop.create_future()

    def onConnect(self):
        self.join(self.config.realm, **self.join_args)

    def onChallenge(self, challenge):
        return self.on_challenge(challenge)

    def onJoin(self, details):
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details):
        if not self.joined.done():
            self.joined.set_exception(Refused(details.reason, details.message))
        self.disconnect()


class Env:
    def __init__(self, args):
        self.args = args
        self.transports = []

    async def connect(self, url, realm="realm1", authmethods=None, authid=None, authextra=None,
                      on_challenge=None, serializer=None):
        loop = asyncio.get_running_loop()
        join_args = {"authmethods": authmethods or ["anonymous"], "authid": authid,
                     "authextra": authextra}
        sess = Client(ComponentConfig(realm=realm), join_args,
                      on_challenge or (lambda ch: (_ for _ in ()).throw(Failure("unexpected challenge"))))
        ser = serializer or JsonSerializer()
        u = urllib.parse.urlparse(url)
        ctx = None
        if u.scheme in ("ws", "wss"):
            factory = WampWebSocketClientFactory(lambda: sess, url=url, serializers=[ser])
            if u.scheme == "wss":
                ctx = ssl.create_default_context(cafile=self.args.cafile)
        else:
            factory = WampRawSocketClientFactory(lambda: sess, serializer=ser)
        tr, _ = await asyncio.wait_for(
            loop.create_connection(factory, u.hostname, u.port, ssl=ctx,
                                   server_hostname=u.hostname if ctx else None), TIMEOUT)
        self.transports.append(tr)
        details = await asyncio.wait_for(asyncio.shield(sess.joined), TIMEOUT)
        return sess, details

    async def refused(self, url, **kw):
        try:
            await self.connect(url, **kw)
        except Refused as e:
            return e.reason
        raise Failure("joined, but should have been refused")

    def close(self):
        for tr in self.transports:
            tr.close()


def ticket(t):
    return lambda ch: t


def wampcra(secret):
    def sign(ch):
        key = secret.encode()
        if "salt" in ch.extra:
            key = auth.derive_key(secret, ch.extra["salt"], ch.extra["iterations"], ch.extra["keylen"])
        return auth.compute_wcs(key, ch.extra["challenge"].encode()).decode("ascii")
    return sign


def cryptosign(seed_byte):
    key = CryptosignKey.from_bytes(bytes([seed_byte]) * 32)
    return key, (lambda ch: key.sign_challenge(ch))


async def not_authorized(coro):
    try:
        await coro
    except ApplicationError as e:
        check(e.error == "wamp.error.not_authorized", f"expected not_authorized, got {e.error}")
        return
    raise Failure("the action was allowed, but the role denies it")


# --- scenarios -------------------------------------------------------------------------

async def anonymous_role_and_permissions(env):
    s, d = await env.connect(env.args.ws)
    check(d.authrole == "anonymous", f"authrole {d.authrole}")
    check(d.authmethod == "anonymous", f"authmethod {d.authmethod}")
    await s.subscribe(lambda *a: None, "com.example.news")
    await not_authorized(s.publish("com.example.news", "x", options=PublishOptions(acknowledge=True)))
    await not_authorized(s.register(lambda: 1, "com.example.public.mine"))
    n = await s.call("wamp.session.count")
    check(isinstance(n, int) and n >= 1, f"wamp.session.count returned {n!r}")


async def ticket_good_and_bad(env):
    _, d = await env.connect(env.args.ws, authmethods=["ticket"], authid="alice",
                             on_challenge=ticket("alice-ticket-secret"))
    check(d.authrole == "user" and d.authid == "alice", f"{d.authid}/{d.authrole}")
    reason = await env.refused(env.args.ws, authmethods=["ticket"], authid="alice",
                               on_challenge=ticket("wrong"))
    # switchyard says authentication_failed (the spec's URI); Crossbar says not_authorized.
    check(reason in ("wamp.error.authentication_failed", "wamp.error.not_authorized"), reason)
    reason = await env.refused(env.args.ws, authmethods=["ticket"], authid="nobody",
                               on_challenge=ticket("x"))
    check(reason in ("wamp.error.no_such_principal", "wamp.error.not_authorized"), reason)


async def wampcra_plain_salted_and_bad(env):
    _, d = await env.connect(env.args.ws, authmethods=["wampcra"], authid="bob",
                             on_challenge=wampcra("bob-secret"))
    check(d.authmethod == "wampcra", d.authmethod)
    _, d = await env.connect(env.args.ws, authmethods=["wampcra"], authid="carol",
                             on_challenge=wampcra("carol-secret"),
                             serializer=MsgPackSerializer())
    check(d.authrole == "backend", d.authrole)
    reason = await env.refused(env.args.ws, authmethods=["wampcra"], authid="bob",
                               on_challenge=wampcra("not-bob"))
    check(reason in ("wamp.error.authentication_failed", "wamp.error.not_authorized"), reason)


async def cryptosign_good_and_wrong_key(env):
    key, sign = cryptosign(7)
    _, d = await env.connect(env.args.ws, authmethods=["cryptosign"], authid="dave",
                             authextra={"pubkey": key.public_key()}, on_challenge=sign)
    check(d.authrole == "backend" and d.authmethod == "cryptosign", f"{d.authrole} {d.authmethod}")
    other, sign_other = cryptosign(9)
    reason = await env.refused(env.args.ws, authmethods=["cryptosign"], authid="dave",
                               authextra={"pubkey": other.public_key()}, on_challenge=sign_other)
    check(reason in ("wamp.error.authentication_failed", "wamp.error.not_authorized"), reason)


async def roles_deny_and_disclose(env):
    alice, _ = await env.connect(env.args.ws, authmethods=["ticket"], authid="alice",
                                 on_challenge=ticket("alice-ticket-secret"))
    carol, _ = await env.connect(env.args.ws, authmethods=["wampcra"], authid="carol",
                                 on_challenge=wampcra("carol-secret"))
    anon, anon_d = await env.connect(env.args.ws)
    got = asyncio.get_running_loop().create_future()

    def echo(x, details=None):
        got.set_result(details)
        return x

    from autobahn.wamp.types import RegisterOptions
    await carol.register(echo, "com.example.public.echo", options=RegisterOptions(details_arg="details"))
    r = await anon.call("com.example.public.echo", 5)
    check(r == 5, f"echo returned {r!r}")
    details = await asyncio.wait_for(got, TIMEOUT)
    check(details.caller == anon_d.session, f"caller not disclosed: {details.caller!r}")
    await not_authorized(alice.publish("com.example.x.admin", 1, options=PublishOptions(acknowledge=True)))
    await not_authorized(alice.call("wamp.session.count"))
    await alice.publish("com.example.news", 1, options=PublishOptions(acknowledge=True))


async def rawsocket_ticket_from_environment(env):
    s, d = await env.connect(env.args.raw, realm="buildbot", authmethods=["ticket"], authid="master",
                             on_challenge=ticket(env.args.master_ticket),
                             serializer=MsgPackSerializer())
    check(d.authrole == "master", d.authrole)
    await s.register(lambda: "pong", "org.buildbot.ping")
    r = await s.call("org.buildbot.ping")
    check(r == "pong", repr(r))
    reason = await env.refused(env.args.raw)
    check(reason == "wamp.error.no_auth_method", reason)


async def wss_and_realm_bound_principal(env):
    _, d = await env.connect(env.args.wss, authmethods=["ticket"], authid="alice",
                             on_challenge=ticket("alice-ticket-secret"))
    check(d.authrole == "user", d.authrole)
    key, sign = cryptosign(8)
    s, d = await env.connect(env.args.wss, realm="iot", authmethods=["cryptosign"], authid="sensor-1",
                             authextra={"pubkey": key.public_key()}, on_challenge=sign)
    check(d.realm == "iot" and d.authrole == "device", f"{d.realm} {d.authrole}")
    await s.publish("io.sensor.s1.reading", 21.5, options=PublishOptions(acknowledge=True))
    await not_authorized(s.publish("io.sensor.s1.config", 1, options=PublishOptions(acknowledge=True)))


async def meta_on_join(env):
    anon, _ = await env.connect(env.args.ws)
    seen = asyncio.get_running_loop().create_future()

    def on_join(info):
        if isinstance(info, dict) and info.get("authid") == "alice" and not seen.done():
            seen.set_result(info)

    await anon.subscribe(on_join, "wamp.session.on_join")
    await env.connect(env.args.ws, authmethods=["ticket"], authid="alice",
                      on_challenge=ticket("alice-ticket-secret"))
    info = await asyncio.wait_for(seen, TIMEOUT)
    check(info.get("authrole") == "user", repr(info))


SCENARIOS = [
    anonymous_role_and_permissions,
    ticket_good_and_bad,
    wampcra_plain_salted_and_bad,
    cryptosign_good_and_wrong_key,
    roles_deny_and_disclose,
    rawsocket_ticket_from_environment,
    wss_and_realm_bound_principal,
    meta_on_join,
]


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ws", required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--wss", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--master-ticket", required=True)
    p.add_argument("--only")
    args = p.parse_args()
    passed = failed = 0
    for scenario in SCENARIOS:
        name = scenario.__name__
        if args.only and not re.search(args.only, name):
            continue
        env = Env(args)
        try:
            await asyncio.wait_for(scenario(env), 30)
            print(f"PASS {name}", flush=True)
            passed += 1
        except Exception as e:  # report every failure, keep going
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
        finally:
            env.close()
            await asyncio.sleep(0.05)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
