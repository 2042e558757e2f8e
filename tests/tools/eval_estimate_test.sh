#!/usr/bin/env bash
# kvstream eval --estimate_steps on the bundled scout: the lossless plan is accepted on
# every question and answers as the full cache; INT1 is rejected on most, and the answers
# it rejected score below the ones it accepted. Usage: eval_estimate_test.sh KVSTREAM_BINARY
set -euo pipefail
BIN=$1
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" eval --model=testdata/models/scout --kind=needle --target_tokens=300-400 --modes=kv \
  "--specs=raw;int1" --n=12 --estimate_steps=3 --threads=1 --json="$DIR/out.json" \
  >"$DIR/out.txt" 2>/dev/null
grep -q "quality estimate (3 steps" "$DIR/out.txt" || fail "no estimate table: $(cat "$DIR/out.txt")"
/usr/bin/python3 - "$DIR/out.json" <<'PY' || fail "$(cat "$DIR/out.txt")"
import json, sys
rows = {r["spec"]: r for r in json.load(open(sys.argv[1]))}
raw, int1 = rows["raw"], rows["int1"]
assert raw["est_accepted"] == 12 and raw["est_rejected"] == 0, raw
assert raw["est_kl"] == 0.0, raw
assert abs(raw["f1_when_accepted"] - raw["f1"]) < 1e-9, raw
assert int1["est_rejected"] >= 6, int1
assert int1["est_kl"] > raw["est_kl"], int1
if int1["est_accepted"]:
    assert int1["f1_when_accepted"] > int1["f1_when_rejected"], int1
PY
echo "ok"
