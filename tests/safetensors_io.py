"""The tests' one reader of safetensors files (8-byte header length, JSON header, raw bytes): no torch needed.

    sys.path.insert(0, <repo>/tests); from safetensors_io import read_tensors, read_dir
    read_tensors("model.safetensors")  # {name: Tensor(dtype="F32", shape=(64, 3), data=b"...")}
    read_dir("run/checkpoints/step_00000008")  # every *.safetensors in the directory, merged
"""
import json
import os
import struct
from collections import namedtuple

Tensor = namedtuple("Tensor", "dtype shape data")


def read_tensors(path, keep=lambda name: True):
    """Every tensor of one file whose name `keep` accepts."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, meta in header.items():
            if name == "__metadata__" or not keep(name):
                continue
            begin, end = meta["data_offsets"]
            f.seek(8 + n + begin)
            out[name] = Tensor(meta["dtype"], tuple(meta["shape"]), f.read(end - begin))
    return out


def shard_files(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))


def read_dir(directory):
    """Every tensor of every shard file in a directory (a checkpoint step), by name."""
    out = {}
    for path in shard_files(directory):
        out.update(read_tensors(path))
    return out
