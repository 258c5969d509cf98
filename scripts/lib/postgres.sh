# shellcheck shell=bash
# A PostgreSQL server for the scripts that need one (e2e-cluster.sh,
# e2e-ops.sh, bench.sh's s3 section): initdb into a folder of the caller's
# temp dir, trust authentication on loopback, no inherited PG* settings. As
# root it runs as `postgres` (or `nobody`): initdb and postgres refuse root.
# The caller sources common.sh (alive, stop_pid, run_bounded, LIVE, log),
# defines free_port and TMPD, and has run ensure_postgres (PG_BIN_DIR).

PG_PID="" PG_PORT="" PG_USER=""
PG_ENV=() # `env` arguments: no inherited PG* setting reaches the server or its tools

# Starts a server in `dir` (under TMPD) with `options` (`-c name=value`...)
# on a free loopback port (a lost port race is retried); ready when
# pg_isready says so. Sets PG_PID (also in LIVE), PG_PORT and PG_USER.
# Returns 1, with the log's tail, if it never came up.
start_postgres_server() { # dir [option...]
    local dir=$1 attempt i var d
    shift
    local -a as_user=()
    PG_ENV=()
    for var in $(compgen -e); do
        if [[ $var == PG* ]]; then PG_ENV+=(-u "$var"); fi
    done
    mkdir -p "$dir"
    if ((EUID == 0)); then
        PG_USER=postgres
        id -u "$PG_USER" >/dev/null 2>&1 || PG_USER=nobody
        chown "$PG_USER" "$dir"
        # mktemp's 0700 would stop that user on the way to its directory.
        d=$dir
        while [[ $d != "$TMPD" && $d != / ]]; do
            d=$(dirname "$d")
            chmod go+x "$d"
        done
        as_user=(setpriv "--reuid=$(id -u "$PG_USER")" "--regid=$(id -g "$PG_USER")" --clear-groups --)
    else
        PG_USER=$(id -un)
    fi
    if ! run_bounded 120 "$dir/initdb.log" "initdb" env -C "$dir" "${PG_ENV[@]}" LC_ALL=C "${as_user[@]}" \
        "$PG_BIN_DIR/initdb" -D "$dir/data" -U "$PG_USER" -A trust -E UTF8 --locale=C --no-sync \
        --no-instructions; then
        log "initdb failed:"
        tail -n 5 "$dir/initdb.log" >&2 || true
        return 1
    fi
    for ((attempt = 1; attempt <= 5; attempt++)); do
        PG_PORT=$(free_port)
        # exec'd all the way down, so that the PID is the server's.
        (
            cd "$dir" || exit 1
            exec env "${PG_ENV[@]}" LC_ALL=C "${as_user[@]}" "$PG_BIN_DIR/postgres" -D "$dir/data" \
                -p "$PG_PORT" -h 127.0.0.1 -k "$dir" "$@"
        ) >>"$dir/postgres.log" 2>&1 </dev/null &
        PG_PID=$!
        LIVE[$PG_PID]="postgres"
        for ((i = 0; i < 300; i++)); do
            alive "$PG_PID" || break
            if env "${PG_ENV[@]}" "$PG_BIN_DIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" \
                -d postgres -t 2 >/dev/null 2>&1; then
                return 0
            fi
            sleep 0.1
        done
        log "postgres did not come up on port $PG_PORT (attempt $attempt):"
        tail -n 5 "$dir/postgres.log" >&2 || true
        stop_pid "$PG_PID" INT # fast shutdown
        PG_PID=""
    done
    return 1
}

pg_sql() { # logfile sql: runs `sql` on the server's `postgres` database, bounded
    run_bounded 60 "$1" "psql" env "${PG_ENV[@]}" PGCONNECT_TIMEOUT=10 "$PG_BIN_DIR/psql" -X -q \
        -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -c "$2"
}
