#!/usr/bin/env bash
# Runs every test: sets up and builds if needed, then CTest. Tests labelled `gpu` run only where a CUDA GPU is
# visible; the exclusion is announced. Tests this build left out (an optional library off: label `not_built`) are
# listed first and then fail the run, each naming the library and the CMake switch, so that a passing run never
# hides a part it did not build.
#   tests/run.sh [extra ctest arguments, e.g. -R communicator]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${LCL_BUILD_DIR:-$here/build}
"$here/launch/setup.sh" --build-dir "$build_dir"

exclude=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "tests: GPU found: running gpu-labelled tests"
else
  echo "tests: no GPU on this machine: EXCLUDING the gpu-labelled tests:"
  ctest --test-dir "$build_dir" -N -L gpu | grep "Test *#" || true
  exclude+=(gpu)
fi
# Two hosts in network namespaces need root with CAP_SYS_ADMIN and CAP_NET_ADMIN: where this machine cannot make
# one, the netns-labelled tests are excluded, visibly, as the gpu ones are without a GPU.
probe_ns=lcl-probe-$$
if ip netns add "$probe_ns" 2>/dev/null; then
  ip netns delete "$probe_ns"
  echo "tests: network namespaces work here: running netns-labelled tests"
else
  echo "tests: this machine cannot create network namespaces (needs root, ip netns): EXCLUDING the netns-labelled tests:"
  ctest --test-dir "$build_dir" -N -L netns | grep "Test *#" || true
  exclude+=(netns)
fi
# Long runs (label long: the 100-trial kill test of lcl train, ~12 min here) only when asked.
if [ "${LCL_LONG:-0}" = 1 ]; then
  echo "tests: LCL_LONG=1: running long-labelled tests"
else
  echo "tests: EXCLUDING the long-labelled tests (LCL_LONG=1 tests/run.sh runs them):"
  ctest --test-dir "$build_dir" -N -L long | grep "Test *#" || true
  exclude+=(long)
fi
not_built=$(ctest --test-dir "$build_dir" -N -L not_built | grep "Test *#" || true)
if [ -n "$not_built" ]; then
  echo "tests: NOT BUILT in this build (an optional library is off); these FAIL, each naming what to install:"
  echo "$not_built"
fi
label_exclude=""
if [ ${#exclude[@]} -gt 0 ]; then label_exclude=$(IFS='|'; echo "${exclude[*]}"); fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Multi-rank tests oversubscribe 2 cores: run them one at a time so timings and timeouts stay meaningful.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error ${label_exclude:+-LE "$label_exclude"} "$@"
