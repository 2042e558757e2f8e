#!/usr/bin/python3
"""Plots `kvstream eval` CSVs.

  plot_eval.py pareto OUT.png RUN.csv            quality (F1) against bandwidth share, one
                                                 marker per selector x plan, with the
                                                 Pareto frontier (best F1 at or below each
                                                 bandwidth)
  plot_eval.py length OUT.png LEN=RUN.csv ...    F1 against context length: full cache at
                                                 each plan, and each selector at 50% + INT4

Needs Debian's python3-matplotlib (run with /usr/bin/python3)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(r):
    if r["mode"] != "kv":
        return f'{r["mode"]} {r["selector"]}@{float(r["retention"]):.2f}' if r["selector"] != "full" else r["mode"]
    sel = r["selector"] if r["selector"] == "full" else f'{r["selector"]}@{float(r["retention"]):.2f}'
    return f'kv {sel} {r["spec"]}'


def pareto(out, path):
    rows = [r for r in csv.DictReader(open(path)) if r["mode"] == "kv"]
    fig, ax = plt.subplots(figsize=(8, 5))
    selectors = list(dict.fromkeys(r["selector"] for r in rows))
    specs = list(dict.fromkeys(r["spec"] for r in rows))
    markers = "os^vD<>ph*"
    for r in rows:
        ax.scatter(float(r["bandwidth_share"]), float(r["f1"]),
                   color=f"C{selectors.index(r['selector']) % 10}", marker=markers[specs.index(r["spec"]) % 10], s=30)
    pts = sorted(((float(r["bandwidth_share"]), float(r["f1"])) for r in rows), key=lambda p: (p[0], -p[1]))
    front, best = [], -1.0
    for b, f in pts:
        if f > best:
            front.append((b, f))
            best = f
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k", lw=1, label="Pareto frontier")
    for i, s in enumerate(selectors):
        ax.scatter([], [], color=f"C{i % 10}", marker="o", label=f"selector {s}")
    for i, s in enumerate(specs):
        ax.scatter([], [], color="gray", marker=markers[i % 10], label=f"plan {s}")
    ax.set_xscale("log")
    ax.set_xlabel("bandwidth share (wire bytes / full cache at 16 bits)")
    ax.set_ylabel("F1")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Quality against bandwidth")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def length(out, specs):
    series = {}
    for s in specs:
        n, path = s.split("=", 1)
        for r in csv.DictReader(open(path)):
            keep = r["selector"] == "full" or (abs(float(r["retention"]) - 0.5) < 1e-9 and r["spec"] == "int4")
            if keep:
                series.setdefault(label(r), []).append((int(n), float(r["f1"])))
    fig, ax = plt.subplots(figsize=(9, 5))
    # Full-cache plans solid, selectors dashed, each group with its own colours (the
    # default cycle has 10 and would repeat across the groups).
    full = [n for n in series if n.startswith("kv full")]
    rest = [n for n in series if n not in full]
    for group, style, cmap in ((full, "-o", plt.get_cmap("tab10")), (rest, "--s", plt.get_cmap("Dark2"))):
        for i, name in enumerate(group):
            pts = sorted(series[name])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name, markersize=3,
                    color=cmap(i % cmap.N))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("F1")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Quality against context length")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in ("pareto", "length"):
        print(__doc__)
        sys.exit(2)
    (pareto if sys.argv[1] == "pareto" else length)(sys.argv[2], *([sys.argv[3]] if sys.argv[1] == "pareto" else [sys.argv[3:]]))
