#!/usr/bin/env bash
# Adaptive mode on task kinds its quality table was not measured on: the e2e benchmark
# with a needle-only table on single-hop questions and a single-hop-only table on
# needles, beside the mixed default table on both, at 10 and 100 Mbit/s (RTT 20 ms),
# with the per-request quality estimate on (ESTIMATE_STEPS, default 1, the edge's) and off;
# the mixed table also on needles and single-hop questions of about 1,000 tokens and on
# multi-hop questions (48-64 records, about 500 tokens); and the needle table on
# ~1,000-token single-hop questions with and without the edge's --kv_min_confidence gate.
# Writes heldout_*.csv, heldout_summary.md and heldout.png to OUT (default
# bench/results/heldout_models-2k for the default pair, bench/results for testdata/models).
# The pair: MODELS and its files, as bench/pair.sh sets them (PROJECTION, MIXED_TABLE,
# NEEDLE_TABLE, SINGLE_TABLE, MULTI_KIND); with another pair only the mixed-table cells
# run unless NEEDLE_TABLE and SINGLE_TABLE are given. ESTIMATE_STEPS sets the edge's
# --estimate_steps (default 1, the edge's), SELECTION_STEPS its
# --estimate_selection_steps (default 3), HISTORY its --estimate_history (default true),
# KV_MIN_CONFIDENCE its --kv_min_confidence where the gate is on (default -1, the gate
# the quality table was measured with, as the edge's). About 5 minutes on 2 cores.
# CELLS (a regular expression) runs only the cells whose names match; the summary covers
# the cells run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD_DIR:-build}/bin
N=${N:-16}
steps=${ESTIMATE_STEPS:-1}  # the edge's --estimate_steps where the estimate is on
selection_steps=${SELECTION_STEPS:-3}  # its --estimate_selection_steps (0: ESTIMATE_STEPS alone)
history=${HISTORY:-true}  # its --estimate_history
gate=${KV_MIN_CONFIDENCE:--1}  # the edge's --kv_min_confidence where the gate is on
source bench/pair.sh
out=${OUT:-$([[ $MODELS == testdata/models ]] && echo bench/results || echo "bench/results/heldout_$(basename "$MODELS")")}
for v in PROJECTION MIXED_TABLE; do
  [[ -n ${!v:-} ]] || { echo "heldout.sh: MODELS=$MODELS: expected $v for that pair" >&2; exit 2; }
done
mkdir -p "$out"
[[ -n ${NEEDLE_TABLE:-} && -n ${SINGLE_TABLE:-} ]] || CELLS=${CELLS:-^mixed-table}
multi=${MULTI_KIND:-multi}
mixed=$MIXED_TABLE
needle_table=${NEEDLE_TABLE:-}
single_table=${SINGLE_TABLE:-}
CELLS=${CELLS:-.}
if [[ -n $single_table && ! -s $single_table && single-table_needle-questions =~ $CELLS ]]; then
  KV_MIN_CONFIDENCE=-1 KINDS=single N=20 bench/make_quality_table.sh "$single_table" >/dev/null
fi
written=()
policies=text,kv-int4,kv-q2c50-int4,projected-int4,adaptive
run() {  # NAME TABLE KIND SHAPE ESTIMATE_STEPS [KV_MIN_CONFIDENCE]
  [[ $1 =~ $CELLS ]] || return 0
  written+=("$out/heldout_$1.csv")
  "$BIN"/kvstream-e2e-bench --models_dir="$MODELS" --projection="$PROJECTION" \
    --quality_table="$2" --kind="$3" "$4" --rates=10,100 --rtts=20 \
    --traces= --n="$N" --policies="$policies" --estimate_steps="$5" \
    --estimate_selection_steps="$([[ $5 == 0 ]] && echo 0 || echo "$selection_steps")" \
    --estimate_history="$history" \
    --kv_min_confidence="${6:-$gate}" --csv="$out/heldout_$1.csv" >/dev/null 2>"$out/.heldout.err" ||
    { echo "heldout.sh: cell $1 failed:" >&2; tail -5 "$out/.heldout.err" >&2; exit 1; }
  rm -f "$out/.heldout.err"
}
run needle-table_single-questions "$needle_table" single --records=16-64 "$steps"
run needle-table_single-questions_no-estimate "$needle_table" single --records=16-64 0
run single-table_needle-questions "$single_table" needle --target_tokens=400-600 "$steps"
run mixed-table_single-questions "$mixed" single --records=16-64 "$steps"
run mixed-table_needle-questions "$mixed" needle --target_tokens=400-600 "$steps"
# About 1,000 tokens (the mixed table has rows there), and multi-hop, a kind no table has.
run mixed-table_needle1024-questions "$mixed" needle --target_tokens=900-1150 "$steps"
run mixed-table_single1024-questions "$mixed" single --records=110-140 "$steps"
run mixed-table_multi-questions "$mixed" "$multi" --records=48-64 "$steps"
# The needle table (512 tokens, where the scout answers everything) on ~1,000-token
# single-hop questions, with and without the scout-confidence gate.
run needle-table_single1024-questions "$needle_table" single --records=110-140 "$steps"
run needle-table_single1024-questions_no-gate "$needle_table" single --records=110-140 "$steps" 0
/usr/bin/python3 bench/heldout.py "${written[@]}" > "$out/heldout_summary.md"
cat "$out/heldout_summary.md"
