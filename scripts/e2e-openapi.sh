#!/usr/bin/env bash
# Checks the OpenAPI document (static/openapi.json, served at /openapi.json)
# against a live node with schemathesis (PyPI): for every documented
# operation, random valid and invalid requests, and for the documented links
# (upload -> record, signed URL -> download, tus creation -> HEAD/PATCH/DELETE)
# stateful sequences. Three runs: with an admin token (everything can
# succeed), with a read token (writes answer 403) and with no token (401).
# Checks on every response:
#   not_a_server_error            no 5xx
#   status_code_conformance       the status is documented for the operation
#   content_type_conformance      the Content-Type is documented for that status
#   response_schema_conformance   the body matches the documented schema
#   response_headers_conformance  documented required headers are there and match
# Plus: the document the node serves is byte for byte static/openapi.json
# (it is compiled in; a stale binary fails here), and the node's access log
# shows no 5xx, and it is still healthy at the end.
#
#   scripts/e2e-openapi.sh
#
# Knobs (environment):
#   OPENAPI_MAX_EXAMPLES       test cases per operation and phase, admin run (25)
#   OPENAPI_STATEFUL_EXAMPLES  stateful scenarios (link sequences), admin run (150)
#   OPENAPI_AUTH_EXAMPLES      test cases per operation and phase, read-token
#                              and no-token runs                          (5)
#   OPENAPI_SEED               schemathesis seed (fixed: reproducible)     (1)
#   OPENAPI_TIMEOUT            seconds one schemathesis run may take     (150)
#   OPENAPI_VENV               the Python venv       (target/e2e-venv-openapi)
#   OPENAPI_BIN                use this node binary instead of building one
#   OPENAPI_KEEP=1             keep the temp dir (node log, HAR and JUnit reports)
#
# Sets up what it needs on a fresh machine: a venv with schemathesis, and
# `cargo build --release --locked`. The node runs on 127.0.0.1 (port 0, read
# from its `spillway listening on` line) with its own temp data dir,
# SPILLWAY_DISK_RESERVE=0, SPILLWAY_MAX_DATASET_SIZE=16 MiB, and two tokens
# (admin, read). Nothing is excluded: tus bodies (application/offset+octet-
# stream) go through schemathesis' binary serializer, registered by a hook,
# and the tus operations on /uploads/{id} get uploads made beforehand (random
# ids only ever reach the 404s).
# Every wait is bounded; the node is stopped by PID. The last line on stdout
# is `openapi: N passed, M failed` (one per schemathesis test — each
# operation, and the stateful run — plus this script's own checks); the exit
# status is 0 only when M is 0.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OPENAPI_VENV:-$ROOT/target/e2e-venv-openapi}
MAX_EXAMPLES=${OPENAPI_MAX_EXAMPLES:-25}
STATEFUL_EXAMPLES=${OPENAPI_STATEFUL_EXAMPLES:-150}
AUTH_EXAMPLES=${OPENAPI_AUTH_EXAMPLES:-5}
SEED=${OPENAPI_SEED:-1}
ST_TIMEOUT=${OPENAPI_TIMEOUT:-150}
SCHEMATHESIS_REQ="schemathesis==4.32.5"
TOKEN="openapi-e2e-admin-token"
READ_TOKEN="openapi-e2e-read-token"

PASSED=0
FAILED=0
log() { printf '[openapi %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { # the set-up failed: counts as one more failure
    log "ERROR: $*"
    echo "openapi: $PASSED passed, $((FAILED + 1)) failed"
    exit 1
}

for v in MAX_EXAMPLES STATEFUL_EXAMPLES AUTH_EXAMPLES SEED ST_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "OPENAPI_$v must be a whole number, not '${!v}'"
done

# ------------------------------------------------------------- processes ---

NODE_PID=""
TMPD=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

stop_node() {
    [[ -n $NODE_PID ]] || return 0
    terminate "$NODE_PID" "the node"
    NODE_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_node
    if [[ -n $TMPD && -d $TMPD ]]; then
        if [[ ${OPENAPI_KEEP:-0} == 1 ]]; then log "kept $TMPD"; else rm -rf -- "$TMPD"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- set-up ---

command -v python3 >/dev/null || die "python3 is missing"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "${SCHEMATHESIS_REQ#schemathesis==}"; then
    log "creating the venv $VENV ($SCHEMATHESIS_REQ)"
    rm -rf -- "$VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$SCHEMATHESIS_REQ" >&2 ||
        die "pip install $SCHEMATHESIS_REQ failed"
fi

if [[ -n ${OPENAPI_BIN:-} ]]; then
    [[ -x $OPENAPI_BIN ]] || die "OPENAPI_BIN=$OPENAPI_BIN is not an executable"
    BIN=$(cd "$(dirname "$OPENAPI_BIN")" && pwd)/$(basename "$OPENAPI_BIN")
    log "using the node binary OPENAPI_BIN=$BIN (no build)"
else
    log "building the node: cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked) >&2 || die "cargo build --release failed"
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
    BIN="$target_dir/release/spillway"
    [[ -x $BIN ]] || die "no binary at $BIN"
fi

TMPD=$(mktemp -d "${TMPDIR:-/tmp}/spillway-openapi.XXXXXX")
mkdir -p "$TMPD/data" "$TMPD/hooks" "$TMPD/reports"

# Only this script's settings reach the node: no inherited SPILLWAY_* or ROCKET_*.
CLEAN_ENV=()
for var in $(compgen -e); do
    if [[ $var == SPILLWAY_* || $var == ROCKET_* ]]; then CLEAN_ENV+=(-u "$var"); fi
done

log "starting the node"
(
    cd "$TMPD"
    exec env "${CLEAN_ENV[@]}" \
        ROCKET_CONFIG="$TMPD/none.toml" \
        ROCKET_CLI_COLORS=false \
        SPILLWAY_ADDRESS=127.0.0.1 \
        SPILLWAY_PORT=0 \
        SPILLWAY_DATA_DIR="$TMPD/data" \
        SPILLWAY_DISK_RESERVE=0 \
        SPILLWAY_MAX_DATASET_SIZE=16777216 \
        SPILLWAY_STALL_TIMEOUT=5 \
        SPILLWAY_TOKENS="[{name=\"admin\",token=\"$TOKEN\",scopes=[\"admin\"]},{name=\"reader\",token=\"$READ_TOKEN\",scopes=[\"read\"]}]" \
        "$BIN" >"$TMPD/node.out" 2>"$TMPD/node.log" </dev/null
) &
NODE_PID=$!

PORT=""
for ((i = 0; i < 300; i++)); do
    if [[ -s $TMPD/node.out ]]; then
        PORT=$(sed -n 's|^spillway listening on http://127\.0\.0\.1:\([0-9]\+\)$|\1|p' "$TMPD/node.out" | head -n1)
        [[ -n $PORT ]] && break
    fi
    alive "$NODE_PID" || break
    sleep 0.1
done
if [[ -z $PORT ]]; then
    tail -n 20 "$TMPD/node.log" >&2 || true
    alive "$NODE_PID" || die "the node exited at start (its log is above)"
    die "the node did not say where it listens within 30 s"
fi
BASE="http://127.0.0.1:$PORT"
log "node (pid $NODE_PID) at $BASE"

# Helper: small HTTP calls with a bounded timeout (stdlib only).
cat >"$TMPD/calls.py" <<'EOF'
import sys, urllib.request, urllib.error

def call(method, url, headers=None, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()

if __name__ == "__main__":
    what, base = sys.argv[1], sys.argv[2]
    if what == "served":  # the served document, to stdout
        status, _, body = call("GET", base + "/openapi.json")
        if status != 200:
            sys.exit(f"GET /openapi.json answered {status}")
        sys.stdout.buffer.write(body)
    elif what == "health":
        status, _, _ = call("GET", base + "/health")
        sys.exit(0 if status == 200 else f"GET /health answered {status}")
    elif what == "upload":  # a resumable upload for the tus operations: prints its id
        token, key, length = sys.argv[3], sys.argv[4], sys.argv[5]
        import base64
        status, headers, _ = call("POST", base + "/uploads", {
            "Authorization": "Bearer " + token, "Tus-Resumable": "1.0.0", "Upload-Length": length,
            "Upload-Metadata": "key " + base64.b64encode(key.encode()).decode()})
        location = {k.lower(): v for k, v in headers.items()}.get("location", "")
        if status != 201 or not location.startswith("/uploads/"):
            sys.exit(f"POST /uploads answered {status} (Location: {location!r})")
        print(location.rsplit("/", 1)[1])
EOF

check() { # name, then the command: counts one of this script's own checks
    local name=$1
    shift
    if "$@"; then
        PASSED=$((PASSED + 1))
        log "ok: $name"
    else
        FAILED=$((FAILED + 1))
        log "FAILED: $name"
    fi
}

served_matches() {
    timeout 30 python3 "$TMPD/calls.py" served "$BASE" >"$TMPD/served.json" || return 1
    if ! cmp -s "$TMPD/served.json" "$ROOT/static/openapi.json"; then
        log "GET /openapi.json is not static/openapi.json: the binary is stale (rebuild) or the file changed"
        return 1
    fi
}
check "GET /openapi.json serves static/openapi.json" served_matches

# The tus operations on {id} need uploads that exist: schemathesis reaches
# them through the documented links too, but only when a random creation
# succeeds, so each gets one made here (a HEAD one, a PATCH one at offset 0,
# a DELETE one). Random ids still cover the 404s.
for op in head patch delete; do
    id=$(timeout 30 python3 "$TMPD/calls.py" upload "$BASE" "$TOKEN" "openapi/tus-$op.bin" 64) ||
        die "could not create a resumable upload for the tus $op operation"
    declare "UPLOAD_${op^^}=$id"
done

cat >"$TMPD/schemathesis.toml" <<EOF
# Generated by scripts/e2e-openapi.sh.
[phases.stateful]
max-steps = 12

[phases.stateful.generation]
max-examples = $STATEFUL_EXAMPLES

[[operations]]
include-operation-id = "tusHead"
parameters = { id = "$UPLOAD_HEAD" }

[[operations]]
include-operation-id = "tusPatch"
parameters = { id = "$UPLOAD_PATCH" }

[[operations]]
include-operation-id = "tusTerminate"
parameters = { id = "$UPLOAD_DELETE" }
EOF

# tus bodies are application/offset+octet-stream: bytes, like application/octet-stream.
# A dataset keeps the Content-Type it was uploaded with, and schemathesis
# uploads with YAML types too (the PUT body is `*/*`): its stateful phase then
# parses the dataset's bytes served back under that type as YAML, and fails
# (ST110) on bytes that are not YAML. The node itself never answers in YAML,
# so YAML answers are dataset bytes: parsed when they parse, else text.
cat >"$TMPD/hooks/spillway_openapi_hooks.py" <<'EOF'
import schemathesis
from schemathesis.core import media_types
from schemathesis.core.deserialization import deserialize_yaml

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@schemathesis.deserializer(*media_types.YAML_MEDIA_TYPES)
def dataset_bytes_or_yaml(_ctx, response):
    try:
        return deserialize_yaml(response.content.decode(response.encoding or "utf-8"))
    except Exception:
        return response.content.decode("utf-8", "replace")
EOF

# One schemathesis run: name, examples per operation and phase, phases, then
# extra `st run` arguments. Adds one count per JUnit testcase (each
# operation, and the stateful run): passed unless it has a failure or error.
# No report at all, or a non-zero exit with no failing test, is one failure.
run_schemathesis() {
    local name=$1 examples=$2 phases=$3 rc=0 passed failed
    shift 3
    log "schemathesis ($name): $examples examples per operation and phase ($phases), seed $SEED"
    mkdir -p "$TMPD/reports/$name"
    (
        cd "$TMPD"
        exec env PYTHONPATH="$TMPD/hooks" SCHEMATHESIS_HOOKS=spillway_openapi_hooks \
            timeout -k 10 "$ST_TIMEOUT" "$VENV/bin/st" --config-file "$TMPD/schemathesis.toml" --no-color run \
            "$BASE/openapi.json" \
            --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
            --phases "$phases" \
            --max-examples "$examples" \
            --seed "$SEED" \
            --request-timeout 30 \
            --generation-database none \
            --report junit,har --report-dir "$TMPD/reports/$name" \
            "$@"
    ) >"$TMPD/schemathesis-$name.log" 2>&1 || rc=$?
    cat "$TMPD/schemathesis-$name.log" >&2
    if ((rc == 124 || rc == 137)); then
        log "schemathesis ($name) did not finish within $ST_TIMEOUT s"
    fi
    read -r passed failed < <(python3 - "$TMPD/reports/$name" "$name" <<'EOF'
import glob, sys
import xml.etree.ElementTree as ET
files = glob.glob(sys.argv[1] + "/junit*.xml")
if not files:
    print(0, 1)
    sys.exit()
passed = failed = 0
for case in ET.parse(files[0]).getroot().iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
        print(f"[openapi] schemathesis ({sys.argv[2]}) failed: {case.get('name')}", file=sys.stderr)
    else:
        passed += 1
print(passed, failed)
EOF
    )
    if ((rc != 0 && failed == 0)); then
        log "schemathesis ($name) exited with $rc but reported no failing test"
        failed=1
    fi
    log "schemathesis ($name): $passed passed, $failed failed"
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
}

# The whole API with an admin token: every operation can succeed.
run_schemathesis admin "$MAX_EXAMPLES" examples,coverage,fuzzing,stateful \
    --header "Authorization: Bearer $TOKEN"
# A read token: writes answer 403 (documented on each operation that needs more).
run_schemathesis read "$AUTH_EXAMPLES" examples,coverage,fuzzing \
    --header "Authorization: Bearer $READ_TOKEN"
# No token: 401 with WWW-Authenticate wherever a token is needed.
run_schemathesis anonymous "$AUTH_EXAMPLES" examples,coverage,fuzzing

no_5xx_logged() {
    local n
    n=$(grep -c 'spillway::access.* status=5[0-9][0-9] ' "$TMPD/node.log" || true)
    if ((n > 0)); then
        grep 'spillway::access.* status=5[0-9][0-9] ' "$TMPD/node.log" | head -n 10 >&2
        log "the node answered $n request(s) with a 5xx"
        return 1
    fi
}
check "the node is still healthy" timeout 15 python3 "$TMPD/calls.py" health "$BASE"
check "the node is still running" alive "$NODE_PID"
# After a clean stop, which writes every log line the node still held.
stop_node
check "no 5xx in the node's access log" no_5xx_logged
echo "openapi: $PASSED passed, $FAILED failed"
((FAILED == 0))
