#!/usr/bin/env bash
# A rank that never joins a collective: every rank must exit non-zero within timeout + a few seconds, and the
# report must name the rank, the op, the sequence number and the bytes. Usage: watchdog_test.sh <watchdog_probe>
set -u
probe=$1
out=$(mktemp)
start=$(date +%s)
# shellcheck disable=SC2086
timeout 90 ${LCL_MPIRUN:-mpirun --oversubscribe --allow-run-as-root} -np 3 "$probe" 2000 >"$out" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$out"
fail() { echo "FAIL: $*"; exit 1; }
[ "$rc" -ne 0 ] || fail "the job exited 0"
[ "$rc" -ne 124 ] || fail "the job hung until timeout(1) killed it"
[ "$elapsed" -le 20 ] || fail "took ${elapsed}s; expected within 2s timeout + a few seconds"
grep -q "watchdog: rank 0: collective AllReduce on communicator 'world' (seq 1, 4096 bytes)" "$out" \
  || fail "no watchdog report for rank 0 with op, seq and bytes"
grep -q "unreachable" "$out" && fail "a collective completed without the missing rank"
echo "PASS: watchdog ended the job in ${elapsed}s with exit code $rc"
