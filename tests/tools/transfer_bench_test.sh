#!/usr/bin/env bash
# kvstream-transfer-bench end to end at toy scale: every session to the sink and to a real
# kvstream-cloud (bf16 cache, so int chunks take the direct decoding path) completes, the
# CSV has one row per plan x chunk size with every repetition, compressed plans put fewer
# bytes on the wire, and the cloud reports the time it spent writing each cache; both
# clouds get --cloud_args, and the second (--compare_cloud_args: one that copies payloads
# out of gRPC's buffers) is compared with the first cell by cell; a second run compares a
# sender that copies payloads into each message with one that hands them over
# (--compare_zero_copy_send), and the two comparisons together are refused.
# Usage: transfer_bench_test.sh KVSTREAM_TRANSFER_BENCH_BINARY
set -euo pipefail
BIN=$1
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" --model=testdata/models-2k/large --tokens=150-250 --reps=3 --chunk_kib=4,64 \
  "--plans=raw;int8;int4,zstd=1" --csv="$DIR/cells.csv" --work_dir="$DIR" \
  --cloud_args=--log_level=debug --compare_cloud_args=--zero_copy_uplink=false \
  >"$DIR/out.txt" 2>"$DIR/err.txt" || fail "exit $?: $(cat "$DIR/err.txt")"
grep -q "interquartile range" "$DIR/out.txt" || fail "no table: $(cat "$DIR/out.txt")"
compared=$(sed -n '/--compare_cloud_args=--zero_copy_uplink=false over/,$p' "$DIR/out.txt" |
  grep -c "KiB: .* the transfer" || true)
[ "$compared" = 6 ] || fail "expected 6 compared cells, found $compared: $(cat "$DIR/out.txt")"
for log in cloud other; do  # --log_level=debug reached both clouds: sessions are logged
  grep -q "session bench-.* open" "$DIR/$log.log" || fail "$log.log: $(tail -5 "$DIR/$log.log")"
done
/usr/bin/python3 - "$DIR/cells.csv" <<'PY' || fail "$(cat "$DIR/out.txt")"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 6, rows
cells = {(r["plan"], int(r["chunk_kib"])): r for r in rows}
for kib in (4, 64):
    raw, int8, int4 = (float(cells[(p, kib)]["wire_bytes"]) for p in ("raw", "int8", "int4,zstd=1"))
    assert int4 < int8 < raw, (kib, raw, int8, int4)
for r in rows:
    assert int(r["reps"]) == 3, r
    assert float(r["cloud_rebuild_s"]) > 0 and float(r["cloud_transfer_s"]) > 0, r
    assert float(r["ratio"]) > 0 and float(r["sink_transfer_s"]) > 0, r
    assert float(r["compare_transfer_s"]) > 0 and float(r["compare_ratio"]) > 0, r
PY
"$BIN" --model=testdata/models-2k/large --tokens=150-250 --reps=2 --chunk_kib=64 \
  "--plans=raw;int4" --work_dir="$DIR/send" --compare_zero_copy_send \
  >"$DIR/send.txt" 2>"$DIR/send_err.txt" || fail "exit $?: $(cat "$DIR/send_err.txt")"
compared=$(sed -n '/--zero_copy_send=false over the one with true/,$p' "$DIR/send.txt" |
  grep -c "KiB: .* the transfer" || true)
[ "$compared" = 2 ] || fail "expected 2 compared senders, found $compared: $(cat "$DIR/send.txt")"
if "$BIN" --model=testdata/models-2k/large --compare_zero_copy_send \
  --compare_cloud_args=--zero_copy_uplink=false >/dev/null 2>"$DIR/both.txt"; then
  fail "both comparisons were accepted"
fi
grep -q "expected one of the two, found both" "$DIR/both.txt" || fail "$(cat "$DIR/both.txt")"
echo "ok"
