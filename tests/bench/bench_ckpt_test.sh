#!/usr/bin/env bash
# `lcl bench ckpt --json` end to end on 2 ranks with a small state: every stdout line is a JSON object with name,
# value, unit, reference, ratio and config; throughputs and references are positive; every expected measurement
# (loads from the page cache and from the disk, the stall at each stand-in step) is there; the bench's own
# read-back checks (what a save holds equals the state at its step) passed, or it would have exited non-zero.
# Bad flags are clear errors. No timing thresholds: the machine is shared.
set -u
lcl=${LCL_BIN:?LCL_BIN must point to the lcl binary}
mpirun=${LCL_MPIRUN:-mpirun --oversubscribe --allow-run-as-root}
python=${LCL_PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

$mpirun -np 2 "$lcl" bench ckpt --json --dir "$tmp" --bytes 64M --repeats 1 --step-ms 50,200 --step-tokens 16 \
  >"$tmp/out.jsonl" 2>"$tmp/err"; rc=$?
if [ $rc -ne 0 ]; then
  echo "FAIL: lcl bench ckpt exited $rc"; tail -40 "$tmp/err"; exit 1
fi
cat "$tmp/out.jsonl"
if [ -e "$tmp/lcl-bench-ckpt" ]; then echo "FAIL: the bench left $tmp/lcl-bench-ckpt behind"; fail=1; fi

"$python" - "$tmp/out.jsonl" "$(dirname "$0")" <<'PY' || fail=1
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
expect_error() {  # expect_error "what it must say" args...
  local want=$1; shift
  "$lcl" bench ckpt --dir "$tmp/bad" "$@" >"$tmp/bad.out" 2>&1; local rc=$?
  if [ $rc -eq 0 ] || ! grep -q -- "$want" "$tmp/bad.out"; then
    echo "FAIL: lcl bench ckpt $* exited $rc without '$want':"; cat "$tmp/bad.out"; fail=1
  fi
}
expect_error "--step-ms" --bytes 1M --step-ms -5
expect_error "--step-ms" --bytes 1M --step-ms fast
expect_error "--step-tokens" --bytes 1M --step-tokens -1
expect_error "--repeats" --bytes 1M --repeats 0
expect_error "--bytes" --bytes lots
if [ -e "$tmp/bad/lcl-bench-ckpt" ]; then echo "FAIL: a rejected run wrote $tmp/bad/lcl-bench-ckpt"; fail=1; fi

[ $fail -eq 0 ] && echo "bench_ckpt_test: ok"
exit $fail
