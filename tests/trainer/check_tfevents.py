#!/usr/bin/env python3
"""Checks lcl's TensorBoard event files with a reader that shares no code with the C++ one.

Two readers: one written here after TensorBoard's EventFileLoader (TFRecord framing with masked CRC32C, bitwise,
not table-driven as in C++, and protobuf wire decoding by hand with the field numbers of tensorflow's event.proto /
summary.proto), whose scalars are checked against metrics.jsonl, which the same MetricsWriter wrote; and
TensorBoard's own EventAccumulator (the tensorboard package of the project's .venv), which must read the same
scalars, tags, steps and wall times.

usage: check_tfevents.py <metrics_test binary>
"""
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    data = open(path, "rb").read()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 12]
        assert len(header) == 12, f"{path}: truncated header at {offset}"
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        assert masked(crc32c(header[:8])) == length_crc, f"{path}: length CRC at {offset}"
        body = data[offset + 12:offset + 12 + length]
        (body_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        assert masked(crc32c(body)) == body_crc, f"{path}: data CRC at {offset}"
        yield body
        offset += 16 + length


def varint(buf, pos):
    result, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def fields(buf):
    """Yields (field_number, wire_type, value) of one protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield number, wire, value


def parse_event(buf):
    """Event{double wall_time=1; int64 step=2; string file_version=3; Summary summary=5}."""
    event = {"wall_time": 0.0, "step": 0, "file_version": None, "values": []}
    for number, wire, value in fields(buf):
        if number == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3 and wire == 2:
            event["file_version"] = value.decode()
        elif number == 5 and wire == 2:
            for vnum, vwire, vbuf in fields(value):  # Summary{repeated Value value=1}
                assert vnum == 1 and vwire == 2
                tag, simple = None, None
                for n, w, v in fields(vbuf):  # Value{string tag=1; float simple_value=2}
                    if n == 1 and w == 2:
                        tag = v.decode()
                    elif n == 2 and w == 5:
                        simple = struct.unpack("<f", v)[0]
                event["values"].append((tag, simple))
    return event


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check_with_tensorboard(tb_dir, scalars):
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:
        raise SystemExit(f"check_tfevents.py: {sys.executable} cannot import tensorboard ({e}); run it with the "
                         "project's .venv/bin/python (launch/setup.sh makes it)")
    acc = event_accumulator.EventAccumulator(tb_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    seen = {}
    for tag in acc.Tags()["scalars"]:
        for point in acc.Scalars(tag):
            seen[(tag, point.step)] = (point.value, point.wall_time)
    assert seen.keys() == scalars.keys(), sorted(set(seen) ^ set(scalars))[:5]
    for key, (value, wall_time) in scalars.items():
        assert seen[key][0] == value, (key, seen[key], value)
        assert seen[key][1] == wall_time, (key, seen[key], wall_time)
    return len(seen)


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="lcl_tfevents_check_") as run_dir:
        env = dict(os.environ, LCL_TFEVENTS_EXPORT_DIR=run_dir)
        subprocess.run([binary, "--gtest_filter=TfEventsExport.*", "--expected_world_size=1"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        files = sorted(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*")))
        assert len(files) == 1, files
        events = [parse_event(r) for r in records(files[0])]
        assert events[0]["file_version"] == "brain.Event:2", events[0]
        scalars = {}
        for e in events[1:]:
            for tag, value in e["values"]:
                assert value is not None, f"{tag} at step {e['step']} has no simple_value"
                scalars[(tag, e["step"])] = (value, e["wall_time"])

        rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
        assert [r["step"] for r in rows] == list(range(21)), [r["step"] for r in rows]
        checked = 0
        for row in rows:
            for key, value in row.items():
                if key in ("step", "wall_time"):
                    continue
                got, wall_time = scalars[("train/" + key, row["step"])]
                assert got == f32(value), (key, row["step"], got, value)
                assert wall_time == row["wall_time"], (key, row["step"], wall_time, row["wall_time"])
                checked += 1
        evals = [json.loads(line) for line in open(os.path.join(run_dir, "eval.jsonl"))]
        assert evals == [dict(evals[0], step=20, shots=16, accuracy=0.8125, n=512)], evals
        assert scalars[("eval/16shot/accuracy", 20)][0] == 0.8125
        zero_loss_steps = [s for (t, s), (v, _) in scalars.items() if t == "train/bad_images" and v == 0.0]
        assert zero_loss_steps, "zero-valued scalars must be present (proto3 oneof)"
        tensorboard_points = check_with_tensorboard(os.path.join(run_dir, "tb"), scalars)
        print(f"ok: {len(events)} events, {checked} scalars match metrics.jsonl in {files[0]}; TensorBoard's "
              f"EventAccumulator read the same {tensorboard_points} points")


if __name__ == "__main__":
    main()
