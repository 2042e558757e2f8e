#!/usr/bin/env bash
# clang-tidy over the project's C++ sources with the repository's .clang-tidy profile,
# using the compile commands of build-tidy/ (TIDY_BUILD_DIR), which it configures without
# unity builds (a unity build lists its batch files, not the sources) and in which it
# generates the protobuf headers the sources include. Prints the findings and
# a count per check; exits 1 when there is any finding other than the function-size
# warning, which is advisory. Arguments: paths to limit it to (default: every source but
# tests and fuzz targets). About 5 minutes for the tree on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TIDY_BUILD_DIR:-build-tidy}
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSTREAM_UNITY_BUILD=OFF >/dev/null
ninja -C "$dir" kvstream_proto >/dev/null
if [[ $# -gt 0 ]]; then
  mapfile -t files < <(git ls-files -- "$@" | grep '\.cc$' | grep -v _fuzz)
else
  mapfile -t files < <(git ls-files '*.cc' | grep -v -e _fuzz -e '^tests/')
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run-clang-tidy-14 -p "$dir" -j "$(nproc)" -quiet "${files[@]}" >"$log" 2>&1 || true
findings="$( (grep -E 'warning:|error:' "$log" || true) | sed 's/\x1b\[[0-9;]*m//g' | sort -u)"
blocking=0
if [[ -n "$findings" ]]; then
  echo "$findings"
  sed -E 's/.*\[([a-z0-9.-]+)\]$/\1/' <<<"$findings" | sort | uniq -c | sort -rn
  blocking="$( (grep -v 'readability-function-size' <<<"$findings" || true) | grep -c . || true)"
fi
echo "tidy: ${#files[@]} files, ${blocking} finding(s) beyond function size"
[[ "$blocking" == 0 ]]
