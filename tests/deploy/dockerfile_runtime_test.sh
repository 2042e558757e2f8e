#!/usr/bin/env bash
# The runtime stage of deploy/Dockerfile installs the package of every shared library the
# daemons and the CLI link directly (readelf NEEDED), except those debian:12-slim has.
#   tests/deploy/dockerfile_runtime_test.sh build/bin
set -euo pipefail
bin=${1:-build/bin}
in_slim="libc6 libgcc-s1 libstdc++6"
runtime=$(sed -n '/^FROM .* AS runtime/,$p' deploy/Dockerfile)
missing=0
for b in kvstream-cloud kvstream-edge kvstream; do
  for lib in $(readelf -d "$bin/$b" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}'); do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l && !found {print $NF; found = 1}')
    [[ -n $path ]] || { echo "$b: $lib not found by ldconfig"; missing=1; continue; }
    real=$(realpath "$path")
    # Merged /usr: dpkg may know the file under /lib rather than /usr/lib.
    pkg=$({ dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true; } |
      awk -F: 'NR == 1 {print $1}')
    [[ -n $pkg ]] || { echo "$b: no package owns $real"; missing=1; continue; }
    if [[ " $in_slim " == *" $pkg "* ]]; then continue; fi
    if ! grep -qw -- "$pkg" <<<"$runtime"; then
      echo "$b needs $lib from package $pkg, which the runtime stage does not install"
      missing=1
    fi
  done
done
grep -q '^USER kvstream' <<<"$runtime" || { echo "the runtime stage runs as root"; missing=1; }
exit $missing
