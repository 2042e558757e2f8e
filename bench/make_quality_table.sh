#!/usr/bin/env bash
# Measures a quality table for a tiny model pair (adaptive mode's expected quality per
# operating point): F1 per task kind and prompt length band, `large` answering in text
# and scout modes and from the scout's cache in projected mode (through the pair's
# PROJECTION, with the answer check, as the edge sends projected requests by default),
# the scout's own cache in kv mode (with the edge's confidence gate, KV_MIN_CONFIDENCE,
# default the pair's KV_GATE, written into every kv row as "kv_min_confidence" so the
# edge runs with the gate the table was measured under). Every row names the scout it was
# measured with ("scout", its fingerprint), which the edge checks against its own.
# Each row names its kind and the prompt lengths it was measured over ("tokens"); the
# edge prices a request by each kind's row at (or nearest) its length and keeps the
# lowest over kinds. Prompt lengths are sampled per band: needles of NEEDLE_TOKENS
# (400-600 and 900-1150) tokens, single-hop contexts of SINGLE_RECORDS (40-64 and
# 110-140) records, about 500 and 1,000 tokens.
# Usage: [N=20] [THREADS=0] [KINDS="needle single"] [MODELS=testdata/models-2k]
#        bench/make_quality_table.sh [OUT.json]
# (MODELS and its PROJECTION as bench/pair.sh sets them; default OUT: the pair's
# MIXED_TABLE, testdata/quality/tiny2k_mixed.json for the default pair,
# testdata/quality/tiny_mixed.json for testdata/models; a needle-only table such as
# tiny2k_needle512.json is KINDS=needle NEEDLE_TOKENS=512).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/pair.sh
[[ $# == 0 || -n $1 ]] || { echo "make_quality_table.sh: expected an output path, found ''" >&2; exit 2; }
OUT=${1:-${MIXED_TABLE:-}}
# kv rows as the adaptive edge answers them with its --kv_min_confidence: an answer the
# scout is unsure of comes from the large model's text answer instead. -1 (the edge's
# "the table's gate") means the pair's.
KV_MIN_CONFIDENCE=${KV_MIN_CONFIDENCE:-${KV_GATE:-}}
[[ $KV_MIN_CONFIDENCE == -1 ]] && KV_MIN_CONFIDENCE=${KV_GATE:-}
missing=()
[[ -n $OUT ]] || missing+=("an output path")
[[ -n ${PROJECTION:-} ]] || missing+=(PROJECTION)
[[ -n $KV_MIN_CONFIDENCE ]] || missing+=(KV_MIN_CONFIDENCE)
if ((${#missing[@]})); then
  list=$(printf ', %s' "${missing[@]}")
  echo "make_quality_table.sh: MODELS=$MODELS: expected ${list:2} for that pair" >&2
  exit 2
fi
/usr/bin/python3 -c 'import sys; g = float(sys.argv[1]); sys.exit(not 0 <= g <= 1)' \
  "$KV_MIN_CONFIDENCE" 2>/dev/null || {
  echo "make_quality_table.sh: KV_MIN_CONFIDENCE: expected a probability in [0, 1] or -1" \
    "(the pair's), found '$KV_MIN_CONFIDENCE'" >&2
  exit 2
}
mkdir -p "$(dirname "$OUT")" 2>/dev/null || true
[[ -w $(dirname "$OUT") && ( ! -e $OUT || -w $OUT ) ]] || {
  echo "make_quality_table.sh: cannot write $OUT" >&2
  exit 2
}
KINDS=${KINDS:-needle single}
BIN=${BUILD_DIR:-build}/bin
N=${N:-20}
THREADS=${THREADS:-0}  # libtorch threads per eval (0: every core)
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
        # As kvstream eval wrote them: the gate a kv row's answers went through (the edge
        # runs it) and the scout every row was measured with (the edge checks its own).
        for key in ("kv_min_confidence", "scout"):
            if key in r:
                out[-1][key] = r[key]
json.dump(out, open(sys.argv[-1], "w"), indent=1)
print(f"{len(out)} operating points written to {sys.argv[-1]}")
PY
