#!/usr/bin/env python3
"""Checks that a training run left the frozen vision tower untouched and did change the decoder.

    compare_tower.py MODEL.safetensors RUN/checkpoints

Reads safetensors files directly (8-byte header length, JSON header, raw bytes) so it needs no torch or
safetensors package. The newest committed checkpoint's shard files hold every model tensor under its Hugging Face
name; each vision tensor's bytes must equal the model file's, and at least one decoder tensor must differ.
"""
import json
import os
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            begin, end = meta["data_offsets"]
            f.seek(base + begin)
            out[name] = (tuple(meta["shape"]), f.read(end - begin))
        return out


def main():
    model = tensors(sys.argv[1])
    steps = sorted(d for d in os.listdir(sys.argv[2]) if d.startswith("step_") and not d.endswith(".tmp"))
    assert steps, "no committed checkpoint"
    step_dir = os.path.join(sys.argv[2], steps[-1])
    saved = {}
    for name in os.listdir(step_dir):
        if name.endswith(".safetensors"):
            saved.update(tensors(os.path.join(step_dir, name)))
    vision = [n for n in model if "vision" in n]
    assert vision, "the model file has no vision tensors"
    for n in vision:
        assert n in saved, f"{n} missing from {step_dir}"
        assert saved[n] == model[n], f"vision tensor {n} changed during training"
    changed = [n for n in model if "vision" not in n and n in saved and saved[n] != model[n]]
    assert changed, "no decoder/projector tensor changed: nothing trained"
    print(f"  {len(vision)} vision tensors identical; {len(changed)} trained tensors changed ({steps[-1]})")


if __name__ == "__main__":
    main()
