#!/usr/bin/env bash
# What `lcl train` exits with, and what it leaves, at the edges of a run (the table in docs/launching.md):
#   1. SIGUSR1 as soon as the rank's handlers are in place (before any step): exit 42 at once, nothing trained;
#   2. SIGUSR1 while every step is an evaluation step: the step the ranks agree on is committed *and* evaluated,
#      and after `--resume auto` eval.jsonl has every step's row once;
#   3. every save failing with checkpoint.fail_on_error=false, the final one included: exit 4, not 0;
#   4. a missing, empty or non-directory data.root: one DataError naming data.root, not a bad-image count;
#   5. a NaN in the weights of model.path: refused at load, naming the tensor;
#   6. a malformed ISEKAI eval file: refused before the first step;
#   7. more shots than a class has images: one warning before training.
# Signals are sent on events (the handler shows in /proc/PID/status, a row appears in eval.jsonl), never on time.
#   preempt_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/base.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 2 }
schedule { total_steps: 3 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false shots: [0] max_episodes: 2 max_new_tokens: 2 batch: 2 }
checkpoint { every_steps: 0 }
EOF
job=""
# shellcheck disable=SC2016  # expanded at exit
on_exit '[ -n "$job" ] && kill "$job" 2>/dev/null; wait'

catches_usr1() {  # catches_usr1 PID: the process is lcl and has a handler for SIGUSR1 (bit 10 of SigCgt)
  local mask
  # Before its exec the forked shell has this script's handlers (bash catches USR1 once an EXIT trap is set), and a
  # signal then kills it as an uncaught one would: only the exec'd lcl counts.
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$(basename "$lcl")" ] || return 1
  mask=$(sed -n 's/^SigCgt:\t//p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$mask" ] && (((0x$mask >> 9) & 1))
}
rows() {  # rows FILE: the "step" of every line
  python3 -c 'import json, sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1]) if l.strip()))' \
    "$1" 2>/dev/null
}

# --- 1. a signal before the first step ---
run=$work/early
"$lcl" train --config "$work/base.pbtxt" --run-dir "$run" >"$work/early.log" 2>&1 &
job=$!
until catches_usr1 $job; do kill -0 $job 2>/dev/null || break; done
kill -USR1 $job
wait $job
rc=$?
job=""
check "USR1 before the first step: exit 42 (got $rc)" test $rc -eq 42
check "...with no step trained" test -z "$(rows "$run/metrics.jsonl")"
check "...and the log says why" grep -q "before the first step: nothing new to save" "$work/early.log"

# --- 2. a signal at an evaluation step ---
run=$work/evalstep
# Far more steps than can run between seeing the first eval row and the signal, however fast the machine: the run
# ends at the signal, so the length costs nothing.
evalset=(--set eval.every_steps=1 --set schedule.total_steps=100000)
"$lcl" train --config "$work/base.pbtxt" "${evalset[@]}" --run-dir "$run" >"$work/evalstep.log" 2>&1 &
job=$!
until [ -n "$(rows "$run/eval.jsonl")" ]; do kill -0 $job 2>/dev/null || break; done
kill -USR1 $job
wait $job
rc=$?
job=""
check "USR1 mid-run: exit 42 (got $rc)" test $rc -eq 42
saved=$(ls -d "$run"/checkpoints/step_???????? 2>/dev/null | tail -1)
step=$((10#${saved##*step_}))
check "the checkpoint's step $step has its evaluation row (eval.jsonl: $(rows "$run/eval.jsonl"))" \
  test "$(rows "$run/eval.jsonl")" = "$(seq -s ' ' 1 "$step")"
"$lcl" train --config "$work/base.pbtxt" "${evalset[@]}" --set schedule.total_steps=$((step + 2)) --run-dir "$run" \
  --resume auto >"$work/evalstep2.log" 2>&1
check "the resumed run exits 0" test $? -eq 0
check "after the resume every step has one evaluation row" \
  test "$(rows "$run/eval.jsonl")" = "$(seq -s ' ' 1 $((step + 1)))"

# --- 3. the final save fails ---
run=$work/nosave
mkdir -p "$run"
: >"$run/checkpoints"  # a file where the checkpoint directory goes: every save fails
"$lcl" train --config "$work/base.pbtxt" --set checkpoint.every_steps=1 --run-dir "$run" >"$work/nosave.log" 2>&1
rc=$?
check "every save failed, the final one too: exit 4 (got $rc)" test $rc -eq 4
check "...and the log names the final step" grep -q "the final checkpoint (step 3) was NOT committed" "$work/nosave.log"

# --- 4. data.root that cannot hold images ---
mkdir -p "$work/empty_root"
: >"$work/file_root"
for case in "missing:$work/no_such_root:does not exist" "empty:$work/empty_root:is an empty directory" \
            "file:$work/file_root:is not a directory"; do
  IFS=: read -r name root why <<<"$case"
  "$lcl" train --config "$work/base.pbtxt" --set "data.root=$root" --set "data.train_pairs=$work/synth/train_pairs.jsonl" \
    --run-dir "$work/root_$name" >"$work/root_$name.log" 2>&1
  rc=$?
  check "data.root $name: exit 1 with one message naming data.root ($why)" \
    test $rc -eq 1 -a -n "$(grep -l "data error: data.root '$root' $why" "$work/root_$name.log")"
  check "data.root $name: no bad-image count" test -z "$(grep -l "bad images out of" "$work/root_$name.log")"
done

# --- 5. a NaN in the model's weights: refused at load, naming the tensor (not at step 1 as a learning-rate hint) ---
cp -r "$work/model" "$work/nan_model"
python3 - "$work/nan_model/model.safetensors" <<'PY' || fail "writing a NaN into the model"
import json, struct, sys
with open(sys.argv[1], "r+b") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    begin, _ = json.loads(f.read(n))["model.embed_tokens.weight"]["data_offsets"]
    f.seek(8 + n + begin + 4 * 5)
    f.write(struct.pack("<f", float("nan")))
PY
"$lcl" train --config "$work/base.pbtxt" --set "model.path=$work/nan_model" --run-dir "$work/nan" >"$work/nan.log" 2>&1
rc=$?
check "NaN weights: exit 1 naming the tensor (got $rc)" \
  test $rc -eq 1 -a -n "$(grep -l "tensor 'model.embed_tokens.weight' holds NaN or Inf values" "$work/nan.log")"
check "NaN weights: no step ran" test ! -s "$work/nan/metrics.jsonl"

# --- 6. a malformed evaluation file: refused before the first step, not at the first periodic evaluation ---
echo '{"positive_list": "not a list"}' >"$work/bad_isekai.jsonl"
"$lcl" train --config "$work/base.pbtxt" --set eval.every_steps=2 --set eval.format=isekai \
  --set "eval.isekai=$work/bad_isekai.jsonl" --run-dir "$work/bad_isekai" >"$work/bad_isekai.log" 2>&1
rc=$?
check "a malformed ISEKAI file: exit 1 naming file:line (got $rc)" \
  test $rc -eq 1 -a -n "$(grep -l "data error: $work/bad_isekai.jsonl:1" "$work/bad_isekai.log")"
check "a malformed ISEKAI file: no step ran" test ! -s "$work/bad_isekai/metrics.jsonl"

# --- 7. more shots than a class has images: said once, up front ---
"$lcl" train --config "$work/base.pbtxt" --set data.shot=8 --set schedule.total_steps=1 --run-dir "$work/shots" \
  >"$work/shots.log" 2>&1
check "shot 8 on 8-image classes: a warning that episodes repeat images" \
  grep -q "\([0-9]*\) of \1 classes have fewer than shot + 1 = 9 images (class .* has 8): their episodes repeat" \
  "$work/shots.log"
