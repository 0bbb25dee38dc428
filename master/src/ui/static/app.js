// switchyard's web UI: reads the REST API (/api/v2), follows the bus live through
// Server-Sent Events (/api/v2/events) and acts through the API's JSON-RPC calls.
//
// Everything the API returns is put in the page as text nodes (textContent), never as HTML.
// On an event the affected collections are fetched again (debounced); a slow poll every
// 30 s covers anything missed, and `resync` (the stream fell behind) reloads everything.
"use strict";

const API = "/api/v2";
const TOKEN_KEY = "switchyard.apiToken";
// The slow fallback reload; `?poll=SECONDS` in the page's URL changes it (0: off, to see
// that updates come from the event stream alone).
const FALLBACK_POLL_MS = (() => {
  const v = new URLSearchParams(location.search).get("poll");
  return v !== null && /^\d+$/.test(v) ? Number(v) * 1000 : 30000;
})();
const DEBOUNCE_MS = 200;
const MAX_LOG_CHARS = 2000000; // older text is cut from the top of a live log

const RESULTS = ["SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION", "RETRY", "CANCELLED"];

const state = {
  masters: [],
  workers: [],
  builders: [],
  requests: [],
  builds: [],
  forceschedulers: [],
  workerNames: new Map(),
  // The build shown in detail, if any: {id, build, steps, logs: Map(logid -> log view)}.
  detail: null,
};

// ---------- small helpers ----------

function $(id) {
  return document.getElementById(id);
}

// Makes an element: attributes by name (set as attributes or, for `className`/`hidden`/
// `disabled`/`value`, properties), children as nodes or text. Never parses HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "className" || k === "hidden" || k === "disabled" || k === "value") e[k] = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else if (k === "onsubmit") e.addEventListener("submit", v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "";
  const d = new Date(ts * 1000);
  const now = new Date();
  return d.toDateString() === now.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function fmtDuration(start, end) {
  if (!start) return "";
  const s = Math.max(0, Math.round((end || Date.now() / 1000) - start));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function resultName(code) {
  return code === null || code === undefined ? null : RESULTS[code] || `result ${code}`;
}

// A badge for a build, step or request: its result when complete, else running/pending.
function resultBadge(item, runningWord) {
  const name = resultName(item.results);
  if (item.complete && name) {
    return el("span", { className: `badge r-${name.toLowerCase()}` }, name);
  }
  return el("span", { className: "badge r-running" }, runningWord || "running");
}

function masterName(id) {
  const m = state.masters.find((x) => x.masterid === id);
  return m ? m.name : `master ${id}`;
}

function builderName(id) {
  const b = state.builders.find((x) => x.builderid === id);
  return b ? b.name : `builder ${id}`;
}

function workerName(id) {
  if (id === null || id === undefined) return "";
  return state.workerNames.get(id) || `worker ${id}`;
}

// ---------- messages and the token ----------

function showMessage(text, kind) {
  $("message-text").textContent = text;
  $("message").dataset.kind = kind || "error";
  $("message").hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch (e) {
    return "";
  }
}

function showTokenState() {
  const t = token();
  $("token-state").textContent = t ? "token saved in this browser" : "no token: reading only";
  $("token-forget").hidden = !t;
  $("token").value = "";
  $("token").placeholder = t ? "saved (enter a new one to replace it)" : "needed to act";
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// ---------- the API ----------

// No cookies or cached HTTP credentials go out (the token is sent as a header), which also
// keeps the browser from opening its own login prompt on a 401.
const FETCH = { cache: "no-store", credentials: "omit" };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJson(path) {
  const r = await fetch(API + path, { headers: authHeaders(), ...FETCH });
  if (!r.ok) {
    let msg = r.statusText;
    try {
      msg = (await r.json()).error || msg;
    } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, msg);
  }
  return r.json();
}

async function getText(path) {
  const r = await fetch(API + path, { headers: authHeaders(), ...FETCH });
  if (!r.ok) throw new ApiError(r.status, r.statusText);
  return r.text();
}

let rpcId = 0;

// A JSON-RPC control call; errors are shown (a 401 says what to do) and rethrown.
async function rpc(path, method, params, what) {
  if (!token()) {
    showMessage(`${what}: an API token is needed. Enter it in the “API token” field above.`);
    $("token").focus();
    throw new ApiError(401, "no token");
  }
  let r;
  try {
    r = await fetch(API + path, {
      ...FETCH,
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcId, method, params: params || {} }),
    });
  } catch (e) {
    showMessage(`${what} failed: the server could not be reached (${e.message}).`);
    throw e;
  }
  let body = null;
  try {
    body = await r.json();
  } catch (e) { /* not JSON */ }
  if (r.status === 401) {
    showMessage(`${what} refused: 401 Unauthorized — the API token is missing or wrong. ` +
      "Enter a valid token in the “API token” field above.");
    $("token").focus();
    throw new ApiError(401, "unauthorized");
  }
  if (!r.ok || (body && body.error)) {
    const detail = body && body.error ? body.error.message || JSON.stringify(body.error) : r.statusText;
    showMessage(`${what} failed: ${r.status} ${detail}`);
    throw new ApiError(r.status, detail);
  }
  hideMessage();
  return body ? body.result : null;
}

// Runs an action from a button: disabled while it runs, errors already shown.
function action(button, what, run) {
  return async () => {
    button.disabled = true;
    try {
      await run();
    } catch (e) {
      if (!(e instanceof ApiError)) showMessage(`${what} failed: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  };
}

// ---------- loading collections ----------

const loaders = {
  async masters() {
    state.masters = (await getJson("/masters")).masters;
    renderMasters();
    renderWorkers();
    renderBuilders();
    renderQueue();
  },
  async workers() {
    state.workers = (await getJson("/workers")).workers;
    state.workerNames = new Map(state.workers.map((w) => [w.workerid, w.name]));
    renderWorkers();
    renderBuilds();
  },
  async builders() {
    state.builders = (await getJson("/builders")).builders;
    renderBuilders();
    renderBuilds();
    renderQueue();
  },
  async queue() {
    state.requests = (await getJson("/buildrequests?complete=false&order=-buildrequestid&limit=200"))
      .buildrequests;
    renderQueue();
  },
  async builds() {
    state.builds = (await getJson("/builds?order=-buildid&limit=50")).builds;
    renderBuilds();
  },
  async force() {
    state.forceschedulers = (await getJson("/forceschedulers")).forceschedulers;
    renderForce();
  },
  async detail() {
    await loadDetail();
  },
};

const pending = new Set();
const running = new Set();
let flushTimer = null;

// Asks for collections to be fetched again, soon (bursts of events become one fetch each).
// A collection is never fetched twice at once, so an older answer cannot land last.
function refresh(...names) {
  for (const n of names) pending.add(n);
  if (flushTimer === null) flushTimer = setTimeout(flush, DEBOUNCE_MS);
}

async function flush() {
  flushTimer = null;
  const names = [...pending].filter((n) => !running.has(n));
  for (const n of names) pending.delete(n);
  await Promise.all(names.map(load));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function load(name) {
  running.add(name);
  try {
    await loaders[name]();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      showMessage("Reading the API needs a token here (401 Unauthorized): enter it in the “API token” field above.");
    } else {
      showMessage(`Could not load ${name}: ${e.message}`);
    }
  } finally {
    running.delete(name);
    // Asked for again while it ran: once more.
    if (pending.size && flushTimer === null) flushTimer = setTimeout(flush, DEBOUNCE_MS);
  }
}

function refreshAll() {
  refresh("masters", "workers", "builders", "queue", "builds", "force");
  if (state.detail) refresh("detail");
}

// ---------- rendering the overview ----------

// Replaces a table's rows; a button that had the keyboard focus keeps it (the new button
// with the same label gets it).
function fill(tableId, rows, emptyText, columns) {
  const body = $(tableId).tBodies[0];
  const active = document.activeElement;
  const label = active && body.contains(active) ? active.getAttribute("aria-label") : null;
  const out = rows.length ? rows : [el("tr", { className: "empty" }, el("td", { colspan: columns }, emptyText))];
  body.replaceChildren(...out);
  if (label) {
    const again = [...body.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === label);
    if (again) again.focus();
  }
}

function renderMasters() {
  const rows = state.masters.map((m) => {
    const st = m.active ? m.state || "running" : "stopped";
    const actions = el("td", { className: "actions" });
    if (m.active && st === "running") {
      const b = el("button", { type: "button", className: "danger" }, "Graceful shutdown");
      b.setAttribute("aria-label", `Graceful shutdown of master ${m.name}`);
      b.addEventListener("click", action(b, "Graceful shutdown", async () => {
        if (!confirm(`Stop master ${m.name} gracefully? It claims nothing new, lets its builds finish, then exits.`)) return;
        await rpc(`/masters/${m.masterid}`, "stop", { graceful: true }, `Graceful shutdown of ${m.name}`);
        refresh("masters");
      }));
      actions.append(b);
    } else if (m.active && st === "draining") {
      const b = el("button", { type: "button" }, "Cancel shutdown");
      b.setAttribute("aria-label", `Cancel the shutdown of master ${m.name}`);
      b.addEventListener("click", action(b, "Cancel shutdown", async () => {
        await rpc(`/masters/${m.masterid}`, "cancel_stop", {}, `Cancel shutdown of ${m.name}`);
        refresh("masters");
      }));
      actions.append(b);
    }
    return el("tr", { "data-masterid": m.masterid, "data-state": st },
      el("th", { scope: "row" }, m.name),
      el("td", {}, el("span", { className: `badge s-${st}`, "data-field": "state" }, st)),
      el("td", {}, m.active ? "yes" : "no"),
      el("td", {}, fmtTime(m.last_active)),
      actions);
  });
  fill("masters", rows, "no masters", 5);
}

function renderWorkers() {
  const rows = state.workers.map((w) => {
    const conn = (w.connected_to || []).map((c) => masterName(c.masterid));
    const b = el("button", { type: "button" }, w.paused ? "Unpause" : "Pause");
    b.setAttribute("aria-label", `${w.paused ? "Unpause" : "Pause"} worker ${w.name}`);
    b.addEventListener("click", action(b, w.paused ? "Unpause" : "Pause", async () => {
      await rpc(`/workers/${w.workerid}`, w.paused ? "unpause" : "pause", {},
        `${w.paused ? "Unpause" : "Pause"} worker ${w.name}`);
      refresh("workers");
    }));
    return el("tr", { "data-workerid": w.workerid, "data-paused": w.paused ? "true" : "false" },
      el("th", { scope: "row" }, w.name),
      el("td", {}, conn.length ? conn.join(", ") : el("span", { className: "muted" }, "not connected")),
      el("td", {}, el("span", { className: `badge ${w.paused ? "s-paused" : conn.length ? "s-running" : "s-stopped"}`, "data-field": "state" },
        w.paused ? "paused" : conn.length ? "connected" : "disconnected")),
      el("td", { className: "actions" }, b));
  });
  fill("workers", rows, "no workers configured", 4);
}

function renderBuilders() {
  const rows = state.builders.map((b) => el("tr", { "data-builderid": b.builderid },
    el("th", { scope: "row" }, b.name),
    el("td", {}, (b.masterids || []).map(masterName).join(", ") || el("span", { className: "muted" }, "no live master")),
    el("td", {}, b.description || "")));
  fill("builders", rows, "no builders", 3);
}

// Why an unclaimed request waits: for a worker, or for any live master to run its builder.
function waitingFor(builderid) {
  const b = (state.builders || []).find((x) => x.builderid === builderid);
  if (b && (b.masterids || []).length === 0) {
    return el("span", { className: "muted" }, "waiting: no live master runs this builder");
  }
  return "waiting";
}

function renderQueue() {
  const rows = state.requests.map((r) => {
    const b = el("button", { type: "button" }, "Cancel");
    b.setAttribute("aria-label", `Cancel build request ${r.buildrequestid}`);
    b.addEventListener("click", action(b, "Cancel", async () => {
      await rpc(`/buildrequests/${r.buildrequestid}`, "cancel", { reason: "cancelled from the web UI" },
        `Cancel request ${r.buildrequestid}`);
      refresh("queue", "builds");
    }));
    return el("tr", { "data-buildrequestid": r.buildrequestid },
      el("th", { scope: "row" }, `#${r.buildrequestid}`),
      el("td", {}, builderName(r.builderid)),
      el("td", {}, fmtTime(r.submitted_at)),
      el("td", {}, r.claimed ? `claimed by ${masterName(r.claimed_by_masterid)}` : waitingFor(r.builderid)),
      el("td", { className: "actions" }, r.claimed ? null : b));
  });
  fill("queue", rows, "nothing queued", 5);
}

function stopButton(build, label) {
  const b = el("button", { type: "button", className: "danger" }, label || "Stop");
  b.setAttribute("aria-label", `Stop build ${build.buildid}`);
  b.addEventListener("click", action(b, "Stop", async () => {
    await rpc(`/builds/${build.buildid}`, "stop", { reason: "stopped from the web UI" },
      `Stop build ${builderName(build.builderid)} #${build.number}`);
    refresh("builds");
  }));
  return b;
}

function renderBuilds() {
  const rows = state.builds.map((b) => el("tr", { "data-buildid": b.buildid, "data-complete": b.complete ? "true" : "false" },
    el("th", { scope: "row" }, el("a", { href: `#/builds/${b.buildid}` }, `#${b.number}`)),
    el("td", {}, builderName(b.builderid)),
    el("td", {}, workerName(b.workerid)),
    el("td", { "data-field": "state_string" }, b.state_string || ""),
    el("td", { "data-field": "result" }, resultBadge(b)),
    el("td", {}, fmtTime(b.started_at)),
    el("td", {}, fmtDuration(b.started_at, b.complete_at)),
    el("td", { className: "actions" }, b.complete ? null : stopButton(b))));
  fill("builds", rows, "no builds yet", 8);
}

let forceShown = null;

// The force forms are rebuilt only when the schedulers change, so a choice being made or a
// reason being typed is never wiped by an update.
function renderForce() {
  const box = $("force");
  const shown = JSON.stringify(state.forceschedulers);
  if (shown === forceShown) return;
  forceShown = shown;
  if (!state.forceschedulers.length) {
    box.replaceChildren(el("p", { className: "muted" }, "No force scheduler is configured."));
    return;
  }
  box.replaceChildren(...state.forceschedulers.map((s, i) => {
    const selId = `force-${i}-builder`;
    const reasonId = `force-${i}-reason`;
    const reasonField = (s.all_fields || []).find((f) => f.name === "reason");
    const select = el("select", { id: selId, name: "builder" },
      (s.builder_names || []).map((n) => el("option", { value: n }, n)));
    const reason = el("input", { id: reasonId, name: "reason", type: "text", value: (reasonField && reasonField.default) || "forced from the web UI" });
    const submit = el("button", { type: "submit" }, s.button_name || "Force");
    submit.setAttribute("aria-label", `Force a build with scheduler ${s.name}`);
    const form = el("form", { className: "force", "data-scheduler": s.name },
      el("h3", {}, s.label || s.name),
      el("label", { for: selId }, "Builder"), select,
      el("label", { for: reasonId }, "Reason"), reason,
      submit);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      action(submit, "Force", async () => {
        const result = await rpc(`/forceschedulers/${encodeURIComponent(s.name)}`, "force",
          { builderNames: [select.value], reason: reason.value }, `Force ${select.value}`);
        const ids = result && result[1] ? Object.values(result[1]) : [];
        showMessage(`Forced ${select.value}: build request ${ids.map((x) => `#${x}`).join(", ")} queued.`, "info");
        refresh("queue", "builds");
      })();
    });
    return form;
  }));
}

// ---------- the build detail view ----------

function route() {
  const m = location.hash.match(/^#\/builds\/(\d+)$/);
  if (m) {
    const id = Number(m[1]);
    if (!state.detail || state.detail.id !== id) {
      state.detail = { id, build: null, steps: [], logs: new Map() };
      $("steps").replaceChildren();
      $("build-info").replaceChildren();
      $("build-actions").replaceChildren();
      $("h-build").textContent = `Build ${id}`;
    }
    $("overview").hidden = true;
    $("build").hidden = false;
    refresh("detail");
  } else {
    state.detail = null;
    $("overview").hidden = false;
    $("build").hidden = true;
  }
}

async function loadDetail() {
  const d = state.detail;
  if (!d) return;
  const build = (await getJson(`/builds/${d.id}`)).builds[0];
  const steps = (await getJson(`/builds/${d.id}/steps`)).steps;
  const logsByStep = new Map();
  await Promise.all(steps.map(async (s) => {
    logsByStep.set(s.stepid, (await getJson(`/steps/${s.stepid}/logs`)).logs);
  }));
  if (state.detail !== d) return; // navigated away meanwhile
  d.build = build;
  d.steps = steps;
  renderDetailHeader();
  const list = $("steps");
  for (const s of steps) {
    let li = list.querySelector(`li[data-stepid="${s.stepid}"]`);
    if (!li) {
      li = el("li", { "data-stepid": s.stepid },
        el("div", { className: "step-head" }),
        el("div", { className: "step-logs" }));
      list.append(li);
    }
    li.querySelector(".step-head").replaceChildren(
      el("strong", {}, s.name), " ",
      resultBadge(s, s.started_at ? "running" : "pending"), " ",
      el("span", { "data-field": "state_string" }, s.state_string || ""), " ",
      el("span", { className: "muted" }, fmtDuration(s.started_at, s.complete_at)));
    for (const log of logsByStep.get(s.stepid) || []) {
      let view = d.logs.get(log.logid);
      if (!view) {
        view = newLogView(log);
        d.logs.set(log.logid, view);
        li.querySelector(".step-logs").append(view.box);
        loadLog(view);
      }
      view.complete = log.complete;
    }
  }
}

function renderDetailHeader() {
  const b = state.detail.build;
  $("h-build").replaceChildren(`${builderName(b.builderid)} #${b.number} `, resultBadge(b));
  const info = [
    ["Status", b.state_string || ""],
    ["Worker", workerName(b.workerid)],
    ["Master", b.masterid ? masterName(b.masterid) : ""],
    ["Started", fmtTime(b.started_at)],
    ["Finished", b.complete ? fmtTime(b.complete_at) : "not yet"],
    ["Duration", fmtDuration(b.started_at, b.complete_at)],
    ["Build request", `#${b.buildrequestid}`],
  ];
  $("build-info").replaceChildren(...info.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("build-actions").replaceChildren(b.complete ? "" : stopButton(b, "Stop this build"));
}

function newLogView(log) {
  const pre = el("pre", { className: "log", "data-logid": log.logid, tabindex: "0" });
  pre.setAttribute("aria-label", `log ${log.name}`);
  const box = el("details", { open: "" }, el("summary", {}, `log: ${log.name}`), pre);
  // lines: how many lines the view holds; queued: appends that came while loading.
  return { logid: log.logid, pre, box, lines: 0, loading: true, queued: [], loads: 0, complete: log.complete };
}

// Loads a log whole, then applies the appends that arrived meanwhile (only the latest of
// overlapping loads applies).
async function loadLog(view) {
  const seq = ++view.loads;
  view.loading = true;
  view.queued = [];
  let text;
  try {
    text = await getText(`/logs/${view.logid}/raw`);
  } catch (e) {
    text = "";
    showMessage(`Could not load log ${view.logid}: ${e.message}`);
  }
  if (seq !== view.loads) return;
  view.pre.textContent = "";
  view.lines = 0;
  appendText(view, text);
  view.loading = false;
  const queued = view.queued;
  view.queued = [];
  for (const ev of queued) applyAppend(view, ev);
}

function countLines(text) {
  let n = 0;
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) n++;
  return n;
}

function appendText(view, text) {
  if (!text) return;
  const atBottom = view.pre.scrollHeight - view.pre.scrollTop - view.pre.clientHeight < 40;
  view.pre.append(document.createTextNode(text));
  view.lines += countLines(text);
  if (view.pre.textContent.length > MAX_LOG_CHARS) {
    view.pre.textContent = "[… earlier output cut …]\n" + view.pre.textContent.slice(-MAX_LOG_CHARS / 2);
  }
  if (atBottom) view.pre.scrollTop = view.pre.scrollHeight;
}

// A `logs.<id>.append` event: {first_line, content}. Lines already shown are skipped; a gap
// (an append that never reached this page) reloads the log.
function applyAppend(view, data) {
  if (view.loading) {
    view.queued.push(data);
    return;
  }
  if (data.truncated || typeof data.content !== "string" || typeof data.first_line !== "number") {
    loadLog(view);
    return;
  }
  if (data.first_line > view.lines) {
    loadLog(view);
    return;
  }
  let content = data.content;
  let skip = view.lines - data.first_line;
  while (skip > 0 && content) {
    const nl = content.indexOf("\n");
    content = nl === -1 ? "" : content.slice(nl + 1);
    skip--;
  }
  appendText(view, content);
}

// ---------- live events ----------
//
// The stream names each event by its routing key (`event: builds.7.new`). EventSource only
// delivers named events to listeners of that exact name and has no wildcard, so the page
// reads the stream with fetch and parses it itself (which also lets it send the token as a
// header). It reconnects with a growing delay and reloads everything on each connect.

let streamGeneration = 0;
let streamAbort = null;

function setLive(st, text) {
  $("live").dataset.state = st;
  $("live").textContent = text;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function connectEvents() {
  if (streamAbort) streamAbort.abort();
  const generation = ++streamGeneration;
  const abort = new AbortController();
  streamAbort = abort;
  let delay = 1000;
  while (generation === streamGeneration) {
    try {
      const r = await fetch(`${API}/events`, {
        ...FETCH,
        headers: { Accept: "text/event-stream", ...authHeaders() },
        signal: abort.signal,
      });
      if (!r.ok || !r.body) {
        if (r.status === 401) {
          showMessage("The live event stream needs a token here (401 Unauthorized): enter it in the “API token” field above.");
        }
        throw new Error(`${r.status} ${r.statusText}`);
      }
      setLive("live", "live");
      delay = 1000;
      refreshAll(); // whatever happened while the stream was down
      await readEvents(r.body, onBusEvent, (ms) => { delay = ms; });
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    if (generation !== streamGeneration) return;
    setLive("reconnecting", "reconnecting…");
    await sleep(delay);
    delay = Math.min(delay * 2, 30000);
  }
}

// Parses a text/event-stream body, calling onEvent(name, data) per event.
async function readEvents(body, onEvent, onRetry) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl;
    while ((nl = buffer.indexOf("\n")) !== -1) {
      let line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) onEvent(name || "message", data.join("\n"));
        name = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let val = colon === -1 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") name = val;
      else if (field === "data") data.push(val);
      else if (field === "retry" && /^\d+$/.test(val)) onRetry(Number(val));
    }
  }
}

function onBusEvent(key, raw) {
  if (key === "resync") {
    refreshAll(); // the stream fell behind: events were skipped
    return;
  }
  let data = null;
  try {
    data = JSON.parse(raw);
  } catch (e) { /* keep null */ }
  const p = key.split(".");
  const d = state.detail;
  switch (p[0]) {
    case "masters":
      refresh("masters", "builders");
      break;
    case "workers":
      if (p[2] !== "builds") refresh("workers");
      break;
    case "buildrequests":
      refresh("queue");
      break;
    case "builds":
      if (p.length === 3) {
        refresh("builds", "queue");
        if (d && d.id === Number(p[1])) refresh("detail");
      } else if (p[2] === "steps" && d && d.id === Number(p[1])) {
        refresh("detail");
      }
      break;
    case "logs":
      if (d && data) {
        const view = d.logs.get(Number(p[1]));
        if (view && p[2] === "append") applyAppend(view, data);
        else if (p[2] === "finished" && d.steps.some((s) => s.stepid === data.stepid)) {
          refresh("detail");
        } else if (p[2] === "new" && d.build && !d.build.complete) {
          // Possibly a step of this build that the page has not loaded yet.
          refresh("detail");
        }
      }
      break;
    default:
      break; // builders.*, buildsets.*, steps.*, changes.*: covered by the keys above
  }
}

// ---------- start ----------

function start() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) {
      showMessage("Enter a token first.");
      return;
    }
    try {
      localStorage.setItem(TOKEN_KEY, t);
    } catch (e) {
      showMessage("This browser does not let the page store the token.");
    }
    showTokenState();
    hideMessage();
    connectEvents();
    refreshAll();
  });
  $("token-forget").addEventListener("click", () => {
    try {
      localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* nothing stored */ }
    showTokenState();
    connectEvents();
  });
  $("message-close").addEventListener("click", hideMessage);
  window.addEventListener("hashchange", route);
  showTokenState();
  route();
  connectEvents();
  refreshAll();
  if (FALLBACK_POLL_MS > 0) setInterval(refreshAll, FALLBACK_POLL_MS);
  // Running builds' durations tick without a fetch.
  setInterval(() => {
    if (state.builds.some((b) => !b.complete)) renderBuilds();
  }, 5000);
}

start();
