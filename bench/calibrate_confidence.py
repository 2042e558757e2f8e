"""Chooses the scout-confidence gate (--kv_min_confidence) for one model pair.

Usage: /usr/bin/python3 bench/calibrate_confidence.py DIR
DIR holds, per task kind and length band, scout_<band>.csv (kvstream eval --estimate_csv:
the scout's own full-cache answers, with its probability of the first answer token) and
large_<band>.csv (kvstream eval --answers_csv: the large model's text answers to the
same questions, in the same order). At a threshold t a question is answered by the scout
when its confidence is at least t and by the large model otherwise. The gate chosen is
the lowest t whose routed F1, over every band (each weighing the same), is within one
answer of the best any threshold reaches: the answers the gate can save, with no more
requests detouring to the large model than that needs. Prints a markdown table and,
last, `kv_min_confidence: T`."""
import csv
import glob
import os
import statistics
import sys

THRESHOLDS = [round(0.05 * i, 2) for i in range(19)]  # 0.00 .. 0.90
SHOWN = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7]


def load(directory):
    bands = {}
    for path in sorted(glob.glob(os.path.join(directory, "scout_*.csv"))):
        band = os.path.basename(path)[len("scout_"):-len(".csv")]
        scout = list(csv.DictReader(open(path)))
        large = list(csv.DictReader(open(os.path.join(directory, f"large_{band}.csv"))))
        if len(scout) != len(large):
            sys.exit(f"{band}: {len(scout)} scout answers but {len(large)} large ones")
        bands[band] = [(float(s["confidence"]), float(s["f1"]), float(l["f1"]))
                       for s, l in zip(scout, large)]
    if not bands:
        sys.exit(f"no scout_*.csv in {directory}")
    return bands


def routed(rows, t):
    return sum(s if c >= t else l for c, s, l in rows) / len(rows)


def detoured(rows, t):
    return sum(c < t for c, _, _ in rows) / len(rows)


def pooled(bands, t):
    return sum(routed(rows, t) for rows in bands.values()) / len(bands)


def choose(bands):
    best = max(pooled(bands, t) for t in THRESHOLDS)
    one_answer = 1.0 / sum(len(rows) for rows in bands.values())
    return next(t for t in THRESHOLDS if pooled(bands, t) >= best - one_answer - 1e-9)


def main(directory):
    bands = load(directory)
    gate = choose(bands)
    shown = sorted(set(SHOWN + [gate]))
    print("| band | n | scout F1 | large F1 | scout's confidence when right: min / median | "
          + " | ".join(f"routed F1 at {t:.2f}" for t in shown) + f" | detoured at {gate:.2f} |")
    print("|" + "---|" * (6 + len(shown)))
    for band, rows in bands.items():
        right = [c for c, s, _ in rows if s >= 1.0]
        conf = f"{min(right):.3f} / {statistics.median(right):.3f}" if right else "-"
        scout = sum(s for _, s, _ in rows) / len(rows)
        large = sum(l for _, _, l in rows) / len(rows)
        cells = " | ".join(f"{routed(rows, t):.3f}" for t in shown)
        print(f"| {band} | {len(rows)} | {scout:.3f} | {large:.3f} | {conf} | {cells} | "
              f"{detoured(rows, gate):.2f} |")
    n = sum(len(rows) for rows in bands.values())
    cells = " | ".join(f"{pooled(bands, t):.3f}" for t in shown)
    share = sum(detoured(rows, gate) for rows in bands.values()) / len(bands)
    print(f"| all (bands weigh the same) | {n} | | | | {cells} | {share:.2f} |")
    print()
    print(f"kv_min_confidence: {gate:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
