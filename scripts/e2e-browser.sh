#!/usr/bin/env bash
# shellcheck disable=SC2317 # report() and cleanup() run from the EXIT trap
# Tests of Spillway's web page in a real browser: Debian's headless Chromium
# driven by playwright-core (tests/browser/page.test.mjs, Node.js's built-in
# test runner, run in this one process so that stopping it by PID also
# closes the browser). npm never downloads a browser here.
#
#   scripts/e2e-browser.sh
#
# Sets up what it needs on a fresh machine: Debian's `chromium` (apt-get, only
# when /usr/bin/chromium is missing), `npm ci` in tests/browser, and
# `cargo build --release --locked`. Then starts one node on 127.0.0.1 (port
# 0, its own temp data dir, SPILLWAY_DISK_RESERVE=0,
# SPILLWAY_MAX_DATASET_SIZE=150MiB) and runs the tests against it: upload
# 20 MiB through the page and download it back; a 100 MiB upload cut by a
# page reload and resumed (bytes received once, blake3); delete; a too-large
# upload shows the node's problem detail; a dataset's versions listed,
# downloaded and restored; a folder of 50 nested files dragged onto the page
# (a real directory drop) and checked byte by byte, with uploads in
# parallel; the folder picker and the replace question answered each way;
# a folder cut by a reload, resumed;
# sorting by every column, and a dataset's blake3 and download commands;
# no console errors. Screenshots (desktop and phone width) go to
# test-output/browser/ (git-ignored).
#
# Knobs (environment):
#   BROWSER_TEST_TIMEOUT  seconds the whole test run may take   (300)
#   BROWSER_KEEP=1        keep the temp dir (node log, data dir)
#   CHROMIUM              the browser                           (/usr/bin/chromium)
#
# Every wait is bounded; every process started here is stopped by PID (the
# browser is closed by the tests, and dies with their process otherwise).
# The last line on stdout is `browser: N passed, M failed`; the exit status
# is 0 only when every test passed.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTS="$ROOT/tests/browser"
OUT="$ROOT/test-output/browser"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TEST_TIMEOUT=${BROWSER_TEST_TIMEOUT:-300}
MAX_SIZE="150MiB"

log() { printf '[browser %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

PASSED=0
FAILED=0
REPORTED=0
report() { # the one summary line, once
    ((REPORTED)) && return 0
    REPORTED=1
    echo "browser: $PASSED passed, $FAILED failed"
}
die() {
    log "ERROR: $*"
    FAILED=$((FAILED > 0 ? FAILED : 1))
    exit 1
}

[[ $TEST_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BROWSER_TEST_TIMEOUT must be a positive whole number"

# ------------------------------------------------------------- processes ---

declare -A LIVE=() # pid -> what: started here and not yet reaped
TMPD=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${!LIVE[@]}"; do stop_pid "$pid" TERM; done
    if [[ -n $TMPD && -d $TMPD ]]; then
        if [[ ${BROWSER_KEEP:-0} == 1 ]]; then log "kept $TMPD"; else rm -rf -- "$TMPD"; fi
    fi
    if ((rc != 0 && FAILED == 0)); then FAILED=1; fi
    report
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


TMPD=$(mktemp -d "${TMPDIR:-/tmp}/spillway-browser.XXXXXX")

# ---------------------------------------------------------------- set-up ---

if [[ ! -x $CHROMIUM ]]; then
    [[ $CHROMIUM == /usr/bin/chromium ]] || die "no browser at $CHROMIUM"
    command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and apt-get is not here to install it"
    SUDO=()
    if ((EUID != 0)); then SUDO=(sudo -n); fi
    log "installing Debian's chromium (apt-get)"
    run_bounded 300 "$TMPD/apt-update.log" "apt-get update" "${SUDO[@]}" apt-get update ||
        { tail -n 20 "$TMPD/apt-update.log" >&2; die "apt-get update failed"; }
    run_bounded 600 "$TMPD/apt-install.log" "apt-get install chromium" \
        env DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y chromium ||
        { tail -n 20 "$TMPD/apt-install.log" >&2; die "apt-get install chromium failed"; }
    [[ -x $CHROMIUM ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
fi
log "browser: $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

command -v node >/dev/null || die "node (Node.js >= 20) is missing"
command -v npm >/dev/null || die "npm is missing"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
((NODE_MAJOR >= 20)) || die "Node.js >= 20 is needed (found $(node --version))"

stamp="$TESTS/node_modules/.browser-package-lock.json"
if [[ -f $stamp ]] && cmp -s "$stamp" "$TESTS/package-lock.json" && [[ -d $TESTS/node_modules/playwright-core ]]; then
    log "tests/browser/node_modules is up to date"
else
    log "npm ci in tests/browser (playwright-core, hash-wasm; no browser download)"
    run_bounded 300 "$TMPD/npm.log" "npm ci" \
        env -C "$TESTS" PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error ||
        { tail -n 20 "$TMPD/npm.log" >&2; die "npm ci in tests/browser failed"; }
    cp "$TESTS/package-lock.json" "$stamp"
fi

log "building the node: cargo build --release --locked"
run_bounded 1800 "$TMPD/build.log" "cargo build" env -C "$ROOT" cargo build --release --locked ||
    { tail -n 30 "$TMPD/build.log" >&2; die "cargo build --release failed"; }
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/spillway"
[[ -x $BIN ]] || die "no binary at $BIN"

# ------------------------------------------------------------------ node ---

# Only this script's settings reach the node: no inherited SPILLWAY_* or
# ROCKET_* (tokens, spool dir, port...).
CLEAN_ENV=()
for var in $(compgen -e); do
    if [[ $var == SPILLWAY_* || $var == ROCKET_* ]]; then CLEAN_ENV+=(-u "$var"); fi
done
unset var

mkdir -p "$TMPD/data" "$TMPD/work"
(
    cd "$ROOT" # the node reads Rocket.toml from here, then the environment
    exec env "${CLEAN_ENV[@]}" \
        SPILLWAY_ADDRESS=127.0.0.1 SPILLWAY_PORT=0 \
        SPILLWAY_DATA_DIR="$TMPD/data" SPILLWAY_DISK_RESERVE=0 \
        SPILLWAY_MAX_DATASET_SIZE="$MAX_SIZE" ROCKET_CLI_COLORS=false \
        "$BIN" serve
) >"$TMPD/node.out" 2>"$TMPD/node.err" &
NODE_PID=$!
LIVE[$NODE_PID]="spillway"
deadline=$((SECONDS + 30))
while :; do
    if line=$(grep -m1 -o 'spillway listening on http://[^[:space:]]*' "$TMPD/node.out" 2>/dev/null); then
        break
    fi
    if ! alive "$NODE_PID"; then
        tail -n 20 "$TMPD/node.out" "$TMPD/node.err" >&2 || true
        die "the node exited before listening (log above)"
    fi
    ((SECONDS < deadline)) || die "the node did not listen within 30 s"
    sleep 0.05
done
PORT=${line##*:}
[[ $PORT =~ ^[0-9]+$ ]] || die "cannot read the port from '$line'"
BASE="http://127.0.0.1:$PORT"
log "node (pid $NODE_PID) at $BASE, data in $TMPD/data"

# ----------------------------------------------------------------- tests ---

rm -rf -- "$OUT"
mkdir -p "$OUT"
TAP="$TMPD/results.tap"
log "running tests/browser/page.test.mjs (node:test, at most ${TEST_TIMEOUT}s)"
rc=0
run_bounded "$TEST_TIMEOUT" "$TMPD/tests.log" "node page.test.mjs" \
    env -C "$TESTS" SPILLWAY_URL="$BASE" SPILLWAY_MAX_DATASET_SIZE="$MAX_SIZE" \
    BROWSER_OUT="$OUT" BROWSER_WORK="$TMPD/work" CHROMIUM="$CHROMIUM" \
    node --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$TAP" \
    page.test.mjs || rc=$?
cat "$TMPD/tests.log" >&2

count() { # name: the runner's own `# name N` summary line, or nothing
    [[ -f $TAP ]] || return 0
    sed -n "s/^# $1 \([0-9][0-9]*\)\$/\1/p" "$TAP" | tail -n 1
}
pass=$(count pass)
fail=$(count fail)
cancelled=$(count cancelled)
PASSED=${pass:-0}
FAILED=$((${fail:-0} + ${cancelled:-0}))
if [[ -z $pass ]]; then
    log "the test run ended without a summary (exit $rc)"
    ((FAILED > 0)) || FAILED=1
fi
if ((rc != 0 && FAILED == 0)); then
    log "the test process exited $rc"
    FAILED=1
fi
if ! alive "$NODE_PID"; then
    log "the node died during the tests:"
    tail -n 20 "$TMPD/node.err" >&2 || true
    FAILED=$((FAILED + 1))
fi
if grep -qE 'panicked| ERROR ' "$TMPD/node.err"; then
    log "the node logged errors (see above for whether a test failed):"
    grep -E 'panicked| ERROR ' "$TMPD/node.err" | head -n 20 >&2
fi
shots=("$OUT"/*.png)
[[ -e ${shots[0]} ]] || shots=()
log "screenshots in ${OUT#"$ROOT/"}/: ${shots[*]##*/}"

stop_pid "$NODE_PID" TERM
((FAILED == 0)) || exit 1
exit 0
