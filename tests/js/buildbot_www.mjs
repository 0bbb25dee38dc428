// Drives Buildbot's own web UI (buildbot-www 4.3, installed from PyPI, served by switchyard
// at /buildbot/) in a real browser (Debian's Chromium through playwright-core), as a
// Buildbot user would: pages load and none stays on "Loading...", an anonymous visitor
// is refused Force and Rebuild, a configured user logs in through the UI's Login link, then
// forces a build and watches it run and succeed live, reads its live log, rebuilds it and
// stops a long build. Screenshots go to --shots.
//
//   node buildbot_www.mjs --url http://127.0.0.1:8080 --user NAME --password PW \
//        --token TOKEN --shots DIR [--chromium /usr/bin/chromium] [--master NAME]
//        [--worker NAME]
//
// The node needs builders `ui-demo` (prints `ui-build-marker`, sleeps 5 s, prints `done`)
// and `long` (runs a minute), one force scheduler `force` offering both, one worker with
// max_builds = 1, and the user in [master.api] users. Prints `PASS step` / `FAIL step: why`
// and ends with `N passed, M failed`; exits 1 on a failure.

import { parseArgs } from "node:util";
import { join } from "node:path";
import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    user: { type: "string" },
    password: { type: "string" },
    token: { type: "string" },
    shots: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    master: { type: "string", default: "bb-1" },
    worker: { type: "string", default: "w1" },
  },
});
for (const k of ["url", "user", "password", "token", "shots"]) {
  if (!opts[k]) {
    console.error(`--${k} is required`);
    process.exit(2);
  }
}

const STEP_MS = 30000;
const base = opts.url.replace(/\/$/, "");
const ui = `${base}/buildbot/`;
let passed = 0;
let failed = 0;
const errors = [];

const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const viewport = { width: 1280, height: 900 };

// Every page's errors are collected. Allowed, because a Buildbot 4.3 master's UI shows them
// too: the browser's log line for a refused action (403), and the TypeError 4.3's build
// page throws on any refused Rebuild/Stop (its handler reads `reason.error.message` of an
// axios error, which has no `error`).
function watch(page, who) {
  page.on("pageerror", (e) => {
    if (!/Cannot read properties of undefined \(reading 'message'\)/.test(e.message)) {
      errors.push(`${who}: page error: ${e.message}`);
    }
  });
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 403/.test(m.text())) {
      errors.push(`${who}: console error: ${m.text()}`);
    }
  });
  return page;
}

let current = null;
async function step(name, run) {
  try {
    await run();
    console.log(`PASS ${name}`);
    passed++;
  } catch (e) {
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    failed++;
    try {
      if (current) await current.screenshot({ path: join(opts.shots, `failure-${passed + failed}.png`) });
    } catch (_) { /* the page may be gone */ }
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

// The REST API, read directly (reads are public on the test node).
async function api(path) {
  const r = await fetch(`${base}/api/v2/${path}`);
  check(r.ok, `GET ${path}: ${r.status}`);
  return r.json();
}

async function rpc(path, method, params = {}) {
  const r = await fetch(`${base}/api/v2/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${opts.token}` },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const body = await r.json();
  check(r.ok, `POST ${path} ${method}: ${r.status} ${JSON.stringify(body)}`);
  return body.result;
}

async function waitFor(what, fn, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Opens a UI route and waits until the page has rendered `expect` and nothing says
// "Loading..." any more.
async function open(page, route, expect) {
  await page.goto(`${ui}#${route}`);
  await page.getByText(expect).first().waitFor({ timeout: STEP_MS });
  await waitFor(`${route} to finish loading`, async () =>
    !(await page.locator("body").innerText()).includes("Loading"), 15000);
}

async function shot(page, name) {
  await page.screenshot({ path: join(opts.shots, `${name}.png`) });
}

const anonContext = await browser.newContext({ viewport });
const anon = watch(await anonContext.newPage(), "anonymous");
current = anon;
let builderId = {};

await step("GET / redirects to Buildbot's UI, which mounts with switchyard's config", async () => {
  const r = await anon.goto(`${base}/`);
  check(r && r.ok(), `status ${r && r.status()}`);
  check(new URL(anon.url()).pathname === "/buildbot/", `landed on ${anon.url()}`);
  await anon.getByText("Welcome to buildbot").waitFor();
  const b = await api("builders");
  for (const x of b.builders) builderId[x.name] = x.builderid;
  check(builderId["ui-demo"] && builderId["long"], `builders ${JSON.stringify(b)}`);
});

await step("an anonymous visitor gets the force dialog but the build is refused", async () => {
  await open(anon, `/builders/${builderId["ui-demo"]}`, "ui-demo");
  await anon.getByRole("button", { name: "force" }).click();
  const dialog = anon.locator(".modal-dialog");
  await dialog.getByText("Start build").waitFor();
  await dialog.getByRole("button", { name: "Start build" }).click();
  await dialog.getByText("authentication required").waitFor();
  await shot(anon, "anonymous-force-refused");
  const requests = await api("buildrequests");
  check(requests.meta.total === 0, `a request was made: ${JSON.stringify(requests)}`);
  await dialog.getByRole("button", { name: "Cancel" }).click();
});

const userContext = await browser.newContext({
  viewport,
  httpCredentials: { username: opts.user, password: opts.password },
});
const login = watch(await userContext.newPage(), "login");
current = login;
let cookies = [];

await step("the UI's Login link logs the user in with a session cookie", async () => {
  await open(login, `/builders/${builderId["ui-demo"]}`, "ui-demo");
  await login.locator("#bb-loginbar-dropdown").click();
  await login.getByText("Login").click();
  await login.locator("#bb-loginbar-dropdown", { hasText: opts.user }).waitFor();
  check(new URL(login.url()).hash === `#/builders/${builderId["ui-demo"]}`, `back at ${login.url()}`);
  cookies = await userContext.cookies();
  const c = cookies.find((c) => c.name === "switchyard_session");
  check(c, `no session cookie: ${JSON.stringify(cookies)}`);
  check(c.httpOnly && c.sameSite === "Strict" && c.expires > Date.now() / 1000, JSON.stringify(c));
});

// From here on, the session cookie alone: a context without the password.
const sessionContext = await browser.newContext({ viewport });
await sessionContext.addCookies(cookies);
const page = watch(await sessionContext.newPage(), "user");
current = page;
let build = null;

await step("Force opens the dialog; the build runs and succeeds live, without reload", async () => {
  await open(page, `/builders/${builderId["ui-demo"]}`, "ui-demo");
  await page.locator("#bb-loginbar-dropdown", { hasText: opts.user }).waitFor();
  await page.evaluate(() => { window.__notReloaded = true; });
  await page.getByRole("button", { name: "force" }).click();
  const dialog = page.locator(".modal-dialog");
  await dialog.getByText("reason").first().waitFor();
  await shot(page, "force-dialog");
  await dialog.getByRole("button", { name: "Start build" }).click();
  await page.waitForURL(/#\/builders\/\d+\/builds\/\d+$/, { timeout: STEP_MS });
  await page.getByText("running").first().waitFor();
  await shot(page, "running");
  build = (await api(`builders/${builderId["ui-demo"]}/builds?order=-number&limit=1`)).builds[0];
  check(build && build.complete === false, `the build is not running: ${JSON.stringify(build)}`);
  await page.getByText("SUCCESS").first().waitFor();
  check(await page.evaluate(() => window.__notReloaded === true), "the page was reloaded");
  await shot(page, "success");
});

await step("the log viewer shows the log's lines as they come", async () => {
  // A second build, watched from its log page while it runs.
  const res = await rpc("forceschedulers/force", "force", { builderNames: ["ui-demo"] });
  check(res, "force via REST");
  const b = await waitFor("the second build to start", async () => {
    const bs = (await api(`builders/${builderId["ui-demo"]}/builds?order=-number&limit=1`)).builds;
    return bs[0] && bs[0].number > build.number ? bs[0] : null;
  });
  const logPage = watch(await sessionContext.newPage(), "log");
  current = logPage;
  await logPage.goto(`${ui}#/builders/${builderId["ui-demo"]}/builds/${b.number}/steps/0/logs/stdio`);
  await logPage.getByText("ui-build-marker").first().waitFor();
  const first = await logPage.locator("body").innerText();
  check(!first.includes("\ndone"), "the whole log was there at once: not live");
  await logPage.evaluate(() => { window.__notReloaded = true; });
  await logPage.getByText(/^done$/).first().waitFor();
  check(await logPage.evaluate(() => window.__notReloaded === true), "the log page was reloaded");
  await shot(logPage, "log");
  await waitFor("the second build to finish", async () =>
    (await api(`builds/${b.buildid}`)).builds[0].complete);
  current = page;
});

await step("Rebuild (logged in) starts a new build of the same builder", async () => {
  const before = (await api("builds")).meta.total;
  await open(page, `/builders/${builderId["ui-demo"]}/builds/${build.number}`, "SUCCESS");
  await page.getByRole("button", { name: "Rebuild" }).click();
  const rebuilt = await waitFor("the rebuild to start", async () => {
    const all = await api("builds?order=-buildid&limit=1");
    return all.meta.total > before ? all.builds[0] : null;
  });
  check(rebuilt.builderid === builderId["ui-demo"], JSON.stringify(rebuilt));
  // Buildbot's link from a build to its rebuild: the rebuild's buildset names the build.
  const sets = await api(`buildsets?rebuilt_buildid=${build.buildid}`);
  check(sets.meta.total === 1 && sets.buildsets[0].rebuilt_buildid === build.buildid,
    `buildsets?rebuilt_buildid=${build.buildid}: ${JSON.stringify(sets)}`);
  await waitFor("the rebuild to finish", async () =>
    (await api(`builds/${rebuilt.buildid}`)).builds[0].complete);
});

await step("an anonymous visitor's Rebuild and Stop are refused", async () => {
  current = anon;
  const before = (await api("buildsets")).meta.total;
  await open(anon, `/builders/${builderId["ui-demo"]}/builds/${build.number}`, "SUCCESS");
  await anon.getByRole("button", { name: "Rebuild" }).click();
  await anon.waitForTimeout(1500);
  const after = (await api("buildsets")).meta.total;
  check(after === before, `an anonymous rebuild was accepted (${before} → ${after} buildsets)`);
  // A long build, started with the token, which the anonymous visitor tries to stop.
  await rpc("forceschedulers/force", "force", { builderNames: ["long"] });
  const long = await waitFor("the long build to start", async () =>
    (await api(`builders/${builderId["long"]}/builds`)).builds[0]);
  await open(anon, `/builders/${builderId["long"]}/builds/${long.number}`, "running");
  await anon.getByRole("button", { name: "Stop" }).click();
  await anon.waitForTimeout(1500);
  check(!(await api(`builds/${long.buildid}`)).builds[0].complete, "an anonymous stop was accepted");
  await shot(anon, "anonymous-stop-refused");
  current = page;
  // The user stops it.
  await open(page, `/builders/${builderId["long"]}/builds/${long.number}`, "running");
  await page.getByRole("button", { name: "Stop" }).click();
  await page.getByText("CANCELLED").first().waitFor();
  const stopped = (await api(`builds/${long.buildid}`)).builds[0];
  check(stopped.results === 6, `the long build ended ${JSON.stringify(stopped)}`);
  await shot(page, "stopped");
});

await step("home lists the recent builds", async () => {
  await open(page, "/", "Welcome to buildbot");
  await page.getByText(/[1-9]\d* recent builds/).waitFor();
  await page.getByText(`ui-demo/${build.number}`).first().waitFor();
  await shot(page, "home");
});

await step("the builders list shows each builder with its build counts", async () => {
  await open(page, "/builders", "Builder Name");
  const row = page.locator("tr", { hasText: "ui-demo" });
  await row.waitFor();
  const t = await row.innerText();
  check(/\(\d+\)/.test(t), `no build counts in ${t}`);
  await shot(page, "builders");
});

await step("the workers and masters pages list them", async () => {
  await open(page, "/workers", opts.worker);
  await shot(page, "workers");
  await open(page, "/masters", opts.master);
  await shot(page, "masters");
});

await step("the changes, schedulers, worker and about pages load", async () => {
  await open(page, "/changes", /^\d+ changes?$/);
  await open(page, "/schedulers", "force");
  const w = (await api("workers")).workers[0];
  await open(page, `/workers/${w.workerid}`, opts.worker);
  await open(page, "/about", "switchyard version");
});

await step("the schedulers page shows each scheduler's master; its checkbox disables and enables it", async () => {
  await open(page, "/schedulers", "on-change");
  const row = page.locator("tr", { hasText: "on-change" });
  await row.getByText(opts.master).waitFor();
  const box = row.locator("input[type=checkbox]");
  check(await box.isChecked(), "on-change starts disabled");
  const id = (await api("schedulers")).schedulers.find((s) => s.name === "on-change").schedulerid;
  const enabled = async () => (await api(`schedulers/${id}`)).schedulers[0].enabled;
  await box.click();
  await waitFor("on-change to be disabled in the API", async () => !(await enabled()));
  await waitFor("the checkbox to clear", async () => !(await box.isChecked()));
  await shot(page, "scheduler-disabled");
  await box.click();
  await waitFor("on-change to be enabled again", async () => enabled());
  await waitFor("the checkbox to be set", async () => box.isChecked());
  // The page stays mounted and live (a scheduler event once blanked it).
  await page.waitForTimeout(3000);
  await row.getByText(opts.master).waitFor({ timeout: 5000 });
});

await step("no error in the browser beyond what Buildbot 4.3's UI shows", async () => {
  check(errors.length === 0, errors.join("\n"));
});

await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
