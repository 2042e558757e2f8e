#!/usr/bin/env bash
# Calibrates the edge's per-request quality estimate against measured F1: kvstream eval
# runs every kv plan on a tiny scout (MODELS, default testdata/models-2k) with
# --estimate_steps and splits each plan's F1 by whether the estimate accepts it;
# bench/calibrate_estimate.py pools the rows into estimate_calibration.md in OUT
# (default: RESULTS, bench/results for the default pair; with STEPS other than 4, the
# steps' own file, estimate_calibration_STEPSsteps.md). Under a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/pair.sh  # MODELS (default testdata/models-2k) and its RESULTS directory
bin=${BUILD_DIR:-build}/bin/kvstream
out=${OUT:-$RESULTS}
mkdir -p "$out"
n=${N:-60}
steps=${STEPS:-4}
suffix=$([[ $steps == 4 ]] || echo "_${steps}steps")
common=(--model="$MODELS/scout" --modes=kv --selectors=full,q2c,snapkv
        --retentions=0.5,0.25 "--specs=raw;int8;int4;int3;int2;int1" --n="$n"
        --estimate_steps="$steps" --threads=1)
"$bin" eval "${common[@]}" --kind=needle --target_tokens=400-600 \
  --json="$out/estimate_needle$suffix.json" > "$out/estimate_needle$suffix.txt"
"$bin" eval "${common[@]}" --kind=single --records=40-64 \
  --json="$out/estimate_single$suffix.json" > "$out/estimate_single$suffix.txt"
/usr/bin/python3 bench/calibrate_estimate.py "$out/estimate_needle$suffix.json" \
  "$out/estimate_single$suffix.json" > "$out/estimate_calibration$suffix.md"
cat "$out/estimate_calibration$suffix.md"
