#!/usr/bin/env python3
"""Can a model's frozen vision tower tell a synth tree's held-out 2-way test pairs apart at all?

For each trial: a test pair (two classes of one family, as `lcl eval` pairs them) or, for reference, two random
test classes; `--shots` support images per side and one query image of the first; the answer is the side holding
the support image nearest to the query in the tower's features (the layer the projector reads, patch tokens
flattened). Chance is 0.5. A model that links labels to images can only do as well as what the tower shows it,
so a tree whose within-family accuracy is near 0.5 cannot teach link-context learning (docs/data.md).

    .venv/bin/python tests/sampler/tower_probe.py MODEL_DIR SYNTH_ROOT [--shots 4] [--trials 600] [--min-family X]

Reads the HF safetensors and config.json that `lcl model init` writes; decodes JPEGs with PIL. Needs torch and pillow
(the project's .venv: launch/setup.sh).
Exits 1 when --min-family is given and within-family accuracy is below it.
"""
import argparse
import json
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from safetensors_io import read_tensors  # noqa: E402

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
PREFIX = "model.vision_tower.vision_tower.vision_model."


def load_tower(model_dir):
    tensors = read_tensors(f"{model_dir}/model.safetensors", keep=lambda name: name.startswith(PREFIX))
    weights = {}
    for name, t in tensors.items():
        assert t.dtype == "F32", f"{name}: {t.dtype} (the probe reads F32 towers)"
        weights[name[len(PREFIX):]] = torch.from_numpy(np.frombuffer(t.data, dtype=np.float32).copy()).reshape(t.shape)
    config = json.load(open(f"{model_dir}/config.json"))
    return weights, config["vision_config"], config.get("mm_vision_select_layer", -2)


def tower_features(w, cfg, select_layer, images):
    d, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-5)
    ln = lambda x, p: F.layer_norm(x, (d,), w[p + ".weight"], w[p + ".bias"], eps)
    lin = lambda x, p: F.linear(x, w[p + ".weight"], w[p + ".bias"])
    x = F.conv2d(images, w["embeddings.patch_embedding.weight"], stride=cfg["patch_size"]).flatten(2).transpose(1, 2)
    x = torch.cat([w["embeddings.class_embedding"].expand(x.shape[0], 1, d), x], 1)
    x = ln(x + w["embeddings.position_embedding.weight"], "pre_layrnorm")
    hidden = [x]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layers.{i}."
        y = ln(x, p + "layer_norm1")
        q, k, v = (lin(y, p + f"self_attn.{t}_proj").view(x.shape[0], -1, heads, d // heads).transpose(1, 2)
                   for t in "qkv")
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v
        x = x + lin(a.transpose(1, 2).reshape(x.shape[0], -1, d), p + "self_attn.out_proj")
        y = lin(ln(x, p + "layer_norm2"), p + "mlp.fc1")
        x = x + lin(y * torch.sigmoid(1.702 * y), p + "mlp.fc2")  # quick_gelu
        hidden.append(x)
    return hidden[select_layer][:, 1:].flatten(1)  # patch tokens, as the projector reads them


def load_image(path, size):
    img = Image.open(path).convert("RGB")
    side = max(img.size)
    square = Image.new("RGB", (side, side), tuple(int(c) for c in np.asarray(img).reshape(-1, 3).mean(0)))
    square.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    x = torch.from_numpy(np.asarray(square.resize((size, size), Image.BICUBIC)).copy()).permute(2, 0, 1)
    return (x.float() / 255 - CLIP_MEAN) / CLIP_STD


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("root")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--trials", type=int, default=600)
    ap.add_argument("--min-family", type=float, default=None)
    a = ap.parse_args()
    w, cfg, select = load_tower(a.model_dir)
    classes = [json.loads(l) for l in open(f"{a.root}/test_pairs.jsonl") if l.strip()]
    feats = []
    with torch.no_grad():
        for c in classes:
            paths = c["context_samples"] + c["test_samples"]
            feats.append(tower_features(w, cfg, select,
                                        torch.stack([load_image(f"{a.root}/{p}", cfg["image_size"]) for p in paths])))
    rng = random.Random(0)
    result = {}
    for pairing in ("family", "random"):
        correct = 0
        for _ in range(a.trials):
            if pairing == "family":  # test classes 2k and 2k+1 are one family's pair (lcl data synth)
                k = rng.randrange(len(classes) // 2)
                pos, neg = rng.sample([2 * k, 2 * k + 1], 2)
            else:
                pos, neg = rng.sample(range(len(classes)), 2)
            ip = rng.sample(range(len(feats[pos])), a.shots + 1)
            ineg = rng.sample(range(len(feats[neg])), a.shots)
            query = feats[pos][ip[-1]]
            d_pos = ((feats[pos][ip[:-1]] - query) ** 2).sum(-1).min()
            d_neg = ((feats[neg][ineg] - query) ** 2).sum(-1).min()
            correct += bool(d_pos < d_neg)
        result[pairing] = correct / a.trials
    print(f"nearest-support 2-way accuracy in the tower's features ({a.shots} shots, {a.trials} trials, chance 0.5): "
          f"within a family {result['family']:.3f}, random pairs {result['random']:.3f}")
    if a.min_family is not None and result["family"] < a.min_family:
        print(f"FAIL: within-family accuracy {result['family']:.3f} < {a.min_family}: the tower cannot tell the "
              "test pairs apart, so no model can learn them")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
