#!/usr/bin/env bash
# The README's main command: set-up, build, then the main job. Until the daemons land
# (see the README's status section) the main job is the codec benchmark, which encodes a
# KV-shaped buffer under every standard spec and prints throughput as a ratio to memcpy
# and each spec's wire share.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec "${BUILD_DIR:-build}"/bin/kvstream-codec-bench --benchmark_min_time=0.2 "$@"
