#!/usr/bin/env bash
# Preemption end to end on a real (throw-away, one-node) Slurm cluster: launch/slurm/train.sbatch trains the tiny
# config on 2 tasks (srun --mpi=pmix); mid-run the batch shell gets USR1 (as from --signal=B:USR1@<lead>), the ranks
# commit a checkpoint and exit 42, the script requeues the job, the second start resumes from that step with
# SLURM_RESTART_COUNT=1 and reaches the final step, and its losses are exactly those of an uninterrupted run
# (launch/mpirun.sh, same layout). Fails (never skips) when Slurm cannot start; stops only the daemons it started.
#   LCL_BIN=build/launch/lcl tests/slurm/slurm_requeue_test.sh
# Environment: LCL_SLURM_TEST_STEPS (default 12), LCL_SLURM_TEST_LAUNCHER (srun | mpirun, default srun),
# LCL_SLURM_TEST_KEEP=1 (or LCL_TEST_KEEP=1) keeps the temporary directory.
#
# Why the test sends USR1 itself (`scancel --signal=USR1 --batch`, what Slurm does at `--signal=B:USR1@<lead>`):
# Slurm's time limits are whole minutes and it may send the warning up to a minute early, so a time-limit signal
# lands anywhere from before the first step to after the last one of a short run. Sending it to ranks held still
# (SIGSTOP) once metrics.jsonl shows a third of the steps puts it mid-run every time, however fast a step is. tests/slurm/slurm_harness_test.sh covers the real
# --time/--signal path (with a stand-in trainer).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
steps=${LCL_SLURM_TEST_STEPS:-12}
launcher=${LCL_SLURM_TEST_LAUNCHER:-srun}
[ "${LCL_SLURM_TEST_KEEP:-0}" = 1 ] && export LCL_TEST_KEEP=1
# shellcheck source=tests/lib/harness.sh
source "$here/tests/lib/harness.sh"
need_lcl
. "$here/tests/slurm/slurm_harness.sh"

chmod 0711 "$tmp"  # munged (user munge) must reach its socket under here
on_exit slurm_stop
elapsed() { echo "$(($(date +%s) - t_start)) s"; }
t_start=$(date +%s)

"$lcl" train --help 2>&1 | grep -q -- "--run-dir" || fail "'$lcl train' is not built"
cd "$tmp" || fail "cd $tmp"

# ---- tiny data and model, as launch/quickstart.sh makes them (smaller) ------------------------------------------
"$lcl" data synth --out data/synth --classes 32 --images-per-class 12 --size 64x64 >synth.log 2>&1 ||
  { cat synth.log; fail "lcl data synth failed"; }
cut -d' ' -f2- data/synth/LOC_synset_mapping.txt | sed 's/,.*//' >data/class_names.txt
"$lcl" model init --preset tiny --out data/tiny-model --class-names data/class_names.txt >model.log 2>&1 ||
  { cat model.log; fail "lcl model init failed"; }
cp "$here/launch/configs/tiny.pbtxt" tiny.pbtxt
# One episode per rank per step (the config has 8) in the official layout, without support names: small steps.
overrides=(--set "schedule.total_steps=$steps" --set batch.micro_batch=1 --set batch.global_batch=2
           --set logging.every_steps=1 --set checkpoint.every_steps=0 --set eval.at_end=false
           --set logging.progress=false --set "model.path=$tmp/data/tiny-model" --set "data.root=$tmp/data/synth"
           --set data.train_pairs= --set data.prompt_layout=vicuna --set data.made_up_max_letters=10
           --set data.support_names=false --set data.image_markers=true)
echo "     data and model ready ($(elapsed))"

# ---- the reference: one uninterrupted run with the same layout (2 ranks, dp=2) ------------------------------------
LCL_BIN=$lcl "$here/launch/mpirun.sh" -n 2 --allow-root --container --oversubscribe -- \
  --config tiny.pbtxt "${overrides[@]}" --run-dir "$tmp/ref" >ref.log 2>&1; rc=$?
check "uninterrupted run (launch/mpirun.sh -n 2) exits 0" test $rc -eq 0
[ $rc -eq 0 ] || { tail -30 ref.log; fail "the reference run failed"; }
echo "     reference run done ($(elapsed))"

# ---- the Slurm run -------------------------------------------------------------------------------------------------
slurm_start "$tmp/slurm" || fail "could not start the test Slurm cluster (see above)"
mkdir -p logs
export LCL_BIN=$lcl LCL_LAUNCHER=$launcher LCL_RUN_DIR=$tmp/run LCL_MPIRUN_SH_ARGS="--container --bind none"
# The template's shape is 2 nodes x 8 GPUs; this node gives 2 tasks, no GPUs. The time limit is long: the warning
# signal is sent below, at a measured moment.
jid=$(sbatch --parsable -J requeue --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1 --time=10 \
      -o "logs/%x-%j.out" "$here/launch/slurm/train.sbatch" tiny.pbtxt "${overrides[@]}")
[ -n "$jid" ] || fail "sbatch refused the job"
joblog=$tmp/logs/requeue-$jid.out
metrics=$tmp/run/metrics.jsonl
last_step() { python3 -c '
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if l.strip()]
print(max(steps) if steps else 0)' "$1" 2>/dev/null || echo 0; }

# Sends what --signal=B:USR1 sends (USR1 to the batch shell only) while the ranks cannot finish: once metrics.jsonl
# shows a third of the steps, both ranks are stopped (SIGSTOP), the signal goes to the batch shell, the test waits
# until the shell -> srun -> task relay has left USR1 pending at both ranks (/proc/PID/status), and only then lets
# them go on (SIGCONT). Every wait is on an event, none on time: a step can take 60 ms or 2 s.
mkfifo "$tmp/nap" || fail "mkfifo $tmp/nap"
exec {nap_fd}<>"$tmp/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || :; }  # a sleep without a fork: the poll stays fast on a busy machine
rows() { rows_n=0; [ -f "$metrics" ] && { mapfile -t rows_l <"$metrics"; rows_n=${#rows_l[@]}; }; }
usr1_pending() {  # usr1_pending PID: SIGUSR1 (bit 10) is pending for the process or one of its threads
  local m
  for m in $(sed -n 's/^\(ShdPnd\|SigPnd\):\t//p' "/proc/$1/status" "/proc/$1"/task/*/status 2>/dev/null); do
    (((0x$m >> 9) & 1)) && return 0
  done
  return 1
}
signal_at=$((steps / 3))
ranks=()
for ((i = 0; i < 60000; i++)); do
  rows
  if [ "$rows_n" -ge "$signal_at" ]; then
    mapfile -t ranks < <(pgrep -f "^$lcl train .*--run-dir $tmp/run\$")
    [ "${#ranks[@]}" -eq 2 ] && kill -STOP "${ranks[@]}" && break
  fi
  ((i % 100 == 99)) && case $(slurm_job_field "$jid" JobState) in RUNNING|PENDING|CONFIGURING) ;; *) break ;; esac
  nap 0.01
done
on_exit '[ ${#ranks[@]} -gt 0 ] && kill -CONT "${ranks[@]}" 2>/dev/null'
rows
step_at_signal=$rows_n
check "both ranks stopped mid-run (at step $step_at_signal of $steps, pids ${ranks[*]:-none})" \
  test "${#ranks[@]}" -eq 2 -a "$step_at_signal" -ge "$signal_at" -a "$step_at_signal" -lt "$steps"
[ "${#ranks[@]}" -eq 2 ] && [ "$step_at_signal" -lt "$steps" ] || { cat "$joblog"; fail "could not stop the ranks mid-run"; }
scancel --signal=USR1 --batch "$jid"
for ((i = 0; i < 3000; i++)); do
  usr1_pending "${ranks[0]}" && usr1_pending "${ranks[1]}" && break
  nap 0.01
done
check "USR1 reached both ranks through the batch shell and srun" usr1_pending "${ranks[0]}"
kill -CONT "${ranks[@]}"
echo "     USR1 sent to the batch shell at step $step_at_signal ($(elapsed))"

# The script requeues: the job becomes PENDING with Restarts=1 (Slurm delays a requeued job's start ~2 min).
restarts=0
for ((i = 0; i < 240; i++)); do
  restarts=$(slurm_job_field "$jid" Restarts)
  [ "${restarts:-0}" -ge 1 ] && [ "$(slurm_job_field "$jid" JobState)" = PENDING ] && break
  case $(slurm_job_field "$jid" JobState) in COMPLETED|FAILED|CANCELLED|TIMEOUT) break ;; esac
  sleep 0.5
done
check "the job was requeued (Restarts=1, PENDING)" test "${restarts:-0}" -ge 1
check "the first start exited 42 and the script requeued" grep -q "checkpoint committed (exit 42): requeueing" "$joblog"
ckpt_step=$(ls -d "$tmp/run/checkpoints"/step_???????? 2>/dev/null | sed 's/.*step_0*//' | sort -n | tail -1)
ckpt_step=${ckpt_step:-0}
check "a checkpoint was committed at the next step boundary (step $ckpt_step >= $step_at_signal)" \
  test "$ckpt_step" -ge "$step_at_signal" -a "$ckpt_step" -lt "$steps"
"$lcl" ckpt verify "$(printf '%s/run/checkpoints/step_%08d' "$tmp" "$ckpt_step")" >verify.log 2>&1
check "lcl ckpt verify accepts the committed checkpoint" test $? -eq 0
steps_first=$(last_step "$metrics")
check "the first start logged no step past the checkpoint" test "$steps_first" -eq "$ckpt_step"
echo "     requeued; checkpoint at step $ckpt_step ($(elapsed))"

# The requeued start begins once the job's credential has expired (cred_expire=10 in the harness's slurm.conf).
slurm_wait_job "$jid" COMPLETED 300 || slurm_job_report "$jid"
check "the requeued start finished (job COMPLETED, exit 0)" \
  test "$(slurm_job_field "$jid" JobState)" = COMPLETED -a "$(slurm_job_field "$jid" ExitCode)" = "0:0"
check "the job log shows both starts" grep -q "start 2 .*restart count 1" "$joblog"
check "every rank of the second start resumed from the checkpoint" test "$(grep -lE \
  "resumed from .*$(printf 'step_%08d' "$ckpt_step")" "$tmp"/run/logs/rank*.log 2>/dev/null | wc -l)" -eq 2
echo "     second start done ($(elapsed))"

# ---- the metrics: resumed at the checkpoint, final step reached, the uninterrupted run's losses --------------------
check "the metrics: every step once, the restart counts, the uninterrupted run's losses (lines above)" \
  python3 - "$tmp/ref/metrics.jsonl" "$metrics" "$ckpt_step" "$steps" <<'PY'
import json, sys
ref_path, run_path, ckpt, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ref = [json.loads(l) for l in open(ref_path) if l.strip()]
run = [json.loads(l) for l in open(run_path) if l.strip()]
ok = True
def check(name, cond, detail=""):
    global ok
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else "  " + detail))
    ok = ok and cond
steps = [r["step"] for r in run]
check("the run logged every step once, 1..%d, in order" % total, steps == list(range(1, total + 1)),
      "steps %s" % steps)
# The second start's first row is the step after the checkpoint: it resumed there rather than from scratch.
restart_key = next((k for k in (run[-1] if run else {}) if "restart" in k), None)
check("metrics record the Slurm restart count (a key with 'restart')", restart_key is not None,
      "keys %s" % sorted(run[-1].keys()) if run else "no rows")
if restart_key:
    counts = [(r["step"], r.get(restart_key)) for r in run]
    check("restart count 0 up to step %d, 1 after it" % ckpt,
          all(c == (0 if s <= ckpt else 1) for s, c in counts), str(counts))
ref_loss = {r["step"]: r["loss"] for r in ref}
run_loss = {r["step"]: r["loss"] for r in run}
check("the uninterrupted run logged steps 1..%d" % total, sorted(ref_loss) == list(range(1, total + 1)))
diff = [(s, ref_loss.get(s), run_loss.get(s)) for s in sorted(set(ref_loss) | set(run_loss))
        if ref_loss.get(s) != run_loss.get(s)]
check("losses equal the uninterrupted run's at every step (bitwise)", not diff, "differ at %s" % diff[:5])
sys.exit(0 if ok else 1)
PY

if [ "$harness_failures" -gt 0 ]; then
  echo "----- $joblog"; cat "$joblog"
  echo "----- rank 0 log"; tail -40 "$tmp/run/logs/rank0.log" 2>/dev/null || ls "$tmp/run" "$tmp/run/logs" 2>&1
fi
echo "done in $(elapsed)"
