#!/usr/bin/env bash
# The profiler's picture of the research findings on a tiny scout (MODELS, default
# testdata/models-2k, as bench/pair.sh sets it; kv mode, its own cache): selectors x retentions x bits on needle-in-padding questions at about 256-2048
# tokens and on single-hop recall among 56-64 records, the per-layer diagnostic, and the
# plots. Every question draws its own length from the cell's range (+-12.5% around the
# nominal length, 56-64 records), so a cell's figure is not one RoPE phase repeated.
# Writes eval_* to OUT (default: RESULTS, bench/results for the default pair).
# Usage: [N=20] [THREADS=0] bench/eval_sweep.sh   (N questions per length; THREADS per eval, 0: every core)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/pair.sh  # MODELS (default testdata/models-2k) and its RESULTS directory
BIN=${BUILD_DIR:-build}/bin
N=${N:-20}
THREADS=${THREADS:-0}  # libtorch threads per eval (0: every core)
OUT=${OUT:-$RESULTS}
mkdir -p "$OUT"
PY=/usr/bin/python3
SPECS="f16;int8;int6;int4;int3;int2;k=int4/ch,v=int4;int4,L0=f16"
for len in 256 512 1024 2048; do
  range="$((len * 7 / 8))-$((len * 9 / 8))"
  "$BIN"/kvstream eval --model="$MODELS/scout" --modes=kv --kind=needle --target_tokens=$range --n="$N" --threads="$THREADS" \
    --selectors=full,q2c,snapkv,h2o,random --retentions=0.75,0.5,0.25 --specs="$SPECS" \
    --csv=$OUT/eval_needle${len}.csv --json=$OUT/eval_needle${len}.json | tee $OUT/eval_needle${len}.txt
done
# Single-hop recall among 56-64 alike records (~450-500 tokens): every record is a distractor.
"$BIN"/kvstream eval --model="$MODELS/scout" --modes=kv --kind=single --records=56-64 --n="$((2 * N))" \
  --threads="$THREADS" --selectors=full,q2c,snapkv,h2o,random --retentions=0.75,0.5,0.25 --specs="$SPECS" \
  --csv=$OUT/eval_single60.csv --json=$OUT/eval_single60.json | tee $OUT/eval_single60.txt
"$BIN"/kvstream profile --model="$MODELS/scout" --kind=needle --target_tokens=448-576 --n="$N" --threads="$THREADS" --low=int1 \
  --base=int2 --profile_json=$OUT/scout_profile_needle512.json | tee $OUT/scout_profile_needle512.txt
$PY bench/plot_eval.py pareto $OUT/eval_pareto_needle512.png $OUT/eval_needle512.csv
$PY bench/plot_eval.py pareto $OUT/eval_pareto_single60.png $OUT/eval_single60.csv
$PY bench/plot_eval.py length $OUT/eval_length.png 256=$OUT/eval_needle256.csv 512=$OUT/eval_needle512.csv \
  1024=$OUT/eval_needle1024.csv 2048=$OUT/eval_needle2048.csv
