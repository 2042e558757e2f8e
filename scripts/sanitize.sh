#!/usr/bin/env bash
# Builds the daemons and their e2e tests with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DKVSTREAM_SANITIZE=ON, RelWithDebInfo) into build-asan/, then runs load_e2e_test,
# daemons_e2e_test and replicas_e2e_test whole. The tests start kvstream-cloud and
# kvstream-edge from the same build directory, so the daemons run instrumented too;
# every process, tests and daemons, writes its sanitizer reports to the log directory.
# Fails when a test fails or when any report was written. See docs/sanitizers.md.
#
#   scripts/sanitize.sh [extra gtest arguments for both binaries, e.g. --gtest_repeat=2]
#
# Environment: BUILD_DIR (default build-asan), KVSTREAM_JOBS (default: number of cores),
# SANITIZE_LOG_DIR (default /tmp/kvstream-sanitize; must hold no report yet),
# LSAN_SUPPRESSIONS (a LeakSanitizer suppressions file; none by default, none needed).
# On a shared machine: `nice -n 19 env KVSTREAM_JOBS=1 scripts/sanitize.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build-asan}
LOG_DIR=${SANITIZE_LOG_DIR:-/tmp/kvstream-sanitize}
TESTS=(load_e2e_test daemons_e2e_test replicas_e2e_test)

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSTREAM_SANITIZE=ON >/dev/null
ninja -C "$BUILD_DIR" -j "${KVSTREAM_JOBS:-$(nproc)}" kvstream-cloud kvstream-edge "${TESTS[@]}"

mkdir -p "$LOG_DIR"
if compgen -G "$LOG_DIR/*san.*" >/dev/null; then
  echo "sanitize: $LOG_DIR already holds reports; move them away first" >&2
  exit 2
fi
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$LOG_DIR/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOG_DIR/ubsan"
if [[ -n ${LSAN_SUPPRESSIONS:-} ]]; then
  suppressions=$(realpath "$LSAN_SUPPRESSIONS")
  export LSAN_OPTIONS="suppressions=$suppressions"
fi

failed=0
for t in "${TESTS[@]}"; do
  start=$SECONDS
  rc=0
  "$BUILD_DIR/bin/$t" "$@" || rc=$?
  echo "sanitize: $t exited $rc after $((SECONDS - start)) s"
  ((rc == 0)) || failed=1
done

if compgen -G "$LOG_DIR/*san.*" >/dev/null; then
  echo "sanitize: reports written:" >&2
  ls -l "$LOG_DIR"/*san.* >&2
  failed=1
else
  echo "sanitize: no sanitizer report in $LOG_DIR"
fi
exit "$failed"
