#!/usr/bin/env bash
# Packing's gain on variable-length episodes: `lcl train` on 2way_random_shot episodes (1 to SHOT shots per side,
# 3 to 2 x SHOT + 1 images) twice in one go, one padded row per episode (the reference) and packed into rows of at
# most PACK tokens, the same episodes in the same order. Prints real tokens/s (padding never counts), the fraction
# of fed positions that are real tokens (row_fill), both runs' final losses, and the ratio.
#   bench/packing_bench.sh [--preset tiny|small] [--shot 16] [--micro 4] [--pack 0 (= the longest episode x 2)]
#                          [--steps 8] [--np 1] [--work DIR] [--lcl build/launch/lcl]
# Medians over the steps after the first (the first pays for start-up). Real files, real ranks, no cache.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
preset=tiny shot=16 micro=4 pack=0 steps=8 np=1 work="" lcl=$here/build/launch/lcl
while [ $# -gt 0 ]; do
  case $1 in
    --preset) preset=$2 ;; --shot) shot=$2 ;; --micro) micro=$2 ;; --pack) pack=$2 ;; --steps) steps=$2 ;;
    --np) np=$2 ;; --work) work=$2 ;; --lcl) lcl=$2 ;;
    *) echo "packing_bench.sh: unknown argument '$1' (see the header for the options)" >&2; exit 2 ;;
  esac
  shift 2
done
[ -x "$lcl" ] || { echo "packing_bench.sh: no lcl at $lcl (build first, or pass --lcl)" >&2; exit 2; }
[ -n "$work" ] || { work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; }
mpirun=(mpirun --oversubscribe -np "$np")
[ "$(id -u)" -ne 0 ] || mpirun+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none

size=$([ "$preset" = small ] && echo 112x112 || echo 64x64)
"$lcl" data synth --out "$work/synth" --classes 16 --images-per-class 40 --size "$size" >/dev/null
cut -d' ' -f2- "$work/synth/LOC_synset_mapping.txt" | sed 's/,.*//' >"$work/names.txt"
"$lcl" model init --preset "$preset" --out "$work/model" --class-names "$work/names.txt" >/dev/null
if [ "$pack" -eq 0 ]; then  # twice the longest episode: the episode at 2 x shot + 1 images, counted by the model
  patches=$(python3 -c "import json; c = json.load(open('$work/model/config.json')); \
v = c.get('mm_vision_config', c.get('vision_config', {})); print((v.get('image_size', 64) // v.get('patch_size', 32)) ** 2)")
  pack=$(( 2 * (2 * shot + 1) * (patches + 12) + 400 ))
fi
cat >"$work/base.pbtxt" <<CONFIG
model { path: "$work/model" }
data { root: "$work/synth" policy: "2way_random_shot" shot: $shot workers: 1 }
batch { micro_batch: $micro global_batch: $((micro * np)) }
optimizer { lr: 1e-4 }
schedule { total_steps: $steps }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { at_end: false }
CONFIG
for run in padded packed; do
  extra=()
  [ "$run" = packed ] && extra=(--set "batch.pack_tokens=$pack")
  "${mpirun[@]}" "$lcl" train --config "$work/base.pbtxt" --run-dir "$work/$run" "${extra[@]}" >"$work/$run.log" 2>&1 ||
    { echo "packing_bench.sh: the $run run failed: $(tail -5 "$work/$run.log")" >&2; exit 1; }
done
python3 - "$work" "$preset" "$shot" "$micro" "$pack" "$np" <<'PY'
import json, statistics, sys
work, preset, shot, micro, pack, np = sys.argv[1:]
def load(run):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")]
    later = rows[1:] or rows
    return (statistics.median(r["tokens_per_sec"] for r in later), statistics.median(r["row_fill"] for r in later),
            rows[-1]["loss"])
(ref, ref_fill, ref_loss), (got, fill, loss) = load("padded"), load("packed")
print(f"packing, {preset} preset, 2way_random_shot shot {shot}, micro-batch {micro}, np {np}, pack_tokens {pack}")
print(f"  padded (reference): {ref:10.1f} tokens/s, row_fill {ref_fill:.3f}, last loss {ref_loss:.6f}")
print(f"  packed:             {got:10.1f} tokens/s, row_fill {fill:.3f}, last loss {loss:.6f}")
print(f"  ratio packed / padded: {got / ref:.2f}x")
PY
