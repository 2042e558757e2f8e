#!/usr/bin/env bash
# The README's main command: set-up, build, then `kvstream demo`, which starts
# kvstream-cloud (serving large and scout) and kvstream-edge (scout) as child processes
# on free loopback ports, asks generated questions through the edge's gRPC API in
# several modes, prints one table and stops both daemons with SIGTERM:
#   text                the cloud's large model prefills the whole prompt
#   kv lossless / int8  the scout's cache is sent; the cloud's copy of the scout decodes
#   kv q2c 50% + int4   the scout keeps half the context by Q2C, quantized to INT4
#   scout q2c 50%       the scout's selection is sent; large prefills with it as a mask
# Extra arguments go to `kvstream demo` (e.g. --n=40 --kind=single --records=20).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
BIN="${BUILD_DIR:-build}"/bin
"$BIN"/kvstream demo --kind=needle --target_tokens=512 --n="${DEMO_EXAMPLES:-20}" "$@"
