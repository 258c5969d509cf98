# shellcheck shell=bash
# A one-node Garage for the scripts that need an S3 store (e2e-cluster.sh,
# e2e-ops.sh, bench.sh), with the settings tests/common/cluster.rs uses:
# db_engine sqlite, fsyncs off (Garage's defaults), its one key and bucket
# made at start (GARAGE_DEFAULT_*), loopback ports. The caller sources
# common.sh (alive, stop_pid, LIVE, log), defines free_port, and has run
# ensure_garage (GARAGE_BIN).

rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; } # bytes -> 2x hex digits

# Starts it in `dir` (emptied first) with access key `key`, secret `secret`
# and bucket `bucket` in region `region`; ready when its admin /health says
# 200 and its S3 port answers (a lost port race is retried). Sets GARAGE_PID (also in LIVE),
# GARAGE_S3 and GARAGE_ADMIN (endpoints) and GARAGE_TOKEN (admin bearer).
# Returns 1, with the log's tail, if it never came up.
start_garage_single() { # dir key secret bucket region
    local dir=$1 key=$2 secret=$3 bucket=$4 region=$5 attempt i code rpc s3 admin var
    local -a unset_env=()
    for var in $(compgen -e); do
        if [[ $var == GARAGE_* ]]; then unset_env+=(-u "$var"); fi
    done
    GARAGE_TOKEN=$(rand_hex 16)
    for ((attempt = 1; attempt <= 5; attempt++)); do
        rm -rf -- "$dir"
        mkdir -p "$dir"
        rpc=$(free_port) s3=$(free_port) admin=$(free_port)
        if [[ $rpc == "$s3" || $s3 == "$admin" || $rpc == "$admin" ]]; then continue; fi
        cat >"$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(rand_hex 32)"

[s3_api]
api_bind_addr = "127.0.0.1:$s3"
s3_region = "$region"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$GARAGE_TOKEN"
metrics_token = "$GARAGE_TOKEN"
CONF
        # shellcheck disable=SC2153 # GARAGE_BIN: exported by ensure_garage
        (
            cd "$dir" || exit 1
            exec env "${unset_env[@]}" RUST_LOG=garage=info,garage_api=warn \
                GARAGE_DEFAULT_ACCESS_KEY="$key" GARAGE_DEFAULT_SECRET_KEY="$secret" \
                GARAGE_DEFAULT_BUCKET="$bucket" \
                "$GARAGE_BIN" -c "$dir/garage.toml" server --single-node --default-bucket
        ) >"$dir/garage.log" 2>&1 </dev/null &
        GARAGE_PID=$!
        LIVE[$GARAGE_PID]="garage"
        code="" s3code=""
        for ((i = 0; i < 300; i++)); do
            alive "$GARAGE_PID" || break
            # Garage keeps running when one of its servers cannot bind its
            # port, so the S3 port must answer too (any status), not only admin.
            grep -q "Address already in use" "$dir/garage.log" && break
            code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "http://127.0.0.1:$admin/health" 2>/dev/null || true)
            s3code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "http://127.0.0.1:$s3/" 2>/dev/null || true)
            [[ $code == 200 && $s3code != 000 && -n $s3code ]] && break
            sleep 0.1
        done
        if [[ $code == 200 && $s3code != 000 && -n $s3code ]] && alive "$GARAGE_PID"; then
            GARAGE_S3="http://127.0.0.1:$s3" GARAGE_ADMIN="http://127.0.0.1:$admin"
            return 0
        fi
        log "garage did not come up (attempt $attempt, health '$code'):"
        tail -n 5 "$dir/garage.log" >&2 || true
        stop_pid "$GARAGE_PID"
        GARAGE_PID=""
    done
    return 1
}
