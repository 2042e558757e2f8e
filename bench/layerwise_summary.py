#!/usr/bin/env python3
"""Compares kvstream-e2e-bench runs with and without layer-wise sending.

For each link and policy: the median TTFT of both runs; compute = the edge's mean
prefill + encode; link = wire bytes at the link's rate plus one RTT; cloud = its rebuild
and first token. TTFT / (max(compute, link) + cloud) is the target's ratio (1.15 or
below), TTFT / (compute + link + cloud) the sequential bound.
Usage: layerwise_summary.py LAYERWISE.csv SEQUENTIAL.csv [--csv OUT]
"""
import argparse
import csv


def rows(path):
    with open(path, newline="") as f:
        return {(r["link"], r["policy"]): r for r in csv.DictReader(f)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("layerwise")
    p.add_argument("sequential")
    p.add_argument("--csv")
    a = p.parse_args()
    lw, seq = rows(a.layerwise), rows(a.sequential)
    out = []
    print(f"{'link':<15} {'policy':<8} {'MB':>6} {'compute':>8} {'link s':>7} {'cloud':>6} "
          f"{'TTFT seq':>9} {'TTFT lw':>8} {'lw/seq':>7} {'lw/max':>7} {'seq/sum':>8}")
    for key, r in lw.items():
        s = seq.get(key)
        if s is None:
            continue
        mbps, rtt = float(r["rate_mbps"]), float(r["rtt_ms"]) / 1e3
        wire = float(r["wire_bytes"])
        compute = float(s["edge_s"])  # the sequential run's prefill + encode, undisturbed
        link = wire * 8 / (mbps * 1e6) + rtt
        cloud = float(s["cloud_s"])
        t_lw, t_seq = float(r["ttft_median_s"]), float(s["ttft_median_s"])
        best, total = max(compute, link) + cloud, compute + link + cloud
        out.append([key[0], key[1], wire, compute, link, cloud, t_seq, t_lw, t_lw / t_seq,
                    t_lw / best, t_seq / total, r["n"]])
        print(f"{key[0]:<15} {key[1]:<8} {wire / 1e6:6.2f} {compute:8.2f} {link:7.2f} "
              f"{cloud:6.2f} {t_seq:9.2f} {t_lw:8.2f} {t_lw / t_seq:7.2f} {t_lw / best:7.2f} "
              f"{t_seq / total:8.2f}")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["link", "policy", "wire_bytes", "compute_s", "link_s", "cloud_s",
                        "ttft_sequential_s", "ttft_layerwise_s", "layerwise_over_sequential",
                        "layerwise_over_max", "sequential_over_sum", "n"])
            w.writerows(out)


if __name__ == "__main__":
    main()
