#!/usr/bin/env bash
# One optimizer step of the paper's episode at full size (issue #15 item 1): a 16-shot official episode (33 images
# at 256 tokens, about 9,650 tokens, nothing dropped) through the full-depth ViT-L/14-shaped tower at 224 px and a
# decoder of LLaMA-7B width (hidden 4096, 32 heads, intermediate 11008) cut to 2 layers, activation checkpointing,
# fp32, on CPU at the given tensor-parallel size (one rank per TP part). Checks that the step ran on the whole
# episode and prints its time and peak memory beside `lcl plan`'s prediction for the same run.
# About 6 minutes and 2 x 8.8 GiB at TP=2 on 2 cores (TP=1: about 7 minutes, 14 GiB): labelled slow and long (LCL_LONG=1 tests/run.sh runs it).
#   full_size_step_test.sh [TP]      (TP 1 or 2, default 2; LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/harness.sh
source "$here/../lib/harness.sh"
need_lcl
tp=${1:-2}
root=$(cd "$here/../.." && pwd)
work=$tmp

"$lcl" model init --preset llava-7b --set num_hidden_layers=2 --tokenizer train --out "$work/m7b" >"$work/init.log" 2>&1 ||
  fail "model init: $(tail -3 "$work/init.log")"
"$lcl" data synth --out "$work/s7" --classes 16 --images-per-class 20 --size 224x224 >/dev/null || fail "synth"
sets=(--set "model.path=$work/m7b" --set "data.root=$work/s7" --set "data.train_pairs=$work/s7/train_pairs.jsonl"
  --set precision=fp32 --set data.workers=1 --set "parallel.tp=$tp" --set batch.global_batch=1
  --set schedule.total_steps=1 --set logging.every_steps=1 --set checkpoint.at_end=false --set eval.at_end=false)

# shellcheck disable=SC2086
$mpirun -np "$tp" "$lcl" train --config "$root/launch/configs/lcl_7b.pbtxt" --run-dir "$work/run" "${sets[@]}" \
  >"$work/train.log" 2>&1 || fail "lcl train at tp $tp exited $?: $(grep -v '^I' "$work/train.log" | tail -5)"
python3 - "$work/run/metrics.jsonl" "$tp" >"$work/check.txt" 2>&1 <<'PY' || fail "$(cat "$work/check.txt")"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tp = int(sys.argv[2])
if len(rows) != 1 or rows[0]["step"] != 1:
    sys.exit(f"{len(rows)} logged steps, want step 1 only")
r = rows[0]
if not math.isfinite(r["loss"]) or not math.isfinite(r["grad_norm"]) or r["grad_norm"] <= 0:
    sys.exit(f"loss {r['loss']}, grad norm {r['grad_norm']}")
if r["too_long_episodes"] or r["dropped_shot_pairs"]:
    sys.exit(f"the episode was cut: too_long_episodes {r['too_long_episodes']}, "
             f"dropped_shot_pairs {r['dropped_shot_pairs']}")
tokens = round(r["tokens_per_sec"] * r["step_time_ms"] / 1000)
if tokens < 9000:
    sys.exit(f"the step fed {tokens} tokens: not the 16-shot official episode at 256 tokens per image (~9,650)")
print(tokens)
print(f"tp {tp}: one step of {tokens} tokens in {r['step_time_ms'] / 1000:.0f} s (forward "
      f"{r['forward_ms'] / 1000:.0f} s, backward {r['backward_ms'] / 1000:.0f} s, optimizer "
      f"{r['optimizer_ms'] / 1000:.1f} s), loss {r['loss']:.4f}, grad norm {r['grad_norm']:.3f}; peak RSS "
      f"{r['max_rss_mb']} MiB (largest rank)")
PY
tokens=$(head -1 "$work/check.txt")
# The plan for exactly this run: its layout, its episode's token count.
"$lcl" plan --cpu --world "$tp" --config "$root/launch/configs/lcl_7b.pbtxt" "${sets[@]}" --tokens "$tokens" \
  >"$work/plan.txt" 2>&1 || fail "lcl plan: $(tail -3 "$work/plan.txt")"
planned=$(grep -m1 '^  total' "$work/plan.txt" | awk '{print $2, $3}')
[ -n "$planned" ] || fail "no total in lcl plan's output: $(head -20 "$work/plan.txt")"
echo "PASS: $(tail -1 "$work/check.txt"); lcl plan: $planned per rank"
echo "ALL PASS"
