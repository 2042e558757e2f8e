#!/usr/bin/env bash
# Cross-model quality against wire bytes on a tiny pair (MODELS, default
# testdata/models-2k, and its PROJECTION, as bench/pair.sh sets them): text (large prefills),
# scout mode (large prefills the scout's selection), kv (the scout answers from its own
# cache) and projected (the large model answers from the scout's cache mapped by the
# projection), at INT8/INT4/INT2 and full, Q2C 50%
# and SnapKV 50%, on needles and single-hop recall at about 512 and 1024 tokens; each
# question draws its length from a range (a cell samples many prompt lengths).
# Writes projected_*.csv and projected_f1_bytes.png to OUT (default: RESULTS, bench/results
# for the default pair).
# Usage: [N=40] [THREADS=0] bench/projected_sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/pair.sh  # MODELS (default testdata/models-2k), its PROJECTION and RESULTS
: "${PROJECTION:?MODELS=$MODELS: expected PROJECTION, the projection file of that pair}"
BIN=${BUILD_DIR:-build}/bin
N=${N:-40}
THREADS=${THREADS:-0}
OUT=${OUT:-$RESULTS}
mkdir -p "$OUT"
common=(--selectors=full,q2c,snapkv --retentions=0.5 --specs="int8;int4;int2" --n="$N" --threads="$THREADS")
for task in needle512:448-576 needle1024:896-1152 single72:64-80 single144:128-160; do
  name=${task%%:*} range=${task##*:}
  if [[ $name == needle* ]]; then shape=(--kind=needle --target_tokens="$range"); else shape=(--kind=single --records="$range"); fi
  "$BIN"/kvstream eval --model="$MODELS/large" --scout="$MODELS/scout" --projection="$PROJECTION" \
    --modes=text,scout,projected "${shape[@]}" "${common[@]}" --csv=$OUT/projected_${name}_large.csv \
    | tee $OUT/projected_${name}_large.txt
  "$BIN"/kvstream eval --model="$MODELS/scout" --modes=kv "${shape[@]}" "${common[@]}" \
    --csv=$OUT/projected_${name}_scout.csv | tee $OUT/projected_${name}_scout.txt
done
/usr/bin/python3 bench/plot_projected.py $OUT
