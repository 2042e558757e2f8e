#!/usr/bin/env bash
# The README's main command: set-up, build, then the demo table on the bundled tiny
# models. Until the edge and cloud daemons land (see the README's status section) the
# table is computed in process by `kvstream eval`, which runs the same pipeline the
# daemons will (prefill, selection, chunk encode/decode, cache rebuild, generation):
#   text      the large model prefills the whole prompt
#   kv        the scout's cache is sent (lossless, INT8, Q2C 50% + INT4) and decoded
#   scout     the scout's Q2C selection is sent; the large model prefills with it
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
BIN="${BUILD_DIR:-build}"/bin
N=${DEMO_EXAMPLES:-20}
echo "== text and scout modes: large answers (scout selects in scout mode)"
"$BIN"/kvstream eval --model=testdata/models/large --scout=testdata/models/scout --modes=text,scout \
  --selectors=q2c --retentions=0.5 --n="$N" "$@"
echo
echo "== kv mode: the scout's own cache, sent and decoded (same model both ends)"
"$BIN"/kvstream eval --model=testdata/models/scout --modes=kv --selectors=full,q2c --retentions=0.5 \
  --specs="raw;int8;int4" --n="$N" "$@"
