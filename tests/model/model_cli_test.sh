#!/usr/bin/env bash
# `lcl model init` and `lcl model export-hf` end to end: init writes config.json, model.safetensors and
# tokenizer.model; export-hf at tp=2 (each rank loads its slices, the shards are merged) reproduces the init
# files byte for byte; a bf16 export is half the size; a bad model directory is one clear error.
set -u
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl

"$lcl" model init --preset tiny --out "$tmp/tiny" >"$tmp/init.log" 2>&1; rc=$?
check "model init exits 0" test $rc -eq 0
for f in config.json model.safetensors tokenizer.model; do
  check "init wrote $f" test -s "$tmp/tiny/$f"
done
check "config names the image token" grep -q '"image_token_index"' "$tmp/tiny/config.json"

# shellcheck disable=SC2086
$mpirun -np 2 "$lcl" model export-hf --model "$tmp/tiny" --tp 2 --out "$tmp/exported" >"$tmp/exp.log" 2>&1; rc=$?
check "export-hf at tp=2 exits 0" test $rc -eq 0
check "export at tp=2 reproduces the weights byte for byte" cmp -s "$tmp/tiny/model.safetensors" \
  "$tmp/exported/model.safetensors"
check "export reproduces config.json" cmp -s "$tmp/tiny/config.json" "$tmp/exported/config.json"

"$lcl" model export-hf --model "$tmp/tiny" --out "$tmp/bf16" --dtype bf16 >/dev/null 2>&1; rc=$?
check "bf16 export exits 0" test $rc -eq 0
f32=$(stat -c %s "$tmp/tiny/model.safetensors"); bf16=$(stat -c %s "$tmp/bf16/model.safetensors" 2>/dev/null || echo 0)
check "bf16 export is about half the size" test $((bf16 * 2)) -lt $((f32 + 65536)) -a "$bf16" -gt 0

mkdir -p "$tmp/broken" && cp "$tmp/tiny/config.json" "$tmp/broken/"
head -c $((f32 - 1000)) "$tmp/tiny/model.safetensors" >"$tmp/broken/model.safetensors"  # cut inside the data
"$lcl" model export-hf --model "$tmp/broken" --out "$tmp/never" >"$tmp/err" 2>&1; rc=$?
check "truncated weights exit 1" test $rc -eq 1
check "error names the file, the tensor and says truncated" grep -q "broken/model.safetensors: tensor .* truncated" "$tmp/err"

"$lcl" model init --preset huge --out "$tmp/x" >"$tmp/err2" 2>&1; rc=$?
check "unknown preset exits 1 naming the presets" test $rc -eq 1 -a "$(grep -c 'tiny, small, llava-7b' "$tmp/err2")" -eq 1

if [ "$harness_failures" -ne 0 ]; then cat "$tmp/init.log" "$tmp/exp.log" "$tmp/err" 2>/dev/null | tail -20; fi
