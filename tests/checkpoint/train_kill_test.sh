#!/usr/bin/env bash
# Fault test of the real trainer's checkpoint saves: under mpirun, kill -9 one rank (rank 0 in
# half the trials) at a randomized moment of a save (checkpoint.test_phase_delay_ms widens each window: shards
# written, reports in, manifest written, renamed, `latest` moved), then `lcl train --resume auto`. The resumed run
# must start from the newest complete checkpoint (step_N with manifest.pb, never a .tmp), leave no .tmp behind,
# and every loss both runs logged, and every final tensor, must equal the uninterrupted run's bit for bit.
#   train_kill_test.sh [trials]      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/trainer/fixture.sh
source "$here/../trainer/fixture.sh"
trials=${1:-10}
steps=9 every=3 phase_ms=150
job=""
# Sleeps without a fork (a read that times out on a FIFO nobody writes): polls and kill times stay within a few
# ms of their mark even on a busy machine, where `sleep` alone costs 10+ ms.
mkfifo "$work/nap" || fail "mkfifo $work/nap"
exec {nap_fd}<>"$work/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || :; }
# A failed trial must not leave its job running while the work directory is removed.
# shellcheck disable=SC2016  # expanded at exit
on_exit '[ -n "$job" ] && kill "$job" 2>/dev/null; wait'
# mpirun ends the job when a rank dies; should a survivor block in a collective first, its watchdog (a low
# collective timeout) ends it, and `timeout` bounds every run regardless.
cat >"$work/base.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 collective_timeout_s: 10 }
batch { micro_batch: 1 global_batch: 4 }
optimizer { lr: 1e-3 warmup_ratio: 0.25 }
schedule { total_steps: $steps }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { every_steps: $every keep_last: 2 async: true }
EOF

train() {  # train LIMIT_S RUN_DIR [args...]: lcl train on 2 ranks that can never outlive LIMIT_S
  local limit=$1 run=$2
  shift 2
  # --run-dir last: rank_pid matches it at the end of the command line.
  # shellcheck disable=SC2086
  timeout --verbose -k 5 "$limit" $mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" "$@" --run-dir "$run"
}
rank_pid() {  # rank_pid RUN_DIR RANK: the pid of that rank of the job training into RUN_DIR
  local p r
  for p in $(pgrep -f "^$lcl train .*--run-dir $1\$"); do
    r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p; s/^PMI_RANK=//p' | head -1)
    [ "$r" = "$2" ] && echo "$p" && return 0
  done
  return 1
}
stages=("no trace (never started, or abandoned)" "shards in .tmp, no manifest" "manifest in .tmp, not renamed"
        "renamed, latest not moved" "committed, latest moved")
save_stage() {  # save_stage STEP_DIR: sets $stage to how far that save got ($stages); no forks, so it can poll fast
  local latest=""
  stage=0
  if [ -d "$1.tmp" ]; then
    stage=1
    [ -f "$1.tmp/manifest.pb" ] && stage=2
  elif [ -f "$1/manifest.pb" ]; then
    stage=3
    read -r latest 2>/dev/null <"${1%/*}/latest"
    # `latest` at this step or a later one (step names are zero-padded: text order is step order)
    [ -n "$latest" ] && [[ ! "$latest" < "${1##*/}" ]] && stage=4
  fi
}
check_losses() {  # check_losses METRICS_JSONL [complete]: each loss line equals the reference's, as text
  python3 - "$work/ref/metrics.jsonl" "$@" <<'PY'
import json, sys
def bad(why):
    sys.exit(f"{sys.argv[2]}: {why}")
def losses(path):
    lines = open(path).read().split("\n")
    if lines[-1]:  # no newline at the end: the line the kill tore (the trainer drops it on resume)
        print(f"(ignoring a torn last line of {path})", file=sys.stderr)
    rows = []
    for line in lines[:-1]:
        j = json.loads(line, parse_float=str, parse_int=str)  # the numbers as written: exact text
        rows.append((int(j["step"]), j["loss"]))
    return rows
ref = dict(losses(sys.argv[1]))
got = losses(sys.argv[2])
steps = [s for s, _ in got]
if steps != list(range(1, len(got) + 1)):
    bad(f"steps {steps} are not one history from step 1")
if len(sys.argv) > 3 and len(got) != len(ref):
    bad(f"{len(got)} steps logged, the uninterrupted run {len(ref)}")
for s, loss in got:
    if loss != ref[s]:
        bad(f"step {s}: loss {loss}, the uninterrupted run's {ref[s]}")
PY
}

train 300 "$work/ref" >"$work/ref.log" 2>&1 || fail "the reference run exited $?: $(grep -v '^I' "$work/ref.log" | tail -5)"
[ "$(wc -l <"$work/ref/metrics.jsonl")" -eq $steps ] || fail "the reference run logged $(wc -l <"$work/ref/metrics.jsonl") steps"
final=$(printf 'step_%08d' $steps)

RANDOM=20261125  # reproducible kill times
declare -A seen=()
for trial in $(seq 1 "$trials"); do
  run="$work/t$trial"
  t0=$SECONDS
  victim=$((trial % 2))
  target=$(((1 + RANDOM % ((steps - 1) / every)) * every))  # a save with training steps after it
  # Trials walk through five windows of the save, each entered when its start shows on disk, then killed at a
  # random point inside it (phase_ms apart: the trainer pauses that long between phases).
  case $(((trial - 1) % 5)) in
    0) trigger=1 offset_ms=$((RANDOM % phase_ms)) ;;               # shards being written, then on disk unreported
    1) trigger=1 offset_ms=$((phase_ms + RANDOM % phase_ms)) ;;    # reports in, manifest not written
    2) trigger=2 offset_ms=$((RANDOM % (phase_ms / 2))) ;;         # manifest written, directory not renamed
    3) trigger=3 offset_ms=$((RANDOM % (phase_ms / 2))) ;;         # renamed, `latest` not moved
    4) trigger=4 offset_ms=$((RANDOM % phase_ms)) ;;               # committed: decision, retention, next steps
  esac
  train 60 "$run" --set checkpoint.test_phase_delay_ms=$phase_ms >"$run.log1" 2>&1 &
  job=$!
  pid=""
  for _ in $(seq 1 600); do
    pid=$(rank_pid "$run" $victim) && break
    kill -0 $job 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$pid" ] || fail "trial $trial: rank $victim never started: $(grep -v '^I' "$run.log1" | tail -3)"
  dir="$run/checkpoints/$(printf 'step_%08d' $target)"
  save_stage "$dir"
  until [ "$stage" -ge "$trigger" ]; do
    kill -0 $job 2>/dev/null ||
      fail "trial $trial: the run ended before the save of step $target reached '${stages[$trigger]}': $(grep -v '^I' "$run.log1" | tail -3)"
    nap 0.005
    save_stage "$dir"
  done
  nap "$(printf '%d.%03d' $((offset_ms / 1000)) $((offset_ms % 1000)))"
  save_stage "$dir"
  at_kill=${stages[$stage]}
  kill -9 "$pid" 2>/dev/null || fail "trial $trial: rank $victim had already exited at the kill"
  killed_us=${EPOCHREALTIME//[.,]/}
  wait $job
  rc=$?
  end_ms=$(((${EPOCHREALTIME//[.,]/} - killed_us) / 1000))
  job=""
  if grep -q "timeout: sending signal" "$run.log1"; then
    fail "trial $trial: the job was still running 60 s after the kill (a surviving rank hung): $(tail -3 "$run.log1")"
  fi
  [ $rc -ne 0 ] || fail "trial $trial: the job exited 0 although rank $victim was killed"
  grep -q "checkpoint.test_phase_delay_ms=$phase_ms" "$run.log1" "$run"/logs/rank*.log ||
    fail "trial $trial: the trainer did not take checkpoint.test_phase_delay_ms (its warning is missing from the logs)"
  save_stage "$dir"
  after=${stages[$stage]}
  seen["$after"]=1
  newest=""  # the glob sorts by step (8 digits); step_N.tmp does not match it
  for d in "$run"/checkpoints/step_????????; do [ -f "$d/manifest.pb" ] && newest=$(basename "$d"); done
  cp "$run/metrics.jsonl" "$run.killed.jsonl" 2>/dev/null || : >"$run.killed.jsonl"

  train 120 "$run" --resume auto >"$run.log2" 2>&1 ||
    fail "trial $trial: the resume exited $?: $(grep -v '^I' "$run.log2" | tail -5)"
  resumed=$(sed -n 's/.*resumed from .*\/step_[0-9]*: step \([0-9]*\),.*/\1/p' "$run.log2" | head -1)
  if [ -z "$resumed" ]; then
    grep -q "no complete checkpoint" "$run.log2" || fail "trial $trial: the resume says neither where it resumed nor that it started fresh"
    resumed=0
  fi
  want=0
  [ -n "$newest" ] && want=$((10#${newest#step_}))
  [ "$resumed" -eq "$want" ] || fail "trial $trial: resumed at step $resumed, the newest complete checkpoint is ${newest:-none}"
  ls -d "$run"/checkpoints/*.tmp >/dev/null 2>&1 && fail "trial $trial: a .tmp directory survived the resume: $(cd "$run/checkpoints" && echo *)"
  out=$(check_losses "$run.killed.jsonl" 2>&1) || fail "trial $trial: the killed run's losses differ from the uninterrupted run's: $out"
  out=$(check_losses "$run/metrics.jsonl" complete 2>&1) || fail "trial $trial: the resumed run's losses differ from the uninterrupted run's: $out"
  python3 "$here/../trainer/compare_checkpoints.py" "$work/ref/checkpoints/$final" "$run/checkpoints/$final" >"$run.cmp" 2>&1 ||
    fail "trial $trial: final tensors differ from the uninterrupted run's: $(tail -3 "$run.cmp")"
  echo "trial $trial: killed rank $victim in the save of step $target, '${stages[$trigger]}' + ${offset_ms} ms" \
       "(job exit $rc ${end_ms} ms later): just before the kill '$at_kill', after it '$after';" \
       "newest complete ${newest:-none};" \
       "resumed at step $resumed;" \
       "$(wc -l <"$run.killed.jsonl")+$((steps - resumed)) losses and final tensors bitwise equal ($((SECONDS - t0)) s)"
done
echo "save states left by the kills: $(printf "'%s' " "${!seen[@]}")"
# The premise: the kills landed in different phases of a save (rank 0's kills leave one state per window).
need=3
[ "$trials" -ge 5 ] || need=1
[ "${#seen[@]}" -ge $need ] ||
  fail "the kills left the saves in only ${#seen[@]} state(s); raise phase_ms so each kill lands in its window"
echo "PASS: $trials kill -9 trials of lcl train: each resumed from the newest complete checkpoint, bitwise equal"
