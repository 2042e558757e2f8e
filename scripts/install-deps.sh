#!/usr/bin/env bash
# Installs every system package kvstream needs on Debian 12. Idempotent: packages
# already present are skipped by apt, and `apt-get update` runs only when something
# is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang clang-format-14 lld libclang-rt-14-dev
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libssl-dev
  libabsl-dev libzstd-dev prometheus-cpp-dev libcivetweb-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libpcre2-dev libre2-dev libutf8proc-dev
  wamerican prometheus docker-compose python3-matplotlib nginx-light
  python3-grpcio python3-protobuf python3-yaml
)
# Node.js runs the reference tokenizer in the parity test. A machine may already carry a
# Node.js build that bundles npm (which conflicts with Debian's npm package): only ask
# Debian for them when the commands are absent.
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(nodejs npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
