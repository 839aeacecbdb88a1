"""Draws a run directory as PNG figures and one offline index.html (run by `lcl report`; docs/training.md).

  python3 launch/report.py RUN_DIR --out DIR [--config-text FILE] [--lcl-version TEXT]

Reads what lcl writes into a run directory (docs/training.md, "Outputs in run_dir"): metrics.jsonl, eval.jsonl,
logs/rank0.log (checkpoint commits, resumes, the grid) and checkpoints/. Each figure NAME.png has NAME.json beside it
with the data read back from the drawn figure (every labelled line's points, the step markers), so what is drawn can
be checked without looking. A missing file, a field an older lcl did not write, a line cut short by a killed run or a
value that is not a number skips only what it touches and is listed ("What is missing") in index.html and on stdout.
"""
import argparse
import datetime
import glob
import html
import json
import math
import os
import re
import sys

MISSING_MATPLOTLIB = (
    "config error: {python} cannot import matplotlib ({why}); `lcl report` draws with it. Run launch/setup.sh "
    "(it makes .venv from launch/requirements.txt), or `{python} -m pip install matplotlib`, or name a python that "
    "has it with --python or LCL_PYTHON")

try:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node or in a test
    import matplotlib.pyplot as plt
except ImportError as e:
    print("lcl: " + MISSING_MATPLOTLIB.format(python=sys.executable, why=e), file=sys.stderr)
    sys.exit(1)

# Step-time parts of metrics.jsonl (trainer/metrics.h), in the order a step spends them.
BREAKDOWN = [("data_wait_ms", "data wait"), ("forward_ms", "forward"), ("backward_ms", "backward"),
             ("sync_wait_ms", "exposed communication"), ("optimizer_ms", "optimizer")]
MARKER_STYLE = {"checkpoint": dict(color="0.55", linestyle=":", linewidth=1.0),
                "resume": dict(color="tab:red", linestyle="--", linewidth=1.2)}
MARKER_LABEL = {"checkpoint": "checkpoint saved", "resume": "resumed"}


class ReportError(Exception):
    pass


class Notes:
    """What could not be drawn, or was drawn without some lines: one sentence each, shown on the page and printed."""

    def __init__(self):
        self.items = []

    def add(self, text):
        self.items.append(text)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_jsonl(path, required, notes):
    """Rows of a jsonl file that parse as objects with numeric `required` fields; the rest are skipped and noted.

    Other fields keep whatever value they had: each figure checks its own fields with is_number.
    """
    name = os.path.basename(path)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    rows, bad = [], []
    lines = data.split(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = i == len(lines)  # no newline after it: the writer stopped mid-line (a killed run)
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            bad.append(f"line {i} is cut short (no newline at its end: the run stopped while writing it)"
                       if last else f"line {i} is not JSON ({e})")
            continue
        if not isinstance(row, dict):
            bad.append(f"line {i} is not a JSON object")
            continue
        wrong = [k for k in required if not is_number(row.get(k))]
        if wrong:
            bad.append(f"line {i}: " + ", ".join(f"'{k}' is {json.dumps(row.get(k))}, not a finite number"
                                                   for k in wrong))
            continue
        rows.append(row)
    if bad:
        shown = "; ".join(bad[:4]) + (f"; and {len(bad) - 4} more" if len(bad) > 4 else "")
        notes.add(f"{name}: skipped {len(bad)} line(s): {shown}")
    return rows


def by_step(rows, notes, name):
    """One row per step (the last one written wins), sorted: a resumed run reads as one history."""
    last = {}
    for r in rows:
        last[int(r["step"])] = r
    if len(last) < len(rows):
        notes.add(f"{name}: {len(rows) - len(last)} row(s) repeat an earlier step (written by a run that was "
                  "resumed without dropping them); the later row is drawn")
    return [last[s] for s in sorted(last)]


def series(rows, field, notes, name):
    """(steps, values) of one metrics field; rows where it is absent or not a number are left out and counted."""
    xs, ys, absent, bad = [], [], [], []
    for r in rows:
        v = r.get(field)
        if field not in r:
            absent.append(r["step"])
        elif not is_number(v):
            bad.append(r["step"])
        else:
            xs.append(r["step"])
            ys.append(float(v))

    def at(steps):
        return ", ".join(str(s) for s in steps[:5]) + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")

    if rows and len(absent) == len(rows):
        notes.add(f"{name}: no '{field}' field (a run from an lcl version that did not log it): not drawn")
        return xs, ys
    if absent:
        notes.add(f"{name}: '{field}' is missing at step(s) {at(absent)}: those points are left out")
    if bad:
        notes.add(f"{name}: '{field}' is not a finite number at step(s) {at(bad)}: those points are left out")
    return xs, ys


def smooth(ys):
    """Bias-corrected exponential moving average (as TensorBoard draws it) over about 1/20 of the points."""
    span = max(4, len(ys) // 20)
    w = 1.0 - 2.0 / (span + 1)
    out, acc = [], 0.0
    for i, y in enumerate(ys, start=1):
        acc = w * acc + (1 - w) * y
        out.append(acc / (1 - w**i))
    return out, span


def read_events(run_dir, notes):
    """Checkpoint commits, resumes and the grid of each start, from rank 0's log (appended to by every start)."""
    events = {"checkpoint": set(), "resume": set(), "starts": []}
    log = os.path.join(run_dir, "logs", "rank0.log")
    if os.path.exists(log):
        with open(log, "r", errors="replace") as f:
            for line in f:
                m = re.search(r"\] checkpoint step (\d+) committed", line)
                if m:
                    events["checkpoint"].add(int(m.group(1)))
                m = re.search(r"\] resumed from (\S+): step (\d+)", line)
                if m:
                    events["resume"].add(int(m.group(2)))
                m = re.search(r"\[rank 0/\d+\] train: (.*)$", line)
                if m:
                    events["starts"].append(m.group(1).strip())
    else:
        notes.add("logs/rank0.log: not found: checkpoint saves and resumes are marked from checkpoints/ only, "
                  "and the grid is not known")
    # Directories still on disk (keep_last may have removed older ones; the log remembers those).
    for d in glob.glob(os.path.join(run_dir, "checkpoints", "step_*")):
        m = re.fullmatch(r"step_(\d+)", os.path.basename(d))
        if m and os.path.exists(os.path.join(d, "manifest.pb")):
            events["checkpoint"].add(int(m.group(1)))
    return events


def mark_steps(ax, events, lo, hi):
    for kind in ("checkpoint", "resume"):
        for i, s in enumerate(sorted(x for x in events[kind] if lo <= x <= hi)):
            ax.axvline(s, gid=kind, label=MARKER_LABEL[kind] if i == 0 else "_" + kind, **MARKER_STYLE[kind])


def figure_data(fig):
    """What the figure draws, read back from its artists: labelled lines and the step markers of each axes."""
    axes = []
    for ax in fig.axes:
        entry = {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "lines": [],
                 "markers": {"checkpoint": [], "resume": []}}
        for line in ax.get_lines():
            xs = [float(x) for x in line.get_xdata()]
            ys = [float(y) for y in line.get_ydata()]
            if line.get_gid() in entry["markers"]:
                entry["markers"][line.get_gid()].append(xs[0])
            elif line.get_gid() == "reference":
                entry.setdefault("reference", []).append({"label": line.get_label(), "y": ys[0]})
            else:
                entry["lines"].append({"label": line.get_label(), "x": xs, "y": ys})
        axes.append(entry)
    return {"axes": axes}


def save(fig, out_dir, name, figures):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name + ".png"), dpi=100, metadata={"Software": "lcl report"})
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(figure_data(fig), f, indent=1)
    plt.close(fig)
    figures.append(name)


def draw_loss(metrics, events, out_dir, figures, notes):
    xs, ys = series(metrics, "loss", notes, "metrics.jsonl")
    lx, ly = series(metrics, "lr", notes, "metrics.jsonl")
    if not xs and not lx:
        return
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    if xs:
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, linewidth=1, label="loss")
        sm, span = smooth(ys)
        ax.plot(xs, sm, color="tab:blue", linewidth=2, label=f"smoothed (EMA over ~{span} logged steps)")
    ax.set_ylabel("loss (mean over answer tokens)")
    ax.set_title("training loss")
    if lx:
        ax_lr.plot(lx, ly, color="tab:green", label="learning rate")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    steps = xs + lx
    for a in (ax, ax_lr):
        mark_steps(a, events, min(steps), max(steps))
        a.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save(fig, out_dir, "loss", figures)


def draw_throughput(metrics, events, out_dir, figures, notes):
    tx, ty = series(metrics, "tokens_per_sec", notes, "metrics.jsonl")
    parts = [("step_time_ms", "step time (total)")] + BREAKDOWN
    drawn = [(label, series(metrics, field, notes, "metrics.jsonl")) for field, label in parts]
    drawn = [(label, xy) for label, xy in drawn if xy[0]]
    if not tx and not drawn:
        return
    fig, (ax_t, ax_s) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    if tx:
        ax_t.plot(tx, ty, color="tab:purple", label="tokens/s")
    ax_t.set_ylabel("tokens / s (all ranks)")
    ax_t.set_title("throughput and where a step's time goes")
    for i, (label, (x, y)) in enumerate(drawn):
        ax_s.plot(x, y, label=label, linewidth=2 if i == 0 else 1.2, color="black" if i == 0 else None)
    ax_s.set_ylabel("ms per step")
    ax_s.set_xlabel("step")
    steps = tx + [s for _, (x, _) in drawn for s in x]
    for a in (ax_t, ax_s):
        mark_steps(a, events, min(steps), max(steps))
        a.grid(alpha=0.3)
    ax_s.legend(loc="upper right", fontsize=8, ncol=2)
    save(fig, out_dir, "throughput", figures)


def eval_table(rows):
    """{step: {shots: row}} with the last row for each (step, shots) winning (`lcl eval` may append again)."""
    table = {}
    for r in rows:
        table.setdefault(int(r["step"]), {})[int(r["shots"])] = r
    return table


def draw_accuracy(table, events, last_step, out_dir, figures, notes):
    """last_step: the last logged training step, so that evaluations sit on the run's whole step axis."""
    if not table:
        return
    shots = sorted({k for per in table.values() for k in per})
    steps = sorted(table)
    hi = max(steps[-1], last_step)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k in shots:
        xs = [s for s in steps if k in table[s]]
        ax.plot(xs, [table[s][k]["accuracy"] for s in xs], marker="o", label=f"{k}-shot")
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=0.8, gid="reference", label="chance (2-way)")
    mark_steps(ax, events, 0, hi)
    ax.set_xlim(-0.02 * max(hi, 1), 1.02 * max(hi, 1))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step (0: the untrained model)" if 0 in table else "step")
    ax.set_ylabel("held-out 2-way accuracy")
    ax.set_title("held-out accuracy during training")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save(fig, out_dir, "accuracy_steps", figures)

    last = steps[-1]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    curves = []
    if 0 in table and last != 0:
        curves.append((0, "untrained (step 0)", "tab:gray"))
    curves.append((last, "untrained (step 0)" if last == 0 else f"step {last}", "tab:blue"))
    if last == 0:
        notes.add("eval.jsonl: only the untrained evaluation (step 0): no evaluation after training yet")
    elif 0 not in table:
        notes.add("eval.jsonl: no untrained evaluation (step 0 rows; `lcl eval` of the initial model with --run-dir "
                  "writes them, as launch/quickstart.sh does before training): the last evaluation is drawn alone")
    for step, label, color in curves:
        ks = sorted(table[step])
        ax.plot(ks, [table[step][k]["accuracy"] for k in ks], marker="o", color=color, label=label)
    ax.axhline(0.5, color="0.4", linestyle="--", linewidth=0.8, gid="reference", label="chance (2-way)")
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xticks(shots)
    ax.set_xticklabels([str(k) for k in shots])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("shots (support images per class)")
    ax.set_ylabel("held-out 2-way accuracy")
    ax.set_title("accuracy against shots")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save(fig, out_dir, "accuracy_shots", figures)


def final_table_html(table):
    if not table:
        return "<p>No evaluation.</p>"
    last = max(table)
    before = table.get(0) if last != 0 else None
    head = ["shots"] + (["untrained"] if before else []) + [f"step {last}", "correct / n", "named neither"]

    def cell(r, key, fmt):
        return fmt(r[key]) if r is not None and is_number(r.get(key)) else "-"

    rows = []
    for k in sorted(set(table[last]) | set(before or {})):
        r = table[last].get(k)
        b = before.get(k) if before else None
        cells = [str(k)] + ([cell(b, "accuracy", "{:.3f}".format)] if before else [])
        n = f"{cell(r, 'correct', lambda v: str(int(v)))} / {cell(r, 'n', lambda v: str(int(v)))}" if r else "-"
        cells += [cell(r, "accuracy", "{:.3f}".format), n, cell(r, "named_neither", lambda v: str(int(v)))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) +
            "</table>")


CAPTIONS = {
    "loss": "Loss per logged step (faint) with its smoothed line, and the learning rate.",
    "throughput": "Tokens per second, and the step time with its parts (exposed communication: the time spent "
                  "waiting for gradient all-reduces that backward did not hide).",
    "accuracy_steps": "Held-out 2-way accuracy at each evaluation, one line per shot count.",
    "accuracy_shots": "Accuracy against shots: the last evaluation beside the untrained model's.",
}


def write_index(out_dir, run_dir, figures, metrics, table, events, config_text, notes, args):
    e = html.escape
    summary = []
    if metrics:
        summary.append(f"{len(metrics)} logged steps, {metrics[0]['step']} to {metrics[-1]['step']}")
    if table:
        summary.append(f"{len(table)} evaluation(s) at step(s) {', '.join(str(s) for s in sorted(table))}")
    summary.append("checkpoints saved at step(s) " + (", ".join(str(s) for s in sorted(events["checkpoint"])) or
                                                    "none"))
    if events["resume"]:
        summary.append("resumed at step(s) " + ", ".join(str(s) for s in sorted(events["resume"])))
    parts = [f"<h1>lcl run {e(os.path.abspath(run_dir))}</h1>", "<p>" + e("; ".join(summary)) + ".</p>"]
    if notes.items:
        parts.append("<h2>What is missing</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes.items) + "</ul>")
    for name in figures:
        parts.append(f'<figure><img src="{name}.png" alt="{name}" data-figure="{name}">'
                     f'<figcaption>{e(CAPTIONS[name])} Data: <a href="{name}.json">{name}.json</a>.</figcaption>'
                     "</figure>")
    parts.append("<h2>Final evaluation</h2>" + final_table_html(table))
    parts.append("<h2>Grid</h2>")
    if events["starts"]:
        parts.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in events["starts"]) + "</ul>")
    else:
        parts.append("<p>Not known (no 'train:' line in logs/rank0.log).</p>")
    parts.append("<h2>Resolved config</h2>")
    parts.append(f"<pre>{e(config_text)}</pre>" if config_text else "<p>Not recorded.</p>")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts.append(f"<p class=foot>Written by {e(args.lcl_version or 'lcl report')} with matplotlib "
                 f"{e(matplotlib.__version__)} on {stamp}.</p>")
    # Marks each image loaded or not once the page has loaded, and shows a broken one as text (a figure file
    # moved away from the page); the report test reads these marks from the rendered page.
    script = """<script>
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), ok = 0;
  imgs.forEach(function (i) {
    var good = i.complete && i.naturalWidth > 0;
    i.setAttribute('data-loaded', good ? 'yes' : 'no');
    if (good) { ok++; } else { i.insertAdjacentText('afterend', 'figure not found: ' + i.getAttribute('src')); }
  });
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});
</script>"""
    style = ("body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}"
             "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}figcaption{font-size:90%;color:#555}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
             "pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:85%}.foot{color:#777;font-size:85%}")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lcl run " + e(os.path.basename(
        os.path.abspath(run_dir))) + f"</title><style>{style}</style></head>\n<body>\n" + "\n".join(parts) + "\n" +
            script + "\n</body></html>\n")
    with open(os.path.join(out_dir, "index.html"), "w") as f:
        f.write(page)


def report(args):
    run_dir = args.run_dir
    if not os.path.isdir(run_dir):
        raise ReportError(f"data error: run directory {run_dir} does not exist; give the run_dir `lcl train` wrote")
    notes = Notes()
    metrics = read_jsonl(os.path.join(run_dir, "metrics.jsonl"), ["step"], notes)
    evals = read_jsonl(os.path.join(run_dir, "eval.jsonl"), ["step", "shots", "accuracy"], notes)
    if not metrics and not evals:
        what = ("has no metrics.jsonl and no eval.jsonl" if metrics is None and evals is None else
                "has no readable row in metrics.jsonl or eval.jsonl" + (f" ({notes.items[0]})" if notes.items else ""))
        raise ReportError(f"data error: {run_dir} {what}: nothing to draw. Is it the run_dir of an `lcl train` that "
                          "has logged a step (logging.every_steps) or of an `lcl eval --run-dir`?")
    if metrics is None:
        notes.add("metrics.jsonl: not found: no loss, learning-rate or throughput figure")
    elif not metrics:
        notes.add("metrics.jsonl: no readable row yet: no loss, learning-rate or throughput figure")
    if evals is None:
        notes.add("eval.jsonl: not found (no evaluation has run yet): no accuracy figures")
    elif not evals:
        notes.add("eval.jsonl: no readable row: no accuracy figures")
    metrics = by_step(metrics or [], notes, "metrics.jsonl")
    table = eval_table(evals or [])
    events = read_events(run_dir, notes)

    config_text = None
    if args.config_text:
        with open(args.config_text) as f:
            config_text = f.read()
    elif os.path.exists(os.path.join(run_dir, "config.pbtxt")):
        with open(os.path.join(run_dir, "config.pbtxt")) as f:
            config_text = f.read()
    else:
        notes.add("resolved config: not recorded in the run directory; pass the run's --config (and --set) to "
                  "`lcl report` to show it")

    os.makedirs(args.out, exist_ok=True)
    figures = []
    if metrics:
        draw_loss(metrics, events, args.out, figures, notes)
        draw_throughput(metrics, events, args.out, figures, notes)
    draw_accuracy(table, events, metrics[-1]["step"] if metrics else 0, args.out, figures, notes)
    write_index(args.out, run_dir, figures, metrics, table, events, config_text, notes, args)
    print(f"report of {run_dir}: {os.path.join(args.out, 'index.html')} "
          f"({', '.join(f + '.png' for f in figures) or 'no figures'})")
    for n in notes.items:
        print(f"  missing: {n}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--config-text", help="the run's resolved config (lcl report writes it from --config)")
    p.add_argument("--lcl-version", default="")
    args = p.parse_args()
    try:
        report(args)
    except ReportError as e:
        print(f"lcl: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"lcl: data error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
