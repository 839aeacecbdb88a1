#!/usr/bin/env bash
# End to end `lcl data ...`: synth -> index -> episodes -> neighbors, determinism, and a clear error on a bad
# pairs file. Needs LCL_BIN (the lcl binary) and python3 (to write a features file and check JSON).
set -euo pipefail
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl

"$lcl" data synth --out "$tmp/s" --classes 8 --images-per-class 4 --size 64x48 --seed 5 > "$tmp/synth.txt"
for f in LOC_synset_mapping.txt train_pairs.jsonl test_pairs.jsonl class_split.json llava_instruct.json; do
  [ -s "$tmp/s/$f" ] || fail "synth did not write $f"
done
[ "$(find "$tmp/s/train" -name '*.JPEG' | wc -l)" -eq 32 ] || fail "expected 32 JPEGs"

"$lcl" data index --root "$tmp/s" --out "$tmp/index.json" > "$tmp/index.txt"
grep -q '"classes":8' "$tmp/index.txt" || fail "index summary: $(cat "$tmp/index.txt")"
# --split: the synth tree's own split (held-out families), not a seeded one.
"$lcl" data index --root "$tmp/s" --split "$tmp/s/class_split.json" --out "$tmp/index_split.json" > /dev/null
python3 - "$tmp/index_split.json" "$tmp/s/class_split.json" <<'PY'
import json, sys
index, split = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert sorted(index["split"]["train"]) == sorted(split["train"]), (index["split"], split)
assert sorted(index["split"]["test"]) == sorted(split["test"]), (index["split"], split)
PY
echo '{"train": [1, 2], "test": [2]}' > "$tmp/twice.json"
if "$lcl" data index --root "$tmp/s" --split "$tmp/twice.json" 2> "$tmp/err.txt"; then
  fail "a class in both lists accepted"
fi
grep -q "class id 2 is listed twice" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"

"$lcl" data episodes --pairs "$tmp/s/train_pairs.jsonl" --count 3 --shot 2 --seed 9 > "$tmp/ep1.jsonl"
"$lcl" data episodes --pairs "$tmp/s/train_pairs.jsonl" --count 3 --shot 2 --seed 9 > "$tmp/ep2.jsonl"
cmp -s "$tmp/ep1.jsonl" "$tmp/ep2.jsonl" || fail "episodes differ between runs with the same seed"
python3 - "$tmp/ep1.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, len(lines)
for e in lines:
    assert len(e["examples"]) == 4, e
    assert e["text"].count("<image>") == 5, e["text"]
    assert e["query"]["label"] in (e["positive_label"], e["negative_label"])
PY
"$lcl" data episodes --test-pairs "$tmp/s/test_pairs.jsonl" --count 2 --shot 1 | python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l); assert e["policy"] == "2way_eval" and e["query"]["positive"], e'

# --config: the episodes `lcl train` builds from a training config (and with --eval those `lcl eval` builds): the
# config's tokenizer, shot, seed and the model's patch count; a flag given explicitly still wins.
cut -d' ' -f2- "$tmp/s/LOC_synset_mapping.txt" | sed 's/,.*//' > "$tmp/names.txt"
"$lcl" model init --preset tiny --out "$tmp/m" --class-names "$tmp/names.txt" > /dev/null
cat > "$tmp/c.pbtxt" <<EOF
seed: 9
model { path: "$tmp/m" }
data { root: "$tmp/s" shot: 2 max_length: 512 }
eval { shots: [1, 3] labels: "made_up" }
EOF
"$lcl" data episodes --config "$tmp/c.pbtxt" --count 3 > "$tmp/ep3.jsonl"
"$lcl" data episodes --pairs "$tmp/s/train_pairs.jsonl" --count 3 --shot 2 --seed 9 --max-length 512 \
  --tokenizer "$tmp/m/tokenizer.model" --image-tokens 4 > "$tmp/ep4.jsonl"
cmp -s "$tmp/ep3.jsonl" "$tmp/ep4.jsonl" || fail "--config episodes differ from the same options given as flags"
# LCL-Mix: the config's instruction file interleaves conversations (their turns and image shown) with the episodes.
"$lcl" data episodes --config "$tmp/c.pbtxt" --set data.mix_files="$tmp/s/llava_instruct.json" \
  --set data.mix_weights=0.5 --count 40 | python3 -c '
import json, sys
kinds = {"llava": 0, "2way_weight": 0}
for l in sys.stdin:
    e = json.loads(l)
    kinds[e["policy"]] += 1
    if e["policy"] == "llava":
        assert e["conversation"][0]["user"].startswith("<image>\n"), e
        assert e["query"]["path"].startswith("train/"), e
        assert e["tokens"]["labelled"] > 1 and e["tokens"]["image"] == 6, e["tokens"]
assert kinds["llava"] > 0 and kinds["2way_weight"] > 0, kinds
' || fail "data episodes --config with data.mix_files: no mixed stream"
"$lcl" data episodes --config "$tmp/c.pbtxt" --set data.shot=1 --count 1 | grep -q '"shot":1,' ||
  fail "--set data.shot=1 did not reach the episodes"
"$lcl" data episodes --config "$tmp/c.pbtxt" --shot 3 --count 1 | grep -q '"shot":3,' ||
  fail "an explicit --shot did not win over the config"
"$lcl" data episodes --config "$tmp/c.pbtxt" --eval --count 2 | python3 -c '
import json, sys
names = {l.strip() for l in open(sys.argv[1])}
for l in sys.stdin:
    e = json.loads(l)
    assert e["policy"] == "2way_eval" and e["shot"] == 3, e  # the largest eval shot
    assert e["positive_label"] not in names, e["positive_label"]  # eval.labels: made_up
    assert e["tokens"]["image"] == 7 * (4 + 2), e["tokens"]  # 4 patches + start/end markers per image
' "$tmp/names.txt"
# data.support_names: training text names each example's class after its label; the answer and every eval
# episode keep the label alone.
"$lcl" data episodes --config "$tmp/c.pbtxt" --set data.support_names=true --set data.prompt_layout=compact \
  --set data.made_up_negative=1 --count 2 | python3 -c '
import json, sys
names = {l.strip() for l in open(sys.argv[1])}
for l in sys.stdin:
    e = json.loads(l)
    turns = e["text"].split("</s>")[:-1]
    assert len(turns) == len(e["examples"]) + 1, turns
    for turn in turns[:-1]:
        label, name = turn.split("<image> ", 1)[1].split(" ", 1)
        assert name in names, (turn, name)
    assert turns[-1] == "<image> ? " + e["query"]["label"], turns[-1]
' "$tmp/names.txt" || fail "data.support_names: training episodes do not name each example's class"
"$lcl" data episodes --config "$tmp/c.pbtxt" --set data.support_names=true --set data.prompt_layout=compact \
  --eval --count 2 | python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    for turn in e["text"].split("</s>")[:-1]:
        assert turn.split("<image> ", 1)[1].lstrip("? ") in (e["positive_label"], e["negative_label"]), turn
' || fail "data.support_names leaked into evaluation episodes"
if "$lcl" data episodes --eval --count 1 2> "$tmp/err.txt"; then fail "--eval without --config accepted"; fi
grep -q -- "--eval and --set need --config" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"

# A malformed line must fail with the file and line named.
head -n 2 "$tmp/s/train_pairs.jsonl" > "$tmp/bad.jsonl"
echo '{"class_id": "99", "class_name": oops}' >> "$tmp/bad.jsonl"
if "$lcl" data episodes --pairs "$tmp/bad.jsonl" --count 1 2> "$tmp/err.txt"; then fail "bad pairs file accepted"; fi
grep -q "bad.jsonl:3" "$tmp/err.txt" || fail "error does not name line 3: $(cat "$tmp/err.txt")"

# Neighbours from features: 8 classes x 4 dims, F32.
python3 - "$tmp/f.safetensors" <<'PY'
import json, struct, sys, math
rows = [[math.cos(i * 0.3), math.sin(i * 0.3), 0.1 * i, 1.0] for i in range(8)]
body = b"".join(struct.pack("<4f", *r) for r in rows)
header = json.dumps({"image_features": {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, len(body)]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + body)
PY
"$lcl" data neighbors --root "$tmp/s" --image-features "$tmp/f.safetensors" --neighbors 3 --samples 2 \
  --out "$tmp/nbrs.jsonl" > /dev/null
python3 - "$tmp/nbrs.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 8, len(lines)
assert all(len(l["neighbors"]) == 3 and len(l["samples"]) == 2 for l in lines)
# 7 others in 3 intervals: the first holds the 2 nearest to class 1 (classes 2 and 3).
assert lines[0]["neighbors"][0][0] in ("2", "3"), lines[0]["neighbors"]
PY
echo "data_cli_test: OK"
