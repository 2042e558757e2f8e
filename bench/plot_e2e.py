#!/usr/bin/python3
"""Plots kvstream-e2e-bench CSV: median TTFT against uplink rate, one line per policy and
one panel per RTT; and, for the trace runs, the SLO hit rate per policy.

Usage: /usr/bin/python3 bench/plot_e2e.py bench/results/e2e.csv bench/results/e2e
(writes e2e_ttft.png and e2e_traces.png; needs Debian's python3-matplotlib)."""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path, prefix):
    rows = list(csv.DictReader(open(path)))
    grid = [r for r in rows if r["link"].endswith("ms") and "Mbps" in r["link"]]
    traces = [r for r in rows if r not in grid]
    emulated = any(r.get("emulated") == "1" for r in rows)
    rtts = sorted({float(r["rtt_ms"]) for r in grid})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    if grid:
        fig, axes = plt.subplots(1, len(rtts), figsize=(5.2 * len(rtts), 4.4), sharey=True, squeeze=False)
        for ax, rtt in zip(axes[0], rtts):
            for pol in policies:
                pts = sorted((float(r["rate_mbps"]), float(r["ttft_median_s"]))
                             for r in grid if r["policy"] == pol and float(r["rtt_ms"]) == rtt)
                if pts:
                    style = "-o" if not pol.startswith("adaptive") else "--s"
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=pol, markersize=3)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("uplink Mbit/s")
            ax.set_title(f"RTT {rtt:g} ms")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("median TTFT (s)")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle("kvstream TTFT vs bandwidth (tiny models)" + (" [emulated cloud rates]" if emulated else ""))
        fig.tight_layout()
        fig.savefig(prefix + "_ttft.png", dpi=110)
    if traces:
        names = list(dict.fromkeys(r["link"] for r in traces))
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(1, len(policies))
        for i, pol in enumerate(policies):
            vals = [next((float(r["slo_hit_rate"]) for r in traces if r["link"] == n and r["policy"] == pol), 0)
                    for n in names]
            ax.bar([j + i * width for j in range(len(names))], vals, width, label=pol)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels(names)
        slo = traces[0]["slo_s"]
        ax.set_ylabel(f"share of requests with TTFT <= {slo} s")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7, ncol=3)
        ax.set_title("SLO hit rate on bandwidth traces" + (" [emulated]" if emulated else ""))
        fig.tight_layout()
        fig.savefig(prefix + "_traces.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "e2e")
