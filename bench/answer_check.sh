#!/usr/bin/env bash
# Projected mode with and without the cloud's answer check (Commit.check): kvstream eval
# on a tiny pair (MODELS, default testdata/models-2k, scout -> large through its
# PROJECTION, as bench/pair.sh sets them), single-hop questions (40-64 records) and
# needles (400-600 tokens), N questions each, with the projection alone and with the
# check; text mode beside them. Writes answer_check_{single,needle}_{off,on}.{txt,json}
# and answer_check.md to OUT (default: RESULTS, bench/results for the default pair).
# About 1 minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/pair.sh  # MODELS (default testdata/models-2k), its PROJECTION and RESULTS
: "${PROJECTION:?MODELS=$MODELS: expected PROJECTION, the projection file of that pair}"
BIN=${BUILD_DIR:-build}/bin
out=${OUT:-$RESULTS}
mkdir -p "$out"
n=${N:-60}
common=(--model="$MODELS/large" --scout="$MODELS/scout"
        --projection="$PROJECTION" --modes=text,projected
        --selectors=full,q2c --retentions=0.5 "--specs=int8;int4;int2" --n="$n" --threads=1)
for task in single:--records=40-64 needle:--target_tokens=400-600; do
  kind=${task%%:*} shape=${task#*:}
  for check in off on; do
    "$BIN"/kvstream eval "${common[@]}" --kind="$kind" "$shape" \
      --answer_check=$([[ $check == on ]] && echo true || echo false) \
      --json="$out/answer_check_${kind}_${check}.json" > "$out/answer_check_${kind}_${check}.txt"
  done
done
/usr/bin/python3 - "$out" "$n" "$MODELS" > "$out/answer_check.md" <<'PY'
import json, sys
out, n, models = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"Projected mode with and without the answer check: {models} scout -> large, {n} questions")
print("per task (single: 40-64 records; needle: 400-600 tokens), F1 with its 95% interval.\n")
print("| task | selector | keep | spec | F1 projection alone | F1 with the check | answered from the prompt | cloud ms alone | cloud ms with |")
print("|---|---|---|---|---|---|---|---|---|")
for kind in ("single", "needle"):
    off = json.load(open(f"{out}/answer_check_{kind}_off.json"))
    on = json.load(open(f"{out}/answer_check_{kind}_on.json"))
    for a, b in zip(off, on):
        if a["mode"] == "text":
            print(f"| {kind} | text | 1.00 | - | {a['f1']:.3f} +- {a['f1_ci95']:.3f} | - | - | {a['cloud_ms']:.1f} | - |")
            continue
        print(f"| {kind} | {a['selector']} | {a['retention']:.2f} | {a['spec']} | "
              f"{a['f1']:.3f} +- {a['f1_ci95']:.3f} | {b['f1']:.3f} +- {b['f1_ci95']:.3f} | "
              f"{b['answered_from_prompt']:.3f} | {a['cloud_ms']:.1f} | {b['cloud_ms']:.1f} |")
PY
cat "$out/answer_check.md"
