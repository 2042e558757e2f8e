#!/usr/bin/python3
"""Summarises kvstream-e2e-bench CSV against the controller's targets:
  - per link, adaptive's median TTFT over the best fixed policy's among those whose F1
    is at least FLOOR x the best fixed F1 on that link (target: <= 1.1), what adaptive
    picked and the cost model's mean predicted TTFT;
  - per trace, SLO hit rates (target: adaptive at least every fixed policy's).
Usage: /usr/bin/python3 bench/summarize_e2e.py bench/results/e2e.csv [FLOOR=0.9]"""
import csv
import sys


def main(path, floor=0.9):
    rows = list(csv.DictReader(open(path)))
    links = list(dict.fromkeys(r["link"] for r in rows))
    print(f"| link | best fixed (F1 >= {floor:g} x best) | its median TTFT | adaptive | ratio | adaptive picked "
          "| predicted | adaptive-slo | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    met = total = 0
    for link in links:
        rs = {r["policy"]: r for r in rows if r["link"] == link}
        fixed = [r for p, r in rs.items() if not p.startswith("adaptive")]
        if not fixed:
            continue
        best_f1 = max(float(r["f1"]) for r in fixed)
        ok = [r for r in fixed if float(r["f1"]) >= floor * best_f1]
        best = min(ok, key=lambda r: float(r["ttft_median_s"]))
        b = float(best["ttft_median_s"])
        cells = [link, best["policy"], f"{b:.3f}"]
        for a in ("adaptive", "adaptive-slo"):
            if a in rs:
                t = float(rs[a]["ttft_median_s"])
                cells += [f'{t:.3f} (F1 {float(rs[a]["f1"]):.2f})', f"{t / b:.2f}"]
                if a == "adaptive":
                    worst = max(worst, t / b)
                    total += 1
                    met += t / b <= 1.1
                    pred = float(rs[a].get("predicted_ttft_s") or 0)
                    cells += [rs[a]["modes"], f"{pred:.3f}" if pred > 0 else "-"]
            else:
                cells += ["-", "-"] + (["-", "-"] if a == "adaptive" else [])
        print("| " + " | ".join(cells) + " |")
    print(f"\nworst adaptive / best-fixed median TTFT ratio: {worst:.2f}; within 1.1x at {met} of {total} links")
    traces = [l for l in links if "Mbps-" not in l]
    if traces:
        pols = list(dict.fromkeys(r["policy"] for r in rows))
        print("\n| trace | " + " | ".join(pols) + " |")
        print("|---|" + "---|" * len(pols))
        for t in traces:
            rs = {r["policy"]: r for r in rows if r["link"] == t}
            print(f"| {t} | " + " | ".join(f'{float(rs[p]["slo_hit_rate"]):.2f}' if p in rs else "-" for p in pols) + " |")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.9)
