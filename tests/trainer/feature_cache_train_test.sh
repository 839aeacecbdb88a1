#!/usr/bin/env bash
# The tower-feature cache (data.feature_cache) in the real trainer on real MPI ranks, against a run without it.
#   1. No cache, a cold cache, the same cache warm (no tower call), a memory-only cache: the losses of 4 steps on
#      2 ranks are bitwise the same.
#   2. `lcl data features` on 2 ranks fills a fresh directory with every image of the pairs table; a second call
#      computes nothing; a run on it never calls the tower and has the same losses.
#   3. Every entry of that directory corrupted (one flipped byte): each is reported, recomputed and replaced, the
#      losses are still the same, and the next run reads the repaired entries.
#   4. Bad input: a data.feature_cache that is a file: a warning and a run without the disk tier (same losses), or,
#      with data.feature_cache_required, an error naming the field before step 1; `lcl data features` without
#      data.feature_cache names the field.
#   feature_cache_train_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/base.pbtxt" <<CONFIG
model { path: "$work/model" }
data { root: "$work/synth" shot: 2 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 4 }
optimizer { lr: 1e-3 warmup_ratio: 0.25 }
schedule { total_steps: 4 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false }
checkpoint { at_end: false }
CONFIG

same_losses() {  # same_losses RUN: its losses are the uncached run's, bit for bit
  column "$work/$1" loss >"$work/$1.losses"
  diff "$work/nocache.losses" "$work/$1.losses" >/dev/null ||
    fail "$1: losses differ from the run without the cache: $(paste -d' ' "$work/nocache.losses" "$work/$1.losses" | tr '\n' ';')"
}
last() { column "$work/$1" "$2" | tail -1; }

# --- 1. without, cold, warm, memory only ---
train nocache 2
column "$work/nocache" loss >"$work/nocache.losses"
[ "$(wc -l <"$work/nocache.losses")" -eq 4 ] || fail "the uncached run logged $(wc -l <"$work/nocache.losses") steps"
if grep -q feature_cache_hits "$work/nocache/metrics.jsonl"; then fail "a run without the cache reports cache counts"; fi

train cold 2 --set data.feature_cache="$work/cache"
same_losses cold
[ "$(last cold feature_cache_misses)" != "0.0" ] || fail "the cold cache reported no misses"
entries=$(find "$work/cache" -name '*.safetensors' | wc -l)
[ "$entries" -gt 0 ] || fail "the cold run wrote no entries under $work/cache"
[ -f "$work/cache/LCL_FEATURE_CACHE" ] || fail "no LCL_FEATURE_CACHE marker in the cache directory"
grep -q "tower-feature cache: $work/cache (tower [0-9a-f]\{32\})" "$work/cold.log" || fail "the cache is not logged"
echo "PASS: a cold cache: the same losses, $(last cold feature_cache_misses) misses, $entries entries written"

train warm 2 --set data.feature_cache="$work/cache"
same_losses warm
[ "$(last warm feature_cache_misses)" = "0.0" ] || fail "the warm cache still missed $(last warm feature_cache_misses)"
[ "$(last warm feature_cache_hits)" != "0.0" ] || fail "the warm cache had no hits"
echo "PASS: the same cache warm: no tower call ($(last warm feature_cache_hits) hits), the same losses"

train memory 2 --set data.feature_cache_memory_mb=64
same_losses memory
echo "PASS: a memory-only cache: the same losses ($(last memory feature_cache_hits) hits)"

# --- 2. filled ahead of time ---
$mpirun -np 2 "$lcl" data features --config "$work/base.pbtxt" --set run_dir="$work/fill" \
  --set data.feature_cache="$work/filled" --batch 5 >"$work/fill.out" 2>"$work/fill.err" ||
  fail "lcl data features exited $?: $(tail -5 "$work/fill.err")"
images=$(python3 -c "
import json, sys
paths = set()
for line in open(sys.argv[1]):
    c = json.loads(line)
    paths.update(c['samples'])
    paths.update(n[2] for n in c['neighbors'])
print(len(paths))" "$work/synth/train_pairs.jsonl")
grep -q ": $images images of the train pairs table, $images computed, 0 already cached, 0 corrupt" "$work/fill.out" ||
  fail "the first fill did not compute all $images images: $(cat "$work/fill.out")"
[ "$(find "$work/filled" -name '*.safetensors' | wc -l)" -eq "$images" ] ||
  fail "$(find "$work/filled" -name '*.safetensors' | wc -l) entries for $images images"
bytes=$(sed -n 's/.*; \([0-9]*\) bytes per image on disk.*/\1/p' "$work/fill.out")
# patches x channels x 4 bytes (fp32), plus the safetensors header
python3 - "$bytes" "$work/model/config.json" <<'PY' || fail "an entry is $bytes bytes"
import json, sys
v = json.load(open(sys.argv[2]))["vision_config"]
data = (v["image_size"] // v["patch_size"]) ** 2 * v["hidden_size"] * 4
assert data < int(sys.argv[1]) < data + 512, (sys.argv[1], data)
PY
$mpirun -np 2 "$lcl" data features --config "$work/base.pbtxt" --set run_dir="$work/fill" \
  --set data.feature_cache="$work/filled" >"$work/refill.out" 2>&1 || fail "the second fill exited $?"
grep -q ", 0 computed, $images already cached" "$work/refill.out" || fail "the second fill: $(cat "$work/refill.out")"
echo "PASS: lcl data features on 2 ranks: $images images, $bytes bytes each; a second call computes nothing"

train prefilled 2 --set data.feature_cache="$work/filled"
same_losses prefilled
[ "$(last prefilled feature_cache_misses)" = "0.0" ] || fail "the prefilled cache missed $(last prefilled feature_cache_misses)"
echo "PASS: a run on the filled cache never calls the tower; the same losses"

# --- 3. corrupt entries ---
find "$work/filled" -name '*.safetensors' | while read -r f; do
  python3 -c "
import sys
b = bytearray(open(sys.argv[1], 'rb').read()); b[-7] ^= 0x10; open(sys.argv[1], 'wb').write(b)" "$f"
done
train corrupt 2 --set data.feature_cache="$work/filled"
same_losses corrupt
corrupt=$(last corrupt feature_cache_corrupt)
[ "$corrupt" != "0.0" ] || fail "no corrupt entry was reported"
grep -q "feature cache entry .*\.safetensors is corrupt" "$work/corrupt.log" || fail "the corrupt entries are not named"
train repaired 2 --set data.feature_cache="$work/filled"
same_losses repaired
[ "$(last repaired feature_cache_corrupt)" = "0.0" ] || fail "the replaced entries are still corrupt"
echo "PASS: $corrupt corrupt entries reported, recomputed and replaced; the same losses, then clean"

# --- 4. bad input ---
echo "not a directory" >"$work/afile"
train onfile 2 --set data.feature_cache="$work/afile"
same_losses onfile
grep -q "$work/afile.*The run goes on without the disk cache" "$work/onfile.log" ||
  fail "no warning for a data.feature_cache that is a file"
[ "$(cat "$work/afile")" = "not a directory" ] || fail "the file named by data.feature_cache was changed"
$mpirun -np 2 "$lcl" train --config "$work/base.pbtxt" --run-dir "$work/required" --set data.feature_cache="$work/afile" \
  --set data.feature_cache_required=true >"$work/required.log" 2>&1 && fail "a required unusable cache did not stop the run"
grep -q "data.feature_cache" "$work/required.log" || fail "the error does not name data.feature_cache"
if grep -q '"step": 1' "$work/required/metrics.jsonl" 2>/dev/null; then fail "the run took a step first"; fi
$mpirun -np 1 "$lcl" data features --config "$work/base.pbtxt" --set run_dir="$work/nodir" >"$work/nodir.log" 2>&1 &&
  fail "data features without data.feature_cache succeeded"
grep -q "data.feature_cache is empty" "$work/nodir.log" || fail "data features without a directory: $(tail -3 "$work/nodir.log")"
echo "PASS: a file as the cache: a warning and the same losses; required: an error naming the field; none given: named"
