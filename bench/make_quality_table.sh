#!/usr/bin/env bash
# Measures a quality table for the tiny models (adaptive mode's expected quality per
# operating point): F1 per task kind and prompt length band, `large` answering in text
# and scout modes and from the scout's cache in projected mode
# (testdata/projections/scout_to_large.safetensors; with the answer check, as the edge
# sends projected requests by default), the scout's own cache in kv mode (with the
# edge's confidence gate, KV_MIN_CONFIDENCE).
# Each row names its kind and the prompt lengths it was measured over ("tokens"); the
# edge prices a request by each kind's row at (or nearest) its length and keeps the
# lowest over kinds. Prompt lengths are sampled per band: needles of NEEDLE_TOKENS
# (400-600 and 900-1150) tokens, single-hop contexts of SINGLE_RECORDS (40-64 and
# 110-140) records, about 500 and 1,000 tokens.
# Usage: [N=20] [THREADS=0] [KINDS="needle single"] [MODELS=testdata/models]
#        [PROJECTION=testdata/projections/scout_to_large.safetensors]
#        bench/make_quality_table.sh [OUT.json]
# (default testdata/quality/tiny_mixed.json; the older needle-only table,
# testdata/quality/tiny_needle512.json, is KINDS=needle NEEDLE_TOKENS=512; MODELS is a
# directory with scout/ and large/, e.g. testdata/models-2k with its projection).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-testdata/models}
if [[ -z ${1:-} && $MODELS != testdata/models ]]; then
  echo "make_quality_table.sh: MODELS=$MODELS: expected an output path (the default," \
    "testdata/quality/tiny_mixed.json, is the table of testdata/models)" >&2
  exit 2
fi
OUT=${1:-testdata/quality/tiny_mixed.json}
KINDS=${KINDS:-needle single}
BIN=${BUILD_DIR:-build}/bin
N=${N:-20}
PROJECTION=${PROJECTION:-testdata/projections/scout_to_large.safetensors}
THREADS=${THREADS:-0}  # libtorch threads per eval (0: every core)
# kv rows as the adaptive edge answers them with its --kv_min_confidence (default 0.5):
# an answer the scout is unsure of comes from the large model's text answer instead.
KV_MIN_CONFIDENCE=${KV_MIN_CONFIDENCE:-0.5}
source bench/task_bands.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for kind in $KINDS; do
  task_bands "$kind" || exit 1
  for band in $bands; do
    common=(--kind="$kind" "$flag=$band" --n="$N" --threads="$THREADS")
    name="$kind-$band"
    "$BIN"/kvstream eval --model="$MODELS/large" --scout="$MODELS/scout" --modes=text,scout \
      --selectors=q2c,snapkv --retentions=0.5 "${common[@]}" --json="$TMP/$name.large.json" >/dev/null
    "$BIN"/kvstream eval --model="$MODELS/large" --scout="$MODELS/scout" --modes=projected \
      --projection="$PROJECTION" --selectors=full,q2c,snapkv \
      --retentions=0.5 --specs="int8;int4;int2" --answer_check "${common[@]}" \
      --json="$TMP/$name.projected.json" >/dev/null
    "$BIN"/kvstream eval --model="$MODELS/scout" --modes=kv --selectors=full,q2c,snapkv \
      --retentions=0.5,0.25 --specs="raw;int8;int4;int2" --kv_min_confidence="$KV_MIN_CONFIDENCE" \
      --fallback_model="$MODELS/large" \
      "${common[@]}" --json="$TMP/$name.kv.json" >/dev/null
  done
done
/usr/bin/python3 - "$TMP"/*.json "$OUT" <<'PY'
import json, os, sys
out = []
for path in sys.argv[1:-1]:
    kind = os.path.basename(path).split(".")[0].split("-")[0]
    for r in json.load(open(path)):
        out.append({"kind": kind, "mode": r["mode"], "selector": r["selector"],
                    "retention": r["retention"],
                    "spec": r["spec"] if r["mode"] in ("kv", "projected") else "",
                    "quality": round(r["f1"], 4), "n": r["n"], "tokens": r["tokens"]})
        if r["mode"] in ("kv", "projected"):
            out[-1]["answered_from_prompt"] = round(r["answered_from_prompt"], 4)
json.dump(out, open(sys.argv[-1], "w"), indent=1)
print(f"{len(out)} operating points written to {sys.argv[-1]}")
PY
