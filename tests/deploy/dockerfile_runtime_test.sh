#!/usr/bin/env bash
# The runtime stage of deploy/Dockerfile installs the package of every shared library the
# daemons and the CLI link directly (readelf NEEDED), except those debian:12-slim has.
#   tests/deploy/dockerfile_runtime_test.sh build/bin
set -euo pipefail
bin=${1:-build/bin}
in_slim="libc6 libgcc-s1 libstdc++6"
runtime=$(sed -n '/^FROM .* AS runtime/,$p' deploy/Dockerfile)
missing=0
declare -A users  # library -> the binaries that link it
for b in kvstream-cloud kvstream-edge kvstream; do
  for lib in $(readelf -d "$bin/$b" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}'); do
    users[$lib]="${users[$lib]:-}${users[$lib]:+, }$b"
  done
done
declare -A real  # library -> its file
for lib in "${!users[@]}"; do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l && !found {print $NF; found = 1}')
  if [[ -z $path ]]; then
    echo "${users[$lib]}: $lib not found by ldconfig"
    missing=1
  else
    real[$lib]=$(realpath "$path")
  fi
done
# One dpkg query for every file (each query reads dpkg's whole database). Merged /usr:
# dpkg may know a file under /lib rather than /usr/lib, so both names are asked.
declare -A owner  # file -> package
while IFS= read -r line; do
  pkg=${line%%: *}
  file=${line#*: }
  owner[$file]=${pkg%%:*}
done < <(for f in "${real[@]}"; do echo "$f"; echo "${f#/usr}"; done | sort -u |
  xargs dpkg -S 2>/dev/null || true)
for lib in "${!real[@]}"; do
  f=${real[$lib]}
  pkg=${owner[$f]:-${owner[${f#/usr}]:-}}
  [[ -n $pkg ]] || { echo "${users[$lib]}: no package owns $f"; missing=1; continue; }
  if [[ " $in_slim " == *" $pkg "* ]]; then continue; fi
  if ! grep -qw -- "$pkg" <<<"$runtime"; then
    echo "$lib (linked by ${users[$lib]}) is in package $pkg, which the runtime stage does not install"
    missing=1
  fi
done
grep -q '^USER kvstream' <<<"$runtime" || { echo "the runtime stage runs as root"; missing=1; }
exit $missing
