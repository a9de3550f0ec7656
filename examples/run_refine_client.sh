#!/usr/bin/env bash
# Runs examples/refine_client.py against a sharer-svc binary with a tiny random-weight model on
# a free loopback port (CI: .ci/run). Needs the pinned Python deps (grpcio, grpcio-tools,
# protobuf; .ci/run installs them); without them it prints SKIPPED and exits 0. Builds
# sharer-svc (debug); BIN_DIR=DIR uses the binary in DIR instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import grpc, grpc_tools" 2>/dev/null; then
    echo "SKIPPED: python3 lacks grpcio/grpcio-tools (pip install grpcio==1.66.2 grpcio-tools==1.66.2 protobuf==5.28.3)" >&2
    exit 0
fi
if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR
else
    cargo build -q -p sharer-svc
    bin=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
KVWIRE_SHARER__LISTEN_ADDR=127.0.0.1:$port KVWIRE_SHARER__MODEL=random:tiny-llama:7 \
    "$bin/sharer-svc" >"$log" 2>&1 &
pid=$!
cleanup() {
    local rc=$?
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ "$rc" = 0 ] || { echo "--- sharer log"; tail -n 20 "$log"; }
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 60); do
    "$bin/sharer-svc" --health-check "http://127.0.0.1:$port" >/dev/null 2>&1 && break
    sleep 1
done
python3 examples/refine_client.py --sharer "127.0.0.1:$port"
