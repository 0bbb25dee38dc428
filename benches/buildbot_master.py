#!/usr/bin/env python3
"""The `bench master` workload against Buildbot 4.3 (installed from PyPI), for
benches/compare_master.sh: one builder with a `true` shell step, N real buildbot-worker
processes (max_builds 1), M builds forced at once through the REST API, every buildset
watched until complete. Prints one JSON line with the keys `switchyard bench master --json`
uses (latencies are observed by polling the API every 100 ms; Buildbot's times are whole
seconds, so there is no submit-to-start figure).

  buildbot_master.py --venv .venv-interop --workers 10 --builds 200 --db sqlite
  buildbot_master.py ... --db postgresql://postgres@127.0.0.1:5432/bb --masters 2 \
      --router ws://127.0.0.1:18300/ws

Every process started here is stopped on exit; everything binds 127.0.0.1.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

MASTER_CFG = """
from buildbot.plugins import worker, util, steps, schedulers
c = BuildmasterConfig = {{}}
names = ["bb-%d" % i for i in range({workers})]
c['workers'] = [worker.Worker(n, "pw", max_builds=1) for n in names]
c['protocols'] = {{'pb': {{'port': 'tcp:{pb}:interface=127.0.0.1'}}}}
f = util.BuildFactory([steps.ShellCommand(command=['true'])])
c['builders'] = [util.BuilderConfig(name='bench', workernames=names, factory=f)]
c['schedulers'] = [schedulers.ForceScheduler(name='force', builderNames=['bench'])]
c['www'] = {{'port': 'tcp:{www}:interface=127.0.0.1', 'plugins': {{}}}}
c['db'] = {{'db_url': {db!r}}}
c['buildbotURL'] = 'http://127.0.0.1:{www}/'
c['buildbotNetUsageData'] = None
c['title'] = 'bench'
{extra}
"""


def http(url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: HTTP {e.code}: {e.read()[:500]!r}") from None


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--venv", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--builds", type=int, default=200)
    p.add_argument("--db", default="sqlite")
    p.add_argument("--masters", type=int, default=1)
    p.add_argument("--router", default="")
    p.add_argument("--label", default="")
    p.add_argument("--timeout", type=float, default=600)
    a = p.parse_args()
    bb = os.path.join(a.venv, "bin", "buildbot")
    bbw = os.path.join(a.venv, "bin", "buildbot-worker")
    os.makedirs(a.work, exist_ok=True)
    started = []  # (kind, dir)
    try:
        apis, pids = [], []
        for m in range(a.masters):
            d = os.path.join(a.work, f"bbmaster{m}")
            db = a.db if a.db != "sqlite" else "sqlite:///" + os.path.join(d, "state.sqlite")
            extra = ""
            if a.masters > 1:
                extra = ("c['multiMaster'] = True\n"
                         f"c['mq'] = {{'type': 'wamp', 'router_url': {a.router!r}, "
                         "'realm': 'buildbot', 'wamp_debug_level': 'error'}")
            pb, www = 27400 + m, 27410 + m
            subprocess.run([bb, "create-master", "-q", "--db", db, d], check=True,
                           stdout=subprocess.DEVNULL)
            with open(os.path.join(d, "master.cfg"), "w") as f:
                f.write(MASTER_CFG.format(workers=a.workers, pb=pb, www=www, db=db, extra=extra))
            if subprocess.run([bb, "start", "--start_timeout=180", d],
                              stdout=subprocess.DEVNULL).returncode != 0:
                # Say why: the master's own log has the traceback.
                with open(os.path.join(d, "twistd.log"), errors="replace") as f:
                    tail = f.read()[-3000:]
                sys.exit(f"Buildbot master {m} did not start; the end of its twistd.log:\n{tail}")
            started.append(("master", d))
            with open(os.path.join(d, "twistd.pid")) as f:
                pids.append(int(f.read().strip()))
            apis.append(f"http://127.0.0.1:{www}/api/v2")
        for i in range(a.workers):
            d = os.path.join(a.work, f"bbworker{i}")
            pb = 27400 + i % a.masters
            subprocess.run([bbw, "create-worker", "-q", d, f"127.0.0.1:{pb}", f"bb-{i}", "pw"],
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.Popen([bbw, "start", d], stdout=subprocess.DEVNULL).wait()
            started.append(("worker", d))
        deadline = time.time() + 120
        while True:
            ws = http(apis[0] + "/workers")["workers"]
            if sum(1 for w in ws if w["connected_to"]) >= a.workers:
                break
            if time.time() > deadline:
                sys.exit(f"only {sum(1 for w in ws if w['connected_to'])} workers connected")
            time.sleep(0.5)
        time.sleep(2)
        cpu0 = cpu_seconds(pids)
        submitted, errors = {}, 0
        t0 = time.time()
        for i in range(a.builds):
            body = {"jsonrpc": "2.0", "id": i, "method": "force",
                    "params": {"builderNames": ["bench"], "reason": "bench"}}
            at = time.time()
            try:
                r = http(apis[i % len(apis)] + "/forceschedulers/force", body)
                submitted[r["result"][0]] = at
            except Exception as e:  # noqa: BLE001 - counted as a failure
                print(f"force failed: {e}", file=sys.stderr)
                errors += 1
        done, peak = {}, 0.0
        deadline = time.time() + a.timeout
        while len(done) < len(submitted) and time.time() < deadline:
            rows = http(apis[0] + "/buildsets?complete=true&field=bsid&field=results&field=complete"
                        "&limit=100000")["buildsets"]
            now = time.time()
            for r in rows:
                if r["bsid"] in submitted and r["bsid"] not in done:
                    done[r["bsid"]] = (now, r["results"])
            peak = max(peak, rss_mib(pids))
            time.sleep(0.1)
        cpu = cpu_seconds(pids) - cpu0
        last = max((t for t, _ in done.values()), default=t0)
        builds = http(apis[0] + "/builds?field=buildrequestid&limit=1000000")["builds"]
        per_request = {}
        for b in builds:
            per_request[b["buildrequestid"]] = per_request.get(b["buildrequestid"], 0) + 1
        lat = sorted((done[b][0] - submitted[b]) * 1000 for b in done)
        q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] if lat else 0.0
        print(json.dumps({
            "scenario": "master", "label": a.label, "workers": a.workers, "builds": a.builds,
            "completed": len(done), "builds_per_s": len(done) / max(last - t0, 1e-9),
            "failures": errors + sum(1 for _, r in done.values() if r != 0),
            "duplicates": sum(n - 1 for n in per_request.values() if n > 1),
            "duplicate_completions": 0, "missing": len(submitted) - len(done),
            "submit_to_start_ms": {"samples": 0, "p50": 0, "p99": 0, "max": 0},
            "submit_to_complete_ms": {"samples": len(lat), "p50": statistics.median(lat) if lat else 0,
                                      "p99": q(0.99), "max": lat[-1] if lat else 0},
            "master_cpu_s": cpu, "master_cpu_ms_per_build": cpu * 1000 / max(len(done), 1),
            "master_rss_peak_mib": peak,
        }))
    finally:
        for kind, d in reversed(started):
            tool = bbw if kind == "worker" else bb
            subprocess.run([tool, "stop", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60)


if __name__ == "__main__":
    main()
