#!/usr/bin/env bash
# Measures the edge's scout-confidence gate (--kv_min_confidence) for one model pair.
# For each task kind and length band the scout answers from its own full cache (its
# first answer token's probability, which the gate reads, beside each answer's F1) and
# the large model answers the same questions in text (what an unsure kv request gets
# instead); bench/calibrate_confidence.py then routes every answer at each threshold and
# picks the lowest one whose routed F1 over all bands is within one answer of the best
# any threshold reaches (the fewest detours for the answers the gate can save).
# Usage: [MODELS=testdata/models-2k] [N=40] [KINDS="needle single MULTI_KIND"] [THREADS=1]
#        [NEEDLE_TOKENS="400-600 900-1150"] [SINGLE_RECORDS="40-64 110-140"]
#        bench/calibrate_confidence.sh [OUT_DIR]
# (the bands of bench/task_bands.sh, the quality tables' too)
# (default OUT_DIR: bench/results/confidence_<pair>, e.g. confidence_models-2k; the
# answers go there as CSV and the table as calibration.md). About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD_DIR:-build}/bin
source bench/pair.sh
out=${1:-bench/results/confidence_$(basename "$MODELS")}
N=${N:-40}
KINDS=${KINDS:-needle single ${MULTI_KIND:-multi}}
THREADS=${THREADS:-1}
source bench/task_bands.sh
mkdir -p "$out"
for kind in $KINDS; do
  task_bands "$kind" || exit 2
  for band in $bands; do
    common=(--kind="$kind" "$flag=$band" --n="$N" --threads="$THREADS")
    "$BIN"/kvstream eval --model="$MODELS/scout" --modes=kv --selectors=full --specs=raw \
      --estimate_steps=1 --estimate_csv="$out/scout_$kind-$band.csv" "${common[@]}" \
      >/dev/null 2>"$out/.err" || { cat "$out/.err" >&2; exit 1; }
    "$BIN"/kvstream eval --model="$MODELS/large" --modes=text \
      --answers_csv="$out/large_$kind-$band.csv" "${common[@]}" \
      >/dev/null 2>"$out/.err" || { cat "$out/.err" >&2; exit 1; }
  done
done
rm -f "$out/.err"
/usr/bin/python3 bench/calibrate_confidence.py "$out" | tee "$out/calibration.md"
