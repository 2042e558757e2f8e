#!/usr/bin/env bash
# Measures the default quality table for the tiny models (adaptive mode's expected
# quality per operating point): F1 on generated needle-in-padding questions at 512
# tokens, `large` answering in text and scout modes and from the scout's cache in projected
# mode (testdata/projections/scout_to_large.safetensors), the scout's own cache in kv mode.
# Usage: [N=20] [THREADS=0] bench/make_quality_table.sh [OUT.json] (default testdata/quality/tiny_needle512.json)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-testdata/quality/tiny_needle512.json}
BIN=${BUILD_DIR:-build}/bin
N=${N:-20}
THREADS=${THREADS:-0}  # libtorch threads per eval (0: every core)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
common=(--kind=needle --target_tokens=512 --n="$N" --threads="$THREADS")
"$BIN"/kvstream eval --model=testdata/models/large --scout=testdata/models/scout --modes=text,scout \
  --selectors=q2c,snapkv --retentions=0.5 "${common[@]}" --json="$TMP/large.json" >/dev/null
"$BIN"/kvstream eval --model=testdata/models/large --scout=testdata/models/scout --modes=projected \
  --projection=testdata/projections/scout_to_large.safetensors --selectors=full,q2c,snapkv --retentions=0.5 \
  --specs="int8;int4;int2" "${common[@]}" --json="$TMP/projected.json" >/dev/null
"$BIN"/kvstream eval --model=testdata/models/scout --modes=kv --selectors=full,q2c,snapkv --retentions=0.5,0.25 \
  --specs="raw;int8;int4;int2" "${common[@]}" --json="$TMP/kv.json" >/dev/null
/usr/bin/python3 - "$TMP/large.json" "$TMP/kv.json" "$TMP/projected.json" "$OUT" <<'PY'
import json, sys
rows = [r for path in sys.argv[1:-1] for r in json.load(open(path))]
out = [{"mode": r["mode"], "selector": r["selector"], "retention": r["retention"],
        "spec": r["spec"] if r["mode"] in ("kv", "projected") else "", "quality": round(r["f1"], 4), "n": r["n"]}
       for r in rows]
json.dump(out, open(sys.argv[-1], "w"), indent=1)
print(f"{len(out)} operating points written to {sys.argv[-1]}")
PY
