#!/usr/bin/env python3
"""Generates docs/config.md from trainer/config.proto (every field, its type, default and comment).

    python3 docs/gen_config_doc.py            # rewrite docs/config.md
    python3 docs/gen_config_doc.py --check    # exit 1 if docs/config.md is out of date (a ctest runs this)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "trainer" / "config.proto"
DOC = ROOT / "docs" / "config.md"

FIELD = re.compile(r"^\s*(optional|repeated)\s+(\w+)\s+(\w+)\s*=\s*\d+\s*(\[default\s*=\s*(.*?)\])?\s*;")
MESSAGE = re.compile(r"^\s*message\s+(\w+)\s*\{")


def parse(text):
    """message name -> list of (label, type, name, default, comment)."""
    messages, current, comment = {}, None, []
    for line in text.splitlines():
        stripped = line.strip()
        m = MESSAGE.match(line)
        if m:
            current = m.group(1)
            messages[current] = []
            comment = []
            continue
        if stripped.startswith("//"):
            comment.append(stripped[2:].strip())
            continue
        f = FIELD.match(line)
        if f and current:
            label, typ, name, _, default = f.groups()
            messages[current].append((label, typ, name, default, " ".join(comment)))
        comment = []
    return messages


def rows(messages, message, prefix):
    out = []
    for label, typ, name, default, comment in messages[message]:
        path = prefix + name
        if typ in messages:
            out.append((path, "section", "", comment))
            out.extend(rows(messages, typ, path + "."))
            continue
        if label == "repeated":
            shown_type, shown_default = "list of " + typ, "empty"
        else:
            shown_type = typ
            shown_default = default if default is not None else ("false" if typ == "bool" else "0")
        out.append((path, shown_type, shown_default, comment))
    return out


def render():
    messages = parse(PROTO.read_text())
    lines = [
        "# Configuration reference",
        "",
        "`lcl train` and `lcl eval` read a protobuf text-format file (`--config X.pbtxt`); `--set path=value` overrides",
        "one field (repeated fields take a comma-separated list: `--set eval.shots=0,2,4`), and `--print-config` prints",
        "every value the run will use. An unknown field or a bad value is an error naming the field and the file line.",
        "Examples: `launch/configs/`. The schema is `trainer/config.proto`; this page is generated from it by",
        "`python3 docs/gen_config_doc.py` (the `config_doc_test` ctest fails when the two disagree).",
        "",
        "| field | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for path, typ, default, comment in rows(messages, "TrainConfig", ""):
        shown = f"`{default}`" if default != "" else ""
        lines.append(f"| `{path}` | {typ} | {shown} | {comment.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date with {PROTO}: run python3 docs/gen_config_doc.py", file=sys.stderr)
            return 1
        print(f"{DOC} matches {PROTO}")
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
