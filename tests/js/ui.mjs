// Drives switchyard's web UI in a real browser (Debian's Chromium through playwright-core)
// against a running `ui` node with a connected worker, as a person would: open the page,
// enter the token, force a build and watch it run and succeed live, read its live log,
// pause and unpause the worker, cancel a queued request, start and cancel a graceful
// shutdown of the master, stop a running build. Screenshots go to --shots.
//
//   node ui.mjs --url http://127.0.0.1:8080 --token TOKEN --shots DIR \
//        [--chromium /usr/bin/chromium] [--master NAME] [--worker NAME]
//
// The node needs builders `ui-demo` (a short shell step printing `ui-build-marker` and,
// seconds later, `done`) and `long` (a step that runs for a minute), one force scheduler
// offering both, and one worker with max_builds = 1. Prints `PASS step` / `FAIL step: why`
// and ends with `N passed, M failed`; exits 1 on a failure.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    shots: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    master: { type: "string", default: "ui-1" },
    worker: { type: "string", default: "w1" },
  },
});
for (const k of ["url", "token", "shots"]) {
  if (!opts[k]) {
    console.error(`--${k} is required`);
    process.exit(2);
  }
}

const WIDTH = 1280;
const HEIGHT = 900;
// Every wait is bounded.
const STEP_MS = 30000;

let passed = 0;
let failed = 0;
const pageErrors = [];

const userDataDir = mkdtempSync(join(tmpdir(), "switchyard-ui-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: opts.chromium,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: WIDTH, height: HEIGHT },
  deviceScaleFactor: 1,
  timeout: 60000,
});
context.setDefaultTimeout(STEP_MS);
const page = context.pages()[0] || (await context.newPage());
page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
page.on("console", (m) => {
  // The refused calls of the wrong-token step log their 401s; nothing else may fail.
  if (m.type() === "error" && !/status of 401/.test(m.text())) {
    pageErrors.push(`console error: ${m.text()}`);
  }
});
// The confirmation before a graceful shutdown.
page.on("dialog", (d) => d.accept());

async function step(name, run) {
  try {
    await run();
    console.log(`PASS ${name}`);
    passed++;
    return true;
  } catch (e) {
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    failed++;
    try {
      await page.screenshot({ path: join(opts.shots, `failure-${passed + failed}.png`) });
    } catch (_) { /* the page may be gone */ }
    return false;
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function shot(name) {
  await page.screenshot({ path: join(opts.shots, `${name}.png`) });
}

// Waits (bounded) until fn() in the page returns a truthy value; returns it.
async function until(what, fn, arg, timeout = STEP_MS) {
  try {
    const h = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    return await h.jsonValue();
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message.split("\n")[0]}`);
  }
}

const text = (sel) => page.locator(sel).first().innerText();
const buildRows = (builder) => page.locator("#builds tbody tr").filter({
  has: page.locator("td:nth-child(2)", { hasText: new RegExp(`^${builder}$`) }),
});

const base = opts.url.replace(/\/$/, "");
let abort = false;

await step("GET / redirects a browser to the page", async () => {
  const r = await page.goto(`${base}/`);
  check(r && r.ok(), `status ${r && r.status()}`);
  check(new URL(page.url()).pathname === "/ui/", `landed on ${page.url()}`);
  check((await page.title()) === "switchyard", `title ${await page.title()}`);
});

await step("the page loads and its event stream goes live (fallback poll off)", async () => {
  // ?poll=0: no fallback reload, so every later update must come from the event stream.
  await page.goto(`${base}/ui/?poll=0`);
  await page.locator("#live[data-state=live]").waitFor();
  // A marker a reload would wipe out.
  await page.evaluate(() => { window.__notReloaded = true; });
});

await step("masters, workers and builders are shown", async () => {
  const master = page.locator("#masters tbody tr").filter({ hasText: opts.master });
  await master.waitFor();
  check((await master.locator("[data-field=state]").innerText()) === "running", "master state running");
  const worker = page.locator("#workers tbody tr").filter({ hasText: opts.worker });
  await worker.waitFor();
  // connected_to is shown by master name.
  await until("the worker shown connected to the master", ([w, m]) => {
    const row = [...document.querySelectorAll("#workers tbody tr")].find((r) => r.querySelector("th").textContent === w);
    return row && row.children[1].textContent === m;
  }, [opts.worker, opts.master]);
  for (const b of ["ui-demo", "long"]) {
    await page.locator("#builders tbody th", { hasText: b }).waitFor();
  }
  check(await page.locator("#force select option[value=ui-demo]").count() === 1, "force offers ui-demo");
  await shot("overview");
});

await step("a wrong token is refused with a clear 401 message", async () => {
  await page.fill("#token", "not-the-token");
  await page.click("#token-save");
  await page.locator("#token-state", { hasText: "token saved" }).waitFor();
  const row = page.locator("#workers tbody tr").filter({ hasText: opts.worker });
  await row.getByRole("button", { name: `Pause worker ${opts.worker}` }).click();
  await page.locator("#message:not([hidden])").waitFor();
  const msg = await text("#message-text");
  check(/401 Unauthorized/.test(msg) && /API token/.test(msg), `message: ${msg}`);
  check(await row.getAttribute("data-paused") === "false", "the worker was not paused");
  await shot("unauthorized");
});

await step("the right token is saved", async () => {
  await page.fill("#token", opts.token);
  await page.click("#token-save");
  await page.locator("#token-state", { hasText: "token saved" }).waitFor();
  await page.locator("#message").waitFor({ state: "hidden" });
  await page.locator("#live[data-state=live]").waitFor();
});

let buildId = null;
if (!await step("force ui-demo: the build shows up running, live", async () => {
  const before = await buildRows("ui-demo").count();
  await page.selectOption("#force select", "ui-demo");
  await page.fill("#force input[name=reason]", "forced by the browser test");
  await page.getByRole("button", { name: "Force a build with scheduler force" }).click();
  await page.locator("#message[data-kind=info]", { hasText: "Forced ui-demo" }).waitFor();
  buildId = await until("a running ui-demo build", ([n]) => {
    const rows = [...document.querySelectorAll("#builds tbody tr[data-buildid]")]
      .filter((r) => r.children[1].textContent === "ui-demo");
    if (rows.length <= n) return null;
    const r = rows[0];
    return r.dataset.complete === "false" && r.querySelector("[data-field=result]").textContent === "running"
      ? Number(r.dataset.buildid) : null;
  }, [before]);
  await shot("running");
})) abort = true;

if (!abort) await step("the build's page shows its live log", async () => {
  const t0 = Date.now();
  await page.click(`#builds tr[data-buildid="${buildId}"] a`);
  await page.locator("#build:not([hidden])").waitFor();
  const log = page.locator("pre.log").first();
  await log.waitFor();
  await until("ui-build-marker in the log", () => {
    const pre = document.querySelector("pre.log");
    return pre && pre.textContent.includes("ui-build-marker");
  });
  // The step prints `done` seconds after the marker: it must arrive as a live append.
  const sawLiveAppend = !/^done$/m.test(await log.innerText());
  check(sawLiveAppend, `'done' already in the log ${Date.now() - t0} ms after opening the build`);
  await until("'done' in the log (appended live)", () => {
    const pre = document.querySelector("pre.log");
    return pre && /^done$/m.test(pre.textContent);
  });
  await until("the build SUCCESS in its header", () =>
    document.querySelector("#h-build .badge")?.textContent === "SUCCESS");
  const steps = await page.locator("#steps li").count();
  check(steps === 1, `${steps} steps shown`);
  check((await text("#steps li .badge")) === "SUCCESS", "the step's result");
  await shot("build-log");
});

if (!abort) await step("back on the list, the build is SUCCESS in Buildbot's green, without a reload", async () => {
  await page.click("a[href='#/']");
  const row = page.locator(`#builds tr[data-buildid="${buildId}"]`);
  await row.waitFor();
  await until("SUCCESS in the builds table", (id) =>
    document.querySelector(`#builds tr[data-buildid="${id}"] [data-field=result]`)?.textContent === "SUCCESS", buildId);
  const bg = await row.locator("[data-field=result] .badge").evaluate((e) => getComputedStyle(e).backgroundColor);
  check(bg === "rgb(136, 221, 68)", `SUCCESS colour ${bg}`);
  check(await page.evaluate(() => window.__notReloaded === true), "the page was reloaded");
  await shot("success");
});

await step("pause and unpause the worker", async () => {
  const row = page.locator("#workers tbody tr").filter({ hasText: opts.worker });
  await row.getByRole("button", { name: `Pause worker ${opts.worker}` }).click();
  await until("the worker paused", (w) => {
    const r = [...document.querySelectorAll("#workers tbody tr")].find((x) => x.querySelector("th").textContent === w);
    return r && r.dataset.paused === "true" && r.querySelector("[data-field=state]").textContent === "paused";
  }, opts.worker);
  await shot("worker-paused");
  await row.getByRole("button", { name: `Unpause worker ${opts.worker}` }).click();
  await until("the worker unpaused", (w) => {
    const r = [...document.querySelectorAll("#workers tbody tr")].find((x) => x.querySelector("th").textContent === w);
    return r && r.dataset.paused === "false";
  }, opts.worker);
});

let longId = null;
if (!abort) await step("a long build runs; a second request waits in the queue and is cancelled", async () => {
  await page.selectOption("#force select", "long");
  const force = page.getByRole("button", { name: "Force a build with scheduler force" });
  await force.click();
  longId = await until("the long build running", () => {
    const r = [...document.querySelectorAll("#builds tbody tr[data-buildid]")]
      .find((x) => x.children[1].textContent === "long" && x.dataset.complete === "false");
    return r ? Number(r.dataset.buildid) : null;
  });
  await force.click();
  // max_builds = 1: the second request waits unclaimed.
  const queued = await until("a waiting request in the queue", () => {
    const r = [...document.querySelectorAll("#queue tbody tr[data-buildrequestid]")]
      .find((x) => x.children[1].textContent === "long" && x.children[3].textContent === "waiting");
    return r ? Number(r.dataset.buildrequestid) : null;
  });
  await shot("queue");
  await page.getByRole("button", { name: `Cancel build request ${queued}` }).click();
  await until("the request gone from the queue", (id) =>
    !document.querySelector(`#queue tr[data-buildrequestid="${id}"]`), queued);
  // A builder no live master runs: its request waits, and the queue says why.
  await page.selectOption("#force select", "orphan");
  await force.click();
  const orphan = await until("the orphan request shown as unserved", () => {
    const r = [...document.querySelectorAll("#queue tbody tr[data-buildrequestid]")]
      .find((x) => x.children[1].textContent === "orphan"
        && x.children[3].textContent === "waiting: no live master runs this builder");
    return r ? Number(r.dataset.buildrequestid) : null;
  });
  await page.getByRole("button", { name: `Cancel build request ${orphan}` }).click();
  await until("the orphan request gone from the queue", (id) =>
    !document.querySelector(`#queue tr[data-buildrequestid="${id}"]`), orphan);
});

if (!abort) await step("graceful shutdown of the master shows draining, cancelling it shows running", async () => {
  const row = page.locator("#masters tbody tr").filter({ hasText: opts.master });
  await row.getByRole("button", { name: `Graceful shutdown of master ${opts.master}` }).click();
  await until("the master draining", (m) => {
    const r = [...document.querySelectorAll("#masters tbody tr")].find((x) => x.querySelector("th").textContent === m);
    return r && r.querySelector("[data-field=state]").textContent === "draining";
  }, opts.master);
  await shot("draining");
  await row.getByRole("button", { name: `Cancel the shutdown of master ${opts.master}` }).click();
  await until("the master running again", (m) => {
    const r = [...document.querySelectorAll("#masters tbody tr")].find((x) => x.querySelector("th").textContent === m);
    return r && r.querySelector("[data-field=state]").textContent === "running";
  }, opts.master);
});

if (!abort) await step("stop the running long build", async () => {
  await page.getByRole("button", { name: `Stop build ${longId}` }).click();
  await until("the long build CANCELLED", (id) =>
    document.querySelector(`#builds tr[data-buildid="${id}"] [data-field=result]`)?.textContent === "CANCELLED", longId);
  check(await page.evaluate(() => window.__notReloaded === true), "the page was reloaded");
  await shot("final");
});

await step("no script errors in the page", async () => {
  check(pageErrors.length === 0, pageErrors.join("\n"));
});

await context.close();
rmSync(userDataDir, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
