#!/usr/bin/env python3
"""Checks that two committed checkpoints of the same layout hold bitwise-identical tensors (model and optimizer).

    compare_checkpoints.py STEP_DIR_A STEP_DIR_B

Reads the safetensors shard files directly (no torch needed) and compares every tensor's bytes by name.
"""
import json
import os
import struct
import sys


def tensors(step_dir):
    out = {}
    for name in sorted(os.listdir(step_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(step_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            for key, meta in header.items():
                if key == "__metadata__":
                    continue
                begin, end = meta["data_offsets"]
                f.seek(8 + n + begin)
                out[(name, key)] = f.read(end - begin)
    return out


def main():
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    assert a, f"no tensors in {sys.argv[1]}"
    assert a.keys() == b.keys(), f"different tensor sets: {sorted(set(a) ^ set(b))[:5]}"
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"
    print(f"  {len(a)} tensors bitwise equal")


if __name__ == "__main__":
    main()
