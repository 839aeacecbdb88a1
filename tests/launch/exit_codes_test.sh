#!/usr/bin/env bash
# Every way a 2-rank `lcl train` under mpirun can end, and the exit code each gives (the table in
# docs/launching.md, the list in cluster/exit_codes.h): what mpirun returns, and what each rank returned where it
# ended by itself (a wrapper writes it down; a rank mpirun killed writes nothing).
#   0 success | 1 config error | 1 data error | 2 usage error | 4 the final save not committed |
#   42 SIGUSR1 / SIGTERM, checkpoint committed | 3 the watchdog (one rank stopped) | 137 a rank lost (kill -9)
# Signals are sent once the run has logged a step (metrics.jsonl), never on time.
#   exit_codes_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/trainer/fixture.sh
source "$here/../trainer/fixture.sh"
cat >"$work/base.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" shot: 1 workers: 1 }
parallel { threads: 1 collective_timeout_s: 4 }
batch { micro_batch: 1 global_batch: 2 }
schedule { total_steps: 2 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { every_steps: 0 }
EOF
# rank.sh RC_DIR EXEC_RANK CMD...: the rank numbered EXEC_RANK becomes CMD itself (so that a signal to it is a
# signal to the rank); every other rank runs CMD and writes its exit code to RC_DIR/rank<r>.
cat >"$work/rank.sh" <<'EOF'
#!/usr/bin/env bash
dir=$1 exec_rank=$2
shift 2
rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}
[ "$rank" = "$exec_rank" ] && exec "$@"
"$@"
rc=$?
echo $rc >"$dir/rank$rank"
exit $rc
EOF
job=""
# shellcheck disable=SC2016  # expanded at exit
on_exit '[ -n "$job" ] && kill "$job" 2>/dev/null; wait'

start() {  # start NAME EXEC_RANK [lcl-train-arguments...]: the 2-rank job in the background, its pid in $job
  local name=$1 exec_rank=$2
  shift 2
  mkdir -p "$work/$name.rc"
  # shellcheck disable=SC2086
  timeout -k 5 120 $mpirun -np 2 bash "$work/rank.sh" "$work/$name.rc" "$exec_rank" \
    "$lcl" train --config "$work/base.pbtxt" "$@" --run-dir "$work/$name" >"$work/$name.log" 2>&1 &
  job=$!
}
finish() {  # finish: waits for the job; its status in $rc
  wait "$job"
  rc=$?
  job=""
}
run() {  # run NAME [lcl-train-arguments...]: the job in the foreground, its status in $rc
  start "$@"
  finish
}
ranks() {  # ranks NAME: the exit codes the ranks wrote, "r0=C r1=C" (a killed rank missing)
  local f out=""
  for f in "$work/$1.rc"/rank*; do [ -f "$f" ] && out+="${out:+ }${f##*/rank}=$(cat "$f")"; done
  echo "$out"
}
rank_pid() {  # rank_pid NAME RANK: the pid of that rank's lcl process
  local p r
  for p in $(pgrep -f "^$lcl train .*--run-dir $work/$1\$"); do
    r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p; s/^PMI_RANK=//p' | head -1)
    [ "$r" = "$2" ] && echo "$p" && return 0
  done
  return 1
}
await_step() {  # await_step NAME: until the run has logged a step (or the job ended)
  until [ -s "$work/$1/metrics.jsonl" ]; do kill -0 "$job" 2>/dev/null || return 1; sleep 0.1; done
}
all_one() { [ -n "$1" ] && ! tr ' ' '\n' <<<"$1" | grep -qv '=1$'; }  # all_one "r0=1 r1=1"
killed_or_3() { [ -z "$1" ] || [ "$1" = "0=3" ]; }
none_left() { ! pgrep -f "^$lcl train .*--run-dir $1\$" >/dev/null; }
explain() { [ "$rc" = "$1" ] || grep -v '^I' "$work/$2.log" | tail -8; }

# --- 0: success ---
run ok -1
explain 0 ok
check "success: mpirun exits 0 (got $rc)" test "$rc" -eq 0
check "success: every rank exits 0 ($(ranks ok))" test "$(ranks ok)" = "0=0 1=0"
check "success: the final checkpoint is committed" test -f "$work/ok/checkpoints/step_00000002/manifest.pb"

# --- 1: a config error, a data error (every rank that ends by itself exits 1; the first one ends the job) ---
for case in "config:--set optimizer.lr=-1:optimizer.lr = -1.000000 must be > 0" \
            "data:--set data.root=$work/nowhere:data error: data.root '$work/nowhere' does not exist"; do
  IFS=: read -r name set why <<<"$case"
  read -r -a args <<<"$set"
  run "$name" -1 "${args[@]}"
  explain 1 "$name"
  check "$name error: mpirun exits 1 (got $rc)" test "$rc" -eq 1
  check "$name error: the ranks that ended by themselves exit 1 ($(ranks "$name"))" \
    all_one "$(ranks "$name")"
  check "$name error: the message says '$why'" grep -qF -- "$why" "$work/$name.log"
done

# --- 2: a usage error ---
# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --run-dir "$work/usage" >"$work/usage.log" 2>&1
rc=$?
explain 2 usage
check "usage error: mpirun exits 2 (got $rc)" test "$rc" -eq 2
check "usage error: the message names --config" grep -qF -- "--config is required" "$work/usage.log"

# --- 4: the final save fails (a file where checkpoints/ goes) ---
mkdir -p "$work/nosave" && : >"$work/nosave/checkpoints"
run nosave -1 --set checkpoint.at_end=true
explain 4 nosave
check "failed final save: mpirun exits 4 (got $rc)" test "$rc" -eq 4
check "failed final save: every rank exits 4 ($(ranks nosave))" test "$(ranks nosave)" = "0=4 1=4"
check "failed final save: the log names the step" grep -q "the final checkpoint (step 2) was NOT committed" \
  "$work/nosave.log"

# --- 42: SIGUSR1 to rank 1, SIGTERM to rank 0, mid-run: committed at an agreed step, every rank exits 42 ---
for case in "usr1:USR1:1" "term:TERM:0"; do
  IFS=: read -r name signal victim <<<"$case"
  start "$name" -1 --set schedule.total_steps=100000
  await_step "$name" || fail "$name: the run ended before its first step: $(tail -5 "$work/$name.log")"
  pid=$(rank_pid "$name" "$victim") || fail "$name: no rank $victim process"
  kill -"$signal" "$pid"
  finish
  explain 42 "$name"
  check "SIG$signal to rank $victim: mpirun exits 42 (got $rc)" test "$rc" -eq 42
  check "SIG$signal to rank $victim: every rank exits 42 ($(ranks "$name"))" test "$(ranks "$name")" = "0=42 1=42"
  saved=$(find "$work/$name/checkpoints" -name manifest.pb 2>/dev/null | head -1)
  check "SIG$signal to rank $victim: a checkpoint is committed ($saved)" test -n "$saved"
done

# --- 3: the watchdog: rank 1 stopped (SIGSTOP) mid-run, rank 0 waits in a collective past collective_timeout_s ---
start watchdog 1 --set schedule.total_steps=100000
await_step watchdog || fail "watchdog: the run ended before its first step: $(tail -5 "$work/watchdog.log")"
pid=$(rank_pid watchdog 1) || fail "watchdog: no rank 1 process"
kill -STOP "$pid"
finish
explain 3 watchdog
check "watchdog: mpirun exits 3 (got $rc)" test "$rc" -eq 3
# Rank 0's watchdog ends the job through MPI_Abort(3): mpirun returns 3 and ends rank 0's wrapper too.
check "watchdog: rank 0 ended by its watchdog's abort ($(ranks watchdog))" killed_or_3 "$(ranks watchdog)"
check "watchdog: rank 0 names the collective and the exit code" \
  grep -qE "watchdog: rank 0: collective .* did not finish within 4000 ms.*exit code 3" "$work/watchdog.log"

# --- a rank lost: kill -9 rank 1 mid-run: mpirun gives its status (137); rank 0 is ended (killed, or exit 3) ---
start lost 1 --set schedule.total_steps=100000
await_step lost || fail "lost: the run ended before its first step: $(tail -5 "$work/lost.log")"
pid=$(rank_pid lost 1) || fail "lost: no rank 1 process"
kill -KILL "$pid"
finish
explain 137 lost
check "rank lost: mpirun exits 137 (got $rc)" test "$rc" -eq 137
check "rank lost: rank 0 was killed or exited 3 ($(ranks lost))" killed_or_3 "$(ranks lost)"
check "rank lost: no rank of the job is left" none_left "$work/lost"
