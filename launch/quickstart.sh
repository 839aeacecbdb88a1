#!/usr/bin/env bash
# The main job on a built-in tiny default, on a fresh Debian machine: install, build, make a synthetic ImageNet-format
# tree and a tiny model, build the neighbour table from the frozen tower, evaluate the untrained model on held-out
# classes, train on 2 MPI ranks, evaluate again, print both tables, and draw the run (lcl report: runs/tiny/report/).
#   launch/quickstart.sh                       # everything under runs/ (re-running reuses the data and model)
#   LCL_QUICKSTART_STEPS=50 launch/quickstart.sh   # a shorter run
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build_dir=${LCL_BUILD_DIR:-$here/build}
"$here/launch/setup.sh" --build-dir "$build_dir"
lcl="$build_dir/launch/lcl"
config=launch/configs/tiny.pbtxt
data=runs/data
run=runs/tiny

mpirun_args=(--oversubscribe --bind-to none)
if [ "$(id -u)" -eq 0 ]; then mpirun_args+=(--allow-run-as-root); fi
# Containers often lack cross-memory attach; shared-memory copies still work without it.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
overrides=()
if [ -n "${LCL_QUICKSTART_STEPS:-}" ]; then overrides+=(--set "schedule.total_steps=$LCL_QUICKSTART_STEPS"); fi

version=$("$lcl" --version | head -1)
echo "quickstart: $version"
start=$(date +%s)
# Data and model made by another lcl version (or by one that recorded none) may differ from what this one makes:
# start them again.
made_by=$(cat "$data/made-by.txt" 2>/dev/null || echo "an unrecorded version")
if [ -d "$data" ] && [ "$made_by" != "$version" ]; then
  echo "quickstart: $data was made by $made_by; making it again"
  rm -rf "$data"
fi
mkdir -p "$data"
echo "$version" > "$data/made-by.txt"
if [ ! -f "$data/synth/test_pairs.jsonl" ]; then
  echo "quickstart: synthetic ImageNet-format tree (families of similar classes; some families held out)"
  "$lcl" data synth --out "$data/synth" --classes 64 --images-per-class 40 --size 96x96
fi
if [ ! -f "$data/tiny-model/model.safetensors" ]; then
  echo "quickstart: tiny model (random decoder, frozen tower, tokenizer trained on the class names)"
  cut -d' ' -f2- "$data/synth/LOC_synset_mapping.txt" | sed 's/,.*//' > "$data/class_names.txt"
  "$lcl" model init --preset tiny --patch-size 64 --out "$data/tiny-model" --class-names "$data/class_names.txt"
fi
if [ ! -f "$data/train_pairs.jsonl" ]; then
  echo "quickstart: neighbour table of the training classes from the frozen tower's image features"
  "$lcl" data index --root "$data/synth" --split "$data/synth/class_split.json" --out "$data/index.json"
  "$lcl" data neighbors --root "$data/synth" --model "$data/tiny-model" --index "$data/index.json" \
    --out "$data/train_pairs.jsonl"
fi

rm -rf "$run"
# Into the run directory: eval.jsonl's step 0 rows are the untrained model's, which lcl report draws beside the last
# evaluation.
echo "quickstart: held-out evaluation of the untrained model"
mpirun "${mpirun_args[@]}" -np 2 "$lcl" eval --config "$config" --run-dir "$run" "${overrides[@]}" |
  tee "$run.before.txt"
echo "quickstart: training on 2 ranks (metrics: $run/metrics.jsonl, TensorBoard: $run/tb)"
mpirun "${mpirun_args[@]}" -np 2 "$lcl" train --config "$config" --run-dir "$run" "${overrides[@]}" |
  tee "$run.after.txt"
echo
echo "quickstart: before training"
grep '^|' "$run.before.txt"
echo "quickstart: after training"
grep '^|' "$run.after.txt"
echo "quickstart: figures of the run ($run/report/index.html)"
"$lcl" report "$run" --config "$config" "${overrides[@]}"
echo "quickstart: done in $(( $(date +%s) - start )) s (data, model, 2 evaluations, training); run directory $run"
