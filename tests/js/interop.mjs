#!/usr/bin/env node
// switchyard JavaScript interop tests.
//
// Drives a WAMP v2 router (switchyard, or Crossbar.io for reference) with two
// real client libraries: autobahn-js (npm "autobahn") and wampy.js (npm "wampy").
//
//   node interop.mjs --url ws://127.0.0.1:8080/ws --realm realm1
//
// Options:
//   --url URL          WebSocket URL of the router (required)
//   --realm NAME       realm to join (default realm1)
//   --timeout MS       hard timeout per scenario (default 10000)
//   --filter TEXT      run only scenarios whose name contains TEXT (repeatable)
//   --exclude TEXT     skip scenarios whose name contains TEXT (repeatable)
//   --list             print scenario names and exit
//   --trace            on FAIL, also print the WAMP messages of that scenario
//   --native-websocket use the runtime's global WebSocket for autobahn-js (Node >= 22)
//                      instead of the "ws" package
//   --router-bin PATH  start `PATH start --listen 127.0.0.1:0` (switchyard), read the
//                      port from its "switchyard listening on 127.0.0.1:<port>" line,
//                      test ws://127.0.0.1:<port>/ws and stop it at the end
//   --router-log FILE  with --router-bin: write the router's stdout/stderr there
//
// Known Crossbar.io (26.x) deviations from the spec, which these tests follow:
//   autobahn/json/call-timeout  Crossbar reads CALL.Options.timeout as seconds
//                               and forwards it to the callee; no ERROR in time.
//   wampy/json/cancel-skip      Crossbar sends no ERROR to the caller for
//                               CANCEL mode=skip.
// Against Crossbar run with --exclude call-timeout --exclude cancel-skip.
//
// Output: one "PASS name" or "FAIL name: reason" line per scenario, then
// "N passed, M failed". Exit code 0 when all passed, 1 when any failed, 2 on
// usage errors.

import { parseArgs, isDeepStrictEqual, inspect } from 'node:util';
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';

import WS from 'ws';
import autobahn from 'autobahn';
import msgpack5 from 'msgpack5';
import cbor from 'cbor';
import { Wampy } from 'wampy';
import { JsonSerializer } from 'wampy/JsonSerializer.js';
import { MsgpackSerializer } from 'wampy/MsgpackSerializer.js';
import { CborSerializer } from 'wampy/CborSerializer.js';

// ---------------------------------------------------------------------------
// command line

let cli;
try {
  cli = parseArgs({
    options: {
      url: { type: 'string' },
      realm: { type: 'string', default: 'realm1' },
      timeout: { type: 'string', default: '10000' },
      filter: { type: 'string', multiple: true },
      exclude: { type: 'string', multiple: true },
      list: { type: 'boolean', default: false },
      trace: { type: 'boolean', default: false },
      'native-websocket': { type: 'boolean', default: false },
      'router-bin': { type: 'string' },
      'router-log': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values;
} catch (e) {
  console.error(`usage error: ${e.message}`);
  process.exit(2);
}
if (cli.help) {
  console.log('usage: node interop.mjs (--url ws://127.0.0.1:PORT/ws | --router-bin PATH [--router-log FILE]) [--realm realm1] [--timeout 10000] [--filter TEXT] [--exclude TEXT] [--list] [--trace]');
  process.exit(0);
}
const SCENARIO_TIMEOUT = Number(cli.timeout);
if (!Number.isFinite(SCENARIO_TIMEOUT) || SCENARIO_TIMEOUT <= 0) {
  console.error('usage error: --timeout must be a positive number of milliseconds');
  process.exit(2);
}
let URL_ = cli.url;
const REALM = cli.realm;
if (!cli.list && !URL_ && !cli['router-bin']) {
  console.error('usage error: --url ws://HOST:PORT/ws or --router-bin PATH is required');
  process.exit(2);
}
if (URL_ && cli['router-bin']) {
  console.error('usage error: give either --url or --router-bin, not both');
  process.exit(2);
}

// Stray rejections from a scenario that already failed or timed out must not
// kill the run (Node's default for unhandled rejections is to exit).
process.on('unhandledRejection', (e) => {
  if (cli.trace) console.error(`# (unhandled rejection after scenario end: ${fmtErr(e)})`);
});

// ---------------------------------------------------------------------------
// WebSocket: a "ws" subclass that records every WAMP message of the current
// scenario, so that a failure can show what went over the wire.

const traceMsgpack = msgpack5();
let currentCtx = null;
let socketCounter = 0;

function decodeFrame(protocol, data) {
  try {
    if (typeof data === 'string') return data;
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data instanceof ArrayBuffer ? data : data.buffer ?? data);
    if (protocol && protocol.includes('msgpack')) return inspect(traceMsgpack.decode(buf), { depth: 6, breakLength: Infinity, compact: true });
    if (protocol && protocol.includes('cbor')) return inspect(cbor.decodeFirstSync(buf), { depth: 6, breakLength: Infinity, compact: true });
    return `<${buf.length} bytes> ${buf.toString('hex').slice(0, 200)}`;
  } catch (e) {
    return `<undecodable: ${e.message}>`;
  }
}

class TracingWebSocket extends WS {
  constructor(url, protocols, ...rest) {
    // wampy passes (url, protocols, null, headers, requestOptions) like the
    // "websocket" package's w3cwebsocket; "ws" takes (url, protocols, options).
    super(url, protocols, rest[0] ?? undefined);
    const ctx = currentCtx;
    const id = ++socketCounter;
    this._traceLabel = () => `ws#${id}(${this.protocol || '?'})`;
    this._trace = (dir, data) => {
      if (ctx) ctx.trace.push(`+${String(Date.now() - ctx.t0).padStart(5)}ms ${this._traceLabel()} ${dir} ${decodeFrame(this.protocol, data)}`);
    };
    this.addEventListener('message', (ev) => this._trace('<-', ev.data));
    this.addEventListener('close', (ev) => this._trace('xx', `closed code=${ev.code} reason=${JSON.stringify(ev.reason)}`));
    this.addEventListener('error', (ev) => this._trace('!!', `error ${ev.message || ev.error || ''}`));
  }
  send(data, ...rest) {
    this._trace('->', data);
    return super.send(data, ...rest);
  }
}

// autobahn-js warns on the console about closes and serializer errors; keep
// those in the scenario trace instead.
autobahn.log.warn = (...a) => {
  if (currentCtx) currentCtx.trace.push(`+${String(Date.now() - currentCtx.t0).padStart(5)}ms autobahn warning: ${a.map((x) => (typeof x === 'string' ? x : short(x))).join(' ')}`);
};

// autobahn-js >= 26 uses the global WebSocket (Node 22 has one; Node 20 does not).
if (!cli['native-websocket'] || typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = TracingWebSocket;
}

// ---------------------------------------------------------------------------
// serializers

// WAMP's binary convention for JSON: a byte string travels as the string
// "\u0000" + base64(bytes). autobahn-js's JSONSerializer takes a replacer and a
// reviver; autobahn-python (Crossbar) does this conversion natively.
function binaryReplacer(key, value) {
  const orig = this[key];
  if (orig instanceof Uint8Array) {
    return '\u0000' + Buffer.from(orig.buffer, orig.byteOffset, orig.byteLength).toString('base64');
  }
  return value;
}
function binaryReviver(_key, value) {
  if (typeof value === 'string' && value.length > 0 && value.charCodeAt(0) === 0) {
    return Buffer.from(value.slice(1), 'base64');
  }
  return value;
}

const AB_SERIALIZERS = ['json', 'msgpack', 'cbor'];
function abSerializer(name) {
  switch (name) {
    case 'json': return new autobahn.serializer.JSONSerializer(binaryReplacer, binaryReviver);
    case 'msgpack': return new autobahn.serializer.MsgpackSerializer();
    case 'cbor': return new autobahn.serializer.CBORSerializer();
    default: throw new Error(`unknown serializer ${name}`);
  }
}

// wampy 8.0.2 with its binary serializers sends two things Crossbar rejects,
// both client-side problems rather than router ones, so the serializers here
// correct them before encoding:
//  - SUBSCRIBE options are built as {match: undefined, get_retained:
//    undefined}. JSON drops undefined members, but msgpackr encodes undefined
//    as ext type 0 and cbor-x as CBOR "undefined"; Crossbar drops the
//    connection ("invalid type ExtType for 'match' option in SUBSCRIBE").
//    Undefined members are dropped and undefined array items become null.
//  - msgpackr and cbor-x encode integers outside the 32-bit range as float64,
//    so IDs above 2^32 (e.g. the subscription ID in UNSUBSCRIBE) go out as
//    floats; Crossbar drops the connection ("invalid type float for ID").
//    Safe integers outside 32 bits are sent as 64-bit integers instead.
function fixForBinary(v) {
  if (v === undefined) return null;
  if (typeof v === 'number') {
    return Number.isSafeInteger(v) && (v > 0xffffffff || v < -0x80000000) ? BigInt(v) : v;
  }
  if (Array.isArray(v)) return v.map(fixForBinary);
  if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) o[k] = fixForBinary(x);
    return o;
  }
  return v;
}
// ...and msgpackr decodes 64-bit integers as BigInt, which wampy and the
// handlers here do not expect: safe ones come back as numbers.
function bigToNumber(v) {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v;
  if (Array.isArray(v)) return v.map(bigToNumber);
  if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const k of Object.keys(v)) v[k] = bigToNumber(v[k]);
  }
  return v;
}
class WampyMsgpack extends MsgpackSerializer {
  encode(data) { return super.encode(fixForBinary(data)); }
  decode(data) { return bigToNumber(super.decode(data)); }
}
class WampyCbor extends CborSerializer {
  encode(data) { return super.encode(fixForBinary(data)); }
  decode(data) { return bigToNumber(super.decode(data)); }
}

const WAMPY_SERIALIZERS = ['json', 'msgpack', 'cbor'];
function wampySerializer(name) {
  switch (name) {
    case 'json': return new JsonSerializer();
    case 'msgpack': return new WampyMsgpack();
    case 'cbor': return new WampyCbor();
    default: throw new Error(`unknown serializer ${name}`);
  }
}

// ---------------------------------------------------------------------------
// helpers

function fmtErr(e) {
  if (e === undefined) return 'undefined';
  if (e === null) return 'null';
  if (e instanceof autobahn.Error || (typeof e === 'object' && typeof e.error === 'string' && 'args' in e)) {
    return `WAMP error ${e.error} args=${short(e.args)} kwargs=${short(e.kwargs)}`;
  }
  if (typeof e === 'object' && (typeof e.error === 'string' || typeof e.errorUri === 'string')) {
    return `WAMP error ${e.error ?? e.errorUri} argsList=${short(e.argsList)} argsDict=${short(e.argsDict)} (${e.constructor?.name})`;
  }
  if (e instanceof Error) return e.message;
  return short(e);
}

function short(v) {
  const s = inspect(v, { depth: 6, breakLength: Infinity, compact: true, maxArrayLength: 40, maxStringLength: 200 });
  return s.length > 600 ? s.slice(0, 600) + '...' : s;
}

// Deep equality that treats Buffer / Uint8Array / ArrayBuffer alike.
function normalize(v) {
  if (v instanceof ArrayBuffer) return { $bytes: Buffer.from(v).toString('hex') };
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    return { $bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex') };
  }
  if (Array.isArray(v)) return v.map(normalize);
  if (v instanceof Map) {
    const o = {};
    for (const [k, val] of v) o[String(k)] = normalize(val);
    return o;
  }
  if (v && typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v)) o[k] = normalize(v[k]);
    return o;
  }
  if (typeof v === 'bigint') return Number(v);
  return v;
}

class AssertionError extends Error {}

function check(cond, msg) {
  if (!cond) throw new AssertionError(msg);
}

function eq(actual, expected, what) {
  if (!isDeepStrictEqual(normalize(actual), normalize(expected))) {
    throw new AssertionError(`${what}: expected ${short(expected)}, got ${short(actual)}`);
  }
}

function isBytes(v) {
  return v instanceof Uint8Array || v instanceof ArrayBuffer;
}

// Wait for a promise, at most `ms`, and say what did not come back.
function within(ms, promise, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AssertionError(`no answer within ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// A queue of received items with bounded waits.
class Inbox {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = [];
  }
  push(item) {
    this.items.push(item);
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }
  async waitFor(n, ms = 3000) {
    const deadline = Date.now() + ms;
    while (this.items.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new AssertionError(`${this.name}: expected ${n} item(s) within ${ms} ms, got ${this.items.length}: ${short(this.items)}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.items;
  }
}

// Turn a when.js promise with progress into a native promise.
function withProgress(p, onProgress) {
  return new Promise((resolve, reject) => p.then(resolve, reject, onProgress));
}

const RUN_ID = randomBytes(4).toString('hex').replace(/^[0-9]/, 'r');
let uriCounter = 0;
function uri(tag) {
  uriCounter += 1;
  return `com.switchyard.jsinterop.${RUN_ID}.s${uriCounter}.${tag}`;
}

const MAX_ID = 2 ** 53;
function checkId(id, what) {
  check(Number.isInteger(Number(id)) && Number(id) >= 1 && Number(id) <= MAX_ID, `${what}: ${short(id)} is not an integer ID in [1, 2^53]`);
}

// Payloads: a mix of types every serializer must carry unchanged.
const ARGS = [1, -7, 2 ** 40, 2 ** 53 - 1, 1.5, -0.25, 'héllo ✓ 日本', '', true, false, null, [1, [2, [3]]], { a: { b: 'c' } }];
const KWARGS = {
  str: 'x', int: 42, neg: -1, float: 0.125, list: [1, 2, 3], nested: { k: [null, false, 'v'] },
  emptyList: [], emptyObj: {}, 'key with spaces': 'ok', 'ünï': 'code',
};
const BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const BYTES_SMALL = Buffer.from('switchyard\u0000\u00ff', 'latin1');

// ---------------------------------------------------------------------------
// scenario context: sessions opened in a scenario are closed when it ends; an
// unexpected session close fails the scenario at once.

class Ctx {
  constructor(name) {
    this.name = name;
    this.trace = [];
    this.t0 = Date.now();
    this.cleanups = [];
    this.closing = false;
    this.abort = new Promise((_, reject) => { this._abortReject = reject; });
    this.abort.catch(() => {});
  }
  defer(fn) { this.cleanups.push(fn); }
  fail(reason) {
    if (this.closing) return;
    this._abortReject(new AssertionError(reason));
  }
  async cleanup() {
    this.closing = true;
    for (const fn of this.cleanups.reverse()) {
      try { await within(3000, Promise.resolve().then(fn), 'cleanup'); } catch { /* ignore */ }
    }
  }
}

async function abOpen(ctx, ser, label = `autobahn/${ser}`) {
  const conn = new autobahn.Connection({
    url: URL_,
    realm: REALM,
    serializers: [abSerializer(ser)],
    max_retries: 0,
    retry_if_unreachable: false,
    on_user_error: () => {},
    on_internal_error: (err) => ctx.fail(`${label}: autobahn internal error: ${fmtErr(err)}`),
  });
  let opened = false;
  let closedResolve;
  const closed = new Promise((r) => { closedResolve = r; });
  const session = await within(5000, new Promise((resolve, reject) => {
    conn.onopen = (session) => { opened = true; resolve(session); };
    conn.onclose = (reason, details) => {
      closedResolve();
      const d = short({ reason, message: details?.message, reason_uri: details?.reason, close: details?.close_reason });
      if (!opened) reject(new AssertionError(`${label}: session did not open: ${d}`));
      else ctx.fail(`${label}: session closed unexpectedly: ${d}`);
      return true; // no reconnect
    };
    ctx.defer(async () => {
      try { conn.close(); } catch { /* already closed */ }
      await within(2000, closed, 'close').catch(() => {
        try { conn._transport?.close(1000); } catch { /* ignore */ }
      });
    });
    conn.open();
  }), `${label}: HELLO -> WELCOME`);
  check(session.isOpen, `${label}: session not open after WELCOME`);
  checkId(session.id, `${label}: WELCOME session id`);
  return session;
}

async function wpOpen(ctx, ser, label = `wampy/${ser}`) {
  let opened = false;
  const w = new Wampy(URL_, {
    realm: REALM,
    ws: TracingWebSocket,
    serializer: wampySerializer(ser),
    autoReconnect: false,
    onClose: () => { if (opened) ctx.fail(`${label}: connection closed unexpectedly`); },
    onError: (e) => { if (opened) ctx.fail(`${label}: error: ${fmtErr(e?.error ?? e)}`); },
  });
  ctx.defer(async () => { await w.disconnect(); });
  try {
    await within(5000, w.connect(), `${label}: HELLO -> WELCOME`);
  } catch (e) {
    throw new AssertionError(`${label}: session did not open: ${fmtErr(e)}`);
  }
  opened = true;
  checkId(w.getSessionId(), `${label}: WELCOME session id`);
  return w;
}

async function expectCallError(promise, expectedUri, what, ms = 3000) {
  let res;
  try {
    res = await within(ms, promise, what);
  } catch (e) {
    if (e instanceof AssertionError) throw e;
    // autobahn-js rejects with {error, args, kwargs}; wampy with a WampError {errorUri, argsList, argsDict}
    check(e && (e.error ?? e.errorUri) === expectedUri, `${what}: expected ERROR ${expectedUri}, got ${fmtErr(e)}`);
    return e;
  }
  throw new AssertionError(`${what}: expected ERROR ${expectedUri}, got RESULT ${short(res)}`);
}

// ---------------------------------------------------------------------------
// scenarios

const scenarios = [];
function scenario(name, fn) { scenarios.push({ name, fn }); }

for (const ser of AB_SERIALIZERS) {
  const P = `autobahn/${ser}`;

  scenario(`${P}/pubsub-exact`, async (ctx) => {
    const sub = await abOpen(ctx, ser, `${P} subscriber`);
    const pub = await abOpen(ctx, ser, `${P} publisher`);
    const topic = uri('exact');
    const inbox = new Inbox('events');
    const s = await within(3000, sub.subscribe(topic, (args, kwargs, details) => inbox.push({ args, kwargs, details })), 'SUBSCRIBE -> SUBSCRIBED');
    checkId(s.id, 'SUBSCRIBED subscription id');
    const p = await within(3000, pub.publish(topic, ARGS, KWARGS, { acknowledge: true }), 'PUBLISH(acknowledge) -> PUBLISHED');
    checkId(p.id, 'PUBLISHED publication id');
    // a kwargs-only and an empty event too
    await within(3000, pub.publish(topic, null, { only: 'kw' }, { acknowledge: true }), 'PUBLISH kwargs only -> PUBLISHED');
    await within(3000, pub.publish(topic, [], {}, { acknowledge: true }), 'PUBLISH empty -> PUBLISHED');
    const ev = await inbox.waitFor(3);
    eq(ev[0].args, ARGS, 'EVENT 1 args');
    eq(ev[0].kwargs, KWARGS, 'EVENT 1 kwargs');
    eq(ev[0].details.publication, p.id, 'EVENT.Publication vs PUBLISHED.Publication');
    eq(ev[0].details.topic, topic, 'EVENT details.topic');
    eq(ev[1].args, [], 'EVENT 2 args');
    eq(ev[1].kwargs, { only: 'kw' }, 'EVENT 2 kwargs');
    eq(ev[2].args, [], 'EVENT 3 args');
    eq(ev[2].kwargs, {}, 'EVENT 3 kwargs');
    // unsubscribe, then no more events
    await within(3000, s.unsubscribe(), 'UNSUBSCRIBE -> UNSUBSCRIBED');
    await within(3000, pub.publish(topic, ['after'], {}, { acknowledge: true }), 'PUBLISH after unsubscribe');
    await sleep(300);
    eq(inbox.items.length, 3, 'events received after UNSUBSCRIBED');
  });

  scenario(`${P}/pubsub-prefix`, async (ctx) => {
    const sub = await abOpen(ctx, ser, `${P} subscriber`);
    const pub = await abOpen(ctx, ser, `${P} publisher`);
    const base = uri('pfx');
    const inbox = new Inbox('prefix events');
    await within(3000, sub.subscribe(base, (args, kwargs, details) => inbox.push({ args, details }), { match: 'prefix' }), 'SUBSCRIBE(match=prefix) -> SUBSCRIBED');
    const topics = [
      [`${base}`, true],
      [`${base}.a.b`, true],
      [`${base}x`, true], // plain string prefix, as Crossbar matches
      [`${base.replace(/\.pfx$/, '.other')}.a`, false],
    ];
    for (const [t] of topics) {
      await within(3000, pub.publish(t, [t], {}, { acknowledge: true }), `PUBLISH ${t}`);
    }
    const sentinel = `${base}.zz.end`;
    await within(3000, pub.publish(sentinel, [sentinel], {}, { acknowledge: true }), 'PUBLISH sentinel');
    const expected = topics.filter(([, m]) => m).map(([t]) => t).concat([sentinel]);
    await inbox.waitFor(expected.length);
    await sleep(100);
    eq(inbox.items.map((e) => e.args[0]), expected, 'topics of received events (payload)');
    eq(inbox.items.map((e) => e.details.topic), expected, 'EVENT details.topic');
  });

  scenario(`${P}/pubsub-wildcard`, async (ctx) => {
    const sub = await abOpen(ctx, ser, `${P} subscriber`);
    const pub = await abOpen(ctx, ser, `${P} publisher`);
    const base = uri('wc');
    const pattern = `${base}..status`;
    const inbox = new Inbox('wildcard events');
    await within(3000, sub.subscribe(pattern, (args, kwargs, details) => inbox.push({ args, details }), { match: 'wildcard' }), 'SUBSCRIBE(match=wildcard) -> SUBSCRIBED');
    const topics = [
      [`${base}.dev1.status`, true],
      [`${base}.dev1.other`, false],
      [`${base}.a.b.status`, false],
      [`${base}.status`, false],
      [`${base}.dev2.status`, true],
    ];
    for (const [t] of topics) {
      await within(3000, pub.publish(t, [t], {}, { acknowledge: true }), `PUBLISH ${t}`);
    }
    const expected = topics.filter(([, m]) => m).map(([t]) => t);
    await inbox.waitFor(expected.length);
    await sleep(200);
    eq(inbox.items.map((e) => e.args[0]), expected, 'received events (payload)');
    eq(inbox.items.map((e) => e.details.topic), expected, 'EVENT details.topic');
  });

  scenario(`${P}/exclude-me`, async (ctx) => {
    const s = await abOpen(ctx, ser);
    const topic = uri('self');
    const inbox = new Inbox('own events');
    await within(3000, s.subscribe(topic, (args) => inbox.push(args[0])), 'SUBSCRIBE');
    await within(3000, s.publish(topic, ['default'], {}, { acknowledge: true }), 'PUBLISH (exclude_me default)');
    await within(3000, s.publish(topic, ['excluded'], {}, { acknowledge: true, exclude_me: true }), 'PUBLISH exclude_me=true');
    await within(3000, s.publish(topic, ['included'], {}, { acknowledge: true, exclude_me: false }), 'PUBLISH exclude_me=false');
    await inbox.waitFor(1);
    await sleep(200);
    eq(inbox.items, ['included'], 'own events received (only exclude_me=false should arrive)');
  });

  scenario(`${P}/publish-acknowledge`, async (ctx) => {
    const s = await abOpen(ctx, ser);
    const topic = uri('ack');
    const p1 = await within(3000, s.publish(topic, [1], {}, { acknowledge: true }), 'PUBLISH(acknowledge) -> PUBLISHED');
    checkId(p1.id, 'PUBLISHED publication id');
    const p2 = await within(3000, s.publish(topic, [2], {}, { acknowledge: true }), 'second PUBLISH -> PUBLISHED');
    checkId(p2.id, 'second PUBLISHED publication id');
    check(p1.id !== p2.id, `two publications got the same id ${p1.id}`);
    // without acknowledge nothing comes back; the session must still work
    const r = s.publish(topic, [3]);
    check(r === undefined || r === null, 'publish without acknowledge returned a promise');
    const p3 = await within(3000, s.publish(topic, [4], {}, { acknowledge: true }), 'PUBLISH after unacknowledged PUBLISH');
    checkId(p3.id, 'third publication id');
  });

  // Crossbar nodes check URIs loosely: a loosely valid URI with capitals or
  // dashes is fine; "wamp." is reserved for the router (ERROR invalid_uri). A
  // URI that is not even loosely valid (empty component, space, '#') is a
  // protocol violation in Crossbar (the connection is dropped), so it is not
  // sent here.
  scenario(`${P}/uri-checks`, async (ctx) => {
    const s = await abOpen(ctx, ser, `${P} session`);
    const other = await abOpen(ctx, ser, `${P} other session`);
    const loose = `${uri('x')}.Loose-URI_ok`;
    const inbox = new Inbox('events on loose URI');
    await within(3000, other.subscribe(loose, (args) => inbox.push(args[0])), `SUBSCRIBE to loose URI ${loose}`);
    const p1 = await within(3000, s.publish(loose, ['loose'], {}, { acknowledge: true }), `PUBLISH(acknowledge) to loose URI ${loose}`);
    checkId(p1.id, 'publication id');
    await inbox.waitFor(1);
    await within(3000, other.register(loose, () => 'ok'), `REGISTER loose URI ${loose}`);
    eq(await within(3000, s.call(loose), `CALL loose URI ${loose}`), 'ok', 'RESULT from loose URI');
    const reserved = `wamp.switchyard_test.${RUN_ID}`;
    await expectCallError(s.publish(reserved, [1], {}, { acknowledge: true }), 'wamp.error.invalid_uri', `PUBLISH(acknowledge) to reserved ${reserved}`);
    const p2 = await within(3000, s.publish(uri('still_alive'), [], {}, { acknowledge: true }), 'PUBLISH after ERROR');
    checkId(p2.id, 'publication id');
  });

  scenario(`${P}/rpc-args-kwargs`, async (ctx) => {
    const callee = await abOpen(ctx, ser, `${P} callee`);
    const caller = await abOpen(ctx, ser, `${P} caller`);
    const proc = uri('echo');
    const seen = new Inbox('invocations');
    const reg = await within(3000, callee.register(proc, (args, kwargs, details) => {
      seen.push({ args, kwargs, procedure: details.procedure });
      return new autobahn.Result(['echo', ...args], { kwargs, n: args.length });
    }), 'REGISTER -> REGISTERED');
    checkId(reg.id, 'REGISTERED registration id');
    const res = await within(3000, caller.call(proc, ARGS, KWARGS), 'CALL -> RESULT');
    check(res instanceof autobahn.Result, `RESULT should carry args and kwargs, got ${short(res)}`);
    eq(res.args, ['echo', ...ARGS], 'RESULT args');
    eq(res.kwargs, { kwargs: KWARGS, n: ARGS.length }, 'RESULT kwargs');
    eq(seen.items[0].args, ARGS, 'INVOCATION args');
    eq(seen.items[0].kwargs, KWARGS, 'INVOCATION kwargs');
    // single positional result, no-args call
    const proc2 = uri('answer');
    await within(3000, callee.register(proc2, () => 42), 'REGISTER 2');
    eq(await within(3000, caller.call(proc2), 'CALL without args'), 42, 'single RESULT value');
    // kwargs-only result
    const proc3 = uri('kwonly');
    await within(3000, callee.register(proc3, (a, kw) => new autobahn.Result([], { got: kw })), 'REGISTER 3');
    const r3 = await within(3000, caller.call(proc3, [], { z: 1 }), 'CALL kwargs only');
    eq(r3.kwargs, { got: { z: 1 } }, 'kwargs-only RESULT');
    // registering the same URI twice fails
    await expectCallError(caller.register(proc, () => 0), 'wamp.error.procedure_already_exists', 'second REGISTER of same URI');
    // unregister -> no_such_procedure
    await within(3000, reg.unregister(), 'UNREGISTER -> UNREGISTERED');
    await expectCallError(caller.call(proc, [1]), 'wamp.error.no_such_procedure', 'CALL after UNREGISTER');
  });

  scenario(`${P}/progressive-results`, async (ctx) => {
    const callee = await abOpen(ctx, ser, `${P} callee`);
    const caller = await abOpen(ctx, ser, `${P} caller`);
    const proc = uri('progress');
    let hadProgress = null;
    await within(3000, callee.register(proc, async (args, kwargs, details) => {
      hadProgress = typeof details.progress === 'function';
      if (!hadProgress) return 'no-progress';
      for (let i = 0; i < args[0]; i++) {
        details.progress([i], { step: i });
        await sleep(20);
      }
      return new autobahn.Result(['done'], { total: args[0] });
    }), 'REGISTER');
    const progress = [];
    const res = await within(5000, withProgress(caller.call(proc, [3], {}, { receive_progress: true }), (p) => progress.push(p)), 'CALL(receive_progress) -> final RESULT');
    check(hadProgress === true, 'INVOCATION.Details lacked receive_progress=true (callee got no progress function)');
    eq(progress.map((p) => normalize(p instanceof autobahn.Result ? { args: p.args, kwargs: p.kwargs } : p)),
      [0, 1, 2].map((i) => ({ args: [i], kwargs: { step: i } })), 'progressive RESULTs (progress=true) in order');
    eq({ args: res.args, kwargs: res.kwargs }, { args: ['done'], kwargs: { total: 3 } }, 'final RESULT');
    // a caller that did not ask for progress gets only the final result
    const res2 = await within(5000, caller.call(proc, [2]), 'CALL without receive_progress');
    check(res2 === 'no-progress' || res2 instanceof autobahn.Result, `unexpected ${short(res2)}`);
    eq(res2, 'no-progress', 'INVOCATION without receive_progress (callee must not see receive_progress)');
  });

  scenario(`${P}/callee-error`, async (ctx) => {
    const callee = await abOpen(ctx, ser, `${P} callee`);
    const caller = await abOpen(ctx, ser, `${P} caller`);
    const proc = uri('fail');
    const errUri = 'com.switchyard.error.app_failure';
    await within(3000, callee.register(proc, (args) => {
      throw new autobahn.Error(errUri, ['bad input', args[0], { detail: [1, 2] }], { code: 7, why: 'because' });
    }), 'REGISTER');
    const e = await expectCallError(caller.call(proc, ['x']), errUri, 'CALL to failing callee');
    eq(e.args, ['bad input', 'x', { detail: [1, 2] }], 'ERROR args');
    eq(e.kwargs, { code: 7, why: 'because' }, 'ERROR kwargs');
    // an error without payload
    const proc2 = uri('fail2');
    await within(3000, callee.register(proc2, () => { throw new autobahn.Error('com.switchyard.error.plain'); }), 'REGISTER 2');
    const e2 = await expectCallError(caller.call(proc2), 'com.switchyard.error.plain', 'CALL to failing callee (no payload)');
    eq(e2.args, [], 'ERROR args (none)');
    eq(e2.kwargs, {}, 'ERROR kwargs (none)');
    // the callee session is still usable
    const proc3 = uri('ok');
    await within(3000, callee.register(proc3, () => 'fine'), 'REGISTER 3');
    eq(await within(3000, caller.call(proc3), 'CALL after errors'), 'fine', 'RESULT after errors');
  });

  scenario(`${P}/no-such-procedure`, async (ctx) => {
    const caller = await abOpen(ctx, ser);
    await expectCallError(caller.call(uri('nobody.home'), [1], { a: 1 }), 'wamp.error.no_such_procedure', 'CALL to unregistered procedure');
    // and the session is still alive
    const p = await within(3000, caller.publish(uri('alive'), [], {}, { acknowledge: true }), 'PUBLISH after error');
    checkId(p.id, 'publication id');
  });
}

// --- autobahn: the same router session with different serializers --------

scenario('autobahn/cross-serializer/pubsub', async (ctx) => {
  const topic = uri('cross');
  const subs = {};
  for (const ser of AB_SERIALIZERS) {
    const s = await abOpen(ctx, ser, `subscriber ${ser}`);
    const inbox = new Inbox(`events at ${ser} subscriber`);
    await within(3000, s.subscribe(topic, (args, kwargs) => inbox.push({ args, kwargs })), `SUBSCRIBE (${ser})`);
    subs[ser] = inbox;
  }
  for (const ser of AB_SERIALIZERS) {
    const p = await abOpen(ctx, ser, `publisher ${ser}`);
    await within(3000, p.publish(topic, [ser, ...ARGS], KWARGS, { acknowledge: true }), `PUBLISH (${ser})`);
  }
  for (const ser of AB_SERIALIZERS) {
    const items = await subs[ser].waitFor(3);
    for (const ev of items) {
      const from = ev.args[0];
      eq(ev.args, [from, ...ARGS], `${from} -> ${ser}: EVENT args`);
      eq(ev.kwargs, KWARGS, `${from} -> ${ser}: EVENT kwargs`);
    }
    eq(items.map((e) => e.args[0]).sort(), [...AB_SERIALIZERS].sort(), `publishers seen by ${ser} subscriber`);
  }
});

scenario('autobahn/cross-serializer/rpc', async (ctx) => {
  const procs = {};
  for (const ser of AB_SERIALIZERS) {
    const c = await abOpen(ctx, ser, `callee ${ser}`);
    procs[ser] = uri(`echo_${ser}`);
    await within(3000, c.register(procs[ser], (args, kwargs) => new autobahn.Result([ser, ...args], kwargs)), `REGISTER (${ser})`);
  }
  for (const cs of AB_SERIALIZERS) {
    const caller = await abOpen(ctx, cs, `caller ${cs}`);
    for (const ks of AB_SERIALIZERS) {
      const r = await within(3000, caller.call(procs[ks], ARGS, KWARGS), `CALL ${cs} caller -> ${ks} callee`);
      eq(r.args, [ks, ...ARGS], `${cs} caller -> ${ks} callee: RESULT args`);
      eq(r.kwargs, KWARGS, `${cs} caller -> ${ks} callee: RESULT kwargs`);
    }
  }
});

// --- binary payloads between serializers ----------------------------------

for (const [from, to] of [['json', 'msgpack'], ['msgpack', 'json'], ['json', 'cbor'], ['cbor', 'json'], ['cbor', 'msgpack']]) {
  scenario(`autobahn/binary/pubsub-${from}-to-${to}`, async (ctx) => {
    const sub = await abOpen(ctx, to, `subscriber ${to}`);
    const pub = await abOpen(ctx, from, `publisher ${from}`);
    const topic = uri('bin');
    const inbox = new Inbox('binary events');
    await within(3000, sub.subscribe(topic, (args, kwargs) => inbox.push({ args, kwargs })), 'SUBSCRIBE');
    await within(3000, pub.publish(topic, [BYTES, 'text'], { blob: BYTES_SMALL, list: [Buffer.alloc(0), BYTES_SMALL] }, { acknowledge: true }), 'PUBLISH with binary');
    const [ev] = await inbox.waitFor(1);
    check(isBytes(ev.args[0]), `${from} -> ${to}: args[0] should be bytes, got ${short(ev.args[0])}`);
    eq(ev.args, [BYTES, 'text'], `${from} -> ${to}: EVENT args`);
    check(isBytes(ev.kwargs.blob), `${from} -> ${to}: kwargs.blob should be bytes, got ${short(ev.kwargs.blob)}`);
    eq(ev.kwargs, { blob: BYTES_SMALL, list: [Buffer.alloc(0), BYTES_SMALL] }, `${from} -> ${to}: EVENT kwargs`);
  });
}

for (const [callerSer, calleeSer] of [['json', 'msgpack'], ['msgpack', 'json'], ['cbor', 'json']]) {
  scenario(`autobahn/binary/rpc-${callerSer}-caller-${calleeSer}-callee`, async (ctx) => {
    const callee = await abOpen(ctx, calleeSer, `callee ${calleeSer}`);
    const caller = await abOpen(ctx, callerSer, `caller ${callerSer}`);
    const proc = uri('binrev');
    const seen = new Inbox('invocations');
    await within(3000, callee.register(proc, (args, kwargs) => {
      seen.push({ args, kwargs });
      const b = args[0];
      if (!isBytes(b)) throw new autobahn.Error('com.switchyard.error.not_bytes', [typeof b, String(b).slice(0, 40)]);
      const rev = Buffer.from(b).reverse();
      return new autobahn.Result([rev], { orig: kwargs.orig });
    }), 'REGISTER');
    const r = await within(3000, caller.call(proc, [BYTES], { orig: BYTES_SMALL }), 'CALL with binary');
    eq(seen.items[0].args, [BYTES], `INVOCATION args at ${calleeSer} callee`);
    check(r instanceof autobahn.Result && isBytes(r.args[0]), `RESULT args[0] should be bytes, got ${short(r)}`);
    eq(r.args[0], Buffer.from(BYTES).reverse(), 'RESULT bytes');
    eq(r.kwargs.orig, BYTES_SMALL, 'RESULT kwargs bytes');
  });
}

// --- session close --------------------------------------------------------

for (const ser of AB_SERIALIZERS) {
  scenario(`autobahn/${ser}/goodbye-close`, async (ctx) => {
    // GOODBYE -> GOODBYE, then a WebSocket closing handshake: autobahn-js
    // reports "closed" only when the socket closes cleanly (code 1000);
    // a dropped TCP connection (1006) is reported as "lost".
    const conn = new autobahn.Connection({
      url: URL_, realm: REALM, serializers: [abSerializer(ser)], max_retries: 0, retry_if_unreachable: false,
      on_user_error: () => {}, on_internal_error: () => {},
    });
    const opened = new Promise((resolve) => { conn.onopen = resolve; });
    const closed = new Promise((resolve) => { conn.onclose = (reason, details) => { resolve({ reason, details }); return true; }; });
    ctx.defer(() => { try { conn.close(); } catch { /* closed */ } });
    conn.open();
    await within(5000, opened, 'HELLO -> WELCOME');
    conn.close('wamp.close.normal');
    const { reason, details } = await within(3000, closed, 'GOODBYE -> GOODBYE and close');
    check(reason === 'closed', `autobahn-js saw the close as "${reason}" (GOODBYE reply ${short(details?.reason)}): "closed" needs a clean WebSocket close (1000) after GOODBYE, "lost" means the socket closed uncleanly (e.g. TCP dropped without a close frame, 1006)`);
    check(['wamp.close.goodbye_and_out', 'wamp.close.normal'].includes(details?.reason), `GOODBYE reply reason ${short(details?.reason)}`);
  });
}

// --- call timeout (dealer-side, milliseconds) ------------------------------

scenario('autobahn/json/call-timeout', async (ctx) => {
  const callee = await abOpen(ctx, 'json', 'callee');
  const caller = await abOpen(ctx, 'json', 'caller');
  const slow = uri('slow');
  const ping = uri('ping');
  await within(3000, callee.register(slow, async () => { await sleep(1500); return 'late'; }), 'REGISTER slow');
  await within(3000, callee.register(ping, () => 'pong'), 'REGISTER ping');
  const t0 = Date.now();
  await expectCallError(caller.call(slow, [], {}, { timeout: 300 }), 'wamp.error.timeout', 'CALL(timeout=300 ms) to a callee that answers after 1500 ms', 1400);
  const took = Date.now() - t0;
  check(took >= 250, `wamp.error.timeout came after ${took} ms, before the 300 ms timeout`);
  // the late YIELD must be dropped quietly; both sessions stay usable
  await sleep(1500 - (Date.now() - t0) + 300);
  eq(await within(3000, caller.call(ping), 'CALL ping after late YIELD'), 'pong', 'RESULT after timeout');
  // a timeout that does not fire
  eq(await within(3000, caller.call(ping, [], {}, { timeout: 2000 }), 'CALL(timeout=2000) fast'), 'pong', 'RESULT with unfired timeout');
});

// ---------------------------------------------------------------------------
// wampy.js

for (const ser of WAMPY_SERIALIZERS) {
  const P = `wampy/${ser}`;

  scenario(`${P}/pubsub`, async (ctx) => {
    const sub = await wpOpen(ctx, ser, `${P} subscriber`);
    const pub = await wpOpen(ctx, ser, `${P} publisher`);
    const topic = uri('wexact');
    const inbox = new Inbox('events');
    const s = await within(3000, sub.subscribe(topic, (e) => inbox.push(e)), 'SUBSCRIBE -> SUBSCRIBED');
    checkId(s.subscriptionId, 'subscription id');
    const args = [1, 'two', { three: 3 }, [4], 1.5, null, true];
    const kwargs = { a: 1, b: [1, 2], c: { d: 'é' } };
    const p = await within(3000, pub.publish(topic, { argsList: args, argsDict: kwargs }), 'PUBLISH -> PUBLISHED');
    checkId(p.publicationId, 'publication id');
    await within(3000, pub.publish(topic, { only: 'dict' }), 'PUBLISH dict only');
    const ev = await inbox.waitFor(2);
    eq(ev[0].argsList, args, 'EVENT argsList');
    eq(ev[0].argsDict, kwargs, 'EVENT argsDict');
    eq(ev[0].details?.publication ?? p.publicationId, p.publicationId, 'publication id');
    eq(ev[1].argsDict, { only: 'dict' }, 'EVENT 2 argsDict');
    await within(3000, sub.unsubscribe(topic), 'UNSUBSCRIBE -> UNSUBSCRIBED');
    await within(3000, pub.publish(topic, ['after']), 'PUBLISH after unsubscribe');
    await sleep(300);
    eq(inbox.items.length, 2, 'events after UNSUBSCRIBED');
  });

  scenario(`${P}/rpc`, async (ctx) => {
    const callee = await wpOpen(ctx, ser, `${P} callee`);
    const caller = await wpOpen(ctx, ser, `${P} caller`);
    const proc = uri('wsum');
    const r = await within(3000, callee.register(proc, ({ argsList, argsDict }) => ({
      argsList: [argsList.reduce((a, b) => a + b, 0)],
      argsDict: { echo: argsDict },
    })), 'REGISTER -> REGISTERED');
    checkId(r.registrationId, 'registration id');
    const res = await within(3000, caller.call(proc, { argsList: [1, 2, 3, 2 ** 40], argsDict: { x: 'y', n: [null] } }), 'CALL -> RESULT');
    eq(res.argsList, [6 + 2 ** 40], 'RESULT argsList');
    eq(res.argsDict, { echo: { x: 'y', n: [null] } }, 'RESULT argsDict');
    // application error from callee
    const failing = uri('wfail');
    await within(3000, callee.register(failing, () => {
      throw { error: 'com.switchyard.error.wampy_app', argsList: ['nope', 1], argsDict: { k: 'v' } };
    }), 'REGISTER failing');
    const e = await expectCallError(caller.call(failing, ['x']), 'com.switchyard.error.wampy_app', 'CALL to failing wampy callee');
    eq(e.argsList, ['nope', 1], 'ERROR argsList');
    eq(e.argsDict, { k: 'v' }, 'ERROR argsDict');
    await expectCallError(caller.call(uri('wmissing')), 'wamp.error.no_such_procedure', 'CALL to unregistered procedure');
  });

  scenario(`${P}/progressive-results`, async (ctx) => {
    const callee = await wpOpen(ctx, ser, `${P} callee`);
    const caller = await wpOpen(ctx, ser, `${P} caller`);
    const proc = uri('wprog');
    let receiveProgress = null;
    await within(3000, callee.register(proc, async ({ details, result_handler }) => {
      receiveProgress = details?.receive_progress === true;
      for (let i = 0; i < 3; i++) {
        result_handler({ argsList: [i], options: { progress: true } });
        await sleep(20);
      }
      return { argsList: ['done'] };
    }), 'REGISTER');
    const progress = [];
    const res = await within(5000, caller.call(proc, [], { progress_callback: (r) => progress.push(r.argsList) }), 'CALL with progress_callback -> final RESULT');
    // wampy 8.0.2 does not announce callee.features.progressive_call_results,
    // yet sends progressive YIELDs when asked; Crossbar forwards receive_progress
    // to every callee (the spec lets a callee ignore the flag).
    check(receiveProgress === true, 'INVOCATION.Details lacked receive_progress=true (wampy does not announce callee.features.progressive_call_results; Crossbar forwards receive_progress anyway)');
    eq(progress, [[0], [1], [2]], 'progressive RESULTs');
    eq(res.argsList, ['done'], 'final RESULT');
  });

  scenario(`${P}/wildcard-subscribe`, async (ctx) => {
    const sub = await wpOpen(ctx, ser, `${P} subscriber`);
    const pub = await wpOpen(ctx, ser, `${P} publisher`);
    const base = uri('wwc');
    const inbox = new Inbox('wildcard events');
    await within(3000, sub.subscribe(`${base}..temp`, (e) => inbox.push(e), { match: 'wildcard' }), 'SUBSCRIBE(match=wildcard)');
    const topics = [[`${base}.room1.temp`, true], [`${base}.room1.hum`, false], [`${base}.x.y.temp`, false], [`${base}.room2.temp`, true]];
    for (const [t] of topics) await within(3000, pub.publish(t, [t]), `PUBLISH ${t}`);
    const expected = topics.filter(([, m]) => m).map(([t]) => t);
    await inbox.waitFor(expected.length);
    await sleep(200);
    eq(inbox.items.map((e) => e.argsList?.[0]), expected, 'received events');
    eq(inbox.items.map((e) => e.details?.topic), expected, 'EVENT details.topic');
  });

  scenario(`${P}/prefix-subscribe`, async (ctx) => {
    const sub = await wpOpen(ctx, ser, `${P} subscriber`);
    const pub = await wpOpen(ctx, ser, `${P} publisher`);
    const base = uri('wpfx');
    const inbox = new Inbox('prefix events');
    await within(3000, sub.subscribe(base, (e) => inbox.push(e), { match: 'prefix' }), 'SUBSCRIBE(match=prefix)');
    const topics = [[`${base}.a`, true], [`${base.replace(/\.wpfx$/, '.zzz')}`, false], [`${base}.b.c`, true]];
    for (const [t] of topics) await within(3000, pub.publish(t, [t]), `PUBLISH ${t}`);
    const expected = topics.filter(([, m]) => m).map(([t]) => t);
    await inbox.waitFor(expected.length);
    await sleep(200);
    eq(inbox.items.map((e) => e.argsList?.[0]), expected, 'received events');
    eq(inbox.items.map((e) => e.details?.topic), expected, 'EVENT details.topic');
  });
}

scenario('wampy/json/cancel-skip', async (ctx) => {
  const callee = await abOpen(ctx, 'json', 'autobahn callee');
  const caller = await wpOpen(ctx, 'json', 'wampy caller');
  const slow = uri('wslow');
  const ping = uri('wping');
  await within(3000, callee.register(slow, async () => { await sleep(1500); return 'late'; }), 'REGISTER slow');
  await within(3000, callee.register(ping, () => 'pong'), 'REGISTER ping');
  const t0 = Date.now();
  const pending = caller.call(slow, ['x']);
  pending.catch(() => {});
  const reqId = caller.getOpStatus().reqId;
  await sleep(200);
  try {
    caller.cancel(reqId, { mode: 'skip' });
  } catch (e) {
    throw new AssertionError(`wampy refused to send CANCEL: ${fmtErr(e)} (does WELCOME announce dealer.features.call_canceling?)`);
  }
  await expectCallError(pending, 'wamp.error.canceled', 'CANCEL(skip) -> ERROR', 1100);
  check(Date.now() - t0 < 1400, 'wamp.error.canceled came only after the callee answered');
  await sleep(1500 - (Date.now() - t0) + 300);
  const r = await within(3000, caller.call(ping), 'CALL ping after the canceled call finished at the callee');
  eq(r.argsList, ['pong'], 'RESULT after cancel');
});

// --- mixing the two libraries ----------------------------------------------

scenario('mixed/wampy-msgpack-publisher-to-autobahn-subscribers', async (ctx) => {
  const topic = uri('mixed');
  const inboxes = {};
  for (const ser of AB_SERIALIZERS) {
    const s = await abOpen(ctx, ser, `autobahn ${ser} subscriber`);
    inboxes[ser] = new Inbox(`autobahn ${ser} events`);
    await within(3000, s.subscribe(topic, (args, kwargs, details) => inboxes[ser].push({ args, kwargs, details })), `SUBSCRIBE ${ser}`);
  }
  const pub = await wpOpen(ctx, 'msgpack', 'wampy publisher');
  const p = await within(3000, pub.publish(topic, { argsList: [1, 'b', { c: [2] }], argsDict: { k: 'v' } }), 'PUBLISH');
  for (const ser of AB_SERIALIZERS) {
    const [ev] = await inboxes[ser].waitFor(1);
    eq(ev.args, [1, 'b', { c: [2] }], `${ser}: EVENT args`);
    eq(ev.kwargs, { k: 'v' }, `${ser}: EVENT kwargs`);
    eq(ev.details.publication, p.publicationId, `${ser}: EVENT publication id`);
  }
});

scenario('mixed/autobahn-json-callee-wampy-callers', async (ctx) => {
  const callee = await abOpen(ctx, 'json', 'autobahn callee');
  const proc = uri('mixedrpc');
  await within(3000, callee.register(proc, (args, kwargs) => new autobahn.Result(['ok', ...args], kwargs)), 'REGISTER');
  for (const ser of WAMPY_SERIALIZERS) {
    const w = await wpOpen(ctx, ser, `wampy ${ser} caller`);
    const r = await within(3000, w.call(proc, { argsList: [1, 'x'], argsDict: { y: [true] } }), `CALL from wampy ${ser}`);
    eq(r.argsList, ['ok', 1, 'x'], `wampy ${ser}: RESULT argsList`);
    eq(r.argsDict, { y: [true] }, `wampy ${ser}: RESULT argsDict`);
  }
});

scenario('mixed/wampy-cbor-callee-autobahn-callers', async (ctx) => {
  const callee = await wpOpen(ctx, 'cbor', 'wampy callee');
  const proc = uri('mixedrpc2');
  await within(3000, callee.register(proc, ({ argsList, argsDict }) => ({ argsList: [argsList.length], argsDict: { back: argsDict } })), 'REGISTER');
  for (const ser of AB_SERIALIZERS) {
    const c = await abOpen(ctx, ser, `autobahn ${ser} caller`);
    const r = await within(3000, c.call(proc, [1, 2, 3], { q: 'é' }), `CALL from autobahn ${ser}`);
    eq(r.args, [3], `autobahn ${ser}: RESULT args`);
    eq(r.kwargs, { back: { q: 'é' } }, `autobahn ${ser}: RESULT kwargs`);
  }
});

// ---------------------------------------------------------------------------
// runner

async function runScenario({ name, fn }) {
  const ctx = new Ctx(name);
  currentCtx = ctx;
  let timer;
  const hard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AssertionError(`scenario timed out after ${SCENARIO_TIMEOUT} ms`)), SCENARIO_TIMEOUT);
  });
  let failure = null;
  try {
    await Promise.race([fn(ctx), hard, ctx.abort]);
  } catch (e) {
    failure = e instanceof AssertionError ? e.message : `unexpected exception: ${fmtErr(e)}${e?.stack && !(e instanceof AssertionError) && cli.trace ? '\n' + e.stack : ''}`;
  } finally {
    clearTimeout(timer);
    await ctx.cleanup();
    currentCtx = null;
  }
  return { failure, trace: ctx.trace };
}

const selected = scenarios.filter(({ name }) => (!cli.filter || cli.filter.some((f) => name.includes(f)))
  && !(cli.exclude || []).some((f) => name.includes(f)));
if (cli.list) {
  for (const { name } of selected) console.log(name);
  process.exit(0);
}

// --router-bin: run our own router on a free loopback port.
let routerChild = null;
async function startRouter(bin) {
  const logStream = cli['router-log'] ? createWriteStream(cli['router-log']) : null;
  const child = spawn(bin, ['start', '--no-master', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  routerChild = child;
  if (logStream) child.stderr.pipe(logStream);
  else child.stderr.resume();
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} printed no "switchyard listening on 127.0.0.1:<port>" line within 15 s`)), 15000);
    let buf = '';
    child.stdout.on('data', (chunk) => {
      if (logStream) logStream.write(chunk);
      buf += chunk.toString();
      const m = /^switchyard listening on (127\.0\.0\.1:\d+)\s*$/m.exec(buf);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`${bin} exited (code ${code}, signal ${sig}) before listening`)); });
  });
  child.removeAllListeners('exit');
  child.on('exit', (code, sig) => {
    if (!stoppingRouter) console.log(`# router exited unexpectedly (code ${code}, signal ${sig})`);
  });
  return `ws://${addr}/ws`;
}
let stoppingRouter = false;
async function stopRouter() {
  if (!routerChild || routerChild.exitCode !== null || routerChild.signalCode !== null) return;
  stoppingRouter = true;
  const exited = new Promise((r) => routerChild.once('exit', r));
  routerChild.kill('SIGTERM');
  const t = setTimeout(() => routerChild.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}
process.on('exit', () => { if (routerChild && routerChild.exitCode === null) routerChild.kill('SIGKILL'); });

if (cli['router-bin']) {
  try {
    URL_ = await startRouter(cli['router-bin']);
    console.log(`# router ${cli['router-bin']} at ${URL_}`);
  } catch (e) {
    console.log(`FAIL router-start: ${e.message}`);
    console.log('0 passed, 1 failed');
    await stopRouter().catch(() => {});
    process.exit(1);
  }
}

let passed = 0;
let failed = 0;
for (const s of selected) {
  const { failure, trace } = await runScenario(s);
  if (failure === null) {
    passed += 1;
    console.log(`PASS ${s.name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${s.name}: ${failure}`);
    if (cli.trace) {
      for (const line of trace.slice(-60)) console.log(`    ${line.length > 400 ? line.slice(0, 400) + '...' : line}`);
    }
  }
}
await stopRouter();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || selected.length === 0 ? 1 : 0);
