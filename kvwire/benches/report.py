#!/usr/bin/env python3
"""Turn criterion estimates of the `codec` bench into the BENCHMARKS.md markdown table.

Usage: python3 kvwire/benches/report.py [CRITERION_DIR]
(default: $CARGO_TARGET_DIR/criterion or target/criterion). Throughput is input bytes (K+V as
given, f32 or f16) per second at the median time (robust to the VM's occasional stalls); "x
memcpy" is against `memcpy` of the same bytes measured in the same group; "int4/int8" is the
int4 figure over the int8 one.
"""
import json, os, sys, pathlib

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                    os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
rows = {}
for est in root.glob("*/**/new/estimates.json"):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    group, func, param = bench["group_id"], bench["function_id"], bench.get("value_str")
    nbytes = bench["throughput"]["Bytes"]
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    name = func + ("/" + param if param else "")
    rows.setdefault(group, {})[name] = nbytes / median_ns

def key(g):
    p = g.split("_")
    return (p[-1], int(p[0][1:]), int(p[1][1:]), int(p[2][1:]))

OPS = [("v2_encode", "v2 encode"), ("v2_decode", "v2 decode"), ("v2_decode_f16", "v2 decode to f16"),
       ("v1_encode", "v1 encode"), ("v1_decode", "v1 decode"), ("v1_decode_f16", "v1 decode to f16")]
print("| layer (input dtype) | memcpy GB/s | op | int8 GB/s | int8 x memcpy | int4 GB/s | int4 x memcpy | int4/int8 |")
print("|---|---|---|---|---|---|---|---|")
for g in sorted(rows, key=key):
    r = rows[g]
    if "memcpy" not in r:
        continue
    base = r["memcpy"]
    first = True
    for op, label in OPS:
        i8, i4 = r.get(op + "/int8"), r.get(op + "/int4")
        if i8 is None or i4 is None:
            continue
        head = f"{g} | {base:.2f}" if first else " | "
        first = False
        print(f"| {head} | {label} | {i8:.2f} | {i8 / base:.2f} | {i4:.2f} | {i4 / base:.2f} | {i4 / i8:.2f} |")

# The targets, cell by cell (the "decode to f16" rows are extra, not targets).
TARGETS = [("encode", 0.25), ("decode", 0.5)]
met, misses, pairs, pair_misses = 0, [], 0, []
for g in sorted(rows, key=key):
    r = rows[g]
    if "memcpy" not in r:
        continue
    for v in ("v2", "v1"):
        for op, line in TARGETS:
            i8, i4 = r.get(f"{v}_{op}/int8"), r.get(f"{v}_{op}/int4")
            if i8 is None or i4 is None:
                continue
            x = i8 / r["memcpy"]
            if x >= line:
                met += 1
            else:
                misses.append(f"{g} {v} {op} int8 {x:.3f}x (target {line}x)")
            pairs += 1
            if i4 / i8 < 0.6:
                pair_misses.append(f"{g} {v} {op} int4/int8 {i4 / i8:.3f}")
print()
print(f"targets: int8 cells met {met} of {met + len(misses)}; int4 >= 0.6 of int8 on "
      f"{pairs - len(pair_misses)} of {pairs}")
for m in misses + pair_misses:
    print("  miss:", m)
