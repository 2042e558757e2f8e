#!/usr/bin/env bash
# Installs the system packages (idempotent) and builds kvstream with CMake + Ninja into
# build/ (Release); executables land in build/bin/.
#
#   scripts/build.sh [extra cmake -D options]
#
# Environment: BUILD_DIR (default build), KVSTREAM_JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C "$BUILD_DIR" -j "${KVSTREAM_JOBS:-$(nproc)}"
