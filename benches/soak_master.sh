#!/usr/bin/env bash
# Chaos soak of the build master (not in CI): three meshed nodes on one PostgreSQL, 100
# simulated workers (`switchyard bench master`) and REAL_WORKERS (4) `switchyard worker`
# processes on the same builder, builds forced at 20/s for 10 minutes while a random node
# or real worker is SIGKILLed and restarted every 20 s and a random node is stopped
# gracefully (SIGTERM) and restarted every minute. At the end, from the database: every
# forced request completed exactly once with SUCCESS (RETRY builds before it allowed), every
# buildset is complete, no claim on an incomplete request and no worker slot is held; and
# the nodes' memory, sampled every 10 s, stayed flat.
#
#   benches/soak_master.sh                     # 10 minutes
#   DURATION=120 benches/soak_master.sh        # a short run
#   KEEP=1 benches/soak_master.sh              # keep the logs and the database (printed)
#
# The simulated workers live in the bench process (they reconnect to the next node when
# theirs dies, or when a master redirects them); the real workers are the ones killed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
DURATION=${DURATION:-600}
RATE=${RATE:-20}
WORKERS=${WORKERS:-100}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
TOKEN=soak-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d)
DB=sy_soak_$$
REAL_WORKERS=${REAL_WORKERS:-4}
declare -A NODE_PID
declare -A WORKER_PID
cleanup() {
    for p in "${NODE_PID[@]}" "${WORKER_PID[@]}" ${BENCH_PID:-}; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then
        echo "logs kept in $WORK, the database in $PG/$DB (drop it when done)" >&2
    else
        psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

if [ -z "${SY:-}" ]; then
    cargo build --release --quiet --bin switchyard
    SY=$REPO/target/release/switchyard
fi
psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
WORKERS_TOML=$("$SY" bench master --token x --workers "$WORKERS" --print-config)
# The real workers join the bench's builder (same password as the simulated ones).
REAL_NAMES=""
for i in $(seq 0 $((REAL_WORKERS - 1))); do
    REAL_NAMES+="\"real-$i\", "
    WORKERS_TOML+=$'\n'"[[master.workers]]"$'\n'"name = \"real-$i\""$'\n'"password = \"bench\""$'\n'"max_builds = 1"
done
WORKERS_TOML=${WORKERS_TOML/workers = \[/workers = [$REAL_NAMES}
for i in 1 2 3; do
    cat > "$WORK/m$i.toml" <<EOF
listen = "127.0.0.1:1839$i"
[mesh]
node_name = "m$i"
peers = ["ws://127.0.0.1:18391", "ws://127.0.0.1:18392", "ws://127.0.0.1:18393"]
secret = "soak-mesh-secret-0123456789"
[master]
name = "m$i"
db = "$PG/$DB"
data_dir = "$WORK/m$i-data"
heartbeat_interval_s = 1
expiry_timeout_s = 8
shutdown_deadline_s = 20
[master.api]
tokens = ["$TOKEN"]
$WORKERS_TOML
EOF
done
start_node() {
    RUST_LOG=warn "$SY" start --config "$WORK/m$1.toml" >> "$WORK/m$1.out" 2>> "$WORK/m$1.log" &
    NODE_PID[$1]=$!
    for _ in $(seq 1 300); do
        ss -ltnH "sport = :1839$1" | grep -q . && return 0
        sleep 0.1
    done
    echo "node m$1 did not start" >&2
    tail -20 "$WORK/m$1.log" >&2
    exit 1
}
for i in 1 2 3; do start_node $i; done
start_worker() {
    SWITCHYARD_WORKER_PASSWORD=bench RUST_LOG=warn "$SY" worker --name "real-$1" \
        --basedir "$WORK/real-$1" --connect ws://127.0.0.1:1839$(($1 % 3 + 1))/ws \
        --connect ws://127.0.0.1:18391/ws --connect ws://127.0.0.1:18392/ws \
        --connect ws://127.0.0.1:18393/ws >> "$WORK/real-$1.log" 2>&1 &
    WORKER_PID[$1]=$!
}
for i in $(seq 0 $((REAL_WORKERS - 1))); do start_worker "$i"; done
sleep 3

BUILDS=$((RATE * DURATION))
"$SY" bench master --token "$TOKEN" --workers "$WORKERS" --builds "$BUILDS" --rate "$RATE" \
    --timeout 120 --json --label soak \
    --url ws://127.0.0.1:18391/ws --url ws://127.0.0.1:18392/ws --url ws://127.0.0.1:18393/ws \
    --api 127.0.0.1:18391 --api 127.0.0.1:18392 --api 127.0.0.1:18393 \
    > "$WORK/bench.json" 2> "$WORK/bench.log" &
BENCH_PID=$!

# Wait for the workers to be connected (the bench starts forcing then).
sleep 15
START=$(date +%s)
echo "t(s)  event                       RSS MiB m1 m2 m3"
rss() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo -; }
tick=0
RSS_FIRST=0 # the nodes' largest RSS in the first minute, and in the last one
RSS_LAST=0
while [ $(( $(date +%s) - START )) -lt "$DURATION" ]; do
    sleep 10
    tick=$((tick + 10))
    event=""
    if [ $((tick % 60)) -eq 0 ]; then
        n=$((RANDOM % 3 + 1))
        kill -TERM "${NODE_PID[$n]}"
        for _ in $(seq 1 600); do kill -0 "${NODE_PID[$n]}" 2>/dev/null || break; sleep 0.1; done
        kill -9 "${NODE_PID[$n]}" 2>/dev/null && event="m$n graceful stop (cut at 60 s)" \
            || event="m$n graceful stop"
        start_node "$n"
    elif [ $((tick % 20)) -eq 0 ] && [ "$REAL_WORKERS" -gt 0 ] && [ $((RANDOM % 2)) -eq 0 ]; then
        n=$((RANDOM % REAL_WORKERS))
        kill -9 "${WORKER_PID[$n]}"
        wait "${WORKER_PID[$n]}" 2>/dev/null || true
        sleep 1
        start_worker "$n"
        event="real-$n SIGKILL"
    elif [ $((tick % 20)) -eq 0 ]; then
        n=$((RANDOM % 3 + 1))
        kill -9 "${NODE_PID[$n]}"
        wait "${NODE_PID[$n]}" 2>/dev/null || true
        sleep 2
        start_node "$n"
        event="m$n SIGKILL"
    fi
    r1=$(rss "${NODE_PID[1]}") r2=$(rss "${NODE_PID[2]}") r3=$(rss "${NODE_PID[3]}")
    printf "%4d  %-27s %s %s %s\n" "$tick" "$event" "$r1" "$r2" "$r3"
    for r in $r1 $r2 $r3; do
        [ "$r" = - ] && continue
        [ "$tick" -le 60 ] && [ "$r" -gt "$RSS_FIRST" ] && RSS_FIRST=$r
        [ "$tick" -gt $((DURATION - 60)) ] && [ "$r" -gt "$RSS_LAST" ] && RSS_LAST=$r
    done
done
wait "$BENCH_PID" || true
# Let expiry and the queue finish what the last kill left.
sleep 30

q() { psql -qtA "$PG/$DB" -c "$1"; }
forced=$(q "SELECT COUNT(*) FROM buildrequests")
incomplete=$(q "SELECT COUNT(*) FROM buildrequests WHERE complete = 0")
not_success=$(q "SELECT COUNT(*) FROM buildrequests WHERE complete = 1 AND results <> 0")
not_once=$(q "SELECT COUNT(*) FROM (SELECT r.id FROM buildrequests r LEFT JOIN builds b
    ON b.buildrequestid = r.id AND b.results = 0 GROUP BY r.id HAVING COUNT(b.id) <> 1) t")
retries=$(q "SELECT COUNT(*) FROM builds WHERE results = 5")
bs_incomplete=$(q "SELECT COUNT(*) FROM buildsets WHERE complete = 0")
claims=$(q "SELECT COUNT(*) FROM buildrequest_claims c JOIN buildrequests r ON r.id = c.brid
    WHERE r.complete = 0")
leases=$(q "SELECT COUNT(*) FROM worker_leases")
echo
echo "bench: $(cat "$WORK/bench.json")"
echo "requests forced: $forced (offered $BUILDS; forces to a node that was down are refused)"
echo "incomplete: $incomplete; completed without SUCCESS: $not_success; not exactly one SUCCESS build: $not_once"
echo "RETRY builds (killed nodes' builds, run again): $retries"
echo "incomplete buildsets: $bs_incomplete; claims on incomplete requests: $claims; worker slots held: $leases"
# Flat: the last minute's largest RSS within 1.5x (+16 MiB) of the first minute's. (A node
# restarted by the chaos starts afresh, so this watches every node's current life.)
grew=0
[ "$RSS_LAST" -gt $((RSS_FIRST * 3 / 2 + 16)) ] && grew=1
echo "memory: largest node RSS $RSS_FIRST MiB in the first minute, $RSS_LAST MiB in the last ($([ $grew = 0 ] && echo flat || echo GREW))"
if [ "$incomplete$not_success$not_once$bs_incomplete$claims$leases$grew" = "0000000" ]; then
    echo "SOAK PASSED"
else
    echo "SOAK FAILED"
    exit 1
fi
