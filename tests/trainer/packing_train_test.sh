#!/usr/bin/env bash
# Packing (batch.pack_tokens) in the real trainer on real MPI ranks, against the same run unpacked.
#   1. 2way_random_shot episodes (1 to 4 shots: 3 to 9 images), 4 per micro-batch, 2 ranks, 4 steps: packed, the
#      losses and gradient norms are the unpacked run's (to fp32 rounding: the rows differ, so the sums run in
#      another order), and fewer of the positions fed are padding (row_fill).
#   2. A budget below most episodes' length: each of those gets a row of its own, and the run still matches.
#   3. Bad input: a negative batch.pack_tokens is an error naming the field, before any step.
#   packing_train_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/base.pbtxt" <<CONFIG
model { path: "$work/model" }
data { root: "$work/synth" policy: "2way_random_shot" shot: 4 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 4 global_batch: 8 }
optimizer { lr: 1e-3 warmup_ratio: 0.25 }
schedule { total_steps: 4 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { at_end: false }
CONFIG

close_to_unpacked() {  # close_to_unpacked RUN: its losses and grad norms are the unpacked run's within fp32 rounding
  python3 - "$work/unpacked/metrics.jsonl" "$work/$1/metrics.jsonl" "$1" <<'PY' || exit 1
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
if len(a) != 4 or len(b) != 4:
    sys.exit(f"FAIL: {sys.argv[3]}: {len(a)} and {len(b)} logged steps, want 4")
for x, y in zip(a, b):
    for field in ("loss", "grad_norm"):
        if abs(x[field] - y[field]) > 1e-4 * abs(x[field]):
            sys.exit(f"FAIL: {sys.argv[3]}: step {x['step']} {field} {y[field]!r} packed, {x[field]!r} unpacked")
print(f"{sys.argv[3]}: losses {[round(y['loss'], 6) for y in b]}, largest relative difference "
      f"{max(abs(x[f] - y[f]) / abs(x[f]) for x, y in zip(a, b) for f in ('loss', 'grad_norm')):.2e}")
PY
}
mean_fill() { column "$work/$1" row_fill | python3 -c "import sys; v = [float(x) for x in sys.stdin]; print(f'{sum(v) / len(v):.3f}')"; }

# --- 1. packed against unpacked ---
train unpacked 2
train packed 2 --set batch.pack_tokens=4096
close_to_unpacked packed
unpacked_fill=$(mean_fill unpacked) packed_fill=$(mean_fill packed)
python3 -c "import sys; sys.exit(0 if $packed_fill > $unpacked_fill and $packed_fill > 0.9 else 1)" ||
  fail "packing did not fill the rows: row_fill $packed_fill packed, $unpacked_fill unpacked"
echo "PASS: packed at 4096 tokens: the unpacked run's losses and grad norms; row_fill $unpacked_fill -> $packed_fill"

# --- 2. a budget below the longest episode ---
train tight 2 --set batch.pack_tokens=64
close_to_unpacked tight
echo "PASS: a budget of 64 tokens, shorter than most episodes (rows of one episode, or of a few short ones): still the unpacked run"

# --- 3. bad input ---
if $mpirun -np 1 "$lcl" train --config "$work/base.pbtxt" --run-dir "$work/bad" --set batch.pack_tokens=-1 \
  >"$work/bad.log" 2>&1; then
  fail "batch.pack_tokens=-1 was accepted"
fi
grep -q "batch.pack_tokens" "$work/bad.log" || fail "the error does not name batch.pack_tokens: $(tail -3 "$work/bad.log")"
[ ! -f "$work/bad/metrics.jsonl" ] || fail "a step ran with batch.pack_tokens=-1"
echo "PASS: batch.pack_tokens=-1: $(grep -o 'batch.pack_tokens[^;]*' "$work/bad.log" | head -1)"
echo "ALL PASS"
