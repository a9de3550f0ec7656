#!/usr/bin/env python3
"""Turn criterion estimates of the `codec` bench into the BENCHMARKS.md markdown table.

Usage: python3 kvwire/benches/report.py [CRITERION_DIR ...]
(default: $CARGO_TARGET_DIR/criterion or target/criterion). Throughput is input bytes (K+V as
given, f32 or f16) per second at the median time (robust to the VM's occasional stalls); "x
memcpy" is against `memcpy` of the same bytes measured in the same group of the same run;
"int4/int8" is the int4 figure over the int8 one.

Given several criterion folders (copies kept after separate full runs), each figure is the
median over the runs of that run's figure: GB/s of the op, of memcpy, and each ratio computed
within its run (an op and its memcpy are always compared side by side), so one run disturbed by
the VM's neighbours does not decide a cell.
"""
import json, os, statistics, sys, pathlib

dirs = [pathlib.Path(p) for p in sys.argv[1:]] or [
    pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion"]


def load(root):
    rows = {}
    for est in root.glob("*/**/new/estimates.json"):
        bench = json.loads((est.parent / "benchmark.json").read_text())
        group, func, param = bench["group_id"], bench["function_id"], bench.get("value_str")
        nbytes = bench["throughput"]["Bytes"]
        median_ns = json.loads(est.read_text())["median"]["point_estimate"]
        name = func + ("/" + param if param else "")
        rows.setdefault(group, {})[name] = nbytes / median_ns
    return rows


runs = [load(d) for d in dirs]


def med(f):
    """Median over the runs of f(run's group rows), skipping runs without the figure."""
    vals = [v for v in map(f, runs) if v is not None]
    return statistics.median(vals) if vals else None


def fig(g, name):
    return med(lambda r: r.get(g, {}).get(name))


def ratio(g, num, den):
    def f(r):
        a, b = r.get(g, {}).get(num), r.get(g, {}).get(den)
        return a / b if a is not None and b else None
    return med(f)


def key(g):
    p = g.split("_")
    return (p[-1], int(p[0][1:]), int(p[1][1:]), int(p[2][1:]))


groups = sorted({g for r in runs for g in r if "memcpy" in r[g]}, key=key)
OPS = [("v2_encode", "v2 encode"), ("v2_decode", "v2 decode"), ("v2_decode_f16", "v2 decode to f16"),
       ("v1_encode", "v1 encode"), ("v1_decode", "v1 decode"), ("v1_decode_f16", "v1 decode to f16")]
print(f"({len(runs)} run{'s' if len(runs) > 1 else ''}"
      f"{': median over runs of each figure' if len(runs) > 1 else ''})")
print()
print("| layer (input dtype) | memcpy GB/s | op | int8 GB/s | int8 x memcpy | int4 GB/s | int4 x memcpy | int4/int8 |")
print("|---|---|---|---|---|---|---|---|")
for g in groups:
    first = True
    for op, label in OPS:
        i8, i4 = fig(g, op + "/int8"), fig(g, op + "/int4")
        if i8 is None or i4 is None:
            continue
        head = f"{g} | {fig(g, 'memcpy'):.2f}" if first else " | "
        first = False
        x8, x4 = ratio(g, op + "/int8", "memcpy"), ratio(g, op + "/int4", "memcpy")
        r48 = ratio(g, op + "/int4", op + "/int8")
        print(f"| {head} | {label} | {i8:.2f} | {x8:.2f} | {i4:.2f} | {x4:.2f} | {r48:.2f} |")

# The targets, cell by cell (the "decode to f16" rows are extra, not targets).
TARGETS = [("encode", 0.25), ("decode", 0.5)]
met, misses, pairs, pair_misses = 0, [], 0, []
for g in groups:
    for v in ("v2", "v1"):
        for op, line in TARGETS:
            name = f"{v}_{op}"
            x = ratio(g, name + "/int8", "memcpy")
            r48 = ratio(g, name + "/int4", name + "/int8")
            if x is None or r48 is None:
                continue
            if x >= line:
                met += 1
            else:
                misses.append(f"{g} {v} {op} int8 {x:.3f}x (target {line}x)")
            pairs += 1
            if r48 < 0.6:
                pair_misses.append(f"{g} {v} {op} int4/int8 {r48:.3f}")
print()
print(f"targets: int8 cells met {met} of {met + len(misses)}; int4 >= 0.6 of int8 on "
      f"{pairs - len(pair_misses)} of {pairs}")
for m in misses + pair_misses:
    print("  miss:", m)
