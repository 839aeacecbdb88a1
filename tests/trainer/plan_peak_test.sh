#!/usr/bin/env bash
# `lcl plan` against the peak memory of a real step (issue #15 item 4): one 1-rank step of a 16-shot official
# episode (33 images, about 3,400 tokens) on the `small` preset, activation checkpointing on and off, and the plan
# for exactly that run (its layout, --tokens of the episode). On tcmalloc, the malloc lcl is built with, the plan is
# within 15% of the step's peak RSS both ways (measured 1.08 and 1.10). On glibc's malloc the heap keeps freed memory
# and the peak is up to 30% above the plan: there the plan must say so.
#   plan_peak_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/harness.sh
source "$here/../lib/harness.sh"
need_lcl
root=$(cd "$here/../.." && pwd)
work=$tmp
templates="$root/../shared/data/lcl/ICL.json"
[ -f "$templates" ] || fail "the official templates $templates are missing (../shared/data/lcl of the checkout)"

"$lcl" model init --preset small --tokenizer train --out "$work/model" >"$work/init.log" 2>&1 ||
  fail "model init: $(tail -3 "$work/init.log")"
"$lcl" data synth --out "$work/synth" --classes 16 --images-per-class 20 --size 64x64 >/dev/null || fail "synth"
cat >"$work/base.pbtxt" <<CONFIG
model { path: "$work/model" }
data { root: "$work/synth" recipe: "official" templates: "$templates" policy: "2way_weight" shot: 16 workers: 1 }
parallel { threads: 2 }
batch { micro_batch: 1 global_batch: 1 }
schedule { total_steps: 1 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { at_end: false }
CONFIG

malloc=$("$lcl" --version | sed -n 's/^malloc: //p')
[ -n "$malloc" ] || fail "lcl --version names no malloc"
for ckpt in true false; do
  run=$work/run_$ckpt
  $mpirun -np 1 "$lcl" train --config "$work/base.pbtxt" --run-dir "$run" \
    --set model.activation_checkpointing=$ckpt >"$run.log" 2>&1 ||
    fail "lcl train (checkpointing $ckpt) exited $?: $(grep -v '^I' "$run.log" | tail -5)"
  read -r tokens rss < <(python3 -c "
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(round(r['tokens_per_sec'] * r['step_time_ms'] / 1000), r['max_rss_mb'])" "$run/metrics.jsonl") ||
    fail "no step in $run/metrics.jsonl"
  [ "$tokens" -ge 3000 ] || fail "the step fed $tokens tokens: not a 16-shot official episode (~3,400)"
  "$lcl" plan --cpu --world 1 --config "$work/base.pbtxt" --set model.activation_checkpointing=$ckpt \
    --tokens "$tokens" >"$work/plan_$ckpt.txt" 2>&1 || fail "lcl plan: $(tail -3 "$work/plan_$ckpt.txt")"
  planned=$(awk '/^  total/ {print $2; exit}' "$work/plan_$ckpt.txt")
  [ -n "$planned" ] || fail "no total in lcl plan's output: $(head -20 "$work/plan_$ckpt.txt")"
  ratio=$(python3 -c "print(f'{$planned * 1024 / $rss:.3f}')")
  what="checkpointing $ckpt, $tokens tokens: peak RSS $rss MiB, planned $planned GiB ($ratio of measured), $malloc"
  case $malloc in
    glibc*)
      grep -q "keeps freed heap resident" "$work/plan_$ckpt.txt" || fail "$what: the plan does not warn about glibc"
      echo "PASS: $what; the plan warns that glibc's heap runs above it" ;;
    *)
      python3 -c "import sys; sys.exit(not 0.85 <= $ratio <= 1.15)" || fail "$what: not within 15%"
      echo "PASS: $what" ;;
  esac
done
echo "ALL PASS"
