# shellcheck shell=bash
# Helpers shared by the test and benchmark scripts. The caller defines `log`
# and `die`, declares `declare -A LIVE=()` (pid -> what, for every process it
# started and has not reaped) if it uses stop_pid or run_bounded, and then
# sources this file.
# STOP_WAIT_TENTHS: how long a stopped process gets after SIGTERM (10 s).

alive() { # pid: running (not a zombie)
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

terminate() { # pid what [signal]: signal a child, wait (bounded), then kill and reap it
    local pid=$1 what=$2 sig=${3:-TERM} i
    if alive "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < ${STOP_WAIT_TENTHS:-100}; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "$what (pid $pid) ignored SIG$sig for $((${STOP_WAIT_TENTHS:-100} / 10)) s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

stop_pid() { # pid [signal]: stop a process started here (listed in LIVE) and reap it
    local pid=$1
    [[ -n ${LIVE[$pid]:-} ]] || return 0
    terminate "$pid" "${LIVE[$pid]}" "${2:-TERM}"
    unset "LIVE[$pid]"
}

# Runs a command in the background (so that signals are handled at once),
# output to a log file, and waits for it at most `timeout` seconds.
# Returns its exit status (124 on timeout, after stopping it).
run_bounded() { # timeout logfile what cmd...
    local timeout=$1 logf=$2 what=$3 pid rc=0 deadline
    shift 3
    "$@" >"$logf" 2>&1 &
    pid=$!
    LIVE["$pid"]=$what
    deadline=$((SECONDS + timeout))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$what (pid $pid) still running after ${timeout}s; stopping it"
            stop_pid "$pid" TERM
            return 124
        fi
        sleep 0.1
    done
    wait "$pid" || rc=$?
    unset "LIVE[$pid]"
    return "$rc"
}

APT_UPDATED=0
POLICY_RC_CREATED=0 # the caller's cleanup removes /usr/sbin/policy-rc.d when set

apt_install() { # package...: install Debian packages (root; apt-get update once)
    [[ $EUID -eq 0 ]] || die "need root to apt-get install $*; install it and rerun"
    if ((!APT_UPDATED)); then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    # Debian's postinst scripts would start a system nginx or prometheus:
    # forbid service starts while installing, unless a policy already exists.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    log "apt-get install -y $*"
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
    if ((POLICY_RC_CREATED)); then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
    return "$rc"
}

# --- backing services for the S3 and PostgreSQL suites ----------------------
# tests/common/cluster.rs starts them per test; these make sure the binaries
# exist and tell the tests where (GARAGE_BIN, PG_BIN_DIR).
# GARAGE_INSTALL_TIMEOUT: how long `cargo install garage` may take (3600 s).

garage_major() { # binary: major version of a garage binary (empty if unknown)
    local version
    version=$(timeout 10 "$1" --version 2>/dev/null | head -n 1) || return 0
    if [[ $version =~ ([0-9]+)\.[0-9]+\.[0-9]+ ]]; then printf '%s\n' "${BASH_REMATCH[1]}"; fi
}

ensure_garage() { # the Garage object store, v2 or later; exports GARAGE_BIN
    local cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin/garage candidate major logf
    for candidate in "${GARAGE_BIN:-}" "$(command -v garage 2>/dev/null || true)" "$cargo_bin"; do
        [[ -n $candidate && -x $candidate ]] || continue
        major=$(garage_major "$candidate")
        if [[ -n $major ]] && ((major >= 2)); then
            export GARAGE_BIN=$candidate
            log "garage: $GARAGE_BIN (v$major)"
            return 0
        fi
        log "ignoring $candidate: not garage v2 or later"
    done
    command -v cargo >/dev/null || die "cargo is needed to install garage"
    logf=${TMPDIR:-/tmp}/spillway-install-garage.log
    log "cargo install garage --locked --version '^2' (compiles Garage: takes ~10 minutes; log in $logf)"
    run_bounded "${GARAGE_INSTALL_TIMEOUT:-3600}" "$logf" "cargo install garage" \
        cargo install garage --locked --version '^2' ||
        die "cargo install garage failed; see $logf: $(tail -n 5 "$logf" 2>/dev/null)"
    [[ -x $cargo_bin ]] || die "cargo install garage did not produce $cargo_bin"
    export GARAGE_BIN=$cargo_bin
    log "garage: $GARAGE_BIN (v$(garage_major "$GARAGE_BIN"))"
}

pg_server_bin_dir() { # prints the newest /usr/lib/postgresql/<major>/bin with a server
    local dir best="" best_major=-1 major
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/initdb && -x $dir/postgres ]] || continue
        major=${dir#/usr/lib/postgresql/}
        major=${major%%/*}
        [[ $major =~ ^[0-9]+$ ]] || continue
        if ((major > best_major)); then best=$dir best_major=$major; fi
    done
    [[ -n $best ]] && printf '%s\n' "$best"
}

ensure_postgres() { # the PostgreSQL server binaries (initdb, postgres, pg_ctl); exports PG_BIN_DIR
    local dir
    if [[ -n ${PG_BIN_DIR:-} && -x $PG_BIN_DIR/initdb && -x $PG_BIN_DIR/postgres ]]; then
        export PG_BIN_DIR
        log "postgres: $PG_BIN_DIR"
        return 0
    fi
    if ! dir=$(pg_server_bin_dir); then
        # Debian's package creates (but, under apt_install's policy-rc.d,
        # does not start) a system cluster; the tests run their own servers.
        apt_install postgresql || die "apt-get install postgresql failed"
        dir=$(pg_server_bin_dir) || die "postgresql installed, but no /usr/lib/postgresql/*/bin/initdb"
    fi
    export PG_BIN_DIR=$dir
    log "postgres: $PG_BIN_DIR"
}

stop_all_live() { # stop every process still listed in LIVE, and lift the apt policy this run set
    local pid
    for pid in "${!LIVE[@]}"; do
        stop_pid "$pid" TERM
    done
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
}
