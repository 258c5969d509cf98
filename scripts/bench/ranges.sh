# shellcheck shell=bash
# The `ranges` and `get` sections of scripts/bench.sh (sourced by it; uses
# its helpers and globals): reads of one stored dataset, the node against
# nginx serving the same bytes as a plain static file (sendfile on; the
# WebDAV location of start_nginx only adds PUT, GETs are nginx's static
# module), and, with BENCH_BASELINE, the baseline node.
#
# Each section uploads its file once to each node (PUT, checked 201 and
# read back whole with cmp), copies it into nginx's root, then runs its
# rounds with the servers up, the order of the contenders rotating per
# round. The file is read from the page cache on every side (it was just
# written): these measure the servers' read paths, not the disk.
#
#   ranges  BENCH_RANGE_COUNT GETs of BENCH_RANGE_LEN bytes at random
#           offsets, BENCH_RANGE_CONC at once, by range_get (a small C
#           client: keep-alive connections, one epoll thread, every answer
#           checked 206 with the right length; see range_get.c for why not
#           wrk or curl). Same seeded offsets for every server. Requests/s,
#           and the driver's own CPU per request (its ceiling); a sample of
#           ranges is compared with the file's bytes once per server.
#   get     one GET of the whole BENCH_GET_SIZE file with curl -o /dev/null:
#           MB/s (curl's speed_download), code 200 and size checked.

declare -A RD_PID=() RD_PORT=() RD_DATA=()
RD_BIN="" # range_get, compiled into the temp dir

# Serves `src` as key `key` from a fresh node (and baseline) and nginx.
reads_setup() { # section src key
    local sec=$1 src=$2 key=$3 w code
    local -a nodes=(node)
    if baseline; then nodes+=(base); fi
    for w in "${nodes[@]}"; do
        if [[ $w == base ]]; then node_kind base; else node_kind ""; fi
        RD_DATA[$w]="$TMPD/$NODE_KIND_DIR-$sec"
        start_node_bin "$NODE_KIND_BIN" "$NODE_KIND_WHAT" "${RD_DATA[$w]}" "$TMPD/logs/$NODE_KIND_DIR-$sec" 60
        RD_PID[$w]=$NODE_PID RD_PORT[$w]=$NODE_PORT
        NODE_PID=""
        put_file "http://127.0.0.1:${RD_PORT[$w]}/data/$key" "$src" "$(max_time_for "$(stat -c %s "$src")")" "$TMPD/logs/put"
        read -r code _ <"$TMPD/logs/put"
        [[ $code == 201 ]] || die "$sec: $NODE_KIND_WHAT upload of the file: HTTP $code"
    done
    start_nginx
    mkdir -p "$NGX/root/$(dirname "$key")"
    cp -- "$src" "$NGX/root/$key"
    # All copies durable before the rounds: no writeback during them.
    sync -f "$src"
    for w in "${nodes[@]}" nginx; do reads_verify "$sec" "$w" "$key" "$src"; done
}

reads_url() { # who key -> the file's URL on that server
    case $1 in
        nginx) echo "http://127.0.0.1:$NGINX_PORT/$2" ;;
        *) echo "http://127.0.0.1:${RD_PORT[$1]}/data/$2" ;;
    esac
}

reads_verify() { # section who key src: the whole file read back equals src
    # (streamed into cmp: no second copy on disk; --fail: an HTTP error is
    # curl's exit 22; curl's --max-time bounds the pipe, run_bounded the rest)
    local url rc=0 mt
    url=$(reads_url "$2" "$3")
    mt=$(max_time_for "$(stat -c %s "$4")")
    run_bounded "$((mt + 10))" "$TMPD/logs/verify" "verify ($2)" \
        bash -c 'set -o pipefail; curl -sS --fail --max-time "$3" "$1" | cmp - "$2"' _ "$url" "$4" "$mt" || rc=$?
    ((rc == 0)) || die "$1: $2 does not serve the bytes stored (exit $rc): $(tail -n 2 "$TMPD/logs/verify")"
}

reads_teardown() { # section
    local w
    stop_nginx
    rm -rf -- "$NGX"
    for w in node base; do
        [[ -n ${RD_PID[$w]:-} ]] || continue
        stop_pid "${RD_PID[$w]}" TERM
        rm -rf -- "${RD_DATA[$w]}"
        unset "RD_PID[$w]"
    done
}

reads_order() { # -> the contenders: node nginx [base]
    printf '%s\n' node nginx
    if baseline; then echo base; fi
}

# ---------------------------------------------------------------- ranges ---

# who -> requests/s, the driver's CPU µs per request, and the share of one
# core the driver used (%), one value a round
declare -A RG_RATE=() RG_CPU=() RG_CORE=()
RG_KEY=bench/ranges.bin

ranges_sample() { # who: a few ranges (offsets from RANGE_SEED) compared with the file's bytes
    local who=$1 url k a code
    url=$(reads_url "$who" "$RG_KEY")
    for k in 1 2 3 4; do
        a=$(awk -v s="$RANGE_SEED" -v k="$k" -v m=$((RANGE_FILE_SIZE - RANGE_LEN)) \
            'BEGIN { srand(s + k); printf "%d", int(rand() * (m + 1)) }')
        code=$(curl -sS --max-time 30 -o "$TMPD/range.got" -w '%{http_code}' \
            -H "Range: bytes=$a-$((a + RANGE_LEN - 1))" "$url") || die "ranges: $who sample GET failed"
        [[ $code == 206 ]] || die "ranges: $who, Range bytes=$a-: HTTP $code, expected 206"
        dd if="$RGSRC" of="$TMPD/range.want" bs=64K iflag=skip_bytes,count_bytes \
            skip="$a" count="$RANGE_LEN" status=none || die "ranges: cannot read the file at $a"
        cmp -s "$TMPD/range.got" "$TMPD/range.want" || die "ranges: $who, Range bytes=$a-: other bytes than the file's"
    done
    rm -f -- "$TMPD/range.got" "$TMPD/range.want"
}

ranges_one() { # who round: one range_get run, checked, kept (round > 0)
    local who=$1 r=$2 out="$TMPD/logs/range_get.out" rc=0 n b s cpu rate us core
    run_timed "$((60 + RANGE_COUNT / 100))" "$out" "range_get ($who)" \
        "$RD_BIN" "$(reads_port "$who")" "$(reads_path "$who")" "$RANGE_COUNT" \
        "$RANGE_FILE_SIZE" "$RANGE_LEN" "$RANGE_SEED" "$RANGE_CONC" "$((50 + RANGE_COUNT / 100))" || rc=$?
    ((rc == 0)) || die "ranges $who: range_get exit $rc: $(tail -n 3 "$out")"
    read -r _ n b s cpu < <(grep '^RESULT ' "$out")
    [[ $n == "$RANGE_COUNT" ]] || die "ranges $who: $n answers, expected $RANGE_COUNT"
    ((b == 0)) || die "ranges $who: $b of $n answers not 206 with $RANGE_LEN bytes"
    rate=$(awk -v n="$n" -v s="$s" 'BEGIN { printf "%.1f", n / s }')
    us=$(awk -v n="$n" -v c="$cpu" 'BEGIN { printf "%.1f", c / n * 1e6 }')
    core=$(awk -v c="$cpu" -v s="$s" 'BEGIN { printf "%.0f", c / s * 100 }')
    if ((r > 0)); then RG_RATE[$who]+="$rate " RG_CPU[$who]+="$us " RG_CORE[$who]+="$core "; fi
    log "ranges round $r $(printf '%-6s' "$who:") $rate requests/s, ${s}s; driver CPU ${cpu}s (${us} us/request, ${core}% of a core)"
}

reads_port() { # who -> its port
    if [[ $1 == nginx ]]; then echo "$NGINX_PORT"; else echo "${RD_PORT[$1]}"; fi
}

reads_path() { # who -> the path part of the file's URL
    if [[ $1 == nginx ]]; then echo "/$RG_KEY"; else echo "/data/$RG_KEY"; fi
}

ranges_section() {
    local i w
    local -a order
    mapfile -t order < <(reads_order)
    log "ranges: $RANGE_COUNT GETs of $(numfmt --to=iec-i --suffix=B "$RANGE_LEN") in a $(numfmt --to=iec-i --suffix=B "$RANGE_FILE_SIZE") file, $RANGE_CONC at once, seed $RANGE_SEED; $RANGE_RUNS round(s)"
    RD_BIN="$TMPD/range_get"
    cc -O2 -o "$RD_BIN" "$HELPERS/range_get.c" >&2 || die "cannot compile range_get.c"
    reads_setup ranges "$RGSRC" "$RG_KEY"
    for w in "${order[@]}"; do ranges_sample "$w"; done
    for ((i = 1 - WARMUP; i <= RANGE_RUNS; i++)); do
        ((i > 0)) || log "warm-up: one uncounted ranges round"
        for w in $(rotated "$((i < 1 ? 1 : i))" "${order[@]}"); do ranges_one "$w" "$i"; done
    done
    reads_teardown ranges
}

# ------------------------------------------------------------------- get ---

declare -A GT_MBS=() # who -> MB/s, one a round
GT_KEY=bench/get.bin

get_one() { # who round
    local who=$1 r=$2 url code speed t size mbs
    url=$(reads_url "$who" "$GT_KEY")
    get_file "$url" "$(max_time_for "$GET_SIZE")" "$TMPD/logs/get"
    read -r code speed t size <"$TMPD/logs/get"
    [[ $code == 200 ]] || die "get $who: HTTP $code"
    [[ $size == "$GET_SIZE" ]] || die "get $who: $size bytes, expected $GET_SIZE"
    mbs=$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1e6 }')
    if ((r > 0)); then GT_MBS[$who]+="$mbs "; fi
    log "get round $r $(printf '%-6s' "$who:") $code, $mbs MB/s, ${t}s"
}

get_section() {
    local i w
    local -a order
    mapfile -t order < <(reads_order)
    log "get: one GET of $(numfmt --to=iec-i --suffix=B "$GET_SIZE"), $GET_RUNS round(s)"
    reads_setup get "$GSRC" "$GT_KEY"
    for ((i = 1 - WARMUP; i <= GET_RUNS; i++)); do
        ((i > 0)) || log "warm-up: one uncounted GET round"
        for w in $(rotated "$((i < 1 ? 1 : i))" "${order[@]}"); do get_one "$w" "$i"; done
    done
    reads_teardown get
}

# ---------------------------------------------------------------- report ---

reads_values() { # name_of_assoc who -> its values, one a line
    local -n m=$1
    local -a v
    read -ra v <<<"${m[$2]:-}"
    printf '%s\n' "${v[@]}"
}

report_reads() { # rows of the reads-and-small-writes table
    local node ngx r
    local -a n g rs
    if selected ranges; then
        mapfile -t n < <(reads_values RG_RATE node)
        mapfile -t g < <(reads_values RG_RATE nginx)
        mapfile -t rs < <(pair_ratios n g)
        node=$(median "${n[@]}") ngx=$(median "${g[@]}") r=$(ratio "$node" "$ngx")
        row "ranges $((RANGE_LEN >> 10)) KiB x$RANGE_CONC, requests/s" "$(fmtf %.0f "$node")" "$(fmtf %.0f "$ngx")" "$r" \
            ">= ${T_RANGE}x nginx" "$(ok_ratio_ge "$node" "$ngx" "$T_RANGE")" \
            "$(spread %.0f "${n[@]}") | $(spread %.0f "${g[@]}") | $(spread %s "${rs[@]}")"
        mapfile -t n < <(reads_values RG_CPU node)
        mapfile -t g < <(reads_values RG_CPU nginx)
        row "ranges, driver CPU us/request (info)" "$(median "${n[@]}")" "$(median "${g[@]}")" "" "" "" \
            "one driver core: at most $(awk -v u="$(median "${g[@]}")" 'BEGIN { if (u > 0) printf "%.0f", 1e6 / u; else print "?" }') requests/s"
        # Near a whole core, the driver (and the 2 cores it shares with the
        # server) sets nginx's rate: the ratio is then flattering.
        mapfile -t n < <(reads_values RG_CORE node)
        mapfile -t g < <(reads_values RG_CORE nginx)
        local core_ngx flag="" note="under 80%: not the bottleneck"
        core_ngx=$(median "${g[@]}")
        if awk -v p="$core_ngx" 'BEGIN { exit !(p >= 80) }'; then
            flag=DRIVER note="80% or more: nginx's rate may be the driver's"
        fi
        row "ranges, driver % of one core (info)" "$(median "${n[@]}")" "$core_ngx" "" "" "$flag" "$note"
    fi
    if selected get; then
        mapfile -t n < <(reads_values GT_MBS node)
        mapfile -t g < <(reads_values GT_MBS nginx)
        mapfile -t rs < <(pair_ratios n g)
        node=$(median "${n[@]}") ngx=$(median "${g[@]}") r=$(ratio "$node" "$ngx")
        row "GET $(numfmt --to=iec-i --suffix=B "$GET_SIZE") whole, MB/s" "$(fmtf %.1f "$node")" "$(fmtf %.1f "$ngx")" "$r" \
            ">= ${T_GET}x nginx" "$(ok_ratio_ge "$node" "$ngx" "$T_GET")" \
            "$(spread %.1f "${n[@]}") | $(spread %.1f "${g[@]}") | $(spread %s "${rs[@]}")"
    fi
}
