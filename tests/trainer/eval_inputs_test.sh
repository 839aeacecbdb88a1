#!/usr/bin/env bash
# `lcl eval` on its three inputs, end to end on a synthetic tree and a tiny untrained model:
#   1. an ISEKAI-style jsonl (relative paths against the file's directory, one line with absolute paths, one line
#      whose query is on the negative_list side, one line with short lists) writes eval.jsonl rows with n = lines
#      and counts the short line; --image-root resolves a copy of the file kept elsewhere;
#   2. the held-out classes of `lcl data index --split class_split.json` give the same episodes as the synth's own
#      test_pairs.jsonl (same classes, pairs and images): identical rows and first answers and labels, on 2 ranks;
#   3. a malformed ISEKAI line fails with file:line and field.
#   eval_inputs_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fixture.sh
source "$here/fixture.sh"
cat >"$work/eval.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" workers: 1 prompt_layout: "compact" }
parallel { threads: 1 }
eval { shots: [0, 2] max_new_tokens: 4 batch: 4 labels: "class_names" }
logging { tensorboard: false progress: false }
EOF

rows() {  # rows RUN_DIR: "shots n correct short_support" per eval.jsonl line
  python3 -c "
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert {'step', 'shots', 'accuracy', 'n', 'correct', 'named_neither', 'short_support'} <= r.keys(), r
    print(r['shots'], r['n'], int(r['correct']), int(r['short_support']))" "$1/eval.jsonl"
}
evaluate() {  # evaluate NAME NP [args...]: must exit 0
  local name=$1 np=$2
  shift 2
  # shellcheck disable=SC2086
  $mpirun -np "$np" "$lcl" eval --config "$work/eval.pbtxt" --run-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 ||
    fail "$name: lcl eval exited $?: $(grep -v '^I' "$work/$name.log" | tail -5)"
}

# --- 1. ISEKAI-style file made from the synth's test pairs ---
python3 - "$work/synth" <<'EOF' || fail "writing the ISEKAI file"
import json, sys
root = sys.argv[1]
classes = [json.loads(l) for l in open(f"{root}/test_pairs.jsonl")]
lines = []
for k in range(0, len(classes), 2):
    a, b = classes[k], classes[k + 1]
    lines.append({"image_name": a["test_samples"][0], "positive_list": a["context_samples"],
                  "negative_list": b["context_samples"], "positive_promt": a["class_name"],
                  "negative_promt": b["class_name"], "label_name": a["class_name"]})
a, b = classes[0], classes[1]
# The query on the negative_list side, absolute paths.
lines.append({"image_name": f"{root}/{b['test_samples'][0]}",
              "positive_list": [f"{root}/{p}" for p in a["context_samples"]],
              "negative_list": [f"{root}/{p}" for p in b["context_samples"]],
              "positive_promt": a["class_name"], "negative_promt": b["class_name"], "label_name": b["class_name"]})
# Short lists: one image a side (fewer than the 2 shots asked).
lines.append({"image_name": a["test_samples"][1], "positive_list": a["context_samples"][:1],
              "negative_list": b["context_samples"][:1], "positive_promt": a["class_name"],
              "negative_promt": b["class_name"], "label_name": a["class_name"]})
with open(f"{root}/isekai.jsonl", "w") as f:
    for l in lines: f.write(json.dumps(l) + "\n")
print(len(lines))
EOF
lines=$(grep -c . "$work/synth/isekai.jsonl")
evaluate isekai 1 --isekai "$work/synth/isekai.jsonl"
rows "$work/isekai" >"$work/isekai.rows" || fail "isekai eval.jsonl: $(cat "$work/isekai/eval.jsonl")"
[ "$(wc -l <"$work/isekai.rows")" -eq 2 ] || fail "isekai: $(wc -l <"$work/isekai.rows") eval rows, expected 2"
read -r s0 n0 _ short0 < <(sed -n 1p "$work/isekai.rows")
read -r s2 n2 _ short2 < <(sed -n 2p "$work/isekai.rows")
[ "$s0 $n0 $short0" = "0 $lines 0" ] || fail "isekai shot-0 row '$s0 $n0 $short0', expected '0 $lines 0'"
[ "$s2 $n2 $short2" = "2 $lines 1" ] || fail "isekai shot-2 row '$s2 $n2 $short2', expected '2 $lines 1' (one short line)"
grep -q "short support" "$work/isekai.log" || fail "isekai: the table has no short-support column"
grep -q "isekai $work/synth/isekai.jsonl" "$work/isekai.log" || fail "isekai: the table title does not name the file"
# The same file elsewhere, its relative paths resolved by --image-root.
mkdir -p "$work/elsewhere" && cp "$work/synth/isekai.jsonl" "$work/elsewhere/"
# ... and with no ImageNet root at all (data.root is needed only by training and test-pairs evaluation).
evaluate isekai_root 1 --isekai "$work/elsewhere/isekai.jsonl" --image-root "$work/synth" --set eval.shots=2 \
  --set data.root=
[ "$(rows "$work/isekai_root")" = "$(sed -n 2p "$work/isekai.rows")" ] ||
  fail "isekai with --image-root: '$(rows "$work/isekai_root")' differs from '$(sed -n 2p "$work/isekai.rows")'"

# --- 2. held-out classes of an index == the synth's test pairs ---
"$lcl" data index --root "$work/synth" --split "$work/synth/class_split.json" --out "$work/index.json" >/dev/null ||
  fail "lcl data index"
evaluate pairs 2 --test-pairs "$work/synth/test_pairs.jsonl"
evaluate index 2 --index "$work/index.json"
rows "$work/index" >"$work/index.rows" || fail "index eval.jsonl: $(cat "$work/index/eval.jsonl")"
[ "$(wc -l <"$work/index.rows")" -eq 2 ] || fail "index: $(wc -l <"$work/index.rows") eval rows, expected 2"
[ "$(rows "$work/pairs")" = "$(cat "$work/index.rows")" ] ||
  fail "index rows '$(cat "$work/index.rows")' differ from the test-pairs rows '$(rows "$work/pairs")'"
examples() { grep -o "eval shots .*: e.g. .*" "$1"; }  # rank 0's first episode: answer and both labels
[ -n "$(examples "$work/index.log")" ] && [ "$(examples "$work/pairs.log")" = "$(examples "$work/index.log")" ] ||
  fail "index episodes differ from the test pairs': '$(examples "$work/index.log")' vs '$(examples "$work/pairs.log")'"
read -r _ n _ _ <"$work/index.rows"
[ "$n" -gt 0 ] || fail "index: n=$n"
grep -q "held-out classes of $work/index.json" "$work/index.log" || fail "index: the table title does not name it"

# --- 3. a malformed line is a clear error ---
python3 -c "
import json, sys
l = json.loads(open(sys.argv[1]).readline()); del l['positive_list']
open(sys.argv[2], 'w').write(json.dumps(l) + '\n')" "$work/synth/isekai.jsonl" "$work/synth/bad.jsonl"
# shellcheck disable=SC2086
if $mpirun -np 1 "$lcl" eval --config "$work/eval.pbtxt" --run-dir "$work/bad" --isekai "$work/synth/bad.jsonl" \
  >"$work/bad.log" 2>&1; then
  fail "a malformed ISEKAI file was accepted"
fi
grep -q 'bad.jsonl:1: field "positive_list": missing' "$work/bad.log" ||
  fail "malformed ISEKAI line: no file:line and field in: $(tail -3 "$work/bad.log")"
echo "PASS: isekai ($lines lines), index == test pairs ($n episodes per shot), malformed line"
