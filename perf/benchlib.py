"""What the benchmark runners share: perf/bench.py (loopback) and
perf/rig.py (two network namespaces) measure the same tools and report
them the same way.

Here: the implementations' names and units, the tools' result lines, a
measurement record, the medians and the result table, the two-panel chart,
the --busy-core spinners, and building the C reference tools.  Both
runners import it as a sibling module (``import benchlib``): a script's
own folder is first on sys.path.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PERF = Path(__file__).resolve().parent

IMPLS = ("c", "cpath", "wiring", "pyzmq")   # the order inside a repetition
# cpath: pyzmq-wiring's own latency path (PUSH->PULL, XPUB->SUB back, two
# TCP connections) written in C (perf/c/wiring_lat.c, both sides blocking in
# zmq_msg_recv as the extension does): what the path's shape costs, apart
# from Python.  Latency only.
LABELS = {"c": "C", "cpath": "C-path", "wiring": "pyzmq-wiring", "pyzmq": "pyzmq"}
UNITS = {"lat": "us", "thr": "msg/s", "thr-batch": "msg/s"}

# the result line each tool prints: remote_lat the latency, local_thr the throughput
LAT_RE = re.compile(r"^average latency: ([0-9.]+) \[us\]$", re.M)
THR_RE = re.compile(r"^mean throughput: ([0-9.]+) \[msg/s\]$", re.M)

# a spinner for --busy-core: lowest nice, and it ends when the runner does
# (even if the runner is killed outright)
SPIN = ("import os, sys\n"
        "os.nice(19)\n"
        "runner = int(sys.argv[1])\n"
        "while os.getppid() == runner:\n"
        "    for _ in range(1_000_000):\n"
        "        pass\n")


def load_c_build():
    """perf/c/build.py, which builds the C reference tools (build()), as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("perf_c_build", PERF / "c" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------ measurements


@dataclass
class Measurement:
    test: str
    size: int
    impl: str
    rep: int
    count: int
    value: float | None       # us (lat) or msg/s (thr); None when failed
    unit: str
    status: str               # ok, failed, timeout
    error: str                # why it failed
    note: str                 # something odd about a run that did give a number
    wall_s: float             # both processes, start to exit


def kill_group(proc):
    """SIGKILL the process group of a child we started in its own session:
    the child, if it still runs, and anything it left behind.  (Linux hands
    out no pid that is still a process group's id, so the group is ours.)"""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------ busy core


class Spinners:
    """Busy loops at nice 19 that keep vCPUs from going idle (--busy-core).

    On a VM an idle vCPU is halted, and waking it costs tens of
    microseconds; a latency ping-pong pays that on every hop.  A spinner
    keeps a CPU running, so wake-ups are cheap.  It runs only during the
    latency measurements (SIGCONT) and is stopped (SIGSTOP) during the
    throughput ones, where it would take CPU time from the tools.
    """

    def __init__(self, n, python, cpu=None):
        self.procs = [subprocess.Popen([python, "-c", SPIN, str(os.getpid())],
                                       stdin=subprocess.DEVNULL,
                                       start_new_session=True) for _ in range(n)]
        if cpu is not None:     # all on that CPU (path_lat.py --pin)
            for p in self.procs:
                os.sched_setaffinity(p.pid, {cpu})
        self.running = True

    def run(self, on):
        if on != self.running:
            for p in self.procs:
                p.send_signal(signal.SIGCONT if on else signal.SIGSTOP)
            self.running = on
            if on:
                time.sleep(0.05)        # let them get going first

    def stop(self):
        for p in self.procs:
            kill_group(p)
            p.wait()


# ------------------------------------------------------------ statistics, table


def summarize(measurements):
    """Medians, min, max per (test, size, impl), in first-seen order."""
    groups = {}
    for m in measurements:
        groups.setdefault((m.test, m.size, m.impl), []).append(m)
    rows = []
    for (test, size, impl), ms in groups.items():
        ok = [m.value for m in ms if m.status == "ok"]
        rows.append(dict(test=test, size=size, impl=impl, label=LABELS[impl], unit=UNITS[test],
                         median=statistics.median(ok) if ok else None,
                         min=min(ok) if ok else None, max=max(ok) if ok else None,
                         n_ok=len(ok), n=len(ms), count=ms[0].count))
    by_key = {(r["test"], r["size"], r["impl"]): r for r in rows}
    for r in rows:
        ref_test = "thr" if r["test"] == "thr-batch" else r["test"]
        ref = by_key.get((ref_test, r["size"], "c"))
        r["ratio"] = (r["median"] / ref["median"]
                      if ref and ref["median"] and r["median"] is not None and r["impl"] != "c"
                      else None)
        path = by_key.get((r["test"], r["size"], "cpath"))
        r["ratio_path"] = (r["median"] / path["median"]
                           if path and path["median"] and r["median"] is not None
                           and r["impl"] == "wiring" else None)
    return rows


def fmt_value(value, unit):
    if value is None:
        return "n/a"
    if unit == "us":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:.0f}"


def table_lines(rows, impls):
    """The result table: one row per (test, size) with the medians and the
    ratios to C, and under it the spread (min-max) of the repetitions."""
    by_key = {(r["test"], r["size"], r["impl"]): r for r in rows}
    order = {"lat": 0, "thr": 1, "thr-batch": 2}
    keys = sorted({(r["test"], r["size"]) for r in rows}, key=lambda k: (order[k[0]], k[1]))
    table = []      # [(name, [cell, ...], [spread, ...])]
    for test, size in keys:
        unit = UNITS[test]
        if test == "thr-batch":     # C has no batch call: its plain 1 B rate is the reference
            columns = [(i, by_key.get(("thr", size, "c")) if i == "c" else
                        by_key.get((test, size, i)) if i == "wiring" else None)
                       for i in IMPLS if i in impls]
        else:
            columns = [(i, by_key.get((test, size, i))) for i in IMPLS if i in impls]
        cells, spread = [], []
        for impl, r in columns:
            if r is None:
                cells.append("")
                spread.append("")
                continue
            label = LABELS[impl]
            cell = f"{label}={fmt_value(r['median'], unit)}{unit}"
            if r["ratio"] is not None:
                cell += f" ({r['ratio']:.2f}x)"
            if r.get("ratio_path") is not None:
                cell += f" [{r['ratio_path']:.2f}x C-path]"
            if r["n_ok"] < r["n"]:
                cell += f" [{r['n'] - r['n_ok']}/{r['n']} failed]"
            cells.append(cell)
            # indented so that it starts under the number it belongs to
            spread.append(" " * (len(label) + 1)
                          + f"{fmt_value(r['min'], unit)}-{fmt_value(r['max'], unit)}"
                          if r["median"] is not None else "")
        table.append((f"{test} {size}B", cells, spread))
    ncols = max((len(c) for _, c, _ in table), default=0)
    widths = [max((len(x[i]) for _, c, sp in table for x in (c, sp) if i < len(x)), default=0)
              for i in range(ncols)]
    name_w = max((len(n) for n, _, _ in table), default=0)
    lines = []
    for name, cells, spread in table:
        lines.append((f"{name:<{name_w}}  " + "  ".join(
            f"{c:<{w}}" for c, w in zip(cells, widths))).rstrip())
        lines.append((f"{'  min-max':<{name_w}}  " + "  ".join(
            f"{sp:<{w}}" for sp, w in zip(spread, widths))).rstrip())
    return lines


# ------------------------------------------------------------ chart


COLORS = {"c": "#333333", "cpath": "#888888", "wiring": "#d62728", "pyzmq": "#1f77b4"}
MARKERS = {"c": "s", "cpath": "D", "wiring": "o", "pyzmq": "^"}
DODGE = {"c": 2 ** -0.12, "cpath": 2 ** -0.06, "wiring": 1.0, "pyzmq": 2 ** 0.12, "batch": 2 ** 0.3}


def chart(path, rows, sizes, title, extra=None, dodge=True):
    """Latency and throughput against message size (log-log), one line per
    implementation, median with min-max bars; ``extra(ax, test)`` may add to
    a panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, test, ylabel in ((axes[0], "lat", "latency [us]"),
                             (axes[1], "thr", "throughput [msg/s]")):
        for impl in IMPLS:
            pts = sorted((r["size"], r["median"], r["min"], r["max"]) for r in rows
                         if r["test"] == test and r["impl"] == impl and r["median"] is not None)
            if not pts:
                continue
            xs, ys, lo, hi = zip(*pts)
            if dodge:
                # nudge the lines apart sideways so the min-max bars stay readable
                xs = [x * DODGE[impl] for x in xs]
            ax.errorbar(xs, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]],
                        marker=MARKERS[impl], color=COLORS[impl], label=LABELS[impl],
                        capsize=3, linewidth=1.6, markersize=6)
        if extra is not None:
            extra(ax, test)
        style_axis(ax, test, sizes, ylabel)
        ax.yaxis.set_major_formatter(FuncFormatter(_number_label))
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, pos: _number_label(v, pos) if str(v)[0] in "25" else ""))
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _number_label(value, pos=None):
    """10, 20, 500, 2k, 1M, 20M: axis labels without exponents."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:g}"


def style_axis(ax, test, sizes, ylabel):
    """The seed's chart layout for one panel: log-log, sizes as ticks."""
    from matplotlib.ticker import FixedLocator, NullLocator
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_size_label(s) for s in sizes])
    ax.set_xlabel("message size [B]")
    ax.set_ylabel(ylabel)
    ax.set_title("Latency (one way, lower is better)" if test == "lat"
                 else "Throughput (higher is better)")


def _size_label(size):
    return f"{size // 1024}Ki" if size >= 1024 and size % 1024 == 0 else str(size)


def cpu_model():
    """The CPU model as /proc/cpuinfo names it (the machine for the figures)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
