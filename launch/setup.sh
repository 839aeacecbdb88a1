#!/usr/bin/env bash
# Installs the Debian packages lcl needs (idempotent: only missing ones are installed) and builds it.
#   launch/setup.sh [--no-build] [--build-dir DIR]
# Environment: LCL_BUILD_TYPE (default RelWithDebInfo), LCL_CMAKE_ARGS (extra cmake arguments).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${LCL_BUILD_DIR:-$here/build}
do_build=1
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) do_build=0 ;;
    --build-dir) build_dir=$2; shift ;;
    *) echo "setup.sh: unknown argument '$1' (use --no-build, --build-dir DIR)" >&2; exit 2 ;;
  esac
  shift
done

# libopenblas0-pthread: without it LibTorch falls back to the reference BLAS (~20x slower matmul).
packages=(
  build-essential cmake ninja-build ccache git pkg-config python3 clang-format
  libtorch-dev libopenblas0-pthread python3-torch python3-pil
  libopenmpi-dev openmpi-bin
  libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgtest-dev libgmock-dev
  libcli11-dev nlohmann-json3-dev libxxhash-dev
  libopencv-dev libsentencepiece-dev sentencepiece
  munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins  # tests/slurm's one-node cluster; srun --mpi=pmix
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#packages[@]} Debian packages present"
fi

if [ "$do_build" -eq 1 ]; then
  # shellcheck disable=SC2086
  cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${LCL_BUILD_TYPE:-RelWithDebInfo}" \
    ${LCL_CMAKE_ARGS:-} >/dev/null
  # 2 jobs: LibTorch translation units take ~1.5 GB of memory each.
  cmake --build "$build_dir" -j "${LCL_BUILD_JOBS:-$(nproc)}"
  echo "setup: built $build_dir/launch/lcl"
fi
