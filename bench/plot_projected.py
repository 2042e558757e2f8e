"""F1 against wire bytes per question for text, scout, kv (the scout answers) and
projected (the large model answers from the scout's cache), one panel per task.
Usage: plot_projected.py RESULTS_DIR (reads projected_<task>_{large,scout}.csv)."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TASKS = [("needle512", "needle, 448-576 tokens"), ("needle1024", "needle, 896-1152 tokens"),
         ("single72", "single-hop, 64-80 records (498-603 prompt tokens)"),
         ("single144", "single-hop, 128-160 records (960-1170 prompt tokens)")]
STYLE = {"text": ("black", "s", "text (large prefills)"), "scout": ("tab:green", "^", "scout mode (large prefills)"),
         "kv": ("tab:blue", "o", "kv (scout answers)"), "projected": ("tab:red", "D", "projected (large answers)")}


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main(out):
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, (task, title) in zip(axes.flat, TASKS):
        data = []
        for side in ("large", "scout"):
            path = os.path.join(out, f"projected_{task}_{side}.csv")
            if os.path.exists(path):
                data += rows(path)
        n = data[0]["n"] if data else "0"
        for mode, (color, marker, label) in STYLE.items():
            pts = [r for r in data if r["mode"] == mode]
            if not pts:
                continue
            ax.scatter([float(r["wire_bytes"]) for r in pts], [float(r["f1"]) for r in pts], c=color, marker=marker,
                       label=label, alpha=0.8)
            for r in pts:
                if mode in ("kv", "projected"):
                    sel = "" if r["selector"] == "full" else f" {r['selector']}"
                    ax.annotate(f"{r['spec']}{sel}", (float(r["wire_bytes"]), float(r["f1"])), fontsize=6,
                                color=color, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{title}, n={n}")
        ax.set_xlabel("wire bytes per question")
        ax.set_ylabel("F1")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Tiny models: scout (0.6M) -> large (2.8M); F1 against wire bytes")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "projected_f1_bytes.png"), dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
