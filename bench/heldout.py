"""Summarises bench/heldout.sh: per run and link, adaptive's F1 and median TTFT against
the fixed policies (target: F1 >= 0.9 x the best fixed F1, and TTFT <= 1.1 x the fastest
fixed policy that reaches that F1), and draws heldout.png beside the CSVs.

Usage: /usr/bin/python3 bench/heldout.py bench/results/heldout_*.csv"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def summarise(path):
    rows = list(csv.DictReader(open(path)))
    name = os.path.basename(path)[len("heldout_"):-len(".csv")]
    out = []
    for link in dict.fromkeys(r["link"] for r in rows):
        cell = [r for r in rows if r["link"] == link]
        fixed = [r for r in cell if not r["policy"].startswith("adaptive")]
        ad = next(r for r in cell if r["policy"] == "adaptive")
        best_f1 = max(float(r["f1"]) for r in fixed)
        f1_ad = float(ad["f1"])
        ok_f1 = [r for r in fixed if float(r["f1"]) >= min(f1_ad, 0.9 * best_f1)]
        fastest = min(ok_f1, key=lambda r: float(r["ttft_median_s"])) if ok_f1 else None
        ratio = float(ad["ttft_median_s"]) / float(fastest["ttft_median_s"]) if fastest else 0
        out.append((name, link, best_f1, f1_ad, fastest, ratio, ad))
    return out


def main(paths):
    print("| run | link | best fixed F1 | adaptive F1 | fastest fixed at that F1 | its TTFT | "
          "adaptive TTFT | ratio | F1 target | TTFT target | adaptive picked |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = [s for p in sorted(paths) for s in summarise(p)]
    for name, link, best, f1, fastest, ratio, ad in results:
        print(f"| {name} | {link} | {best:.3f} | {f1:.3f} | {fastest['policy'] if fastest else '-'} | "
              f"{float(fastest['ttft_median_s']) if fastest else 0:.3f} | "
              f"{float(ad['ttft_median_s']):.3f} | {ratio:.2f} | "
              f"{'met' if f1 >= 0.9 * best else 'missed'} | {'met' if ratio <= 1.1 else 'missed'} | "
              f"{ad['modes']} |")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [f"{n}\n{l}" for n, l, *_ in results]
    ax.bar(range(len(results)), [r[3] for r in results], color="tab:blue", label="adaptive F1")
    ax.plot(range(len(results)), [r[2] for r in results], "k_", markersize=18,
            label="best fixed F1")
    ax2 = ax.twinx()
    ax2.plot(range(len(results)), [r[5] for r in results], "ro", label="TTFT / fastest fixed")
    ax2.axhline(1.1, color="r", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("F1")
    ax2.set_ylabel("adaptive TTFT / fastest fixed at its F1")
    ax.set_ylim(0, 1.1)
    ax.set_title("Adaptive on held-out task kinds (tiny scout/large, 16 questions per cell, RTT 20 ms)")
    fig.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(os.path.dirname(paths[0]), "heldout.png"), dpi=120)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
