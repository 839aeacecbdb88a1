#!/usr/bin/env bash
# Fault test: kill -9 one rank (rank 0 in half the trials) at randomized moments while checkpoints are being
# saved (phase delays widen the windows: shards written, reports in, manifest written, renamed), then resume
# with --resume auto. Each resumed run must start from the newest complete checkpoint, and every loss line of
# both runs, and the final parameters, must equal the uninterrupted run's, bit for bit.
#   kill_test.sh <ckpt_probe> [trials]
set -u
probe=$1
trials=${2:-10}
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
steps=30 every=3
job=""
# A failed trial must not leave its job running while the work directory is removed.
# shellcheck disable=SC2016  # expanded at exit
on_exit '[ -n "$job" ] && kill "$job" 2>/dev/null; wait'

# shellcheck disable=SC2086
$mpirun -np 2 "$probe" "$tmp/ref" $steps $every none 0 0 >/dev/null 2>&1 || fail "the reference run failed"
[ "$(wc -l <"$tmp/ref/losses.txt")" -eq $steps ] || fail "the reference run logged $(wc -l <"$tmp/ref/losses.txt") losses"

RANDOM=20261125  # reproducible kill times
for trial in $(seq 1 "$trials"); do
  run="$tmp/t$trial"
  victim=$((trial % 2))
  # shellcheck disable=SC2086
  $mpirun -np 2 "$probe" "$run" $steps $every none 100 30 >"$run.log1" 2>&1 &
  job=$!
  for _ in $(seq 1 100); do [ -f "$run/pids/rank$victim.pid" ] && break; sleep 0.1; done
  [ -f "$run/pids/rank$victim.pid" ] || fail "trial $trial: rank $victim never started"
  delay_ms=$((200 + RANDOM % 3500))
  sleep "$(printf '0.%03d' $((delay_ms % 1000)))"; sleep $((delay_ms / 1000))
  kill -9 "$(cat "$run/pids/rank$victim.pid")" 2>/dev/null
  wait $job
  rc=$?
  job=""
  newest=$(ls -d "$run"/checkpoints/step_???????? 2>/dev/null | while read -r d; do
             [ -f "$d/manifest.pb" ] && basename "$d"; done | sort | tail -1)
  # shellcheck disable=SC2086
  $mpirun -np 2 "$probe" "$run" $steps $every auto 0 0 >"$run.log2" 2>&1 || fail "trial $trial: resume failed: $(tail -3 "$run.log2")"
  resumed=$(sed -n 's/^resumed from .* at step \([0-9]*\)$/\1/p' "$run.log2")
  if [ -n "$newest" ]; then
    [ "$resumed" = "$((10#${newest#step_}))" ] || fail "trial $trial: resumed at '$resumed', newest complete is $newest"
  else
    [ -z "$resumed" ] || fail "trial $trial: resumed at $resumed with no complete checkpoint"
  fi
  # Every loss line either run wrote equals the reference's line for that step.
  while read -r line; do
    step=$(echo "$line" | cut -d' ' -f2)
    [ "$line" = "$(sed -n "${step}p" "$tmp/ref/losses.txt")" ] || fail "trial $trial: '$line' differs from the uninterrupted run"
  done <"$run/losses.txt"
  cmp -s "$run/final.txt" "$tmp/ref/final.txt" || fail "trial $trial: final parameters differ"
  ls -d "$run"/checkpoints/*.tmp >/dev/null 2>&1 && fail "trial $trial: a .tmp directory survived the resume"
  echo "trial $trial: killed rank $victim after ${delay_ms} ms (exit $rc); newest complete ${newest:-none}; resumed at ${resumed:-0}; losses and final parameters match"
done
echo "PASS: $trials kill -9 trials"
