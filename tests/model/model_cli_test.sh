#!/usr/bin/env bash
# `lcl model init` and `lcl model export-hf` end to end: init writes config.json, model.safetensors and
# tokenizer.model; export-hf at tp=2 (each rank loads its slices, the shards are merged) reproduces the init
# files byte for byte; a bf16 export is half the size; a bad model directory is one clear error; --set overrides
# config.json fields (and a bad override is one clear error).
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

# --set overrides config.json fields of the preset (LLaMA-7B-like width at toy depth here, kept small for speed).
"$lcl" model init --preset tiny --out "$tmp/over" --set num_hidden_layers=2 --set hidden_size=192 \
  --set num_attention_heads=6 --set num_key_value_heads=6 --set intermediate_size=512 --set vocab_size=4096 \
  --set vision_config.image_size=112 --set vision_config.patch_size=14 --set vision_config.hidden_size=96 \
  --set vision_config.num_attention_heads=4 >"$tmp/over.log" 2>&1; rc=$?
check "init --set exits 0" test $rc -eq 0
json_field() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(eval('j' + sys.argv[2]))" "$@"; }
check "--set num_hidden_layers=2 is in config.json" test "$(json_field "$tmp/over/config.json" "['num_hidden_layers']")" = 2
check "--set hidden_size=192 is in config.json" test "$(json_field "$tmp/over/config.json" "['hidden_size']")" = 192
check "an explicit vocab_size is kept (not shrunk to the tokenizer)" \
  test "$(json_field "$tmp/over/config.json" "['vocab_size']")" = 4096
check "--set vision_config.image_size=112 is in config.json" \
  test "$(json_field "$tmp/over/config.json" "['vision_config']['image_size']")" = 112
check "mm_hidden_size follows vision_config.hidden_size" \
  test "$(json_field "$tmp/over/config.json" "['mm_hidden_size']")" = 96
check "the weights have the overridden shapes (embed_tokens 4096 x 192)" \
  python3 -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
assert h['model.embed_tokens.weight']['shape'] == [4096, 192], h['model.embed_tokens.weight']
assert 'model.layers.1.mlp.up_proj.weight' in h and 'model.layers.2.mlp.up_proj.weight' not in h
assert h['model.layers.0.mlp.up_proj.weight']['shape'] == [512, 192]
" "$tmp/over/model.safetensors"
"$lcl" model init --preset tiny --out "$tmp/x" --set num_hiden_layers=2 >"$tmp/err3" 2>&1; rc=$?
check "--set with an unknown field exits 1 naming it and listing the fields" \
  test $rc -eq 1 -a "$(grep -c 'num_hiden_layers: no such config.json field.* num_hidden_layers' "$tmp/err3")" -eq 1
"$lcl" model init --preset tiny --out "$tmp/x" --set hidden_size=wide >"$tmp/err4" 2>&1; rc=$?
check "--set with a value of the wrong kind exits 1 naming the field" \
  test $rc -eq 1 -a "$(grep -c 'hidden_size=wide: the field holds number' "$tmp/err4")" -eq 1
"$lcl" model init --preset tiny --out "$tmp/x" --set num_attention_heads=5 >"$tmp/err5" 2>&1; rc=$?
check "--set that breaks the shapes exits 1 naming the field" \
  test $rc -eq 1 -a "$(grep -c 'num_attention_heads' "$tmp/err5")" -ge 1
"$lcl" model init --preset tiny --out "$tmp/x" --set layers >"$tmp/err6" 2>&1; rc=$?
check "--set without = exits 1 showing the form" test $rc -eq 1 -a "$(grep -c 'expected KEY=VALUE' "$tmp/err6")" -eq 1

if [ "$harness_failures" -ne 0 ]; then cat "$tmp/init.log" "$tmp/exp.log" "$tmp/err" "$tmp/over.log" "$tmp/err"[3-6] 2>/dev/null | tail -20; fi
