#!/usr/bin/env bash
# Prepare the Python interop environment for switchyard (idempotent).
#
#   tests/interop/setup.sh [VENV_DIR]      (default: <repo>/.venv-interop)
#
# 1. creates VENV_DIR with python3 (3.11) if missing;
# 2. pip installs tests/interop/requirements.txt, skipped when the stamp file in the venv
#    already records the same requirements hash;
# 3. downloads the buildbot 4.3.0 source distribution into tests/interop/.cache/ and unpacks
#    it there (Buildbot's own test_mq_wamp.WampMQReal only ships in the sdist).
# Exits non-zero with a message on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${1:-$REPO/.venv-interop}"
REQ="$HERE/requirements.txt"
CACHE="$HERE/.cache"
BB_VERSION=4.3.0
PYTHON="${PYTHON:-python3}"

die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || die "$PYTHON is too old (need >= 3.9; tested with 3.11)"

# --- 1. venv --------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup.sh: creating venv $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create venv $VENV"
fi
VPY="$VENV/bin/python"

# --- 2. requirements (stamp = sha256 of requirements.txt) -----------------------------
HASH="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.switchyard-interop-requirements.sha256"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
    echo "setup.sh: requirements already installed ($STAMP)"
else
    echo "setup.sh: installing $REQ into $VENV"
    timeout 900 "$VPY" -m pip install --disable-pip-version-check -q --upgrade pip \
        || die "pip upgrade failed"
    timeout 1800 "$VPY" -m pip install --disable-pip-version-check -q -r "$REQ" \
        || die "pip install -r $REQ failed"
    "$VPY" -c 'import autobahn, twisted, buildbot, parameterized, msgpack, cbor2, nacl' \
        || die "installed packages do not import"
    echo "$HASH" > "$STAMP"
fi

# --- 3. buildbot sdist (for buildbot.test.unit.test_mq_wamp) --------------------------
SRC="$CACHE/buildbot-$BB_VERSION"
if [ -f "$SRC/buildbot/test/unit/test_mq_wamp.py" ]; then
    echo "setup.sh: buildbot $BB_VERSION source already unpacked ($SRC)"
else
    mkdir -p "$CACHE"
    TARBALL="$CACHE/buildbot-$BB_VERSION.tar.gz"
    if [ ! -s "$TARBALL" ]; then
        echo "setup.sh: downloading buildbot $BB_VERSION sdist"
        timeout 900 "$VPY" -m pip download --disable-pip-version-check -q \
            "buildbot==$BB_VERSION" --no-binary :all: --no-deps -d "$CACHE" \
            || die "pip download buildbot==$BB_VERSION sdist failed"
    fi
    [ -s "$TARBALL" ] || die "expected $TARBALL after download"
    rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
    tar -xzf "$TARBALL" -C "$SRC.tmp" || die "could not unpack $TARBALL"
    [ -f "$SRC.tmp/buildbot-$BB_VERSION/buildbot/test/unit/test_mq_wamp.py" ] \
        || die "sdist lacks buildbot/test/unit/test_mq_wamp.py"
    rm -rf "$SRC" && mv "$SRC.tmp/buildbot-$BB_VERSION" "$SRC" && rm -rf "$SRC.tmp"
    echo "setup.sh: unpacked $SRC"
fi

echo "setup.sh: ok (venv: $VENV)"
