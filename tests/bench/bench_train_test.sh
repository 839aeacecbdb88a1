#!/usr/bin/env bash
# `lcl bench train --json` end to end on the tiny preset at 1 and 2 ranks (lcl train under mpirun and the PyTorch
# DDP reference): every stdout line is a JSON object with name, value, unit, reference, ratio and config, every
# value is positive, and the expected measurements are all there. No timing thresholds: the machine is shared.
set -u
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl
python=${LCL_PYTHON:-python3}

"$python" -c 'import torch' 2>/dev/null ||
  fail "$python has no torch module: the reference needs it (run launch/setup.sh to make .venv, or set LCL_PYTHON)"

"$lcl" bench train --json --presets tiny --ranks 1,2 --steps 3 --warmup 1 --work-dir "$tmp/work" \
  >"$tmp/out.jsonl" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || fail "lcl bench train exited $rc: $(tail -40 "$tmp/err")"
cat "$tmp/out.jsonl"

check "every JSON line has its fields and a positive value; every measurement is there" \
  "$python" - "$tmp/out.jsonl" "$(dirname "$0")" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from check_bench_json import check

expected = {f"train.tiny.np{n}.{m}" for n in (1, 2) for m in (
    "tokens_per_sec", "step_time_ms", "data_wait_ms", "forward_ms", "backward_ms", "exposed_comm_ms",
    "optimizer_ms", "peak_rss_mb", "mfu")} | {"train.tiny.dp2_weak_scaling", "train.tiny.np2.peak_rss_mb_zero1"}
# A phase can legitimately take no time (no communication at 1 rank); everything else must be positive.
zero_ok = lambda j: j["name"].endswith("_ms") and not j["name"].endswith("step_time_ms")
sys.exit(0 if check(sys.argv[1], expected, zero_ok) else 1)
PY
