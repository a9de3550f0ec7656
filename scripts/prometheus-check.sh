#!/usr/bin/env bash
# Prometheus for real: starts Debian's Prometheus server scraping a sharer and a receiver (tiny
# random-weight models, loopback), sends ~20 s of mixed load (KV with refinement, text,
# receiver-only; letter and rank scoring; a few calls the receiver refuses), then evaluates
# every PromQL expression of the Grafana dashboard through Prometheus' HTTP API and fails
# unless each returns series with numbers. The dashboard JSON is validated first.
#
#   scripts/prometheus-check.sh            (about 30 s once built)
#
# Installs the `prometheus` package with apt-get when it is missing (needs root); when that is
# not possible (not root, no apt-get, no package source) it says so and exits 0 (skipped).
# Builds the two services and loadtest (debug profile); BIN_DIR=DIR uses the three binaries in
# DIR instead. KEEP_DIR=1 keeps the working folder (logs, Prometheus data) for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
dashboard=deploy/grafana/dashboards/kvwire.json
datasources=deploy/grafana/provisioning/datasources/prometheus.yml

echo "== dashboard JSON"
python3 scripts/dashboard_check.py validate "$dashboard" "$datasources"

if ! command -v prometheus >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing Debian's prometheus"
        install_prometheus() {
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                prometheus >/dev/null
        }
        if ! install_prometheus && ! { apt-get update >/dev/null && install_prometheus; }; then
            echo "SKIPPED: apt-get could not install prometheus (no package source?)" >&2
            exit 0
        fi
    else
        echo "SKIPPED: prometheus is not installed and this is not root with apt-get" >&2
        exit 0
    fi
fi
prometheus --version 2>&1 | head -1

if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR
else
    echo "== building sharer-svc, receiver-svc, loadtest"
    cargo build -q -p sharer-svc -p receiver-svc -p loadtest
    bin=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug
fi

work=$(mktemp -d)
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "$rc" != 0 ]; then
        for f in "$work"/*.log; do echo "--- last lines of $f"; tail -n 15 "$f"; done
    fi
    wait 2>/dev/null || true
    if [ "${KEEP_DIR:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Free loopback ports below the kernel's ephemeral range (an outgoing connection cannot take
# one between this check and the bind), picked at random and checked by binding.
read -r p_sharer p_receiver m_sharer m_receiver p_prom < <(python3 - <<'EOF'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = []
while len(ports) < 5:
    p = random.randrange(10000, low)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    if p not in ports:
        ports.append(p)
print(*ports)
EOF
)

echo "== services (random:tiny-llama), metrics on :$m_sharer and :$m_receiver"
# Two sessions at most: refinement sessions are evicted by capacity, so the eviction panel has
# data (a round 2 whose session went first answers NOT_FOUND, which the error panel shows).
# Queues hold every call of the load.
KVWIRE_SHARER__LISTEN_ADDR=127.0.0.1:$p_sharer \
KVWIRE_SHARER__MODEL=random:tiny-llama:7 \
KVWIRE_SHARER__TELEMETRY__METRICS_ADDR=127.0.0.1:$m_sharer \
KVWIRE_SHARER__LIMITS__MAX_QUEUED_JOBS=64 \
KVWIRE_SHARER__SESSIONS__CAPACITY=2 \
    "$bin/sharer-svc" >"$work/sharer.log" 2>&1 &
pids+=($!)
KVWIRE_RECEIVER__LISTEN_ADDR=127.0.0.1:$p_receiver \
KVWIRE_RECEIVER__MODEL=random:tiny-llama:7 \
KVWIRE_RECEIVER__SHARER_ENDPOINT=http://127.0.0.1:$p_sharer \
KVWIRE_RECEIVER__TELEMETRY__METRICS_ADDR=127.0.0.1:$m_receiver \
KVWIRE_RECEIVER__LIMITS__MAX_QUEUED_JOBS=64 \
    "$bin/receiver-svc" >"$work/receiver.log" 2>&1 &
pids+=($!)
for url in "http://127.0.0.1:$p_sharer" "http://127.0.0.1:$p_receiver"; do
    bin_name=sharer-svc
    [ "$url" = "http://127.0.0.1:$p_receiver" ] && bin_name=receiver-svc
    for _ in $(seq 60); do
        "$bin/$bin_name" --health-check "$url" >/dev/null 2>&1 && break
        sleep 1
    done
    "$bin/$bin_name" --health-check "$url" >/dev/null
done

echo "== prometheus on :$p_prom (scraping every second)"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sharer
    static_configs:
      - targets: ["127.0.0.1:$m_sharer"]
        labels: {role: sharer}
  - job_name: receiver
    static_configs:
      - targets: ["127.0.0.1:$m_receiver"]
        labels: {role: receiver}
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$p_prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom=http://127.0.0.1:$p_prom
for _ in $(seq 60); do
    python3 -c "import urllib.request; urllib.request.urlopen('$prom/-/ready', timeout=2)" \
        2>/dev/null && break
    sleep 1
done

echo "== load (20 s) and refused calls"
"$bin/loadtest" evaluate --receiver "http://127.0.0.1:$p_receiver" --duration-s 20 \
    --concurrency 8 --connections 2 --examples loadtest/data/mc-sample.jsonl \
    --methods kv-int8,text,receiver-only,kv-int4 --scoring letter,rank \
    --text-kinds raw,summary --refine-margin 1.0 \
    --sharer-metrics "127.0.0.1:$m_sharer" --receiver-metrics "127.0.0.1:$m_receiver"
# A sharer the receiver does not allow: refused (INVALID_ARGUMENT), counted as an error.
"$bin/loadtest" evaluate --receiver "http://127.0.0.1:$p_receiver" --requests 3 \
    --sharer http://127.0.0.1:9
# Let a few more scrapes land.
sleep 5

echo "== every dashboard expression through $prom/api/v1/query"
python3 scripts/dashboard_check.py query "$prom" "$dashboard"
echo "prometheus-check: ok"
