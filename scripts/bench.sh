#!/usr/bin/env bash
# Spillway upload and listing benchmark, against nginx + WebDAV as reference.
#
#   scripts/bench.sh                 # full run (4 GiB single, 16 x 256 MiB, 1M rows)
#   BENCH_QUICK=1 scripts/bench.sh   # quick check (256 MiB, 8 x 32 MiB, 20k rows, 1 run)
#
# Knobs (environment; sizes take K/M/G/T, binary, e.g. 4G, 256MiB, or bytes):
#   BENCH_SIZE       single-stream upload size          (4G;    quick 256M)
#   BENCH_CONC       concurrent uploads                 (16;    quick 8)
#   BENCH_CONC_SIZE  size of each concurrent upload     (256M;  quick 32M)
#   BENCH_RUNS       runs per upload measurement        (3;     quick 1)
#   BENCH_ROWS       catalog rows for the listing test  (1000000; quick 20000)
#   BENCH_LIST_RUNS  requests per listing measurement   (11)
#   BENCH_TMPDIR     where the temp dir goes            ($TMPDIR or /tmp)
#   BENCH_START_TIMEOUT  seconds to wait for the node to listen with all rows (900)
#   BENCH_WARMUP     1: one uncounted single upload to each server first (1)
#
# What it does: builds the node (cargo build --release), installs nginx (with
# ngx_http_dav_module) and anything else missing from Debian's packages,
# generates the upload bodies once in a temp dir, then measures, node and
# nginx interleaved, each on 127.0.0.1 only:
#   1. one upload of BENCH_SIZE with curl -T (Content-Length): MB/s, and the
#      peak RSS (VmHWM) of a fresh server process per run;
#   2. BENCH_CONC curl uploads of BENCH_CONC_SIZE at once: aggregate MB/s
#      (total bytes / wall time) and peak RSS;
#   3. GET /datasets?limit=1000, first page and a deep page (after= the key of
#      row 90%), on a node whose index holds BENCH_ROWS rows (inserted with
#      python3's sqlite3 while the node is stopped).
# Medians are printed in a table with the targets. Everything lives in a temp
# dir removed on exit; only processes started here are stopped, by PID.
#
# Not controlled: the page cache cannot be dropped (not allowed here), so the
# bodies are read from the page cache and writes land in it; the machine may
# be shared. Spillway fsyncs every upload before answering (its contract);
# nginx does not, so an extra informative row adds an fsync of nginx's file.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk, sort and printf

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS="$ROOT/scripts/bench"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- knobs ----

to_bytes() { # 4G, 4GiB, 256M, 256MiB, 1048576 -> bytes (binary units)
    local v=$1
    if [[ $v =~ ^([0-9]+)[[:space:]]*([KkMmGgTt]?)(i?[Bb])?$ ]]; then
        local n=${BASH_REMATCH[1]}
        case ${BASH_REMATCH[2]} in
            "") echo "$n" ;;
            [Kk]) echo $((n << 10)) ;;
            [Mm]) echo $((n << 20)) ;;
            [Gg]) echo $((n << 30)) ;;
            [Tt]) echo $((n << 40)) ;;
        esac
    else
        die "cannot read size '$v' (use e.g. 4G, 256MiB or plain bytes)"
    fi
}

positive_int() { # name value
    [[ $2 =~ ^[0-9]+$ && $2 -gt 0 ]] || die "$1 must be a positive whole number, not '$2'"
    echo "$2"
}

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    d_size=256M d_conc=8 d_conc_size=32M d_runs=1 d_rows=20000
else
    d_size=4G d_conc=16 d_conc_size=256M d_runs=3 d_rows=1000000
fi
SIZE=$(to_bytes "${BENCH_SIZE:-$d_size}")
CONC=$(positive_int BENCH_CONC "${BENCH_CONC:-$d_conc}")
CONC_SIZE=$(to_bytes "${BENCH_CONC_SIZE:-$d_conc_size}")
RUNS=$(positive_int BENCH_RUNS "${BENCH_RUNS:-$d_runs}")
ROWS=$(positive_int BENCH_ROWS "${BENCH_ROWS:-$d_rows}")
LIST_RUNS=$(positive_int BENCH_LIST_RUNS "${BENCH_LIST_RUNS:-11}")
START_TIMEOUT=$(positive_int BENCH_START_TIMEOUT "${BENCH_START_TIMEOUT:-900}")
WARMUP=${BENCH_WARMUP:-1}
[[ $WARMUP == 0 || $WARMUP == 1 ]] || die "BENCH_WARMUP must be 0 or 1, not '$WARMUP'"
TMP_PARENT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
((SIZE > 0 && CONC_SIZE > 0)) || die "BENCH_SIZE and BENCH_CONC_SIZE must be > 0"

SPOOL_MEMORY_MIB=8 # the node's default spool_memory, kept as is
LIST_LIMIT=1000
# Targets.
T_RATIO=0.9
T_RSS_SINGLE=64
T_RSS_CONC=$((CONC * SPOOL_MEMORY_MIB + 64))
T_LIST_MS=10

# ------------------------------------------------------------- processes ---

declare -A LIVE=()   # pid -> what, for every process started and not yet reaped
TMPD=""

# shellcheck disable=SC2034 # read by lib/common.sh
STOP_WAIT_TENTHS=150 # nginx and a node with 1M rows may take a while to stop
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${!LIVE[@]}"; do
        stop_pid "$pid" TERM
    done
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ -n $TMPD && -d $TMPD ]]; then rm -rf -- "$TMPD"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { echo "$EPOCHREALTIME"; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a - b }'; }

median() { # values... -> median (mean of the two middle ones for an even count)
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "nan"; exit }
              if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

vmhwm_mib() { # pid -> peak RSS in MiB
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) print "nan" }' \
        "/proc/$1/status"
}

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_s() { # pid -> user+system CPU seconds the process used so far
    awk -v tck="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / tck }' "/proc/$1/stat"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------- dependencies ---

NGINX=""
NGINX_PKG=""


find_nginx() {
    NGINX=$(command -v nginx 2>/dev/null || true)
    [[ -n $NGINX ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; } || true
    [[ -n $NGINX ]] && "$NGINX" -V 2>&1 | grep -q -- '--with-http_dav_module'
}

ensure_deps() {
    local need=() pkg
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3)
    command -v awk >/dev/null || need+=(gawk)
    if ((${#need[@]})); then apt_install "${need[@]}" || die "cannot install ${need[*]}"; fi
    python3 -c 'import sqlite3' 2>/dev/null || die "python3 lacks the sqlite3 module"
    if ! find_nginx; then
        # On Debian 12 the `nginx` package is the binary (with the dav module
        # compiled in); nginx-light/-core/-full/-extras are metapackages on it.
        for pkg in nginx nginx-light nginx-core nginx-full nginx-extras; do
            apt_install "$pkg" || { log "could not install $pkg"; continue; }
            if find_nginx; then NGINX_PKG=$pkg; break; fi
            log "$pkg: nginx -V shows no --with-http_dav_module"
        done
        find_nginx || die "no Debian nginx package with ngx_http_dav_module installed"
    fi
    NGINX_PKG=$(dpkg -S "$(readlink -f "$NGINX")" 2>/dev/null | cut -d: -f1 | head -n1 || true)
    NGINX_PKG=${NGINX_PKG:-unknown}
}

# ----------------------------------------------------------------- node ----

BIN=""
NODE_PID=""
NODE_PORT=""

start_node() { # data_dir log_prefix timeout_s
    local dir=$1 logp=$2 timeout=$3 deadline line var
    local -a unset_env=()
    # Only this script's settings: no inherited SPILLWAY_* (tokens, spool...).
    for var in $(compgen -e); do
        if [[ $var == SPILLWAY_* ]]; then unset_env+=(-u "$var"); fi
    done
    mkdir -p "$dir"
    (
        cd "$ROOT" # the node reads Rocket.toml from here, then the env
        exec env "${unset_env[@]}" \
            SPILLWAY_ADDRESS=127.0.0.1 SPILLWAY_PORT=0 \
            SPILLWAY_DATA_DIR="$dir" SPILLWAY_DISK_RESERVE=0 \
            SPILLWAY_MAX_DATASET_SIZE=$((1 << 40)) \
            ROCKET_CLI_COLORS=false \
            "$BIN" serve
    ) >"$logp.out" 2>"$logp.err" &
    NODE_PID=$!
    LIVE[$NODE_PID]="spillway"
    deadline=$((SECONDS + timeout))
    while :; do
        if line=$(grep -m1 -o 'spillway listening on http://[^[:space:]]*' "$logp.out" 2>/dev/null); then
            break
        fi
        if ! alive "$NODE_PID"; then
            tail -n 20 "$logp.out" "$logp.err" >&2 || true
            stop_pid "$NODE_PID"
            die "the node exited before listening (log above)"
        fi
        ((SECONDS < deadline)) || die "the node did not listen within ${timeout}s"
        sleep 0.1
    done
    NODE_PORT=${line##*:}
    [[ $NODE_PORT =~ ^[0-9]+$ ]] || die "cannot read the port from '$line'"
}

stop_node() { stop_pid "$NODE_PID" TERM; NODE_PID=""; }

# ---------------------------------------------------------------- nginx ----

NGINX_PID=""
NGINX_PORT=""
NGX="" # nginx's prefix dir; root and client_body_temp_path are both in it

start_nginx() {
    local attempt i code user_line=""
    [[ $EUID -eq 0 ]] && user_line="user root;"
    rm -rf -- "$NGX"
    mkdir -p "$NGX/root" "$NGX/body" "$NGX/tmp"
    for ((attempt = 1; attempt <= 5; attempt++)); do
        NGINX_PORT=$(free_port)
        cat >"$NGX/nginx.conf" <<EOF
$user_line
daemon off;
master_process off;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    client_max_body_size 0;
    client_body_temp_path $NGX/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $NGX/root;
        location / {
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }
    }
}
EOF
        "$NGINX" -e "$NGX/error.log" -p "$NGX" -c "$NGX/nginx.conf" >"$NGX/stdout" 2>&1 &
        NGINX_PID=$!
        LIVE[$NGINX_PID]="nginx"
        for ((i = 0; i < 100; i++)); do
            alive "$NGINX_PID" || break
            code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' \
                "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null || true)
            if [[ -n $code && $code != 000 ]]; then return 0; fi
            sleep 0.1
        done
        log "nginx did not come up on port $NGINX_PORT (attempt $attempt):"
        tail -n 5 "$NGX/error.log" "$NGX/stdout" >&2 2>/dev/null || true
        stop_pid "$NGINX_PID"
    done
    die "cannot start nginx"
}

stop_nginx() { stop_pid "$NGINX_PID" TERM; NGINX_PID=""; }

# -------------------------------------------------------------- uploads ----

max_time_for() { echo $((60 + $1 / 5000000)); } # allow >= 5 MB/s

CURL_PUT=()
curl_put_args() { # url file max_time -> CURL_PUT, a curl command printing
    # "code speed_upload time_total"; no Expect: 100-continue for either
    # server (saves a round trip). Run as `"${CURL_PUT[@]}" &` so that $! is
    # curl itself.
    CURL_PUT=(curl -sS --max-time "$3" -H 'Expect:' -o /dev/null
        -w '%{http_code} %{speed_upload} %{time_total}\n' -T "$2" "$1")
}

put_file() { # url file max_time result_file: one upload, waited for in the
    # background so that a signal to this script is handled at once
    local pid rc=0
    curl_put_args "$1" "$2" "$3"
    "${CURL_PUT[@]}" >"$4" 2>"$4.err" &
    pid=$!
    LIVE[$pid]="curl"
    wait "$pid" || rc=$?
    unset "LIVE[$pid]"
    ((rc == 0)) || die "PUT $1: curl exit $rc: $(cat "$4.err")"
}

check_code() { # what code
    case $2 in
        200 | 201 | 204) ;;
        *) die "$1: HTTP $2" ;;
    esac
}

check_size() { # what file expected
    local got
    got=$(stat -c %s "$2" 2>/dev/null || echo missing)
    [[ $got == "$3" ]] || die "$1: stored file $2 is $got bytes, expected $3"
}

S_NODE_MBS=() S_NODE_T=() S_NODE_RSS=() S_NODE_CPU=()
S_NGX_MBS=() S_NGX_T=() S_NGX_RSS=() S_NGX_SYNC_MBS=() S_NGX_CPU=()
C_NODE_MBS=() C_NODE_RSS=() C_NODE_CPU=()
C_NGX_MBS=() C_NGX_RSS=() C_NGX_SYNC_MBS=() C_NGX_CPU=()

single_node() { # run
    local dir="$TMPD/node-single-$1" key="bench/single-$1.bin" code speed t rss cpu
    start_node "$dir" "$TMPD/logs/node-single-$1" 60
    put_file "http://127.0.0.1:$NODE_PORT/data/$key" "$SRC" "$(max_time_for "$SIZE")" "$TMPD/logs/put"
    read -r code speed t <"$TMPD/logs/put"
    check_code "spillway single upload" "$code"
    rss=$(vmhwm_mib "$NODE_PID") cpu=$(cpu_s "$NODE_PID")
    check_size "spillway single upload" "$dir/datasets/$key" "$SIZE"
    stop_node
    rm -rf -- "$dir"
    S_NODE_MBS+=("$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')")
    S_NODE_T+=("$t") S_NODE_RSS+=("$rss") S_NODE_CPU+=("$cpu")
    log "single run $1 spillway: $code, ${S_NODE_MBS[-1]} MB/s, ${t}s, VmHWM ${rss} MiB, CPU ${cpu}s"
}

single_nginx() { # run
    local key="bench/single-$1.bin" code speed t rss cpu t0 st
    start_nginx
    put_file "http://127.0.0.1:$NGINX_PORT/$key" "$SRC" "$(max_time_for "$SIZE")" "$TMPD/logs/put"
    read -r code speed t <"$TMPD/logs/put"
    check_code "nginx single upload" "$code"
    rss=$(vmhwm_mib "$NGINX_PID") cpu=$(cpu_s "$NGINX_PID")
    check_size "nginx single upload" "$NGX/root/$key" "$SIZE"
    # What nginx would take to make it durable like Spillway (informative);
    # also keeps its dirty pages from being written back during the next run.
    t0=$(now)
    sync "$NGX/root/$key"
    st=$(fsub "$(now)" "$t0")
    stop_nginx
    rm -rf -- "$NGX"
    S_NGX_MBS+=("$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')")
    S_NGX_SYNC_MBS+=("$(awk -v n="$SIZE" -v t="$t" -v st="$st" 'BEGIN { printf "%.1f", n / (t + st) / 1e6 }')")
    S_NGX_T+=("$t") S_NGX_RSS+=("$rss") S_NGX_CPU+=("$cpu")
    log "single run $1 nginx:    $code, ${S_NGX_MBS[-1]} MB/s, ${t}s, VmHWM ${rss} MiB, CPU ${cpu}s (+fsync ${st}s)"
}

CONC_WALL=""
conc_uploads() { # base_url key_prefix tag -> CONC_WALL (seconds); checks every code
    local base=$1 prefix=$2 tag=$3 j t0 t1 rc code mt
    local -a pids=()
    mt=$(max_time_for $((CONC * CONC_SIZE)))
    mkdir -p "$TMPD/conc"
    t0=$(now)
    for ((j = 0; j < CONC; j++)); do
        curl_put_args "$base/$prefix-$j.bin" "$CSRC" "$mt"
        "${CURL_PUT[@]}" >"$TMPD/conc/$tag.$j.out" 2>"$TMPD/conc/$tag.$j.err" &
        pids+=("$!")
        LIVE[$!]="curl"
    done
    for ((j = 0; j < CONC; j++)); do
        rc=0
        wait "${pids[$j]}" || rc=$?
        unset "LIVE[${pids[$j]}]"
        ((rc == 0)) || die "$tag upload $j: curl exit $rc: $(cat "$TMPD/conc/$tag.$j.err")"
    done
    t1=$(now)
    for ((j = 0; j < CONC; j++)); do
        read -r code _ <"$TMPD/conc/$tag.$j.out"
        check_code "$tag concurrent upload $j" "$code"
    done
    CONC_WALL=$(fsub "$t1" "$t0")
}

conc_node() { # run
    local dir="$TMPD/node-conc-$1" wall rss cpu j
    start_node "$dir" "$TMPD/logs/node-conc-$1" 60
    conc_uploads "http://127.0.0.1:$NODE_PORT/data" "bench/conc-$1" spillway
    wall=$CONC_WALL
    rss=$(vmhwm_mib "$NODE_PID") cpu=$(cpu_s "$NODE_PID")
    for ((j = 0; j < CONC; j++)); do
        check_size "spillway concurrent upload $j" "$dir/datasets/bench/conc-$1-$j.bin" "$CONC_SIZE"
    done
    stop_node
    rm -rf -- "$dir"
    C_NODE_MBS+=("$(awk -v n=$((CONC * CONC_SIZE)) -v t="$wall" 'BEGIN { printf "%.1f", n / t / 1e6 }')")
    C_NODE_RSS+=("$rss") C_NODE_CPU+=("$cpu")
    log "concurrent run $1 spillway: ${CONC}x, ${C_NODE_MBS[-1]} MB/s aggregate, ${wall}s, VmHWM ${rss} MiB, CPU ${cpu}s"
}

conc_nginx() { # run
    local wall rss cpu j t0 st
    local -a files=()
    start_nginx
    conc_uploads "http://127.0.0.1:$NGINX_PORT" "bench/conc-$1" nginx
    wall=$CONC_WALL
    rss=$(vmhwm_mib "$NGINX_PID") cpu=$(cpu_s "$NGINX_PID")
    for ((j = 0; j < CONC; j++)); do
        files+=("$NGX/root/bench/conc-$1-$j.bin")
        check_size "nginx concurrent upload $j" "${files[-1]}" "$CONC_SIZE"
    done
    t0=$(now)
    sync "${files[@]}"
    st=$(fsub "$(now)" "$t0")
    stop_nginx
    rm -rf -- "$NGX"
    C_NGX_MBS+=("$(awk -v n=$((CONC * CONC_SIZE)) -v t="$wall" 'BEGIN { printf "%.1f", n / t / 1e6 }')")
    C_NGX_SYNC_MBS+=("$(awk -v n=$((CONC * CONC_SIZE)) -v t="$wall" -v st="$st" 'BEGIN { printf "%.1f", n / (t + st) / 1e6 }')")
    C_NGX_RSS+=("$rss") C_NGX_CPU+=("$cpu")
    log "concurrent run $1 nginx:    ${CONC}x, ${C_NGX_MBS[-1]} MB/s aggregate, ${wall}s, VmHWM ${rss} MiB, CPU ${cpu}s (+fsync ${st}s)"
}

# -------------------------------------------------------------- listing ----

L_FIRST_MS="" L_DEEP_MS="" L_START_S="" L_RSS=""

list_get() { # url tag -> "code ms"; body in $TMPD/list/tag.body, headers in .hdr
    local out code t
    out=$(curl -sS --max-time 30 -o "$TMPD/list/$2.body" -D "$TMPD/list/$2.hdr" \
        -w '%{http_code} %{time_total}' "$1") || die "listing $2: curl failed"
    read -r code t <<<"$out"
    [[ $code == 200 ]] || die "listing $2: HTTP $code: $(head -c 300 "$TMPD/list/$2.body")"
    awk -v t="$t" 'BEGIN { printf "%.3f", t * 1000 }'
}

check_page() { # tag expected_count first_key
    local got
    got=$(python3 - "$TMPD/list/$1.body" <<'EOF'
import json, sys
page = json.load(open(sys.argv[1]))
print(len(page), page[0]["key"] if page else "-")
EOF
    ) || die "listing $1: body is not a JSON array"
    [[ $got == "$2 $3" ]] || die "listing $1: got (count first-key) '$got', expected '$2 $3'"
    if (($2 == LIST_LIMIT)) && ! grep -qi '^link:.*rel="next"' "$TMPD/list/$1.hdr"; then
        die "listing $1: a full page without Link: rel=\"next\""
    fi
}

listing() {
    local dir="$TMPD/node-list" width deep_i deep_key first_url deep_url i t0 n
    local -a first=() deep=()
    mkdir -p "$TMPD/list"
    log "listing: creating the schema (node on an empty data dir)"
    start_node "$dir" "$TMPD/logs/node-list-0" 60
    stop_node
    log "listing: inserting $ROWS rows with python3 sqlite3"
    t0=$(now)
    n=$(python3 "$HELPERS/populate_index.py" "$dir/index.sqlite" "$ROWS") || die "populating the index failed"
    [[ $n == "$ROWS" ]] || die "the index holds $n rows, expected $ROWS"
    log "listing: $n rows in $(fsub "$(now)" "$t0")s; restarting the node (start-up reconcile checks every row)"
    t0=$(now)
    start_node "$dir" "$TMPD/logs/node-list-1" "$START_TIMEOUT"
    L_START_S=$(fsub "$(now)" "$t0")
    log "listing: node listening after ${L_START_S}s"

    # Same zero padding as populate_index.py: at least 7 digits.
    n=$((ROWS - 1))
    width=${#n}
    if ((width < 7)); then width=7; fi
    deep_i=$((ROWS * 9 / 10))
    deep_key=$(printf "bench/%0${width}d/file.bin" "$deep_i")
    first_url="http://127.0.0.1:$NODE_PORT/datasets?limit=$LIST_LIMIT"
    deep_url="$first_url&after=${deep_key//\//%2F}"

    # Warm-up and correctness of both pages.
    list_get "$first_url" first >/dev/null
    check_page first "$((ROWS < LIST_LIMIT ? ROWS : LIST_LIMIT))" "$(printf "bench/%0${width}d/file.bin" 0)"
    list_get "$deep_url" deep >/dev/null
    n=$((ROWS - deep_i - 1))
    if ((n > LIST_LIMIT)); then n=$LIST_LIMIT; fi
    if ((n > 0)); then
        check_page deep "$n" "$(printf "bench/%0${width}d/file.bin" $((deep_i + 1)))"
    fi
    for ((i = 0; i < LIST_RUNS; i++)); do
        first+=("$(list_get "$first_url" first)")
        deep+=("$(list_get "$deep_url" deep)")
    done
    L_FIRST_MS=$(median "${first[@]}")
    L_DEEP_MS=$(median "${deep[@]}")
    L_RSS=$(vmhwm_mib "$NODE_PID")
    log "listing first page ms: ${first[*]}"
    log "listing deep page (after=$deep_key) ms: ${deep[*]}"
    log "listing page size: $(stat -c %s "$TMPD/list/first.body") bytes"
    stop_node
    rm -rf -- "$dir"
}

# ---------------------------------------------------------------- report ---

fmt3() { awk -v a="$1" 'BEGIN { printf "%.3f", a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ok_ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b ? "PASS" : "FAIL") }'; }
ok_lt() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? "PASS" : "FAIL") }'; }

row() { printf '%-44s %12s %12s %7s  %-20s %s\n' "$@"; }

report() {
    local s_node s_ngx s_ngx_sync s_rss s_ngx_rss c_node c_ngx c_ngx_sync c_rss c_ngx_rss r
    s_node=$(median "${S_NODE_MBS[@]}") s_ngx=$(median "${S_NGX_MBS[@]}")
    s_ngx_sync=$(median "${S_NGX_SYNC_MBS[@]}")
    s_rss=$(median "${S_NODE_RSS[@]}") s_ngx_rss=$(median "${S_NGX_RSS[@]}")
    c_node=$(median "${C_NODE_MBS[@]}") c_ngx=$(median "${C_NGX_MBS[@]}")
    c_ngx_sync=$(median "${C_NGX_SYNC_MBS[@]}")
    c_rss=$(median "${C_NODE_RSS[@]}") c_ngx_rss=$(median "${C_NGX_RSS[@]}")

    echo
    echo "Spillway benchmark ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+changes')), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local warm=""
    if ((WARMUP)); then warm=", after 1 uncounted warm-up upload per server"; fi
    echo "  medians of $RUNS run(s)$warm (listing: of $LIST_RUNS requests)"
    echo "  MB = 10^6 bytes; RSS = VmHWM of a fresh server process per run; node and nginx alternate"
    echo "  single: $(numfmt --to=iec-i --suffix=B "$SIZE"); concurrent: $CONC x $(numfmt --to=iec-i --suffix=B "$CONC_SIZE"); rows: $ROWS"
    echo "  nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') from Debian package '$NGINX_PKG' (dav module compiled in), single process"
    echo
    row "metric" "spillway" "nginx" "ratio" "target" "result"
    row "--------------------------------------------" "------------" "------------" "-------" "--------------------" "------"
    r=$(ratio "$s_node" "$s_ngx")
    row "single upload, MB/s" "$s_node" "$s_ngx" "$r" ">= ${T_RATIO}x nginx" "$(ok_ge "$r" "$T_RATIO")"
    row "single upload, time s" "$(fmt3 "$(median "${S_NODE_T[@]}")")" "$(fmt3 "$(median "${S_NGX_T[@]}")")" "" "" ""
    row "single upload, peak RSS MiB" "$s_rss" "$s_ngx_rss" "" "< $T_RSS_SINGLE MiB" "$(ok_lt "$s_rss" "$T_RSS_SINGLE")"
    row "single, nginx incl. fsync, MB/s (info)" "$s_node" "$s_ngx_sync" "$(ratio "$s_node" "$s_ngx_sync")" "" ""
    row "single upload, server CPU s (info)" "$(median "${S_NODE_CPU[@]}")" "$(median "${S_NGX_CPU[@]}")" \
        "$(ratio "$(median "${S_NODE_CPU[@]}")" "$(median "${S_NGX_CPU[@]}")")" "" ""
    r=$(ratio "$c_node" "$c_ngx")
    row "${CONC} concurrent uploads, aggregate MB/s" "$c_node" "$c_ngx" "$r" ">= ${T_RATIO}x nginx" "$(ok_ge "$r" "$T_RATIO")"
    row "${CONC} concurrent uploads, peak RSS MiB" "$c_rss" "$c_ngx_rss" "" "< $T_RSS_CONC MiB" "$(ok_lt "$c_rss" "$T_RSS_CONC")"
    row "concurrent, nginx incl. fsync, MB/s (info)" "$c_node" "$c_ngx_sync" "$(ratio "$c_node" "$c_ngx_sync")" "" ""
    row "concurrent, server CPU s (info)" "$(median "${C_NODE_CPU[@]}")" "$(median "${C_NGX_CPU[@]}")" \
        "$(ratio "$(median "${C_NODE_CPU[@]}")" "$(median "${C_NGX_CPU[@]}")")" "" ""
    row "list first page (limit=$LIST_LIMIT), ms" "$L_FIRST_MS" "-" "" "< $T_LIST_MS ms" "$(ok_lt "$L_FIRST_MS" "$T_LIST_MS")"
    row "list deep page (after row 90%), ms" "$L_DEEP_MS" "-" "" "< $T_LIST_MS ms" "$(ok_lt "$L_DEEP_MS" "$T_LIST_MS")"
    row "node start-up with $ROWS rows, s (info)" "$(fmt3 "$L_START_S")" "-" "" "" ""
    row "node peak RSS after listing, MiB (info)" "$L_RSS" "-" "" "" ""
    echo
    echo "Notes: the page cache was not dropped (not allowed here): bodies are read from it and"
    echo "writes land in it. Spillway fsyncs each upload before answering; nginx does not (see the"
    echo "'incl. fsync' rows: nginx time + fsync of its files). Uploads use curl -T (Content-Length)"
    echo "without Expect: 100-continue. The machine may be shared: compare within one invocation."
}

# ------------------------------------------------------------------ main ---

main() {
    local need avail i
    ensure_deps
    log "building the node: cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    local target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
    BIN="$target_dir/release/spillway"
    [[ -x $BIN ]] || die "no binary at $BIN"

    mkdir -p "$TMP_PARENT"
    # Room: both bodies, the larger of (one single upload, all concurrent
    # uploads) stored by one server at a time, the index (~1 KiB a row with
    # its WAL), plus 512 MiB of slack.
    local stored=$SIZE
    if ((CONC * CONC_SIZE > stored)); then stored=$((CONC * CONC_SIZE)); fi
    need=$((SIZE + CONC_SIZE + stored + ROWS * 1024 + (512 << 20)))
    avail=$(df -P -B1 "$TMP_PARENT" | awk 'NR == 2 { print $4 }')
    if ((avail < need)); then
        die "not enough free space in $TMP_PARENT: need $(numfmt --to=iec-i --suffix=B "$need"), have $(numfmt --to=iec-i --suffix=B "$avail") (set BENCH_TMPDIR or smaller BENCH_* sizes)"
    fi
    TMPD=$(mktemp -d "$TMP_PARENT/spillway-bench.XXXXXX")
    NGX="$TMPD/nginx"
    mkdir -p "$TMPD/logs"
    log "temp dir $TMPD ($(numfmt --to=iec-i --suffix=B "$need") needed, $(numfmt --to=iec-i --suffix=B "$avail") free)"

    SRC="$TMPD/single.bin"
    CSRC="$TMPD/conc.bin"
    log "generating $(numfmt --to=iec-i --suffix=B "$SIZE") and $(numfmt --to=iec-i --suffix=B "$CONC_SIZE") of random bodies"
    head -c "$SIZE" /dev/urandom >"$SRC"
    head -c "$CONC_SIZE" /dev/urandom >"$CSRC"
    sync "$SRC" "$CSRC"

    if ((WARMUP)); then
        # The first writes of a fresh (virtual) machine's page cache can be
        # much slower than later ones: give both servers one uncounted run.
        log "warm-up: one uncounted single upload to each server"
        single_node 0
        single_nginx 0
        S_NODE_MBS=() S_NODE_T=() S_NODE_RSS=() S_NODE_CPU=()
        S_NGX_MBS=() S_NGX_T=() S_NGX_RSS=() S_NGX_SYNC_MBS=() S_NGX_CPU=()
    fi
    for ((i = 1; i <= RUNS; i++)); do
        if ((i % 2)); then single_node "$i"; single_nginx "$i"; else single_nginx "$i"; single_node "$i"; fi
    done
    rm -f -- "$SRC"
    for ((i = 1; i <= RUNS; i++)); do
        if ((i % 2)); then conc_node "$i"; conc_nginx "$i"; else conc_nginx "$i"; conc_node "$i"; fi
    done
    rm -f -- "$CSRC"
    listing
    report
}

main "$@"
