# shellcheck shell=bash
# The tus workload of the `s3` section of scripts/bench.sh (sourced by it;
# uses its helpers and globals): issue 18, any node continues any upload.
# "A 1 GiB tus upload through two round-robin nodes versus through one node,
# same run: >= 0.8x."
#
# The section's one PostgreSQL (initdb into the temp dir, at its defaults,
# fsync on; on a free loopback port; stopped by PID at the end) serves every
# upload. Per upload, fresh: a Garage (start_garage, as the rest of the
# section), a database in that PostgreSQL, and two nodes A and B on both
# (SPILLWAY_STORAGE=s3, SPILLWAY_INDEX=postgres, the same bucket, each its
# own data dir and port, the section's S3 settings). Both nodes run in both
# variants; scripts/bench/tus_client.py sends one upload of BENCH_S3_SIZE
# in PATCHes of BENCH_S3_TUS_CHUNK:
#   two  request i to node i mod 2: POST on A, PATCH 1 on B, PATCH 2 on A, ...
#   one  every request to A (B idle).
# Timed from just before the POST to the last 204 (the node answers it after
# the commit). Checked after each: the last PATCH's ETag and GET
# /datasets/{key} through both nodes (size, blake3) against the file's
# blake3, computed once with the blake3 module. Rounds alternate the order
# (one two, two one, ...); the ratio is two/one per round, its median
# against the target.
#
# Why a fresh Garage per upload rather than one Garage with the keys deleted
# between rounds: Garage stores 1 MiB blocks by their hash and skips writing
# a block it holds (deleted objects' blocks stay for 10 minutes, until its
# block GC), so the same body twice into one Garage would write nothing the
# second time. A fresh one per upload writes every byte each time, and its
# removal frees the disk.
#
# Why 64 MiB PATCHes by default: a multiple of the tus part size (the S3
# part size rounded up to a power of two, 8 MiB here), so every PATCH ends
# on a whole part and none writes a tail object the next one must read back
# (a cost of PATCHes ending mid-part, not of changing nodes); big enough
# that a request's own costs (the lease taken and released, the index
# updates) stay small against its bytes, as with any chunked client; small
# enough for 16 changes of node in 1 GiB (4 in 256 MiB).

TUS_PG_PID="" TUS_PG_PORT="" TUS_PG_USER="" TUS_PG_DIR=""
TUS_PG_ENV=() # no inherited PG* settings reach PostgreSQL or its tools
TUS_PART=""   # the tus part size the nodes use, bytes
TUS_B3=""     # the body's blake3 (hex), or - without the blake3 module
TUS_A_PID="" TUS_B_PID="" TUS_A_PORT="" TUS_B_PORT=""
TUS_TWO_MBS=() TUS_ONE_MBS=() TUS_TWO_T=() TUS_ONE_T=() TUS_RATIO=()
TUS_TWO_CPU=() TUS_ONE_CPU=() TUS_PATCHES=""
declare -A TUS_RETRIES=([one]=0 [two]=0) TUS_RETRY_S=([one]=0 [two]=0) # counted rounds, per variant

tus_psql() { # what sql...: each statement on its own (-c), against the `postgres` database, bounded
    local what=$1 sql
    local -a cmds=()
    shift
    for sql in "$@"; do cmds+=(-c "$sql"); done
    run_bounded 60 "$TMPD/logs/tus-psql.log" "psql ($what)" env "${TUS_PG_ENV[@]}" PGCONNECT_TIMEOUT=10 \
        "$PG_BIN_DIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$TUS_PG_PORT" -U "$TUS_PG_USER" \
        -d postgres "${cmds[@]}" || die "psql ($what) failed: $(tail -n 5 "$TMPD/logs/tus-psql.log")"
}

tus_pg_start() { # the section's PostgreSQL, at its defaults (fsync on)
    TUS_PG_DIR="$TMPD/pg"
    start_postgres_server "$TUS_PG_DIR" || die "cannot start postgres"
    TUS_PG_PID=$PG_PID TUS_PG_PORT=$PG_PORT TUS_PG_USER=$PG_USER TUS_PG_ENV=("${PG_ENV[@]}")
    log "tus: postgres $("$PG_BIN_DIR/postgres" --version | awk '{ print $3 }') (pid $TUS_PG_PID) on 127.0.0.1:$TUS_PG_PORT"
}

# Fast shutdown (INT): it ends the sessions instead of waiting for them.
tus_pg_stop() { stop_pid "$TUS_PG_PID" INT; TUS_PG_PID=""; rm -rf -- "$TUS_PG_DIR"; }

tus_cluster_start() { # tag: a fresh Garage, database and nodes A and B
    local tag=$1 db="tus_${1//[!a-z0-9]/_}" n
    start_garage "$TMPD/garage-tus-$tag"
    tus_psql "create $db" "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db"
    for n in A B; do
        start_node_bin "$BIN" "tus $n" "$TMPD/node-tus-$tag-$n" "$TMPD/logs/node-tus-$tag-$n" 60 \
            SPILLWAY_STORAGE=s3 SPILLWAY_S3__ENDPOINT="$BENCH_S3_ENDPOINT" \
            SPILLWAY_S3__REGION="$S3_REGION" SPILLWAY_S3__BUCKET="$S3_BUCKET" \
            SPILLWAY_S3__ACCESS_KEY_ID="$BENCH_S3_ACCESS_KEY" \
            SPILLWAY_S3__SECRET_ACCESS_KEY="$BENCH_S3_SECRET_KEY" \
            SPILLWAY_S3__PATH_STYLE=true SPILLWAY_S3__PARTS_IN_FLIGHT="$S3_CONC" \
            SPILLWAY_MAX_DATASET_SIZE="$S3_MAX_DATASET" \
            SPILLWAY_INDEX=postgres \
            SPILLWAY_POSTGRES_URL="postgres://$TUS_PG_USER@127.0.0.1:$TUS_PG_PORT/$db"
        if [[ $n == A ]]; then TUS_A_PID=$NODE_PID TUS_A_PORT=$NODE_PORT; else TUS_B_PID=$NODE_PID TUS_B_PORT=$NODE_PORT; fi
    done
}

tus_cluster_stop() { # tag: the nodes first (their sessions), the database, then Garage
    local tag=$1 db="tus_${1//[!a-z0-9]/_}"
    stop_pid "$TUS_A_PID" TERM
    stop_pid "$TUS_B_PID" TERM
    TUS_A_PID="" TUS_B_PID=""
    tus_psql "drop $db" "DROP DATABASE IF EXISTS $db"
    stop_garage
    rm -rf -- "$TMPD/node-tus-$tag-A" "$TMPD/node-tus-$tag-B"
}

s3_tus_upload() { # run variant (one | two)
    local run=$1 v=$2 tag="$2-$1" key="bench/tus-$2-$1.bin" logf="$TMPD/logs/tus-client-$2-$1.log"
    local rc=0 t size ccpu patches retries retry_s etag cpu mbs
    local -a bases=()
    tus_cluster_start "$tag"
    bases=("http://127.0.0.1:$TUS_A_PORT")
    if [[ $v == two ]]; then bases+=("http://127.0.0.1:$TUS_B_PORT"); fi
    run_bounded $(($(max_time_for "$S3_SIZE") + 60)) "$logf" "tus_client.py ($v)" \
        "$VENV/bin/python" "$HELPERS/tus_client.py" upload "$S3SRC" "$key" "$TUS_CHUNK" "$TUS_B3" "${bases[@]}" ||
        rc=$?
    ((rc == 0)) || die "tus run $run ($v node(s)): tus_client.py exit $rc: $(grep -v '^REQ ' "$logf" | tail -n 5)"
    read -r t size ccpu patches retries retry_s etag <<<"$(awk '$1 == "RESULT" { $1 = ""; r = $0 } END { print r }' "$logf")"
    [[ -n ${t:-} && $size == "$S3_SIZE" ]] || die "tus run $run ($v): no RESULT of $S3_SIZE bytes: $(tail -n 5 "$logf")"
    cpu=$(awk -v a="$(cpu_s "$TUS_A_PID")" -v b="$(cpu_s "$TUS_B_PID")" 'BEGIN { printf "%.2f", a + b }')
    tus_cluster_stop "$tag"
    mbs=$(mbs "$size" "$t")
    TUS_PATCHES=$patches
    TUS_RETRIES[$v]=$((TUS_RETRIES[$v] + retries))
    TUS_RETRY_S[$v]=$(awk -v a="${TUS_RETRY_S[$v]}" -v b="$retry_s" 'BEGIN { printf "%.3f", a + b }')
    if [[ $v == two ]]; then
        TUS_TWO_MBS+=("$mbs") TUS_TWO_T+=("$t") TUS_TWO_CPU+=("$cpu")
    else
        TUS_ONE_MBS+=("$mbs") TUS_ONE_T+=("$t") TUS_ONE_CPU+=("$cpu")
    fi
    log "tus run $run $v node(s): $mbs MB/s, ${t}s, $patches PATCHes, $retries retried (${retry_s}s), nodes' CPU ${cpu}s (A+B), client CPU ${ccpu}s, ETag $etag"
    grep '^RETRY ' "$logf" | sed 's/^/    /' >&2 || true
}

s3_tus_section() {
    local i v
    TUS_PART=$S3_PART
    # The tus part: the S3 part size rounded up to a power of two (store/s3/parts.rs).
    if ((TUS_PART & (TUS_PART - 1))); then
        TUS_PART=1
        while ((TUS_PART < S3_PART)); do TUS_PART=$((TUS_PART << 1)); done
    fi
    if ((TUS_CHUNK % TUS_PART)); then
        log "tus: note: PATCHes of $TUS_CHUNK bytes are not whole parts of $((TUS_PART >> 20)) MiB: each one that ends mid-part also writes a tail object the next reads back"
    fi
    TUS_B3=$("$VENV/bin/python" "$HELPERS/tus_client.py" blake3 "$S3SRC") || die "tus_client.py blake3 failed"
    if [[ $TUS_B3 == - ]]; then
        log "tus: no blake3 module in $VENV: the uploads are checked by size only"
    fi
    log "tus: $(numfmt --to=iec-i --suffix=B "$S3_SIZE") upload in PATCHes of $(numfmt --to=iec-i --suffix=B "$TUS_CHUNK") (tus parts of $((TUS_PART >> 20)) MiB), $TUS_RUNS round(s), two nodes round robin vs one; blake3 ${TUS_B3:0:16}..."
    tus_pg_start
    if ((WARMUP)); then
        log "warm-up: one uncounted tus upload each way"
        s3_tus_upload 0 two
        s3_tus_upload 0 one
        TUS_TWO_MBS=() TUS_ONE_MBS=() TUS_TWO_T=() TUS_ONE_T=() TUS_TWO_CPU=() TUS_ONE_CPU=()
        TUS_RETRIES=([one]=0 [two]=0) TUS_RETRY_S=([one]=0 [two]=0)
    fi
    for ((i = 1; i <= TUS_RUNS; i++)); do
        for v in $(if ((i % 2)); then echo one two; else echo two one; fi); do
            s3_tus_upload "$i" "$v"
        done
        TUS_RATIO+=("$(ratio_exact "${TUS_TWO_MBS[-1]}" "${TUS_ONE_MBS[-1]}")")
    done
    tus_pg_stop
}

report_s3_tus() {
    local two one r
    two=$(median "${TUS_TWO_MBS[@]}") one=$(median "${TUS_ONE_MBS[@]}") r=$(median "${TUS_RATIO[@]}")
    echo
    echo "S3 tus (issue 18): one $(numfmt --to=iec-i --suffix=B "$S3_SIZE") upload in $TUS_PATCHES PATCHes of $(numfmt --to=iec-i --suffix=B "$TUS_CHUNK"), two nodes round robin"
    echo "  (POST on A, PATCH 1 on B, PATCH 2 on A, ...) vs every request to A; per upload a fresh Garage, a fresh"
    echo "  database in one PostgreSQL (defaults) and fresh nodes A and B on both; $TUS_RUNS round(s), order alternating;"
    echo "  ratio = the median of the per-round ratios two/one"
    echo
    row "metric" "two nodes" "one node" "ratio" "target" "result" "min..max: two | one | ratio"
    row "--------------------------------------------" "------------" "------------" "-------" "--------------------" "------" "---------------------------"
    row "tus upload MB/s (POST to the last 204)" "$two" "$one" "$(fmtf %.2f "$r")" ">= $T_TUS_RATIO x one node" "$(ok_ge "$r" "$T_TUS_RATIO")" \
        "$(spread %s "${TUS_TWO_MBS[@]}") | $(spread %s "${TUS_ONE_MBS[@]}") | $(spread %.2f "${TUS_RATIO[@]}")"
    row "tus upload time s" "$(fmt3 "$(median "${TUS_TWO_T[@]}")")" "$(fmt3 "$(median "${TUS_ONE_T[@]}")")" "" "" "" \
        "$(spread %.3f "${TUS_TWO_T[@]}") | $(spread %.3f "${TUS_ONE_T[@]}")"
    row "nodes' CPU s, A+B (info)" "$(median "${TUS_TWO_CPU[@]}")" "$(median "${TUS_ONE_CPU[@]}")" \
        "$(ratio "$(median "${TUS_TWO_CPU[@]}")" "$(median "${TUS_ONE_CPU[@]}")")" "" "" \
        "$(spread %s "${TUS_TWO_CPU[@]}") | $(spread %s "${TUS_ONE_CPU[@]}")"
    row "PATCHes retried, all rounds (info)" "${TUS_RETRIES[two]}" "${TUS_RETRIES[one]}" "" "" "" \
        "seconds in them: ${TUS_RETRY_S[two]} | ${TUS_RETRY_S[one]}"
    echo
    echo "Notes (S3 tus): client scripts/bench/tus_client.py (http.client, one keep-alive connection per"
    echo "node, each PATCH's bytes by sendfile from the file). A PATCH refused (409 upload-in-use) or cut"
    echo "off is retried on the same node after a HEAD there (as tus-js-client retries), inside the timed"
    echo "upload; the retries row counts them (a node releases a PATCH's lease before its 204, so none is"
    echo "expected). Checked after each upload: the last PATCH's ETag and GET /datasets/{key} through both nodes"
    echo "(size$([[ $TUS_B3 == - ]] || printf ', blake3' ) against the file's)."
}
