#!/usr/bin/env bash
# Issue 15 on one GPU, all at once (the processes share the card; each is launch-bound alone):
#   - the distillation-first recipe (scripts/train-context-distill-first.sh) for each seed given,
#     each followed by `fuser eval --layout context` of its final fuser on every SciQ-context
#     item (`--n 1000 --seed 0`: the items of grids/context-c2c.toml, 870 of 887 with a passage of
#     at most 384 sharer tokens, in the same order, with the same random-passage draw as the
#     grid's cells, whose seed is 0);
#   - the same evaluation of each checkpoint folder given with --eval;
#   - with --grid, grids/context-c2c.toml through the services (scripts/gpu-shards.sh, 4 shards,
#     f32 like the training) with the fuser the grid names.
#
#   scripts/gpu-context-c2c-seeds.sh OUT [--seeds "1 2"] [--eval NAME=DIR]... [--grid]
#                                        [--until EPOCH]
#
# OUT (relative, to keep machine paths out of provenance.json) receives train-s<seed>/ (the
# recipe's two runs), eval-<name>/ (rows.jsonl, summary.json) and logs/. --until EPOCH (seconds
# since 1970, `date -d '+20 min' +%s`) is when every evaluation and the grid's shards start no new
# item (`--time-limit` from the moment each starts; they resume when run again); a training is
# resumable as the recipe script says. FUSER and COORDINATOR name the binaries (built with
# --features fuser-cli/cuda and coordinator/cuda, see docs/GPU.md; default: on PATH).
# Measured on one H200 (2026-12-05): fuser/README.md, "Every SciQ-context item, and the seeds",
# and fuser/results/2026-12-05-h200-all-items/.
set -euo pipefail

out=${1:?usage: $0 OUT [--seeds "1 2"] [--eval NAME=DIR]... [--grid] [--until EPOCH]}
shift
seeds="" evals=() grid=0 until=""
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) seeds=$2; shift 2 ;;
    --eval) evals+=("$2"); shift 2 ;;
    --grid) grid=1; shift ;;
    --until) until=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
fuser=${FUSER:-fuser}
coordinator=${COORDINATOR:-coordinator}
mkdir -p "$out/logs"

# Seconds left until --until (nothing without it).
seconds_left() {
  if [ -n "$until" ]; then
    local now
    now=$(date +%s)
    echo $((until > now ? until - now : 1))
  fi
}

# Evaluates fuser folder $2 on every SciQ-context item into $out/eval-$1.
evaluate() {
  local left limit=()
  left=$(seconds_left)
  [ -n "$left" ] && limit=(--time-limit "$left")
  "$fuser" eval --pair fuser/pairs/smollm2-from-qwen-coder-0.5b.toml --device cuda \
    --layout context --data sciq-context --part test --n 1000 --seed 0 --fuser "$2" \
    --out "$out/eval-$1" --resume "${limit[@]}"
}

pids=()
if [ $grid = 1 ]; then
  scripts/gpu-shards.sh grids/context-c2c.toml 4 "$out/grid" --device cuda:0 --dtype f32 \
    --coordinator "$coordinator" ${until:+--seconds "$(seconds_left)"} >"$out/logs/grid.log" 2>&1 &
  pids+=($!)
fi
for seed in $seeds; do
  (FUSER=$fuser scripts/train-context-distill-first.sh "$seed" "$out/train-s$seed" cuda &&
    evaluate "ce-s$seed" "$out/train-s$seed/ce-s$seed") >"$out/logs/seed-$seed.log" 2>&1 &
  pids+=($!)
done
for named in "${evals[@]}"; do
  evaluate "${named%%=*}" "${named#*=}" >"$out/logs/eval-${named%%=*}.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
exit $failed
