#!/usr/bin/env bash
# Over-long episodes are never cut silently. With data.max_length below a 2-shot episode (~210 tokens here) and over
# a 1-shot one (~150): drop_shots trains them at shot 1, counts them in metrics.jsonl (too_long_episodes,
# dropped_shot_pairs, summed over the DP ranks) and warns once per rank with the numbers; reject stops the run with
# the counts; at the default max_length nothing is counted (zeros, still written).
#   too_long_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/c.pbtxt" <<EOF2
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 2 }
schedule { total_steps: 3 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { at_end: false }
EOF2

# metric RUN KEY: KEY of each metrics.jsonl row of RUN, one per line.
metric() {
  python3 - "$work/$1/metrics.jsonl" "$2" <<'PY' || fail "$1: metrics.jsonl lacks $2"
import json, sys
for line in open(sys.argv[1]):
    print(int(json.loads(line)[sys.argv[2]]))
PY
}

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/c.pbtxt" --run-dir "$work/drop" --set data.max_length=190 \
  >"$work/drop.log" 2>&1 || fail "drop_shots run exited $?: $(tail -5 "$work/drop.log")"
# Every episode (2 per step, 3 steps) lost one example pair; the counts are cumulative.
[ "$(metric drop too_long_episodes | tr '\n' ' ')" = "2 4 6 " ] ||
  fail "too_long_episodes per step: $(metric drop too_long_episodes | tr '\n' ' ') (want 2 4 6)"
[ "$(metric drop dropped_shot_pairs | tail -1)" = 6 ] || fail "dropped_shot_pairs: $(metric drop dropped_shot_pairs)"
for r in 0 1; do
  log=$work/drop/logs/rank$r.log
  n=$(grep -c "tokens at shot 2 but data.max_length is 190: trained at shot 1" "$log") || true
  [ "$n" = 1 ] || fail "rank $r: $n too-long warnings (want exactly 1) in $log"
done

# shellcheck disable=SC2086
if $mpirun -np 2 "$lcl" train --config "$work/c.pbtxt" --run-dir "$work/reject" --set data.max_length=190 \
  --set data.too_long=reject >"$work/reject.log" 2>&1; then
  fail "reject run succeeded; it should stop at the first over-long episode"
fi
grep -q "max_length is 190 and data.too_long is reject" "$work/reject.log" ||
  fail "reject run: no counted error: $(tail -5 "$work/reject.log")"

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/c.pbtxt" --run-dir "$work/fits" >"$work/fits.log" 2>&1 ||
  fail "default run exited $?: $(tail -5 "$work/fits.log")"
[ "$(metric fits too_long_episodes | tr '\n' ' ')" = "0 0 0 " ] || fail "default run counted too-long episodes"
echo "too_long_test: OK"
