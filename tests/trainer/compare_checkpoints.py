#!/usr/bin/env python3
"""Checks that two committed checkpoints of the same layout hold bitwise-identical tensors (model and optimizer).

    compare_checkpoints.py STEP_DIR_A STEP_DIR_B

Reads the safetensors shard files directly (no torch needed) and compares every tensor's bytes by name.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from safetensors_io import read_tensors, shard_files  # noqa: E402


def tensors(step_dir):
    """Every tensor's bytes, keyed by (shard file, name): the same layout must put each tensor in the same file."""
    return {(os.path.basename(path), name): t.data for path in shard_files(step_dir)
            for name, t in read_tensors(path).items()}


def main():
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    assert a, f"no tensors in {sys.argv[1]}"
    assert a.keys() == b.keys(), f"different tensor sets: {sorted(set(a) ^ set(b))[:5]}"
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"
    print(f"  {len(a)} tensors bitwise equal")


if __name__ == "__main__":
    main()
