#!/usr/bin/env bash
# The kvstream CLI's client commands build and link without the model runtime
# (-DKVSTREAM_BUILD_MODEL=OFF): no libtorch in the binary, the model commands absent,
# and a client command runs (health against a closed port: exit 1, UNAVAILABLE).
set -euo pipefail
src="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cmake -G Ninja -S "$src" -B "$dir" -DKVSTREAM_BUILD_MODEL=OFF -DCMAKE_BUILD_TYPE=Release >"$dir/configure.log"
ninja -C "$dir" kvstream >"$dir/build.log"
bin="$dir/bin/kvstream"
if ldd "$bin" | grep -q torch; then
  echo "FAIL: the client-only kvstream links libtorch"; exit 1
fi
commands="$("$bin" help)"
for c in ask health tokenize gen-tasks make-model; do
  grep -q "^  $c " <<<"$commands" || { echo "FAIL: '$c' missing from: $commands"; exit 1; }
done
for c in eval demo train-tiny profile; do
  if grep -q "^  $c " <<<"$commands"; then echo "FAIL: '$c' listed without the runtime"; exit 1; fi
done
set +e
out="$("$bin" health --target=127.0.0.1:1 --health_timeout=2 2>&1)"
rc=$?
set -e
if [[ $rc -ne 1 || "$out" != *UNAVAILABLE* ]]; then
  echo "FAIL: health against a closed port: rc $rc, output: $out"; exit 1
fi
echo "PASS: client-only kvstream ($(du -h "$bin" | cut -f1)), no libtorch"
