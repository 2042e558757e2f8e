#!/usr/bin/env bash
# Fails (exit 1) when a tracked C++ file differs from what clang-format-14 makes of it
# with the repository's .clang-format, and lists those files. Fix with:
#   git ls-files '*.cc' '*.h' | xargs clang-format-14 -i
set -euo pipefail
cd "$(dirname "$0")/.."
FORMAT=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$FORMAT" >/dev/null 2>&1; then
  echo "check-format: $FORMAT not found (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
mapfile -t files < <(git ls-files '*.cc' '*.h')
if ((${#files[@]} == 0)); then
  echo "check-format: no C++ files tracked here (run it in a git checkout)" >&2
  exit 1
fi
# One process for every file (one per file spent most of its time starting up); each
# violation is reported as "FILE:LINE:COL: error: ...".
report=$("$FORMAT" --dry-run --Werror "${files[@]}" 2>&1 >/dev/null) && status=0 || status=$?
mapfile -t bad < <(grep -o '^[^:]*:[0-9]*:[0-9]*: error' <<<"$report" | cut -d: -f1 | sort -u)
if ((status != 0 && ${#bad[@]} == 0)); then
  echo "check-format: $FORMAT failed (exit $status): $report" >&2
  exit 1
fi
if ((${#bad[@]} > 0)); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files differ from $FORMAT's output:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
