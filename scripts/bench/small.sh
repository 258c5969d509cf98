# shellcheck shell=bash
# The `small` section of scripts/bench.sh (sourced by it; uses its helpers
# and globals): many small uploads, against the disk's own durable rate.
#
# Per round, two variants, BENCH_SMALL_CLIENTS clients at once and 1 client;
# in each, the contenders in turn (the order rotating per round): the node,
# nginx WebDAV (no fsync: informative), the disk's durable rate (the C
# program durable_rate: write, fsync, rename, directory fsync; as many
# threads as clients, in the same filesystem as the node's data dir) and,
# with BENCH_BASELINE, the baseline node. The servers stay up for the whole
# section, as a real node would; every round PUTs BENCH_SMALL_COUNT fresh
# keys with fresh bytes (a new random body per file: the node deduplicates,
# and the same bytes again would measure nothing).
#
# Client: curl --parallel --parallel-max CLIENTS (one process, keep-alive
# connections, its event loop in C), one config file of url/upload-file
# pairs; -w prints each transfer's code, all checked. The 1-client variant
# runs the same config without --parallel: one connection, one PUT at a
# time. curl's start (a few ms) is inside the timed wall: at nginx's rates
# that is a few percent, at the node's and the disk's far less.

SM_DIR=""       # this round's body files (SM_DIR/f000000 ...)
SM_BIN=""       # durable_rate, compiled into the temp dir
declare -A SM_RATE=() # "node 16" etc. -> space-separated files/s, one a round
declare -A SM_PID=() SM_PORT=() SM_DATA=()
SM_LIST_MS=() # listing latencies (ms) under writes

small_build() { # durable_rate from scripts/bench/durable_rate.c
    SM_BIN="$TMPD/durable_rate"
    cc -O2 -pthread -o "$SM_BIN" "$HELPERS/durable_rate.c" >&2 || die "cannot compile durable_rate.c"
}

small_bodies() { # round variant: SMALL_COUNT fresh random files of SMALL_SIZE
    SM_DIR="$TMPD/small-bodies"
    rm -rf -- "$SM_DIR"
    mkdir -p "$SM_DIR"
    head -c $((SMALL_COUNT * SMALL_SIZE)) /dev/urandom |
        split -a 6 -d -b "$SMALL_SIZE" - "$SM_DIR/f" || die "cannot split the small bodies"
    sync -f "$SM_DIR/f000000" # their writeback not inside a timed run
}

small_key() { printf 'small/r%s-c%s/k%06d' "$1" "$2" "$3"; } # round clients i

small_config() { # base_url round clients config: url/upload-file pairs, output to /dev/null
    local base=$1 r=$2 c=$3
    awk -v n="$SMALL_COUNT" -v base="$base" -v r="$r" -v c="$c" -v d="$SM_DIR" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "url = \"%s/small/r%s-c%s/k%06d\"\nupload-file = \"%s/f%06d\"\noutput = \"/dev/null\"\n",
                base, r, c, i, d, i
    }' >"$4"
}

SM_OUT="" # what small_put_all and small_disk measured, files/s (globals, not
# $(...): a subshell's run_timed would hide its curl from LIVE and cleanup)

small_put_all() { # what base_url round clients -> SM_OUT; every code checked (201: fresh keys)
    local what=$1 base=$2 r=$3 c=$4 cfg="$TMPD/small.cfg" out="$TMPD/logs/small.out" rc=0 bad
    local -a par=()
    small_config "$base" "$r" "$c" "$cfg"
    if ((c > 1)); then par=(--parallel --parallel-max "$c"); fi
    run_timed "$((60 + SMALL_COUNT / 20))" "$out" "curl (small, $what)" \
        curl -sS --no-progress-meter "${par[@]}" -H 'Expect:' --max-time 60 \
        -w '%{http_code} %{url}\n' -K "$cfg" || rc=$?
    ((rc == 0)) || die "small $what: curl exit $rc: $(grep -v '^[0-9][0-9][0-9] ' "$out" | tail -n 3)"
    # Exactly one line per transfer, each 201 Created.
    bad=$(awk -v n="$SMALL_COUNT" '$1 ~ /^[0-9][0-9][0-9]$/ { k++; if ($1 != 201) b++ }
        END { if (k != n) print "answers " k + 0 " of " n; else if (b) print b " not 201" }' "$out")
    [[ -z $bad ]] || die "small $what (round $r, $c clients): $bad: $(grep -v '^201 ' "$out" | head -n 3)"
    SM_OUT=$(awk -v n="$SMALL_COUNT" -v s="$RUN_SECS" 'BEGIN { printf "%.1f", n / s }')
}

small_sample() { # what base_url round clients: three keys read back and compared
    local what=$1 i got
    for i in 0 $((SMALL_COUNT / 2)) $((SMALL_COUNT - 1)); do
        got=$(curl -sS --max-time 30 -o "$TMPD/small.get" -w '%{http_code}' "$2/$(small_key "$3" "$4" "$i")") ||
            die "small $what: GET of a sample failed"
        [[ $got == 200 ]] || die "small $what: GET $(small_key "$3" "$4" "$i"): HTTP $got"
        cmp -s "$TMPD/small.get" "$(printf '%s/f%06d' "$SM_DIR" "$i")" ||
            die "small $what: $(small_key "$3" "$4" "$i") read back differs from what was sent"
    done
}

small_disk() { # round clients -> SM_OUT, files/s of durable_rate with `clients` threads
    local dir="$TMPD/small-disk" out="$TMPD/logs/small-disk.out" rc=0 n s got
    rm -rf -- "$dir"
    run_timed "$((60 + SMALL_COUNT / 20))" "$out" "durable_rate" \
        "$SM_BIN" "$dir" "$SMALL_COUNT" "$2" "$SMALL_SIZE" || rc=$?
    ((rc == 0)) || die "durable_rate: exit $rc: $(tail -n 3 "$out")"
    read -r _ n s < <(grep '^RESULT ' "$out")
    got=$(find "$dir/files" -type f | wc -l)
    [[ $n == "$SMALL_COUNT" && $got == "$SMALL_COUNT" ]] || die "durable_rate: $got files, expected $SMALL_COUNT"
    rm -rf -- "$dir"
    SM_OUT=$(awk -v n="$n" -v s="$s" 'BEGIN { printf "%.1f", n / s }')
}

small_start() { # node|base: a node up for the whole section
    if [[ $1 == base ]]; then node_kind base; else node_kind ""; fi
    SM_DATA[$1]="$TMPD/$NODE_KIND_DIR-small"
    start_node_bin "$NODE_KIND_BIN" "$NODE_KIND_WHAT" "${SM_DATA[$1]}" "$TMPD/logs/$NODE_KIND_DIR-small" 60
    SM_PID[$1]=$NODE_PID SM_PORT[$1]=$NODE_PORT
    NODE_PID=""
}

small_one() { # contender round clients: one measurement, logged and kept (round > 0)
    local who=$1 r=$2 c=$3 base
    case $who in
        node | base) base="http://127.0.0.1:${SM_PORT[$who]}/data" ;;
        nginx) base="http://127.0.0.1:$NGINX_PORT" ;;
    esac
    if [[ $who == disk ]]; then
        small_disk "$r" "$c"
    else
        small_put_all "$who" "$base" "$r" "$c"
        small_sample "$who" "$base" "$r" "$c"
    fi
    if ((r > 0)); then SM_RATE["$who $c"]+="$SM_OUT "; fi
    log "small round $r, $c client(s), $(printf '%-5s' "$who:") $SM_OUT files/s"
}

small_variants() { # the client counts measured: SMALL_CLIENTS, then 1 (once if it is 1)
    if ((SMALL_CLIENTS > 1)); then echo "$SMALL_CLIENTS 1"; else echo 1; fi
}

small_section() {
    local i c w
    local -a order=(node nginx disk)
    if baseline; then order+=(base); fi
    log "small: $SMALL_COUNT PUTs of $(numfmt --to=iec-i --suffix=B "$SMALL_SIZE"), $SMALL_CLIENTS clients and 1; $SMALL_RUNS round(s)"
    small_build
    small_start node
    if baseline; then small_start base; fi
    start_nginx
    for ((i = 1 - WARMUP; i <= SMALL_RUNS; i++)); do
        ((i > 0)) || log "warm-up: one uncounted small round"
        for c in $(small_variants); do
            small_bodies
            for w in $(rotated "$((i < 1 ? 1 : i))" "${order[@]}"); do small_one "$w" "$i" "$c"; done
        done
    done
    small_listing_under_writes
    stop_nginx
    rm -rf -- "$NGX" "$SM_DIR"
    for w in node base; do
        [[ -n ${SM_PID[$w]:-} ]] || continue
        stop_pid "${SM_PID[$w]}" TERM
        rm -rf -- "${SM_DATA[$w]}"
    done
}

# More rounds on the node alone, not counted in the rates: while
# SMALL_CLIENTS writers upload, one client lists the first page of
# GET /datasets?limit=1000 again and again (at most 100,000 times, each
# bounded by 10 s); SM_LIST_MS gets the latencies in ms. One round gives
# some 60 listings, whose p99 is their maximum: SM_LIST_ROUNDS rounds are
# pooled, so that one scheduling hiccup is not the whole figure.
SM_LIST_ROUNDS=3
small_listing_under_writes() {
    local r out="$TMPD/logs/small-list.times" lister
    ((SMALL_CLIENTS > 1)) || return 0
    : >"$out"
    for ((r = SMALL_RUNS + 1; r <= SMALL_RUNS + SM_LIST_ROUNDS; r++)); do
        small_bodies
        (
            for ((k = 0; k < 100000; k++)); do
                curl -s -o /dev/null --max-time 10 -w '%{http_code} %{time_total}\n' \
                    "http://127.0.0.1:${SM_PORT[node]}/datasets?limit=1000" || break
            done >>"$out"
        ) &
        lister=$!
        LIVE["$lister"]="listing loop"
        small_put_all node "http://127.0.0.1:${SM_PORT[node]}/data" "$r" "$SMALL_CLIENTS"
        stop_pid "$lister" TERM
        log "small: listings under writes, round $((r - SMALL_RUNS)) of $SM_LIST_ROUNDS ($SM_OUT files/s)"
    done
    grep -qv '^200 ' "$out" && die "small: a listing under writes did not answer 200: $(grep -v '^200 ' "$out" | head -n 2)"
    mapfile -t SM_LIST_MS < <(awk '{ printf "%.2f\n", $2 * 1000 }' "$out")
    log "small: ${#SM_LIST_MS[@]} listings during $SM_LIST_ROUNDS x $SMALL_COUNT PUTs by $SMALL_CLIENTS clients"
}

small_rates() { # contender clients -> that variant's files/s, one a line
    local -a v
    read -ra v <<<"${SM_RATE["$1 $2"]:-}"
    printf '%s\n' "${v[@]}"
}

report_small() { # rows of the reads-and-small-writes table
    local c node disk ngx r target t_label
    local -a n d g rs
    for c in $(small_variants); do
        mapfile -t n < <(small_rates node "$c")
        mapfile -t d < <(small_rates disk "$c")
        mapfile -t g < <(small_rates nginx "$c")
        node=$(median "${n[@]}") disk=$(median "${d[@]}") ngx=$(median "${g[@]}")
        r=$(ratio "$node" "$disk")
        if ((c == 1)); then target=$T_SMALL_1; else target=$T_SMALL_N; fi
        t_label=">= ${target}x disk"
        mapfile -t rs < <(pair_ratios n d)
        row "small PUTs, $c client(s), files/s vs disk" "$(fmtf %.0f "$node")" "$(fmtf %.0f "$disk")" "$r" \
            "$t_label" "$(ok_ratio_ge "$node" "$disk" "$target")" \
            "$(spread %.0f "${n[@]}") | $(spread %.0f "${d[@]}") | $(spread %s "${rs[@]}")"
        mapfile -t rs < <(pair_ratios n g)
        row "small PUTs, $c client(s), vs nginx (info)" "$(fmtf %.0f "$node")" "$(fmtf %.0f "$ngx")" \
            "$(ratio "$node" "$ngx")" "" "" \
            "$(spread %.0f "${n[@]}") | $(spread %.0f "${g[@]}") | $(spread %s "${rs[@]}")"
    done
    if ((${#SM_LIST_MS[@]} > 0)); then
        local p50 p99
        p50=$(percentile 50 "${SM_LIST_MS[@]}") p99=$(percentile 99 "${SM_LIST_MS[@]}")
        row "GET /datasets p99 under $SMALL_CLIENTS writers, ms" "$p99" "" "" "< ${T_LIST_UNDER_WRITES_MS} ms" \
            "$(ok_le "$p99" "$T_LIST_UNDER_WRITES_MS")" "${#SM_LIST_MS[@]} listings, p50 $p50 ms"
    fi
}

percentile() { # p values... -> the p-th percentile (nearest rank)
    local p=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v p="$p" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'
}
