# shellcheck shell=bash
# What the end-to-end scripts (scripts/e2e.sh, scripts/e2e-cluster.sh) set
# up before their scenarios: the Python venv with tuspy, tus-js-client from
# npm, the node binary, and an environment free of inherited SPILLWAY_* and
# ROCKET_* settings. The caller defines `log` and `die`, ROOT (the checkout),
# E2E (tests/e2e) and VENV (the venv's directory), then sources this file;
# build_node sets BIN. run_scenario runs the caller's `scenario_main NAME`
# in a subshell, bounded by SCENARIO_TIMEOUT, counting PASSED and FAILED
# (FAILED_NAMES), with the tails of $TMPD/NAME/$NODE_LOGS on failure; it
# uses the caller's LIVE, alive and stop_pid.

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- set-up ---

setup_python() {
    local stamp="$VENV/.e2e-requirements.txt"
    if [[ -x $VENV/bin/python && -f $stamp ]] && cmp -s "$stamp" "$E2E/requirements.txt" &&
        "$VENV/bin/python" -c 'import tusclient, blake3, requests' 2>/dev/null; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 is missing"
    log "creating the venv $VENV (tuspy, blake3, requests)"
    rm -rf -- "$VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$E2E/requirements.txt" >&2 ||
        die "pip install -r tests/e2e/requirements.txt failed"
    cp "$E2E/requirements.txt" "$stamp"
}

setup_node() {
    local stamp="$E2E/node_modules/.e2e-package-lock.json"
    command -v node >/dev/null || die "node (Node.js >= 18) is missing"
    command -v npm >/dev/null || die "npm is missing"
    if [[ -f $stamp ]] && cmp -s "$stamp" "$E2E/package-lock.json" && [[ -d $E2E/node_modules/tus-js-client ]]; then
        return 0
    fi
    log "npm ci in tests/e2e (tus-js-client, hash-wasm)"
    (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error) >&2 || die "npm ci failed"
    cp "$E2E/package-lock.json" "$stamp"
}

# Only this script's settings reach the node: no inherited SPILLWAY_* or
# ROCKET_* (tokens, spool dir, port...).
CLEAN_ENV=()
for var in $(compgen -e); do
    if [[ $var == SPILLWAY_* || $var == ROCKET_* ]]; then CLEAN_ENV+=(-u "$var"); fi
done
unset var

BIN=""
build_node() {
    if [[ -n ${E2E_BIN:-} ]]; then
        BIN=$E2E_BIN
        [[ -x $BIN ]] || die "E2E_BIN=$BIN is not an executable"
        log "using the node binary E2E_BIN=$BIN (no build)"
        return 0
    fi
    log "building the node: cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    local target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
    BIN="$target_dir/release/spillway"
    [[ -x $BIN ]] || die "no binary at $BIN"
}

run_scenario() {
    local name=$1 rc=0 t0=$SECONDS deadline
    log "--- $name"
    set +e
    (
        set -e
        scenario_main "$name"
    ) &
    SUB=$!
    set -e
    LIVE[$SUB]="scenario $name"
    deadline=$((SECONDS + SCENARIO_TIMEOUT))
    while alive "$SUB"; do
        if ((SECONDS >= deadline)); then
            log "$name: still running after ${SCENARIO_TIMEOUT}s; stopping it"
            stop_pid "$SUB" TERM
            rc=124
            break
        fi
        sleep 0.2
    done
    if [[ -n ${LIVE[$SUB]:-} ]]; then
        wait "$SUB" || rc=$?
        unset "LIVE[$SUB]"
    fi
    SUB=""
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        log "PASS $name ($((SECONDS - t0)) s)"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        log "FAIL $name (exit $rc, $((SECONDS - t0)) s); logs in $TMPD/$name"
        local f
        # shellcheck disable=SC2086 # NODE_LOGS: globs, split and expanded here
        for f in "$TMPD/$name"/$NODE_LOGS; do
            [[ -s $f ]] || continue
            log "tail of $f:"
            tail -n 15 "$f" | sed 's/^/    /' >&2
        done
    fi
}

chosen_scenarios() { # one per line: E2E_ONLY's, or all of ALL_SCENARIOS; nothing if one is unknown
    local name
    if [[ -z ${E2E_ONLY:-} ]]; then
        printf '%s\n' "${ALL_SCENARIOS[@]}"
        return
    fi
    for name in $E2E_ONLY; do
        [[ " ${ALL_SCENARIOS[*]} " == *" $name "* ]] || return 0
    done
    printf '%s\n' $E2E_ONLY
}
