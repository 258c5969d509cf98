#!/usr/bin/env bash
# End-to-end tests of resumable uploads on a cluster (issue 18: any node
# finishes any upload) with real, unmodified tus clients: two Spillway nodes
# share one S3 bucket (a one-node Garage) and one PostgreSQL index, and each
# client script puts a round-robin proxy of its own in front of them, so that
# every request (each on its own connection) reaches another node than the
# one before, with no affinity at all.
#
#   scripts/e2e-cluster.sh                         # every scenario
#   E2E_ONLY="js-cluster" scripts/e2e-cluster.sh   # some of them
#
# Knobs (environment):
#   E2E_ONLY              scenario names to run (default: all, in the order below)
#   E2E_CLUSTER_SIZE_MIB  upload size in MiB, plus a few bytes     (24)
#   E2E_SCENARIO_TIMEOUT  seconds one scenario may take at most     (240)
#   E2E_VENV              the Python venv                           (target/e2e-venv)
#   E2E_TMPDIR            where the temp dir goes                   ($TMPDIR or /tmp)
#   E2E_KEEP=1            keep the temp dir (logs, data dirs) for a look afterwards
#   E2E_BIN               a spillway binary to test instead of building one
#
# Sets up what it needs like scripts/e2e.sh (venv, npm ci, cargo build
# --release) and installs Garage and PostgreSQL like scripts/test.sh. Each
# scenario gets a fresh Garage, PostgreSQL and two nodes (SPILLWAY_TUS_LEASE=3,
# below the prefix `e2e` of the bucket), all on 127.0.0.1. Scenarios:
#   py-cluster  tuspy (tests/e2e/tus_py.py cluster): PATCHes of varied sizes
#               alternating between the nodes, a new client resuming midway
#               (its HEAD on the node that did not create the upload); no
#               retries; the dataset checked on both nodes
#   js-cluster  tus-js-client (tests/e2e/tus_js.mjs cluster): abort mid-PATCH
#               and resume by a new Upload, parallelUploads (concatenation
#               across nodes), abort(true) (DELETE); no retries; every
#               dataset checked on both nodes
# After the client's checks, the bucket must hold no unfinished upload and
# exactly two objects per dataset (its object and its blob): nothing of an
# upload (under tus/ or staging/) stays. Garage's admin API counts them.
# Every wait is bounded; every process started here is stopped by PID. The
# last line on stdout is `e2e-cluster: N passed, M failed`; the exit status
# is 0 only when every scenario passed.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$ROOT/tests/e2e"
VENV=${E2E_VENV:-$ROOT/target/e2e-venv}
TMP_PARENT=${E2E_TMPDIR:-${TMPDIR:-/tmp}}
SIZE_MIB=${E2E_CLUSTER_SIZE_MIB:-24}
SCENARIO_TIMEOUT=${E2E_SCENARIO_TIMEOUT:-240}
ALL_SCENARIOS=(py-cluster js-cluster)

log() { printf '[e2e-cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in SIZE_MIB SCENARIO_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, not '${!v}'"
done
((SCENARIO_TIMEOUT >= 60)) || die "E2E_SCENARIO_TIMEOUT must be at least 60 (seconds)"
((SIZE_MIB >= 17)) || die "E2E_CLUSTER_SIZE_MIB must be at least 17 (more than two 8 MiB parts)"

declare -A LIVE=() # pid -> what: started here (in this shell) and not yet reaped
TMPD=""
SUB="" # the running scenario's subshell

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/garage.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/garage.sh"
# shellcheck source=lib/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/postgres.sh"
# shellcheck source=lib/e2e_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/e2e_setup.sh"

stop_all() { # the nodes first: PostgreSQL's shutdown waits for their connections to go
    local pid
    for pid in "${!LIVE[@]}"; do
        if [[ ${LIVE[$pid]} == spillway* ]]; then stop_pid "$pid" TERM; fi
    done
    for pid in "${!LIVE[@]}"; do stop_pid "$pid" TERM; done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ -n $TMPD && -d $TMPD ]]; then
        if [[ ${E2E_KEEP:-0} == 1 ]]; then log "kept $TMPD"; else rm -rf -- "$TMPD"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# No inherited GARAGE_* or PG* settings reach Garage or PostgreSQL's tools.
SERVICE_ENV=()
for var in $(compgen -e); do
    if [[ $var == GARAGE_* || $var == PG* ]]; then SERVICE_ENV+=(-u "$var"); fi
done
unset var

hex() { # n: n random lowercase hex digits
    python3 -c 'import secrets, sys; n = int(sys.argv[1]); print(secrets.token_hex(n)[:n])' "$1"
}

# ----------------------------------------------- inside a scenario subshell ---

SDIR="" BASES=""
G_PORT="" G_ADMIN="" G_BUCKET="" G_KEY="" G_SECRET="" G_TOKEN=""

fail() { log "FAIL: $*"; exit 1; }

wait_for() { # seconds what pid cmd...: until cmd succeeds; fails if pid exits or time runs out
    local within=$1 what=$2 pid=$3 deadline
    shift 3
    deadline=$((SECONDS + within))
    until "$@" >/dev/null 2>&1; do
        alive "$pid" || fail "$what exited before it was ready"
        ((SECONDS < deadline)) || fail "$what was not ready within ${within}s"
        sleep 0.1
    done
}

bucket_info() { # the JSON of Garage's admin GetBucketInfo for the bucket
    curl -sf --max-time 5 -H "Authorization: Bearer $G_TOKEN" \
        "http://127.0.0.1:$G_ADMIN/v2/GetBucketInfo?globalAlias=$G_BUCKET"
}

start_garage() { # a one-node Garage with a key and a bucket it may use
    G_KEY="GK$(hex 24)" G_SECRET=$(hex 64) G_BUCKET="spillway-e2e-$(hex 8)"
    start_garage_single "$SDIR/garage" "$G_KEY" "$G_SECRET" "$G_BUCKET" garage || fail "garage did not start"
    G_PORT=${GARAGE_S3##*:} G_ADMIN=${GARAGE_ADMIN##*:} G_TOKEN=$GARAGE_TOKEN
    wait_for 30 "garage (log: $SDIR/garage/garage.log)" "$GARAGE_PID" bucket_info
    log "  garage (pid $GARAGE_PID): S3 on $GARAGE_S3, bucket $G_BUCKET"
}

start_postgres() { # a PostgreSQL on a free port with an empty database `spillway`
    local dir="$SDIR/pg"
    start_postgres_server "$dir" -c fsync=off -c synchronous_commit=off -c full_page_writes=off ||
        fail "postgres did not start"
    pg_sql "$dir/createdb.log" "CREATE DATABASE spillway" ||
        fail "CREATE DATABASE failed: $(tail -n 5 "$dir/createdb.log")"
    log "  postgres (pid $PG_PID) on 127.0.0.1:$PG_PORT"
}

start_cluster_node() { # name: a node on the Garage and PostgreSQL above; appends its URL to BASES
    local name=$1 data="$SDIR/$1-data" logp="$SDIR/$1" pid deadline line port
    mkdir -p "$data"
    (
        cd "$ROOT" # the node reads Rocket.toml from here, then the env
        exec env "${CLEAN_ENV[@]}" \
            SPILLWAY_ADDRESS=127.0.0.1 SPILLWAY_PORT=0 SPILLWAY_DATA_DIR="$data" SPILLWAY_DISK_RESERVE=0 \
            SPILLWAY_MAX_DATASET_SIZE="1 GiB" SPILLWAY_TUS_LEASE=3 \
            SPILLWAY_STORAGE=s3 SPILLWAY_S3__ENDPOINT="http://127.0.0.1:$G_PORT" SPILLWAY_S3__REGION=garage \
            SPILLWAY_S3__BUCKET="$G_BUCKET" SPILLWAY_S3__ACCESS_KEY_ID="$G_KEY" \
            SPILLWAY_S3__SECRET_ACCESS_KEY="$G_SECRET" SPILLWAY_S3__PATH_STYLE=true SPILLWAY_S3__PREFIX=e2e \
            SPILLWAY_INDEX=postgres SPILLWAY_POSTGRES_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/spillway" \
            ROCKET_CLI_COLORS=false "$BIN" serve
    ) >"$logp.out" 2>"$logp.err" &
    pid=$!
    LIVE[$pid]="spillway $name"
    deadline=$((SECONDS + 30))
    until line=$(grep -m1 -o 'spillway listening on http://[^[:space:]]*' "$logp.out" 2>/dev/null); do
        if ! alive "$pid"; then
            tail -n 20 "$logp.out" "$logp.err" >&2 || true
            fail "node $name exited before listening (log above)"
        fi
        ((SECONDS < deadline)) || fail "node $name did not listen within 30 s"
        sleep 0.05
    done
    port=${line##*:}
    [[ $port =~ ^[0-9]+$ ]] || fail "cannot read node $name's port from '$line'"
    BASES+="${BASES:+,}http://127.0.0.1:$port"
    log "  node $name (pid $pid) on 127.0.0.1:$port"
}

start_cluster() {
    start_garage
    start_postgres
    BASES=""
    start_cluster_node A
    start_cluster_node B
}

# The bucket holds no unfinished upload and exactly two objects (the
# dataset's and its blob) per dataset the catalog lists; Garage's counters
# settle within a few seconds, so this waits (bounded) for them.
check_bucket() {
    local datasets info verdict="" deadline=$((SECONDS + 15))
    datasets=$(curl -sf --max-time 30 "${BASES%%,*}/datasets?limit=10000" |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)))') || fail "cannot list the datasets"
    while :; do
        info=$(bucket_info) || fail "cannot read the bucket's counters"
        verdict=$(python3 -c '
import json, sys
info, datasets = json.loads(sys.argv[1]), int(sys.argv[2])
wrong = [k + " = " + str(info[k]) for k in ("unfinishedUploads", "unfinishedMultipartUploads") if info[k] != 0]
objects = info["objects"]
if objects != 2 * datasets:
    wrong.append(f"objects = {objects}, expected {2 * datasets} for {datasets} datasets")
print("; ".join(wrong))' "$info" "$datasets")
        [[ -n $verdict ]] || break
        ((SECONDS < deadline)) || fail "the bucket is not clean after the uploads: $verdict"
        sleep 0.2
    done
    log "  ok: the bucket holds $((2 * datasets)) objects for $datasets datasets and no unfinished upload"
}

show() { sed 's/^/  /' "$1" >&2; } # a client's report, indented

sc_py_cluster() {
    local rc=0
    start_cluster
    run_bounded $((SCENARIO_TIMEOUT - 60)) "$SDIR/client.log" "tus_py.py cluster" \
        "$VENV/bin/python" -u "$E2E/tus_py.py" cluster --bases "$BASES" --work "$SDIR/work" \
        --size-mib "$SIZE_MIB" || rc=$?
    show "$SDIR/client.log"
    ((rc == 0)) || fail "tus_py.py cluster exited $rc"
    check_bucket
}

sc_js_cluster() {
    local rc=0
    start_cluster
    run_bounded $((SCENARIO_TIMEOUT - 60)) "$SDIR/client.log" "tus_js.mjs cluster" \
        node "$E2E/tus_js.mjs" cluster --bases "$BASES" --work "$SDIR/work" --size-mib "$SIZE_MIB" \
        --chunk-mib 3 --time-limit $((SCENARIO_TIMEOUT - 70)) || rc=$?
    show "$SDIR/client.log"
    ((rc == 0)) || fail "tus_js.mjs cluster exited $rc"
    check_bucket
}

scenario_main() { # name: runs in the subshell
    local name=$1
    trap 'stop_all' EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    SDIR="$TMPD/$name"
    mkdir -p "$SDIR/work"
    "sc_${name//-/_}"
    rm -rf -- "$SDIR/work"
}

# ------------------------------------------------------------------ main ---

PASSED=0 FAILED=0
FAILED_NAMES=()
NODE_LOGS='[AB].out [AB].err' # run_scenario shows their tails

main() {
    local name scenarios=() t0=$SECONDS
    mapfile -t scenarios < <(chosen_scenarios) || true
    ((${#scenarios[@]})) || die "unknown scenario in E2E_ONLY='${E2E_ONLY:-}' (known: ${ALL_SCENARIOS[*]})"
    command -v curl >/dev/null || apt_install curl || die "curl is missing and could not be installed"
    ensure_garage
    ensure_postgres
    setup_python
    setup_node
    build_node
    log "node: $BIN ($("$BIN" --version 2>/dev/null || echo spillway))"

    mkdir -p "$TMP_PARENT"
    TMPD=$(mktemp -d "$TMP_PARENT/spillway-e2e-cluster.XXXXXX")
    for name in "${scenarios[@]}"; do
        run_scenario "$name"
    done
    log "${#scenarios[@]} scenario(s) in $((SECONDS - t0)) s${FAILED_NAMES[*]:+; failed: ${FAILED_NAMES[*]}}"
    echo "e2e-cluster: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
