#!/usr/bin/env bash
# Spillway upload, read and listing benchmark, against nginx + WebDAV (and
# dd, and the disk's own durable rate for small files) as references, and
# of uploads into an S3 store (Garage), against boto3 straight to it, and of
# one tus upload through two nodes round robin against one node.
#
#   scripts/bench.sh                 # full run (4 GiB single, 16 x 256 MiB,
#                                    # 2,000 x 16 KiB x 5 rounds, 20,000 64 KiB
#                                    # ranges x 5, 2 GiB GET x 5, 1M rows,
#                                    # 1 GiB replace x 5, 1 GiB S3, 1 GiB
#                                    # tus via 2 nodes vs 1 x 5)
#   BENCH_QUICK=1 scripts/bench.sh   # quick check (256 MiB, 8 x 32 MiB,
#                                    # 200 x 16 KiB, 500 ranges in 64 MiB, 128 MiB
#                                    # GET, 20k rows, 128 MiB replace x 1,
#                                    # 256 MiB S3 and tus, 1 run/round each)
#   scripts/bench.sh s3              # some sections only (same as BENCH_ONLY=s3)
#   BENCH_ONLY="single list" scripts/bench.sh
#
# Knobs (environment; sizes take K/M/G/T, binary, e.g. 4G, 256MiB, or bytes):
#   BENCH_ONLY       sections to run: single conc small ranges get list
#                    replace s3 cli (default: all; the script's arguments,
#                    if any, take its place)
#   BENCH_SIZE       single-stream upload size          (4G;    quick 256M)
#   BENCH_CONC       concurrent uploads                 (16;    quick 8)
#   BENCH_CONC_SIZE  size of each concurrent upload     (256M;  quick 32M)
#   BENCH_RUNS       runs per upload measurement        (3;     quick 1)
#   BENCH_ROWS       catalog rows for the listing test  (1000000; quick 20000)
#   BENCH_LIST_RUNS  requests per listing measurement   (11)
#   BENCH_REPLACE_SIZE  size of the replaced dataset    (1G;    quick 128M)
#   BENCH_REPLACE_RUNS  replace rounds                  (5;     quick 1)
#   BENCH_SMALL_COUNT    small PUTs per run             (2000;  quick 200)
#   BENCH_SMALL_CLIENTS  clients at once (and 1)        (16)
#   BENCH_SMALL_SIZE     size of each small PUT         (16K)
#   BENCH_SMALL_RUNS     small rounds                   (5;     quick 1)
#   BENCH_RANGE_FILE_SIZE  the file ranges are read from (1G;   quick 64M)
#   BENCH_RANGE_COUNT    range GETs per run             (20000; quick 500)
#   BENCH_RANGE_LEN      bytes per range GET            (64K)
#   BENCH_RANGE_CONC     range GETs at once             (16)
#   BENCH_RANGE_RUNS     ranges rounds                  (5;     quick 1)
#   BENCH_RANGE_SEED     seed of the random offsets     (1)
#   BENCH_GET_SIZE       the dataset of the whole GET   (2G;    quick 128M)
#   BENCH_GET_RUNS       get rounds                     (5;     quick 1)
#   BENCH_S3_SIZE    object size for the S3 section, and
#                    of its tus upload                  (1G;    quick 256M)
#   BENCH_S3_TUS_RUNS    tus rounds (2 nodes vs 1)      (5;     quick 1)
#   BENCH_S3_TUS_CHUNK   bytes per tus PATCH            (64M; see scripts/bench/s3_tus.sh)
#   BENCH_S3_PARTS_IN_FLIGHT  multipart parts in flight per upload, for the
#                    node (SPILLWAY_S3__PARTS_IN_FLIGHT) and boto3's
#                    max_concurrency alike (2, the node's default)
#   BENCH_CLI_SIZE   file size for the cli section      (1G;    quick 128M)
#   BENCH_CLI_RUNS   cli rounds (medians)               (5;     quick 1)
#   BENCH_CLI_PARTS  `spillway upload --parts` (1, the client's default)
#   BENCH_VENV       the Python venv (boto3, blake3)    (target/bench-venv)
#   BENCH_TMPDIR     where the temp dir goes            ($TMPDIR or /tmp)
#   BENCH_START_TIMEOUT  seconds to wait for the node to listen with all rows (900)
#   BENCH_WARMUP     1: one uncounted upload of each kind first (1)
#   BENCH_BASELINE   path of another spillway release binary (say, of the
#                    previous main) to compare with, in the same run: the
#                    single, conc, small, ranges, get and list sections then
#                    run it as one more contender (not replace or s3),
#                    started like the node (same
#                    Rocket.toml from this checkout, same SPILLWAY_* env, its
#                    own fresh data dir, an ephemeral port, the same checks),
#                    interleaved with the node and nginx in every round; an
#                    extra table gives its medians, ranges and the ratios
#                    current/baseline (unset: no baseline, output as before).
#                    The node's few SPILLWAY_* settings below exist at least
#                    since commit 00d987d; an older binary may not know them.
#                    The binary itself as its own baseline shows the noise.
#
# What it does: builds the node (cargo build --release), installs nginx (with
# ngx_http_dav_module) and anything else missing from Debian's packages
# (Garage with `cargo install`, PostgreSQL, and boto3 and blake3 in a venv,
# for the S3 section),
# generates the upload bodies once in a temp dir, then measures, node and
# reference interleaved, each on 127.0.0.1 only:
#   single  one upload of BENCH_SIZE with curl -T (Content-Length): MB/s, the
#           peak RSS (VmHWM) of a fresh server process per run (< 64 MiB),
#           and the server's CPU seconds (user + system, /proc/PID/stat)
#           per GiB (<= 1.0); in the same round, `dd bs=8M conv=fdatasync`
#           of the same body into the data dirs' filesystem, a third
#           reference: node >= 0.9x the lower of nginx and dd;
#   conc    BENCH_CONC curl uploads of BENCH_CONC_SIZE at once: aggregate MB/s
#           (total bytes / wall time, >= 0.9x nginx) and peak RSS;
#   small   (scripts/bench/small.sh) BENCH_SMALL_COUNT PUTs of
#           BENCH_SMALL_SIZE, fresh keys and bytes each round, by
#           BENCH_SMALL_CLIENTS clients at once (curl --parallel), then by 1:
#           files/s of the node, of nginx WebDAV (no fsync, informative) and
#           of the disk's own durable rate (scripts/bench/durable_rate.c:
#           write, fsync, rename, directory fsync; as many threads as
#           clients, same filesystem): node >= 0.8x disk with many clients,
#           >= 0.5x with 1; every code checked, three keys a run read back;
#   ranges  (scripts/bench/ranges.sh) one BENCH_RANGE_FILE_SIZE file on the
#           node and as a static file in nginx; BENCH_RANGE_COUNT random
#           (seeded, same offsets for both) Range GETs of BENCH_RANGE_LEN,
#           BENCH_RANGE_CONC at once, by scripts/bench/range_get.c (each
#           answer checked 206 and its length; its CPU per request shown):
#           requests/s, node >= 0.8x nginx (20,000 a round: a round of
#           2,000 took about 60 ms, and one run's per-round ratios spanned
#           0.63-0.86 where 20,000 gave 0.68-0.75 for the same build);
#   get     (scripts/bench/ranges.sh) one GET of a BENCH_GET_SIZE dataset,
#           curl -o /dev/null: MB/s, node >= 1.0x nginx (sendfile on);
#   list    GET /datasets?limit=1000, first page and a deep page (after= the
#           key of row 90%), on a node whose index holds BENCH_ROWS rows
#           (inserted with python3's sqlite3 while the node is stopped);
#   replace the cost of versions: two fresh nodes at once, each its own data
#           dir, one with the default settings (versions on, keep_versions
#           10) and one with SPILLWAY_KEEP_VERSIONS=0 (off: a replace frees
#           the old bytes at once); key `r` PUT once (uncounted), then
#           replaced BENCH_REPLACE_RUNS times on each, the order alternating
#           per round (on off, off on, ...), with curl -T as single does:
#           MB/s of each, and time(on)/time(off) against <= 1.05. Every PUT
#           sends bytes never sent before (one random body, its first 32
#           bytes stamped with a sequence number before each PUT): the same
#           bytes again would be deduplicated and measure nothing, and two
#           bodies alternating would be too on the versions-on node, whose
#           older versions keep them. After the rounds (nodes stopped),
#           du -sk of each data dir, in bodies: about min(runs+1, 10) with
#           versions on, about 1 with them off (proof that versions were
#           kept, and freed);
#   s3      a fresh single-node Garage per measurement (`garage server
#           --single-node --default-bucket`, metadata_fsync and data_fsync at
#           their defaults, false), and in turn (the order rotates per run):
#           a node with SPILLWAY_STORAGE=s3 on it, one curl -T upload of
#           BENCH_S3_SIZE through it (MB/s, node VmHWM), then the same object
#           downloaded through the node (curl) and straight from Garage (one
#           boto3 get_object stream); boto3 upload_file of the same file with
#           the node's part size and parts in flight (scripts/bench/s3_client.py);
#           and boto3 upload_file with boto3's defaults. Ratios are node/direct.
#           Then the tus workload of issue 18 (scripts/bench/s3_tus.sh): one
#           PostgreSQL for it (initdb in the temp dir, its defaults), and per
#           upload a fresh Garage, a fresh database and two fresh nodes A
#           and B on both (SPILLWAY_INDEX=postgres, one bucket);
#           scripts/bench/tus_client.py sends one upload of BENCH_S3_SIZE in
#           PATCHes of BENCH_S3_TUS_CHUNK, either alternating the node per
#           request (POST on A, PATCH 1 on B, PATCH 2 on A, ...) or all to
#           A; timed from the POST to the last 204, the dataset checked
#           through both nodes (size, blake3 against the file's). Rounds
#           alternate the order (one two, two one, ...): MB/s of each and
#           the median per-round ratio two/one against >= 0.8.
#   cli     the command-line client against curl: one node (versions off,
#           so replaced bytes are freed), and per round, the order
#           alternating (curl first, then the client first, ...): curl -T of
#           BENCH_CLI_SIZE to a fresh key, and `spillway upload` of the same
#           file to another (the whole command: start, local blake3, tus
#           parts in parallel, the node's concatenation and commit). Each
#           upload's first 32 bytes are stamped with a sequence number first,
#           so nothing is deduplicated; both keys are deleted after the round.
#           MB/s of each, and client/curl against >= 0.9.
# Every section with rounds rotates the order of its contenders per round
# (single: node nginx dd [baseline]; small: node nginx disk [baseline];
# conc, ranges, get: node nginx [baseline]); list runs both nodes at once,
# their requests alternating.
# Medians are printed in tables with the targets (replace, S3, small, ranges,
# get: with min..max). small, ranges and get keep their servers up for the
# whole section (fresh data dirs), as a node in service; single and conc
# start a fresh server per run.
# Everything lives in a temp dir removed on exit; only processes started here
# are stopped, by PID.
#
# Not controlled: the page cache cannot be dropped (not allowed here), so the
# bodies are read from the page cache and writes land in it; the machine may
# be shared. Spillway fsyncs every upload before answering (its contract);
# nginx does not, so an extra informative row adds an fsync of nginx's file.
# With S3 storage the node leaves durability to the store: neither side
# fsyncs Garage's files.
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

SECTIONS_ALL="single conc small ranges get list replace s3 cli"
declare -A SECTION=()
sections=${BENCH_ONLY:-$SECTIONS_ALL}
if (($#)); then sections="$*"; fi
for s in $sections; do
    case $s in
        single | conc | small | ranges | get | list | replace | s3 | cli) SECTION[$s]=1 ;;
        *) die "unknown section '$s' (BENCH_ONLY or arguments: some of $SECTIONS_ALL)" ;;
    esac
done
((${#SECTION[@]})) || die "no section to run (BENCH_ONLY or arguments: some of $SECTIONS_ALL)"
selected() { [[ -n ${SECTION[$1]:-} ]]; } # section name

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    d_size=256M d_conc=8 d_conc_size=32M d_runs=1 d_rows=20000 d_s3_size=256M d_tus_runs=1
    d_replace_size=128M d_replace_runs=1 d_cli_size=128M d_cli_runs=1
    d_small_count=200 d_small_runs=1 d_range_file=64M d_range_count=500 d_range_runs=1
    d_get_size=128M d_get_runs=1
else
    d_size=4G d_conc=16 d_conc_size=256M d_runs=3 d_rows=1000000 d_s3_size=1G d_tus_runs=5
    d_replace_size=1G d_replace_runs=5 d_cli_size=1G d_cli_runs=5
    d_small_count=2000 d_small_runs=5 d_range_file=1G d_range_count=20000 d_range_runs=5
    d_get_size=2G d_get_runs=5
fi
SIZE=$(to_bytes "${BENCH_SIZE:-$d_size}")
CONC=$(positive_int BENCH_CONC "${BENCH_CONC:-$d_conc}")
CONC_SIZE=$(to_bytes "${BENCH_CONC_SIZE:-$d_conc_size}")
RUNS=$(positive_int BENCH_RUNS "${BENCH_RUNS:-$d_runs}")
ROWS=$(positive_int BENCH_ROWS "${BENCH_ROWS:-$d_rows}")
LIST_RUNS=$(positive_int BENCH_LIST_RUNS "${BENCH_LIST_RUNS:-11}")
START_TIMEOUT=$(positive_int BENCH_START_TIMEOUT "${BENCH_START_TIMEOUT:-900}")
S3_SIZE=$(to_bytes "${BENCH_S3_SIZE:-$d_s3_size}")
REPLACE_SIZE=$(to_bytes "${BENCH_REPLACE_SIZE:-$d_replace_size}")
REPLACE_RUNS=$(positive_int BENCH_REPLACE_RUNS "${BENCH_REPLACE_RUNS:-$d_replace_runs}")
CLI_SIZE=$(to_bytes "${BENCH_CLI_SIZE:-$d_cli_size}")
CLI_RUNS=$(positive_int BENCH_CLI_RUNS "${BENCH_CLI_RUNS:-$d_cli_runs}")
CLI_PARTS=$(positive_int BENCH_CLI_PARTS "${BENCH_CLI_PARTS:-1}")
S3_CONC=$(positive_int BENCH_S3_PARTS_IN_FLIGHT "${BENCH_S3_PARTS_IN_FLIGHT:-2}")
TUS_CHUNK=$(to_bytes "${BENCH_S3_TUS_CHUNK:-64M}")
TUS_RUNS=$(positive_int BENCH_S3_TUS_RUNS "${BENCH_S3_TUS_RUNS:-$d_tus_runs}")
SMALL_COUNT=$(positive_int BENCH_SMALL_COUNT "${BENCH_SMALL_COUNT:-$d_small_count}")
SMALL_CLIENTS=$(positive_int BENCH_SMALL_CLIENTS "${BENCH_SMALL_CLIENTS:-16}")
SMALL_SIZE=$(to_bytes "${BENCH_SMALL_SIZE:-16K}")
SMALL_RUNS=$(positive_int BENCH_SMALL_RUNS "${BENCH_SMALL_RUNS:-$d_small_runs}")
RANGE_FILE_SIZE=$(to_bytes "${BENCH_RANGE_FILE_SIZE:-$d_range_file}")
RANGE_COUNT=$(positive_int BENCH_RANGE_COUNT "${BENCH_RANGE_COUNT:-$d_range_count}")
RANGE_LEN=$(to_bytes "${BENCH_RANGE_LEN:-64K}")
RANGE_CONC=$(positive_int BENCH_RANGE_CONC "${BENCH_RANGE_CONC:-16}")
RANGE_RUNS=$(positive_int BENCH_RANGE_RUNS "${BENCH_RANGE_RUNS:-$d_range_runs}")
RANGE_SEED=$(positive_int BENCH_RANGE_SEED "${BENCH_RANGE_SEED:-1}")
GET_SIZE=$(to_bytes "${BENCH_GET_SIZE:-$d_get_size}")
GET_RUNS=$(positive_int BENCH_GET_RUNS "${BENCH_GET_RUNS:-$d_get_runs}")
VENV=${BENCH_VENV:-$ROOT/target/bench-venv}
WARMUP=${BENCH_WARMUP:-1}
[[ $WARMUP == 0 || $WARMUP == 1 ]] || die "BENCH_WARMUP must be 0 or 1, not '$WARMUP'"
TMP_PARENT=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
((SIZE > 0 && CONC_SIZE > 0 && S3_SIZE > 0)) || die "BENCH_SIZE, BENCH_CONC_SIZE and BENCH_S3_SIZE must be > 0"
((TUS_CHUNK > 0)) || die "BENCH_S3_TUS_CHUNK must be > 0"
((CLI_SIZE >= 4096)) || die "BENCH_CLI_SIZE must be at least 4 KiB (each upload stamps its first 32 bytes)"
((REPLACE_SIZE >= 4096)) || die "BENCH_REPLACE_SIZE must be at least 4 KiB (each upload stamps its first 32 bytes)"
((SMALL_SIZE > 0 && GET_SIZE > 0)) || die "BENCH_SMALL_SIZE and BENCH_GET_SIZE must be > 0"
((RANGE_LEN > 0 && RANGE_FILE_SIZE >= RANGE_LEN)) || die "BENCH_RANGE_LEN must be > 0 and at most BENCH_RANGE_FILE_SIZE"
BASE_BIN=${BENCH_BASELINE:-}
if [[ -n $BASE_BIN ]]; then
    [[ -f $BASE_BIN && -x $BASE_BIN ]] || die "BENCH_BASELINE: '$BASE_BIN' is not an executable file"
    BASE_BIN=$(readlink -f -- "$BASE_BIN") # absolute: the nodes start in $ROOT
fi
baseline() { [[ -n $BASE_BIN ]]; } # BENCH_BASELINE given

SPOOL_MEMORY_MIB=8 # the node's default spool_memory, kept as is
LIST_LIMIT=1000
# Targets.
T_RATIO=0.9
T_RSS_SINGLE=64
T_RSS_CONC=$((CONC * SPOOL_MEMORY_MIB + 64))
T_LIST_MS=10
T_REPLACE_RATIO=1.05 # replace time, versions on / off
T_SINGLE_MIN=0.9 # single upload, node / the lower of nginx and dd conv=fdatasync
T_CPU_GIB=1.0    # single upload, the node's CPU seconds per GiB
T_SMALL_N=0.8    # small PUTs, SMALL_CLIENTS clients: node / disk's durable rate (as many threads)
T_SMALL_1=0.5    # small PUTs, 1 client: node / disk's serial durable rate
T_RANGE=0.8      # random range GETs: node / nginx
T_LIST_UNDER_WRITES_MS=20 # GET /datasets?limit=1000 p99 while SMALL_CLIENTS writers upload
T_GET=1.0        # one whole GET: node / nginx (sendfile on)
T_CLI_RATIO=0.9      # spillway upload / curl -T, MB/s
T_TUS_RATIO=0.8      # one tus upload over S3, two nodes round robin / one node, MB/s (issue 18)
KEEP_VERSIONS_DEFAULT=10 # the node's default keep_versions (the versions-on node runs with it)

# S3: the node's max_dataset_size, and the multipart part size that follows
# from it (S3Settings::part_size: max_dataset_size in 10,000 parts, whole
# MiB, at least 8 MiB); 64 GiB keeps the default 8 MiB (as any size up to
# ~78 GiB would). boto3's matched variant uses the same part size.
S3_MAX_DATASET=$((64 << 30))
if ((S3_SIZE > S3_MAX_DATASET)); then S3_MAX_DATASET=$S3_SIZE; fi
S3_PART=$(((((S3_MAX_DATASET + 9999) / 10000 + (1 << 20) - 1) >> 20) << 20))
if ((S3_PART < 8 << 20)); then S3_PART=$((8 << 20)); fi
S3_BUCKET=spillway-bench
S3_REGION=garage

# ------------------------------------------------------------- processes ---

declare -A LIVE=()   # pid -> what, for every process started and not yet reaped
TMPD=""

# shellcheck disable=SC2034 # read by lib/common.sh
STOP_WAIT_TENTHS=150 # nginx and a node with 1M rows may take a while to stop
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/garage.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/garage.sh"
# shellcheck source=lib/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/postgres.sh"
# The sections of issue 16's workloads, in files of their own (this one
# would pass 1,700 lines with them); they use the helpers defined below.
# shellcheck source=bench/small.sh
source "$HELPERS/small.sh"
# shellcheck source=bench/ranges.sh
source "$HELPERS/ranges.sh"
# shellcheck source=bench/s3_tus.sh
source "$HELPERS/s3_tus.sh"

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    # PostgreSQL last (the s3 section's nodes are its clients), fast (INT).
    for pid in "${!LIVE[@]}"; do
        if [[ ${LIVE[$pid]} != postgres ]]; then stop_pid "$pid" TERM; fi
    done
    for pid in "${!LIVE[@]}"; do stop_pid "$pid" INT; done
    stop_all_live
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
    if selected list; then
        python3 -c 'import sqlite3' 2>/dev/null || die "python3 lacks the sqlite3 module"
    fi
    if selected s3; then
        ensure_garage
        ensure_postgres
        setup_python
    fi
    if selected small || selected ranges; then
        # durable_rate.c and range_get.c are compiled by the sections.
        command -v cc >/dev/null || apt_install gcc libc6-dev || die "cannot install gcc"
    fi
    selected single || selected conc || selected small || selected ranges || selected get || return 0
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

setup_python() { # the venv with boto3 and blake3 (as scripts/e2e.sh sets up its own)
    local stamp="$VENV/.bench-requirements.txt"
    if [[ -x $VENV/bin/python && -f $stamp ]] && cmp -s "$stamp" "$HELPERS/requirements.txt" &&
        "$VENV/bin/python" -c 'import boto3, blake3' 2>/dev/null; then
        return 0
    fi
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt_install python3-venv || die "cannot install python3-venv"
    fi
    log "creating the venv $VENV (boto3, blake3)"
    rm -rf -- "$VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HELPERS/requirements.txt" >&2 ||
        die "pip install -r scripts/bench/requirements.txt failed"
    cp "$HELPERS/requirements.txt" "$stamp"
}

# ----------------------------------------------------------------- node ----

BIN=""
NODE_PID=""
NODE_PORT=""

start_node() { start_node_bin "$BIN" spillway "$@"; } # data_dir log_prefix timeout_s [NAME=value...]

# The settings below are the same for the baseline binary (BENCH_BASELINE),
# which gets no extra ones (only s3 passes those, and s3 runs no baseline):
# keep these to keys an older binary knows (all exist at commit 00d987d).
start_node_bin() { # binary what data_dir log_prefix timeout_s [NAME=value...]: extra settings win
    local bin=$1 what=$2 dir=$3 logp=$4 timeout=$5 deadline line var
    local -a unset_env=()
    shift 5
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
            ROCKET_CLI_COLORS=false "$@" \
            "$bin" serve
    ) >"$logp.out" 2>"$logp.err" &
    NODE_PID=$!
    LIVE[$NODE_PID]=$what
    deadline=$((SECONDS + timeout))
    while :; do
        if line=$(grep -m1 -o 'spillway listening on http://[^[:space:]]*' "$logp.out" 2>/dev/null); then
            break
        fi
        if ! alive "$NODE_PID"; then
            tail -n 20 "$logp.out" "$logp.err" >&2 || true
            stop_pid "$NODE_PID"
            die "$(node_name "$what") exited before listening (log above)"
        fi
        ((SECONDS < deadline)) || die "$(node_name "$what") did not listen within ${timeout}s"
        sleep 0.1
    done
    NODE_PORT=${line##*:}
    [[ $NODE_PORT =~ ^[0-9]+$ ]] || die "cannot read the port from '$line'"
}

stop_node() { stop_pid "$NODE_PID" TERM; NODE_PID=""; }
node_name() { if [[ $1 == spillway ]]; then echo "the node"; else echo "the $1 node"; fi; }

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

RUN_SECS=""
run_timed() { # timeout_s logfile what cmd...: like run_bounded, but waited
    # for with `wait` (run_bounded polls every 0.1 s, too coarse for runs of
    # a fraction of a second), bounded by timeout(1); RUN_SECS = its wall
    # time. Returns the command's status (124: timed out).
    local t=$1 logf=$2 what=$3 pid rc=0 t0
    shift 3
    t0=$(now)
    timeout -k 5 "$t" "$@" >"$logf" 2>&1 &
    pid=$!
    LIVE[$pid]="$what (timeout)"
    wait "$pid" || rc=$?
    RUN_SECS=$(fsub "$(now)" "$t0")
    unset "LIVE[$pid]"
    return "$rc"
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
S_DD_MBS=() S_DD_T=() # dd conv=fdatasync of the same body, one a round
C_NODE_MBS=() C_NODE_RSS=() C_NODE_CPU=()
C_NGX_MBS=() C_NGX_RSS=() C_NGX_SYNC_MBS=() C_NGX_CPU=()
# The baseline binary's (BENCH_BASELINE), one entry per round like the node's.
S_BASE_MBS=() S_BASE_T=() S_BASE_RSS=() S_BASE_CPU=()
C_BASE_MBS=() C_BASE_RSS=() C_BASE_CPU=()

# The binary, the name in messages and the prefix of dirs and logs: the node
# built here, or (`base`) the baseline binary.
NODE_KIND_BIN="" NODE_KIND_WHAT="" NODE_KIND_DIR=""
node_kind() { # "" or base
    if [[ $1 == base ]]; then
        NODE_KIND_BIN=$BASE_BIN NODE_KIND_WHAT=baseline NODE_KIND_DIR=base
    else
        NODE_KIND_BIN=$BIN NODE_KIND_WHAT=spillway NODE_KIND_DIR=node
    fi
}

single_node() { # run [base]
    local key="bench/single-$1.bin" code speed t rss cpu mbs dir what
    node_kind "${2:-}"
    what=$NODE_KIND_WHAT dir="$TMPD/$NODE_KIND_DIR-single-$1"
    start_node_bin "$NODE_KIND_BIN" "$what" "$dir" "$TMPD/logs/$NODE_KIND_DIR-single-$1" 60
    put_file "http://127.0.0.1:$NODE_PORT/data/$key" "$SRC" "$(max_time_for "$SIZE")" "$TMPD/logs/put"
    read -r code speed t <"$TMPD/logs/put"
    check_code "$what single upload" "$code"
    rss=$(vmhwm_mib "$NODE_PID") cpu=$(cpu_s "$NODE_PID")
    check_size "$what single upload" "$dir/datasets/$key" "$SIZE"
    stop_node
    rm -rf -- "$dir"
    mbs=$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')
    if [[ $what == baseline ]]; then
        S_BASE_MBS+=("$mbs") S_BASE_T+=("$t") S_BASE_RSS+=("$rss") S_BASE_CPU+=("$cpu")
    else
        S_NODE_MBS+=("$mbs") S_NODE_T+=("$t") S_NODE_RSS+=("$rss") S_NODE_CPU+=("$cpu")
    fi
    log "single run $1 $what: $code, $mbs MB/s, ${t}s, VmHWM ${rss} MiB, CPU ${cpu}s"
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

# The disk's own rate for the single upload's bytes, in the round: dd
# from the body (in the page cache, as curl reads it) to a file in the temp
# dir's filesystem, where the node's data dir is, fdatasync before dd stops
# its clock. Time and MB/s as dd reports them (coreutils' dd, LC_ALL=C).
single_dd() { # run
    local out="$TMPD/dd-single.bin" rc=0 t
    run_timed "$(max_time_for "$SIZE")" "$TMPD/logs/dd" dd \
        dd if="$SRC" of="$out" bs=8M conv=fdatasync || rc=$?
    ((rc == 0)) || die "dd: exit $rc: $(tail -n 2 "$TMPD/logs/dd")"
    check_size "dd" "$out" "$SIZE"
    rm -f -- "$out"
    t=$(sed -n 's/.* copied, \([0-9.e+-]*\) s,.*/\1/p' "$TMPD/logs/dd" | tail -n 1)
    [[ -n $t ]] || die "dd: cannot read its time from: $(tail -n 1 "$TMPD/logs/dd")"
    S_DD_MBS+=("$(mbs "$SIZE" "$t")") S_DD_T+=("$t")
    log "single run $1 dd:       ${S_DD_MBS[-1]} MB/s, ${t}s (bs=8M conv=fdatasync)"
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

conc_node() { # run [base]
    local wall rss cpu j mbs dir what
    node_kind "${2:-}"
    what=$NODE_KIND_WHAT dir="$TMPD/$NODE_KIND_DIR-conc-$1"
    start_node_bin "$NODE_KIND_BIN" "$what" "$dir" "$TMPD/logs/$NODE_KIND_DIR-conc-$1" 60
    conc_uploads "http://127.0.0.1:$NODE_PORT/data" "bench/conc-$1" "$what"
    wall=$CONC_WALL
    rss=$(vmhwm_mib "$NODE_PID") cpu=$(cpu_s "$NODE_PID")
    for ((j = 0; j < CONC; j++)); do
        check_size "$what concurrent upload $j" "$dir/datasets/bench/conc-$1-$j.bin" "$CONC_SIZE"
    done
    stop_node
    rm -rf -- "$dir"
    mbs=$(awk -v n=$((CONC * CONC_SIZE)) -v t="$wall" 'BEGIN { printf "%.1f", n / t / 1e6 }')
    if [[ $what == baseline ]]; then
        C_BASE_MBS+=("$mbs") C_BASE_RSS+=("$rss") C_BASE_CPU+=("$cpu")
    else
        C_NODE_MBS+=("$mbs") C_NODE_RSS+=("$rss") C_NODE_CPU+=("$cpu")
    fi
    log "concurrent run $1 $what: ${CONC}x, $mbs MB/s aggregate, ${wall}s, VmHWM ${rss} MiB, CPU ${cpu}s"
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
# The baseline's (BENCH_BASELINE); the per-request times (ms) of both, in order.
LB_START_S="" LB_RSS=""
L_FIRST=() L_DEEP=() LB_FIRST=() LB_DEEP=()

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

list_prepare() { # binary what data_dir log_prefix: the schema (by that binary), then ROWS rows
    local bin=$1 what=$2 dir=$3 logp=$4 who="" t0 n
    [[ $what == spillway ]] || who="$what: "
    log "listing: ${who}creating the schema (node on an empty data dir)"
    start_node_bin "$bin" "$what" "$dir" "$TMPD/logs/$logp-0" 60
    stop_node
    log "listing: ${who}inserting $ROWS rows with python3 sqlite3"
    t0=$(now)
    n=$(python3 "$HELPERS/populate_index.py" "$dir/index.sqlite" "$ROWS") || die "${who}populating the index failed"
    [[ $n == "$ROWS" ]] || die "${who}the index holds $n rows, expected $ROWS"
    log "listing: ${who}$n rows in $(fsub "$(now)" "$t0")s; restarting the node (start-up reconcile checks every row)"
}

LIST_START_S=""
list_start() { # binary what data_dir log_prefix -> NODE_PID, NODE_PORT, LIST_START_S
    local who="" t0
    [[ $2 == spillway ]] || who="$2: "
    t0=$(now)
    start_node_bin "$1" "$2" "$3" "$TMPD/logs/$4-1" "$START_TIMEOUT"
    LIST_START_S=$(fsub "$(now)" "$t0")
    log "listing: ${who}node listening after ${LIST_START_S}s"
}

list_check_pages() { # tag_prefix first_url deep_url width deep_i: warm-up and correctness of both pages
    local p=$1 width=$4 deep_i=$5 n
    list_get "$2" "${p}first" >/dev/null
    check_page "${p}first" "$((ROWS < LIST_LIMIT ? ROWS : LIST_LIMIT))" "$(printf "bench/%0${width}d/file.bin" 0)"
    list_get "$3" "${p}deep" >/dev/null
    n=$((ROWS - deep_i - 1))
    if ((n > LIST_LIMIT)); then n=$LIST_LIMIT; fi
    if ((n > 0)); then
        check_page "${p}deep" "$n" "$(printf "bench/%0${width}d/file.bin" $((deep_i + 1)))"
    fi
}

# With a baseline, both nodes hold their own copy of the rows and run at
# once; their requests alternate (which one goes first alternates too).
listing() {
    local dir="$TMPD/node-list" bdir="$TMPD/base-list" width deep_i deep_key first_url deep_url i n
    local node_pid base_pid="" bfirst_url="" bdeep_url="" query
    mkdir -p "$TMPD/list"
    list_prepare "$BIN" spillway "$dir" node-list
    if baseline; then list_prepare "$BASE_BIN" baseline "$bdir" base-list; fi
    list_start "$BIN" spillway "$dir" node-list
    L_START_S=$LIST_START_S node_pid=$NODE_PID
    # Same zero padding as populate_index.py: at least 7 digits.
    n=$((ROWS - 1))
    width=${#n}
    if ((width < 7)); then width=7; fi
    deep_i=$((ROWS * 9 / 10))
    deep_key=$(printf "bench/%0${width}d/file.bin" "$deep_i")
    query="datasets?limit=$LIST_LIMIT"
    first_url="http://127.0.0.1:$NODE_PORT/$query"
    deep_url="$first_url&after=${deep_key//\//%2F}"
    if baseline; then
        list_start "$BASE_BIN" baseline "$bdir" base-list
        LB_START_S=$LIST_START_S base_pid=$NODE_PID
        bfirst_url="http://127.0.0.1:$NODE_PORT/$query"
        bdeep_url="$bfirst_url&after=${deep_key//\//%2F}"
    fi

    list_check_pages "" "$first_url" "$deep_url" "$width" "$deep_i"
    if baseline; then list_check_pages b "$bfirst_url" "$bdeep_url" "$width" "$deep_i"; fi
    for ((i = 0; i < LIST_RUNS; i++)); do
        if baseline && ((i % 2)); then
            LB_FIRST+=("$(list_get "$bfirst_url" bfirst)")
            LB_DEEP+=("$(list_get "$bdeep_url" bdeep)")
        fi
        L_FIRST+=("$(list_get "$first_url" first)")
        L_DEEP+=("$(list_get "$deep_url" deep)")
        if baseline && ((i % 2 == 0)); then
            LB_FIRST+=("$(list_get "$bfirst_url" bfirst)")
            LB_DEEP+=("$(list_get "$bdeep_url" bdeep)")
        fi
    done
    L_FIRST_MS=$(median "${L_FIRST[@]}")
    L_DEEP_MS=$(median "${L_DEEP[@]}")
    L_RSS=$(vmhwm_mib "$node_pid")
    log "listing first page ms: ${L_FIRST[*]}"
    log "listing deep page (after=$deep_key) ms: ${L_DEEP[*]}"
    log "listing page size: $(stat -c %s "$TMPD/list/first.body") bytes"
    if baseline; then
        LB_RSS=$(vmhwm_mib "$base_pid")
        log "listing baseline first page ms: ${LB_FIRST[*]}"
        log "listing baseline deep page ms: ${LB_DEEP[*]}"
        log "listing baseline page size: $(stat -c %s "$TMPD/list/bfirst.body") bytes"
        stop_pid "$base_pid" TERM
        rm -rf -- "$bdir"
    fi
    stop_pid "$node_pid" TERM
    NODE_PID=""
    rm -rf -- "$dir"
}

# -------------------------------------------------------------- replace ----

# One node with versions on (the defaults) and one with them off, both up
# for the whole section; per round each replaces key `r` once.
declare -A R_PID=() R_PORT=() R_DIR=()
R_ON_MBS=() R_ON_T=() R_OFF_MBS=() R_OFF_T=() R_RATIO=()
R_ON_KIB="" R_OFF_KIB="" R_ON_BODIES="" R_OFF_BODIES="" R_ON_BLOBS="" R_OFF_BLOBS=""
R_STAMP=""
R_SEQ=0

# Makes the body's next PUT bytes never sent before in this run: its first
# 32 bytes become a sequence number (the rest, random, stays in the page
# cache). Done, and made durable, outside the timed upload.
replace_stamp() {
    R_SEQ=$((R_SEQ + 1))
    printf -v R_STAMP 'spillway-bench-replace-%09d' "$R_SEQ" # 32 bytes
    printf '%s' "$R_STAMP" | dd of="$RSRC" conv=notrunc,fsync status=none ||
        die "cannot stamp the replace body $RSRC"
}

replace_start() { # on|off
    local which=$1 dir="$TMPD/node-replace-$1"
    local -a extra=()
    if [[ $which == off ]]; then extra=(SPILLWAY_KEEP_VERSIONS=0); fi
    start_node "$dir" "$TMPD/logs/node-replace-$which" 60 "${extra[@]}"
    R_PID[$which]=$NODE_PID R_PORT[$which]=$NODE_PORT R_DIR[$which]=$dir
    NODE_PID=""
}

replace_put() { # on|off run: run 0 is the first upload (201, not counted), later ones replace it (200)
    local which=$1 run=$2 code speed t want=200 mbs head
    local what="versions-$1 node, replace run $2"
    if ((run == 0)); then want=201 what="versions-$1 node, first upload"; fi
    replace_stamp
    put_file "http://127.0.0.1:${R_PORT[$which]}/data/r" "$RSRC" "$(max_time_for "$REPLACE_SIZE")" "$TMPD/logs/put"
    read -r code speed t <"$TMPD/logs/put"
    [[ $code == "$want" ]] || die "$what: HTTP $code, expected $want"
    check_size "$what" "${R_DIR[$which]}/datasets/r" "$REPLACE_SIZE"
    head=$(head -c ${#R_STAMP} "${R_DIR[$which]}/datasets/r")
    [[ $head == "$R_STAMP" ]] || die "$what: the key's file starts with '$head', not the bytes just sent ('$R_STAMP')"
    mbs=$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')
    if ((run > 0)); then
        if [[ $which == on ]]; then R_ON_MBS+=("$mbs") R_ON_T+=("$t"); else R_OFF_MBS+=("$mbs") R_OFF_T+=("$t"); fi
    fi
    log "replace run $run versions $(printf '%-4s' "$which:") $code, $mbs MB/s, ${t}s"
}

replace_du() { # on|off -> "KiB bodies blobs" of the node's data dir (node stopped)
    local dir=${R_DIR[$1]} kib blobs
    kib=$(du -sk -- "$dir" | awk '{ print $1 }') # hard links counted once
    blobs=$(find "$dir/blobs" -type f 2>/dev/null | wc -l)
    echo "$kib $(awk -v k="$kib" -v n="$REPLACE_SIZE" 'BEGIN { printf "%.2f", k * 1024 / n }') $blobs"
}

replace_section() {
    local i c
    log "replace: $(numfmt --to=iec-i --suffix=B "$REPLACE_SIZE") dataset, $REPLACE_RUNS round(s); versions on (keep_versions $KEEP_VERSIONS_DEFAULT, the default) vs off (SPILLWAY_KEEP_VERSIONS=0)"
    replace_start on
    replace_start off
    # The first upload of `r` to each (uncounted; also the section's warm-up).
    replace_put on 0
    replace_put off 0
    for ((i = 1; i <= REPLACE_RUNS; i++)); do
        for c in $(if ((i % 2)); then echo on off; else echo off on; fi); do
            replace_put "$c" "$i"
        done
        R_RATIO+=("$(awk -v a="${R_ON_T[-1]}" -v b="${R_OFF_T[-1]}" 'BEGIN { printf "%.3f", a / b }')")
    done
    # Measured with both nodes stopped: nothing in flight, nothing pending.
    for c in on off; do stop_pid "${R_PID[$c]}" TERM; done
    read -r R_ON_KIB R_ON_BODIES R_ON_BLOBS <<<"$(replace_du on)"
    read -r R_OFF_KIB R_OFF_BODIES R_OFF_BLOBS <<<"$(replace_du off)"
    log "replace: data dir after versions on: $R_ON_KIB KiB ($R_ON_BODIES bodies, $R_ON_BLOBS blob files); versions off: $R_OFF_KIB KiB ($R_OFF_BODIES bodies, $R_OFF_BLOBS blob files)"
    rm -rf -- "${R_DIR[on]}" "${R_DIR[off]}"
}

replace_kept() { # bodies expected: within a quarter of a body
    awk -v b="$1" -v e="$2" 'BEGIN { d = b - e; if (d < 0) d = -d; print (d <= 0.25 ? "ok" : "UNEXPECTED") }'
}

# ------------------------------------------------------------------- s3 ----

GARAGE_PID=""
GARAGE_DIR=""

# A fresh single-node Garage in `dir` with bucket $S3_BUCKET and a new key
# (exported as BENCH_S3_* for s3_client.py); ready once admin /health says
# 200 and boto3's head_bucket answers. Same settings as tests/common/cluster.rs,
# fsyncs at Garage's defaults (off) for the node and boto3 alike.
start_garage() { # dir
    export BENCH_S3_ACCESS_KEY BENCH_S3_SECRET_KEY BENCH_S3_ENDPOINT
    export BENCH_S3_BUCKET=$S3_BUCKET BENCH_S3_REGION=$S3_REGION
    BENCH_S3_ACCESS_KEY="GK$(rand_hex 12)" BENCH_S3_SECRET_KEY=$(rand_hex 32)
    GARAGE_DIR=$1
    start_garage_single "$1" "$BENCH_S3_ACCESS_KEY" "$BENCH_S3_SECRET_KEY" "$S3_BUCKET" "$S3_REGION" ||
        die "cannot start garage"
    BENCH_S3_ENDPOINT=$GARAGE_S3
    run_bounded 60 "$1/ready.log" "s3_client.py ready" "$VENV/bin/python" "$HELPERS/s3_client.py" ready 30 ||
        die "garage: bucket $S3_BUCKET does not answer: $(tail -n 3 "$1/ready.log")"
}

stop_garage() { stop_pid "$GARAGE_PID" TERM; GARAGE_PID=""; rm -rf -- "$GARAGE_DIR"; }

S3_OUT=""
s3_client() { # what args... -> S3_OUT "seconds bytes client_cpu_s"; bounded
    local what=$1 rc=0 logf="$TMPD/logs/s3_client.log"
    shift
    run_bounded "$(max_time_for "$S3_SIZE")" "$logf" "$what" \
        "$VENV/bin/python" "$HELPERS/s3_client.py" "$@" || rc=$?
    ((rc == 0)) || die "$what: s3_client.py exit $rc: $(tail -n 5 "$logf")"
    S3_OUT=$(awk '$1 == "RESULT" { r = $2 " " $3 " " $4 } END { print r }' "$logf")
    [[ -n $S3_OUT ]] || die "$what: no RESULT line: $(tail -n 5 "$logf")"
}

get_file() { # url max_time result_file: one download to /dev/null, waited
    # for in the background; prints "code speed_download time_total size"
    local pid rc=0
    curl -sS --max-time "$2" -o /dev/null \
        -w '%{http_code} %{speed_download} %{time_total} %{size_download}\n' "$1" >"$3" 2>"$3.err" &
    pid=$!
    LIVE[$pid]="curl"
    wait "$pid" || rc=$?
    unset "LIVE[$pid]"
    ((rc == 0)) || die "GET $1: curl exit $rc: $(cat "$3.err")"
}

mbs() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t / 1e6 }'; } # bytes seconds

S3_NODE_MBS=() S3_NODE_T=() S3_NODE_RSS=() S3_NODE_CPU=() S3_NODE_RSS_GET=()
S3_DIR_MBS=() S3_DIR_T=() S3_DEF_MBS=() S3_DEF_T=()
S3_GET_NODE_MBS=() S3_GET_DIR_MBS=() S3_UP_RATIO=() S3_DEF_RATIO=() S3_GET_RATIO=()
S3_PART_SEEN="" # the part size the node logged at start, MiB

s3_node() { # run: upload through the node, then download the object both ways
    local dir="$TMPD/node-s3-$1" key="bench/s$1.bin" code speed t size rss cpu gcpu line
    local get_node get_dir
    start_garage "$TMPD/garage-node-$1"
    start_node "$dir" "$TMPD/logs/node-s3-$1" 60 \
        SPILLWAY_STORAGE=s3 SPILLWAY_S3__ENDPOINT="$BENCH_S3_ENDPOINT" \
        SPILLWAY_S3__REGION="$S3_REGION" SPILLWAY_S3__BUCKET="$S3_BUCKET" \
        SPILLWAY_S3__ACCESS_KEY_ID="$BENCH_S3_ACCESS_KEY" \
        SPILLWAY_S3__SECRET_ACCESS_KEY="$BENCH_S3_SECRET_KEY" \
        SPILLWAY_S3__PATH_STYLE=true SPILLWAY_S3__PARTS_IN_FLIGHT="$S3_CONC" \
        SPILLWAY_MAX_DATASET_SIZE="$S3_MAX_DATASET"
    line=$(grep -ho 'parts of [0-9]* MiB' "$TMPD/logs/node-s3-$1".{out,err} 2>/dev/null | head -n 1 || true)
    S3_PART_SEEN=${line//[!0-9]/}
    if [[ -n $S3_PART_SEEN && $S3_PART_SEEN != $((S3_PART >> 20)) ]]; then
        die "the node uses parts of $S3_PART_SEEN MiB, this script assumed $((S3_PART >> 20)) MiB"
    fi
    put_file "http://127.0.0.1:$NODE_PORT/data/$key" "$S3SRC" "$(max_time_for "$S3_SIZE")" "$TMPD/logs/put"
    read -r code speed t <"$TMPD/logs/put"
    check_code "spillway S3 upload" "$code"
    rss=$(vmhwm_mib "$NODE_PID") cpu=$(cpu_s "$NODE_PID") gcpu=$(cpu_s "$GARAGE_PID")
    S3_NODE_MBS+=("$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')")
    S3_NODE_T+=("$t") S3_NODE_RSS+=("$rss") S3_NODE_CPU+=("$cpu")
    log "s3 run $1 spillway upload:        $code, ${S3_NODE_MBS[-1]} MB/s, ${t}s, node VmHWM ${rss} MiB, node CPU ${cpu}s, garage CPU ${gcpu}s"

    # The same object, through the node and straight from Garage (the node
    # keeps datasets at datasets/<key>); the order alternates per run.
    local i
    for i in 0 1; do
        if (((i + $1) % 2)); then
            get_file "http://127.0.0.1:$NODE_PORT/data/$key" "$(max_time_for "$S3_SIZE")" "$TMPD/logs/get"
            read -r code speed t size <"$TMPD/logs/get"
            check_code "spillway S3 download" "$code"
            [[ $size == "$S3_SIZE" ]] || die "spillway S3 download: $size bytes, expected $S3_SIZE"
            get_node=$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')
            log "s3 run $1 spillway download:      $code, $get_node MB/s, ${t}s"
        else
            s3_client "boto3 get" get "datasets/$key" "$S3_SIZE"
            read -r t size cpu <<<"$S3_OUT"
            get_dir=$(mbs "$size" "$t")
            log "s3 run $1 direct download:        $get_dir MB/s, ${t}s, client CPU ${cpu}s"
        fi
    done
    S3_NODE_RSS_GET+=("$(vmhwm_mib "$NODE_PID")")
    S3_GET_NODE_MBS+=("$get_node") S3_GET_DIR_MBS+=("$get_dir")
    stop_node
    stop_garage
    rm -rf -- "$dir"
}

s3_direct() { # run variant (matched: the node's part size and parts in
    # flight; defaults: boto3's defaults throughout): upload_file to Garage
    local key="direct/$2-$1.bin" t size cpu gcpu
    start_garage "$TMPD/garage-$2-$1"
    if [[ $2 == matched ]]; then
        s3_client "boto3 upload_file" put "$S3SRC" "$key" "$S3_PART" "$S3_CONC"
    else
        s3_client "boto3 upload_file (defaults)" put-defaults "$S3SRC" "$key"
    fi
    read -r t size cpu <<<"$S3_OUT"
    [[ $size == "$S3_SIZE" ]] || die "boto3 upload_file: $size bytes, expected $S3_SIZE"
    gcpu=$(cpu_s "$GARAGE_PID")
    stop_garage
    if [[ $2 == matched ]]; then
        S3_DIR_MBS+=("$(mbs "$size" "$t")") S3_DIR_T+=("$t")
        log "s3 run $1 direct upload (matched):  ${S3_DIR_MBS[-1]} MB/s, ${t}s, client CPU ${cpu}s, garage CPU ${gcpu}s"
    else
        S3_DEF_MBS+=("$(mbs "$size" "$t")") S3_DEF_T+=("$t")
        log "s3 run $1 direct upload (defaults): ${S3_DEF_MBS[-1]} MB/s, ${t}s, client CPU ${cpu}s, garage CPU ${gcpu}s"
    fi
}

s3_section() {
    local i j
    local -a order=(node matched defaults)
    log "s3: garage $(garage_version), boto3 $(boto3_version); $(numfmt --to=iec-i --suffix=B "$S3_SIZE") object, parts of $((S3_PART >> 20)) MiB, $S3_CONC in flight"
    if ((WARMUP)); then
        log "warm-up: one uncounted S3 upload each way"
        s3_node 0
        s3_direct 0 matched
        S3_NODE_MBS=() S3_NODE_T=() S3_NODE_RSS=() S3_NODE_CPU=() S3_NODE_RSS_GET=()
        S3_DIR_MBS=() S3_DIR_T=() S3_GET_NODE_MBS=() S3_GET_DIR_MBS=()
    fi
    for ((i = 1; i <= RUNS; i++)); do
        # Rotate the order, so that each kind takes each place in turn.
        for ((j = 0; j < 3; j++)); do
            case ${order[(i - 1 + j) % 3]} in
                node) s3_node "$i" ;;
                matched) s3_direct "$i" matched ;;
                defaults) s3_direct "$i" defaults ;;
            esac
        done
        S3_UP_RATIO+=("$(ratio "${S3_NODE_MBS[-1]}" "${S3_DIR_MBS[-1]}")")
        S3_DEF_RATIO+=("$(ratio "${S3_NODE_MBS[-1]}" "${S3_DEF_MBS[-1]}")")
        S3_GET_RATIO+=("$(ratio "${S3_GET_NODE_MBS[-1]}" "${S3_GET_DIR_MBS[-1]}")")
    done
    s3_tus_section
}

garage_version() { timeout 10 "$GARAGE_BIN" --version 2>/dev/null | head -n 1 | sed 's/^garage //; s/^cargo://; s/ *\[.*//' || true; }
boto3_version() { "$VENV/bin/python" -c 'import boto3; print(boto3.__version__)' 2>/dev/null || echo '?'; }

# ------------------------------------------------------------------ cli ----

CLI_CURL_MBS=() CLI_SPW_MBS=() CLI_RATIO=()
CLI_SEQ=0
CLI_PORT=""

cli_stamp() { # the next upload's bytes are new (see replace_stamp)
    local stamp
    CLI_SEQ=$((CLI_SEQ + 1))
    printf -v stamp 'spillway-bench-cli-----%09d' "$CLI_SEQ" # 32 bytes
    printf '%s' "$stamp" | dd of="$CLISRC" conv=notrunc,fsync status=none || die "cannot stamp $CLISRC"
}

cli_settle() { # no round starts while the last one's writes and deletes are still reaching the disk
    run_bounded 120 "$TMPD/logs/cli-sync.log" "sync before a cli round" sync || die "sync did not finish"
}

cli_delete() { # key: every timed upload starts from the same state (the
    # one before removed, the disk settled), whichever contender went before
    curl -sS --max-time 60 -o /dev/null -X DELETE "http://127.0.0.1:$CLI_PORT/datasets/$1?versions=all" ||
        die "cannot delete $1"
}

cli_size_of() { # key -> the node's record size
    curl -sS --max-time 30 "http://127.0.0.1:$CLI_PORT/datasets/$1" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["size"])'
}

cli_curl() { # run
    local key="cli/curl-$1" code speed t
    cli_stamp
    cli_settle
    put_file "http://127.0.0.1:$CLI_PORT/data/$key" "$CLISRC" "$(max_time_for "$CLI_SIZE")" "$TMPD/logs/cli-put"
    read -r code speed t <"$TMPD/logs/cli-put"
    [[ $code == 201 ]] || die "cli run $1 curl: HTTP $code, expected 201"
    CLI_CURL_MBS+=("$(mbs "$CLI_SIZE" "$t")")
    log "cli run $1 curl -T:          ${CLI_CURL_MBS[-1]} MB/s, ${t}s"
    cli_delete "$key"
}

cli_spillway() { # run: the whole command, as a user runs it
    local key="cli/spillway-$1" t0 t1 t pid rc=0 var
    local -a unset_env=()
    for var in $(compgen -e); do
        if [[ $var == SPILLWAY_* ]]; then unset_env+=(-u "$var"); fi
    done
    cli_stamp
    cli_settle
    t0=$(now)
    env "${unset_env[@]}" SPILLWAY_URL="http://127.0.0.1:$CLI_PORT" SPILLWAY_STATE_DIR="$TMPD/cli-state" \
        SPILLWAY_CONFIG="$TMPD/no-client-config.toml" \
        "$BIN" upload "$CLISRC" "$key" --quiet --parts "$CLI_PARTS" >"$TMPD/logs/cli-upload.out" 2>"$TMPD/logs/cli-upload.err" &
    pid=$!
    LIVE[$pid]="spillway upload"
    wait "$pid" || rc=$?
    unset "LIVE[$pid]"
    t1=$(now)
    ((rc == 0)) || die "cli run $1: spillway upload exit $rc: $(cat "$TMPD/logs/cli-upload.err")"
    t=$(fsub "$t1" "$t0")
    [[ $(cli_size_of "$key") == "$CLI_SIZE" ]] || die "cli run $1: the node's record of $key is not $CLI_SIZE bytes"
    CLI_SPW_MBS+=("$(mbs "$CLI_SIZE" "$t")")
    log "cli run $1 spillway upload:  ${CLI_SPW_MBS[-1]} MB/s, ${t}s (--parts $CLI_PARTS)"
    cli_delete "$key"
}

cli_section() {
    local i c
    log "cli: $(numfmt --to=iec-i --suffix=B "$CLI_SIZE") file, $CLI_RUNS round(s), spillway upload --parts $CLI_PARTS vs curl -T"
    start_node "$TMPD/node-cli" "$TMPD/logs/node-cli" 60 SPILLWAY_KEEP_VERSIONS=0
    CLI_PORT=$NODE_PORT
    if ((WARMUP)); then
        log "warm-up: one uncounted upload each way"
        cli_curl 0
        cli_spillway 0
        CLI_CURL_MBS=() CLI_SPW_MBS=()
    fi
    for ((i = 1; i <= CLI_RUNS; i++)); do
        for c in $(if ((i % 2)); then echo curl spillway; else echo spillway curl; fi); do
            "cli_$c" "$i"
        done
        CLI_RATIO+=("$(ratio "${CLI_SPW_MBS[-1]}" "${CLI_CURL_MBS[-1]}")")
    done
    stop_node
}

report_cli() {
    local spw curl r
    spw=$(median "${CLI_SPW_MBS[@]}") curl=$(median "${CLI_CURL_MBS[@]}")
    r=$(ratio "$spw" "$curl")
    echo
    echo "cli: $(numfmt --to=iec-i --suffix=B "$CLI_SIZE") file, medians of $CLI_RUNS round(s), order alternating per round"
    row "metric" "spw upload" "curl -T" "ratio" "target" "result" "ranges (ratio)"
    row "--------------------------------------------" "------------" "------------" "-------" "--------------------" "------" "--------------"
    row "upload of one file, MB/s (--parts $CLI_PARTS)" "$spw" "$curl" "$r" ">= $T_CLI_RATIO x curl" "$(ok_ratio_ge "$spw" "$curl" "$T_CLI_RATIO")" \
        "$(printf '%s\n' "${CLI_RATIO[@]}" | sort -g | sed -n '1p;$p' | paste -sd' ' | sed 's/ /../')"
    echo "Notes (cli): the client's time is the whole command (process start, the tus creation, the file"
    echo "streamed and hashed with blake3 on the way, the last piece with the whole blake3, the node's"
    echo "commit; with --parts, the parts in parallel and the node's concatenation); curl's is its transfer"
    echo "(-T, no Expect: 100-continue). Both uploads are fsynced by the node before it answers; each"
    echo "timed command starts after a sync, so neither pays for the other's writeback."
}

# ---------------------------------------------------------------- report ---

fmt3() { awk -v a="$1" 'BEGIN { printf "%.3f", a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# Unrounded, for ratios that are themselves judged (a median of per-round ratios).
ratio_exact() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.6f", a / b; else print "n/a" }'; }
ok_ge() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b ? "PASS" : "FAIL") }'; }
ok_lt() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? "PASS" : "FAIL") }'; }
ok_le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b ? "PASS" : "FAIL") }'; }
# A ratio's verdict from the two figures themselves, not from the ratio as
# printed (two decimals): 0.7988 is not 0.80.
ok_ratio_ge() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { print (b > 0 && a / b >= t ? "PASS" : "FAIL") }'; }
ok_ratio_le() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { print (b > 0 && a / b <= t ? "PASS" : "FAIL") }'; }

row() { # metric spillway nginx ratio target result [ranges]
    if (($# > 6)); then
        printf '%-44s %12s %12s %7s  %-20s %-6s  %s\n' "$@"
    else
        printf '%-44s %12s %12s %7s  %-20s %s\n' "$@"
    fi
}

# The replace section's rows in the main table, below their own column
# names (both columns are the node: versions on, versions off).
report_replace() {
    local on off ton toff r_mbs r_t e_on kept_on kept_off kept
    on=$(median "${R_ON_MBS[@]}") off=$(median "${R_OFF_MBS[@]}")
    ton=$(median "${R_ON_T[@]}") toff=$(median "${R_OFF_T[@]}")
    r_mbs=$(ratio "$on" "$off")
    r_t=$(awk -v a="$ton" -v b="$toff" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
    e_on=$((REPLACE_RUNS + 1))
    if ((e_on > KEEP_VERSIONS_DEFAULT)); then e_on=$KEEP_VERSIONS_DEFAULT; fi
    kept_on=$(replace_kept "$R_ON_BODIES" "$e_on") kept_off=$(replace_kept "$R_OFF_BODIES" 1)
    if [[ $kept_on == ok && $kept_off == ok ]]; then kept=ok; else kept="UNEXPECTED (on: $kept_on, off: $kept_off)"; fi
    row "replace $(numfmt --to=iec-i --suffix=B "$REPLACE_SIZE"), $REPLACE_RUNS round(s), the node:" "versions on" "versions off" "on/off" "" "" \
        "ranges (min..max): on | off | on/off per round"
    row "replace, MB/s" "$(fmtf %.1f "$on")" "$(fmtf %.1f "$off")" "$r_mbs" "" "" \
        "$(spread %.1f "${R_ON_MBS[@]}") | $(spread %.1f "${R_OFF_MBS[@]}") | $(spread %s "$(pair_ratios R_ON_MBS R_OFF_MBS)")"
    row "replace, time s" "$(fmt3 "$ton")" "$(fmt3 "$toff")" "$r_t" "<= ${T_REPLACE_RATIO}" "$(ok_ratio_le "$ton" "$toff" "$T_REPLACE_RATIO")" \
        "$(spread %.3f "${R_ON_T[@]}") | $(spread %.3f "${R_OFF_T[@]}") | $(spread %.3f "${R_RATIO[@]}")"
    row "replace, data dir after, bodies (info)" "$R_ON_BODIES" "$R_OFF_BODIES" "" "~$e_on | ~1" "$kept" \
        "du -sk: $R_ON_KIB | $R_OFF_KIB KiB; blob files: $R_ON_BLOBS | $R_OFF_BLOBS"
}

spread() { # format values... -> "min..max", each printed with the printf format
    local f=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v f="$f" 'NR == 1 { lo = $1 } { hi = $1 }
        END { if (NR) printf f ".." f "\n", lo, hi; else print "-" }'
}

s3row() { printf '%-46s %10s %10s %7s  %-15s %-15s %s\n' "$@"; }

report_s3() {
    local up dir def gn gd
    up=$(median "${S3_NODE_MBS[@]}") dir=$(median "${S3_DIR_MBS[@]}") def=$(median "${S3_DEF_MBS[@]}")
    gn=$(median "${S3_GET_NODE_MBS[@]}") gd=$(median "${S3_GET_DIR_MBS[@]}")
    echo
    echo "S3: node with SPILLWAY_STORAGE=s3 vs boto3 $(boto3_version) straight to the store; Garage $(garage_version),"
    echo "  one node on loopback (--single-node --default-bucket, db sqlite, metadata_fsync = data_fsync = false,"
    echo "  Garage's defaults), a fresh one per measurement; object $(numfmt --to=iec-i --suffix=B "$S3_SIZE") from one file;"
    echo "  node: parts of $((S3_PART >> 20)) MiB${S3_PART_SEEN:+ (as it logged)}, $S3_CONC in flight; medians of $RUNS run(s), order rotating per run;"
    echo "  ratio = spillway / direct (per-run ratios in the ranges column)"
    echo
    s3row "metric" "spillway" "direct" "ratio" "spillway range" "direct range" "ratio range"
    s3row "----------------------------------------------" "----------" "----------" "-------" "---------------" "---------------" "-----------"
    s3row "upload MB/s (boto3 $((S3_PART >> 20)) MiB x $S3_CONC, as the node)" "$up" "$dir" "$(ratio "$up" "$dir")" \
        "$(spread %s "${S3_NODE_MBS[@]}")" "$(spread %s "${S3_DIR_MBS[@]}")" "$(spread %s "${S3_UP_RATIO[@]}")"
    s3row "upload MB/s (boto3 defaults: 8 MiB x 10)" "$up" "$def" "$(ratio "$up" "$def")" \
        "$(spread %s "${S3_NODE_MBS[@]}")" "$(spread %s "${S3_DEF_MBS[@]}")" "$(spread %s "${S3_DEF_RATIO[@]}")"
    s3row "upload time s (matched)" "$(fmt3 "$(median "${S3_NODE_T[@]}")")" "$(fmt3 "$(median "${S3_DIR_T[@]}")")" "" \
        "$(spread %.3f "${S3_NODE_T[@]}")" "$(spread %.3f "${S3_DIR_T[@]}")" ""
    s3row "download MB/s (one GET stream, same object)" "$gn" "$gd" "$(ratio "$gn" "$gd")" \
        "$(spread %s "${S3_GET_NODE_MBS[@]}")" "$(spread %s "${S3_GET_DIR_MBS[@]}")" "$(spread %s "${S3_GET_RATIO[@]}")"
    s3row "node peak RSS during upload, MiB" "$(median "${S3_NODE_RSS[@]}")" "-" "" "$(spread %s "${S3_NODE_RSS[@]}")" "" ""
    s3row "node peak RSS after download, MiB (info)" "$(median "${S3_NODE_RSS_GET[@]}")" "-" "" "$(spread %s "${S3_NODE_RSS_GET[@]}")" "" ""
    s3row "node CPU s during upload (info)" "$(median "${S3_NODE_CPU[@]}")" "-" "" "$(spread %s "${S3_NODE_CPU[@]}")" "" ""
    echo
    echo "Notes (S3): uploads through the node use curl -T (Content-Length, no Expect: 100-continue);"
    echo "its time includes the node's commit (multipart completion). boto3's time is upload_file's"
    echo "own (interpreter start and imports excluded), matched: optional request checksums off (the"
    echo "node sends none); defaults: boto3's TransferConfig() and checksum settings. Both sign payloads"
    echo "(SigV4 over plain HTTP). Downloads: curl -o /dev/null through the node (proxied), boto3"
    echo "get_object read in 1 MiB chunks and dropped. Client, node and Garage share the 2 cores."
    report_s3_tus
}

# ------------------------------------------------------------ baseline ---

baseline_checkout() { # ", built in the checkout <dir> (now at <commit>)" when
    # BASE_BIN is <checkout>/target/release/spillway; the checkout may have
    # moved on since the build, so this is a hint, not the binary's origin
    local top
    top=$(cd "$(dirname "$BASE_BIN")/../.." 2>/dev/null && pwd -P) || return 0
    [[ $(git -C "$top" rev-parse --show-toplevel 2>/dev/null) == "$top" ]] || return 0
    printf ', built in the checkout %s (now at %s%s)' "$top" \
        "$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$(git -C "$top" diff --quiet HEAD 2>/dev/null || echo '+changes')"
}

pair_ratios() { # name_a name_b (arrays of one value a run) -> the ratios a/b, run by run
    local -n ra=$1 rb=$2
    local k
    for ((k = 0; k < ${#ra[@]} && k < ${#rb[@]}; k++)); do ratio "${ra[$k]}" "${rb[$k]}"; echo; done
}

per_gib() { # bytes values... -> each value per GiB of bytes (%.2f), one a line
    local n=$1
    shift
    printf '%s\n' "$@" | awk -v n="$n" '{ printf "%.2f\n", $1 * 1073741824 / n }'
}

fmtf() { awk -v f="$1" -v a="$2" 'BEGIN { printf f, a }'; } # format value

brow() { printf '%-44s %10s %10s %7s  %-15s %-15s %s\n' "$@"; }

bline() { # metric format name_cur name_base: medians, their ratio and the ranges
    local f=$2 cur base
    local -n bc=$3 bb=$4
    local -a rs
    mapfile -t rs < <(pair_ratios "$3" "$4")
    cur=$(median "${bc[@]}") base=$(median "${bb[@]}")
    brow "$1" "$(fmtf "$f" "$cur")" "$(fmtf "$f" "$base")" "$(ratio "$cur" "$base")" \
        "$(spread "$f" "${bc[@]}")" "$(spread "$f" "${bb[@]}")" "$(spread %s "${rs[@]}")"
}

# shellcheck disable=SC2034 # the *_cpu arrays: bline reads them by name
report_baseline() {
    local -a s_cur_cpu s_base_cpu c_cur_cpu c_base_cpu sm_cur sm_base
    local c
    echo
    echo "Against the baseline: $BASE_BIN$(baseline_checkout)"
    echo "  started like the node (this checkout's Rocket.toml, the same SPILLWAY_* env, a fresh data dir"
    echo "  and port per run, the same checks)"
    if selected single || selected conc; then
        echo "  single and conc: node, nginx and baseline in every round, the order rotating per round;"
        echo "  medians of $RUNS run(s) (ratio range: the per-round ratios)"
    fi
    if selected small || selected ranges || selected get; then
        echo "  small, ranges, get: the baseline one more contender in each round's rotation, its own"
        echo "  node up for the section as the current one; medians of each section's rounds"
    fi
    if selected list; then
        echo "  list: both nodes up at once, $LIST_RUNS requests each, alternating (ratio range: per request pair);"
        echo "  start-up timed once each, the node first (polled every 0.1 s)"
    fi
    echo "  ratio = current / baseline: above 1 is better for MB/s, worse for time, RSS and CPU"
    echo
    brow "metric" "current" "baseline" "ratio" "current range" "baseline range" "ratio range"
    brow "--------------------------------------------" "----------" "----------" "-------" "---------------" "---------------" "-----------"
    if selected single; then
        mapfile -t s_cur_cpu < <(per_gib "$SIZE" "${S_NODE_CPU[@]}")
        mapfile -t s_base_cpu < <(per_gib "$SIZE" "${S_BASE_CPU[@]}")
        bline "single upload, MB/s" %.1f S_NODE_MBS S_BASE_MBS
        bline "single upload, time s" %.3f S_NODE_T S_BASE_T
        bline "single upload, peak RSS MiB" %.1f S_NODE_RSS S_BASE_RSS
        bline "single upload, server CPU s per GiB" %.2f s_cur_cpu s_base_cpu
    fi
    if selected conc; then
        mapfile -t c_cur_cpu < <(per_gib $((CONC * CONC_SIZE)) "${C_NODE_CPU[@]}")
        mapfile -t c_base_cpu < <(per_gib $((CONC * CONC_SIZE)) "${C_BASE_CPU[@]}")
        bline "${CONC} concurrent uploads, aggregate MB/s" %.1f C_NODE_MBS C_BASE_MBS
        bline "${CONC} concurrent uploads, peak RSS MiB" %.1f C_NODE_RSS C_BASE_RSS
        bline "concurrent, server CPU s per GiB" %.2f c_cur_cpu c_base_cpu
    fi
    if selected small; then
        for c in $(small_variants); do
            mapfile -t sm_cur < <(small_rates node "$c")
            mapfile -t sm_base < <(small_rates base "$c")
            bline "small PUTs, $c client(s), files/s" %.0f sm_cur sm_base
        done
    fi
    if selected ranges; then
        mapfile -t sm_cur < <(reads_values RG_RATE node)
        mapfile -t sm_base < <(reads_values RG_RATE base)
        bline "ranges $((RANGE_LEN >> 10)) KiB x$RANGE_CONC, requests/s" %.0f sm_cur sm_base
    fi
    if selected get; then
        mapfile -t sm_cur < <(reads_values GT_MBS node)
        mapfile -t sm_base < <(reads_values GT_MBS base)
        bline "GET $(numfmt --to=iec-i --suffix=B "$GET_SIZE") whole, MB/s" %.1f sm_cur sm_base
    fi
    if selected list; then
        bline "list first page (limit=$LIST_LIMIT), ms" %.3f L_FIRST LB_FIRST
        bline "list deep page (after row 90%), ms" %.3f L_DEEP LB_DEEP
        brow "node start-up with $ROWS rows, s (info)" "$(fmt3 "$L_START_S")" "$(fmt3 "$LB_START_S")" \
            "$(ratio "$L_START_S" "$LB_START_S")" "" "" ""
        brow "node peak RSS after listing, MiB (info)" "$L_RSS" "$LB_RSS" "$(ratio "$L_RSS" "$LB_RSS")" "" "" ""
    fi
}

report() {
    local s_node s_ngx s_ngx_sync s_rss s_ngx_rss c_node c_ngx c_ngx_sync c_rss c_ngx_rss r
    echo
    echo "Spillway benchmark ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+changes')), $(date -u +%Y-%m-%dT%H:%M:%SZ), sections:$(
        for s in $SECTIONS_ALL; do if selected "$s"; then printf ' %s' "$s"; fi; done)"
    local warm="" list=""
    if ((WARMUP)); then warm=", after 1 uncounted warm-up upload of each kind"; fi
    if selected list; then list=" (listing: of $LIST_RUNS requests)"; fi
    if selected single || selected conc || selected list || selected s3; then
        echo "  medians of $RUNS run(s)$warm$list"
    fi
    if selected replace; then
        echo "  replace: medians of $REPLACE_RUNS round(s), after 1 uncounted first upload to each node"
    fi
    if selected single || selected conc || selected list || selected s3; then
        echo "  MB = 10^6 bytes; RSS = VmHWM of a fresh server process per run; node and reference alternate"
    else
        echo "  MB = 10^6 bytes"
    fi
    if selected single || selected conc || selected list; then
        echo "  single: $(numfmt --to=iec-i --suffix=B "$SIZE"); concurrent: $CONC x $(numfmt --to=iec-i --suffix=B "$CONC_SIZE"); rows: $ROWS"
    fi
    if selected single || selected conc || selected small || selected ranges || selected get; then
        echo "  nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') from Debian package '$NGINX_PKG' (dav module compiled in), single process"
    fi
    if selected single || selected conc || selected list || selected replace; then
        echo
        row "metric" "spillway" "nginx" "ratio" "target" "result"
        row "--------------------------------------------" "------------" "------------" "-------" "--------------------" "------"
    fi
    if selected single; then
        s_node=$(median "${S_NODE_MBS[@]}") s_ngx=$(median "${S_NGX_MBS[@]}")
        s_ngx_sync=$(median "${S_NGX_SYNC_MBS[@]}")
        s_rss=$(median "${S_NODE_RSS[@]}") s_ngx_rss=$(median "${S_NGX_RSS[@]}")
        r=$(ratio "$s_node" "$s_ngx")
        row "single upload, MB/s" "$s_node" "$s_ngx" "$r" ">= ${T_RATIO}x nginx" "$(ok_ratio_ge "$s_node" "$s_ngx" "$T_RATIO")"
        row "single upload, time s" "$(fmt3 "$(median "${S_NODE_T[@]}")")" "$(fmt3 "$(median "${S_NGX_T[@]}")")" "" "" ""
        row "single upload, peak RSS MiB" "$s_rss" "$s_ngx_rss" "" "< $T_RSS_SINGLE MiB" "$(ok_lt "$s_rss" "$T_RSS_SINGLE")"
        row "single, nginx incl. fsync, MB/s (info)" "$s_node" "$s_ngx_sync" "$(ratio "$s_node" "$s_ngx_sync")" "" ""
        row "single upload, server CPU s (info)" "$(median "${S_NODE_CPU[@]}")" "$(median "${S_NGX_CPU[@]}")" \
            "$(ratio "$(median "${S_NODE_CPU[@]}")" "$(median "${S_NGX_CPU[@]}")")" "" ""
        report_single_more "$s_node" "$s_ngx"
    fi
    if selected conc; then
        c_node=$(median "${C_NODE_MBS[@]}") c_ngx=$(median "${C_NGX_MBS[@]}")
        c_ngx_sync=$(median "${C_NGX_SYNC_MBS[@]}")
        c_rss=$(median "${C_NODE_RSS[@]}") c_ngx_rss=$(median "${C_NGX_RSS[@]}")
        r=$(ratio "$c_node" "$c_ngx")
        row "${CONC} concurrent uploads, aggregate MB/s" "$c_node" "$c_ngx" "$r" ">= ${T_RATIO}x nginx" "$(ok_ratio_ge "$c_node" "$c_ngx" "$T_RATIO")"
        row "${CONC} concurrent uploads, peak RSS MiB" "$c_rss" "$c_ngx_rss" "" "< $T_RSS_CONC MiB" "$(ok_lt "$c_rss" "$T_RSS_CONC")"
        row "concurrent, nginx incl. fsync, MB/s (info)" "$c_node" "$c_ngx_sync" "$(ratio "$c_node" "$c_ngx_sync")" "" ""
        row "concurrent, server CPU s (info)" "$(median "${C_NODE_CPU[@]}")" "$(median "${C_NGX_CPU[@]}")" \
            "$(ratio "$(median "${C_NODE_CPU[@]}")" "$(median "${C_NGX_CPU[@]}")")" "" ""
    fi
    if selected list; then
        row "list first page (limit=$LIST_LIMIT), ms" "$L_FIRST_MS" "-" "" "< $T_LIST_MS ms" "$(ok_lt "$L_FIRST_MS" "$T_LIST_MS")"
        row "list deep page (after row 90%), ms" "$L_DEEP_MS" "-" "" "< $T_LIST_MS ms" "$(ok_lt "$L_DEEP_MS" "$T_LIST_MS")"
        row "node start-up with $ROWS rows, s (info)" "$(fmt3 "$L_START_S")" "-" "" "" ""
        row "node peak RSS after listing, MiB (info)" "$L_RSS" "-" "" "" ""
    fi
    if selected replace; then report_replace; fi
    if selected single || selected conc || selected list; then
        echo
        echo "Notes: the page cache was not dropped (not allowed here): bodies are read from it and"
        echo "writes land in it. Spillway fsyncs each upload before answering; nginx does not (see the"
        echo "'incl. fsync' rows: nginx time + fsync of its files). Uploads use curl -T (Content-Length)"
        echo "without Expect: 100-continue. The machine may be shared: compare within one invocation."
    fi
    if selected replace; then
        echo
        echo "Notes (replace): two nodes up at once, fresh data dirs: versions on (the defaults, keep_versions"
        echo "$KEEP_VERSIONS_DEFAULT) and off (SPILLWAY_KEEP_VERSIONS=0); key r uploaded once to each, then replaced on both"
        echo "each round, the order alternating (on off, off on, ...), with curl -T (Content-Length, no"
        echo "Expect: 100-continue). Every upload sends bytes never sent before (one random body, its first"
        echo "32 bytes stamped per upload), so none is deduplicated. Bodies = du -sk of the data dir, both"
        echo "nodes stopped, / the body's size: versions kept with them on, freed with them off. Both fsync."
    fi
    if selected small || selected ranges || selected get; then report_issue16; fi
    if baseline && { selected single || selected conc || selected small || selected ranges || selected get || selected list; }; then
        report_baseline
    fi
    if selected s3; then report_s3; fi
    if selected cli; then report_cli; fi
}

# The single section's rows against dd and per GiB of CPU (issue 16).
# shellcheck disable=SC2034 # the *_gib arrays: median reads them
report_single_more() { # node_mbs nginx_mbs (medians)
    local dd lo r cn cg
    local -a n_gib g_gib
    dd=$(median "${S_DD_MBS[@]}")
    lo=$(awk -v a="$2" -v b="$dd" 'BEGIN { print (a < b ? a : b) }')
    r=$(ratio "$1" "$lo")
    row "single vs min(nginx, dd), MB/s" "$1" "$lo" "$r" ">= ${T_SINGLE_MIN}x the lower" "$(ok_ratio_ge "$1" "$lo" "$T_SINGLE_MIN")"
    row "single, dd bs=8M conv=fdatasync, MB/s (info)" "$1" "$dd" "$(ratio "$1" "$dd")" "" "" \
        "dd $(spread %.1f "${S_DD_MBS[@]}")"
    mapfile -t n_gib < <(per_gib "$SIZE" "${S_NODE_CPU[@]}")
    mapfile -t g_gib < <(per_gib "$SIZE" "${S_NGX_CPU[@]}")
    cn=$(median "${n_gib[@]}") cg=$(median "${g_gib[@]}")
    row "single upload, server CPU s per GiB" "$cn" "$cg" "" "<= ${T_CPU_GIB} s/GiB" "$(ok_le "$cn" "$T_CPU_GIB")" \
        "node $(spread %.2f "${n_gib[@]}")"
}

# Issue 16's reads and small writes: their own table, each row against its
# own reference (the disk's durable rate for small PUTs, nginx otherwise).
report_issue16() {
    echo
    echo "Small writes and reads: medians; the last column: min..max of node | reference | per-round ratio"
    if selected small; then
        echo "  small: $SMALL_COUNT PUTs of $(numfmt --to=iec-i --suffix=B "$SMALL_SIZE") (fresh keys and bytes) per round, $SMALL_RUNS round(s);"
        echo "         reference: durable_rate (C; write, fsync, rename, directory fsync; threads = clients)"
    fi
    if selected ranges; then
        echo "  ranges: $RANGE_COUNT GETs of $(numfmt --to=iec-i --suffix=B "$RANGE_LEN") at seeded random offsets in $(numfmt --to=iec-i --suffix=B "$RANGE_FILE_SIZE"), $RANGE_CONC at once, $RANGE_RUNS round(s)"
    fi
    if selected get; then
        echo "  get: one GET of $(numfmt --to=iec-i --suffix=B "$GET_SIZE") with curl -o /dev/null, $GET_RUNS round(s)"
    fi
    echo
    row "metric" "spillway" "reference" "ratio" "target" "result" "min..max: node | reference | ratio"
    row "--------------------------------------------" "------------" "------------" "-------" "--------------------" "------" "----------------------------------"
    if selected small; then report_small; fi
    report_reads
    echo
    if selected small; then
        echo "Notes (small): PUTs by curl (--parallel --parallel-max N, keep-alive; 1 client: one connection,"
        echo "one PUT at a time), every answer checked 201, three keys per run read back and compared. The"
        echo "disk's rate is measured in the temp dir's filesystem, where the nodes' data dirs are. nginx"
        echo "WebDAV does not fsync (informative)."
    fi
    if selected ranges; then
        echo "Notes (ranges): range_get (C, epoll, keep-alive, one thread; every answer checked 206 and its"
        echo "length, a sample compared with the file); its CPU per request gives its ceiling on one core."
    fi
    if selected ranges || selected get; then
        echo "Notes (reads): the file is read from the page cache on every side; nginx: sendfile on, one worker."
    fi
}

# ------------------------------------------------------------------ main ---

# The order of the contenders in round i (from 1), rotated by one place per
# round: node nginx, then nginx node, ...; with a baseline node nginx base,
# nginx base node, base node nginx, ...
round_order() { # i
    local -a order=(node nginx)
    if baseline; then order+=(base); fi
    rotated "$1" "${order[@]}"
}

rotated() { # i item...: the items, rotated left by i-1 places, one a line
    local i=$1 j
    shift
    for ((j = 0; j < $#; j++)); do
        printf '%s\n' "${@:$(((i - 1 + j) % $# + 1)):1}"
    done
}

main() {
    local need avail i c
    ensure_deps
    if baseline; then
        if selected single || selected conc || selected small || selected ranges || selected get || selected list; then
            log "baseline: $BASE_BIN$(baseline_checkout), one more contender in single, conc, small, ranges, get and list"
        fi
        if selected replace; then log "baseline: not run in the replace section"; fi
        if selected s3; then log "baseline: not run in the s3 section"; fi
    fi
    log "building the node: cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    local target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
    BIN="$target_dir/release/spillway"
    [[ -x $BIN ]] || die "no binary at $BIN"

    mkdir -p "$TMP_PARENT"
    # Room: the bodies, the largest of (one single upload, all concurrent
    # uploads, both replace nodes' data dirs, one S3 object in Garage)
    # stored at a time, the index (~1 KiB a row with its WAL), plus 512 MiB
    # of slack. Replace: the versions-on node holds min(runs, keep) bodies
    # and the one coming in, the off node the old one and the new one.
    local bodies=0 stored=0 r_kept
    if selected single; then bodies=$((bodies + SIZE)) stored=$SIZE; fi
    if selected conc; then
        bodies=$((bodies + CONC_SIZE))
        if ((CONC * CONC_SIZE > stored)); then stored=$((CONC * CONC_SIZE)); fi
    fi
    if selected replace; then
        bodies=$((bodies + REPLACE_SIZE))
        r_kept=$REPLACE_RUNS
        if ((r_kept > KEEP_VERSIONS_DEFAULT)); then r_kept=$KEEP_VERSIONS_DEFAULT; fi
        if (((r_kept + 3) * REPLACE_SIZE > stored)); then stored=$(((r_kept + 3) * REPLACE_SIZE)); fi
    fi
    if selected s3; then
        bodies=$((bodies + S3_SIZE))
        if ((S3_SIZE > stored)); then stored=$S3_SIZE; fi
    fi
    # small: every round's files stay on each server (node, nginx, baseline)
    # for the section; ranges and get: one copy per server.
    local servers=2 n
    if baseline; then servers=3; fi
    if selected small; then
        n=$((2 * (SMALL_RUNS + 1) * SMALL_COUNT * (SMALL_SIZE + 4096) * servers + 2 * SMALL_COUNT * SMALL_SIZE))
        if ((n > stored)); then stored=$n; fi
    fi
    if selected ranges; then
        bodies=$((bodies + RANGE_FILE_SIZE))
        if ((servers * RANGE_FILE_SIZE > stored)); then stored=$((servers * RANGE_FILE_SIZE)); fi
    fi
    if selected get; then
        bodies=$((bodies + GET_SIZE))
        if ((servers * GET_SIZE > stored)); then stored=$((servers * GET_SIZE)); fi
    fi
    if selected cli; then
        # Two uploads a round, the parts and their concatenation in flight.
        bodies=$((bodies + CLI_SIZE))
        if ((4 * CLI_SIZE > stored)); then stored=$((4 * CLI_SIZE)); fi
    fi
    need=$((bodies + stored + (512 << 20)))
    if selected list; then need=$((need + ROWS * 1024)); fi
    if selected list && baseline; then need=$((need + ROWS * 1024)); fi
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
    S3SRC="$TMPD/s3.bin"
    RSRC="$TMPD/replace.bin"
    RGSRC="$TMPD/ranges.bin"
    GSRC="$TMPD/get.bin"
    CLISRC="$TMPD/cli.bin"
    local -a bodies_made=()
    if selected single; then bodies_made+=("$SRC:$SIZE"); fi
    if selected conc; then bodies_made+=("$CSRC:$CONC_SIZE"); fi
    if selected replace; then bodies_made+=("$RSRC:$REPLACE_SIZE"); fi
    if selected ranges; then bodies_made+=("$RGSRC:$RANGE_FILE_SIZE"); fi
    if selected get; then bodies_made+=("$GSRC:$GET_SIZE"); fi
    if selected s3; then bodies_made+=("$S3SRC:$S3_SIZE"); fi
    if selected cli; then bodies_made+=("$CLISRC:$CLI_SIZE"); fi
    for i in "${bodies_made[@]}"; do
        log "generating $(numfmt --to=iec-i --suffix=B "${i##*:}") of random body (${i%:*})"
        head -c "${i##*:}" /dev/urandom >"${i%:*}"
        sync "${i%:*}"
    done

    if selected single; then
        if ((WARMUP)); then
            # The first writes of a fresh (virtual) machine's page cache can be
            # much slower than later ones: give both servers one uncounted run.
            log "warm-up: one uncounted single upload to each server"
            single_node 0
            single_nginx 0
            single_dd 0
            if baseline; then single_node 0 base; fi
            S_NODE_MBS=() S_NODE_T=() S_NODE_RSS=() S_NODE_CPU=()
            S_NGX_MBS=() S_NGX_T=() S_NGX_RSS=() S_NGX_SYNC_MBS=() S_NGX_CPU=()
            S_DD_MBS=() S_DD_T=()
            S_BASE_MBS=() S_BASE_T=() S_BASE_RSS=() S_BASE_CPU=()
        fi
        # dd joins the rotation: node nginx dd [base], then nginx dd [base] node, ...
        local -a s_order=(node nginx dd)
        if baseline; then s_order+=(base); fi
        for ((i = 1; i <= RUNS; i++)); do
            for c in $(rotated "$i" "${s_order[@]}"); do
                case $c in
                    node) single_node "$i" ;;
                    nginx) single_nginx "$i" ;;
                    dd) single_dd "$i" ;;
                    base) single_node "$i" base ;;
                esac
            done
        done
        rm -f -- "$SRC"
    fi
    if selected conc; then
        if ((WARMUP)) && ! selected single; then
            log "warm-up: one uncounted round of concurrent uploads to each server"
            conc_node 0
            conc_nginx 0
            if baseline; then conc_node 0 base; fi
            C_NODE_MBS=() C_NODE_RSS=() C_NODE_CPU=()
            C_NGX_MBS=() C_NGX_RSS=() C_NGX_SYNC_MBS=() C_NGX_CPU=()
            C_BASE_MBS=() C_BASE_RSS=() C_BASE_CPU=()
        fi
        for ((i = 1; i <= RUNS; i++)); do
            for c in $(round_order "$i"); do
                case $c in
                    node) conc_node "$i" ;;
                    nginx) conc_nginx "$i" ;;
                    base) conc_node "$i" base ;;
                esac
            done
        done
        rm -f -- "$CSRC"
    fi
    if selected small; then small_section; fi
    if selected ranges; then
        ranges_section
        rm -f -- "$RGSRC"
    fi
    if selected get; then
        get_section
        rm -f -- "$GSRC"
    fi
    if selected list; then listing; fi
    if selected replace; then
        replace_section
        rm -f -- "$RSRC"
    fi
    if selected s3; then
        s3_section
        rm -f -- "$S3SRC"
    fi
    if selected cli; then
        cli_section
        rm -f -- "$CLISRC"
    fi
    report
}

main "$@"
