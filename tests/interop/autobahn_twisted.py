#!/usr/bin/env python3
"""WAMP interop scenarios for switchyard with autobahn-python on Twisted (Buildbot's stack).

Usage:
    autobahn_twisted.py --url ws://127.0.0.1:PORT/ws [--realm realm1]
                        [--rawsocket tcp://127.0.0.1:PORT] [--only REGEX] [--timeout 10]

What it checks:
  * connecting with autobahn's default subprotocol offer (what Buildbot's WampConnector
    sends: cbor.batched first) and with each serializer explicitly;
  * the Buildbot MQ pattern: wildcard subscription with an empty component
    (`org.buildbot.mq.buildrequests..new`), publish with exclude_me=False and a dict
    payload, EVENT.details.topic carrying the concrete topic, delivery to the publisher too;
  * exact pub/sub, RPC (args/kwargs, progressive results, errors) over WebSocket;
  * pub/sub and RPC over RawSocket on the same port.

Output: `PASS <name>` / `FAIL <name>: <reason>` per scenario, then `N passed, M failed`;
exit status 1 if anything failed. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.parse

import txaio

txaio.use_twisted()

from autobahn.twisted.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.twisted.wamp import ApplicationSession  # noqa: E402
from autobahn.twisted.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer  # noqa: E402
from autobahn.wamp.types import (  # noqa: E402
    CallOptions,
    CallResult,
    ComponentConfig,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402

# Twisted's logging (started by txaio) redirects sys.stdout into the log: keep the real one
OUT = sys.stdout

SERIALIZERS = {
    "json": lambda: JsonSerializer(),
    "msgpack": lambda: MsgPackSerializer(),
    "cbor": lambda: CBORSerializer(),
    "cbor.batched": lambda: CBORSerializer(batched=True),
}


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class TClient(ApplicationSession):
    def __init__(self, config, label):
        super().__init__(config)
        self.label = label
        self.joined = defer.Deferred()
        self.closed = defer.Deferred()
        self.join_details = None

    def onJoin(self, details):
        self.join_details = details
        if not self.joined.called:
            self.joined.callback(details)

    def onLeave(self, details):
        if not self.joined.called:
            self.joined.errback(Failure(f"{self.label}: left before join: {details.reason} {details.message!r}"))
        return super().onLeave(details)

    def onDisconnect(self, *args, **kwargs):
        if not self.joined.called:
            self.joined.errback(Failure(f"{self.label}: transport closed before WELCOME"))
        if not self.closed.called:
            self.closed.callback(None)
        return super().onDisconnect()


def with_timeout(d, seconds, reactor, what):
    """Bound a Deferred; on expiry fail with a readable message (the original Deferred
    is left alone so autobahn does not send CANCEL)."""
    out = defer.Deferred()
    timer = reactor.callLater(seconds, lambda: out.called or out.errback(Failure(f"{what}: no answer within {seconds}s")))

    def done(r):
        if timer.active():
            timer.cancel()
        if not out.called:
            out.callback(r)
        return None

    def failed(f):
        if timer.active():
            timer.cancel()
        if not out.called:
            out.errback(f)
        return None

    defer.maybeDeferred(lambda: d).addCallbacks(done, failed)
    return out


class Ctx:
    counter = 0

    def __init__(self, reactor, cfg):
        self.reactor = reactor
        self.cfg = cfg
        Ctx.counter += 1
        self.prefix = f"com.switchyard.twtest.p{os.getpid()}.s{Ctx.counter}"
        self.sessions = []
        self.notes = []
        self.step = "starting"

    def uri(self, name):
        return f"{self.prefix}.{name}"

    @defer.inlineCallbacks
    def connect(self, serializer=None, transport="ws", realm=None):
        cfg = self.cfg
        label = f"{transport}/{serializer or 'default-offer'}#{len(self.sessions) + 1}"
        self.step = f"connecting {label}"
        sess = TClient(ComponentConfig(realm=realm or cfg.realm), label)
        if transport == "ws":
            url = f"ws://{cfg.host}:{cfg.port}{cfg.ws_path}"
            sers = [SERIALIZERS[serializer]()] if serializer else None
            factory = WampWebSocketClientFactory(lambda: sess, url=url, serializers=sers)
            host, port = cfg.host, cfg.port
        else:
            factory = WampRawSocketClientFactory(lambda: sess, serializer=SERIALIZERS[serializer]())
            host, port = cfg.raw_host, cfg.raw_port
        ep = TCP4ClientEndpoint(self.reactor, host, port, timeout=5)
        try:
            proto = yield ep.connect(factory)
        except Exception as e:
            raise Failure(f"{label}: TCP connect to {host}:{port} failed: {e}")
        self.sessions.append((sess, proto))
        yield with_timeout(sess.joined, 5, self.reactor, f"{label}: WELCOME")
        return sess

    @defer.inlineCallbacks
    def close(self):
        for sess, proto in self.sessions:
            try:
                if sess.is_attached():
                    sess.leave()
            except Exception:
                pass
        for sess, proto in self.sessions:
            try:
                yield with_timeout(sess.closed, 2, self.reactor, "close")
            except Exception:
                try:
                    proto.transport.abortConnection()
                except Exception:
                    pass


@defer.inlineCallbacks
def wait_until(reactor, pred, timeout, what, got=lambda: None):
    for _ in range(int(timeout / 0.02) + 1):
        if pred():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise Failure(f"no {what} within {timeout}s; received: {got()!r}")


def answer(ctx, d, what):
    return with_timeout(d, 3, ctx.reactor, what)


# ------------------------------------------------------------------------------------
# scenarios

SCENARIOS = []


def scenario(params=(None,)):
    def deco(fn):
        for p in params:
            name = fn.__name__.removeprefix("sc_") + (f"[{p}]" if p else "")
            SCENARIOS.append((name, fn, p))
        return fn

    return deco


@scenario()
@defer.inlineCallbacks
def sc_buildbot_mq_pattern(ctx, _):
    """Buildbot's WampMQ usage, with autobahn's default subprotocol offer."""
    m1 = yield ctx.connect()  # default offer, like Buildbot
    m2 = yield ctx.connect()
    ser = getattr(m1.join_details, "serializer", None)
    ctx.notes.append(f"negotiated serializer with the default offer: {ser}")
    ns = ctx.uri("org.buildbot.mq")
    got1, got2 = [], []

    def handler(box):
        def h(msg, details=None):
            box.append((details.topic, msg))

        return h

    opts = SubscribeOptions(match="wildcard", details_arg="details")
    yield answer(ctx, m1.subscribe(handler(got1), f"{ns}.buildrequests..new", options=opts), "SUBSCRIBE wildcard (m1)")
    yield answer(ctx, m2.subscribe(handler(got2), f"{ns}.buildrequests..new", options=opts), "SUBSCRIBE wildcard (m2)")
    exact_got = []
    yield answer(
        ctx,
        m2.subscribe(lambda msg, details=None: exact_got.append((details.topic, msg)), f"{ns}.masters.1.started", options=SubscribeOptions(details_arg="details")),
        "SUBSCRIBE exact",
    )
    payload = {"buildrequestid": 7, "builderid": 1, "buildsetid": 3, "priority": 0, "submitted_at": 1700000000, "results": -1}
    yield m1.publish(f"{ns}.buildrequests.7.new", payload, options=PublishOptions(exclude_me=False))
    yield m1.publish(f"{ns}.masters.1.started", {"masterid": 1, "name": "host:/basedir", "active": True}, options=PublishOptions(exclude_me=False))
    yield m1.publish(f"{ns}.buildrequests.7.claimed", payload, options=PublishOptions(exclude_me=False))
    want = [(f"{ns}.buildrequests.7.new", payload)]
    yield wait_until(ctx.reactor, lambda: got1 and got2 and exact_got, 3, "EVENTs", lambda: (got1, got2, exact_got))
    yield task.deferLater(ctx.reactor, 0.2, lambda: None)
    check(got1 == want, f"publisher (exclude_me=False) got {got1!r}, expected {want!r}")
    check(got2 == want, f"other master got {got2!r}, expected {want!r}")
    check(exact_got[0][1]["masterid"] == 1 and exact_got[0][0] in (None, f"{ns}.masters.1.started"), f"exact EVENT {exact_got!r}")


@scenario(["json", "msgpack", "cbor", "cbor.batched"])
@defer.inlineCallbacks
def sc_twisted_pubsub(ctx, ser):
    pub = yield ctx.connect(ser)
    sub = yield ctx.connect(ser)
    t = ctx.uri("tw")
    got = []
    yield answer(ctx, sub.subscribe(lambda *a, **kw: got.append((list(a), kw)), t), "SUBSCRIBE")
    pubd = yield answer(ctx, pub.publish(t, 1, "two", b"\x00\xff", k={"v": [1]}, options=PublishOptions(acknowledge=True)), "PUBLISH ack")
    check(isinstance(pubd.id, int) and 1 <= pubd.id <= 2**53, f"publication id {pubd.id!r}")
    yield wait_until(ctx.reactor, lambda: got, 3, "EVENT", lambda: got)
    check(got[0] == ([1, "two", b"\x00\xff"], {"k": {"v": [1]}}), f"EVENT payload {got[0]!r}")


@scenario(["json", "msgpack", "cbor", "cbor.batched"])
@defer.inlineCallbacks
def sc_twisted_rpc(ctx, ser):
    callee = yield ctx.connect(ser)
    caller = yield ctx.connect(ser)
    p = ctx.uri("rpc")
    yield answer(ctx, callee.register(lambda *a, **kw: CallResult(*a, **kw), p + ".echo"), "REGISTER echo")

    @defer.inlineCallbacks
    def prog(n, details=None):
        for i in range(n):
            details.progress(i)
            yield task.deferLater(ctx.reactor, 0.01, lambda: None)
        return "done"

    yield answer(ctx, callee.register(prog, p + ".prog", options=RegisterOptions(details_arg="details")), "REGISTER prog")

    def boom():
        raise ApplicationError("com.example.boom", "bad", code=3)

    yield answer(ctx, callee.register(boom, p + ".boom"), "REGISTER boom")
    res = yield answer(ctx, caller.call(p + ".echo", 1, [2], x={"y": None}), "CALL echo")
    check(isinstance(res, CallResult) and list(res.results) == [1, [2]] and res.kwresults == {"x": {"y": None}}, f"echo RESULT {res!r}")
    seen = []
    res = yield answer(ctx, caller.call(p + ".prog", 3, options=CallOptions(on_progress=lambda i: seen.append(i))), "CALL prog")
    check(res == "done" and seen == [0, 1, 2], f"progressive: result {res!r}, progress {seen!r}")
    try:
        yield answer(ctx, caller.call(p + ".boom"), "CALL boom")
        raise Failure("CALL boom succeeded")
    except ApplicationError as e:
        check(e.error == "com.example.boom" and list(e.args) == ["bad"] and e.kwargs == {"code": 3}, f"ERROR {e.error} {e.args} {e.kwargs}")
    try:
        yield answer(ctx, caller.call(p + ".missing"), "CALL missing")
        raise Failure("CALL to a missing procedure succeeded")
    except ApplicationError as e:
        check(e.error == "wamp.error.no_such_procedure", f"CALL missing: ERROR {e.error}")


@scenario(["json", "msgpack", "cbor"])
@defer.inlineCallbacks
def sc_twisted_rawsocket(ctx, ser):
    raw = yield ctx.connect(ser, transport="raw")
    ws = yield ctx.connect("json")
    t = ctx.uri("raw")
    got = []
    yield answer(ctx, raw.subscribe(lambda *a, **kw: got.append(list(a)), t), "SUBSCRIBE (raw)")
    yield answer(ctx, ws.publish(t, "from-ws", b"\x01", options=PublishOptions(acknowledge=True)), "PUBLISH (ws)")
    yield wait_until(ctx.reactor, lambda: got, 3, "EVENT at RawSocket subscriber", lambda: got)
    check(got[0] == ["from-ws", b"\x01"], f"EVENT {got[0]!r}")
    yield answer(ctx, raw.register(lambda a, b: a * b, t + ".mul"), "REGISTER (raw)")
    res = yield answer(ctx, ws.call(t + ".mul", 6, 7), "CALL ws->raw")
    check(res == 42, f"RESULT {res!r}")
    res = yield answer(ctx, raw.call(t + ".mul", 2, 3), "CALL raw->raw")
    check(res == 6, f"RESULT {res!r}")


# ------------------------------------------------------------------------------------


@defer.inlineCallbacks
def run_all(reactor, cfg):
    passed = failed = 0
    for name, fn, param in SCENARIOS:
        if cfg.only and not re.search(cfg.only, name):
            continue
        ctx = Ctx(reactor, cfg)
        reason = None
        try:
            yield with_timeout(fn(ctx, param), cfg.timeout, reactor, f"hard timeout while {ctx.step}")
        except Failure as e:
            reason = str(e)
        except ApplicationError as e:
            reason = f"unexpected ERROR {e.error} {list(e.args)!r} {e.kwargs!r} while {ctx.step}"
        except Exception as e:
            reason = f"{type(e).__name__}: {e} while {ctx.step}"
        try:
            yield with_timeout(ctx.close(), 5, reactor, "closing sessions")
        except Exception:
            pass
        if reason is None:
            passed += 1
            print(f"PASS {name}", file=OUT, flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {reason}", file=OUT, flush=True)
        for n in ctx.notes:
            print(f"    note: {n}", file=OUT, flush=True)
    print(f"{passed} passed, {failed} failed", file=OUT, flush=True)
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("WAMP_ROUTER_URL"), required=False)
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--rawsocket", default=None)
    ap.add_argument("--only", default=None)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--verbose", action="store_true")
    cfg = ap.parse_args()
    if not cfg.url:
        ap.error("--url is required")
    u = urllib.parse.urlparse(cfg.url)
    cfg.host, cfg.port, cfg.ws_path = u.hostname, u.port or 80, u.path or "/"
    r = urllib.parse.urlparse(cfg.rawsocket or f"tcp://{cfg.host}:{cfg.port}")
    cfg.raw_host, cfg.raw_port = r.hostname, r.port
    txaio.start_logging(level="debug" if cfg.verbose else "critical")

    @defer.inlineCallbacks
    def _main(reactor):
        failed = yield run_all(reactor, cfg)
        if failed:
            raise SystemExit(1)

    task.react(_main)  # exits the process: 0, or 1 when a scenario failed


if __name__ == "__main__":
    main()
    sys.exit(2)  # not reached
