#!/usr/bin/env bash
# Start a real Crossbar.io (the reference router) configured like switchyard's defaults,
# to validate the interop scripts against it:
#
#   tests/interop/crossbar/start.sh [VENV_DIR]     (default: <repo>/.venv-crossbar)
#
# Installs crossbar into VENV_DIR if missing, then runs it in the foreground (Ctrl-C or
# SIGTERM stops it). Config: .crossbar/config.json beside this script: one router worker,
# realms realm1 and buildbot with an anonymous role allowed everything, a universal
# transport on 127.0.0.1:18080 with WebSocket at /ws and / and RawSocket on the same port,
# serializers json/msgpack/cbor (Crossbar accepts the .batched variants too).
# Then e.g.: .venv-interop/bin/python tests/interop/autobahn_scenarios.py --url ws://127.0.0.1:18080/ws
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
VENV="${1:-$REPO/.venv-crossbar}"
if [ ! -x "$VENV/bin/crossbar" ]; then
    python3 -m venv "$VENV"
    timeout 1800 "$VENV/bin/pip" install -q crossbar==26.10.1 || { echo "crossbar install failed" >&2; exit 1; }
fi
exec "$VENV/bin/crossbar" start --cbdir "$HERE/.crossbar"
