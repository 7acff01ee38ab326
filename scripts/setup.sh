#!/usr/bin/env bash
# Installs dshost's dependencies from Debian 12 packages, then configures and builds into
# build/. Run from anywhere, as root or with sudo available.
# libopenblas0-openmp replaces Debian's reference BLAS under LibTorch (about 2x faster CPU
# training); its OpenMP threads follow LibTorch's per-rank thread count. python3-torchvision
# makes the fixtures the model zoo is checked against; python3-protobuf is the independent
# reader the TensorBoard event files are checked with. openssh, Slurm, munge and iproute2 are
# the real servers the ssh and slurm launchers are tested against (tests/cluster/).
# clang-format (14) is what the format test checks the tree with.
#   scripts/setup.sh           build + tests
#   scripts/setup.sh --bench   also python3-torch, the peer that bench/ compares against, and
#                              dict-gcide, the text bench/gpu/run.sh fp8-learning trains on
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config clang-format
  libtorch-dev libgloo-dev libtomlplusplus-dev libspdlog-dev libboost-dev libcli11-dev
  nlohmann-json3-dev libdlpack-dev zlib1g-dev libstb-dev libjpeg62-turbo-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist fortunes python3-torchvision python3-protobuf python3-pil
  libopenblas0-openmp
  openssh-client openssh-server slurmctld slurmd slurm-client munge iproute2
)
[ "${1:-}" = "--bench" ] && packages+=(python3-torch dict-gcide)  # (torch also pulled in by python3-torchvision)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
echo "setup: built build/dshost and its plugins in build/plugins"
