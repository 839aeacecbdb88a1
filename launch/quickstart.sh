#!/usr/bin/env bash
# The main job on a built-in tiny default, on a fresh Debian machine, as a miniature of the paper: install, build,
# make a synthetic ImageNet-format tree and a tiny model, build the neighbour table from the frozen tower, evaluate
# the untrained model on held-out classes, then train on 2 MPI ranks in two stages as LLaVA and LCL are trained:
#   stage 1: image -> class name conversations on the training classes (LLaVA's own stage; the LLaVA-format file
#            `lcl data synth` writes, as LCL-Mix's only source: data.mix_weights=1), 150 steps at lr 1e-3 (README:
#            longer or at stage 2's 3e-3 it lowers stage 2's accuracy), evaluated at the end;
#   stage 2: that model (exported to HF format) fine-tuned on LCL episodes (launch/configs/tiny.pbtxt), evaluated.
# Every evaluation is 2-way accuracy on held-out classes at 0, 1, 2, 4, 8 and 16 shots; the three tables print at the
# end, and lcl report draws stage 2 (runs/tiny/report/).
#   launch/quickstart.sh                             # everything under runs/ (re-running reuses the data and model)
#   LCL_QUICKSTART_STEPS=50 launch/quickstart.sh     # a shorter stage 2
#   LCL_QUICKSTART_RECIPE=official launch/quickstart.sh   # stage 2 with the official recipe's text, loss and draws
#                                                         # (needs the official ICL.json: LCL_ICL_JSON, README)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build_dir=${LCL_BUILD_DIR:-$here/build}
"$here/launch/setup.sh" --build-dir "$build_dir"
lcl="$build_dir/launch/lcl"
config=launch/configs/tiny.pbtxt
data=runs/data
stage1=runs/tiny_stage1
run=runs/tiny
stage1_steps=${LCL_QUICKSTART_STAGE1_STEPS:-150}

mpirun_args=(--oversubscribe --bind-to none)
if [ "$(id -u)" -eq 0 ]; then mpirun_args+=(--allow-run-as-root); fi
# Containers often lack cross-memory attach; shared-memory copies still work without it.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
shots=(--set eval.shots=0,1,2,4,8,16)
overrides=()
if [ -n "${LCL_QUICKSTART_STEPS:-}" ]; then overrides+=(--set "schedule.total_steps=$LCL_QUICKSTART_STEPS"); fi
case "${LCL_QUICKSTART_RECIPE:-lcl}" in
  lcl) ;;
  official)
    # The official recipe whole: its layout, loss on the final answer, system sentence, ten-letter made-up words on
    # the made-up side only, its draws, label case and padding, and no support-names aid. It needs ICL.json.
    icl=${LCL_ICL_JSON:-$here/../shared/data/lcl/ICL.json}
    if [ ! -f "$icl" ]; then
      echo "quickstart: LCL_QUICKSTART_RECIPE=official needs the official ICL.json; set LCL_ICL_JSON=/path/to/ICL.json" >&2
      exit 2
    fi
    overrides+=(--set data.recipe=official --set "data.templates=$icl" --set data.prompt_layout=official
      --set data.support_names=false --set data.made_up_negative=0 --set data.made_up_max_letters=10
      --set data.loss_on=final --set data.max_length=4096)
    ;;
  *)
    echo "quickstart: LCL_QUICKSTART_RECIPE must be lcl or official, not '$LCL_QUICKSTART_RECIPE'" >&2
    exit 2
    ;;
esac

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

rm -rf "$run" "$stage1"
# Into the run directory: eval.jsonl's step 0 rows are the untrained model's, which lcl report draws beside the last
# evaluation.
echo "quickstart: held-out evaluation of the untrained model"
mpirun "${mpirun_args[@]}" -np 2 "$lcl" eval --config "$config" --run-dir "$run" "${shots[@]}" "${overrides[@]}" |
  tee "$run.before.txt"
echo "quickstart: stage 1, image -> class name conversations on the training classes ($stage1_steps steps)"
mpirun "${mpirun_args[@]}" -np 2 "$lcl" train --config "$config" --run-dir "$stage1" "${shots[@]}" \
  --set "data.mix_files=$data/synth/llava_instruct.json" --set data.mix_weights=1 \
  --set "schedule.total_steps=$stage1_steps" --set "checkpoint.every_steps=$stage1_steps" --set optimizer.lr=1e-3 |
  tee "$stage1.txt"
last=$(ls -d "$stage1"/checkpoints/step_* | tail -1)
"$lcl" model export-hf --model "$data/tiny-model" --checkpoint "$last" --out "$stage1/model" >/dev/null
echo "quickstart: stage 2, LCL episodes from the stage 1 model (metrics: $run/metrics.jsonl, TensorBoard: $run/tb)"
mpirun "${mpirun_args[@]}" -np 2 "$lcl" train --config "$config" --run-dir "$run" --set "model.path=$stage1/model" \
  "${shots[@]}" "${overrides[@]}" | tee "$run.after.txt"
echo
echo "quickstart: untrained"
grep '^|' "$run.before.txt"
echo "quickstart: after stage 1 (image -> class name)"
grep '^|' "$stage1.txt"
echo "quickstart: after stage 2 (LCL episodes)"
grep '^|' "$run.after.txt"
echo "quickstart: figures of stage 2 ($run/report/index.html)"
"$lcl" report "$run" --config "$config" --set "model.path=$stage1/model" "${overrides[@]}"
echo "quickstart: done in $(( $(date +%s) - start )) s (data, model, 3 evaluations, 2 training stages); run directories $stage1, $run"
