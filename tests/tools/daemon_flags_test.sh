#!/usr/bin/env bash
# Both daemons refuse bad flags at start-up: exit status 1 and one line on stderr that
# names the flag, what it expects and what it found (the operator's first contact).
# Usage: daemon_flags_test.sh KVSTREAM_EDGE KVSTREAM_CLOUD (from the repository root)
set -euo pipefail
EDGE=$1
CLOUD=$2
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# refuses BINARY EXPECTED_MESSAGE ARGS...: exits 1 within 30 s, stderr has the message.
refuses() {
  local bin=$1 want=$2
  shift 2
  local rc=0
  timeout 30 "$bin" --listen=127.0.0.1:0 --metrics_address= "${extra[@]}" "$@" >/dev/null 2>"$DIR/err" || rc=$?
  [[ $rc == 1 ]] || fail "$(basename "$bin") $*: exit $rc, expected 1; stderr: $(tail -2 "$DIR/err")"
  grep -qF -- "$want" "$DIR/err" || fail "$(basename "$bin") $*: expected '$want'; found: $(tail -2 "$DIR/err")"
}

extra=()
edge=(--cloud=127.0.0.1:1 --scout=testdata/models/scout)
refuses "$EDGE" "kvstream-edge: --estimate_steps: expected 0 to 64, found 99" "${edge[@]}" --estimate_steps=99
refuses "$EDGE" "kvstream-edge: --estimate_selection_steps: expected 0 to 64, found -1" "${edge[@]}" --estimate_selection_steps=-1
refuses "$EDGE" "--chunk_bytes: expected 1024..8388608 (chunks stay under the 16 MiB message limit), found 10" \
  "${edge[@]}" --chunk_bytes=10
refuses "$EDGE" "--mode: expected kv, projected, scout, text or adaptive; found 'bogus'" "${edge[@]}" --mode=bogus
refuses "$EDGE" "--mode=adaptive needs --quality_table" "${edge[@]}" --mode=adaptive --quality_table=
refuses "$EDGE" "--quality_floor: expected a share in [0, 1]" "${edge[@]}" --quality_floor=2
refuses "$EDGE" "--kv_min_confidence: expected a probability in [0, 1] or -1 (the quality table's), found 2" \
  "${edge[@]}" --kv_min_confidence=2
refuses "$EDGE" "--kv_min_confidence: expected a probability in [0, 1] or -1 (the quality table's), found -0.5" \
  "${edge[@]}" --kv_min_confidence=-0.5
refuses "$EDGE" "--one_way_delay_ms and --uplink_mbps must be >= 0" "${edge[@]}" --uplink_mbps=-1
refuses "$EDGE" "--transfer_retries: expected 0 to 10, found 50" "${edge[@]}" --transfer_retries=50
refuses "$EDGE" "--on_transfer_failure: expected fail, retry or text, found 'x'" "${edge[@]}" --on_transfer_failure=x
refuses "$EDGE" "--log_level: expected debug, info, warning or error; found 'loud'" "${edge[@]}" --log_level=loud
refuses "$EDGE" "--scout: /nonexistent/config.json: cannot open" --cloud=127.0.0.1:1 --scout=/nonexistent
refuses "$EDGE" "--auth_tokens_file: " "${edge[@]}" --auth_tokens_file=/nonexistent
refuses "$EDGE" "default policy: " "${edge[@]}" --spec=int9
refuses "$EDGE" "--tls_reload_seconds: expected 0 (read once) to 86400 seconds, found -5" "${edge[@]}" \
  --tls_reload_seconds=-5
refuses "$EDGE" "unexpected argument 'extra'" "${edge[@]}" extra

extra=(--measure_rates=false)  # no start-up timing
refuses "$CLOUD" "kvstream-cloud: no --model given; expected at least one NAME=DIR"
refuses "$CLOUD" "--model: expected NAME=DIR, found 'bad'" --model=bad
refuses "$CLOUD" "--model: name 'a' given twice" --model=a=testdata/models/scout --model=a=testdata/models/large
refuses "$CLOUD" "--model large=/nonexistent: /nonexistent/config.json: cannot open" --model=large=/nonexistent
refuses "$CLOUD" "--projection /nonexistent: " --model=large=testdata/models/large \
  --projection=/nonexistent
refuses "$CLOUD" "--model_workers, --threads and --max_queued must be >= 0, found -1, 0 and 32" \
  --model=large=testdata/models/large --model_workers=-1
refuses "$CLOUD" "--tls_*: server TLS needs both a certificate and its key" --model=large=testdata/models/large \
  --tls_cert=/x
refuses "$CLOUD" "--tls_reload_seconds: expected 0 (read once) to 86400 seconds, found 100000" \
  --model=large=testdata/models/large --tls_reload_seconds=100000
refuses "$CLOUD" "unexpected argument 'extra'" --model=large=testdata/models/large extra
echo PASS
