#!/usr/bin/env bash
# `lcl report` on a short real run (untrained evaluation, 6 steps, a resume to 8, checkpoints and evaluations on the
# way): every figure draws the points the run's files hold (read back from each figure's data sidecar) with the
# checkpoint and resume steps marked, index.html renders in headless Chromium with every image loaded, and bad
# input (no metrics, a line cut short by a killed run, non-numeric values, no matplotlib) gives a clear message or
# a figure that skips the bad line and says so.
#   report_test.sh      (LCL_BIN, LCL_MPIRUN, LCL_SOURCE_DIR from ctest; LCL_PYTHON: a python with matplotlib)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/trainer/fixture.sh
source "$here/../trainer/fixture.sh"
chromium=$(command -v chromium || command -v chromium-browser) ||
  fail "chromium not found: the test renders index.html with Debian's chromium package (apt-get install chromium)"
# The python lcl report picks (cmd_report.cc): LCL_PYTHON, else the project's .venv, else python3.
py=${LCL_PYTHON:-${LCL_SOURCE_DIR:-$here/../..}/.venv/bin/python}
[ -x "$py" ] || py=python3

cat >"$work/base.pbtxt" <<CFG
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 4 }
optimizer { lr: 1e-3 warmup_ratio: 0.25 }
schedule { total_steps: 6 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { every_steps: 3 shots: [0, 1, 2] max_episodes: 4 batch: 4 }
checkpoint { every_steps: 3 keep_last: 0 }
CFG
run=$work/run
lcl_run() {  # lcl_run NAME SUBCOMMAND ARGS...: a 2-rank run that must exit 0
  local name=$1
  shift
  # shellcheck disable=SC2086
  $mpirun -np 2 "$lcl" "$@" --config "$work/base.pbtxt" --run-dir "$run" >"$work/$name.log" 2>&1 ||
    fail "$name: lcl $1 exited $?: $(grep -v '^I' "$work/$name.log" | tail -5)"
}
lcl_run untrained eval                                   # eval.jsonl rows at step 0
lcl_run train train                                      # steps 1-6; checkpoints and evaluations at 3 and 6
lcl_run resumed train --resume auto --set schedule.total_steps=8  # resumes at 6; checkpoint and evaluation at 8

"$lcl" report "$run" --out "$work/report" --config "$work/base.pbtxt" --set schedule.total_steps=8 \
  >"$work/report.log" 2>&1; rc=$?
grep -q "cannot import matplotlib" "$work/report.log" &&
  fail "matplotlib is missing (pip package matplotlib, launch/requirements.txt): $(cat "$work/report.log")"
check "lcl report exits 0" test $rc -eq 0
for f in loss throughput accuracy_steps accuracy_shots; do
  check "$f.png and $f.json written" test -s "$work/report/$f.png" -a -s "$work/report/$f.json"
done

check "every figure draws the run's points, with saves and resumes marked" python3 - "$run" "$work/report" <<'PY'
import json, os, sys
run, out = sys.argv[1:]
metrics = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
evals = [json.loads(l) for l in open(os.path.join(run, "eval.jsonl"))]
steps = [float(r["step"]) for r in metrics]
assert steps == [float(s) for s in range(1, 9)], steps   # a resumed run is one history
def fig(name):
    return json.load(open(os.path.join(out, name + ".json")))["axes"]
def lines(axes):
    return {l["label"]: l for l in axes["lines"]}
failures = []
def expect(what, got, want):
    if got != want:
        failures.append(f"{what}: drawn {got}, expected {want}")
loss, lr = fig("loss")
expect("loss x", lines(loss)["loss"]["x"], steps)
expect("loss y", lines(loss)["loss"]["y"], [r["loss"] for r in metrics])
smoothed = [l for l in loss["lines"] if l["label"].startswith("smoothed")]
expect("smoothed loss points", len(smoothed[0]["x"]) if smoothed else 0, len(steps))
expect("lr y", lines(lr)["learning rate"]["y"], [r["lr"] for r in metrics])
tput, step_time = fig("throughput")
expect("tokens/s y", lines(tput)["tokens/s"]["y"], [r["tokens_per_sec"] for r in metrics])
for label, field in [("step time (total)", "step_time_ms"), ("data wait", "data_wait_ms"), ("forward", "forward_ms"),
                     ("backward", "backward_ms"), ("exposed communication", "sync_wait_ms"),
                     ("optimizer", "optimizer_ms")]:
    got = lines(step_time).get(label)
    expect(label, got["y"] if got else None, [r[field] for r in metrics])
for axes in (loss, lr, tput, step_time):
    expect("checkpoint marks", sorted(axes["markers"]["checkpoint"]), [3.0, 6.0, 8.0])
    expect("resume marks", axes["markers"]["resume"], [6.0])
(acc,) = fig("accuracy_steps")
for k in (0, 1, 2):
    rows = [r for r in evals if r["shots"] == k]
    got = lines(acc).get(f"{k}-shot")
    expect(f"{k}-shot x", got["x"] if got else None, [0.0, 3.0, 6.0, 8.0])
    expect(f"{k}-shot y", got["y"] if got else None, [r["accuracy"] for r in rows])
(shots,) = fig("accuracy_shots")
for label, step in [("untrained (step 0)", 0), ("step 8", 8)]:
    got = lines(shots).get(label)
    expect(f"{label} x", got["x"] if got else None, [0.0, 1.0, 2.0])
    expect(f"{label} y", got["y"] if got else None, [r["accuracy"] for r in evals if r["step"] == step])
for f in failures:
    print("  " + f)
sys.exit(1 if failures else 0)
PY
check "index.html shows the resolved config's run_dir" grep -qF "run_dir: &quot;$run&quot;" "$work/report/index.html"
check "... and the resume's total_steps" grep -qF "total_steps: 8" "$work/report/index.html"
check "index.html shows the grid" grep -qF "world 2 = dp 2 x tp 1" "$work/report/index.html"
check "index.html has the final table beside the untrained one" grep -qF "<th>untrained</th><th>step 8</th>" \
  "$work/report/index.html"

# Rendered offline by a real browser: every image loads (the page marks them on load), and a screenshot of the
# page at 1000x2400 shows the loss figure's blue line.
chrome=("$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/chromium")
timeout 120 "${chrome[@]}" --virtual-time-budget=5000 --dump-dom "file://$work/report/index.html" \
  >"$work/dom.html" 2>"$work/chromium.log"
check "chromium loads all 4 images of index.html" grep -qF 'data-images-loaded="4/4"' "$work/dom.html"
timeout 120 "${chrome[@]}" --window-size=1000,2400 --screenshot="$work/shot.png" "file://$work/report/index.html" \
  >>"$work/chromium.log" 2>&1
check "screenshot is 1000x2400 and shows the figures" "$py" - "$work/shot.png" <<'PY'
import sys
import matplotlib.image
img = matplotlib.image.imread(sys.argv[1])  # [H, W, 3 or 4] floats in 0..1
assert img.shape[:2] == (2400, 1000), img.shape
blue = (abs(img[..., 0] - 0x1f / 255) < 0.05) & (abs(img[..., 1] - 0x77 / 255) < 0.05) & \
       (abs(img[..., 2] - 0xb4 / 255) < 0.05)
assert blue.sum() > 200, f"only {blue.sum()} pixels of the loss line's blue"
PY

# --- bad input ---
mkdir -p "$work/empty"
"$lcl" report "$work/empty" >"$work/empty.log" 2>&1; rc=$?
check "a run dir with no metrics exits 1" test $rc -eq 1
check "... with one line naming metrics.jsonl and eval.jsonl" \
  test "$(wc -l <"$work/empty.log")" -eq 1 -a -n "$(grep -F "metrics.jsonl and no eval.jsonl" "$work/empty.log")"

# A killed run: the last metrics line cut short, one loss that is not a number, one accuracy that is not either.
killed=$work/killed
mkdir -p "$killed"
cp -r "$run/logs" "$killed/"
head -n 7 "$run/metrics.jsonl" | sed '3s/"loss":[^,]*/"loss":"oops"/' >"$killed/metrics.jsonl"
tail -n 1 "$run/metrics.jsonl" | head -c 40 >>"$killed/metrics.jsonl"
sed '2s/"accuracy":[^,]*/"accuracy":null/' "$run/eval.jsonl" >"$killed/eval.jsonl"
"$lcl" report "$killed" >"$work/killed.log" 2>&1; rc=$?
check "a killed run's report exits 0" test $rc -eq 0
check "... says the last line is cut short" grep -qF "metrics.jsonl: skipped 1 line(s): line 8 is cut short" \
  "$work/killed.log"
check "... says which loss is not a number" grep -qF "'loss' is not a finite number at step(s) 3:" \
  "$work/killed.log"
check "... says which eval line it skipped" grep -qF "eval.jsonl: skipped 1 line(s): line 2: 'accuracy' is null" \
  "$work/killed.log"
check "... lists the same on the page" grep -qF "line 8 is cut short" "$killed/report/index.html"
check "... and draws the rest" python3 - "$killed/report" <<'PY'
import json, sys
loss, lr = json.load(open(sys.argv[1] + "/loss.json"))["axes"]
(acc,) = json.load(open(sys.argv[1] + "/accuracy_steps.json"))["axes"]
lines = {l["label"]: len(l["x"]) for l in loss["lines"] + lr["lines"] + acc["lines"]}
want = {"loss": 6, "learning rate": 7, "0-shot": 4, "1-shot": 3, "2-shot": 4}
assert all(lines.get(k) == v for k, v in want.items()), lines
PY

# No evaluation yet: the training figures only, and the page says so.
mkdir -p "$work/noeval"
cp "$run/metrics.jsonl" "$work/noeval/"
"$lcl" report "$work/noeval" >"$work/noeval.log" 2>&1; rc=$?
check "a run without eval.jsonl draws the training figures" test $rc -eq 0 -a -s "$work/noeval/report/loss.png"
check "... draws no accuracy figure" test ! -e "$work/noeval/report/accuracy_shots.png"
check "... and says why" grep -qF "eval.jsonl: not found (no evaluation has run yet)" "$work/noeval/report/index.html"

# A python without matplotlib: a clear error naming the package and how to install it.
printf '#!/bin/sh\nexec python3 -S "$@"\n' >"$work/bare-python"
chmod +x "$work/bare-python"
"$lcl" report "$run" --python "$work/bare-python" >"$work/bare.log" 2>&1; rc=$?
check "a python without matplotlib exits 1" test $rc -eq 1
check "... naming matplotlib and how to install it" grep -qF "cannot import matplotlib" "$work/bare.log"
check "... and the setup script" grep -qF "launch/setup.sh" "$work/bare.log"
"$lcl" report "$run" --python "$work/no-such-python" >"$work/nopy.log" 2>&1; rc=$?
check "a missing python exits 1 naming it" test $rc -eq 1 -a -n "$(grep -F "no-such-python" "$work/nopy.log")"
