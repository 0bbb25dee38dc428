// Crossbar-style authentication with autobahn-js against a node running
// tests/fixtures/crossbar/.crossbar/config.json (switchyard or Crossbar itself).
//
// Usage: node crossbar_auth.mjs --ws ws://127.0.0.1:P/ws --wss wss://localhost:P/ws
//        (for wss, start node with NODE_EXTRA_CA_CERTS=<the node's certificate>)
//
// Scenarios (one `PASS name` / `FAIL name: reason` line each, then `N passed, M failed`):
// anonymous with role anonymous and a denied publish; ticket good and bad; WAMP-CRA plain
// and salted (autobahn.auth_cra.derive_key) and bad; cryptosign (autobahn.auth_cryptosign,
// tweetnacl) good and with a key that is not authorized; wss:// with a realm-bound principal.
// Then the same methods with wampy.js and its own wampcra and cryptosign plugins.

import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import autobahn from 'autobahn';
import WebSocketImpl from 'ws';
import { Wampy } from 'wampy';
import { sign as wampyCra } from 'wampy/wampcra.js';
import { sign as wampyCryptosign } from 'wampy/cryptosign.js';

const require = createRequire(import.meta.url);
const nacl = require('tweetnacl');

if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = WebSocketImpl;
}
autobahn.log.warn = () => {};

const { values: cli } = parseArgs({
  options: { ws: { type: 'string' }, wss: { type: 'string' } },
});
const TIMEOUT = 10000;

class Refused extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

// Opens a session; resolves with [session, details] or rejects with Refused(reason).
function connect({ url = cli.ws, realm = 'realm1', authmethods = ['anonymous'], authid, authextra, onchallenge }) {
  return new Promise((resolve, reject) => {
    const conn = new autobahn.Connection({
      url,
      realm,
      authmethods,
      authid,
      authextra,
      onchallenge,
      max_retries: 0,
      retry_if_unreachable: false,
    });
    const timer = setTimeout(() => reject(new Error('no WELCOME within 10 s')), TIMEOUT);
    conn.onopen = (session, details) => {
      clearTimeout(timer);
      session._conn = conn;
      resolve([session, details]);
    };
    conn.onclose = (reason, details) => {
      clearTimeout(timer);
      reject(new Refused((details && details.reason) || reason));
      return true; // no reconnect
    };
    conn.open();
  });
}

async function refused(opts) {
  try {
    const [s] = await connect(opts);
    s._conn.close();
  } catch (e) {
    if (e instanceof Refused) return e.reason;
    throw e;
  }
  throw new Error('joined, but should have been refused');
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const ticket = (t) => () => t;
const wampcra = (secret) => (session, method, extra) => {
  let key = secret;
  if (extra.salt) key = autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen);
  return autobahn.auth_cra.sign(key, extra.challenge);
};
const keyFromSeed = (b) => nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(b));
const cryptosign = (pkey) => (session, method, extra) => autobahn.auth_cryptosign.sign_challenge(pkey, extra);

const OK_REFUSALS = ['wamp.error.authentication_failed', 'wamp.error.not_authorized', 'wamp.error.no_such_principal'];

const scenarios = {
  async anonymous_role_and_denied_publish() {
    const [s, d] = await connect({});
    check(d.authrole === 'anonymous', `authrole ${d.authrole}`);
    try {
      await s.publish('com.example.news', ['x'], {}, { acknowledge: true });
      throw new Error('publish allowed');
    } catch (e) {
      check(e.error === 'wamp.error.not_authorized', `publish: ${e.error || e}`);
    }
    s._conn.close();
  },
  async ticket_good_and_bad() {
    const [s, d] = await connect({ authmethods: ['ticket'], authid: 'alice', onchallenge: ticket('alice-ticket-secret') });
    check(d.authrole === 'user', `authrole ${d.authrole}`);
    s._conn.close();
    const r = await refused({ authmethods: ['ticket'], authid: 'alice', onchallenge: ticket('wrong') });
    check(OK_REFUSALS.includes(r), r);
  },
  async wampcra_plain_salted_and_bad() {
    let [s, d] = await connect({ authmethods: ['wampcra'], authid: 'bob', onchallenge: wampcra('bob-secret') });
    check(d.authmethod === 'wampcra', d.authmethod);
    s._conn.close();
    [s, d] = await connect({ authmethods: ['wampcra'], authid: 'carol', onchallenge: wampcra('carol-secret') });
    check(d.authrole === 'backend', d.authrole);
    s._conn.close();
    const r = await refused({ authmethods: ['wampcra'], authid: 'bob', onchallenge: wampcra('nope') });
    check(OK_REFUSALS.includes(r), r);
  },
  async cryptosign_good_and_wrong_key() {
    const good = keyFromSeed(7);
    const [s, d] = await connect({
      authmethods: ['cryptosign'], authid: 'dave',
      authextra: { pubkey: autobahn.auth_cryptosign.public_key(good) }, onchallenge: cryptosign(good),
    });
    check(d.authrole === 'backend' && d.authmethod === 'cryptosign', `${d.authrole} ${d.authmethod}`);
    s._conn.close();
    const bad = keyFromSeed(9);
    const r = await refused({
      authmethods: ['cryptosign'], authid: 'dave',
      authextra: { pubkey: autobahn.auth_cryptosign.public_key(bad) }, onchallenge: cryptosign(bad),
    });
    check(OK_REFUSALS.includes(r), r);
  },
  async wss_and_realm_bound_principal() {
    let [s, d] = await connect({ url: cli.wss, authmethods: ['ticket'], authid: 'alice', onchallenge: ticket('alice-ticket-secret') });
    check(d.authrole === 'user', d.authrole);
    s._conn.close();
    const key = keyFromSeed(8);
    [s, d] = await connect({
      url: cli.wss, realm: 'iot', authmethods: ['cryptosign'], authid: 'sensor-1',
      authextra: { pubkey: autobahn.auth_cryptosign.public_key(key) }, onchallenge: cryptosign(key),
    });
    check(d.realm === 'iot' && d.authrole === 'device', `${d.realm} ${d.authrole}`);
    await s.publish('io.sensor.s1.reading', [21.5], {}, { acknowledge: true });
    s._conn.close();
  },
  async wampy_ticket_wampcra_cryptosign() {
    const open = async (opts) => {
      const w = new Wampy(cli.ws, { realm: 'realm1', ws: WebSocketImpl, autoReconnect: false, ...opts });
      await w.connect();
      return w;
    };
    let w = await open({ authid: 'alice', authmethods: ['ticket'], onChallenge: () => 'alice-ticket-secret' });
    check(w.getSessionId() > 0, 'no session');
    await w.disconnect();
    w = await open({ authid: 'carol', authmethods: ['wampcra'], onChallenge: wampyCra('carol-secret') });
    await w.disconnect();
    const seedHex = '07'.repeat(32);
    const pub = Buffer.from(nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(7)).publicKey).toString('hex');
    w = await open({
      authid: 'dave', authmethods: ['cryptosign'], authextra: { pubkey: pub },
      onChallenge: wampyCryptosign(seedHex),
    });
    await w.disconnect();
    let refusedOk = false;
    try {
      await open({ authid: 'alice', authmethods: ['ticket'], onChallenge: () => 'wrong' });
    } catch (e) {
      refusedOk = true;
    }
    check(refusedOk, 'a wrong ticket was accepted');
  },
};

let passed = 0;
let failed = 0;
for (const [name, fn] of Object.entries(scenarios)) {
  try {
    await Promise.race([fn(), new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 30000))]);
    console.log(`PASS ${name}`);
    passed++;
  } catch (e) {
    console.log(`FAIL ${name}: ${e && (e.stack || e.message || e)}`);
    failed++;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
