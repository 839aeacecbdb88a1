#!/usr/bin/env bash
# The main job on a built-in tiny default, on a fresh Debian machine: install, build, then run on 2 MPI ranks.
# Today it runs the 2-rank communicator self-check (every collective timed against raw MPI and its result
# verified); the trainer issue turns this into: synth data -> tiny model -> train on 2 ranks -> evaluate.
#   launch/quickstart.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${LCL_BUILD_DIR:-$here/build}
"$here/launch/setup.sh" --build-dir "$build_dir"

mpirun_args=(--oversubscribe --bind-to none)
if [ "$(id -u)" -eq 0 ]; then mpirun_args+=(--allow-run-as-root); fi
# Containers often lack cross-memory attach; shared-memory copies still work without it.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}

echo "quickstart: $("$build_dir/launch/lcl" --version | head -1)"
echo "quickstart: 2-rank communicator self-check"
set -x
mpirun "${mpirun_args[@]}" -np 2 "$build_dir/launch/lcl" bench comm --min-bytes 1K --max-bytes 4M --rounds 1
