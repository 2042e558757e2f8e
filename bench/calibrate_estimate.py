"""Pools kvstream eval --estimate_steps rows into the estimate's calibration table.

Usage: /usr/bin/python3 bench/calibrate_estimate.py EVAL.json [EVAL.json ...]
For each file (a task kind) and overall: how many answers the estimate accepted and
rejected and their mean F1; then each plan's accept rate, F1 either way and mean KL."""
import json
import math
import os
import sys


def pooled(rows, key_n, key_f1):
    n = sum(r.get(key_n, 0) for r in rows)
    if n == 0:
        return 0, float("nan")
    return n, sum(r.get(key_n, 0) * r.get(key_f1, 0.0) for r in rows) / n


def main(paths):
    print("| task | plans | answers accepted | F1 when accepted | answers rejected | F1 when rejected |")
    print("|---|---|---|---|---|---|")
    everything = []
    for path in paths:
        rows = [r for r in json.load(open(path)) if "est_accepted" in r]
        everything += rows
        name = os.path.basename(path).replace("estimate_", "").replace(".json", "")
        na, fa = pooled(rows, "est_accepted", "f1_when_accepted")
        nr, fr = pooled(rows, "est_rejected", "f1_when_rejected")
        print(f"| {name} | {len(rows)} | {na} | {fa:.3f} | {nr} | {fr:.3f} |")
    na, fa = pooled(everything, "est_accepted", "f1_when_accepted")
    nr, fr = pooled(everything, "est_rejected", "f1_when_rejected")
    print(f"| all | {len(everything)} | {na} | {fa:.3f} | {nr} | {fr:.3f} |")
    print()
    print("Per plan: share accepted, F1 accepted / rejected (counts), mean KL per step")
    print()
    print("| task | selector | keep | spec | accepted | F1 accepted | F1 rejected | KL |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        name = os.path.basename(path).replace("estimate_", "").replace(".json", "")
        for r in json.load(open(path)):
            if "est_accepted" not in r:
                continue
            m = r["est_accepted"] + r["est_rejected"]
            acc = f"{r['f1_when_accepted']:.3f} ({r['est_accepted']})" if r["est_accepted"] else "-"
            rej = f"{r['f1_when_rejected']:.3f} ({r['est_rejected']})" if r["est_rejected"] else "-"
            print(f"| {name} | {r['selector']} | {r['retention']:.2f} | {r['spec']} | "
                  f"{r['est_accepted'] / m:.2f} | {acc} | {rej} | {r['est_kl']:.4f} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
