#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the JSON lines `switchyard bench --json` wrote during
benches/compare.sh. Standard library only.

usage: render_benchmarks.py RESULTS.jsonl OUT.md --duration S --crossbar V --switchyard V --command CMD
       render_benchmarks.py --master-only BENCHMARKS.md
         (puts benches/master.md in place of BENCHMARKS.md's build master section, leaving
         the router's sections as they were rendered)
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}"


def key(r):
    """What makes two runs the same scenario, whatever router they measured."""
    if r.get("scenario") == "pubsub":
        return ("pubsub", r["publishers"], r["subscribers"], r["size"],
                "any" if r["serializer"] == "raw" else r["serializer"], r["transport"],
                r.get("rate"), r.get("stalled", 0))
    if r.get("scenario") == "rpc":
        return ("rpc", r["callers"], r["callees"], r["inflight"], r["size"], r["serializer"], r["transport"])
    return (r.get("scenario"),)


def fmt(n):
    if n is None:
        return "—"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e4:
        return f"{n / 1e3:.0f} k"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return f"{n:.0f}"


def ratio(a, b):
    if not a or not b:
        return "—"
    return f"{a / b:.1f}×" if a / b >= 10 else f"{a / b:.2f}×"


MASTER_HEADING = "## Build master"


def master_only(path):
    """Replaces the build master's section (from its heading to the end) with master.md."""
    master = os.path.join(os.path.dirname(os.path.abspath(__file__)), "master.md")
    text = open(path).read()
    cut = text.find("\n" + MASTER_HEADING)
    head = text if cut < 0 else text[:cut + 1]
    open(path, "w").write(head.rstrip("\n") + "\n\n" + open(master).read().rstrip() + "\n\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--master-only":
        master_only(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--duration", required=True)
    ap.add_argument("--runs", default="1")
    ap.add_argument("--crossbar", default="?")
    ap.add_argument("--switchyard", default="?")
    ap.add_argument("--command", required=True)
    a = ap.parse_args()

    runs = [json.loads(l) for l in open(a.results) if l.strip()]
    failed = [r for r in runs if "failed" in r]
    runs = [r for r in runs if "failed" not in r]
    # Several runs of one scenario against one target: keep the median (by rate) and remember
    # the spread.
    groups = {}
    for r in runs:
        groups.setdefault((key(r), r.get("label", "")), []).append(r)
    by = {}
    spread = {}
    for (k, label), rs in groups.items():
        rs.sort(key=lambda r: r.get("received_per_s") or 0)
        by.setdefault(k, {})[label] = rs[len(rs) // 2]
        rates = [r.get("received_per_s") or 0 for r in rs]
        spread[(k, label)] = (min(rates), max(rates), len(rs))
    # The runs the mesh/slow/idle sections list: one (median) per scenario and target.
    runs = [by[k][label] for (k, label) in groups]

    def get(k, label, field="received_per_s"):
        r = by.get(k, {}).get(label)
        return None if r is None else r.get(field)

    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w(f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by `{a.command}`")
    w(f"on {machine()}.")
    w(f"switchyard: `{a.switchyard}` (release build). Crossbar.io {a.crossbar} (PyPI, one router worker).")
    w("Relay: `switchyard bench relay`, a WebSocket fan-out with no WAMP bookkeeping (the ceiling).")
    w("")
    w(f"Every figure is the median of {a.runs} `switchyard bench` run(s) of {a.duration} s per scenario, client and")
    w("router on the same 2-core machine (so the client's own cost is inside every figure). Counts are")
    w("what subscribers and callers actually received. Pub/sub runs are closed loop unless a rate is")
    w("given: each publisher keeps at most 2,000 messages that some subscriber has not received.")
    w("The machine is noisy: read ratios, not absolute numbers; rerun to see the spread.")
    w("")

    w("## Pub/sub (deliveries per second)")
    w("")
    w("| scenario | switchyard (min–max) | Crossbar | relay | switchyard ÷ Crossbar | switchyard ÷ relay | lost (switchyard / Crossbar) |")
    w("|---|---|---|---|---|---|---|")
    for k in sorted((k for k in by if k[0] == "pubsub" and k[6] is None and k[7] == 0), key=str):
        _, p, s, size, ser, transport, _, _ = k
        if ser == "any":
            continue
        sy = get(k, "switchyard")
        cb = get(k, "crossbar")
        relay_key = ("pubsub", p, s, size, "any", "websocket", None, 0)
        rl = get(relay_key, "relay") if transport == "websocket" else None
        if sy is None and cb is None:
            continue
        lost = f"{get(k, 'switchyard', 'lost')} / {get(k, 'crossbar', 'lost')}"
        lo, hi, _ = spread.get((k, "switchyard"), (None, None, 0))
        rng = f" ({fmt(lo)}–{fmt(hi)})" if lo is not None else ""
        w(f"| {p}→{s}, {size} B, {ser}, {transport} | {fmt(sy)}{rng} | {fmt(cb)} | {fmt(rl)} | {ratio(sy, cb)} | {ratio(sy, rl)} | {lost} |")
    w("")

    w("## Latency at 1,000 messages/s (pub/sub 1→1, 64 B, msgpack, WebSocket), µs")
    w("")
    w("| target | p50 | p90 | p99 | p99.9 | max | lost |")
    w("|---|---|---|---|---|---|---|")
    for label in ("switchyard", "crossbar", "relay"):
        for k, rs in by.items():
            if k[0] == "pubsub" and k[6] == 1000 and label in rs:
                l = rs[label]["latency"]
                w(f"| {label} | {l['p50_us']:.0f} | {l['p90_us']:.0f} | {l['p99_us']:.0f} | {l['p999_us']:.0f} | {l['max_us']:.0f} | {rs[label]['lost']} |")
    w("")

    w("## RPC (calls per second)")
    w("")
    w("| scenario | switchyard (min–max) | Crossbar | switchyard ÷ Crossbar | p50 / p99 µs (switchyard) | p50 / p99 µs (Crossbar) |")
    w("|---|---|---|---|---|---|")
    for k in sorted((k for k in by if k[0] == "rpc"), key=str):
        _, callers, callees, inflight, size, ser, transport = k
        sy, cb = get(k, "switchyard"), get(k, "crossbar")
        if sy is None and cb is None:
            continue
        def lat(label):
            r = by[k].get(label)
            return "—" if r is None else f"{r['latency']['p50_us']:.0f} / {r['latency']['p99_us']:.0f}"
        lo, hi, _ = spread.get((k, "switchyard"), (None, None, 0))
        rng = f" ({fmt(lo)}–{fmt(hi)})" if lo is not None else ""
        w(f"| {callers} caller × {inflight} in flight → {callees} callee(s), {ser}, {transport} | {fmt(sy)}{rng} | {fmt(cb)} | {ratio(sy, cb)} | {lat('switchyard')} | {lat('crossbar')} |")
    w("")

    w("## Mesh (three switchyard nodes on loopback)")
    w("")
    mesh_pub = [r for r in runs if r.get("label") == "switchyard-mesh" and r["scenario"] == "pubsub"]
    single = by.get(("pubsub", 1, 2, 64, "msgpack", "websocket", None, 0), {}).get("switchyard")
    mesh_rpc = [r for r in runs if r.get("label") == "switchyard-mesh" and r["scenario"] == "rpc"]
    w("| scenario | deliveries or calls /s | lost | compared with one node |")
    w("|---|---|---|---|")
    for r in mesh_pub:
        base = single["received_per_s"] if single else None
        w(f"| publisher on node 1 → subscribers on nodes 2 and 3 | {fmt(r['received_per_s'])} | {r['lost']} | {ratio(r['received_per_s'], base)} of {fmt(base)} |")
    for r in mesh_rpc:
        base = get(("rpc", 1, 1, 100, 64, "msgpack", "websocket"), "switchyard")
        w(f"| caller on node 1 → callee on node 2, 100 in flight | {fmt(r['received_per_s'])} | — | {ratio(r['received_per_s'], base)} of {fmt(base)} |")
    w("")

    w("## A subscriber that never reads (1 KiB messages, beside a normal subscriber)")
    w("")
    w("| router | normal subscriber deliveries/s | router RSS peak | router RSS at end | stalled subscriber still connected |")
    w("|---|---|---|---|---|")
    for r in runs:
        if r.get("stalled"):
            w(f"| {r['label']} | {fmt(r['received_per_s'])} | {r.get('router_rss_peak_mib', 0):.0f} MiB | {r.get('router_rss_end_mib', 0):.0f} MiB | {'yes' if r.get('stalled_still_connected') else 'no (disconnected as a slow consumer)'} |")
    w("")
    w("switchyard bounds each session's outbound queue (32 MiB hard, 4 MiB soft for 10 s, 100,000")
    w("messages) and disconnects a subscriber past it, logging its session ID; Crossbar keeps queueing")
    w("(its issue 874), so its memory grows with the run's length.")
    w("")

    w("## 10,000 idle WebSocket sessions")
    w("")
    w("| router | RSS before | RSS with 10,000 sessions | per session | time to open |")
    w("|---|---|---|---|---|")
    for r in runs:
        if r.get("scenario") == "idle":
            before, after = r.get("router_rss_before_mib"), r.get("router_rss_after_mib")
            per = r.get("per_session_kib")
            w(f"| {r['label']} | {before:.0f} MiB | {after:.0f} MiB | {per:.1f} KiB | {r['open_s']:.1f} s |" if before and after and per is not None else f"| {r['label']} | — | — | — | — |")
    w("")

    if failed:
        w("## Runs that failed")
        w("")
        for r in failed:
            w(f"- {r['label']}: `{r['args']}`: {r['failed']}")
        w("")

    w("## Targets (issue 5)")
    w("")
    k11 = ("pubsub", 1, 1, 64, "msgpack", "websocket", None, 0)
    sy11, cb11 = get(k11, "switchyard"), get(k11, "crossbar")
    rl11 = get(("pubsub", 1, 1, 64, "any", "websocket", None, 0), "relay")
    sy100 = get(("pubsub", 1, 100, 64, "msgpack", "websocket", None, 0), "switchyard")
    rpc_sy = get(("rpc", 1, 1, 100, 64, "msgpack", "websocket"), "switchyard")
    rpc_cb = get(("rpc", 1, 1, 100, 64, "msgpack", "websocket"), "crossbar")
    lat = by.get(("pubsub", 1, 1, 64, "msgpack", "websocket", 1000, 0), {}).get("switchyard")
    idle = [r for r in runs if r.get("scenario") == "idle" and r.get("label") == "switchyard"]
    def row(name, value, ok):
        w(f"| {name} | {value} | {'met' if ok else 'missed'} |")
    w("| target | measured | |")
    w("|---|---|---|")
    if sy11 and cb11:
        row("pub/sub 1→1 64 B msgpack ≥ 50× Crossbar", ratio(sy11, cb11), sy11 >= 50 * cb11)
    if sy11 and rl11:
        row("… and ≥ 60% of the relay", f"{100 * sy11 / rl11:.0f}%", sy11 >= 0.6 * rl11)
    if sy11 is not None:
        row("… with zero lost", str(get(k11, "switchyard", "lost")), get(k11, "switchyard", "lost") == 0)
    if sy100:
        row("fan-out 1→100 ≥ 1.5 M deliveries/s", fmt(sy100), sy100 >= 1.5e6)
    if rpc_sy and rpc_cb:
        row("RPC, 100 in flight ≥ 30× Crossbar", ratio(rpc_sy, rpc_cb), rpc_sy >= 30 * rpc_cb)
    if lat:
        row("latency at 1,000 msgs/s: p99 < 0.5 ms", f"{lat['latency']['p99_us']:.0f} µs", lat["latency"]["p99_us"] < 500)
    if idle and idle[0].get("router_rss_after_mib"):
        row("10,000 idle sessions < 200 MB RSS", f"{idle[0]['router_rss_after_mib']:.0f} MiB", idle[0]["router_rss_after_mib"] * 1.048576 < 200)
    if mesh_pub and single:
        m = mesh_pub[0]["received_per_s"]
        row("mesh: ≥ 50% of single-node delivery", f"{100 * m / single['received_per_s']:.0f}%", m >= 0.5 * single["received_per_s"])
    w("")
    # Hand-written reading of the misses, kept beside the script so a regeneration keeps it.
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")
    if os.path.exists(analysis):
        w(open(analysis).read().rstrip())
        w("")
    # What read-your-writes interest costs on a mesh (benches/compare_interest.sh), kept the
    # same way.
    interest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interest.md")
    if os.path.exists(interest):
        w(open(interest).read().rstrip())
        w("")
    # The build master's section (benches/compare_master.sh), kept the same way.
    master = os.path.join(os.path.dirname(os.path.abspath(__file__)), "master.md")
    if os.path.exists(master):
        w(open(master).read().rstrip())
        w("")
    open(a.out, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
