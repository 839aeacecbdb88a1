#!/usr/bin/env bash
# Installs the Debian packages lcl needs, makes the Python virtual environment .venv/ from launch/requirements.txt
# (its torch wheel is also the LibTorch the build uses), and builds lcl. Idempotent: only missing packages are
# installed, and .venv is left alone while it holds what requirements.txt asks for (a stamp file keeps its hash).
#   launch/setup.sh [--no-build] [--build-dir DIR]
# Environment:
#   LCL_LIBTORCH_DIR  build against this LibTorch 2.x instead of the wheel's (say the official CUDA zip, unpacked:
#                     the directory holding lib/ and share/cmake/Torch). .venv is still made for the tests' Python.
#   LCL_CUDA_ROOT     the CUDA toolkit (default /usr/local/cuda); its major.minor must match LibTorch's CUDA.
#   LCL_BUILD_TYPE (default RelWithDebInfo), LCL_BUILD_JOBS, LCL_CMAKE_ARGS (extra cmake arguments).
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

packages=(
  build-essential cmake ninja-build ccache git pkg-config python3 python3-venv clang-format
  libopenmpi-dev openmpi-bin
  libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgtest-dev libgmock-dev
  libcli11-dev nlohmann-json3-dev libxxhash-dev libgoogle-perftools-dev
  libopencv-dev libsentencepiece-dev sentencepiece
  chromium  # tests/launch/report_test.sh opens the report page headless
  iproute2 util-linux  # tests/cluster/two_host_test.sh: ip netns (two hosts on one machine), unshare
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

venv=$here/.venv
requirements=$here/launch/requirements.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv matches launch/requirements.txt"
else
  echo "setup: making .venv from launch/requirements.txt:" \
    "$(grep -vE '^\s*(#|$)' "$requirements" | tr '\n' ' ')"
  echo "setup: this downloads about 3 GB (torch's CUDA wheel and its nvidia-* libraries) and takes about 5 GB"
  rm -f "$stamp"
  # Debian's interpreter where there is one: the venv then survives changes to whatever python3 PATH finds first.
  base_python=/usr/bin/python3
  [ -x "$base_python" ] || base_python=python3
  if "$base_python" -m venv "$venv" &&
     "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements"; then
    echo "$want" >"$stamp"
    echo "setup: .venv ready ($(du -sh "$venv" | cut -f1))"
  else
    {
      echo "setup: could not make .venv from $requirements (see the error above)."
      echo "  It needs python3-venv, PyPI reachable (or PIP_INDEX_URL pointing at a mirror) and ~5 GB free in $here."
      echo "  The build needs LibTorch 2.x: to use one already on this machine, run"
      echo "    LCL_LIBTORCH_DIR=/path/to/libtorch launch/setup.sh"
      echo "  (the directory with lib/libtorch.so and share/cmake/Torch; the tests that run Python references"
      echo "  then need LCL_PYTHON=<a python with torch and transformers>)."
    } >&2
    [ -n "${LCL_LIBTORCH_DIR:-}" ] || exit 1
  fi
fi

# Where CMake takes LibTorch from. torch.utils.cmake_prefix_path is <torch>/share/cmake; the prefix given is
# <torch> itself, so that TorchConfig finds the wheel's libtorch.so in <torch>/lib before any other LibTorch on
# the default library paths (cmake/LclDependencies.cmake checks it did).
if [ -n "${LCL_LIBTORCH_DIR:-}" ]; then
  torch_dir=$LCL_LIBTORCH_DIR
  [ -f "$torch_dir/share/cmake/Torch/TorchConfig.cmake" ] || {
    echo "setup: LCL_LIBTORCH_DIR=$torch_dir has no share/cmake/Torch/TorchConfig.cmake: give the unpacked" \
      "libtorch/ directory" >&2
    exit 1
  }
else
  torch_dir=$("$venv/bin/python" -c 'import os, torch.utils; print(os.path.dirname(os.path.dirname(torch.utils.cmake_prefix_path)))')
fi
python_args=()  # without a complete .venv, CMake's default (python3) stays
[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && python_args=(-DLCL_PYTHON="$venv/bin/python")

if [ "$do_build" -eq 1 ]; then
  # shellcheck disable=SC2086
  cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${LCL_BUILD_TYPE:-RelWithDebInfo}" \
    -DCMAKE_PREFIX_PATH="$torch_dir" -DLCL_CUDA_ROOT="${LCL_CUDA_ROOT:-/usr/local/cuda}" "${python_args[@]}" \
    ${LCL_CMAKE_ARGS:-} >/dev/null
  # 2 jobs: LibTorch translation units take ~1.5 GB of memory each.
  cmake --build "$build_dir" -j "${LCL_BUILD_JOBS:-$(nproc)}"
  echo "setup: built $build_dir/launch/lcl"
fi
