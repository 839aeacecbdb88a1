#!/usr/bin/env python3
"""Checks that a training run left the frozen vision tower untouched and did change the decoder.

    compare_tower.py MODEL.safetensors RUN/checkpoints

Reads safetensors files directly (8-byte header length, JSON header, raw bytes) so it needs no torch or
safetensors package. The newest committed checkpoint's shard files hold every model tensor under its Hugging Face
name; each vision tensor's bytes must equal the model file's, and at least one decoder tensor must differ.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from safetensors_io import read_dir, read_tensors  # noqa: E402


def main():
    model = read_tensors(sys.argv[1])
    steps = sorted(d for d in os.listdir(sys.argv[2]) if d.startswith("step_") and not d.endswith(".tmp"))
    assert steps, "no committed checkpoint"
    step_dir = os.path.join(sys.argv[2], steps[-1])
    saved = read_dir(step_dir)
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
