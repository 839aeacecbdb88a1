#!/usr/bin/env bash
# `lcl bench ckpt --json` end to end on 2 ranks with a small state: every stdout line is a JSON object with name,
# value, unit, reference, ratio and config; throughputs and references are positive; every expected measurement
# (loads from the page cache and from the disk, the stall at each stand-in step) is there; the bench's own
# read-back checks (what a save holds equals the state at its step) passed, or it would have exited non-zero.
# Bad flags are clear errors. No timing thresholds: the machine is shared.
set -u
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl
python=${LCL_PYTHON:-python3}

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" bench ckpt --json --dir "$tmp" --bytes 64M --repeats 1 --step-ms 50,200 --step-tokens 16 \
  >"$tmp/out.jsonl" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || fail "lcl bench ckpt exited $rc: $(tail -40 "$tmp/err")"
cat "$tmp/out.jsonl"
check "the bench leaves no lcl-bench-ckpt behind" test ! -e "$tmp/lcl-bench-ckpt"

check "every JSON line has its fields, 2 ranks, value / reference as ratio; every measurement is there" \
  "$python" - "$tmp/out.jsonl" "$(dirname "$0")" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from check_bench_json import check

def extra(j):
    bad = []
    if j["config"].get("ranks") != 2:
        bad.append(f"{j['name']}: config.ranks is {j['config'].get('ranks')!r}, not 2")
    ref = j["reference"]
    if isinstance(ref, (int, float)) and ref > 0 and abs(j["ratio"] - j["value"] / ref) > 1e-3 * max(1.0, j["ratio"]):
        bad.append(f"{j['name']}: ratio {j['ratio']} is not value / reference")
    stand_in = j["name"].startswith(("ckpt.async_stall", "ckpt.async_step_cost"))
    if stand_in and j["name"] != "ckpt.async_stall_copy" and "step_ms" not in j["config"]:
        bad.append(f"{j['name']}: config has no step_ms")
    return bad

expected = {"ckpt.save_throughput", "ckpt.load_throughput", "ckpt.load_disk_throughput", "ckpt.resume_throughput",
            "ckpt.async_stall_copy", "ckpt.async_stall", "ckpt.async_step_cost"}
expected |= {f"ckpt.async_{m}_{ms}ms" for m in ("stall", "step_cost") for ms in (50, 200)}
# A stall or a step cost may be 0 ms (the writer finished before the fence); throughputs may not.
sys.exit(0 if check(sys.argv[1], expected, zero_ok=lambda j: j["unit"] == "ms", extra=extra, exact=True) else 1)
PY

# Bad flags: a clear error naming the flag, non-zero exit, and nothing left on disk.
rejected() {  # rejected "what it must say" args...: lcl bench ckpt ARGS exits non-zero saying WANT
  local want=$1 rc
  shift
  "$lcl" bench ckpt --dir "$tmp/bad" "$@" >"$tmp/bad.out" 2>&1; rc=$?
  [ $rc -ne 0 ] && grep -q -- "$want" "$tmp/bad.out" && return 0
  echo "     exit $rc:"; cat "$tmp/bad.out"
  return 1
}
check "--step-ms -5 is refused naming the flag" rejected "--step-ms" --bytes 1M --step-ms -5
check "--step-ms fast is refused naming the flag" rejected "--step-ms" --bytes 1M --step-ms fast
check "--step-tokens -1 is refused naming the flag" rejected "--step-tokens" --bytes 1M --step-tokens -1
check "--repeats 0 is refused naming the flag" rejected "--repeats" --bytes 1M --repeats 0
check "--bytes lots is refused naming the flag" rejected "--bytes" --bytes lots
check "a rejected run writes no lcl-bench-ckpt" test ! -e "$tmp/bad/lcl-bench-ckpt"
