#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: switchyard, Crossbar.io and a trivial WebSocket relay (the
# machine's ceiling), measured by the same `switchyard bench` client in one run.
#
#   benches/compare.sh            # all scenarios, 5 s each, 3 runs each (the median is reported)
#   DURATION=10 RUNS=5 benches/compare.sh
#
# Installs Crossbar 26.10.1 from PyPI into .venv-crossbar if it is missing. Everything binds
# 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
OUT=${OUT:-BENCHMARKS.md}
WORK=$(mktemp -d)
RESULTS=$WORK/results.jsonl
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# 10,000 idle sessions need descriptors on both ends.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "== building switchyard (release)"
cargo build --release --quiet
SY=$REPO/target/release/switchyard

echo "== Crossbar"
if [ ! -x .venv-crossbar/bin/crossbar ]; then
    python3 -m venv .venv-crossbar
    timeout 1800 .venv-crossbar/bin/pip install -q crossbar==26.10.1
fi
CB_VERSION=$(.venv-crossbar/bin/pip show crossbar 2>/dev/null | awk '/^Version/ {print $2}')
cp -r tests/interop/crossbar/.crossbar "$WORK/cbdir"
rm -f "$WORK"/cbdir/key.* "$WORK"/cbdir/node.pid
.venv-crossbar/bin/crossbar start --cbdir "$WORK/cbdir" > "$WORK/crossbar.log" 2>&1 &
PIDS+=($!)

port_pid() { ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1; }
wait_port() {
    for _ in $(seq 1 600); do
        [ -n "$(port_pid "$1")" ] && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1 after 60 s" >&2
    return 1
}

echo "== switchyard, a 3-node switchyard mesh, and the relay"
"$SY" start --no-master --listen 127.0.0.1:18090 > "$WORK/sy.log" 2>&1 &
PIDS+=($!)
SECRET=$(head -c 24 /dev/urandom | base64)
for i in 1 2 3; do
    "$SY" start --no-master --listen 127.0.0.1:1819$i --node-name n$i --mesh-secret "$SECRET" \
        --peer ws://127.0.0.1:18191 --peer ws://127.0.0.1:18192 --peer ws://127.0.0.1:18193 \
        > "$WORK/mesh$i.log" 2>&1 &
    PIDS+=($!)
done
"$SY" bench relay --listen 127.0.0.1:18095 > "$WORK/relay.log" 2>&1 &
PIDS+=($!)
for p in 18080 18090 18191 18192 18193 18095; do wait_port $p; done
CB_PID=$(port_pid 18080)
SY_PID=$(port_pid 18090)
sleep 3 # let the mesh links come up

CB=ws://127.0.0.1:18080/ws
SYU=ws://127.0.0.1:18090/ws
RELAY=ws://127.0.0.1:18095/

bench() { # label, then bench args; RUNS times (the report takes the median)
    local label=$1; shift
    echo "   $label: $*" >&2
    for _ in $(seq 1 "$RUNS"); do
        if ! "$SY" bench "$@" --duration "$DURATION" --json --label "$label" >> "$RESULTS" 2> "$WORK/bench.err"; then
            echo "   (failed: $(tail -1 "$WORK/bench.err"))" >&2
            echo "{\"label\": \"$label\", \"failed\": \"$(tail -1 "$WORK/bench.err" | tr -d '"')\", \"args\": \"$*\"}" >> "$RESULTS"
        fi
    done
}

three() { # scenario args, run against all three targets (relay only speaks raw frames)
    bench switchyard "$@" --url $SYU
    bench crossbar "$@" --url $CB
}

echo "== pub/sub"
for s in "--publishers 1 --subscribers 1 --size 64" \
         "--publishers 1 --subscribers 1 --size 4096" \
         "--publishers 1 --subscribers 10 --size 64" \
         "--publishers 1 --subscribers 100 --size 64" \
         "--publishers 1 --subscribers 100 --size 4096" \
         "--publishers 10 --subscribers 10 --size 64"; do
    # shellcheck disable=SC2086
    three pubsub $s --serializer msgpack
    # shellcheck disable=SC2086
    bench relay pubsub $s --relay --url $RELAY
done
three pubsub --publishers 1 --subscribers 1 --size 64 --serializer json
three pubsub --publishers 1 --subscribers 1 --size 64 --serializer msgpack --transport rawsocket
three pubsub --publishers 1 --subscribers 1 --size 64 --serializer cbor

echo "== latency at 1,000 msgs/s"
three pubsub --publishers 1 --subscribers 1 --size 64 --rate 1000
bench relay pubsub --publishers 1 --subscribers 1 --size 64 --rate 1000 --relay --url $RELAY

echo "== RPC"
three rpc --callees 1 --callers 1 --inflight 100 --serializer msgpack
three rpc --callees 4 --callers 1 --inflight 100 --serializer msgpack
three rpc --callees 1 --callers 1 --inflight 100 --serializer json
three rpc --callees 1 --callers 1 --inflight 100 --serializer msgpack --transport rawsocket
three rpc --callees 1 --callers 1 --inflight 1 --serializer msgpack

echo "== mesh: publisher on node 1, subscribers on nodes 2 and 3"
bench switchyard-mesh pubsub --publishers 1 --subscribers 2 --size 64 --url ws://127.0.0.1:18191/ws \
    --subscriber-url ws://127.0.0.1:18192/ws --subscriber-url ws://127.0.0.1:18193/ws --settle 1
bench switchyard pubsub --publishers 1 --subscribers 2 --size 64 --url $SYU
bench switchyard-mesh rpc --callees 1 --callers 1 --inflight 100 --url ws://127.0.0.1:18191/ws \
    --callee-url ws://127.0.0.1:18192/ws --settle 1

echo "== a slow subscriber (never reads) beside a normal one, 1 KiB messages"
bench switchyard pubsub --publishers 1 --subscribers 1 --size 1024 --stalled 1 --router-pid "$SY_PID" --url $SYU
bench crossbar pubsub --publishers 1 --subscribers 1 --size 1024 --stalled 1 --router-pid "$CB_PID" --url $CB

echo "== memory: 10,000 idle WebSocket sessions"
"$SY" bench idle --sessions 10000 --router-pid "$SY_PID" --url $SYU --json --label switchyard >> "$RESULTS" || true
"$SY" bench idle --sessions 10000 --router-pid "$CB_PID" --url $CB --json --label crossbar >> "$RESULTS" || true

echo "== writing $OUT"
# Keep the raw results (git-ignored target/) so the table can be re-rendered.
mkdir -p target && cp "$RESULTS" target/bench-results.jsonl
python3 benches/render_benchmarks.py "$RESULTS" "$OUT" \
    --duration "$DURATION" --runs "$RUNS" --crossbar "$CB_VERSION" \
    --switchyard "$("$SY" --version)" --command "DURATION=$DURATION RUNS=$RUNS benches/compare.sh"
echo "done: $OUT"
