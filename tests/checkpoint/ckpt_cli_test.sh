#!/usr/bin/env bash
# `lcl ckpt list|verify|inspect` on a real 2-rank run: statuses, the resume pick, a flipped byte, a truncated
# and a missing shard, an unfinished save, and `latest` naming a missing step.
#   ckpt_cli_test.sh <ckpt_probe>
set -u
probe=$1
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl

# shellcheck disable=SC2086
$mpirun -np 2 "$probe" "$tmp" 9 3 none 0 0 >/dev/null 2>&1
check "probe run made checkpoints" test -f "$tmp/checkpoints/step_00000009/manifest.pb"
mkdir -p "$tmp/checkpoints/step_00000012.tmp" "$tmp/checkpoints/step_00000011"
"$lcl" ckpt list "$tmp" >"$tmp/list" 2>&1
check "list shows complete steps" grep -q "step_00000009 *9 *complete  <- resume" "$tmp/list"
check "list shows a .tmp as incomplete" grep -q "step_00000012.tmp.*incomplete (unfinished save: .tmp)" "$tmp/list"
check "list shows a step without manifest as incomplete" grep -q "step_00000011 .*incomplete (no manifest.pb)" "$tmp/list"

echo "step_00000099" >"$tmp/checkpoints/latest"
"$lcl" ckpt list "$tmp" >"$tmp/list2" 2>&1
check "latest naming a missing step falls back with a warning" grep -q "falling back to the newest complete" "$tmp/list2"
check "...to step 9" grep -q "step_00000009 .*<- resume" "$tmp/list2"

ck="$tmp/checkpoints/step_00000009"
"$lcl" ckpt verify "$ck" >"$tmp/v" 2>&1; check "verify intact exits 0" test $? -eq 0
"$lcl" ckpt inspect "$ck" >"$tmp/i" 2>&1
check "inspect lists tensors with dtype and shape" grep -q "w  F32 \[64, 32\]  2 shard(s)" "$tmp/i"
check "inspect shows the grid" grep -q "grid world=2 dp=2 tp=1" "$tmp/i"

cp -r "$ck" "$tmp/flip"; printf '\x01' | dd of="$tmp/flip/shard-r00001-of-00002.safetensors" bs=1 seek=300 conv=notrunc 2>/dev/null
"$lcl" ckpt verify "$tmp/flip" >"$tmp/v" 2>&1; rc=$?
check "flipped byte exits 1" test $rc -eq 1
check "flipped byte names the file" grep -q "shard-r00001-of-00002.safetensors: checksum .* (corrupt)" "$tmp/v"

cp -r "$ck" "$tmp/trunc"; truncate -s -10 "$tmp/trunc/shard-r00000-of-00002.safetensors"
"$lcl" ckpt verify "$tmp/trunc" >"$tmp/v" 2>&1; rc=$?
check "truncated shard exits 1 and says so" test $rc -eq 1 -a -n "$(grep -l '(truncated)' "$tmp/v")"

cp -r "$ck" "$tmp/miss"; rm "$tmp/miss/shard-r00000-of-00002.safetensors"
"$lcl" ckpt verify "$tmp/miss" >"$tmp/v" 2>&1; rc=$?
check "missing shard exits 1 and names it" test $rc -eq 1 -a -n "$(grep -l 'shard-r00000-of-00002.safetensors: missing' "$tmp/v")"

"$lcl" ckpt verify "$tmp/checkpoints/step_00000012.tmp" >"$tmp/v" 2>&1; rc=$?
check "an unfinished save is refused" test $rc -eq 1 -a -n "$(grep -l 'manifest.pb is missing' "$tmp/v")"

# A flipped bit must not become a shipped model: export-hf checks sizes and checksums before reading a tensor.
"$lcl" model export-hf --checkpoint "$tmp/flip" --out "$tmp/exported" >"$tmp/x" 2>&1; rc=$?
check "export-hf of a flipped byte exits 1 naming the file" \
  test $rc -eq 1 -a -n "$(grep -l 'failed verification, not exported.*' "$tmp/x")" -a \
  -n "$(grep -l 'shard-r00001-of-00002.safetensors: checksum' "$tmp/x")"
check "export-hf of a flipped byte writes no model" test ! -e "$tmp/exported/model.safetensors"

# A 0-byte manifest.pb (a torn write) is no checkpoint: verify refuses it, list and --resume auto pass it over.
cp -r "$ck" "$tmp/checkpoints/step_00000010"; : >"$tmp/checkpoints/step_00000010/manifest.pb"
"$lcl" ckpt verify "$tmp/checkpoints/step_00000010" >"$tmp/v" 2>&1; rc=$?
check "verify of a 0-byte manifest exits 1 and says so" test $rc -eq 1 -a -n "$(grep -l 'manifest.pb is empty' "$tmp/v")"
"$lcl" ckpt list "$tmp" >"$tmp/list3" 2>&1
check "list marks the 0-byte manifest incomplete" grep -q "step_00000010 .*incomplete (manifest.pb is empty)" "$tmp/list3"
check "...and resumes from step 9" grep -q "step_00000009 .*<- resume" "$tmp/list3"
