#!/usr/bin/env bash
# One table against the research: each of the research report's findings beside what
# this project measures on a tiny pair (MODELS, default testdata/models-2k), with a
# verdict per row. Every eval cell samples prompt lengths (single-hop among 56-64 records, needles of 448-576 tokens).
# Writes seed_findings.md (and the runs it is built from, seed_*) to OUT (default:
# RESULTS, bench/results for the default pair).
# Multi-hop rows use the models-2k scout (MULTI_SCOUT); the first pair's has not learned them.
# Usage: [N=60] [THREADS=0] [MULTI_SCOUT=DIR] bench/seed_findings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/pair.sh  # MODELS (default testdata/models-2k) and its RESULTS directory
BIN=${BUILD_DIR:-build}/bin
N=${N:-60}
THREADS=${THREADS:-0}
OUT=${OUT:-$RESULTS}
mkdir -p "$OUT"
SCOUT="$MODELS/scout"
single=(--kind=single --records=56-64 --n="$N" --threads="$THREADS")
needle=(--kind=needle --target_tokens=448-576 --n="$N" --threads="$THREADS")
SPECS="raw;int8;int6;int6/ch;int4;int4/ch;int3;int2;int4,L0=f16;int4+ad16"
for task in single needle; do
  if [[ $task == single ]]; then shape=("${single[@]}"); else shape=("${needle[@]}"); fi
  "$BIN"/kvstream eval --model=$SCOUT --modes=kv "${shape[@]}" --specs="$SPECS" \
    --json=$OUT/seed_${task}_plans.json > $OUT/seed_${task}_plans.txt
  "$BIN"/kvstream eval --model=$SCOUT --modes=kv "${shape[@]}" --specs="raw;int4" \
    --selectors=full,q2c,q2c-question,snapkv,h2o,random --retentions=0.25,0.5,0.75 \
    --json=$OUT/seed_${task}_select.json > $OUT/seed_${task}_select.txt
done
# Multi-hop questions on the scout that has learned them (the models-2k pair).
"$BIN"/kvstream eval --model="${MULTI_SCOUT:-testdata/models-2k/scout}" --modes=kv --kind=multi \
  --records=56-64 --n="$N" --threads="$THREADS" --specs="raw;int4" \
  --selectors=full,q2c,snapkv,h2o,random --retentions=0.25,0.5,0.75 \
  --json=$OUT/seed_multi_select.json > $OUT/seed_multi_select.txt
"$BIN"/kvstream profile --model=$SCOUT "${single[@]}" --low=int2 --base=int3 \
  --profile_json=$OUT/seed_single_profile.json > $OUT/seed_single_profile.txt
"$BIN"/kvstream compare-models --from=$SCOUT --to="$MODELS/large" --kind=single --records=56-64 \
  --n="$N" --threads="$THREADS" > $OUT/seed_compare_models.txt
/usr/bin/python3 bench/seed_findings.py $OUT > $OUT/seed_findings.md
cat $OUT/seed_findings.md
