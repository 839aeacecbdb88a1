#!/usr/bin/env bash
# The trainer's INFO lines reach the per-rank log files (<run_dir>/logs/rank<r>.log, written by cluster/logging's
# glog sink), whatever LibTorch's own logging is: the train summary on every rank, "resumed from" after a resume,
# and the eval lines on rank 0, each with its "[rank r/N]" tag. A LibTorch built without glog redefines LOG; where
# its LOG wins (cluster/log.h), these lines go to c10's logger, which drops INFO, and this test fails.
#   rank_log_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/c.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" shot: 1 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 2 }
schedule { total_steps: 2 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: true shots: [0] max_episodes: 2 max_new_tokens: 2 batch: 2 }
checkpoint { every_steps: 1 keep_last: 0 async: false }
EOF
run=$work/run
expect() {  # expect FILE PATTERN WHAT
  grep -q -- "$2" "$1" || fail "$3: no line matching '$2' in $1: $(tail -3 "$1" 2>/dev/null)"
}

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/c.pbtxt" --run-dir "$run" --set schedule.total_steps=1 \
  --set eval.at_end=false >"$work/first.log" 2>&1 || fail "first run exited $?: $(tail -5 "$work/first.log")"
# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/c.pbtxt" --run-dir "$run" --resume auto >"$work/second.log" 2>&1 ||
  fail "resumed run exited $?: $(tail -5 "$work/second.log")"

for r in 0 1; do
  log=$run/logs/rank$r.log
  [ -s "$log" ] || fail "no rank log $log"
  expect "$log" "\] \[rank $r/2\] train: world 2 = dp 2 x tp 1" "rank $r: train summary"
  expect "$log" "\] \[rank $r/2\] resumed from .*step_00000001" "rank $r: resume"
done
expect "$run/logs/rank0.log" "\] \[rank 0/2\] eval step 2 shots 0: accuracy" "rank 0: eval line"
echo "rank_log_test: OK"
