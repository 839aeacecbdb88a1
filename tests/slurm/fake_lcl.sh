#!/usr/bin/env bash
# Stands in for `lcl train` in the harness test, so the batch script's signal, requeue and resume logic is tested
# on its own: it records its arguments and Slurm environment, "trains" until SIGUSR1/SIGTERM and then exits 42
# like the real trainer (cluster/exit_codes.h), or exits 0 after FAKE_LCL_SECONDS.
# Environment: FAKE_LCL_OUT (directory for rank<N>.txt, required), FAKE_LCL_SECONDS (default 60; a requeued
# start, SLURM_RESTART_COUNT >= 1, runs FAKE_LCL_RESTART_SECONDS, default 2).
out=${FAKE_LCL_OUT:?FAKE_LCL_OUT must name a directory}
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
secs=${FAKE_LCL_SECONDS:-60}
[ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] && secs=${FAKE_LCL_RESTART_SECONDS:-2}
echo "start rank=$rank restart=${SLURM_RESTART_COUNT:-unset} args=$*" >>"$out/rank$rank.txt"
signal=""
trap 'signal=USR1' USR1
trap 'signal=TERM' TERM
for ((i = 0; i < secs * 10; i++)); do
  sleep 0.1
  if [ -n "$signal" ]; then
    echo "preempted rank=$rank signal=$signal after ${i}00 ms" >>"$out/rank$rank.txt"
    exit 42
  fi
done
echo "finished rank=$rank" >>"$out/rank$rank.txt"
exit 0
