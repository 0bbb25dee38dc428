#!/usr/bin/env bash
# The build master under load: `switchyard bench master` against switchyard on one node with
# SQLite, one node with PostgreSQL, and three meshed nodes sharing one PostgreSQL, in one
# run. Prints one JSON line per run and a Markdown table of the medians (paste it into the
# "Build master" section of BENCHMARKS.md).
#
#   benches/compare_master.sh                       # 10 workers, 200 builds at once, 3 runs
#   WORKERS=1000 BUILDS=3000 benches/compare_master.sh
#   WORKERS=1000 BUILDS=2000 RATE=100 SETUPS=sqlite benches/compare_master.sh
#   SETUPS="buildbot-sqlite buildbot-pg2" benches/compare_master.sh
#
# Setups: sqlite, postgres, mesh3 (switchyard); buildbot-sqlite (one Buildbot 4.3 master)
# and buildbot-pg2 (two Buildbot masters on one PostgreSQL with `mq: wamp` on a switchyard
# router), with real buildbot-worker processes, driven by benches/buildbot_master.py. The
# Buildbot setups need a venv with buildbot 4.3.0, buildbot-www, buildbot-worker and
# psycopg2-binary: BB_VENV (default .venv-interop, made by tests/interop/setup.sh; the
# script adds the last three if missing).
#
# Needs PostgreSQL at $PG (default postgres://postgres@127.0.0.1:5432, trust auth, a user
# that may CREATE DATABASE); its databases are created here and dropped on exit. Everything
# binds 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
WORKERS=${WORKERS:-10}
BUILDS=${BUILDS:-200}
RUNS=${RUNS:-3}
RATE=${RATE:-}
STEP_MS=${STEP_MS:-0}
SETUPS=${SETUPS:-"sqlite postgres mesh3"}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
TOKEN=bench-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d)
RESULTS=$WORK/results.jsonl
PIDS=()
DBS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for d in "${DBS[@]}"; do dropdb --if-exists -f --maintenance-db="$PG/postgres" "$d" 2>/dev/null \
        || psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -z "${SY:-}" ]; then
    echo "== building switchyard (release)" >&2
    cargo build --release --quiet --bin switchyard
    SY=$REPO/target/release/switchyard
fi

port_pid() { ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1; }
wait_port() {
    for _ in $(seq 1 600); do
        [ -n "$(port_pid "$1")" ] && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1 after 60 s" >&2
    return 1
}
new_db() { # sets NEW_DB (not echoed: DBS must grow in this shell, not a subshell's)
    local name=sy_bench_$1_$$
    psql -q "$PG/postgres" -c "CREATE DATABASE $name" >/dev/null
    DBS+=("$name")
    NEW_DB="$PG/$name"
}
WORKERS_TOML=$("$SY" bench master --token x --workers "$WORKERS" --print-config)

# node NAME PORT DB PEER_PORTS...: writes the config and starts the node.
node() {
    local name=$1 port=$2 db=$3
    shift 3
    local cfg=$WORK/$name.toml
    {
        echo "listen = \"127.0.0.1:$port\""
        if [ $# -gt 0 ]; then
            local peers
            peers=$(printf '"ws://127.0.0.1:%s",' "$@")
            echo "[mesh]"
            echo "node_name = \"$name\""
            echo "peers = [${peers%,}]"
            echo "secret = \"bench-mesh-secret-0123456789\""
        fi
        echo "[master]"
        echo "name = \"$name\""
        echo "data_dir = \"$WORK/$name-data\""
        [ -n "$db" ] && echo "db = \"$db\""
        echo "[master.api]"
        echo "tokens = [\"$TOKEN\"]"
        echo "$WORKERS_TOML"
    } > "$cfg"
    RUST_LOG=warn "$SY" start --config "$cfg" > "$WORK/$name.out" 2> "$WORK/$name.log" &
    PIDS+=($!)
    wait_port "$port"
}

# bench LABEL "URL..." "API..." "PID...": RUNS runs, JSON lines into $RESULTS.
bench() {
    local label=$1 urls=$2 apis=$3 pids=$4 args=()
    for u in $urls; do args+=(--url "$u"); done
    for a in $apis; do args+=(--api "$a"); done
    for p in $pids; do args+=(--router-pid "$p"); done
    [ -n "$RATE" ] && args+=(--rate "$RATE")
    for r in $(seq 1 "$RUNS"); do
        echo "== $label, run $r/$RUNS" >&2
        sleep 3 # the previous run's workers are gone from the master's view
        "$SY" bench master --token "$TOKEN" --workers "$WORKERS" --builds "$BUILDS" \
            --step-ms "$STEP_MS" --label "$label" --json "${args[@]}" | tee -a "$RESULTS"
    done
}

for setup in $SETUPS; do
    case $setup in
    sqlite)
        node sqlite 18280 ""
        bench "switchyard, 1 node, SQLite" ws://127.0.0.1:18280/ws 127.0.0.1:18280 "$(port_pid 18280)"
        ;;
    postgres)
        new_db pg
        node pg 18281 "$NEW_DB"
        bench "switchyard, 1 node, PostgreSQL" ws://127.0.0.1:18281/ws 127.0.0.1:18281 "$(port_pid 18281)"
        ;;
    mesh3)
        new_db mesh
        db=$NEW_DB
        for i in 1 2 3; do node "m$i" "1829$i" "$db" 18291 18292 18293; done
        sleep 3 # let the mesh links come up
        bench "switchyard, 3 meshed nodes, PostgreSQL" \
            "ws://127.0.0.1:18291/ws ws://127.0.0.1:18292/ws ws://127.0.0.1:18293/ws" \
            "127.0.0.1:18291 127.0.0.1:18292 127.0.0.1:18293" \
            "$(port_pid 18291) $(port_pid 18292) $(port_pid 18293)"
        ;;
    buildbot-sqlite | buildbot-pg2)
        BB_VENV=${BB_VENV:-$REPO/.venv-interop}
        "$BB_VENV/bin/python" -c 'import buildbot_worker, buildbot_www, psycopg2' 2>/dev/null \
            || timeout 1800 "$BB_VENV/bin/pip" install -q buildbot-worker==4.3.0 \
                buildbot-www==4.3.0 psycopg2-binary
        mkdir -p "$WORK/$setup"
        if [ "$setup" = buildbot-sqlite ]; then
            bbargs=(--db sqlite --masters 1 --label "Buildbot 4.3, 1 master, SQLite")
        else
            "$SY" start --no-master --listen 127.0.0.1:18300 > "$WORK/bbrouter.log" 2>&1 &
            PIDS+=($!)
            wait_port 18300
            new_db bb
            bbdb=$NEW_DB
            # SQLAlchemy 2.1 (what Buildbot 4.3 installs) reads a bare postgresql:// as
            # psycopg 3, which is not installed: name psycopg2's dialect.
            bbargs=(--db "${bbdb/postgres:/postgresql+psycopg2:}" --masters 2 --router ws://127.0.0.1:18300/ws
                --label "Buildbot 4.3, 2 masters, PostgreSQL, mq wamp")
        fi
        for r in $(seq 1 "$RUNS"); do
            echo "== $setup, run $r/$RUNS" >&2
            rm -rf "${WORK:?}/$setup"/*
            if [ "$setup" = buildbot-pg2 ]; then
                psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS ${bbdb##*/} WITH (FORCE)" -c "CREATE DATABASE ${bbdb##*/}" >/dev/null
            fi
            "$BB_VENV/bin/python" benches/buildbot_master.py --venv "$BB_VENV" --work "$WORK/$setup" \
                --workers "$WORKERS" --builds "$BUILDS" "${bbargs[@]}" | tee -a "$RESULTS"
        done
        ;;
    *) echo "unknown setup $setup" >&2; exit 2 ;;
    esac
done

# The medians per setup, as a Markdown table.
python3 - "$RESULTS" "$WORKERS" "$BUILDS" "${RATE:-all at once}" <<'EOF'
import json, statistics, sys
path, workers, builds, rate = sys.argv[1:]
runs = {}
for line in open(path):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
print(f"\n{workers} workers, {builds} builds ({rate}), medians of {max(len(v) for v in runs.values())} runs\n")
print("| setup | builds/s | start p50 / p99 / max ms | complete p50 / p99 / max ms | failures | duplicates | master CPU per build | master RSS peak |")
print("|---|---|---|---|---|---|---|---|")
med = lambda rs, f: statistics.median(f(r) for r in rs)
for label, rs in runs.items():
    s = lambda k, q: med(rs, lambda r: r[k][q])
    cpu = med(rs, lambda r: r.get("master_cpu_ms_per_build") or 0)
    rss = med(rs, lambda r: r.get("master_rss_peak_mib") or 0)
    bad = sum(r["failures"] + r["missing"] for r in rs)
    dup = sum(r["duplicates"] + r["duplicate_completions"] for r in rs)
    print(f"| {label} | {med(rs, lambda r: r['builds_per_s']):.0f} "
          f"| {s('submit_to_start_ms','p50'):.0f} / {s('submit_to_start_ms','p99'):.0f} / {s('submit_to_start_ms','max'):.0f} "
          f"| {s('submit_to_complete_ms','p50'):.0f} / {s('submit_to_complete_ms','p99'):.0f} / {s('submit_to_complete_ms','max'):.0f} "
          f"| {bad} | {dup} | {cpu:.2f} ms | {rss:.0f} MiB |")
EOF
