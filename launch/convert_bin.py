"""PyTorch .bin checkpoints -> safetensors, for `lcl model convert-bin` (lcl reads safetensors only and never
unpickles). Many LLaVA v1, Vicuna and Shikra checkpoints are pickled `pytorch_model.bin` files or shards listed in
`pytorch_model.bin.index.json`. Each shard becomes one safetensors shard (same tensors, same order), the index is
rewritten as `model.safetensors.index.json`, and the other files (config.json, tokenizer files) are copied.

    convert_bin.py IN_DIR OUT_DIR

Pickles are loaded with `weights_only=True`: a file that needs arbitrary code to unpickle is refused, not run.
Exit status 0 on success, 2 with a message naming the file for bad input.
"""

import json
import os
import shutil
import sys

INDEX = "pytorch_model.bin.index.json"


def fail(message):
    print(f"convert-bin: error: {message}", file=sys.stderr)
    sys.exit(2)


def bin_shards(in_dir):
    """The .bin files in order, and the index's weight map when sharded."""
    index_path = os.path.join(in_dir, INDEX)
    if os.path.exists(index_path):
        try:
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            fail(f"{index_path}: not a valid index ({e}); expected {{\"weight_map\": {{tensor: file}}}}")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not os.path.exists(os.path.join(in_dir, name)):
                fail(f"{index_path} lists {name}, which is not in {in_dir}")
        return files, weight_map
    files = sorted(n for n in os.listdir(in_dir) if n.endswith(".bin"))
    if not files:
        fail(f"{in_dir} has no pytorch_model*.bin files (nor {INDEX}); nothing to convert")
    if len(files) > 1:
        fail(f"{in_dir} has {len(files)} .bin files but no {INDEX} saying which tensor is where")
    return files, None


def load_state_dict(path):
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        fail(f"{path}: cannot be read as a PyTorch weights file ({type(e).__name__}: {e}); "
             "it must be a state dict saved by torch.save (weights only)")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        fail(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        fail(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:5]))}; not a model state dict")
    # safetensors refuses tensors that share storage (tied weights, views): store each one on its own.
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def main(argv):
    if len(argv) != 3:
        fail("usage: convert_bin.py IN_DIR OUT_DIR")
    in_dir, out_dir = argv[1], argv[2]
    if not os.path.isdir(in_dir):
        fail(f"{in_dir} is not a directory")
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        fail(f"the safetensors package is missing ({e}); launch/setup.sh installs it into .venv")
    files, weight_map = bin_shards(in_dir)
    os.makedirs(out_dir, exist_ok=True)
    new_map, total = {}, 0
    for i, name in enumerate(files):
        state = load_state_dict(os.path.join(in_dir, name))
        if weight_map is not None:
            expected = {k for k, v in weight_map.items() if v == name}
            if expected != set(state):
                missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
                fail(f"{name} does not hold what {INDEX} says: missing {missing[:5]}, unlisted {extra[:5]}")
        out_name = ("model.safetensors" if len(files) == 1 else
                    f"model-{i + 1:05d}-of-{len(files):05d}.safetensors")
        save_file(state, os.path.join(out_dir, out_name), metadata={"format": "pt"})
        for k, v in state.items():
            new_map[k] = out_name
            total += v.numel() * v.element_size()
        print(f"convert-bin: {name} -> {out_name} ({len(state)} tensors)")
    if len(files) > 1:
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": new_map}, f, indent=2)
    for name in sorted(os.listdir(in_dir)):
        src = os.path.join(in_dir, name)
        if name.endswith(".bin") or name == INDEX or not os.path.isfile(src):
            continue
        shutil.copyfile(src, os.path.join(out_dir, name))
    print(f"convert-bin: wrote {len(new_map)} tensors ({total} bytes) to {out_dir}")


if __name__ == "__main__":
    main(sys.argv)
