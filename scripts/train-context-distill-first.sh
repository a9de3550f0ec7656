#!/usr/bin/env bash
# The distillation-first recipe of the context-layout fuser (issue 15; fuser/README.md,
# "Distillation first"), for one seed: 600 steps of slot distillation alone on SQuAD, then 150
# steps of answer cross-entropy plus distillation from those weights. Writes
# <runs>/distill-s<seed> and <runs>/ce-s<seed> (fuser checkpoints with provenance and logs) and,
# with EVAL=1, `fuser eval --layout context` of the final fuser on the seeded 150-item SciQ-context
# subset the CPU grid uses (seed 1), with the oracle slots and their noise curve.
#
#   scripts/train-context-distill-first.sh SEED [RUNS] [DEVICE]
#
# RUNS defaults to runs/fuser/distill-first (relative paths keep machine paths out of
# provenance.json), DEVICE to cpu (`cuda` with a fuser built with --features fuser-cli/cuda).
# FUSER (default: `cargo run --release -p fuser-cli --bin fuser --`) is the command to run. A
# step already finished (its folder holds fuser.safetensors and the step count of its schedule)
# is skipped, so the script can be run again after an interruption; an interrupted training
# resumes (--resume).
# 2-core CPU VM, f32 (2026-12-05): about 43 min for the distillation steps (200 items cached),
# 21 min for the cross-entropy steps, 15 min for the evaluation.
set -euo pipefail

seed=${1:?usage: $0 SEED [RUNS] [DEVICE]}
runs=${2:-runs/fuser/distill-first}
device=${3:-cpu}
read -r -a fuser <<< "${FUSER:-cargo run --release -p fuser-cli --bin fuser --}"
pair=fuser/pairs/smollm2-from-qwen-coder-0.5b.toml
common=(--pair "$pair" --data squad --layout context --device "$device" --cache-sharer
  --gate-init 1 --gate-lr 1e-2 --gate-noise none --val-items 16 --limit-items 200
  --seed "$seed")

# Runs `fuser train` into folder $1 with a schedule of $2 steps unless it already finished.
train() {
  local out=$1 steps=$2
  shift 2
  local resume=()
  if [[ -f $out/provenance.json ]]; then
    if grep -q "\"steps_done\": $steps," "$out/provenance.json"; then
      echo "$out: done ($steps steps)"
      return
    fi
    resume=(--resume)
  fi
  "${fuser[@]}" train "${common[@]}" --steps "$steps" --out "$out" "${resume[@]}" "$@"
}

train "$runs/distill-s$seed" 600 --distill-only-steps 600 --batch 8 --lr 2e-3 \
  --final-temperature 0.05 --anneal-fraction 0.5 --val-every 100 --ckpt-every 50
train "$runs/ce-s$seed" 150 --init-from "$runs/distill-s$seed" --batch 4 --lr 5e-4 \
  --distill-weight 1 \
  --initial-temperature 0.05 --final-temperature 0.05 --val-every 50 --ckpt-every 25

if [[ ${EVAL:-0} == 1 ]]; then
  "${fuser[@]}" eval --pair "$pair" --device "$device" --layout context --data sciq-context \
    --part test --n 150 --seed 1 --fuser "$runs/ce-s$seed" --oracle-noise 0.05,0.1,0.2,0.4 \
    --out "$runs/eval-ce-s$seed" --resume
fi
