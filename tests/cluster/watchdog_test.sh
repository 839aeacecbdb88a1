#!/usr/bin/env bash
# A rank that never joins a collective: every rank must exit non-zero within timeout + a few seconds, and the
# report must name the rank, the op, the sequence number and the bytes. Usage: watchdog_test.sh <watchdog_probe>
set -u
probe=$1
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
out=$tmp/out
start=$(date +%s)
# shellcheck disable=SC2086
timeout 90 $mpirun -np 3 "$probe" 2000 >"$out" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$out"
[ "$rc" -ne 0 ] || fail "the job exited 0"
[ "$rc" -ne 124 ] || fail "the job hung until timeout(1) killed it"
[ "$elapsed" -le 20 ] || fail "took ${elapsed}s; expected within 2s timeout + a few seconds"
for r in 0 1; do  # every rank stuck in the collective reports it (rank 2 is the one that never joined)
  grep -q "watchdog: rank $r: collective AllReduce on communicator 'world' (seq 1, 4096 bytes)" "$out" \
    || fail "no watchdog report for rank $r with op, seq and bytes"
done
grep -q "exit code 3" "$out" || fail "the report does not give the exit code"
grep -q "unreachable" "$out" && fail "a collective completed without the missing rank"
echo "PASS: watchdog ended the job in ${elapsed}s with exit code $rc"
