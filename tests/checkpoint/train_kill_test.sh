#!/usr/bin/env bash
# Fault test of the real trainer's checkpoint saves: under mpirun, kill -9 one rank of a 2-rank `lcl train`, then
# `lcl train --resume auto`. Two kinds of trial alternate (odd: uniform, even: save window), each killing rank 0 in
# half of its trials:
#   uniform      the kill moment is drawn uniformly over a whole run, from the moment the rank's process is up to
#                the job's end (set-up, steps, saves, the final save, shutdown), as measured on this machine: the
#                median of the last 5 uninterrupted runs (the reference, then every resume that started fresh), so
#                the draws follow its speed and its load; a kill drawn past the end of this run finds nothing to
#                kill ("after the end")
#   save window  a save is slowed down (checkpoint.test_phase_delay_ms widens each window: shards written, reports
#                in, manifest written, renamed, `latest` moved) and the kill lands at a random point of one window
# Whatever the moment, the resumed run (a fresh start when nothing was committed) must start from the newest
# complete checkpoint (step_N with manifest.pb, never a .tmp), leave no .tmp behind, pass `lcl ckpt verify` on every
# committed step, and every loss both runs logged, and every final tensor, must equal the uninterrupted run's bit
# for bit. A failed trial does not stop the others; the last line counts them all, and any failure exits 1.
#   train_kill_test.sh [trials] [seed]      (LCL_BIN, LCL_MPIRUN from ctest; trials 10, seed 20261125)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/trainer/fixture.sh
source "$here/../trainer/fixture.sh"
# A private copy of the binary: a rebuild of the shared build directory during a long run must neither break a
# trial nor change the trainer between the reference run and the trials (its libraries are found by RUNPATH).
cp "$lcl" "$work/lcl" || fail "cannot copy $lcl into $work"
lcl=$work/lcl
trials=${1:-10}
seed=${2:-20261125}
steps=9 every=3 phase_ms=150
final=$(printf 'step_%08d' $steps)
job=""
# Sleeps without a fork (a read that times out on a FIFO nobody writes): polls and kill times stay within a few
# ms of their mark even on a busy machine, where `sleep` alone costs 10+ ms.
mkfifo "$work/nap" || fail "mkfifo $work/nap"
exec {nap_fd}<>"$work/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || :; }
now_us() { now_us=${EPOCHREALTIME//[.,]/}; }  # sets $now_us, the wall clock in microseconds, without a fork
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
launch() {  # launch LIMIT_S RUN_DIR LOG RANK [args...]: starts the job in the background ($job) and waits until
  # RANK's process is up: its pid in $pid, the moment it was seen in $up_us. Returns 1 if the job ended first.
  local limit=$1 run=$2 log=$3 rank=$4
  shift 4
  train "$limit" "$run" "$@" >"$log" 2>&1 &
  job=$!
  until pid=$(rank_pid "$run" "$rank"); do
    kill -0 "$job" 2>/dev/null || return 1
    nap 0.005
  done
  now_us
  up_us=$now_us
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
phases=("set-up (no step logged)" "before the first checkpoint" "between saves" "inside a save"
        "after the final commit" "after the end (no kill)")
run_phase() {  # run_phase RUN_DIR: sets $phase (an index of $phases, 0-4) from what is on disk; no forks
  local d newest="" latest=""
  phase=0
  [ -s "$1/metrics.jsonl" ] && phase=1
  for d in "$1"/checkpoints/step_????????.tmp; do [ -d "$d" ] && phase=3 && return; done
  for d in "$1"/checkpoints/step_????????; do [ -f "$d/manifest.pb" ] && newest=${d##*/}; done
  [ -n "$newest" ] || return 0
  { read -r latest <"$1/checkpoints/latest"; } 2>/dev/null
  phase=3  # committed by the rename, `latest` not moved yet: still inside that save
  [ "$latest" = "$newest" ] || return 0
  phase=2
  [ "$newest" = "$final" ] && phase=4
  return 0
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
log_tail() { grep -v '^I' "$1" | tail -"${2:-3}"; }  # log_tail LOG [N]: its last N lines that are not INFO

# The reference: uninterrupted, and timed the way the uniform trials draw their kill moments (rank 0 up to the job's
# end), so the draws follow this machine's speed rather than a guess.
launch 300 "$work/ref" "$work/ref.log" 0 || fail "the reference run ended before rank 0 was seen: $(log_tail "$work/ref.log" 5)"
wait "$job"
rc=$?
now_us
job=""
ref_us=$((now_us - up_us))
[ $rc -eq 0 ] || fail "the reference run exited $rc: $(log_tail "$work/ref.log" 5)"
[ "$(wc -l <"$work/ref/metrics.jsonl")" -eq $steps ] || fail "the reference run logged $(wc -l <"$work/ref/metrics.jsonl") steps"
echo "reference run: $steps steps, saves at every $every, $((ref_us / 1000)) ms from rank 0 up to the job's end"
runs_us=("$ref_us")  # the durations of the uninterrupted runs so far
span() {  # span: sets $span_us, the median of the last 5 of $runs_us
  local n=${#runs_us[@]} sorted
  local last=("${runs_us[@]:n > 5 ? n - 5 : 0}")
  mapfile -t sorted < <(printf '%s\n' "${last[@]}" | sort -n)
  span_us=${sorted[${#sorted[@]} / 2]}
}

run_trial() {  # run_trial N: one kill and its resume; sets $mode $victim $what $phase $resumed, $why on a failure
  local trial=$1 run="$work/t$1" t0=$SECONDS j=$((($1 - 1) / 2)) target trigger offset_ms draw_us at_kill after dir d
  local rc end_ms killed=1 newest want out
  # The same draws in every trial, whatever its mode: trial N's moments depend only on the seed and N.
  target=$(((1 + RANDOM % ((steps - 1) / every)) * every))  # a save with training steps after it
  offset_ms=$((RANDOM % phase_ms))
  draw_us=$(((RANDOM << 15) | RANDOM))
  resumed="" phase="" what=""
  victim=$((j % 2))
  if [ $((trial % 2)) -eq 1 ]; then
    mode=uniform
    span
    draw_us=$((draw_us % span_us))
    launch 60 "$run" "$run.log1" $victim || { why="rank $victim never started: $(log_tail "$run.log1")"; return 1; }
    now_us
    d=$((up_us + draw_us - now_us))
    [ $d -gt 0 ] && printf -v d '%d.%06d' $((d / 1000000)) $((d % 1000000)) && nap "$d"
    what="at $((draw_us / 1000)) ms of $((span_us / 1000))"
  else
    mode=save
    # Save-window trials walk through five windows of a save (each victim in each window once every ten), each
    # entered when its start shows on disk, then killed at a random point inside it (phase_ms apart: the trainer
    # pauses that long between phases).
    case $((j % 5)) in
      0) trigger=1 ;;                                                # shards being written, then on disk unreported
      1) trigger=1 offset_ms=$((phase_ms + offset_ms)) ;;            # reports in, manifest not written
      2) trigger=2 offset_ms=$((offset_ms / 2)) ;;                   # manifest written, directory not renamed
      3) trigger=3 offset_ms=$((offset_ms / 2)) ;;                   # renamed, `latest` not moved
      4) trigger=4 ;;                                                # committed: decision, retention, next steps
    esac
    launch 60 "$run" "$run.log1" $victim --set checkpoint.test_phase_delay_ms=$phase_ms ||
      { why="rank $victim never started: $(log_tail "$run.log1")"; return 1; }
    dir="$run/checkpoints/$(printf 'step_%08d' $target)"
    save_stage "$dir"
    until [ "$stage" -ge "$trigger" ]; do
      kill -0 "$job" 2>/dev/null ||
        { why="the run ended before the save of step $target reached '${stages[$trigger]}': $(log_tail "$run.log1")"; return 1; }
      nap 0.005
      save_stage "$dir"
    done
    nap "$(printf '%d.%03d' $((offset_ms / 1000)) $((offset_ms % 1000)))"
    save_stage "$dir"
    at_kill=${stages[$stage]}
    what="in the save of step $target, '${stages[$trigger]}' + ${offset_ms} ms"
  fi
  run_phase "$run"
  kill -9 "$pid" 2>/dev/null || killed=0
  now_us
  local killed_us=$now_us
  wait "$job"
  rc=$?
  now_us
  end_ms=$(((now_us - killed_us) / 1000))
  job=""
  if grep -q "timeout: sending signal" "$run.log1"; then
    why="the job was still running 60 s after the kill (a surviving rank hung): $(tail -3 "$run.log1")"
    return 1
  fi
  if [ $rc -eq 0 ]; then
    # Only a kill drawn past this run's end leaves the job to succeed: then the rank had exited (or was exiting,
    # all done) and the trial is one without a kill, checked the same way (the resume is a no-op).
    [ $mode = uniform ] || { why="the job exited 0 although rank $victim was killed $what"; return 1; }
    phase=5
  elif [ $killed -eq 0 ]; then
    why="rank $victim had already exited at the kill ($what), yet the job exited $rc: $(log_tail "$run.log1")"
    return 1
  fi
  if [ $mode = save ]; then
    grep -q "checkpoint.test_phase_delay_ms=$phase_ms" "$run.log1" "$run"/logs/rank*.log ||
      { why="the trainer did not take checkpoint.test_phase_delay_ms (its warning is missing from the logs)"; return 1; }
    save_stage "$dir"
    after=${stages[$stage]}
    seen["$after"]=1
    what+=" (just before the kill '$at_kill', after it '$after')"
  fi
  newest=""  # the glob sorts by step (8 digits); step_N.tmp does not match it
  for d in "$run"/checkpoints/step_????????; do [ -f "$d/manifest.pb" ] && newest=$(basename "$d"); done
  cp "$run/metrics.jsonl" "$run.killed.jsonl" 2>/dev/null || : >"$run.killed.jsonl"

  # In the background, timed as the reference was: a resume that starts fresh is an uninterrupted run.
  local timed=1 resume_rc
  launch 120 "$run" "$run.log2" 0 --resume auto || timed=0
  wait "$job"
  resume_rc=$?
  now_us
  job=""
  [ $resume_rc -eq 0 ] || { why="the resume exited $resume_rc: $(log_tail "$run.log2" 5)"; return 1; }
  resumed=$(sed -n 's/.*resumed from .*\/step_[0-9]*: step \([0-9]*\),.*/\1/p' "$run.log2" | head -1)
  if [ -z "$resumed" ]; then
    grep -q "no complete checkpoint" "$run.log2" ||
      { why="the resume says neither where it resumed nor that it started fresh"; return 1; }
    resumed=0
  fi
  want=0
  [ -n "$newest" ] && want=$((10#${newest#step_}))
  [ "$resumed" -eq "$want" ] || { why="resumed at step $resumed, the newest complete checkpoint is ${newest:-none}"; return 1; }
  [ "$resumed" -ne 0 ] || [ $timed -eq 0 ] || runs_us+=($((now_us - up_us)))
  [ $phase -ne 5 ] || [ "$resumed" -eq $steps ] || { why="the run exited 0 but its newest checkpoint is ${newest:-none}"; return 1; }
  if ls -d "$run"/checkpoints/*.tmp >/dev/null 2>&1; then
    why="a .tmp directory survived the resume: $(cd "$run/checkpoints" && echo *)"
    return 1
  fi
  out=$(check_losses "$run.killed.jsonl" 2>&1) || { why="the killed run's losses differ from the uninterrupted run's: $out"; return 1; }
  out=$(check_losses "$run/metrics.jsonl" complete 2>&1) ||
    { why="the resumed run's losses differ from the uninterrupted run's: $out"; return 1; }
  python3 "$here/../trainer/compare_checkpoints.py" "$work/ref/checkpoints/$final" "$run/checkpoints/$final" >"$run.cmp" 2>&1 ||
    { why="final tensors differ from the uninterrupted run's: $(tail -3 "$run.cmp")"; return 1; }
  for d in "$run"/checkpoints/step_????????; do
    [ -f "$d/manifest.pb" ] || continue
    "$lcl" ckpt verify "$d" >"$run.verify" 2>&1 || { why="lcl ckpt verify ${d##*/} failed: $(tail -3 "$run.verify")"; return 1; }
  done
  echo "trial $trial ($mode): rank $victim $([ $killed -eq 1 ] && echo killed || echo 'not found (exited)') $what," \
       "landed '${phases[$phase]}' (job exit $rc ${end_ms} ms later); newest complete ${newest:-none};" \
       "resumed at step $resumed; $(wc -l <"$run.killed.jsonl")+$((steps - resumed)) losses and final tensors bitwise" \
       "equal, committed steps verified ($((SECONDS - t0)) s)"
}

RANDOM=$seed  # reproducible kill moments
declare -A seen=() by_phase=() by_resumed=() by_mode=([uniform]=0 [save]=0)
by_victim=(0 0)
failed=()
started=$SECONDS
for trial in $(seq 1 "$trials"); do
  if run_trial "$trial"; then
    rm -rf "$work/t$trial" "$work/t$trial".*  # a passing trial's files are not needed: keep the disk small
  else
    echo "FAIL trial $trial (seed $seed, $mode, rank $victim, ${what:-}): $why"
    if [ -n "$job" ]; then kill "$job" 2>/dev/null; wait "$job"; job=""; fi
    failed+=("$trial")
  fi
  by_mode[$mode]=$((by_mode[$mode] + 1))
  by_victim[victim]=$((by_victim[victim] + 1))
  [ -z "$phase" ] || by_phase["$mode ${phases[$phase]}"]=$((${by_phase["$mode ${phases[$phase]}"]:-0} + 1))
  [ -z "$resumed" ] || by_resumed[$resumed]=$((${by_resumed[$resumed]:-0} + 1))
done

counts() {  # counts MODE: "phase n, ..." for that mode, in the order of $phases
  local p out=""
  for p in "${phases[@]}"; do out+="${out:+, }$p ${by_phase["$1 $p"]:-0}"; done
  echo "$out"
}
resumes=""
for s in $(seq 0 $every $steps); do resumes+="${resumes:+, }$s: ${by_resumed[$s]:-0}"; done
echo "save states left by the save-window kills: $(printf "'%s' " "${!seen[@]}")"
span
echo "summary: $trials trials (seed $seed, $((SECONDS - started)) s; ${#runs_us[@]} uninterrupted runs timed, the last" \
     "span $((span_us / 1000)) ms): uniform ${by_mode[uniform]}, save window" \
     "${by_mode[save]}; killed rank 0 ${by_victim[0]}, rank 1 ${by_victim[1]};" \
     "uniform kills landed: $(counts uniform); save-window kills landed: $(counts save);" \
     "resumed from step $resumes; failures ${#failed[@]}${failed[*]:+ (trials ${failed[*]})}"
[ ${#failed[@]} -eq 0 ] || fail "${#failed[@]} of $trials trials failed: ${failed[*]}"
[ $((by_mode[uniform] + by_mode[save])) -eq "$trials" ] ||
  fail "only $((by_mode[uniform] + by_mode[save])) of $trials trials ran (the loop stopped: see the error above)"
# The premises: the save-window kills left saves in different states (rank 0's kills leave one state per window),
# and the uniform kills, given enough of them, landed in different phases of a run.
need=3
[ "${by_mode[save]}" -ge 5 ] || need=1
[ "${#seen[@]}" -ge $need ] ||
  fail "the save-window kills left the saves in only ${#seen[@]} state(s); raise phase_ms so each kill lands in its window"
landed=0
for p in "${phases[@]}"; do [ "${by_phase["uniform $p"]:-0}" -eq 0 ] || landed=$((landed + 1)); done
[ "${by_mode[uniform]}" -lt 10 ] || [ $landed -ge 3 ] ||
  fail "the ${by_mode[uniform]} uniform kills landed in only $landed phase(s) of a run"
echo "PASS: $trials kill -9 trials of lcl train: each resumed from the newest complete checkpoint, bitwise equal"
