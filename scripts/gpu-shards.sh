#!/usr/bin/env bash
# Runs one grid as N shards at once: N `coordinator run --shard I/N` processes, each with its own
# embedded sharer and receiver, sharing one GPU, then merges the shard folders into the run
# folder an unsharded run writes (`coordinator merge`). With a small model one process is
# launch-bound and leaves the GPU idle most of the time; N processes keep it busier. Accuracy and
# bytes do not depend on the sharding (coordinator/tests/shard_merge.rs); latencies of a sharded
# run are measured under N-way sharing of the GPU and say so only through this script's log.
#
#   scripts/gpu-shards.sh GRID N OUT [options]
#
# A shard folder resumes like any run folder, so running the same command again continues where a
# time limit stopped it; the merged folder is derived from the shards and rewritten each time.
#
# Options:
#   --seconds S        every shard starts no new sample after S seconds (`run --time-limit`:
#                      the samples in flight finish, the shard writes its manifest and resumes
#                      next time); a shard still running 120 s later is interrupted; default:
#                      no limit
#   --device DEV       embedded services' device (default cuda:0)
#   --dtype DT         their dtype (default bf16)
#   --jobs J           model jobs per embedded service (default 2)
#   --concurrency C    Evaluate calls in flight per shard (default 6)
#   --coordinator BIN  the coordinator binary (default: coordinator on PATH, else
#                      target/release/coordinator)
# Shard I's log is OUT/<grid name>.shard-I-of-N.log. Binaries carried to a machine without their
# checkout: set KVWIRE_GIT_COMMIT=<the commit they were built from>, or the manifests record the
# commit of whatever folder the script runs in.
set -euo pipefail

say() { echo "gpu-shards: $*" >&2; }
die() {
  say "$*"
  exit 2
}

[ $# -ge 3 ] || die "usage: $0 GRID N OUT [--seconds S] [--device DEV] [--dtype DT] [--jobs J] [--concurrency C] [--coordinator BIN]"
grid=$1 shards=$2 out=$3
shift 3
seconds="" device=cuda:0 dtype=bf16 jobs=2 concurrency=6 coordinator=""
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2 ;;
    --device) device=$2 ;;
    --dtype) dtype=$2 ;;
    --jobs) jobs=$2 ;;
    --concurrency) concurrency=$2 ;;
    --coordinator) coordinator=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done
[ -f "$grid" ] || die "no grid file $grid"
[[ $shards =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got $shards"
if [ -z "$coordinator" ]; then
  coordinator=$(command -v coordinator || echo target/release/coordinator)
fi
[ -x "$coordinator" ] || die "no coordinator binary at $coordinator (--coordinator BIN)"
name=$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$grid" | head -1)
[ -n "$name" ] || die "$grid has no name = \"...\" line"
mkdir -p "$out"

limit=() time_limit=()
if [ -n "$seconds" ]; then
  time_limit=(--time-limit "$seconds")
  limit=(timeout --signal=INT --kill-after=30 $((seconds + 120)))
fi
say "$name: $shards shards on $device ($dtype), --jobs $jobs --concurrency $concurrency${seconds:+, at most ${seconds} s}"
pids=()
for i in $(seq 0 $((shards - 1))); do
  "${limit[@]}" "$coordinator" run "$grid" --shard "$i/$shards" --out "$out" --device "$device" \
    --dtype "$dtype" --jobs "$jobs" --concurrency "$concurrency" --no-progress "${time_limit[@]}" \
    >"$out/$name.shard-$i-of-$shards.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  status=0
  wait "${pids[$i]}" || status=$?
  if [ $status -ne 0 ]; then
    say "shard $i exited with $status; its log:"
    tail -5 "$out/$name.shard-$i-of-$shards.log" >&2
    failed=1
  fi
done

rm -rf "${out:?}/$name"
"$coordinator" merge "$out/$name" $(for i in $(seq 0 $((shards - 1))); do echo "$out/$name.shard-$i-of-$shards"; done)
"$coordinator" status "$out/$name"
exit $failed
