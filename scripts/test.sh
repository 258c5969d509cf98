#!/usr/bin/env bash
# Runs every test of Spillway: lint, unit tests, and the integration tests
# that start the real binary on loopback and talk HTTP to it. Installs what
# the tests need first, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

declare -A LIVE=() # pid -> what, for every process started here and not yet reaped
# shellcheck source=lib/common.sh
source scripts/lib/common.sh

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all_live
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- what the tests need -----------------------------------------------------
# The Rust toolchain comes with the machine; rustfmt and clippy may not.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi
# The S3 and PostgreSQL suites run against a real Garage and a real
# PostgreSQL that tests/common/cluster.rs starts per test on loopback.
ensure_garage
ensure_postgres

# --- lint ------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check
log "no cycles between the top-level modules of src/"
python3 scripts/lib/module_cycles.py src
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --all-targets --locked --features failpoints -- -D warnings

# --- tests -----------------------------------------------------------------------
# Integration tests start the real binary on 127.0.0.1:0 with their own temp
# directories; tests/faults.rs mounts small tmpfs volumes (needs root; it
# says so and skips only that case otherwise). SPILLWAY_REQUIRE_CLUSTER=1:
# a suite that needs Garage or PostgreSQL fails instead of skipping when
# either is missing.
log "cargo test"
SPILLWAY_REQUIRE_CLUSTER=1 cargo test --all-targets --locked --features failpoints -- --test-threads="${TEST_THREADS:-2}"

# The patched uncased's own tests (its hash is what every header lookup uses).
log "cargo test: vendor/uncased"
cargo test --manifest-path vendor/uncased/Cargo.toml --locked --target-dir target/vendor

log "end-to-end: tus with tuspy and tus-js-client"
scripts/e2e.sh

log "end-to-end on a cluster: the same clients, every request to another node"
scripts/e2e-cluster.sh

log "operations e2e: nginx in front, metrics, /ready, deploy files"
scripts/e2e-ops.sh

log "browser tests: the upload page in headless Chromium"
scripts/e2e-browser.sh

log "OpenAPI: the document against the live node (schemathesis)"
scripts/e2e-openapi.sh

log "all tests passed"
