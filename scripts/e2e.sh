#!/usr/bin/env bash
# End-to-end tests of Spillway's resumable uploads (tus 1.0.0 at /uploads)
# with real, unmodified clients: tuspy (PyPI) and tus-js-client (npm, Node.js).
#
#   scripts/e2e.sh                       # every scenario
#   E2E_ONLY="js-restart py-expire" scripts/e2e.sh   # some of them
#
# Knobs (environment):
#   E2E_ONLY             scenario names to run (default: all, in the order below)
#   E2E_PY_SIZE_MIB      tuspy resume upload size in MiB          (200)
#   E2E_JS_SIZE_MIB      tus-js-client upload sizes in MiB        (100)
#   E2E_SCENARIO_TIMEOUT seconds one scenario may take at most    (240)
#   E2E_VENV             the Python venv                           (target/e2e-venv)
#   E2E_TMPDIR           where the temp dir goes                   ($TMPDIR or /tmp)
#   E2E_KEEP=1           keep the temp dir (logs, data dirs) for a look afterwards
#   E2E_BIN              a spillway binary to test instead of building one
#   E2E_STRICT_TAKEOVER=1  py-takeover fails on a 409 to the first PATCH after
#                        the takeover HEAD (default: reported as KNOWN ISSUE)
#
# Sets up what it needs on a fresh machine: a venv with tests/e2e/requirements.txt
# (tuspy, blake3, requests), `npm ci` in tests/e2e (tus-js-client, hash-wasm;
# no browser), and `cargo build --release`. Each scenario gets a
# fresh node on 127.0.0.1 (its own temp data dir, SPILLWAY_DISK_RESERVE=0)
# and, after the clients' checks, stops it and runs `spillway fsck` on its
# data dir. Scenarios:
#   py-resume     tuspy, 200 MiB in 5 MiB chunks with Upload-Checksum (sha1):
#                 the client process is SIGKILLed midway; a new process
#                 resumes from tuspy's URL storage; blake3 + bytes checked
#   py-checksums  tuspy with sha1, md5, sha256; a wrong checksum gets 460
#   py-takeover   a PATCH that hangs half-sent (client gone silent) does not
#                 lock the upload: a new tuspy client takes over at once
#                 (a 409 on its first PATCH is a KNOWN ISSUE unless strict)
#   py-expire     SPILLWAY_UPLOAD_EXPIRY=2: tuspy sends part of an upload;
#                 the sweeper removes it (HEAD 404/410, bytes gone)
#   js-resume     tus-js-client, 100 MiB: abort() mid-PATCH, then a new
#                 Upload with findPreviousUploads()/resumeFromPreviousUpload();
#                 then abort(true) (termination: DELETE, bytes gone)
#   js-parallel   tus-js-client parallelUploads: 4 (concatenation), 100 MiB;
#                 then a parallel upload aborted at ~40% and resumed
#   js-restart    tus-js-client, 100 MiB: this script SIGKILLs the node
#                 mid-upload and restarts it on the same port and data dir;
#                 the client's retries resume it
# Every wait is bounded; every process started here is stopped by PID. The
# last line on stdout is `e2e: N passed, M failed`; the exit status is 0
# only when every scenario passed.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$ROOT/tests/e2e"
VENV=${E2E_VENV:-$ROOT/target/e2e-venv}
TMP_PARENT=${E2E_TMPDIR:-${TMPDIR:-/tmp}}
PY_SIZE_MIB=${E2E_PY_SIZE_MIB:-200}
JS_SIZE_MIB=${E2E_JS_SIZE_MIB:-100}
SCENARIO_TIMEOUT=${E2E_SCENARIO_TIMEOUT:-240}
ALL_SCENARIOS=(py-resume py-checksums py-takeover py-expire js-resume js-parallel js-restart)

log() { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in PY_SIZE_MIB JS_SIZE_MIB SCENARIO_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "E2E_$v must be a positive whole number, not '${!v}'"
done
((SCENARIO_TIMEOUT >= 60)) || die "E2E_SCENARIO_TIMEOUT must be at least 60 (seconds)"
((JS_SIZE_MIB >= 30)) || die "E2E_JS_SIZE_MIB must be at least 30 (js-restart kills the node once 4 chunks of 5 MiB are in)"

# ------------------------------------------------------------- processes ---

declare -A LIVE=() # pid -> what: started here (in this shell) and not yet reaped
TMPD=""
SUB="" # the running scenario's subshell

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

stop_all() {
    local pid
    for pid in "${!LIVE[@]}"; do stop_pid "$pid" TERM; done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [[ -n $TMPD && -d $TMPD ]]; then
        if [[ ${E2E_KEEP:-0} == 1 ]]; then log "kept $TMPD"; else rm -rf -- "$TMPD"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# shellcheck source=lib/e2e_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/e2e_setup.sh"

# ----------------------------------------------- inside a scenario subshell ---
# (each scenario runs in its own subshell with `set -e`; its EXIT trap stops
# the processes it started)

NODE_PID="" NODE_PORT="" BASE="" SDIR="" DATA=""

fail() { log "FAIL: $*"; exit 1; }

start_node() { # log_name port [VAR=value...]: a node on SDIR's data dir
    local logp="$SDIR/$1" port=$2 deadline line
    shift 2
    (
        cd "$ROOT" # the node reads Rocket.toml from here, then the env
        exec env "${CLEAN_ENV[@]}" \
            SPILLWAY_ADDRESS=127.0.0.1 SPILLWAY_PORT="$port" \
            SPILLWAY_DATA_DIR="$DATA" SPILLWAY_DISK_RESERVE=0 \
            ROCKET_CLI_COLORS=false "$@" \
            "$BIN" serve
    ) >"$logp.out" 2>"$logp.err" &
    NODE_PID=$!
    LIVE[$NODE_PID]="spillway"
    deadline=$((SECONDS + 30))
    while :; do
        if line=$(grep -m1 -o 'spillway listening on http://[^[:space:]]*' "$logp.out" 2>/dev/null); then
            break
        fi
        if ! alive "$NODE_PID"; then
            tail -n 20 "$logp.out" "$logp.err" >&2 || true
            fail "the node exited before listening (log above)"
        fi
        ((SECONDS < deadline)) || fail "the node did not listen within 30 s"
        sleep 0.05
    done
    NODE_PORT=${line##*:}
    [[ $NODE_PORT =~ ^[0-9]+$ ]] || fail "cannot read the port from '$line'"
    if [[ $port != 0 && $NODE_PORT != "$port" ]]; then fail "the node listens on $NODE_PORT, not $port"; fi
    BASE="http://127.0.0.1:$NODE_PORT"
}

# Stops the node (SIGTERM) and checks its data dir with `spillway fsck`.
stop_node_and_fsck() {
    stop_pid "$NODE_PID" TERM
    NODE_PID=""
    local rc=0
    run_bounded 120 "$SDIR/fsck.log" "spillway fsck" \
        env -C "$ROOT" "${CLEAN_ENV[@]}" SPILLWAY_DATA_DIR="$DATA" SPILLWAY_DISK_RESERVE=0 "$BIN" fsck || rc=$?
    if ((rc != 0)); then
        sed 's/^/    /' "$SDIR/fsck.log" >&2
        fail "spillway fsck on the data dir exited $rc"
    fi
    log "  ok: spillway fsck: $(tail -n 1 "$SDIR/fsck.log")"
}

show() { sed 's/^/  /' "$1" >&2; } # a client's report, indented

run_py() { # scenario [args...]: tus_py.py against $BASE
    local name=$1 rc=0
    shift
    run_bounded $((SCENARIO_TIMEOUT - 20)) "$SDIR/client.log" "tus_py.py $name" \
        "$VENV/bin/python" -u "$E2E/tus_py.py" "$name" --base "$BASE" --work "$SDIR/work" \
        --data-dir "$DATA" "$@" || rc=$?
    show "$SDIR/client.log"
    ((rc == 0)) || fail "tus_py.py $name exited $rc"
}

run_js() { # scenario [args...]: tus_js.mjs against $BASE
    local name=$1 rc=0
    shift
    run_bounded $((SCENARIO_TIMEOUT - 20)) "$SDIR/client.log" "tus_js.mjs $name" \
        node "$E2E/tus_js.mjs" "$name" --base "$BASE" --work "$SDIR/work" \
        --data-dir "$DATA" --time-limit $((SCENARIO_TIMEOUT - 30)) "$@" || rc=$?
    show "$SDIR/client.log"
    ((rc == 0)) || fail "tus_js.mjs $name exited $rc"
}

sc_py_resume() {
    start_node node 0
    run_py resume --size-mib "$PY_SIZE_MIB" --chunk-mib 5
    stop_node_and_fsck
}

sc_py_checksums() {
    start_node node 0
    run_py checksums
    stop_node_and_fsck
}

sc_py_takeover() {
    start_node node 0
    if [[ ${E2E_STRICT_TAKEOVER:-1} == 1 ]]; then run_py takeover --strict-takeover; else run_py takeover; fi
    stop_node_and_fsck
}

sc_py_expire() {
    start_node node 0 SPILLWAY_UPLOAD_EXPIRY=2
    run_py expire --expiry 2
    grep -q 'removed 1 expired resumable upload' "$SDIR/node.out" "$SDIR/node.err" ||
        fail "the node's log does not say that the sweeper removed the upload"
    log "  ok: node log: $(grep -h -m1 -o 'removed 1 expired resumable upload.*' "$SDIR/node.out" "$SDIR/node.err")"
    stop_node_and_fsck
}

sc_js_resume() {
    start_node node 0
    run_js resume --size-mib "$JS_SIZE_MIB" --chunk-mib 5
    stop_node_and_fsck
}

sc_js_parallel() {
    start_node node 0
    run_js parallel --size-mib "$JS_SIZE_MIB" --chunk-mib 5
    stop_node_and_fsck
}

sc_js_restart() {
    local port chunk=$((5 << 20)) kill_at js rc=0 deadline line sent acked
    kill_at=$((4 * chunk))
    port=$(free_port)
    start_node node-1 "$port"
    log "  node 1 (pid $NODE_PID) on the fixed port $port"
    : >"$SDIR/client.log" # exists before the first look at it
    node "$E2E/tus_js.mjs" restart --base "$BASE" --work "$SDIR/work" --data-dir "$DATA" \
        --size-mib "$JS_SIZE_MIB" --chunk-mib 5 --time-limit $((SCENARIO_TIMEOUT - 30)) \
        >"$SDIR/client.log" 2>&1 &
    js=$!
    LIVE[$js]="tus_js.mjs restart"
    # Wait for a PATCH that starts at >= 4 chunks, then kill -9 the node.
    deadline=$((SECONDS + 60))
    sent=""
    while :; do
        sent=$(awk -v k="$kill_at" '$1 == "SEND" && $2 + 0 >= k { print $2; exit }' "$SDIR/client.log")
        [[ -z $sent ]] || break
        alive "$js" || { show "$SDIR/client.log"; fail "the client exited before the node was killed"; }
        ((SECONDS < deadline)) || fail "no PATCH at >= $kill_at within 60 s"
        sleep 0.02
    done
    kill -KILL "$NODE_PID"
    wait "$NODE_PID" 2>/dev/null || true
    unset "LIVE[$NODE_PID]"
    acked=$(awk '$1 == "ACK" { a = $2 } END { print a + 0 }' "$SDIR/client.log")
    log "  SIGKILLed node 1 after the client started its PATCH from $sent (last 204 the client had: $acked)"
    sleep 1
    start_node node-2 "$port"
    log "  node 2 (pid $NODE_PID) restarted on port $port with the same data dir"
    deadline=$((SECONDS + SCENARIO_TIMEOUT - 40))
    while alive "$js"; do
        if ((SECONDS >= deadline)); then stop_pid "$js" TERM; show "$SDIR/client.log"; fail "the client did not finish"; fi
        sleep 0.1
    done
    wait "$js" || rc=$?
    unset "LIVE[$js]"
    grep -v -E '^(SEND|ACK|URL) ' "$SDIR/client.log" | sed 's/^/  /' >&2
    ((rc == 0)) || fail "tus_js.mjs restart exited $rc"
    line=$(grep -h -m1 -o 'upload [0-9a-f]*: rehashing the [0-9]* bytes.*' "$SDIR/node-2.out" "$SDIR/node-2.err" || true)
    [[ -n $line ]] || fail "node 2's log does not show the partial upload's prefix being rehashed"
    log "  ok: node 2 log: $line"
    stop_node_and_fsck
}

scenario_main() { # name: runs in the subshell
    local name=$1
    trap 'stop_all' EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    SDIR="$TMPD/$name"
    DATA="$SDIR/data"
    mkdir -p "$SDIR/work" "$DATA"
    "sc_${name//-/_}"
    rm -rf -- "$SDIR/work" "$DATA" # the logs stay until the end (E2E_KEEP=1 keeps them)
}

# ------------------------------------------------------------------ main ---

PASSED=0 FAILED=0
FAILED_NAMES=()
NODE_LOGS='node*.out node*.err' # run_scenario shows their tails

main() {
    local name scenarios=() t0=$SECONDS
    mapfile -t scenarios < <(chosen_scenarios) || true
    ((${#scenarios[@]})) || die "unknown scenario in E2E_ONLY='${E2E_ONLY:-}' (known: ${ALL_SCENARIOS[*]})"
    setup_python
    setup_node
    build_node
    log "clients: tuspy $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("tuspy"))')" \
        "(Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')," \
        "requests $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("requests"))')," \
        "blake3 $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("blake3"))'));" \
        "tus-js-client $(node -p 'require(process.argv[1]).version' "$E2E/node_modules/tus-js-client/package.json")" \
        "(Node.js $(node --version), hash-wasm $(node -p 'require(process.argv[1]).version' "$E2E/node_modules/hash-wasm/package.json"))"
    local rev
    if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || rev+="+changes"
    else
        rev="not a git checkout"
    fi
    log "node: $BIN ($("$BIN" --version 2>/dev/null || echo spillway); source $rev)"

    mkdir -p "$TMP_PARENT"
    local need=$(((PY_SIZE_MIB * 3 + 512) << 20)) avail
    avail=$(df -P -B1 "$TMP_PARENT" | awk 'NR == 2 { print $4 }')
    ((avail >= need)) || die "not enough free space in $TMP_PARENT: need $((need >> 20)) MiB, have $((avail >> 20)) MiB (set E2E_TMPDIR)"
    TMPD=$(mktemp -d "$TMP_PARENT/spillway-e2e.XXXXXX")

    for name in "${scenarios[@]}"; do
        run_scenario "$name"
    done
    log "${#scenarios[@]} scenario(s) in $((SECONDS - t0)) s${FAILED_NAMES[*]:+; failed: ${FAILED_NAMES[*]}}"
    local known
    known=$(cat "$TMPD"/*/client.log 2>/dev/null | grep -c 'KNOWN ISSUE' || true)
    if ((known > 0)); then log "$known KNOWN ISSUE line(s) above (server behaviour to fix; not counted as failures)"; fi
    echo "e2e: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
