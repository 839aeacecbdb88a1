"""Hugging Face parity, both ways, with models built and saved by transformers' own classes (not by lcl).

Each case saves a tiny random model with `save_pretrained` (safetensors), runs `lcl model forward` on it at TP=1 and
TP=2 (mpirun -np 2), and compares with the HF model in fp32: decoder logits over a left-padded batch, CLIP tower
features, multimodal logits, all within 1e-4 max abs; greedy generation of 8 tokens identical. Weights are drawn so
that logits are O(1) (HF's 0.02 init gives near-zero logits that any code would match; the test checks the scale).

Cases: LlamaForCausalLM (MHA untied with rope_theta 5e5 and rms_norm_eps 1e-6; GQA tied; an explicit head_dim with
attention and MLP biases), LlavaForConditionalGeneration (llava-hf layout, feature layer -2), the LLaVA v1 layout
(`model.mm_projector`, tower from a separate CLIPVisionModel checkpoint, feature layer -1), a sharded checkpoint
(index + shards) and pickled .bin shards converted by `lcl model convert-bin`. The other way: what
`lcl model export-hf` writes (llava-hf layout, sharded; LLaVA v1 layout) loads strictly into HF's classes and gives
the same outputs. Negative controls: one changed weight and one changed config field must make the comparison fail.

    hf_parity_test.py WORK_DIR        (LCL_BIN, LCL_MPIRUN from ctest; run with the venv's python)
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import (CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlavaConfig,
                          LlavaForConditionalGeneration)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
torch.use_deterministic_algorithms(True)
TOL = 1e-4
LCL = os.environ.get("LCL_BIN", "build/launch/lcl")
MPIRUN = shlex.split(os.environ.get("LCL_MPIRUN", "mpirun --oversubscribe"))
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def o1_init(model, seed):
    """Weights for O(1) logits: unit-variance embeddings, 1/sqrt(fan_in) linear layers, norms near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):  # RMSNorm, LayerNorm (CLIP's pre_layrnorm too)
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name or p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model.eval()


def llama_config(**kw):
    base = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                eos_token_id=2)
    base.update(kw)
    return LlamaConfig(**base)


def clip_config(**kw):
    base = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
                patch_size=8, hidden_act="quick_gelu")
    base.update(kw)
    return CLIPVisionConfig(**base)


def text_batch(vocab, seed):
    """Two rows, the second left-padded by 3 (attention_mask 0); ids avoid the special tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab - 1, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    return ids, mask


def image_batch(vocab, image_token, patches, n_images, seed):
    """Two left-padded rows holding the images' placeholder runs (one image in row 0, the rest in row 1)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for r, imgs in enumerate([1, n_images - 1]):
        text = torch.randint(3, vocab - 2, (5 + 2 * r,), generator=g).tolist()
        row = text[:2]
        for _ in range(imgs):
            row += [image_token] * patches + torch.randint(3, vocab - 2, (2,), generator=g).tolist()
        rows.append(row + text[2:])
    width = max(len(r) for r in rows)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
    pixels = torch.randn(n_images, 3, 32, 32, generator=g)
    return ids, mask, pixels


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp_min(0)


def run_lcl(model_dir, inputs, tp, extra=(), generate=8):
    out = inputs + f".tp{tp}.out.safetensors"
    cmd = [LCL, "model", "forward", "--model", model_dir, "--inputs", inputs, "--out", out, "--tp", str(tp),
           "--generate", str(generate), *extra]
    if tp > 1:
        cmd = MPIRUN + ["-np", str(tp)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return load_file(out)


def max_diff(a, b, mask=None):
    """Max abs difference at real (unpadded) positions."""
    if a.shape != b.shape:
        return float("inf")
    d = (a.float() - b.float()).abs()
    if mask is not None:
        d = d[mask.bool()]
    return d.max().item()


def write_inputs(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def hf_generate(model, ids, mask, **kw):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=1,
                         eos_token_id=None, pad_token_id=0, **kw)
    return out[:, ids.shape[1]:]


def compare(name, lcl_out, ref_logits, mask, ref_generated=None, ref_features=None, tp=1):
    scale = ref_logits[mask.bool()].std().item()
    check(0.3 < scale < 30, f"{name} tp{tp}: HF logits are O(1) (std {scale:.3f})")
    d = max_diff(lcl_out["logits"], ref_logits, mask)
    check(d < TOL, f"{name} tp{tp}: logits max abs diff {d:.2e} < {TOL}")
    if ref_features is not None:
        d = max_diff(lcl_out["vision_features"], ref_features)
        check(d < TOL, f"{name} tp{tp}: tower features max abs diff {d:.2e} < {TOL}")
    if ref_generated is not None:
        same = torch.equal(lcl_out["generated"], ref_generated)
        check(same, f"{name} tp{tp}: greedy 8 tokens identical {lcl_out['generated'].tolist()}"
              + ("" if same else f" vs HF {ref_generated.tolist()}"))
    return d


# ---- decoders: LlamaForCausalLM ----------------------------------------------------------------------------------
def llama_case(work, name, seed, **cfg):
    d = os.path.join(work, name)
    model = o1_init(LlamaForCausalLM(llama_config(**cfg)), seed)
    model.save_pretrained(d)
    ids, mask = text_batch(model.config.vocab_size, seed)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    gen = hf_generate(model, ids, mask)
    inputs = write_inputs(os.path.join(work, name + ".in.safetensors"), input_ids=ids, attention_mask=mask)
    for tp in (1, 2):
        compare(name, run_lcl(d, inputs, tp, ["--text-only"]), ref, mask, gen, tp=tp)
    return d, model, inputs, ref, mask


# ---- llava-hf: LlavaForConditionalGeneration ---------------------------------------------------------------------
def llava_hf_model(seed):
    cfg = LlavaConfig(text_config=llama_config(num_key_value_heads=2), vision_config=clip_config(),
                      image_token_index=127, vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    return o1_init(LlavaForConditionalGeneration(cfg), seed)


def llava_hf_ref(model, ids, mask, pixels):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, position_ids=positions(mask)).logits
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
    # lcl never generates the image placeholder (it only marks where patches go): HF is told the same.
    gen = hf_generate(model, ids, mask, pixel_values=pixels, suppress_tokens=[127])
    return logits, hidden[-2][:, 1:], gen


# ---- LLaVA v1: LLaMA + model.mm_projector + a separate CLIP checkpoint -------------------------------------------
def llava_v1_case(work, seed):
    d, clip_dir = os.path.join(work, "llava_v1"), os.path.join(work, "llava_v1_clip")
    llama = o1_init(LlamaForCausalLM(llama_config()), seed)
    tower = o1_init(CLIPVisionModel(clip_config()), seed + 1)
    tower.save_pretrained(clip_dir)
    g = torch.Generator().manual_seed(seed + 2)
    proj = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    with torch.no_grad():
        for p in proj.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))
    llama.save_pretrained(d)
    # What LLaVA v1's LlavaLlamaForCausalLM saves: the LLaMA tensors plus model.mm_projector.*, the mm_* keys.
    tensors = load_file(os.path.join(d, "model.safetensors"))
    for k, v in proj.state_dict().items():
        tensors["model.mm_projector." + k] = v.contiguous()
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    config.update({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "mm_projector_type":
                   "mlp2x_gelu", "mm_hidden_size": 32, "mm_vision_select_layer": -1,
                   "mm_vision_select_feature": "patch", "mm_vision_tower": clip_dir, "mm_use_im_start_end": False,
                   "image_token_index": 127})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    ids, mask, pixels = image_batch(128, 127, 16, 3, seed)
    with torch.no_grad():
        features = tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        embeds = llama.get_input_embeddings()(ids.masked_fill(ids == 127, 0))
        embeds[ids == 127] = proj(features).reshape(-1, 64)
        ref = llama(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask)).logits
        gen = llama.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, do_sample=False,
                             num_beams=1, eos_token_id=None, pad_token_id=0, suppress_tokens=[127])
    inputs = write_inputs(os.path.join(work, "llava_v1.in.safetensors"), input_ids=ids, attention_mask=mask,
                          pixel_values=pixels)
    for tp in (1, 2):
        compare("llava-v1 (separate CLIP, layer -1)", run_lcl(d, inputs, tp, ["--vision", clip_dir]), ref, mask,
                gen, features, tp=tp)
    return d, clip_dir, llama, inputs, ref, mask


def strict_load(cls, path, allowed_unexpected=()):
    model, info = cls.from_pretrained(path, output_loading_info=True)
    unexpected = [k for k in info["unexpected_keys"] if not k.startswith(tuple(allowed_unexpected))]
    ok = not info["missing_keys"] and not unexpected and not info["mismatched_keys"]
    check(ok, f"{os.path.basename(path)} loads strictly into {cls.__name__} ({info['missing_keys'] or ''}"
              f"{unexpected or ''}{info['mismatched_keys'] or ''})")
    return model.eval()


def lcl_cmd(*args, np=1):
    cmd = [LCL, *args]
    if np > 1:
        cmd = MPIRUN + ["-np", str(np)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, " ".join(["lcl", *args]) + (f" (exit {r.returncode}: {r.stderr[-400:]})"
                                                         if r.returncode else ""))
    return r


def main():
    work = sys.argv[1]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    llama_case(work, "llama_mha_untied", 11, rope_theta=500000.0, rms_norm_eps=1e-6)
    gqa_dir, gqa, gqa_in, gqa_ref, gqa_mask = llama_case(work, "llama_gqa_tied", 12, num_key_value_heads=2,
                                                         tie_word_embeddings=True)
    llama_case(work, "llama_head_dim_biases", 13, head_dim=32, attention_bias=True, mlp_bias=True)

    # llava-hf, multimodal, at TP 1 and 2.
    hf_dir = os.path.join(work, "llava_hf")
    llava = llava_hf_model(14)
    llava.save_pretrained(hf_dir)
    ids, mask, pixels = image_batch(128, 127, 16, 3, 14)
    ref, feats, gen = llava_hf_ref(llava, ids, mask, pixels)
    hf_in = write_inputs(os.path.join(work, "llava_hf.in.safetensors"), input_ids=ids, attention_mask=mask,
                         pixel_values=pixels)
    for tp in (1, 2):
        compare("llava-hf (layer -2)", run_lcl(hf_dir, hf_in, tp), ref, mask, gen, feats, tp=tp)

    v1_dir, clip_dir, v1_llama, v1_in, v1_ref, v1_mask = llava_v1_case(work, 15)

    # Sharded in: HF's own index + shards.
    sharded = os.path.join(work, "llava_hf_sharded")
    llava.save_pretrained(sharded, max_shard_size="100KB")
    shards = [f for f in os.listdir(sharded) if f.endswith(".safetensors")]
    check(len(shards) > 1 and os.path.exists(os.path.join(sharded, "model.safetensors.index.json")),
          f"HF wrote a sharded checkpoint ({len(shards)} shards)")
    compare("llava-hf sharded in", run_lcl(sharded, hf_in, 2), ref, mask, gen, feats, tp=2)

    # PyTorch .bin shards (as many LLaVA v1 / Vicuna checkpoints ship) -> convert-bin -> lcl.
    bin_dir, conv_dir = os.path.join(work, "llama_bin"), os.path.join(work, "llama_bin_converted")
    os.makedirs(bin_dir)
    state = {k: v.clone() for k, v in gqa.state_dict().items() if k != "lm_head.weight"}  # tied: saved once
    names = sorted(state)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        fname = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: state[k] for k in part}, os.path.join(bin_dir, fname))
        weight_map.update({k: fname for k in part})
    with open(os.path.join(bin_dir, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    shutil.copy(os.path.join(gqa_dir, "config.json"), bin_dir)
    lcl_cmd("model", "convert-bin", "--in", bin_dir, "--out", conv_dir)
    gen_gqa = hf_generate(gqa, *text_batch(128, 12))
    compare(".bin shards via convert-bin", run_lcl(conv_dir, gqa_in, 1, ["--text-only"]), gqa_ref, gqa_mask,
            gen_gqa)

    # The other way: lcl's exports load strictly into HF's classes with the same outputs.
    exp_hf = os.path.join(work, "export_llava_hf")
    lcl_cmd("model", "export-hf", "--model", hf_dir, "--tp", "2", "--out", exp_hf, "--layout", "llava-hf",
            "--max-shard-gb", "0.0001", np=2)
    check(os.path.exists(os.path.join(exp_hf, "model.safetensors.index.json")),
          "export-hf --max-shard-gb wrote an index and shards")
    back = strict_load(LlavaForConditionalGeneration, exp_hf)
    back_ref, back_feats, back_gen = llava_hf_ref(back, ids, mask, pixels)
    check(max_diff(back_ref, ref, mask) < 1e-6 and torch.equal(back_gen, gen),
          f"llava-hf export: HF outputs equal the original's (diff {max_diff(back_ref, ref, mask):.1e})")
    exp_v1 = os.path.join(work, "export_llava_v1")
    lcl_cmd("model", "export-hf", "--model", v1_dir, "--vision", clip_dir, "--out", exp_v1)
    back_llama = strict_load(LlamaForCausalLM, exp_v1, ("model.mm_projector.", "model.vision_tower."))
    ids1, mask1 = text_batch(128, 21)
    with torch.no_grad():
        a = back_llama(input_ids=ids1, attention_mask=mask1, position_ids=positions(mask1)).logits
        b = v1_llama(input_ids=ids1, attention_mask=mask1, position_ids=positions(mask1)).logits
    check(max_diff(a, b, mask1) < 1e-6, "llava-v1 export: its LLaMA part gives the original's logits")
    exported = load_file(os.path.join(exp_v1, "model.safetensors"))
    original_tower = load_file(os.path.join(clip_dir, "model.safetensors"))
    # transformers 5's CLIPVisionModel saves "embeddings.*", older ones "vision_model.embeddings.*".
    tower_names = {k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in original_tower.items()}
    same_tower = len(tower_names) > 10 and all(
        torch.equal(exported["model.vision_tower.vision_tower." + k], v) for k, v in tower_names.items())
    check(same_tower, f"llava-v1 export holds all {len(tower_names)} CLIP tower tensors under "
                      "model.vision_tower.vision_tower.vision_model.*")

    # Negative controls: the comparison must be able to fail.
    bad_w = os.path.join(work, "neg_weight")
    shutil.copytree(hf_dir, bad_w)
    t = load_file(os.path.join(bad_w, "model.safetensors"))
    key = "language_model.model.layers.1.mlp.down_proj.weight"
    t[key] = t[key].clone()
    t[key][0, 0] += 0.5
    save_file(t, os.path.join(bad_w, "model.safetensors"), metadata={"format": "pt"})
    d = max_diff(run_lcl(bad_w, hf_in, 1)["logits"], ref, mask)
    check(d > TOL, f"negative control: one changed weight ({key}[0, 0] + 0.5) fails the comparison ({d:.2e})")
    bad_c = os.path.join(work, "neg_config")
    shutil.copytree(gqa_dir, bad_c)
    with open(os.path.join(bad_c, "config.json")) as f:
        c = json.load(f)
    c["rope_parameters"]["rope_theta"] = 20000.0
    with open(os.path.join(bad_c, "config.json"), "w") as f:
        json.dump(c, f)
    d = max_diff(run_lcl(bad_c, gqa_in, 1, ["--text-only"])["logits"], gqa_ref, gqa_mask)
    check(d > TOL, f"negative control: rope_theta 10000 -> 20000 in config.json fails the comparison ({d:.2e})")

    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
