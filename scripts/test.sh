#!/usr/bin/env bash
# The README's test command: set-up, build, then every ctest test (labels unit,
# integration, e2e). Extra arguments go to ctest, e.g. `scripts/test.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j 2 "$@"
