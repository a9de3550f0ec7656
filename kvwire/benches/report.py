#!/usr/bin/env python3
"""Turn criterion estimates of the `codec` bench into the BENCHMARKS.md markdown table.

Usage: python3 kvwire/benches/report.py [CRITERION_DIR]
(default: $CARGO_TARGET_DIR/criterion or target/criterion). Throughput is input bytes (K+V as
given, f32 or f16) per second at the mean time; the ratio is against `memcpy` of the same bytes
measured in the same group.
"""
import json, os, sys, pathlib

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                    os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
rows = {}
for est in root.glob("*/**/new/estimates.json"):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    group, func, param = bench["group_id"], bench["function_id"], bench.get("value_str")
    nbytes = bench["throughput"]["Bytes"]
    mean_ns = json.loads(est.read_text())["mean"]["point_estimate"]
    name = func + ("/" + param if param else "")
    rows.setdefault(group, {})[name] = (nbytes / mean_ns, mean_ns)

def key(g):
    return (g.split("_")[-1], int(g.split("_")[0][1:]), int(g.split("_")[1][1:]), int(g.split("_")[2][1:]))

print("| layer (input dtype) | memcpy GB/s | op | GB/s | x memcpy | op | GB/s | x memcpy |")
print("|---|---|---|---|---|---|---|---|")
for g in sorted(rows, key=key):
    r = rows[g]
    if "memcpy" not in r:
        continue
    base = r["memcpy"][0]
    ops = [k for k in ["v2_encode/int8", "v2_decode/int8", "v2_encode/int4", "v2_decode/int4",
                       "v1_encode/int8", "v1_decode/int8", "v1_encode/int4", "v1_decode/int4"] if k in r]
    for i in range(0, len(ops), 2):
        cells = []
        for op in ops[i:i + 2]:
            cells += [op, f"{r[op][0]:.2f}", f"{r[op][0] / base:.2f}"]
        first = f"{g} | {base:.2f}" if i == 0 else " | "
        print(f"| {first} | " + " | ".join(cells) + " |")
