"""Checks the `--json` output of an `lcl bench` command (used by tests/bench/*_test.sh).

Every line must be a JSON object with name, value, unit, reference, ratio and config (an object); every reference
positive; every value positive, or >= 0 where `zero_ok(record)` says a zero is legitimate; every name in
`expected` present (and, with `exact`, no other). `extra(record)` returns more problems for one record.

    ok = check("out.jsonl", expected={"ckpt.save_throughput"}, zero_ok=lambda j: j["unit"] == "ms")
"""
import json


def check(path, expected, zero_ok, extra=None, exact=False):
    lines = [l for l in open(path) if l.strip()]
    names, bad = set(), []
    for i, line in enumerate(lines, 1):
        try:
            j = json.loads(line)
        except ValueError as e:
            bad.append(f"line {i} is not JSON: {e}: {line[:120]}")
            continue
        missing = [k for k in ("name", "value", "unit", "reference", "ratio", "config") if k not in j]
        if missing:
            bad.append(f"line {i} lacks {missing}")
            continue
        names.add(j["name"])
        if not isinstance(j["config"], dict):
            bad.append(f"{j['name']}: config is not an object")
            continue
        if not (isinstance(j["value"], (int, float)) and (j["value"] > 0 or (zero_ok(j) and j["value"] >= 0))):
            bad.append(f"{j['name']}: value {j['value']!r} is not positive")
        if not (isinstance(j["reference"], (int, float)) and j["reference"] > 0):
            bad.append(f"{j['name']}: reference {j['reference']!r} is not positive")
        if extra:
            bad += extra(j)
    bad += [f"missing measurement {n}" for n in sorted(expected - names)]
    if exact:
        bad += [f"unexpected measurement {n}" for n in sorted(names - expected)]
    for b in bad:
        print("FAIL", b)
    print(f"{len(lines)} lines, {len(names)} measurements" + ("" if bad else ": ok"))
    return not bad
