#!/usr/bin/env bash
# What read-your-writes interest costs: `switchyard bench interest` (SUBSCRIBE and REGISTER,
# each for a new URI, one after the other from one session) against one node and against a
# node of a three-node mesh, whose replies wait until both peers confirmed the change. Prints
# one JSON line per run and a Markdown table of the medians (paste it into
# benches/interest.md, which benches/render_benchmarks.py puts into BENCHMARKS.md).
#
#   benches/compare_interest.sh                 # 1000 of each per run, 5 runs per setup
#   COUNT=2000 RUNS=3 benches/compare_interest.sh
#
# Everything binds 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COUNT=${COUNT:-1000}
RUNS=${RUNS:-5}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet
SY=$PWD/target/release/switchyard

"$SY" start --no-master --listen 127.0.0.1:18290 > "$WORK/one.log" 2>&1 &
PIDS+=($!)
SECRET=$(head -c 24 /dev/urandom | base64)
for i in 1 2 3; do
    "$SY" start --no-master --listen 127.0.0.1:1829$i --node-name n$i --mesh-secret "$SECRET" \
        --peer ws://127.0.0.1:18291/ws > "$WORK/mesh$i.log" 2>&1 &
    PIDS+=($!)
done
# The mesh is whole when every node has its two peers connected and synced (bounded).
for _ in $(seq 1 200); do
    whole=1
    for i in 1 2 3; do
        n=$("$SY" mesh status --addr 127.0.0.1:1829$i 2>/dev/null \
            | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin)["peers"] if p["state"] == "connected" and p["synced"]))' \
            2>/dev/null || echo 0)
        [ "$n" = 2 ] || whole=0
    done
    [ $whole = 1 ] && break
    sleep 0.1
done
[ $whole = 1 ] || { echo "no full mesh of three" >&2; exit 1; }

RESULTS=$WORK/results.jsonl
for _ in $(seq 1 "$RUNS"); do
    for setup in one:18290 mesh3:18291; do
        "$SY" bench interest --url "ws://127.0.0.1:${setup#*:}/ws" --count "$COUNT" --json \
            --label "${setup%%:*}" | tee -a "$RESULTS"
    done
done

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda label, what, q: statistics.median(r[what][q] for r in runs if r["label"] == label)
print()
print("| setup | SUBSCRIBED p50 / p90 / p99 µs | REGISTERED p50 / p90 / p99 µs |")
print("|---|---|---|")
names = {"one": "one node", "mesh3": "node 1 of a 3-node mesh (waits for 2 peers)"}
for label in ("one", "mesh3"):
    cells = [" / ".join(f"{med(label, w, q):.0f}" for q in ("p50_us", "p90_us", "p99_us"))
             for w in ("subscribe", "register")]
    print(f"| {names[label]} | {cells[0]} | {cells[1]} |")
for w in ("subscribe", "register"):
    d = med("mesh3", w, "p50_us") - med("one", w, "p50_us")
    print(f"\nmedian p50 added by the mesh to a {w}: {d:.0f} µs")
EOF
