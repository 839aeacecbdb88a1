#!/usr/bin/env bash
# `lcl data neighbors --model`: per-class image features from a tiny model's frozen (random) CLIP tower over a
# synthetic tree, then the neighbour table. Checks that the output parses, that the saved features reproduce the
# same table through --image-features, that classes of the same synth family (same shape and hue, other shade
# and stripe angle) are nearer each other than chance, and that the tower still tells family members apart
# (tower_probe.py). Needs LCL_BIN and LCL_PYTHON (torch and pillow: the project's .venv).
set -euo pipefail
# shellcheck source=tests/lib/harness.sh
source "$(dirname "$0")/../lib/harness.sh"
need_lcl

"$lcl" data synth --out "$tmp/s" --classes 16 --images-per-class 10 --size 96x96 --family-size 4 --seed 3 \
  > /dev/null
"$lcl" model init --preset tiny --out "$tmp/m" > /dev/null 2>&1 || fail "model init failed"

"$lcl" data neighbors --root "$tmp/s" --model "$tmp/m" --images-per-class 5 --neighbors 3 --samples 2 \
  --save-features "$tmp/f.safetensors" --out "$tmp/tower.jsonl" > "$tmp/out.txt"
grep -q "vision tower" "$tmp/out.txt" || fail "summary does not name the tower: $(cat "$tmp/out.txt")"

# The saved features give the same table through the existing --image-features path.
"$lcl" data neighbors --root "$tmp/s" --image-features "$tmp/f.safetensors" --neighbors 3 --samples 2 \
  --out "$tmp/file.jsonl" > /dev/null
cmp -s "$tmp/tower.jsonl" "$tmp/file.jsonl" || fail "--save-features then --image-features gives another table"

# Exactly one feature source.
if "$lcl" data neighbors --root "$tmp/s" --out "$tmp/x.jsonl" 2> "$tmp/err.txt"; then fail "no features accepted"; fi
grep -q "exactly one of --image-features" "$tmp/err.txt" || fail "unclear error: $(cat "$tmp/err.txt")"

python3 - "$tmp/tower.jsonl" "$tmp/f.safetensors" "$tmp/s/class_split.json" <<'PY'
import json, math, struct, sys
pairs = [json.loads(l) for l in open(sys.argv[1])]
assert len(pairs) == 16, len(pairs)
assert all(len(p["neighbors"]) == 3 and len(p["samples"]) == 2 for p in pairs)
family = {}
for f, ids in enumerate(json.load(open(sys.argv[3]))["families"]):
    for i in ids:
        family[int(i)] = f

# Features: [16, 64] F32, finite, not all equal.
raw = open(sys.argv[2], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
info = json.loads(raw[8:8 + n])["image_features"]
assert info["dtype"] == "F32" and info["shape"] == [16, 64], info
rows, cols = info["shape"]
vals = struct.unpack(f"<{rows * cols}f", raw[8 + n + info["data_offsets"][0]:8 + n + info["data_offsets"][1]])
feat = [vals[r * cols:(r + 1) * cols] for r in range(rows)]
assert all(math.isfinite(v) for v in vals)
unit = [[v / math.sqrt(sum(x * x for x in f)) for v in f] for f in feat]
sim = [[sum(a * b for a, b in zip(u, w)) for w in unit] for u in unit]

# Nearest other class by cosine (what the first interval is drawn from): same family, against 3/15 by chance.
same_nn = sum(family[max((j for j in range(16) if j != i), key=lambda j: sim[i][j]) + 1] == family[i + 1]
              for i in range(16))
# First drawn neighbour (uniform over the 5 nearest of 15): chance is again 3/15 = 0.2.
same_first = sum(family[int(p["neighbors"][0][0])] == family[int(p["class_id"])] for p in pairs)
print(f"nearest class in the same family: {same_nn}/16; first drawn neighbour in the same family: "
      f"{same_first}/16 (chance 3.2/16)")
assert same_nn >= 12, f"tower features do not separate synth families: {same_nn}/16"
assert same_first >= 7, f"first neighbours not in the same family more often than chance: {same_first}/16"
PY
# The held-out test pairs are learnable at all: in the frozen tower's features, the nearest support image is on
# the query's side well above chance within a family (a tree whose members differed by stripe angle
# alone was near chance; docs/data.md).
"${LCL_PYTHON:-python3}" "$(dirname "$0")/tower_probe.py" "$tmp/m" "$tmp/s" --shots 4 --trials 400 --min-family 0.65 ||
  fail "the tower cannot tell the synth test pairs apart"
echo "neighbors_tower_test: OK"
