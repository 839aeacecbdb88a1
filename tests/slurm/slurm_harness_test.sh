#!/usr/bin/env bash
# The Slurm test harness and launch/slurm/train.sbatch without the trainer: a throw-away cluster starts, a 2-task
# `srun --mpi=pmix` job wires one 2-rank MPI world (lcl bench comm), srun without PMIx is a clear error, and the
# batch script (with tests/slurm/fake_lcl.sh standing in for lcl) gets its warning signal from the time limit
# (srun launcher) or from `scancel --signal=USR1 --batch` (mpirun launcher), forwards it to the ranks, requeues on
# exit 42, resumes with --resume auto and passes SLURM_RESTART_COUNT on; bad input fails before any rank starts.
# Fails (never skips) without Slurm.
#   LCL_BIN=build/launch/lcl tests/slurm/slurm_harness_test.sh
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/lib/harness.sh
source "$here/tests/lib/harness.sh"
need_lcl
. "$here/tests/slurm/slurm_harness.sh"

chmod 0711 "$tmp"  # munged (user munge) must reach its socket under here
on_exit slurm_stop
slurm_start "$tmp/slurm" || fail "could not start the test Slurm cluster (see above)"
cd "$tmp" || fail "cd $tmp"

# --- srun --mpi=pmix wires 2 tasks into one MPI world -----------------------------------------------------------
srun --mpi=pmix -n 2 "$lcl" bench comm --min-bytes 1K --max-bytes 4K --rounds 1 >pmix.out 2>&1; rc=$?
check "srun --mpi=pmix -n 2 lcl bench comm exits 0" test $rc -eq 0
check "bench comm ran on a 2-rank world" grep -q "allreduce" pmix.out
[ $rc -eq 0 ] || tail -20 pmix.out

# --- a task count that differs from MPI's world size is a clear error before any work -----------------------------
# srun without PMIx: each task would be its own 1-rank world. Open MPI itself may stop first (it sees srun's
# environment but no PMI); either way the run must fail and say how to launch.
srun --mpi=none -n 2 "$lcl" bench comm --max-bytes 1K >nopmix.out 2>&1; rc=$?
check "srun without PMIx fails" test $rc -ne 0
if grep -q "SLURM_STEP_NUM_TASKS=2 but MPI's world size is 1.*--mpi=pmix" nopmix.out; then
  echo "     (lcl's own message)"
else
  echo "     (Open MPI stopped in MPI_Init before lcl's check could run)"
  check "srun without PMIx: Open MPI says it was direct-launched by srun without PMI" \
    grep -q 'direct launched using "srun"' nopmix.out
fi
# mpirun with fewer ranks than the allocation's tasks.
jid=$(sbatch --parsable -n 2 -o mismatch.out --wrap "$mpirun -np 1 $lcl bench comm --max-bytes 1K")
slurm_wait_job "$jid" FAILED 60
check "mpirun -np 1 in a 2-task allocation fails with exit 1" test "$(slurm_job_field "$jid" ExitCode)" = "1:0"
check "mpirun -np 1 in a 2-task allocation: lcl names SLURM_NTASKS and the world size" \
  grep -q "Slurm says SLURM_NTASKS=2 but MPI's world size is 1" mismatch.out

# --- train.sbatch: time-limit warning -> USR1 -> ranks exit 42 -> requeue -> resumed start finishes -------------
touch tiny.pbtxt
# The template's shape is 2 nodes x 8 GPUs; this node has 2 tasks' worth of CPUs and no GPUs.
shape=(--nodes=1 --ntasks-per-node=2 --gpus-per-node=0 --cpus-per-task=1)
mkdir -p logs
export LCL_BIN=$here/tests/slurm/fake_lcl.sh FAKE_LCL_SECONDS=200
# run_requeue_job NAME LAUNCHER timelimit|scancel: submit, wait for the requeue, let it restart, wait for the end.
# timelimit: a 2-minute limit with the warning 45 s ahead; Slurm may send it up to a minute early, so it comes
# 15-75 s in, after the ranks started. scancel: the test sends the same USR1 to the batch shell once ranks run.
run_requeue_job() {
  local name=$1 launcher=$2 mode=$3 jid t0 t_pending limit i
  mkdir -p "$name"
  export FAKE_LCL_OUT=$tmp/$name LCL_LAUNCHER=$launcher LCL_RUN_DIR=$tmp/$name/run
  export LCL_MPIRUN_SH_ARGS="--container --bind none"
  t0=$(date +%s)
  limit=(--time=2 --signal=B:USR1@45)
  [ "$mode" = scancel ] && limit=(--time=5)
  jid=$(sbatch --parsable -J "$name" "${shape[@]}" "${limit[@]}" -o "logs/%x-%j.out" \
        "$here/launch/slurm/train.sbatch" tiny.pbtxt --set a.b=1)
  check "$name: sbatch accepted the job" test -n "$jid"
  [ -n "$jid" ] || return
  if [ "$mode" = scancel ]; then
    for ((i = 0; i < 120; i++)); do
      [ -s "$name/rank0.txt" ] && [ -s "$name/rank1.txt" ] && break
      sleep 0.5
    done
    scancel --signal=USR1 --batch "$jid"
  fi
  # scontrol requeue makes the job pending again with Restarts=1.
  local restarts=0
  for ((i = 0; i < 300; i++)); do
    restarts=$(slurm_job_field "$jid" Restarts)
    case $(slurm_job_field "$jid" JobState) in COMPLETED|FAILED|CANCELLED|TIMEOUT) break ;; esac
    [ "${restarts:-0}" -ge 1 ] && [ "$(slurm_job_field "$jid" JobState)" = PENDING ] && break
    sleep 0.5
  done
  t_pending=$(date +%s)
  check "$name: the job was requeued (Restarts=1, PENDING)" test "${restarts:-0}" -ge 1
  echo "     $name: requeued $((t_pending - t0)) s after submission"
  # The requeued start begins once the job's credential has expired (cred_expire=10 in the harness's slurm.conf);
  # forcing it sooner (StartTime=now) makes slurmd refuse it ("Job credential revoked").
  scontrol update JobId="$jid" TimeLimit=5 >/dev/null
  slurm_wait_job "$jid" COMPLETED 90 || slurm_job_report "$jid"
  check "$name: the requeued start completed" test "$(slurm_job_field "$jid" JobState)" = COMPLETED
  local log=logs/$name-$jid.out
  check "$name: the batch shell trapped USR1" grep -q "got SIGUSR1" "$log"
  check "$name: the batch script requeued on exit 42" grep -q "checkpoint committed (exit 42): requeueing" "$log"
  check "$name: the second start finished" grep -q "training finished" "$log"
  check "$name: one log for both starts (open-mode append)" test "$(grep -c 'tasks on 1 node' "$log")" -eq 2
  for r in 0 1; do
    local f=$name/rank$r.txt
    check "$name: rank $r got USR1 and exited 42 in the first start" grep -q "preempted rank=$r signal=USR1" "$f"
    check "$name: rank $r started twice, with restart counts 0 and 1" \
      test "$(grep -c '^start' "$f")" -eq 2 -a "$(grep -c 'restart=0 ' "$f")" -eq 1 -a "$(grep -c 'restart=1 ' "$f")" -eq 1
    check "$name: rank $r got train --config, the overrides, --resume auto and the run dir" \
      grep -q "args=train --config tiny.pbtxt --set a.b=1 --resume auto --run-dir $tmp/$name/run" "$f"
    check "$name: rank $r finished in the second start" grep -q "finished rank=$r" "$f"
  done
  if [ "$harness_failures" -gt 0 ]; then echo "----- $log"; cat "$log"; fi
}
run_requeue_job requeue-srun srun timelimit
run_requeue_job requeue-mpirun mpirun scancel

# --- bad input fails in the batch script, before any rank starts ---------------------------------------------------
bad_job() {  # bad_job NAME EXPECTED_MESSAGE [sbatch script arguments...]
  local name=$1 msg=$2 jid; shift 2
  jid=$(sbatch --parsable -J "$name" "${shape[@]}" --time=1 -o "logs/%x-%j.out" "$here/launch/slurm/train.sbatch" "$@")
  check "$name: sbatch accepted the job" test -n "$jid"
  [ -n "$jid" ] || return
  slurm_wait_job "$jid" FAILED 60
  check "$name: the job failed with exit code 2" test "$(slurm_job_field "$jid" ExitCode)" = "2:0"
  check "$name: the log says '$msg'" grep -qF "$msg" "logs/$name-$jid.out"
  check "$name: no rank started" test ! -e "$tmp/$name/rank0.txt"
}
export FAKE_LCL_OUT=$tmp/missing-config LCL_RUN_DIR=$tmp/bad/run
mkdir -p "$tmp/missing-config"
bad_job missing-config "config file 'nope.pbtxt' does not exist" nope.pbtxt
export FAKE_LCL_OUT=$tmp/bad-run-dir LCL_RUN_DIR=$tmp/tiny.pbtxt/run
mkdir -p "$tmp/bad-run-dir"
bad_job bad-run-dir "run directory '$tmp/tiny.pbtxt/run' cannot be created or is not writable" tiny.pbtxt
