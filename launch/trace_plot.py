#!/usr/bin/env python3
"""Draws a step timeline written by `lcl train --set logging.trace_steps=...` (trace/all_ranks.json or one
rank's trace/rank<R>.json) as a PNG: one row per rank and thread, one more per rank for the collectives in flight
(async events, from launch to the test or wait that saw them complete), spans coloured by category.

    .venv/bin/python launch/trace_plot.py runs/x/trace/all_ranks.json --out trace.png [--title "np 2, after"]

For interactive viewing open the JSON itself in https://ui.perfetto.dev or chrome://tracing.
"""
import argparse
import json
import sys

COLOURS = {"compute": "#4c72b0", "comm": "#dd8452", "optimizer": "#55a868", "data": "#8172b3",
           "checkpoint": "#c44e52", "step": "#dddddd"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="trace JSON from lcl train (logging.trace_steps)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="", help="title above the plot")
    args = ap.parse_args()
    try:
        events = json.load(open(args.trace))["traceEvents"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"trace_plot.py: {args.trace} is not a trace-event JSON file ({e})")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    spans = [e for e in events if e.get("ph") == "X" and e.get("cat") != "step"]
    if not spans:
        sys.exit(f"trace_plot.py: {args.trace} holds no spans")
    t0 = min(e["ts"] for e in events if "ts" in e)
    # Async collectives: pair each begin with its end.
    begins, flights = {}, []
    for e in events:
        if e.get("ph") == "b":
            begins[(e["pid"], e["cat"], e["id"])] = e
        elif e.get("ph") == "e" and (e["pid"], e["cat"], e["id"]) in begins:
            b = begins.pop((e["pid"], e["cat"], e["id"]))
            flights.append((e["pid"], b["ts"], e["ts"], b["name"]))
    lanes = sorted({(e["pid"], e["tid"]) for e in spans})
    rows = []
    for pid in sorted({p for p, _ in lanes}):
        rows += [(pid, tid) for p, tid in lanes if p == pid]
        if any(f[0] == pid for f in flights):
            rows.append((pid, "comm"))
    index = {r: i for i, r in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(14, 0.55 * len(rows) + 1.2))
    for e in spans:
        y = index[(e["pid"], e["tid"])]
        ax.barh(y, e["dur"] / 1e3, left=(e["ts"] - t0) / 1e3, height=0.7,
                color=COLOURS.get(e.get("cat"), "#999999"), edgecolor="black", linewidth=0.2)
    for pid, start, end, _ in flights:
        ax.barh(index[(pid, "comm")], (end - start) / 1e3, left=(start - t0) / 1e3, height=0.5,
                color=COLOURS["comm"], alpha=0.6, edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"rank {p} " + ("collectives in flight" if t == "comm" else names.get((p, t), f"thread {t}"))
                        for p, t in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for k, c in COLOURS.items() if k != "step"]
    ax.legend(handles, [k for k in COLOURS if k != "step"], loc="upper right", ncol=5, fontsize=8)
    if args.title:
        ax.set_title(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"trace_plot.py: wrote {args.out} ({len(spans)} spans, {len(flights)} collectives)")


if __name__ == "__main__":
    main()
