#!/usr/bin/env bash
# TTFT with and without layer-wise sending (the edge's --layerwise) on shaped links, and
# how close each comes to max(compute, transfer) and to their sum.
# Usage: bench/layerwise.sh MODELS_DIR [RATES] [N]
#   MODELS_DIR: scout/, large/ and tokenizer.json (e.g. kvstream make-model
#   --preset=qwen2.5-0.5b twice, or links to one model); RATES default 10,100,1000 Mbit/s;
#   N questions per cell (default 5). Writes bench/results/layerwise.{csv,txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:?models dir}
rates=${2:-10,100,1000}
n=${3:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for lw in true false; do
  build/bin/kvstream-e2e-bench --models_dir="$models" --projection= --policies=kv-f16,kv-int4 \
    --rates="$rates" --rtts=20 --traces= --n="$n" --target_tokens=400-600 --estimate_steps=0 \
    --edge_flags=--layerwise=$lw --csv="$work/$lw.csv" >/dev/null 2>"$work/$lw.err"
done
/usr/bin/python3 bench/layerwise_summary.py "$work/true.csv" "$work/false.csv" \
  --csv bench/results/layerwise.csv | tee bench/results/layerwise.txt
