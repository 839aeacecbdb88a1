#!/usr/bin/env bash
# Bad input, one real bad file or argument at a time, to the real `lcl` (the table in docs/bad_inputs.md): the
# command line, configs, data roots, pairs files, images, model directories, checkpoints and evaluation files.
# Each case asserts the exit code and a fragment of the one message, which names the bad thing (and where the
# message gives it, the fix), and that nothing crashed ("internal error", an abort, a signal). The cases run a few
# at a time; the fixture (16 synthetic classes, the tiny model, one committed checkpoint) is made once.
#   bad_inputs_test.sh      (LCL_BIN, LCL_MPIRUN from ctest)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/trainer/fixture.sh
source "$here/../trainer/fixture.sh"
parallel=${LCL_TEST_JOBS:-3}

cat >"$work/base.pbtxt" <<EOF
model { path: "$work/model" }
data { root: "$work/synth" shot: 1 workers: 1 }
parallel { threads: 1 }
batch { micro_batch: 1 global_batch: 1 }
schedule { total_steps: 1 }
logging { every_steps: 1 progress: false tensorboard: false }
eval { at_end: false shots: [0] max_episodes: 2 max_new_tokens: 2 batch: 2 }
checkpoint { every_steps: 0 }
EOF
base=$work/base.pbtxt

# --- the cases: each runs in the background, is checked at the end ---
names=() codes=() fragments=()
try() {  # try NAME CODE FRAGMENT CMD...: CMD must exit CODE, its output must hold FRAGMENT and no crash
  local i=${#names[@]}
  names+=("$1") codes+=("$2") fragments+=("$3")
  shift 3
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  (
    cd "$work" || exit 1
    "$@" >"$work/case$i.out" 2>&1 </dev/null
    echo $? >"$work/case$i.rc"
  ) &
}
train() {  # train NAME lcl-train-arguments...: lcl train on the base config into its own run directory
  local name=$1
  shift
  "$lcl" train --config "$base" --run-dir "$work/runs/$name" "$@"
}
train_case() {  # train_case NAME CODE FRAGMENT lcl-train-arguments...
  local name=$1 code=$2 fragment=$3
  shift 3
  try "$name" "$code" "$fragment" train "$(echo "$name" | tr -c 'a-z0-9\n' _)" "$@"
}
config() {  # config NAME TEXT: the base config plus TEXT (a later field wins) as $work/NAME.pbtxt
  { cat "$base"; printf '%s\n' "$2"; } >"$work/$1.pbtxt"
}
safetensors_edit() {  # safetensors_edit FILE OP NAME: rewrites FILE with tensor NAME dropped|transposed|int|nan|copied
  python3 - "$@" <<'PY' || fail "safetensors_edit $*"
import json, struct, sys
path, op, name = sys.argv[1:4]
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    body = f.read()
meta = header.pop("__metadata__", None)
tensors = {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
dtype, shape, data = tensors[name]
if op == "drop":
    del tensors[name]
elif op == "transpose":  # same bytes, the shape the other way round
    tensors[name] = (dtype, shape[::-1], data)
elif op == "int":  # same bytes, read as integers
    tensors[name] = ("I32", shape, data)
elif op == "copy":  # the same tensor again under a name the model has no parameter for
    tensors[name + "_extra"] = (dtype, shape, data)
out, header, offset = b"", {}, 0
for k, (d, s, b) in tensors.items():
    header[k] = {"dtype": d, "shape": s, "data_offsets": [offset, offset + len(b)]}
    out += b
    offset += len(b)
if meta is not None:
    header["__metadata__"] = meta
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + out)
PY
}

# ---- the command line ----------------------------------------------------------------------------------------
try "cli: unknown subcommand" 2 "unknown subcommand 'trian' of 'lcl' (one of: train, eval" "$lcl" trian
try "cli: unknown nested subcommand" 2 "unknown subcommand 'shuffle' of 'lcl data'" "$lcl" data shuffle
try "cli: unknown option" 2 "The following arguments were not expected: x --confg" \
  "$lcl" train --config "$base" --confg x
try "cli: --config missing" 2 "--config is required" "$lcl" train
try "cli: an option's value of the wrong type" 2 "Could not convert: --classes = many" \
  "$lcl" data synth --out "$work/never" --classes many
try "cli: two evaluation inputs at once" 2 "--isekai excludes --index" \
  "$lcl" eval --config "$base" --isekai a.jsonl --index b.json
try "cli: --set without =" 1 "--set seed: expected path.to.field=value" "$lcl" train --config "$base" --set seed
try "cli: --set of an unknown field" 1 "--set optimizer.lrr=1: no field 'lrr' in 'optimizer'; fields there: lr," \
  "$lcl" train --config "$base" --set optimizer.lrr=1
try "cli: --set of a value of the wrong type" 1 "'fast' is not a double value for optimizer.lr" \
  "$lcl" train --config "$base" --set optimizer.lr=fast
try "cli: --set of a section" 1 "'optimizer' is a section; set one of its fields" \
  "$lcl" train --config "$base" --set optimizer=1
try "cli: an empty --run-dir" 1 "--run-dir is empty" "$lcl" train --config "$base" --run-dir ""

# ---- configs ---------------------------------------------------------------------------------------------------
try "config: missing file" 1 "config file '$work/missing.pbtxt' cannot be read (No such file or directory)" \
  "$lcl" train --config "$work/missing.pbtxt"
config unknown_field 'optimizer { lrr: 1 }'
try "config: unknown field" 1 "unknown_field.pbtxt:9:" "$lcl" train --config "$work/unknown_field.pbtxt"
config wrong_type 'seed: "many"'
try "config: a value of the wrong type" 1 "wrong_type.pbtxt:9:" "$lcl" train --config "$work/wrong_type.pbtxt"
config unclosed 'optimizer { lr: 1e-3'
try "config: unclosed section" 1 "unclosed.pbtxt:" "$lcl" train --config "$work/unclosed.pbtxt"
config negative_lr 'optimizer { lr: -1 }'
try "config: out of range (optimizer.lr < 0)" 1 "negative_lr.pbtxt:9: optimizer.lr = -1.000000 must be > 0" \
  "$lcl" train --config "$work/negative_lr.pbtxt"
train_case "config: out of range (warmup_ratio > 1)" 1 "optimizer.warmup_ratio = 2.000000 must be in [0, 1]" \
  --set optimizer.warmup_ratio=2
train_case "config: out of range (micro_batch 0)" 1 "batch.micro_batch = 0 must be >= 1" --set batch.micro_batch=0
train_case "config: unknown enum (data.policy)" 1 "data.policy = '3way' is not one of 2way_weight | 2way_random_shot" \
  --set data.policy=3way
train_case "config: unknown enum (eval.labels)" 1 "eval.labels = 'numbers' is not one of" --set eval.labels=numbers
train_case "config: unknown enum (eval.format)" 1 "eval.format = 'csv' is not one of" --set eval.format=csv
train_case "config: unknown enum (data.prompt_layout)" 1 "data.prompt_layout = 'fancy' is not one of" \
  --set data.prompt_layout=fancy
train_case "config: unknown enum (parallel.device)" 1 "parallel.device = 'tpu' is not one of auto | cpu | cuda" \
  --set parallel.device=tpu
train_case "config: bf16 on a CPU" 1 "precision = bf16 needs a GPU" --set precision=bf16
train_case "config: parallel.tp that the world size does not fit" 1 "parallel.tp = 3 does not divide the world size 1" \
  --set parallel.tp=3
train_case "config: global_batch not a multiple of micro_batch x dp" 1 \
  "batch.global_batch = 3 cannot be formed from micro_batch 2 x dp 1" \
  --set batch.micro_batch=2 --set batch.global_batch=3
: >"$work/empty.pbtxt"
try "config: empty file (no model.path)" 1 "model.path is empty; give a model directory" \
  "$lcl" train --config "$work/empty.pbtxt"

# ---- data roots ----------------------------------------------------------------------------------------------
mkdir -p "$work/root_no_pairs/train" && cp -r "$work/synth/train/"* "$work/root_no_pairs/train/"
train_case "data root: no train_pairs.jsonl" 1 \
  "cannot open pairs file $work/root_no_pairs/train_pairs.jsonl for reading" --set "data.root=$work/root_no_pairs"
mkdir -p "$work/root_no_images/train"
cp "$work/synth/train_pairs.jsonl" "$work/synth/LOC_synset_mapping.txt" "$work/root_no_images/"
train_case "data root: pairs file but no images" 1 \
  "over the limit of 1.000000% (data.max_bad_fraction); last: $work/root_no_images/train/" \
  --set "data.root=$work/root_no_images"
mkdir -p "$work/root_no_train" && cp "$work/synth/LOC_synset_mapping.txt" "$work/root_no_train/"
try "data root: no train/ directory (data index)" 1 "has no train/ directory" \
  "$lcl" data index --root "$work/root_no_train"
cp -r "$work/root_no_images" "$work/root_no_classes"
try "data root: train/ without classes (data index)" 1 "root_no_classes holds no images: no train/<wnid>/ folder" \
  "$lcl" data index --root "$work/root_no_classes"
mkdir -p "$work/root_bad_synsets" && cp -r "$work/synth/train" "$work/root_bad_synsets/"
printf 'n0000\n' >"$work/root_bad_synsets/LOC_synset_mapping.txt"
try "data root: malformed synset mapping (data index)" 1 "LOC_synset_mapping.txt:1" \
  "$lcl" data index --root "$work/root_bad_synsets"

# ---- pairs files -----------------------------------------------------------------------------------------------
pairs() {  # pairs NAME PYTHON: $work/NAME.jsonl, the synth's pairs file with `rows` (a list of dicts) edited
  python3 - "$work/synth/train_pairs.jsonl" "$work/$1.jsonl" "$2" <<'PY' || fail "writing $1.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
exec(sys.argv[3])
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
PY
}
pairs_case() {  # pairs_case NAME FRAGMENT PYTHON
  pairs "$1" "$3"
  train_case "pairs file: $1" 1 "$2" --set "data.train_pairs=$work/$1.jsonl"
}
pairs_case malformed_line "malformed_line.jsonl:3: not valid JSON" 'rows[2] = "{\"class_id\": oops"'
pairs_case unknown_neighbour "names unknown class_id \"n99999999\"" \
  'rows[0]["neighbors"][0][0] = "n99999999"'
pairs_case empty_neighbours "classes with empty \"neighbors\"" 'for r in rows: r["neighbors"] = []'
pairs_case own_neighbour "lists itself as neighbour 0" 'rows[1]["neighbors"][0][0] = rows[1]["class_id"]'
pairs_case duplicate_class "duplicate class_id; each class must appear on exactly one line" 'rows.append(rows[0])'
pairs_case empty_samples "field \"samples\" is empty; need at least one image" 'rows[0]["samples"] = []'
pairs_case missing_field "missing_field.jsonl:1: field \"class_id\"" 'del rows[0]["class_id"]'
pairs_case no_lines "no class lines; expected one JSON object per class" 'rows = []'
train_case "pairs file: missing" 1 "cannot open pairs file $work/no_such_pairs.jsonl" \
  --set "data.train_pairs=$work/no_such_pairs.jsonl"

# ---- images: every image of a copy of the tree spoilt the same way ------------------------------------------
spoil() {  # spoil KIND: $work/img_KIND, the synth tree with every image truncated|text|empty|huge
  cp -r "$work/synth" "$work/img_$1"
  python3 - "$work/img_$1/train" "$1" <<'PY' || fail "spoiling the images ($1)"
import os, sys
root, kind = sys.argv[1:3]
for d, _, files in os.walk(root):
    for name in files:
        p = os.path.join(d, name)
        b = bytearray(open(p, "rb").read())
        if kind == "truncated":
            b = b[: len(b) // 2]
        elif kind == "text":
            b = b"this is not a picture\n"
        elif kind == "empty":
            b = b""
        elif kind == "huge":  # the SOF header says 30000 x 30000 (a decompression bomb); the data stays small
            i = 2
            while b[i + 1] not in (0xC0, 0xC1, 0xC2):
                i += 2 + (b[i + 2] << 8 | b[i + 3])
            b[i + 5:i + 9] = (30000).to_bytes(2, "big") * 2
        open(p, "wb").write(b)
PY
}
for kind in "truncated:truncated JPEG (no end-of-image marker)" \
            "text:not an image (no decodable JPEG/PNG/BMP/WebP content)" \
            "empty:empty file (0 bytes)" "huge:30000x30000 = 900000000 pixels is over the limit"; do
  IFS=: read -r how why <<<"$kind"
  spoil "$how"
  train_case "image: $how" 1 "$why" --set "data.root=$work/img_$how"
done
cp -r "$work/synth" "$work/img_one_bad"
one=$(find "$work/img_one_bad/train" -name '*.JPEG' | sort | head -1)
truncate -s $(($(stat -c %s "$one") / 2)) "$one"
train_case "image: one truncated JPEG with data.max_bad_fraction 0" 1 \
  "over the limit of 0.000000% (data.max_bad_fraction); last: $one: truncated JPEG" \
  --set "data.root=$work/img_one_bad" --set data.max_bad_fraction=0 --set data.shot=8 --set schedule.total_steps=16

# ---- model directories ---------------------------------------------------------------------------------------
model_copy() { rm -rf "$work/m_$1" && cp -r "$work/model" "$work/m_$1" && echo "$work/m_$1"; }
model_case() {  # model_case NAME FRAGMENT (the model in $work/m_NAME)
  train_case "model: $1" 1 "$2" --set "model.path=$work/m_$1"
}
rm "$(model_copy no_config)/config.json"
model_case no_config "cannot open model config '$work/m_no_config/config.json'; expected a HF config.json"
echo '{"text_config": ' >"$(model_copy bad_json)/config.json"
model_case bad_json "m_bad_json/config.json: not valid JSON"
python3 -c "
import json, sys
c = json.load(open(sys.argv[1])); c['hidden_size'] = 'big'; json.dump(c, open(sys.argv[1], 'w'))" \
  "$(model_copy wrong_field_type)/config.json" || fail "editing config.json"
model_case wrong_field_type "field 'hidden_size' has the wrong type (\"big\")"
rm "$(model_copy no_weights)/model.safetensors"
model_case no_weights "no model.safetensors or model.safetensors.index.json in '$work/m_no_weights"
rm "$(model_copy no_tokenizer)/tokenizer.model"
model_case no_tokenizer "cannot load tokenizer $work/m_no_tokenizer/tokenizer.model"
weights=$(model_copy missing_tensor)/model.safetensors
safetensors_edit "$weights" drop model.norm.weight
model_case missing_tensor "missing tensor 'model.norm.weight'; the checkpoint does not match config.json"
safetensors_edit "$(model_copy misshaped)/model.safetensors" transpose model.embed_tokens.weight
model_case misshaped "tensor 'model.embed_tokens.weight' has shape"
safetensors_edit "$(model_copy int_dtype)/model.safetensors" int model.norm.weight
model_case int_dtype "tensor 'model.norm.weight' has dtype I32; expected F32, F16 or BF16"
safetensors_edit "$(model_copy extra_tensor)/model.safetensors" copy model.norm.weight
model_case extra_tensor "unexpected tensor 'model.norm.weight_extra'"
weights=$(model_copy truncated)/model.safetensors
truncate -s -1000 "$weights"
model_case truncated "the file is truncated; copy or write it again"
train_case "model: missing directory" 1 "cannot open model config '$work/no_such_model/config.json'" \
  --set "model.path=$work/no_such_model"

# ---- evaluation files (lcl eval, 1 rank) -----------------------------------------------------------------------
evaluate() {  # evaluate NAME CODE FRAGMENT lcl-eval-arguments...
  local name=$1 code=$2 fragment=$3
  shift 3
  try "$name" "$code" "$fragment" "$lcl" eval --config "$base" --run-dir "$work/runs/eval_${#names[@]}" "$@"
}
evaluate "eval: missing ISEKAI file" 1 "cannot open ISEKAI file $work/no_such.jsonl" --isekai "$work/no_such.jsonl"
echo 'not json' >"$work/isekai_bad.jsonl"
evaluate "eval: ISEKAI line not JSON" 1 "isekai_bad.jsonl:1: not valid JSON" --isekai "$work/isekai_bad.jsonl"
: >"$work/isekai_empty.jsonl"
evaluate "eval: empty ISEKAI file" 1 "isekai_empty.jsonl: no ISEKAI lines" --isekai "$work/isekai_empty.jsonl"
head -n 3 "$work/synth/test_pairs.jsonl" >"$work/odd_pairs.jsonl"
evaluate "eval: odd number of test classes" 1 "odd_pairs.jsonl: 3 classes; expected a positive even number" \
  --test-pairs "$work/odd_pairs.jsonl"
evaluate "eval: missing test pairs file" 1 "cannot open test pairs file $work/no_such_pairs.jsonl" \
  --test-pairs "$work/no_such_pairs.jsonl"
echo '[1, 2]' >"$work/index_list.json"
evaluate "eval: index not a JSON object" 1 "index_list.json: not a JSON object" --index "$work/index_list.json"
echo '{"classes": []}' >"$work/index_nosplit.json"
evaluate "eval: index without a split" 1 "index_nosplit.json: no \"split\"" --index "$work/index_nosplit.json"
evaluate "eval: --checkpoint that is not a step directory" 1 "--checkpoint $work/runs: not a complete checkpoint" \
  --checkpoint "$work/runs"

# ---- checkpoints: one committed step from a real run, then spoilt copies -------------------------------------
wait
"$lcl" train --config "$base" --set checkpoint.at_end=true --run-dir "$work/ck" >"$work/ck.log" 2>&1 ||
  fail "the checkpoint run exited $?: $(tail -5 "$work/ck.log")"
step=$work/ck/checkpoints/step_00000001
[ -f "$step/manifest.pb" ] || fail "the checkpoint run committed no step_00000001"
shard=$(basename "$(find "$step" -name '*.safetensors' | sort | head -1)")
ck_copy() { rm -rf "$work/ck_$1" && cp -r "$step" "$work/ck_$1" && echo "$work/ck_$1"; }
resume_case() {  # resume_case NAME FRAGMENT STEP_DIR [lcl-train-arguments...]
  local name=$1 fragment=$2 dir=$3
  shift 3
  train_case "checkpoint: $name" 1 "$fragment" --set schedule.total_steps=2 --resume "$dir" "$@"
}
resume_case "--resume of a missing directory" "--resume $work/ck/checkpoints/step_00000009: not a complete checkpoint" \
  "$work/ck/checkpoints/step_00000009"
resume_case "--resume of the run directory, not a step" \
  "--resume $work/ck: not a complete checkpoint (no manifest.pb)" "$work/ck"
: >"$(ck_copy empty_manifest)/manifest.pb"
resume_case "0-byte manifest.pb" "ck_empty_manifest is not a usable checkpoint: manifest.pb is empty" \
  "$work/ck_empty_manifest"
rm "$(ck_copy missing_shard)/$shard"
resume_case "missing shard" "$shard: missing" "$work/ck_missing_shard"
dir=$(ck_copy flipped)
printf '\x01' | dd of="$dir/$shard" bs=1 seek=300 conv=notrunc 2>/dev/null
resume_case "corrupt shard (a flipped byte)" "$shard: checksum" "$dir"
truncate -s -10 "$(ck_copy truncated)/$shard"
resume_case "truncated shard" "(truncated)" "$work/ck_truncated"
"$lcl" model init --preset tiny --patch-size 16 --out "$work/other_model" --class-names "$work/names.txt" \
  >"$work/other.log" 2>&1 || fail "model init of another model: $(tail -3 "$work/other.log")"
resume_case "another model's checkpoint" "the config's model shape differs from the checkpoint's" "$step" \
  --set "model.path=$work/other_model"
try "checkpoint: a run directory with checkpoints, without --resume" 1 "already holds checkpoints; pass --resume auto" \
  "$lcl" train --config "$base" --run-dir "$work/ck"

no_crash() { ! grep -qE "internal error|terminate called|Segmentation fault|Aborted|core dumped|\*\*\* " "$1"; }
# ---- the verdicts --------------------------------------------------------------------------------------------
wait
for i in "${!names[@]}"; do
  out=$work/case$i.out
  rc=$(cat "$work/case$i.rc" 2>/dev/null || echo none)
  check "${names[i]}: exit ${codes[i]} (got $rc)" test "$rc" = "${codes[i]}"
  check "${names[i]}: says '${fragments[i]}'" grep -qF -- "${fragments[i]}" "$out"
  check "${names[i]}: no crash" no_crash "$out"
  if [ "$rc" != "${codes[i]}" ] || ! grep -qF -- "${fragments[i]}" "$out"; then sed 's/^/    | /' "$out" | tail -8; fi
done
echo "${#names[@]} bad inputs tried"
