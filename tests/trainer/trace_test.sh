#!/usr/bin/env bash
# logging.trace_steps: `lcl train` at np 2 writes a Chrome-trace timeline of the listed steps on every rank and all
# ranks in one file on rank 0. The files parse as trace-event JSON, hold the traced steps and only those, and show
# each part of a step (data wait, forward, backward, each gradient bucket's launch and completion, the sync wait,
# the optimizer's parts, the checkpoint fence) and the prefetch thread.
#   trace_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/c.pbtxt" <<EOF2
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 bucket_mb: 0.01 }
batch { micro_batch: 1 global_batch: 2 }
schedule { total_steps: 4 }
logging { every_steps: 1 progress: false tensorboard: false trace_steps: "2-3" }
eval { at_end: false }
checkpoint { every_steps: 3 at_end: false }
EOF2

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" train --config "$work/c.pbtxt" --run-dir "$work/run" >"$work/run.log" 2>&1 ||
  fail "traced run exited $?: $(tail -5 "$work/run.log")"
for f in rank0 rank1 all_ranks; do [ -s "$work/run/trace/$f.json" ] || fail "no trace/$f.json"; done
grep -q "trace of steps 2-3 written: $work/run/trace/all_ranks.json" "$work/run/logs/rank0.log" ||
  fail "rank 0's log does not say where the trace is"

python3 - "$work/run/trace" <<'PY' || fail "trace content (above)"
import json, sys
d = sys.argv[1]
def load(name):
    return json.load(open(f"{d}/{name}.json"))["traceEvents"]
ok = True
def need(cond, what):
    global ok
    if not cond:
        print("trace_test:", what); ok = False
for rank in (0, 1):
    ev = load(f"rank{rank}")
    need(all(e["pid"] == rank for e in ev), f"rank {rank}: events of another pid")
    names = [e["name"] for e in ev if e["ph"] != "M"]
    steps = sorted(e["args"]["step"] for e in ev if e["name"].startswith("step ") and e["ph"] == "X")
    need(steps == [2, 3], f"rank {rank}: traced steps {steps}, want [2, 3]")
    for part in ("data wait", "forward", "backward", "grad sync wait", "loss sum over dp", "checkpoint fence",
                 "optimizer step", "grad norm + clip", "adamw", "all-gather params", "grad buckets done"):
        need(names.count(part) == 2, f"rank {rank}: {names.count(part)} '{part}' events, want one per traced step")
    need(any(n.startswith("launch bucket ") for n in names), f"rank {rank}: no bucket launch")
    need(any(n.startswith("build micro-batch") for n in names), f"rank {rank}: no prefetch events")
    lanes = {e["args"]["name"] for e in ev if e["name"] == "thread_name"}
    need({"main", "prefetch"} <= lanes, f"rank {rank}: lanes {lanes}")
    # Every async collective that began in a traced step ended in it, and every span has a duration.
    begins = {(e["cat"], e["id"]) for e in ev if e["ph"] == "b"}
    ends = {(e["cat"], e["id"]) for e in ev if e["ph"] == "e"}
    need(begins and begins == ends, f"rank {rank}: {len(begins)} async begins, {len(ends)} ends")
    need(any(e["ph"] == "b" and e["name"].startswith("dp ReduceScatter") for e in ev),
         f"rank {rank}: no dp ReduceScatter on the timeline")
    need(all(e["dur"] >= 0 for e in ev if e["ph"] == "X"), f"rank {rank}: a negative duration")
    done = [e for e in ev if e["name"] == "grad buckets done"]
    need(all(e["args"]["launched_in_backward"] == e["args"]["buckets"] > 1 for e in done),
         f"rank {rank}: buckets not all launched in backward: {[e['args'] for e in done]}")
allr = load("all_ranks")
need({e["pid"] for e in allr} == {0, 1}, "all_ranks.json does not hold both ranks")
need(len(allr) == len(load("rank0")) + len(load("rank1")), "all_ranks.json is not the two ranks' events")
sys.exit(0 if ok else 1)
PY

# A bad list is refused before the run starts, naming the field.
# shellcheck disable=SC2086
if $mpirun -np 1 "$lcl" train --config "$work/c.pbtxt" --run-dir "$work/bad" --set logging.trace_steps=3-1 \
  >"$work/bad.log" 2>&1; then
  fail "trace_steps=3-1 was accepted"
fi
grep -q "logging.trace_steps = '3-1' has the range '3-1', which ends before it starts" "$work/bad.log" ||
  fail "bad trace_steps: $(tail -3 "$work/bad.log")"
echo "trace_test: OK"
