#!/usr/bin/env bash
# `lcl ckpt list|verify|inspect` on a real 2-rank run: statuses, the resume pick, a flipped byte, a truncated
# and a missing shard, an unfinished save, and `latest` naming a missing step.
#   ckpt_cli_test.sh <ckpt_probe>
set -u
probe=$1
lcl=${LCL_BIN:?}
mpirun=${LCL_MPIRUN:-mpirun --oversubscribe --allow-run-as-root}
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
failures=0
check() { local n=$1; shift; if "$@"; then echo "ok   $n"; else echo "FAIL $n"; failures=$((failures + 1)); fi; }

# shellcheck disable=SC2086
$mpirun -np 2 "$probe" "$run" 9 3 none 0 0 >/dev/null 2>&1
check "probe run made checkpoints" test -f "$run/checkpoints/step_00000009/manifest.pb"
mkdir -p "$run/checkpoints/step_00000012.tmp" "$run/checkpoints/step_00000011"
"$lcl" ckpt list "$run" >"$run/list" 2>&1
check "list shows complete steps" grep -q "step_00000009 *9 *complete  <- resume" "$run/list"
check "list shows a .tmp as incomplete" grep -q "step_00000012.tmp.*incomplete (unfinished save: .tmp)" "$run/list"
check "list shows a step without manifest as incomplete" grep -q "step_00000011 .*incomplete (no manifest.pb)" "$run/list"

echo "step_00000099" >"$run/checkpoints/latest"
"$lcl" ckpt list "$run" >"$run/list2" 2>&1
check "latest naming a missing step falls back with a warning" grep -q "falling back to the newest complete" "$run/list2"
check "...to step 9" grep -q "step_00000009 .*<- resume" "$run/list2"

ck="$run/checkpoints/step_00000009"
"$lcl" ckpt verify "$ck" >"$run/v" 2>&1; check "verify intact exits 0" test $? -eq 0
"$lcl" ckpt inspect "$ck" >"$run/i" 2>&1
check "inspect lists tensors with dtype and shape" grep -q "w  F32 \[64, 32\]  2 shard(s)" "$run/i"
check "inspect shows the grid" grep -q "grid world=2 dp=2 tp=1" "$run/i"

cp -r "$ck" "$run/flip"; printf '\x01' | dd of="$run/flip/shard-r00001-of-00002.safetensors" bs=1 seek=300 conv=notrunc 2>/dev/null
"$lcl" ckpt verify "$run/flip" >"$run/v" 2>&1; rc=$?
check "flipped byte exits 1" test $rc -eq 1
check "flipped byte names the file" grep -q "shard-r00001-of-00002.safetensors: checksum .* (corrupt)" "$run/v"

cp -r "$ck" "$run/trunc"; truncate -s -10 "$run/trunc/shard-r00000-of-00002.safetensors"
"$lcl" ckpt verify "$run/trunc" >"$run/v" 2>&1; rc=$?
check "truncated shard exits 1 and says so" test $rc -eq 1 -a -n "$(grep -l '(truncated)' "$run/v")"

cp -r "$ck" "$run/miss"; rm "$run/miss/shard-r00000-of-00002.safetensors"
"$lcl" ckpt verify "$run/miss" >"$run/v" 2>&1; rc=$?
check "missing shard exits 1 and names it" test $rc -eq 1 -a -n "$(grep -l 'shard-r00000-of-00002.safetensors: missing' "$run/v")"

"$lcl" ckpt verify "$run/checkpoints/step_00000012.tmp" >"$run/v" 2>&1; rc=$?
check "an unfinished save is refused" test $rc -eq 1 -a -n "$(grep -l 'manifest.pb is missing' "$run/v")"

echo "$failures failed"
[ "$failures" -eq 0 ]
