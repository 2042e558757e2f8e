#!/usr/bin/env bash
# The kvstream CLI's client commands build and link without the model runtime:
#   - configured with -DKVSTREAM_BUILD_MODEL=OFF, the build's kvstream links neither
#     libtorch nor the model runtime's libraries;
#   - kvstream-client (the same sources and libraries, built beside the full CLI) has no
#     libtorch in the binary, lists the client commands and not the model ones, and a
#     client command runs (health against a closed port: exit 1, UNAVAILABLE).
# Compiling the OFF configuration again here took 2.5 minutes of the test run.
# Usage: client_only_build_test.sh SOURCE_DIR KVSTREAM_CLIENT_BINARY
set -euo pipefail
src="$1"
bin="$2"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cmake -G Ninja -S "$src" -B "$dir" -DKVSTREAM_BUILD_MODEL=OFF -DCMAKE_BUILD_TYPE=Release >"$dir/configure.log"
link=$(ninja -C "$dir" -t commands kvstream | tail -1)
[[ $link == *" -o bin/kvstream "* ]] || fail "no link of bin/kvstream in the OFF build: $link"
# libtorch, or a model runtime library (as a built archive, or as -l when the OFF build has
# no such target).
banned='torch|c10|(lib|-l)kvstream_(model|pipeline|training)(\.a)?( |$)'
if grep -Eq "$banned" <<<"$link"; then
  fail "the OFF build's kvstream links $(grep -Eo "$banned" <<<"$link" | head -1): $link"
fi
if ldd "$bin" | grep -q torch; then
  fail "kvstream-client links libtorch"
fi
commands="$("$bin" help)"
for c in ask health tokenize gen-tasks make-model; do
  grep -q "^  $c " <<<"$commands" || fail "'$c' missing from: $commands"
done
for c in eval demo train-tiny profile; do
  if grep -q "^  $c " <<<"$commands"; then fail "'$c' listed without the runtime"; fi
done
set +e
out="$("$bin" health --target=127.0.0.1:1 --health_timeout=2 2>&1)"
rc=$?
set -e
if [[ $rc -ne 1 || "$out" != *UNAVAILABLE* ]]; then
  fail "health against a closed port: rc $rc, output: $out"
fi
echo "PASS: client-only kvstream ($(du -h "$bin" | cut -f1)), no libtorch"
