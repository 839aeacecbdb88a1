#!/usr/bin/env bash
# Exact resume and resharding with the real trainer, on real MPI ranks:
#   1. SIGUSR1 to one rank mid-run -> every rank agrees at the step boundary, a checkpoint is committed, exit 42;
#      `--resume auto` continues; the loss sequence and every final tensor (model and optimizer) are bitwise the
#      uninterrupted run's.
#   2. A checkpoint saved on tp=2 x dp=2 resumes on tp=1 x dp=4, tp=4 x dp=1, tp=1 x dp=1 and tp=2 x dp=1 (ZeRO-1
#      partitions and TP slices both change): the following losses match the uninterrupted run's.
#   3. Bad starts: a flipped byte in a shard is refused naming the file; a run dir with checkpoints is not
#      overwritten without --resume. Also: export-hf --checkpoint writes every trained tensor.
#   resume_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/base.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 4 }
optimizer { lr: 1e-3 warmup_ratio: 0.25 }
schedule { total_steps: 8 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { every_steps: 4 keep_last: 0 async: true }
EOF

losses() {
  python3 -c "
import json, sys
for line in open(sys.argv[1]): print(repr(json.loads(line)['loss']))" "$1/metrics.jsonl"
}

# --- 1. preemption and bitwise resume (2 ranks) ---
train ref 2
losses "$work/ref" >"$work/ref.losses"
[ "$(wc -l <"$work/ref.losses")" -eq 8 ] || fail "reference logged $(wc -l <"$work/ref.losses") losses, expected 8"

run="$work/pre"
# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" --run-dir "$run" --set schedule.total_steps=8 \
  --set checkpoint.every_steps=0 >"$work/pre.log" 2>&1 &
job=$!
for _ in $(seq 1 6000); do
  [ -f "$run/metrics.jsonl" ] && [ "$(wc -l <"$run/metrics.jsonl")" -ge 2 ] && break
  kill -0 $job 2>/dev/null || break
  sleep 0.01
done
# Both ranks held still (SIGSTOP) while USR1 reaches one of them, so the signal lands mid-run however fast a step
# is: the run cannot finish between this check and the signal.
mapfile -t ranks < <(pgrep -f "^$lcl train .*--run-dir $run ")
[ "${#ranks[@]}" -eq 2 ] || fail "found ${#ranks[@]} rank processes to signal, expected 2"
kill -STOP "${ranks[@]}"
[ "$(wc -l <"$run/metrics.jsonl")" -lt 8 ] || { kill -CONT "${ranks[@]}"; fail "the run finished before the signal"; }
victim=${ranks[1]}
kill -USR1 "$victim"
kill -CONT "${ranks[@]}"
wait $job
rc=$?
[ $rc -eq 42 ] || fail "after SIGUSR1 the job exited $rc, expected 42: $(grep -v '^I' "$work/pre.log" | tail -5)"
saved=$(ls -d "$run"/checkpoints/step_???????? 2>/dev/null | tail -1)
[ -n "$saved" ] && [ -f "$saved/manifest.pb" ] || fail "no committed checkpoint after SIGUSR1"
step=$((10#${saved##*step_}))
[ "$step" -lt 8 ] || fail "the signal arrived too late to test a resume (checkpoint at step $step)"
echo "  SIGUSR1 -> checkpoint at step $step, exit 42"
# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" --run-dir "$run" --set checkpoint.every_steps=0 \
  --resume auto >"$work/pre2.log" 2>&1 || fail "resume failed: $(grep -v '^I' "$work/pre2.log" | tail -5)"
losses "$run" >"$work/pre.losses"
cmp -s "$work/ref.losses" "$work/pre.losses" ||
  fail "resumed losses differ from the uninterrupted run: $(diff "$work/ref.losses" "$work/pre.losses" | head -4)"
python3 "$here/compare_checkpoints.py" "$work/ref/checkpoints/step_00000008" "$run/checkpoints/step_00000008" ||
  fail "final tensors differ after resume"
echo "PASS: preempted at step $step and resumed: losses and every final tensor bitwise equal"

# --- export: the trained checkpoint back to Hugging Face layout, every tensor equal to the checkpoint's ---
"$lcl" model export-hf --checkpoint "$work/ref" --model "$work/model" --out "$work/hf" >"$work/export.log" 2>&1 ||
  fail "export-hf --checkpoint failed: $(tail -3 "$work/export.log")"
[ -f "$work/hf/config.json" ] && [ -f "$work/hf/tokenizer.model" ] || fail "export-hf left no config.json/tokenizer.model"
python3 - "$here/.." "$work/hf/model.safetensors" "$work/ref/checkpoints/step_00000008" <<'PY' ||
import sys
sys.path.insert(0, sys.argv[1])
from safetensors_io import read_dir, read_tensors
exported, saved = read_tensors(sys.argv[2]), read_dir(sys.argv[3])
assert exported and all(saved.get(k) == v for k, v in exported.items()), "an exported tensor differs"
print(f"  {len(exported)} exported tensors equal the checkpoint's")
PY
  fail "exported tensors differ"
echo "PASS: lcl model export-hf --checkpoint writes the trained model (config, tokenizer, every tensor)"

# --- 2. resharding: save on tp=2 x dp=2, resume on other layouts ---
train ref4 4 --set parallel.tp=2
losses "$work/ref4" >"$work/ref4.losses"
for layout in "4 1" "4 4" "1 1" "2 2"; do
  set -- $layout
  np=$1 tp=$2
  name="reshard_np${np}_tp${tp}"
  train "$name" "$np" --set parallel.tp="$tp" --resume "$work/ref4/checkpoints/step_00000004"
  grep -q "resumed from .*step_00000004" "$work/$name.log" || fail "$name did not resume from step 4"
  losses "$work/$name" >"$work/$name.losses"
  python3 - "$work/ref4.losses" "$work/$name.losses" <<'PY' || fail "$name: losses after resharding differ"
import sys
ref = [float(x) for x in open(sys.argv[1])][4:]
got = [float(x) for x in open(sys.argv[2])]
assert len(got) == 4 and len(ref) == 4, (len(ref), len(got))
for i, (a, b) in enumerate(zip(got, ref)):
    assert abs(a - b) <= 1e-4 * abs(b), f"step {i + 5}: {a} vs {b}"
PY
  echo "PASS: tp=2 x dp=2 -> tp=$tp x dp=$((np / tp)): steps 5-8 match the uninterrupted run"
done

# --- 3. bad resumes ---
bad="$work/bad"
cp -r "$work/ref" "$bad"
shard=$(ls "$bad"/checkpoints/step_00000008/*.safetensors | head -1)
python3 - "$shard" <<'PY'
import sys
p = sys.argv[1]
data = bytearray(open(p, "rb").read())
data[len(data) // 2] ^= 0x01
open(p, "wb").write(data)
PY
# shellcheck disable=SC2086
if $mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" --run-dir "$bad" --resume "$bad/checkpoints/step_00000008" \
  --set schedule.total_steps=9 >"$work/bad.log" 2>&1; then fail "a flipped byte was loaded"; fi
grep -q "$(basename "$shard")" "$work/bad.log" || fail "the checksum error does not name the shard: $(tail -3 "$work/bad.log")"
echo "PASS: a flipped byte in a shard is refused, naming the file"
# shellcheck disable=SC2086
if $mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" --run-dir "$work/ref" --set schedule.total_steps=9 \
  >"$work/nores.log" 2>&1; then fail "a run dir with checkpoints was overwritten without --resume"; fi
grep -q "already holds checkpoints" "$work/nores.log" || fail "no clear error for a run dir with checkpoints"
echo "PASS: starting over a run with checkpoints needs --resume (nothing is overwritten)"
echo "all resume checks passed"
