#!/usr/bin/env python3
"""Turns one benchmark run into BENCHMARKS.md's tables and benches/chart.svg.

Reads criterion's medians (TARGET/criterion/<op>/<impl>/<size>/new/
estimates.json), benches/cpython.py's JSON and examples/memory.rs's JSON,
computes the ratio behind each target of issue 4, and writes:

- the tables into BENCHMARKS.md, between the `report:begin` / `report:end`
  markers (everything outside them is left as it is);
- benches/chart.svg: one bar per target, how much of its budget the
  measurement uses (log scale; left of the line meets the target).

Usage: python3 benches/report.py [--target-dir DIR] [--results DIR]
Standard library only. Missing inputs (no python3 run, a benchmark that did
not run) leave their rows as "n/a" rather than failing.
"""

import argparse
import datetime
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys
from xml.sax.saxutils import escape

# The repository root (this file is integration/benches/report.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "<!-- report:begin -->"
END = "<!-- report:end -->"


def load_criterion(criterion_dir):
    """{"op/impl/size": median ns} for every benchmark criterion recorded."""
    medians = {}
    pattern = os.path.join(criterion_dir, "*", "*", "*", "new", "estimates.json")
    for path in glob.glob(pattern):
        rel = os.path.relpath(path, criterion_dir).split(os.sep)
        key = "/".join(rel[:3])
        with open(path) as f:
            medians[key] = json.load(f)["median"]["point_estimate"]
    return medians


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Targets:
    """The rows of the targets table: measured value against a limit."""

    def __init__(self, ns):
        self.ns = ns
        self.rows = []

    def get(self, key):
        return self.ns.get(key)

    def ratio(self, a, b):
        a, b = self.get(a), self.get(b)
        if a is None or b is None or b <= 0:
            return None
        return a / b

    def add(self, label, value, limit, unit="×", higher_is_better=False, detail=""):
        self.rows.append(
            {
                "label": label,
                "value": value,
                "limit": limit,
                "unit": unit,
                "higher": higher_is_better,
                "detail": detail,
            }
        )


def build_targets(ns):
    t = Targets(ns)
    cell = "get/thread_local_cell/1"
    task_local = "get/tokio_task_local/1"
    for n in (1, 10, 1000):
        t.add(
            f"`get`, {n:,} var{'s' if n > 1 else ''} ÷ `thread_local!` `Cell` read",
            t.ratio(f"get/contextvars/{n}", cell),
            3,
        )
    for n in (1, 10, 1000):
        t.add(
            f"`get`, {n:,} var{'s' if n > 1 else ''} ÷ `tokio::task_local!` `get`",
            t.ratio(f"get/contextvars/{n}", task_local),
            1,
        )
    for n in (10, 1000):
        t.add(
            f"`set`+`reset`, {n:,} vars ÷ CPython",
            t.ratio(f"set_reset/contextvars/{n}", f"set_reset/cpython/{n}"),
            0.1,
        )
    for n in (1, 10):
        t.add(
            f"`set`+`reset`, {n} var{'s' if n > 1 else ''} ÷ opentelemetry "
            f"`current_with_value(..).attach()`",
            t.ratio(f"set_reset/contextvars/{n}", f"set_reset/opentelemetry/{n}"),
            0.25,
        )
    t.add(
        "`set`+`reset`, 1,000 vars ÷ 10 vars",
        t.ratio("set_reset/contextvars/1000", "set_reset/contextvars/10"),
        2,
    )
    for n in (10, 1000):
        t.add(
            f"`copy_context`, {n:,} vars ÷ CPython",
            t.ratio(f"copy_context/contextvars/{n}", f"copy_context/cpython/{n}"),
            0.1,
        )
    # CPython's cheapest `run`: of a C-level callable, without a Python frame.
    py_run = [
        ns.get(k) for k in ("run_noop/cpython/10", "run_builtin/cpython/10") if k in ns
    ]
    ours_run = ns.get("run_noop/contextvars/10")
    t.add(
        "`Context::run(noop)` ÷ CPython `ctx.run(noop)`",
        ours_run / min(py_run) if ours_run and py_run else None,
        0.1,
        detail="against the cheaper of a Python and a C-level no-op",
    )
    bare = ns.get("poll_1000/bare/10")
    for variant, name in (("owned", "owned `Context`"), ("arc", "`Arc<Context>`")):
        wrapped = ns.get(f"poll_1000/in_context_{variant}/10")
        t.add(
            f"`in_context` ({name}) overhead per poll",
            (wrapped - bare) / 1001 if wrapped is not None and bare is not None else None,
            10,
            unit=" ns",
        )
    for flavor in ("current_thread", "multi_thread"):
        t.add(
            f"`contextvars::tokio::spawn` ÷ `tokio::spawn` ({flavor.replace('_', '-')})",
            t.ratio(f"spawn/contextvars/{flavor}", f"spawn/tokio/{flavor}"),
            1.05,
        )
    t.add(
        "reads on 2 threads: aggregate throughput ÷ 1 thread",
        t.ratio("read_threads/contextvars/1", "read_threads/contextvars/2"),
        1.8,
        higher_is_better=True,
    )
    for parent in (1, 10):
        t.add(
            f"bytes per context, 1,000,000 contexts, parent of {parent} var{'s' if parent > 1 else ''}",
            ns.get(f"memory/total/{parent}"),
            150,
            unit=" B",
            detail="heap {:.0f} B + the {:.0f} B `Context` itself".format(
                ns[f"memory/heap/{parent}"], ns.get("memory/context_struct", 0)
            )
            if f"memory/heap/{parent}" in ns
            else "",
        )
    return t.rows


def fmt_value(v, unit):
    if v is None:
        return "n/a"
    if unit == "×":
        if v >= 10:
            return f"{v:.0f}×"
        if v >= 1:
            return f"{v:.2f}×"
        return f"{v:.3f}×"
    return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"


def fmt_limit(row):
    sign = "≥" if row["higher"] else "≤"
    return f"{sign} {row['limit']:g}{row['unit']}"


def budget(row):
    """Share of the target's budget the measurement uses: ≤ 1 meets it."""
    v, limit = row["value"], row["limit"]
    if v is None:
        return None
    if row["higher"]:
        return limit / v if v > 0 else math.inf
    return v / limit if limit > 0 else math.inf


def status(row):
    b = budget(row)
    if b is None:
        return "–"
    return "✅" if b <= 1 else "❌"


def fmt_ns(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.2f} µs"
    if v >= 10:
        return f"{v:.1f} ns"
    return f"{v:.2f} ns"


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            if names:
                cpu = names[0]
    except OSError:
        pass
    try:
        rustc = subprocess.run(
            ["rustc", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rustc = "rustc (unknown)"
    try:
        avg = os.getloadavg()
        load = "{:.2f} / {:.2f} / {:.2f}".format(*avg)
        if avg[0] > 1.0 + 0.25 * (os.cpu_count() or 1):
            load += (
                " — **the machine was busy with other work: the two-thread row "
                "and small differences are unreliable; re-run on a quiet machine**"
            )
    except OSError:
        load = "n/a"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "rustc": rustc,
        "load": load,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# Rows of the medians table: (operation, label).
OPERATIONS = [
    ("get", "`get` (value set)"),
    ("get_default", "`get` (default only)"),
    ("get_missing", "`get` (missing)"),
    ("with", "`with`"),
    ("get_or", "`get_or`"),
    ("set_reset", "`set` + `reset`"),
    ("set_reset_new", "`set` + `reset`, a variable the context lacks"),
    ("scope", "`scope` (no-op body)"),
    ("copy_context", "`copy_context`"),
    ("run_noop", "`Context::run(noop)`"),
    ("run_builtin", "`ctx.run(tuple)` (C-level no-op)"),
]
IMPLS = [
    ("contextvars", "contextvars"),
    ("contextvars_base", "contextvars, in the thread's base context (no lock)"),
    ("cpython", "CPython"),
    ("thread_local_cell", "`thread_local!` `Cell`"),
    ("thread_local_refcell", "`thread_local!` `RefCell`"),
    ("tokio_task_local", "`tokio::task_local!`"),
    ("opentelemetry", "opentelemetry `Context::current()`"),
    ("opentelemetry_map_current", "opentelemetry `Context::map_current`"),
]
SIZES = (1, 10, 100, 1000)


def medians_table(ns):
    lines = [
        "| operation | implementation | 1 var | 10 vars | 100 vars | 1,000 vars |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for op, op_label in OPERATIONS:
        for impl, impl_label in IMPLS:
            cells = [ns.get(f"{op}/{impl}/{n}") for n in SIZES]
            if all(c is None for c in cells):
                continue
            lines.append(
                f"| {op_label} | {impl_label} | " + " | ".join(fmt_ns(c) for c in cells) + " |"
            )
    return lines


def other_tables(ns):
    lines = [
        "| measurement | median |",
        "|---|--:|",
    ]
    rows = [
        ("`Spin` future, 1,001 polls, bare", "poll_1000/bare/10"),
        ("… with `in_context(Context)`", "poll_1000/in_context_owned/10"),
        ("… with `in_context(Arc<Context>)`", "poll_1000/in_context_arc/10"),
        ("spawn + await no-op, `tokio::spawn`, current-thread", "spawn/tokio/current_thread"),
        ("… `tokio::spawn` of a no-op as big as a `Context`, current-thread", "spawn/tokio_padded/current_thread"),
        ("… `contextvars::tokio::spawn`, current-thread", "spawn/contextvars/current_thread"),
        ("spawn + await no-op, `tokio::spawn`, multi-thread", "spawn/tokio/multi_thread"),
        ("… `tokio::spawn` of a no-op as big as a `Context`, multi-thread", "spawn/tokio_padded/multi_thread"),
        ("… `contextvars::tokio::spawn`, multi-thread", "spawn/contextvars/multi_thread"),
        ("floor: `Arc` clone + drop (two atomic read-modify-writes)", "floor/arc_clone_drop/1"),
        ("floor: compare-and-swap + release store (a flag taken and released)", "floor/cas_release/1"),
        ("`get`, 1 thread, per read", "read_threads/contextvars/1"),
        ("`get`, 2 threads, aggregate per read", "read_threads/contextvars/2"),
        ("`Cell` read, 1 thread, per read", "read_threads/thread_local_cell/1"),
        ("`Cell` read, 2 threads, aggregate per read", "read_threads/thread_local_cell/2"),
    ]
    for label, key in rows:
        if key in ns:
            lines.append(f"| {label} | {fmt_ns(ns[key])} |")
    lines += [
        "",
        "The persistent map (`contextvars::map::Map`) against `rpds::HashTrieMapSync` "
        "and `imbl::HashMap`, same `Arc` values, keys `1..=n`; `insert` and `remove` "
        "work on a copy (path copying), as a context write does:",
        "",
        "| map operation | entries | contextvars | rpds | imbl |",
        "|---|--:|--:|--:|--:|",
    ]
    for op in ("get", "insert", "remove", "clone"):
        for n in (10, 1000):
            cells = [ns.get(f"map_{op}/{impl}/{n}") for impl in ("contextvars", "rpds", "imbl")]
            if all(c is None for c in cells):
                continue
            lines.append(f"| `{op}` | {n:,} | " + " | ".join(fmt_ns(c) for c in cells) + " |")
    return lines


def render_markdown(rows, ns, info, extra):
    met = sum(1 for r in rows if status(r) == "✅")
    judged = sum(1 for r in rows if status(r) != "–")
    lines = [
        BEGIN,
        "<!-- Generated by benches/report.py from one run of benches/run.sh; do not edit by hand. -->",
        "",
        f"Run of {info['date']} on {info['cpu']} ({info['cores']} cores), {info['os']}, "
        f"{info['rustc']}, {extra.get('python') or 'no CPython run'}. "
        f"Load average (1 / 5 / 15 min) at the end of the run: {info['load']}.",
        "",
        f"**{met} of {judged} targets met.** Ratios of medians from this one run; lower is "
        "better except where the target says ≥.",
        "",
        "![Each target's measurement as a share of its budget](integration/benches/chart.svg)",
        "",
        "| measure | measured | target | |",
        "|---|--:|--:|:-:|",
    ]
    for r in rows:
        detail = f" ({r['detail']})" if r["detail"] else ""
        lines.append(
            f"| {r['label']}{detail} | {fmt_value(r['value'], r['unit'])} | {fmt_limit(r)} | {status(r)} |"
        )
    lines += ["", "### Medians", ""]
    lines += medians_table(ns)
    lines += [""]
    lines += other_tables(ns)
    lines += ["", END]
    return "\n".join(lines)


def write_markdown(path, block):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def render_svg(rows):
    """Horizontal bars: each target's share of its budget, log scale, with
    the target at the centre line; green meets it, red misses it."""
    label_w, bar_w, value_w = 430, 360, 200
    row_h, top, bottom = 24, 54, 40
    width = label_w + bar_w + value_w
    height = top + row_h * len(rows) + bottom
    lo, hi = -2.0, 2.0  # log10 of budget share: 0.01× .. 100×

    def x_of(share):
        v = max(lo, min(hi, math.log10(share)))
        return label_w + (v - lo) / (hi - lo) * bar_w

    def text_of(label):
        return escape(label.replace("`", ""))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="12" y="22" font-size="15" font-weight="bold">contextvars: each target, '
        "measured as a share of its budget</text>",
        f'<text x="12" y="40" fill="#555">Log scale. Left of the line (1×) meets the target; '
        "bars are ratios of medians from one run.</text>",
    ]
    for i in range(0, len(rows), 2):
        y = top + i * row_h
        out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f4f4f4"/>')
    for tick in (0.01, 0.1, 1, 10, 100):
        x = x_of(tick)
        y1, y2 = top - 4, top + row_h * len(rows)
        stroke = "#222" if tick == 1 else "#ddd"
        out.append(f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y2}" stroke="{stroke}"/>')
        label = f"{tick:g}×" + (" = target" if tick == 1 else "")
        out.append(
            f'<text x="{x:.1f}" y="{y2 + 16}" text-anchor="middle" fill="#555">{label}</text>'
        )
    for i, r in enumerate(rows):
        y = top + i * row_h
        out.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{text_of(r["label"])}</text>'
        )
        share = budget(r)
        if share is None:
            out.append(f'<text x="{label_w + 6}" y="{y + 16}" fill="#999">not measured</text>')
            continue
        share = max(share, 1e-9)
        x0, x1 = x_of(1), x_of(share)
        colour = "#2e9e48" if share <= 1 else "#d1453b"
        left, w = min(x0, x1), max(abs(x1 - x0), 1.5)
        out.append(
            f'<rect x="{left:.1f}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}" fill="{colour}"/>'
        )
        out.append(
            f'<text x="{label_w + bar_w + 8}" y="{y + 16}">'
            f'{escape(fmt_value(r["value"], r["unit"]))} '
            f'<tspan fill="#777">(target {escape(fmt_limit(r))})</tspan></text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    ap.add_argument("--target-dir", default=default_target)
    ap.add_argument("--results", help="directory with cpython.json and memory.json")
    ap.add_argument("--markdown", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--svg", default=os.path.join(ROOT, "integration", "benches", "chart.svg"))
    args = ap.parse_args()
    results = args.results or os.path.join(args.target_dir, "bench-results")

    ns = load_criterion(os.path.join(args.target_dir, "criterion"))
    if not ns:
        sys.exit(f"report.py: no criterion results under {args.target_dir}/criterion")
    extra = {}
    cpython = load_json(os.path.join(results, "cpython.json"))
    if cpython:
        ns.update(cpython["results"])
        extra["python"] = cpython.get("python")
    memory = load_json(os.path.join(results, "memory.json"))
    if memory:
        ns["memory/context_struct"] = memory.get("context_struct", 0)
        for parent in (1, 10):
            row = memory.get(f"parent_{parent}")
            if row:
                ns[f"memory/total/{parent}"] = row["total"]
                ns[f"memory/heap/{parent}"] = row["heap"]

    rows = build_targets(ns)
    write_markdown(args.markdown, render_markdown(rows, ns, machine(), extra))
    with open(args.svg, "w") as f:
        f.write(render_svg(rows))
    for r in rows:
        print(f"{status(r)} {r['label']}: {fmt_value(r['value'], r['unit'])} ({fmt_limit(r)})")


if __name__ == "__main__":
    main()
