#!/usr/bin/python3
"""Plots a kvstream-e2e-bench CSV of progressive sending against fixed plans and
adaptive re-planning: per link (fixed rates and traces), the SLO hit rate, F1 and median
TTFT of each policy, and a Markdown table of the same.

Usage: /usr/bin/python3 bench/plot_progressive.py bench/results/progressive.csv \
           bench/results/progressive "needles, 400-600 tokens, 10 per cell"
(writes progressive.png and progressive.md; needs Debian's python3-matplotlib)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def table(rows, links, policies):
    out = ["| link | policy | n | SLO hit rate | F1 | median TTFT (s) | p95 TTFT (s) | wire kB | tiers sent |",
           "|---|---|---|---|---|---|---|---|---|"]
    for link in links:
        for pol in policies:
            for r in rows:
                if r["link"] == link and r["policy"] == pol:
                    tiers = float(r.get("tiers_sent") or 0)
                    out.append(
                        f"| {link} | {pol} | {int(r['n']) - int(r['errors'])} | "
                        f"{float(r['slo_hit_rate']):.2f} | {float(r['f1']):.2f} | "
                        f"{float(r['ttft_median_s']):.3f} | {float(r['ttft_p95_s']):.3f} | "
                        f"{float(r['wire_bytes']) / 1000:.0f} | {f'{tiers:.1f} of 8' if tiers else ''} |")
    return "\n".join(out) + "\n"


def main(path, prefix, task):
    rows = list(csv.DictReader(open(path)))
    links = list(dict.fromkeys(r["link"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    slo = float(rows[0]["slo_s"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    width = 0.8 / len(policies)
    for i, pol in enumerate(policies):
        for ax, col in zip(axes, ["slo_hit_rate", "f1", "ttft_median_s"]):
            xs, ys = [], []
            for j, link in enumerate(links):
                for r in rows:
                    if r["link"] == link and r["policy"] == pol:
                        xs.append(j + (i - len(policies) / 2 + 0.5) * width)
                        ys.append(float(r[col]))
            ax.bar(xs, ys, width, label=pol)
    titles = [f"SLO hit rate (TTFT <= {slo:g} s)", "F1", "median TTFT (s)"]
    for ax, title in zip(axes, titles):
        ax.set_xticks(range(len(links)))
        ax.set_xticklabels([link.replace("bench/traces/", "").replace(".txt", "") for link in links],
                           rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    axes[2].set_yscale("log")
    axes[2].axhline(slo, color="k", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Progressive sending vs fixed plans and adaptive (tiny models; {task})")
    fig.tight_layout()
    fig.savefig(prefix + ".png", dpi=110)
    with open(prefix + ".md", "w") as f:
        f.write(table(rows, links, policies))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "task not named")
