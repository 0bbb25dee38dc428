#!/usr/bin/env bash
# Run Buildbot 4.3's own real-router MQ test against a WAMP router.
#
#   tests/interop/run_buildbot_wamp_real.sh ws://127.0.0.1:PORT/ws [VENV_DIR]
#
# Runs buildbot.test.unit.test_mq_wamp.WampMQReal (test_forward_data and
# test_forward_data_wildcard: exact and wildcard subscribe + publish through the router,
# realm "realm1" hard-coded by the test) from the buildbot sdist unpacked by setup.sh,
# with WAMP_ROUTER_URL=URL, under twisted.trial. Succeeds only if trial reports
# "PASSED (successes=2)" with nothing skipped; any skip, failure or error (or a run over
# 180 s) makes it exit non-zero.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
URL="${1:-}"
VENV="${2:-$REPO/.venv-interop}"
SRC="$HERE/.cache/buildbot-4.3.0"
TEST=buildbot.test.unit.test_mq_wamp.WampMQReal

die() { echo "run_buildbot_wamp_real.sh: ERROR: $*" >&2; exit 1; }

[ -n "$URL" ] || die "usage: $0 ws://127.0.0.1:PORT/ws [VENV_DIR]"
[ -x "$VENV/bin/python" ] || die "no venv at $VENV (run tests/interop/setup.sh first)"
[ -f "$SRC/buildbot/test/unit/test_mq_wamp.py" ] || die "no buildbot sdist at $SRC (run tests/interop/setup.sh first)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/trial.log"

# Run from a scratch dir (trial writes _trial_temp/ there); the sdist comes first on
# PYTHONPATH so its buildbot package (which has the tests) is the one imported.
(
    cd "$WORK" &&
    WAMP_ROUTER_URL="$URL" PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}" \
        timeout 180 "$VENV/bin/python" -m twisted.trial --temp-directory "$WORK/_trial_temp" "$TEST"
) > "$LOG" 2>&1
RC=$?
cat "$LOG"

# trial's summary line looks like "PASSED (successes=2)" / "PASSED (skips=2)" /
# "FAILED (failures=1, successes=1)".
SUMMARY="$(grep -E '^(PASSED|FAILED) \(' "$LOG" | tail -1)"
if [ "$RC" -eq 124 ]; then
    die "trial timed out after 180 s"
fi
if [ "$RC" -ne 0 ]; then
    die "trial exited with status $RC (${SUMMARY:-no summary line})"
fi
case "$SUMMARY" in
    *skips=*) die "tests were skipped: $SUMMARY (is WAMP_ROUTER_URL honoured?)" ;;
    "PASSED (successes=2)") ;;
    *) die "unexpected trial summary: '${SUMMARY:-none}' (want 'PASSED (successes=2)')" ;;
esac
echo "run_buildbot_wamp_real.sh: OK: WampMQReal $SUMMARY against $URL"
# closing line in the common "N passed, N failed" form
echo "2 passed, 0 failed"
