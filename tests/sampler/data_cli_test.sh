#!/usr/bin/env bash
# End to end `lcl data ...`: synth -> index -> episodes -> neighbors, determinism, and a clear error on a bad
# pairs file. Needs LCL_BIN (the lcl binary) and python3 (to write a features file and check JSON).
set -euo pipefail
: "${LCL_BIN:?set LCL_BIN to the lcl binary}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$LCL_BIN" data synth --out "$T/s" --classes 8 --images-per-class 4 --size 64x48 --seed 5 > "$T/synth.txt"
for f in LOC_synset_mapping.txt train_pairs.jsonl test_pairs.jsonl class_split.json; do
  [ -s "$T/s/$f" ] || fail "synth did not write $f"
done
[ "$(find "$T/s/train" -name '*.JPEG' | wc -l)" -eq 32 ] || fail "expected 32 JPEGs"

"$LCL_BIN" data index --root "$T/s" --out "$T/index.json" > "$T/index.txt"
grep -q '"classes":8' "$T/index.txt" || fail "index summary: $(cat "$T/index.txt")"
# --split: the synth tree's own split (held-out families), not a seeded one.
"$LCL_BIN" data index --root "$T/s" --split "$T/s/class_split.json" --out "$T/index_split.json" > /dev/null
python3 - "$T/index_split.json" "$T/s/class_split.json" <<'PY'
import json, sys
index, split = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert sorted(index["split"]["train"]) == sorted(split["train"]), (index["split"], split)
assert sorted(index["split"]["test"]) == sorted(split["test"]), (index["split"], split)
PY
echo '{"train": [1, 2], "test": [2]}' > "$T/twice.json"
if "$LCL_BIN" data index --root "$T/s" --split "$T/twice.json" 2> "$T/err.txt"; then fail "a class in both lists accepted"; fi
grep -q "class id 2 is listed twice" "$T/err.txt" || fail "unclear error: $(cat "$T/err.txt")"

"$LCL_BIN" data episodes --pairs "$T/s/train_pairs.jsonl" --count 3 --shot 2 --seed 9 > "$T/ep1.jsonl"
"$LCL_BIN" data episodes --pairs "$T/s/train_pairs.jsonl" --count 3 --shot 2 --seed 9 > "$T/ep2.jsonl"
cmp -s "$T/ep1.jsonl" "$T/ep2.jsonl" || fail "episodes differ between runs with the same seed"
python3 - "$T/ep1.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, len(lines)
for e in lines:
    assert len(e["examples"]) == 4, e
    assert e["text"].count("<image>") == 5, e["text"]
    assert e["query"]["label"] in (e["positive_label"], e["negative_label"])
PY
"$LCL_BIN" data episodes --test-pairs "$T/s/test_pairs.jsonl" --count 2 --shot 1 | python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l); assert e["policy"] == "2way_eval" and e["query"]["positive"], e'

# --config: the episodes `lcl train` builds from a training config (and with --eval those `lcl eval` builds): the
# config's tokenizer, shot, seed and the model's patch count; a flag given explicitly still wins.
cut -d' ' -f2- "$T/s/LOC_synset_mapping.txt" | sed 's/,.*//' > "$T/names.txt"
"$LCL_BIN" model init --preset tiny --out "$T/m" --class-names "$T/names.txt" > /dev/null
cat > "$T/c.pbtxt" <<EOF
seed: 9
model { path: "$T/m" }
data { root: "$T/s" shot: 2 max_length: 512 }
eval { shots: [1, 3] labels: "made_up" }
EOF
"$LCL_BIN" data episodes --config "$T/c.pbtxt" --count 3 > "$T/ep3.jsonl"
"$LCL_BIN" data episodes --pairs "$T/s/train_pairs.jsonl" --count 3 --shot 2 --seed 9 --max-length 512 \
  --tokenizer "$T/m/tokenizer.model" --image-tokens 4 > "$T/ep4.jsonl"
cmp -s "$T/ep3.jsonl" "$T/ep4.jsonl" || fail "--config episodes differ from the same options given as flags"
"$LCL_BIN" data episodes --config "$T/c.pbtxt" --set data.shot=1 --count 1 | grep -q '"shot":1,' ||
  fail "--set data.shot=1 did not reach the episodes"
"$LCL_BIN" data episodes --config "$T/c.pbtxt" --shot 3 --count 1 | grep -q '"shot":3,' ||
  fail "an explicit --shot did not win over the config"
"$LCL_BIN" data episodes --config "$T/c.pbtxt" --eval --count 2 | python3 -c '
import json, sys
names = {l.strip() for l in open(sys.argv[1])}
for l in sys.stdin:
    e = json.loads(l)
    assert e["policy"] == "2way_eval" and e["shot"] == 3, e  # the largest eval shot
    assert e["positive_label"] not in names, e["positive_label"]  # eval.labels: made_up
    assert e["tokens"]["image"] == 7 * (4 + 2), e["tokens"]  # 4 patches + start/end markers per image
' "$T/names.txt"
# data.support_names: training text names each example's class after its label; the answer and every eval
# episode keep the label alone.
"$LCL_BIN" data episodes --config "$T/c.pbtxt" --set data.support_names=true --set data.prompt_layout=compact \
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
' "$T/names.txt" || fail "data.support_names: training episodes do not name each example's class"
"$LCL_BIN" data episodes --config "$T/c.pbtxt" --set data.support_names=true --set data.prompt_layout=compact \
  --eval --count 2 | python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    for turn in e["text"].split("</s>")[:-1]:
        assert turn.split("<image> ", 1)[1].lstrip("? ") in (e["positive_label"], e["negative_label"]), turn
' || fail "data.support_names leaked into evaluation episodes"
if "$LCL_BIN" data episodes --eval --count 1 2> "$T/err.txt"; then fail "--eval without --config accepted"; fi
grep -q -- "--eval and --set need --config" "$T/err.txt" || fail "unclear error: $(cat "$T/err.txt")"

# A malformed line must fail with the file and line named.
head -n 2 "$T/s/train_pairs.jsonl" > "$T/bad.jsonl"
echo '{"class_id": "99", "class_name": oops}' >> "$T/bad.jsonl"
if "$LCL_BIN" data episodes --pairs "$T/bad.jsonl" --count 1 2> "$T/err.txt"; then fail "bad pairs file accepted"; fi
grep -q "bad.jsonl:3" "$T/err.txt" || fail "error does not name line 3: $(cat "$T/err.txt")"

# Neighbours from features: 8 classes x 4 dims, F32.
python3 - "$T/f.safetensors" <<'PY'
import json, struct, sys, math
rows = [[math.cos(i * 0.3), math.sin(i * 0.3), 0.1 * i, 1.0] for i in range(8)]
body = b"".join(struct.pack("<4f", *r) for r in rows)
header = json.dumps({"image_features": {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, len(body)]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + body)
PY
"$LCL_BIN" data neighbors --root "$T/s" --image-features "$T/f.safetensors" --neighbors 3 --samples 2 \
  --out "$T/nbrs.jsonl" > /dev/null
python3 - "$T/nbrs.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 8, len(lines)
assert all(len(l["neighbors"]) == 3 and len(l["samples"]) == 2 for l in lines)
# 7 others in 3 intervals: the first holds the 2 nearest to class 1 (classes 2 and 3).
assert lines[0]["neighbors"][0][0] in ("2", "3"), lines[0]["neighbors"]
PY
echo "data_cli_test: OK"
