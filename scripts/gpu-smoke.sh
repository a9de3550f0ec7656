#!/usr/bin/env bash
# GPU smoke test of the services: starts sharer-svc and receiver-svc as two processes on one
# device, waits for gRPC health, runs `coordinator run` on the smoke grid (receiver-only, text,
# same-model KV at fp16/int8/int4; letter and rank scoring; four hand-written items, random
# weights) against the two URLs, prints the summary table, checks that both services' Info
# reports the device, and exits non-zero when any row failed. Once per model shape: the tiny
# preset, then a real-shape one (Qwen3-0.6B layers and heads) on a GPU. Then quantize parity
# (the `quant_throughput` example: device and host quantizers make the same bytes) and every
# method over gRPC, C2C and T2T included (`coordinator bench` with tiny models and a random
# fuser).
#
# Meant for a GPU machine with no Rust toolchain and no network: copy this script, the three
# release binaries (sharer-svc, receiver-svc, coordinator) and the sharer's `quant_throughput`
# example, all built with `--features cuda` (docs/GPU.md), into one folder and run it there:
#
#   KVWIRE_CUDA_LIBS=<folder with the CUDA 13 libraries> ./gpu-smoke.sh
#
# The grid and its items are written by this script (the same text as grids/gpu-smoke.toml and
# grids/gpu-smoke-items.jsonl of the repository; a coordinator test keeps them equal), so
# nothing else needs to travel.
#
# Options:
#   --bin-dir DIR     folder with the binaries (default: this script's folder if it has them,
#                     else the current folder)
#   --device DEV      cuda:N (default cuda:0), cuda, or cpu (to test the script on a CPU build)
#   --dtype DT        bf16 (default on a GPU), f16 or f32 (default on the CPU)
#   --models "A B"    model specs to run, one round each (default on a GPU:
#                     "random:tiny-llama:7 random:qwen3-0.6b:1"; on the CPU: the tiny one)
#   --work DIR        working folder for the grid, logs and run folders (default: a new
#                     temporary folder; its path is printed)
#   --port N          sharer port on 127.0.0.1 (default 50061); the receiver uses N+1
#   --ready-timeout S seconds to wait for a service to load its model (default 600)
# Environment:
#   KVWIRE_CUDA_LIBS  folder holding libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
#                     libcurand.so.10 and libnvrtc.so.13, prepended to LD_LIBRARY_PATH (for a
#                     GPU device; unset: LD_LIBRARY_PATH must already find them). libcuda.so.1
#                     comes from the GPU driver.
set -euo pipefail

say() { echo "gpu-smoke: $*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_dir=""
device="cuda:0"
dtype=""
models=""
work=""
port=50061
ready_timeout=600

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --ready-timeout) ready_timeout=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$device" in
  cpu) on_gpu=0 ;;
  cuda) device="cuda:0"; on_gpu=1 ;;
  cuda:[0-9]*) on_gpu=1 ;;
  *) die "--device $device: expected cpu, cuda or cuda:N" ;;
esac
if [ -z "$dtype" ]; then
  if [ $on_gpu = 1 ]; then dtype=bf16; else dtype=f32; fi
fi
if [ -z "$models" ]; then
  if [ $on_gpu = 1 ]; then
    models="random:tiny-llama:7 random:qwen3-0.6b:1"
  else
    models="random:tiny-llama:7"
  fi
fi
if [ -z "$bin_dir" ]; then
  if [ -x "$here/sharer-svc" ]; then bin_dir=$here; else bin_dir=$PWD; fi
fi
bin_dir=$(cd "$bin_dir" && pwd)
for b in sharer-svc receiver-svc coordinator; do
  [ -x "$bin_dir/$b" ] || die "no executable $bin_dir/$b (--bin-dir)"
done

if [ $on_gpu = 1 ]; then
  if [ -n "${KVWIRE_CUDA_LIBS:-}" ]; then
    [ -d "$KVWIRE_CUDA_LIBS" ] || die "KVWIRE_CUDA_LIBS=$KVWIRE_CUDA_LIBS is not a folder"
    export LD_LIBRARY_PATH="$KVWIRE_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  if command -v ldd > /dev/null; then
    missing=$(ldd "$bin_dir/sharer-svc" | awk '/not found/ { print $1 }' | tr '\n' ' ')
    [ -z "$missing" ] || die "the loader cannot find: $missing(set KVWIRE_CUDA_LIBS to the \
folder of the CUDA 13 libraries; libcuda.so.1 comes from the driver)"
  fi
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader |
      sed 's/^/gpu-smoke: gpu /' >&2 || true
  fi
fi

if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-smoke.XXXXXX")
fi
mkdir -p "$work/grids" "$work/logs" "$work/runs"
work=$(cd "$work" && pwd)
say "binaries $bin_dir; device $device $dtype; work folder $work"

# The smoke grid and its items: the same text as grids/gpu-smoke.toml and
# grids/gpu-smoke-items.jsonl (checked by coordinator/tests/gpu_smoke_files.rs).
cat > "$work/grids/gpu-smoke.toml" <<'GRID_TOML'
# GPU smoke grid (scripts/gpu-smoke.sh, docs/GPU.md): every method path of a same-model pair
# over real gRPC between two service processes, on four hand-written items (no download). The
# weights are random, so the accuracy means nothing: what is checked is that every row
# succeeds. The script replaces the model spec to run the same grid at other preset shapes.
# From the repository root: coordinator run grids/gpu-smoke.toml --device cpu (embedded), or
# against running services with --sharer URL --receiver URL.
name = "gpu-smoke"
description = "receiver-only, text (raw), KV transfer at fp16/int8/int4; 4 items, letter and rank scoring; random weights (timing only)"
scoring = ["letter", "rank"]

[[pairs]]
label = "same-model"
sharer = { model = "random:tiny-llama:7" }
receiver = { model = "random:tiny-llama:7" }

[[datasets]]
name = "smoke"
split = "test"
file = "grids/gpu-smoke-items.jsonl"

[[methods]]
kind = "receiver_only"

[[methods]]
kind = "text"
mode = "raw"
cap_bytes = 256

[[methods]]
kind = "kv"
precision = "fp16"

[[methods]]
kind = "kv"
precision = "int8"
granularity = "per_block"

[[methods]]
kind = "kv"
precision = "int4"
granularity = "per_block"

[limits]
sample_timeout_s = 120

# No retries: a smoke test must see the first failure.
[retry]
attempts = 1
GRID_TOML
cat > "$work/grids/gpu-smoke-items.jsonl" <<'ITEMS_JSONL'
{"id":"smoke-1","question":"Which of these is the largest number?","choices":{"text":["7","70","700","0.7"],"label":["A","B","C","D"]},"answerKey":"C"}
{"id":"smoke-2","question":"What do plants need from sunlight to make their food?","choices":{"text":["sound","energy","salt","wind"],"label":["A","B","C","D"]},"answerKey":"B"}
{"id":"smoke-3","question":"Which object is a magnet most likely to pick up?","choices":{"text":["a paper clip","a glass marble","a wooden spoon","a rubber band"],"label":["A","B","C","D"]},"answerKey":"A"}
{"id":"smoke-4","question":"Water that is cooled below zero degrees Celsius becomes what?","choices":{"text":["steam","a gas","juice","ice"],"label":["A","B","C","D"]},"answerKey":"D"}
ITEMS_JSONL

# The start of a service's log (its error, or a panic) and its last lines.
show_log() {
  local log=$1
  if [ "$(wc -l < "$log")" -le 30 ]; then
    cat "$log" >&2
  else
    head -n 15 "$log" >&2
    echo "  ..." >&2
    tail -n 10 "$log" >&2
  fi
}

pids=()
stop_services() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2> /dev/null; then
      kill "$pid" 2> /dev/null || true
      wait "$pid" 2> /dev/null || true
    fi
  done
  pids=()
}
trap stop_services EXIT

# wait_healthy NAME BINARY URL PID LOG
wait_healthy() {
  local name=$1 binary=$2 url=$3 pid=$4 log=$5 start=$SECONDS
  while ! "$binary" --health-check "$url" --health-timeout-secs 2 > /dev/null 2>&1; do
    if ! kill -0 "$pid" 2> /dev/null; then
      show_log "$log"
      die "$name exited before it was healthy (log: $log)"
    fi
    if [ $((SECONDS - start)) -ge "$ready_timeout" ]; then
      show_log "$log"
      die "$name not healthy after ${ready_timeout}s (log: $log)"
    fi
    sleep 1
  done
  say "$name healthy after $((SECONDS - start))s"
}

failures=0
round=0
for model in $models; do
  round=$((round + 1))
  tag=$(printf '%s' "$model" | tr -c 'A-Za-z0-9_-' '-')
  name="gpu-smoke-$tag"
  grid="$work/grids/$name.toml"
  sed -e "s|^name = \"gpu-smoke\"|name = \"$name\"|" \
    -e "s|model = \"random:tiny-llama:7\"|model = \"$model\"|g" \
    "$work/grids/gpu-smoke.toml" > "$grid"
  sport=$port
  rport=$((port + 1))
  slog="$work/logs/$name.sharer.log"
  rlog="$work/logs/$name.receiver.log"
  say "round $round: $model on $device $dtype"

  KVWIRE_SHARER__LISTEN_ADDR="127.0.0.1:$sport" \
    KVWIRE_SHARER__MODEL="$model" \
    KVWIRE_SHARER__DEVICE="$device" \
    KVWIRE_SHARER__DTYPE="$dtype" \
    "$bin_dir/sharer-svc" > "$slog" 2>&1 &
  spid=$!
  pids+=("$spid")
  KVWIRE_RECEIVER__LISTEN_ADDR="127.0.0.1:$rport" \
    KVWIRE_RECEIVER__MODEL="$model" \
    KVWIRE_RECEIVER__DEVICE="$device" \
    KVWIRE_RECEIVER__DTYPE="$dtype" \
    KVWIRE_RECEIVER__SHARER_ENDPOINT="http://127.0.0.1:$sport" \
    "$bin_dir/receiver-svc" > "$rlog" 2>&1 &
  rpid=$!
  pids+=("$rpid")
  wait_healthy sharer "$bin_dir/sharer-svc" "http://127.0.0.1:$sport" "$spid" "$slog"
  wait_healthy receiver "$bin_dir/receiver-svc" "http://127.0.0.1:$rport" "$rpid" "$rlog"

  start=$SECONDS
  if ! (cd "$work" && "$bin_dir/coordinator" run "grids/$name.toml" --out runs --no-progress \
    --sharer "http://127.0.0.1:$sport" --receiver "http://127.0.0.1:$rport"); then
    say "round $round ($model): coordinator run failed"
    failures=$((failures + 1))
    stop_services
    continue
  fi
  say "round $round ($model): grid ran in $((SECONDS - start))s"
  stop_services

  run_dir="$work/runs/$name"
  # Info: the coordinator logs both services' device when it checks the pair.
  if ! grep -Eq "sharer .*layers, $device\), receiver .*layers, $device\)" \
    "$run_dir/logs/coordinator.log"; then
    grep -E "^.*pair .*: sharer" "$run_dir/logs/coordinator.log" >&2 || true
    say "round $round ($model): Info does not report $device for both services"
    failures=$((failures + 1))
  fi
  # Every cell done, every sample answered, no failed row.
  status=$("$bin_dir/coordinator" status "$run_dir")
  bad=$(printf '%s\n' "$status" | awk '
    $4 == "ok" && $6 == "failed" {
      split($3, n, "/")
      if ($2 != "done" || n[1] != n[2] || $5 != 0) print
    }')
  cells=$(printf '%s\n' "$status" | awk '$4 == "ok" && $6 == "failed"' | wc -l)
  if [ -n "$bad" ] || [ "$cells" -eq 0 ]; then
    printf '%s\n' "$status" >&2
    say "round $round ($model): failed or unfinished cells (above; rows in $run_dir/results)"
    failures=$((failures + 1))
  else
    say "round $round ($model): $cells cells, every row ok"
  fi
done

# Quantize parity: the sharer's device quantizer (int8/int4, every granularity, fp16 scales)
# against kvwire's host quantizer on the same K and V; the example exits non-zero on any
# difference. It lives beside the binaries or, in a cargo target folder, under examples/.
quant=""
for candidate in "$bin_dir/quant_throughput" "$bin_dir/examples/quant_throughput"; do
  if [ -x "$candidate" ]; then quant=$candidate; break; fi
done
if [ -z "$quant" ]; then
  say "no quant_throughput beside the binaries (cargo build --release -p sharer-svc --example \
quant_throughput, with --features sharer-svc/cuda for a GPU)"
  failures=$((failures + 1))
elif "$quant" --device "$device" --dtype "$dtype" --tokens 1024 --iters 3 \
  --json "$work/quant-parity.json" > "$work/logs/quant-parity.log" 2>&1; then
  say "quantize parity: device and host bytes identical in every case ($work/logs/quant-parity.log)"
else
  cat "$work/logs/quant-parity.log" >&2
  say "quantize parity: FAILED"
  failures=$((failures + 1))
fi

# Every method over gRPC between two processes, C2C and T2T included: the latency benchmark at
# its smallest (tiny Qwen3-like receiver, tiny Qwen2-like sharer, a random-initialised fuser);
# it stops at the first failed Evaluate.
if "$bin_dir/coordinator" bench --device "$device" --dtype "$dtype" \
  --receiver random:tiny-qwen3:1 --sharer random:tiny-qwen2:2 --random-fuser 16 \
  --prompt-tokens 32 --warmup 1 --requests 2 --bin-dir "$bin_dir" --out "$work/bench" \
  --no-progress > "$work/logs/bench.log" 2>&1; then
  say "every method over gRPC (receiver-only, kv-fp16/int8/int4, c2c-fp16/int8/int4, t2t): ok \
($work/bench/bench.md)"
else
  show_log "$work/logs/bench.log"
  say "bench of every method: FAILED (log: $work/logs/bench.log)"
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  die "$failures check(s) failed; logs and run folders in $work"
fi
say "PASSED: $models on $device $dtype (work folder $work)"
