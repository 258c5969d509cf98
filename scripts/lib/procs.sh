# shellcheck shell=bash
# Process bookkeeping shared by the test and benchmark scripts. The caller
# declares `declare -A LIVE=()` (pid -> what, for every process it started
# and has not reaped) and a `log` function, then sources this file.
# STOP_WAIT_TENTHS: how long stop_pid waits after the signal (default 10 s).

alive() { # pid: running (not a zombie)
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

stop_pid() { # pid [signal]: stop a process started here and reap it (bounded)
    local pid=$1 sig=${2:-TERM} i
    [[ -n ${LIVE[$pid]:-} ]] || return 0
    if alive "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < ${STOP_WAIT_TENTHS:-100}; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "${LIVE[$pid]} (pid $pid) ignored SIG$sig for $(( ${STOP_WAIT_TENTHS:-100} / 10 )) s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "LIVE[$pid]"
}
