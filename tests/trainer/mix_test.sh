#!/usr/bin/env bash
# LCL-Mix with the real trainer on real MPI ranks: LCL episodes and the LLaVA-format conversations `lcl data synth`
# writes, interleaved by probability.
#   1. Half and half, 8 steps on 2 ranks: metrics.jsonl counts the conversations (some, not all, of 32 positions).
#   2. Resume from step 4 on 2 ranks: steps 5-8 bitwise the uninterrupted run's; on 1 rank (another DP size): the
#      same episodes, so the losses match within 1e-4.
#   3. Conversations alone (probability 1, as LLaVA's own stages): every position is one; a missing image is
#      replaced and counted.
#   4. Bad input: a record with two <image>s stops the run before step 1 naming the file and the record; a weight
#      count that does not match the files, or weights over 1, are config errors naming data.mix_weights; a missing
#      file is named.
#   mix_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
[ -s "$work/synth/llava_instruct.json" ] || fail "lcl data synth wrote no llava_instruct.json"
cat >"$work/base.pbtxt" <<CONFIG
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 mix_files: "$work/synth/llava_instruct.json" mix_weights: "0.5" }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 4 }
optimizer { lr: 1e-3 warmup_ratio: 0.25 }
schedule { total_steps: 8 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { every_steps: 4 keep_last: 0 async: false }
CONFIG


# --- 1. half and half ---
train ref 2
grep -q "LCL-Mix: .*llava_instruct.json (.* conversations) at probability 0.5" "$work/ref.log" ||
  fail "the run did not log its instruction file"
column "$work/ref" loss >"$work/ref.losses"
[ "$(wc -l <"$work/ref.losses")" -eq 8 ] || fail "ref logged $(wc -l <"$work/ref.losses") steps, expected 8"
conversations=$(column "$work/ref" mix_conversations | tail -1)
python3 -c "import sys; n = float(sys.argv[1]); assert 0 < n < 32, n" "$conversations" ||
  fail "mix_conversations after 32 positions at probability 0.5 is $conversations (expected some, not all)"
echo "PASS: 8 mixed steps on 2 ranks, $conversations of 32 positions were conversations"

# --- 2. exact resume, and another DP size ---
step4="$work/ref/checkpoints/step_00000004"
[ -f "$step4/manifest.pb" ] || fail "no step 4 checkpoint"
train resumed 2 --resume "$step4"
column "$work/resumed" loss >"$work/resumed.losses"
diff <(tail -4 "$work/ref.losses") "$work/resumed.losses" >/dev/null ||
  fail "steps 5-8 after resume differ: $(paste -d' ' <(tail -4 "$work/ref.losses") "$work/resumed.losses" | tr '\n' ';')"
echo "PASS: resumed at step 4 on 2 ranks, steps 5-8 bitwise the uninterrupted run's"
train dp1 1 --resume "$step4"
column "$work/dp1" loss >"$work/dp1.losses"
python3 - "$work/ref.losses" "$work/dp1.losses" <<'PY' || fail "steps 5-8 on 1 rank differ from the 2-rank run"
import sys
ref = [float(x) for x in open(sys.argv[1])][4:]
got = [float(x) for x in open(sys.argv[2])]
assert len(got) == 4, got
for i, (a, b) in enumerate(zip(got, ref)):
    assert abs(a - b) <= 1e-4 * abs(b), f"step {i + 5}: {a} vs {b}"
PY
echo "PASS: resumed on 1 rank (dp 1): steps 5-8 match within 1e-4"

# --- 3. conversations alone, one image missing ---
python3 - "$work/synth/llava_instruct.json" "$work/missing.json" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))[:6]
records[2]["image"] = "train/none/absent.JPEG"
json.dump(records, open(sys.argv[2], "w"))
PY
train only 2 --set data.mix_files="$work/missing.json" --set data.mix_weights=1 --set schedule.total_steps=3 \
  --set data.max_bad_fraction=0.9 --set checkpoint.every_steps=0
[ "$(column "$work/only" mix_conversations | tail -1)" = "12.0" ] ||
  fail "conversations alone: mix_conversations is $(column "$work/only" mix_conversations | tail -1), expected 12"
bad=$(column "$work/only" bad_images | tail -1)
[ "$bad" != "0" ] || fail "the missing image was not counted (bad_images $bad)"
grep -q "absent.JPEG" "$work/only.log" || fail "the missing image is not named in the log"
echo "PASS: conversations alone: 12 of 12 positions; the missing image replaced and counted ($bad)"

# --- 4. bad input ---
python3 - "$work/synth/llava_instruct.json" "$work/two.json" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))[:5]
records[3]["conversations"][0]["value"] += " <image>"
json.dump(records, open(sys.argv[2], "w"))
PY
expect_fail() {  # expect_fail NAME TEXT... -- ARGS: lcl train must fail before a step, its output naming every TEXT
  local name=$1
  shift
  local texts=()
  while [ "$1" != "--" ]; do
    texts+=("$1")
    shift
  done
  shift
  # shellcheck disable=SC2086
  if $mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" --run-dir "$work/$name" "$@" >"$work/$name.log" 2>&1; then
    fail "$name: lcl train succeeded"
  fi
  for t in "${texts[@]}"; do
    grep -qF -- "$t" "$work/$name.log" || fail "$name: '$t' not in: $(tail -3 "$work/$name.log")"
  done
  [ ! -f "$work/$name/metrics.jsonl" ] || fail "$name: a step ran before the error"
  echo "PASS: $name refused: $(grep -F -- "${texts[0]}" "$work/$name.log" | head -1 | cut -c1-200)"
}
expect_fail two_images "$work/two.json: record 3" '2 "<image>" markers' -- --set data.mix_files="$work/two.json"
expect_fail weight_count "data.mix_weights gives 2" -- --set data.mix_weights=0.5,0.2
expect_fail weight_sum "sums to 1.2" "data.mix_weights" -- \
  --set data.mix_files="$work/synth/llava_instruct.json,$work/missing.json" --set data.mix_weights=0.6,0.6
expect_fail missing_file "cannot be opened" -- --set data.mix_files="$work/absent.json"
echo "mix_test: all passed"
