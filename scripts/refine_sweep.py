#!/usr/bin/env python3
"""The refinement pilot's threshold sweep, operating point and paired comparisons
(grids/refine-pilot.toml, docs/REFINEMENT.md). Standard library only.

Usage: scripts/refine_sweep.py RUN_FOLDER [--svg docs/figures/refine-pilot.svg]

The refine cells run round 2 on every item (margin_threshold above every margin) and each row
records the round-1 prediction and margin, so the result of a threshold t is read off the same
rows: an item whose round-1 margin is below t takes its round-2 prediction and pays round 2's
bytes and time, the others keep round 1. The receiver decides exactly that way, so this equals
running the cell at t (round 1 does not depend on t).

Shard 0 of the dataset is the tuning half: the threshold and the best one-shot method at each
cap are chosen there (highest accuracy; ties to the smaller threshold, then fewer bytes).
Shard 1 is the report half. Intervals: paired bootstrap over items (10,000 resamples, seed 0)
of the accuracy difference; Wilson 95% for single accuracies.
"""

import argparse
import glob
import json
import math
import os
import random
import sys

BOOT = 10_000


def wilson(k, n, z=1.959964):
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (100 * (c - h), 100 * (c + h))


def paired_boot(a, b, seed=0):
    """95% bootstrap interval of mean(a) - mean(b), a and b paired (lists of 0/1)."""
    rng = random.Random(seed)
    n = len(a)
    diffs = [x - y for x, y in zip(a, b)]
    stats = []
    for _ in range(BOOT):
        s = sum(diffs[rng.randrange(n)] for _ in range(n))
        stats.append(100 * s / n)
    stats.sort()
    return (100 * sum(diffs) / n, stats[int(0.025 * BOOT)], stats[int(0.975 * BOOT) - 1])


def load(run):
    """cell id -> (config, {sample_id: last ok row})."""
    cells = {}
    for path in glob.glob(os.path.join(run, "configs", "cells", "*.json")):
        with open(path) as f:
            cfg = json.load(f)
        cid = os.path.splitext(os.path.basename(path))[0]
        cells[cid] = (cfg, {})
    for path in glob.glob(os.path.join(run, "results", "*.jsonl")):
        cid = os.path.basename(path)[: -len(".jsonl")]
        if cid not in cells:
            continue
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if row.get("status") == "ok":
                    cells[cid][1][row["sample_id"]] = row
    return cells


def describe(cfg):
    """(shard index, cap or None, method label, refine settings or None)."""
    c = cfg["cell"]["config"]
    ds = c["dataset"]
    shard = (ds.get("shard") or {}).get("index", 0)
    cap = c.get("budget_cap_bytes")
    method = c["method"]
    refine = method.get("refine") if isinstance(method, dict) else None
    return shard, cap, c["method_label"], refine


def outcome(row, t):
    """(correct, bytes, round-2 used, round-2 bytes, round-2 ms) at threshold t."""
    rounds = row["rounds"]
    if len(rounds) < 2:
        return (row["correct"], row["bytes_measured_total"], False, 0, 0.0)
    r1, r2 = rounds[0], rounds[1]
    if r1.get("margin") is not None and r1["margin"] < t:
        return (
            row["correct"],
            row["bytes_measured_total"],
            True,
            r2["bytes_measured_total"],
            r2["timings_ms"].get("end_to_end", 0.0),
        )
    return (r1["prediction"] == row["gold"], r1["bytes_measured_total"], False, 0, 0.0)


def summarize(rows, ids, t):
    out = [outcome(rows[i], t) for i in ids]
    n = len(out)
    correct = [1 if o[0] else 0 for o in out]
    k = sum(correct)
    spent = sum(o[1] for o in out)
    used = [o for o in out if o[2]]
    return {
        "n": n,
        "acc": 100 * k / n,
        "correct": correct,
        "bytes": spent / n,
        "bytes_per_correct": spent / k if k else float("inf"),
        "round2_pct": 100 * len(used) / n,
        "round2_bytes": sum(o[3] for o in used) / max(len(used), 1),
        "round2_ms": sum(o[4] for o in used) / max(len(used), 1),
        "round1_ms": sum(
            rows[i]["rounds"][0]["timings_ms"].get("end_to_end", 0.0) for i in ids if rows[i]["rounds"]
        )
        / max(n, 1),
    }


def thresholds(rows):
    margins = sorted({r["rounds"][0]["margin"] for r in rows.values() if len(r["rounds"]) > 1})
    return [0.0] + [m + 1e-9 for m in margins]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--svg")
    args = ap.parse_args()
    cells = load(args.run)
    by = {}
    for cid, (cfg, rows) in cells.items():
        shard, cap, label, refine = describe(cfg)
        by[(shard, cap, label)] = (rows, refine)
    caps = sorted({k[1] for k in by if k[1]})
    labels = sorted({k[2] for k in by})
    curves = {}
    for cap in caps:
        print(f"\n## cap {cap} B")
        one_shot = [l for l in labels if (0, cap, l) in by and not by[(0, cap, l)][1]]
        refine = [l for l in labels if (0, cap, l) in by and by[(0, cap, l)][1]]
        ro = next((by[(s, None, l)][0] for (s, c, l) in by if c is None and s == 1), None)

        def common(shard):
            """Items answered by every cell of the shard at this cap (and receiver-only)."""
            sets = [set(rows) for (s, c, _), (rows, _) in by.items() if s == shard and c in (cap, None)]
            return set.intersection(*sets)

        ids0, ids1 = sorted(common(0)), sorted(common(1))
        # Tuning half: the best one-shot method and each refine method's threshold.
        tune = {l: summarize(by[(0, cap, l)][0], ids0, 0.0) for l in one_shot}
        best = max(one_shot, key=lambda l: (tune[l]["acc"], -tune[l]["bytes"]))
        print(f"tuning shard n={len(ids0)}: one-shot " + ", ".join(f"{l} {tune[l]['acc']:.1f}" for l in one_shot))
        print(f"best one-shot (tuning): {best}")
        report_best = by[(1, cap, best)][0]
        for l in refine:
            rows0 = by[(0, cap, l)][0]
            ts = thresholds(rows0)
            chosen = max(ts, key=lambda t: (summarize(rows0, ids0, t)["acc"], -t))
            rows1 = by[(1, cap, l)][0]
            print(f"\n{l}: threshold chosen on tuning shard {chosen:.4f} "
                  f"(tuning acc {summarize(rows0, ids0, chosen)['acc']:.1f})")
            curve = []
            for t in sorted(set(ts + thresholds(rows1) + [1e9])):
                s = summarize(rows1, ids1, t)
                curve.append((t, s["acc"], s["round2_pct"], s["bytes"]))
            curves[(cap, l)] = curve
            b = summarize(report_best, ids1, 0.0)
            print(f"report shard n={len(ids1)}; best one-shot {best}: acc {b['acc']:.1f} "
                  f"{wilson(sum(b['correct']), b['n'])}, bytes {b['bytes']:.0f}, "
                  f"bytes/correct {b['bytes_per_correct']:.0f}")
            for name, t in [("chosen", chosen), ("never (round 1 only)", 0.0), ("always", 1e9)]:
                s = summarize(rows1, ids1, t)
                d = paired_boot(s["correct"], b["correct"])
                line = (f"  {name:>22} t={t:.4f}: acc {s['acc']:.1f} "
                        f"[{wilson(sum(s['correct']), s['n'])[0]:.1f},"
                        f"{wilson(sum(s['correct']), s['n'])[1]:.1f}], "
                        f"round 2 on {s['round2_pct']:.0f}%, +{s['round2_bytes']:.0f} B and "
                        f"+{s['round2_ms']:.0f} ms when used (round 1: {s['round1_ms']:.0f} ms), "
                        f"bytes {s['bytes']:.0f}, "
                        f"bytes/correct {s['bytes_per_correct']:.0f}, "
                        f"minus best one-shot {d[0]:+.1f} [{d[1]:+.1f},{d[2]:+.1f}]")
                if ro:
                    r = summarize(ro, ids1, 0.0)
                    dr = paired_boot(s["correct"], r["correct"])
                    line += f", minus receiver-only {dr[0]:+.1f} [{dr[1]:+.1f},{dr[2]:+.1f}]"
                print(line)
    if args.svg:
        write_svg(args.svg, curves)


def write_svg(path, curves):
    """Accuracy (report shard) against the share of items using round 2, one line per cap and
    mode, as the threshold rises."""
    w, h, m = 640, 420, 56
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    accs = [a for c in curves.values() for (_, a, _, _) in c]
    lo, hi = math.floor(min(accs) / 5) * 5, math.ceil(max(accs) / 5) * 5
    hi = max(hi, lo + 5)
    x = lambda p: m + (w - 2 * m) * p / 100
    y = lambda a: h - m - (h - 2 * m) * (a - lo) / (hi - lo)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h-m}" x2="{w-m}" y2="{h-m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h-m}" stroke="black"/>',
           f'<text x="{w/2}" y="{h-16}" text-anchor="middle">items using round 2 (%), '
           f'as the margin threshold rises</text>',
           f'<text x="16" y="{h/2}" transform="rotate(-90 16 {h/2})" text-anchor="middle">'
           f'accuracy (%), report shard</text>']
    for p in range(0, 101, 20):
        out.append(f'<text x="{x(p)}" y="{h-m+16}" text-anchor="middle">{p}</text>')
    a = lo
    while a <= hi:
        out.append(f'<text x="{m-6}" y="{y(a)+4}" text-anchor="end">{a}</text>')
        a += 5
    for i, ((cap, label), curve) in enumerate(sorted(curves.items())):
        col = colors[i % len(colors)]
        pts = " ".join(f"{x(p):.1f},{y(acc):.1f}" for (_, acc, p, _) in curve)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.5"/>')
        out.append(f'<text x="{m+8}" y="{m+14*i}" fill="{col}">{cap // 1024} KiB {label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    sys.exit(main())
