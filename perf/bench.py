#!/usr/bin/env python3
"""Benchmark runner: the C reference, pyzmq-wiring and the pyzmq socket
binding, side by side, on loopback.

    python perf/bench.py              # quick (default): 3 repetitions, < 2 min
    python perf/bench.py --full       # careful: 7 repetitions, larger counts

For every message size it measures latency (local_lat/remote_lat) and
throughput (local_thr/remote_thr) of each implementation, alternating the
implementations inside every repetition, and prints the medians with the
ratio to C and the spread (min-max).  Extra row: pyzmq-wiring's batch
throughput (--batch N on both thr tools) at 1 B against C's plain 1 B
throughput.  Every individual measurement, the medians and a chart go to
--out (default perf/results/).  See perf/README.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# what this runner shares with perf/rig.py (a sibling module: this folder is first on sys.path)
from benchlib import (COLORS, DODGE, IMPLS, LABELS, LAT_RE, THR_RE, UNITS, Measurement, Spinners,
                      chart, cpu_model, fmt_value, kill_group, load_c_build, summarize, table_lines)

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

DEFAULT_SIZES = (1, 16, 256, 4096, 65536)
ALIASES = {"c": "c", "C": "c", "cpath": "cpath", "c-path": "cpath", "C-path": "cpath",
           "wiring": "wiring", "pyzmq-wiring": "wiring",
           "pyzmq": "pyzmq", "socket": "pyzmq"}

# Per-size counts for quick mode, picked so that one measurement takes
# roughly 0.1-1 s on the 2-core development VM (latency 10-45 us, C
# throughput 2-8 M msg/s at 1 B, ~1-2 GB/s at 64 KiB).  --full multiplies
# them by FULL_FACTOR, --scale by any factor.
LAT_COUNT = 5_000
THR_BYTES = 1_300_000_000      # throughput counts: about this many bytes ...
THR_MAX = 1_000_000            # ... but at most this many messages
FULL_FACTOR = 3
MIN_COUNT = 10

QUICK = dict(reps=3, timeout=30.0)
FULL = dict(reps=7, timeout=120.0)
GRACE = 10.0    # seconds one side may outlive the other before it is killed
                # (more than the 5 s pyzmq-wiring may spend closing at exit)


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------ environment


def _ensure_interpreter():
    """Re-run under the project's venv when this interpreter lacks what we need.

    `python perf/bench.py` with a system python that has neither matplotlib
    nor the socket binding would otherwise skip most of the benchmark.
    """
    if os.environ.get("PYZMQ_BENCH_NO_REEXEC"):
        return
    missing = [m for m in ("matplotlib", "zmq") if not _importable(m)]
    if not missing or not VENV_PYTHON.exists():
        return
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return
    log(f"bench: {', '.join(missing)} missing in {sys.executable}; "
        f"re-running under {VENV_PYTHON}")
    env = dict(os.environ, PYZMQ_BENCH_NO_REEXEC="1")
    os.execve(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]], env)


def _importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def libzmq_versions():
    """{'system': libzmq our extension and the C tools link, 'pyzmq': binding's}."""
    out = {"system": None, "pyzmq": None, "pyzmq_binding": None}
    sys.path.insert(0, str(ROOT))
    try:
        import pyzmq
        out["system"] = pyzmq.zmq_version()
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        out["system_error"] = str(e)
    finally:
        sys.path.remove(str(ROOT))
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", "import zmq; print(zmq.zmq_version(), zmq.__version__)"],
            capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            out["pyzmq"], out["pyzmq_binding"] = proc.stdout.split()
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    return out


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------ counts


def lat_count(size, factor):
    return max(MIN_COUNT, round(LAT_COUNT * factor))


def thr_count(size, factor):
    base = min(THR_MAX, THR_BYTES // max(size, 1))
    return max(MIN_COUNT, round(base * factor))


# ------------------------------------------------------------ commands


@dataclass
class Plan:
    """What one measurement runs."""
    test: str           # lat, thr, thr-batch
    size: int
    impl: str           # c, wiring, pyzmq
    count: int
    local: list = field(default_factory=list)
    remote: list = field(default_factory=list)

    @property
    def reporter(self):
        """The side that prints the number: remote_lat, local_thr."""
        return "remote" if self.test == "lat" else "local"


class Commands:
    """Builds the command lines of the three implementations."""

    def __init__(self, python, c_tools, directory, batch):
        self.python = python
        self.c_tools = c_tools          # {name: path} or None
        self.directory = directory      # "127.0.0.1:PORT" of our zmq_server
        self.batch = batch

    def names_gone(self, test, timeout=5.0):
        """Wait until the directory has forgotten the names the previous
        wiring pair registered (it notices a closed connection
        asynchronously; a new local side registering the same name before
        that would be refused as a duplicate).  True when they are gone."""
        from pyzmq.directory import DirectoryClient, DirectoryError
        from pyzmq.protocol import NOT_FOUND
        names = ["EL", "QL"] if test == "lat" else ["Q"]
        deadline = time.monotonic() + timeout
        with DirectoryClient(self.directory, timeout=timeout) as directory:
            for name in names:
                while True:
                    try:
                        directory.lookup(name)
                    except DirectoryError as e:
                        if e.code == NOT_FOUND:
                            break
                        raise
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.02)
        return True

    def plan(self, test, size, impl, count):
        kind = "lat" if test == "lat" else "thr"
        local, remote = f"local_{kind}", f"remote_{kind}"
        n = [str(size), str(count)]
        # faulthandler: a hung Python tool killed with SIGABRT shows its stack
        py = [self.python, "-X", "faulthandler"]
        if impl == "c":
            ep = f"tcp://127.0.0.1:{free_port()}"
            lcmd = [self.c_tools[local], ep, *n]
            rcmd = [self.c_tools[remote], ep, *n]
        elif impl == "pyzmq":
            ep = f"tcp://127.0.0.1:{free_port()}"
            lcmd = [*py, "-I", str(PERF / "pyzmq_socket" / f"{local}.py"), ep, *n]
            rcmd = [*py, "-I", str(PERF / "pyzmq_socket" / f"{remote}.py"), ep, *n]
        elif impl == "cpath":
            if kind != "lat":
                raise ValueError("C-path is a latency reference only")
            a, b = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
            lcmd = [self.c_tools["wiring_lat"], "local", a, b, *n, "direct"]
            rcmd = [self.c_tools["wiring_lat"], "remote", a, b, *n, "direct"]
        elif impl == "wiring":
            # an interface given as an IP alone makes the tool listen on a
            # free port of its own choosing: no port to race for
            ifaces = ["127.0.0.1", "127.0.0.1"] if kind == "lat" else ["127.0.0.1"]
            extra = ["--batch", str(self.batch)] if test == "thr-batch" else []
            lcmd = [*py, str(PERF / f"{local}.py"), self.directory, *ifaces, *n, *extra]
            rcmd = [*py, str(PERF / f"{remote}.py"), self.directory, *n, *extra]
        else:
            raise ValueError(impl)
        return Plan(test, size, impl, count, lcmd, rcmd)


# ------------------------------------------------------------ running a pair



def _tail(path, limit=400):
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""
    return text if len(text) <= limit else "..." + text[-limit:]


def _dump_python_stacks(procs, changed, exited, wait=1.0):
    """Make hung Python children print where they are: they run with
    -X faulthandler, so SIGABRT writes every thread's traceback to their
    stderr (which ends up in the error text) before they die."""
    for p in procs:
        try:
            p.send_signal(signal.SIGABRT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while len(exited) < 2 and time.monotonic() < deadline:
        changed.wait(max(0.0, deadline - time.monotonic()))
        changed.clear()


@dataclass
class PairResult:
    value: float | None
    status: str             # ok, failed, timeout
    error: str              # why it failed ("" when ok)
    note: str               # anything odd about a good run ("" normally)
    wall_s: float


def run_pair(plan: Plan, timeout: float, grace: float = GRACE) -> PairResult:
    """Start the local side, then the remote side; wait for both; parse the number.

    Each child gets its own session, so a straggler is killed together with
    anything it started.  The runner never polls: one thread per child
    blocks in waitpid, so the runner itself does not wake the CPUs while
    they measure.  The pair gets `timeout` seconds in all; once one side has
    exited the other gets `grace` seconds more, then it is killed.
    """
    regex = LAT_RE if plan.test == "lat" else THR_RE
    changed = threading.Event()
    exited = {}                 # side -> monotonic time of its exit
    with tempfile.TemporaryDirectory(prefix="pyzmq-bench-") as tmp:
        files = {side: (Path(tmp) / f"{side}.out", Path(tmp) / f"{side}.err")
                 for side in ("local", "remote")}

        def watch(side, proc):
            proc.wait()
            exited[side] = time.monotonic()
            changed.set()

        procs, threads = {}, []
        status, error = None, ""
        t0 = time.monotonic()
        try:
            for side in ("local", "remote"):       # the local side first
                out, err = files[side]
                with open(out, "wb") as fo, open(err, "wb") as fe:
                    procs[side] = subprocess.Popen(
                        getattr(plan, side), stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                        cwd=str(ROOT), start_new_session=True)
                th = threading.Thread(target=watch, args=(side, procs[side]), daemon=True)
                th.start()
                threads.append(th)
            deadline = t0 + timeout
            while True:
                changed.clear()
                if len(exited) == 2:
                    break
                now = time.monotonic()
                limit = deadline if not exited else min(deadline, min(exited.values()) + grace)
                if now >= limit:
                    status = "timeout"
                    if not exited:
                        error = f"no result within {timeout:g} s; killed both sides"
                    else:
                        (done, when), = exited.items()
                        hung = "remote" if done == "local" else "local"
                        error = (f"{done} side exited with status {procs[done].returncode}; the "
                                 f"{hung} side was still running {now - when:.1f} s later: killed")
                    if plan.impl != "c":
                        _dump_python_stacks([p for s, p in procs.items() if s not in exited],
                                            changed, exited)
                    tails = [f"{s} stderr: {_tail(files[s][1], 3000)}" for s in procs
                             if _tail(files[s][1])]
                    error = "; ".join([error, *tails])
                    break
                changed.wait(limit - now)
        finally:
            for p in procs.values():
                kill_group(p)
            for th in threads:
                th.join(5.0)
        wall = time.monotonic() - t0
        note = ""
        if len(exited) == 2 and status is None:
            lag = abs(exited["local"] - exited["remote"])
            if lag > 1.0:
                last = max(exited, key=exited.get)
                note = f"the {last} side exited {lag:.1f} s after the other"
        if status is None:
            bad = {s: p.returncode for s, p in procs.items() if p.returncode != 0}
            if bad:
                status = "failed"
                error = "; ".join(f"{s} side exit status {rc}: {_tail(files[s][1]) or '(no stderr)'}"
                                  for s, rc in bad.items())
        value = None
        if status is None:
            text = files[plan.reporter][0].read_text(errors="replace")
            m = regex.search(text)
            if m:
                value, status = float(m.group(1)), "ok"
            else:
                status = "failed"
                error = f"no result in the {plan.reporter} side's output: {text.strip()[-200:]!r}"
        return PairResult(value, status, error, note, wall)


# ------------------------------------------------------------ output



def write_outputs(outdir, stem, meta, measurements, rows):
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["json"] = outdir / f"{stem}.json"
    with open(paths["json"], "w") as f:
        json.dump(dict(meta=meta, measurements=[asdict(m) for m in measurements], medians=rows),
                  f, indent=2)
        f.write("\n")
    paths["csv"] = outdir / f"{stem}.csv"
    fields = ["kind", "test", "size", "impl", "rep", "count", "value", "unit", "status",
              "error", "note", "wall_s", "median", "min", "max", "ratio_to_c", "n_ok", "n"]
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for m in measurements:
            w.writerow(dict(kind="measurement", test=m.test, size=m.size, impl=LABELS[m.impl]
                            + ("-batch" if m.test == "thr-batch" else ""),
                            rep=m.rep, count=m.count, value=m.value, unit=m.unit, status=m.status,
                            error=m.error, note=m.note, wall_s=m.wall_s))
        for r in rows:
            w.writerow(dict(kind="median", test=r["test"], size=r["size"],
                            impl=r["label"] + ("-batch" if r["test"] == "thr-batch" else ""),
                            count=r["count"], unit=r["unit"], median=r["median"], min=r["min"],
                            max=r["max"], ratio_to_c=r["ratio"], n_ok=r["n_ok"], n=r["n"]))
    try:
        paths["png"] = outdir / f"{stem}.png"
        plot(paths["png"], meta, rows)
    except ImportError as e:
        log(f"bench: no chart ({e}); install matplotlib")
        del paths["png"]
    return paths


def plot(path, meta, rows):
    """The two-panel PNG of one run, with the batch row as a star."""
    def batch_point(ax, test):
        if test != "thr":
            return
        for r in rows:
            if r["test"] == "thr-batch" and r["median"] is not None:
                ax.errorbar([r["size"] * DODGE["batch"]], [r["median"]],
                            yerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]],
                            marker="*", markersize=13, color=COLORS["wiring"], linestyle="none",
                            capsize=3, label=f"pyzmq-wiring, batch {meta['batch']}")

    title = (f"{meta['date']}  {meta['cpu']}, {meta['cores']} cores  libzmq {meta['libzmq']}  "
             f"{meta['mode']} ({meta['reps']} reps, median, bars min-max)"
             + ("  busy-core" if meta.get("busy_core") else ""))
    chart(path, rows, sorted({r["size"] for r in rows}), title, batch_point)


# ------------------------------------------------------------ main


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Latency and throughput of the C reference, pyzmq-wiring and the pyzmq "
                    "socket binding over loopback, side by side (see perf/README.md).")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="3 repetitions, quick counts, < 2 minutes (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help=f"7 repetitions, counts x{FULL_FACTOR}: a careful run")
    p.set_defaults(mode="quick")
    p.add_argument("--sizes", nargs="+", metavar="B",
                   help="message sizes in bytes (default: 1 16 256 4096 65536; commas work too)")
    p.add_argument("--reps", type=_positive_int, metavar="N",
                   help="repetitions (default: quick 3, full 7)")
    p.add_argument("--impls", nargs="+", metavar="NAME",
                   help="implementations among c, cpath (pyzmq-wiring's latency path "
                        "in C), wiring (pyzmq-wiring), pyzmq (default: all; commas work too)")
    p.add_argument("--tests", nargs="+", metavar="T", default=["lat", "thr", "batch"],
                   help="lat, thr, batch (default: all)")
    p.add_argument("--batch", type=_positive_int, default=256, metavar="N",
                   help="messages per call for the thr-batch row (default 256)")
    p.add_argument("--scale", type=_positive_float, default=1.0, metavar="F",
                   help="multiply every message/round-trip count by F (e.g. 0.05 for a smoke run)")
    p.add_argument("--timeout", type=_positive_float, metavar="S",
                   help="seconds one measurement may take before its processes are killed "
                        "(default: quick 30, full 120)")
    p.add_argument("--busy-core", nargs="?", type=int, const=1, default=0, metavar="N",
                   help="during the latency measurements run N (default 1) busy loops at "
                        "nice 19 so that the vCPUs never go idle (see perf/README.md)")
    p.add_argument("--out", type=Path, default=PERF / "results", metavar="DIR",
                   help="where to write the JSON, CSV and PNG (default perf/results/)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    a = p.parse_args(argv)

    try:
        a.sizes = _split_ints(a.sizes) if a.sizes else list(DEFAULT_SIZES)
    except ValueError as e:
        p.error(f"--sizes: {e}")
    names = [n for item in (a.impls or IMPLS) for n in item.split(",") if n]
    bad = [n for n in names if n not in ALIASES]
    if bad:
        p.error(f"--impls: unknown {', '.join(bad)} (choose among c, cpath, wiring, pyzmq)")
    chosen = {ALIASES[n] for n in names}
    a.impls = [i for i in IMPLS if i in chosen]
    tests = {t for item in a.tests for t in item.split(",") if t}
    if tests - {"lat", "thr", "batch"}:
        p.error(f"--tests: unknown {', '.join(sorted(tests - {'lat', 'thr', 'batch'}))}")
    a.tests = tests
    defaults = QUICK if a.mode == "quick" else FULL
    a.reps = a.reps or defaults["reps"]
    a.timeout = a.timeout or defaults["timeout"]
    a.factor = a.scale * (FULL_FACTOR if a.mode == "full" else 1)
    if a.busy_core < 0:
        p.error("--busy-core: N must be 0 or more")
    return a


def _positive_int(text):
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return v


def _positive_float(text):
    v = float(text)
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number greater than 0")
    return v


def _split_ints(items):
    out = []
    for item in items:
        for part in item.split(","):
            if part:
                v = int(part)
                if v < 1:
                    raise ValueError(f"{v} is not a positive size")
                out.append(v)
    return sorted(set(out))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None):
    _ensure_interpreter()
    a = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    now = _dt.datetime.now().astimezone()
    say = (lambda *x: None) if a.quiet else log

    # what can run on this machine
    impls = list(a.impls)
    notes = []
    c_tools = None
    if "c" in impls:
        try:
            c_tools = load_c_build().build()
        except Exception as e:  # noqa: BLE001 - BuildError and friends: skip C, say why
            notes.append(f"C reference skipped: {e}".splitlines()[0])
            impls.remove("c")
    if "cpath" in impls:
        try:
            build = load_c_build()
            c_tools = dict(c_tools or {}, **build.build(tools=build.EXTRA_TOOLS))
        except Exception as e:  # noqa: BLE001 - as for C
            notes.append(f"C-path reference skipped: {e}".splitlines()[0])
            impls.remove("cpath")
    if "pyzmq" in impls and not _importable("zmq"):
        notes.append(f"pyzmq socket binding skipped: no module zmq in {sys.executable}")
        impls.remove("pyzmq")
    versions = libzmq_versions()
    if "wiring" in impls and versions["system"] is None:
        notes.append(f"pyzmq-wiring skipped: cannot import the extension "
                     f"({versions.get('system_error')}); build it with "
                     "`python setup.py build_ext --inplace`")
        impls.remove("wiring")
    if not impls:
        for n in notes:
            log(f"bench: {n}")
        log("bench: nothing to measure")
        return 1

    meta = dict(
        date=now.strftime("%Y-%m-%d %H:%M:%S %Z"), cpu=cpu_model(), cores=os.cpu_count(),
        kernel=platform.release(), python=platform.python_version(), executable=sys.executable,
        libzmq=versions["system"] or "?", libzmq_in_pyzmq=versions["pyzmq"],
        pyzmq_binding=versions["pyzmq_binding"], git=git_revision(), mode=a.mode, reps=a.reps,
        sizes=a.sizes, impls=[LABELS[i] for i in impls], scale=a.scale, batch=a.batch,
        timeout_s=a.timeout, busy_core=a.busy_core, notes=notes,
        counts={str(s): dict(lat=lat_count(s, a.factor), thr=thr_count(s, a.factor))
                for s in a.sizes},
    )
    header = [
        f"pyzmq-wiring benchmark  {meta['date']}",
        f"machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}, "
        f"Python {meta['python']}",
        f"libzmq: {meta['libzmq']} (C reference, pyzmq-wiring)"
        + (f"; pyzmq {meta['pyzmq_binding']} bundles libzmq {meta['libzmq_in_pyzmq']}"
           if meta["pyzmq_binding"] else ""),
        f"mode: {a.mode}, {a.reps} reps, sizes {' '.join(map(str, a.sizes))} B, scale {a.scale:g}, "
        f"busy-core {a.busy_core or 'off'}, git {meta['git'] or '?'}",
    ]
    if not a.busy_core and "lat" in a.tests:
        header.append("hint: on a VM, latency depends on whether vCPUs idle; "
                      "--busy-core keeps one busy (see perf/README.md)")
    print("\n".join(header), flush=True)
    for n in notes:
        print(f"note: {n}", flush=True)

    # the schedule: inside each repetition every (test, size) runs each
    # implementation in turn, so slow drifts of the machine hit all alike
    cells = []
    for test in ("lat", "thr"):
        if test not in a.tests and not (test == "thr" and "batch" in a.tests):
            continue
        for size in a.sizes:
            row = []
            if test in a.tests:
                row += [(test, i) for i in impls if i != "cpath" or test == "lat"]
            if test == "thr" and size == 1 and "batch" in a.tests and "wiring" in impls:
                if "thr" not in a.tests and "c" in impls:
                    row.insert(0, ("thr", "c"))      # the batch row's reference
                row.append(("thr-batch", "wiring"))
            cells += [(t, size, i) for t, i in row]

    measurements = []
    server = spinners = None
    interrupted = False
    # SIGTERM/SIGHUP end the run like Ctrl-C: children killed, server
    # stopped, what was measured written out
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        if "wiring" in impls:
            sys.path.insert(0, str(ROOT))
            from pyzmq.testing import ServerProcess
            # not quiet: its registration log is kept (in memory) to explain
            # a failed wiring pair
            server = ServerProcess(host="127.0.0.1", port=0).start()
            say(f"bench: zmq_server on {server.address} (pid {server.pid})")
            meta["zmq_server"] = dict(address=server.address, pid=server.pid)
        commands = Commands(sys.executable, c_tools, server.address if server else None, a.batch)
        if a.busy_core:
            spinners = Spinners(a.busy_core, sys.executable)
            meta["busy_core_pids"] = [p.pid for p in spinners.procs]
        total = a.reps * len(cells)
        k = 0
        for rep in range(1, a.reps + 1):
            for test, size, impl in cells:
                k += 1
                count = lat_count(size, a.factor) if test == "lat" else thr_count(size, a.factor)
                plan = commands.plan(test, size, impl, count)
                if spinners:
                    spinners.run(test == "lat")
                if impl == "wiring":
                    try:
                        if not commands.names_gone(test):
                            say(f"bench: zmq_server still holds the names of an earlier "
                                f"{test} pair")
                    except Exception as e:  # noqa: BLE001 - the pair will fail and say more
                        say(f"bench: cannot ask zmq_server about old names: {e}")
                res = run_pair(plan, a.timeout)
                if res.status != "ok" and impl == "wiring" and server is not None:
                    res.error += "; zmq_server log: " + " | ".join(server.logs()[-6:])
                m = Measurement(test, size, impl, rep, count, res.value, UNITS[test], res.status,
                                res.error, res.note, round(res.wall_s, 3))
                measurements.append(m)
                label = LABELS[impl] + ("-batch" if test == "thr-batch" else "")
                shown = (f"{fmt_value(res.value, UNITS[test])} {UNITS[test]}" if res.status == "ok"
                         else f"{res.status.upper()}: {res.error}")
                say(f"[{k}/{total}] rep {rep} {test} {size}B {label}: {shown} ({res.wall_s:.2f} s)"
                    + (f"  note: {res.note}" if res.note else ""))
    except KeyboardInterrupt:
        interrupted = True
        log("bench: interrupted; writing what was measured")
    finally:
        if spinners:
            spinners.stop()
        if server:
            server.stop()

    rows = summarize(measurements)
    elapsed = time.monotonic() - started
    meta["elapsed_s"] = round(elapsed, 1)
    meta["interrupted"] = interrupted
    stem = "bench-" + now.strftime("%Y%m%d-%H%M%S") + f"-{a.mode}"
    print()
    for line in table_lines(rows, impls):
        print(line)
    failed = [m for m in measurements if m.status != "ok"]
    if failed:
        print(f"\n{len(failed)} of {len(measurements)} measurements failed:")
        for m in failed:
            error = m.error if len(m.error) <= 400 else m.error[:400] + " ... (all of it in the JSON)"
            print(f"  rep {m.rep} {m.test} {m.size}B {LABELS[m.impl]}: {m.status}: {error}")
    odd = [m for m in measurements if m.note]
    if odd:
        print(f"\n{len(odd)} measurements gave a number but something was odd:")
        for m in odd:
            print(f"  rep {m.rep} {m.test} {m.size}B {LABELS[m.impl]}: {m.note}")
    paths = write_outputs(a.out, stem, meta, measurements, rows)
    print()
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"total: {elapsed:.1f} s ({len(measurements)} measurements)")
    if interrupted:
        return 130
    return 1 if not any(m.status == "ok" for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
