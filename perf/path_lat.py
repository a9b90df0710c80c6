"""Where the latency goes: pyzmq-wiring's path in C beside C's REQ/REP and
pyzmq-wiring itself, alternating, medians.

    python perf/path_lat.py                       # 8 repetitions, 1 B, 5,000 round trips
    python perf/path_lat.py --old ../oldbuild     # also another checkout's pyzmq-wiring
    python perf/path_lat.py --busy-core --reps 10 --sizes 1 256

Shapes (one pair of processes each, over loopback TCP):

    c-reqrep     perf/c/bin/local_lat and remote_lat: REP/REQ, the reference
    c-poll       perf/c/bin/wiring_lat: PUSH->PULL, XPUB->SUB back, the owner
                 in poll() on its PULL's and its XPUB's signalling fds (what
                 the extension did before issue 17)
    c-block      the same path, the owner blocking in zmq_msg_recv on its
                 PULL alone after one non-blocking try (what it does now)
    c-direct     the same path, both sides blocking in zmq_msg_recv at once
    py-floor     perf/py_floor_lat.py: c-direct's steps driven from a Python
                 loop, one minimal C call each (perf/c/pyfloor.c; the GIL
                 released in the blocking receive): what any Python program
                 pays on this path, so wiring - py-floor is the binding's
                 own share and py-floor - c-direct the interpreter's
    wiring       perf/local_lat.py and remote_lat.py of this checkout,
                 through a zmq_server this script starts
    wiring-old   the same from --old DIR (built in place)

Every repetition runs every shape once, in turn (the order rotates by one
each repetition), so a drift of the machine hits all alike.  Prints the
median one-way latency of each shape, its min-max, its ratio to
c-reqrep's median, and the median of its ratios to c-reqrep within each
repetition (steadier on a loaded machine: neighbours in time see alike
load).

--segments counts the TCP segments each shape sends per round trip instead
(the system's Tcp OutSegs counter, /proc/net/snmp, around one pair of
--count round trips, minus what the machine sent in as long a time with no
pair running): REQ/REP's one connection carries each side's ACK on its
reply, 2 segments a round trip; the path's two one-way connections have
no reply to carry them, so their receivers send pure ACKs (Linux: one for
every second small segment), 3 segments a round trip, in C as in Python.
System-wide: read it on a quiet machine.

--pin runs --busy-core's spinner on CPU 0 and every pair on CPU 1.
Unpinned, the scheduler places the pair's threads on either CPU, and where
it puts them moves the figures by up to 2-3x between runs (seen: a Python
pair with an idle directory client beside it, 2.0-2.8x slower than
without, unpinned; 0.97x pinned).

--cpu measures the CPU time (user and system, every thread) each side
spends per round trip instead, from the difference of runs of N and 3N
round trips (wait4's rusage), --reps times in turn, medians.  It counts
the kernel's share, which --callgrind does not.  With --busy-core on a
quiet machine it is most of the latency (the spinner leaves the pair one
core); other load moves it too (a thread is charged for its slower
wake-ups), so read it quiet, as the times.

--callgrind counts instructions per round trip on each side instead
(valgrind; user space only, so not the syscalls' kernel time), from the
difference of runs of N and 3N round trips: repeatable under any load.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(ROOT))

from bench import Commands, Plan, free_port, run_pair        # noqa: E402
from benchlib import Spinners, cpu_model, load_c_build        # noqa: E402

SHAPES = ("c-reqrep", "c-poll", "c-block", "c-direct", "py-floor", "wiring", "wiring-old")


def c_build():
    mod = load_c_build()
    tools = mod.build()
    tools.update(mod.build(tools=mod.EXTRA_TOOLS))
    mod.build_pyfloor(sys.executable)      # py-floor's module, built before any timing
    return tools


def plan(shape, size, count, tools, directory, old):
    n = [str(size), str(count)]
    if shape == "c-reqrep":
        ep = f"tcp://127.0.0.1:{free_port()}"
        return Plan("lat", size, "c", count, [tools["local_lat"], ep, *n],
                    [tools["remote_lat"], ep, *n])
    if shape.startswith("c-"):
        a, b = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        local_mode, remote_mode = {"c-poll": ("poll", "block"), "c-block": ("block", "block"),
                                   "c-direct": ("direct", "direct")}[shape]
        return Plan("lat", size, "c", count, [tools["wiring_lat"], "local", a, b, *n, local_mode],
                    [tools["wiring_lat"], "remote", a, b, *n, remote_mode])
    if shape == "py-floor":
        a, b = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        floor = [sys.executable, str(PERF / "py_floor_lat.py")]
        return Plan("lat", size, "c", count, [*floor, "local", a, b, *n],
                    [*floor, "remote", a, b, *n])
    tree = Path(old) if shape == "wiring-old" else ROOT
    py = [sys.executable, "-X", "faulthandler"]
    return Plan("lat", size, "wiring", count,
                [*py, str(tree / "perf" / "local_lat.py"), directory, "127.0.0.1", "127.0.0.1", *n],
                [*py, str(tree / "perf" / "remote_lat.py"), directory, *n])


COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _callgrind_pair(p):
    """Both sides of plan p under callgrind: (local, remote) instructions."""
    procs = []
    for side, cmd in (("local", p.local), ("remote", p.remote)):
        procs.append(subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONHASHSEED="0")))
        if side == "local":
            # let it bind first (a Python side starts slower under valgrind)
            time.sleep(2.0 if p.impl == "wiring" or p.local[0] == sys.executable else 0.3)
    counts = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        m = COLLECTED.search(err)
        if proc.returncode != 0 or not m:
            sys.exit(f"path_lat: a side failed under valgrind: {err[-500:]}")
        counts.append(int(m.group(1)))
    return counts


def _per_round_trip(measure, shape, size, n1, n2, tools, directory, old, commands):
    """[local, remote] per round trip of measure(plan) (a pair's two
    totals), from runs of n1 and n2 round trips: what is not per round
    trip (start-up, exit) cancels out."""
    got = []
    for n in (n1, n2):
        if shape.startswith("wiring"):
            commands.names_gone("lat")
        p = plan(shape, size, n, tools, directory, old)
        if p.impl == "wiring":
            p.local.append("-q")
            p.remote.append("-q")
        got.append(measure(p))
    return [(b - c) / (n2 - n1) for b, c in zip(got[1], got[0])]


def callgrind(a, shapes, tools, directory):
    """Instructions per round trip on each side (every thread of each
    process, user space only: what the kernel does for the syscalls is not
    counted), from the difference of runs of a.count and 3 * a.count."""
    n1, n2 = a.count, 3 * a.count
    print(f"path_lat --callgrind: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{cpu_model()}, instructions per round trip (runs of {n1} and {n2})")
    commands = Commands(sys.executable, tools, directory, 256)
    for size in a.sizes:
        for shape in shapes:
            per = _per_round_trip(_callgrind_pair, shape, size, n1, n2, tools, directory,
                                  a.old, commands)
            print(f"  {size:6d} B  {shape:11s} local {per[0]:7.0f}  remote {per[1]:7.0f}  "
                  f"both {per[0] + per[1]:7.0f}")


def _spinners(a):
    """--busy-core's spinners; with --pin on CPU 0, and from then on this
    process (so every pair it starts) on CPU 1."""
    if not a.busy_core:
        return None
    if not a.pin:
        return Spinners(a.busy_core, sys.executable)
    cpus = sorted(os.sched_getaffinity(0))
    spinners = Spinners(a.busy_core, sys.executable, cpu=cpus[0])
    os.sched_setaffinity(0, {cpus[1]})
    return spinners


def _cpu_pair(p):
    """Both sides of plan p run as usual: (local, remote) CPU seconds, user
    and system, of every thread of each process (from wait4's rusage)."""
    procs = []
    for side, cmd in (("local", p.local), ("remote", p.remote)):
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      cwd=str(ROOT)))
        if side == "local":
            time.sleep(1.0 if p.impl == "wiring" or p.local[0] == sys.executable else 0.2)
    used = []
    for proc in procs:
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if proc.returncode != 0:
            sys.exit(f"path_lat: a side failed: {err[-500:]}")
        used.append(ru.ru_utime + ru.ru_stime)
    return used


def cpu(a, shapes, tools, directory):
    """CPU time per round trip on each side (every thread, user and
    system), from the difference of runs of a.count and 3 * a.count, each
    shape in turn a.reps times; medians.  Unlike the latency, barely moved
    by other load on the machine (what it moves is the caches)."""
    n1, n2 = a.count, 3 * a.count
    spinners = _spinners(a)
    commands = Commands(sys.executable, tools, directory, 256)
    load0 = os.getloadavg()
    got = {}            # (size, shape) -> [(local, remote) us per round trip]
    try:
        if spinners:
            spinners.run(True)
        for rep in range(a.reps):
            order = shapes[rep % len(shapes):] + shapes[:rep % len(shapes)]
            for size in a.sizes:
                for shape in order:
                    per = _per_round_trip(_cpu_pair, shape, size, n1, n2, tools, directory,
                                          a.old, commands)
                    got.setdefault((size, shape), []).append(tuple(x * 1e6 for x in per))
            print(f"path_lat: rep {rep + 1}/{a.reps} done", file=sys.stderr)
    finally:
        if spinners:
            spinners.stop()
    print(f"path_lat --cpu: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
          f"{os.cpu_count()} cores, load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}, busy-core "
          f"{a.busy_core}{', pinned' if a.pin else ''}; CPU us per round trip (user + system, all threads; runs of {n1} and "
          f"{n2}), medians of {a.reps}")
    for size in a.sizes:
        ref = got.get((size, "c-reqrep"))
        ref_both = statistics.median(l + r for l, r in ref) if ref else None
        for shape in shapes:
            v = got[(size, shape)]
            both = statistics.median(l + r for l, r in v)
            ratio = f"  {both / ref_both:.3f}x" if ref_both else ""
            print(f"  {size:6d} B  {shape:11s} local {statistics.median(l for l, _ in v):6.2f}  "
                  f"remote {statistics.median(r for _, r in v):6.2f}  both {both:6.2f}{ratio}")


def _out_segs():
    """The system's TCP segments sent so far (Tcp OutSegs)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")])


def segments(a, shapes, tools, directory):
    """TCP segments sent per round trip by each shape, less the background."""
    print(f"path_lat --segments: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{cpu_model()}, load {os.getloadavg()[0]:.2f}, TCP segments sent per round trip "
          f"(system-wide Tcp OutSegs around {a.count} round trips, less the background)")
    commands = Commands(sys.executable, tools, directory, 256)
    for size in a.sizes:
        for shape in shapes:
            if shape.startswith("wiring"):
                commands.names_gone("lat")
            p = plan(shape, size, a.count, tools, directory, a.old)
            before, t0 = _out_segs(), time.monotonic()
            res = run_pair(p, a.timeout)
            sent, took = _out_segs() - before, time.monotonic() - t0
            if res.status != "ok":
                print(f"  {size:6d} B  {shape:11s}  {res.status}: {res.error[:200]}")
                continue
            idle0 = _out_segs()
            time.sleep(took)
            background = _out_segs() - idle0
            print(f"  {size:6d} B  {shape:11s} {(sent - background) / a.count:6.2f} segments "
                  f"(background {background} in {took:.1f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--count", type=int, default=5000, help="round trips per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1])
    ap.add_argument("--shapes", nargs="+", choices=SHAPES, help="default: all (wiring-old with --old)")
    ap.add_argument("--old", help="another checkout (built in place) for the wiring-old shape")
    ap.add_argument("--busy-core", type=int, nargs="?", const=1, default=0,
                    help="keep N spinners (nice 19) running, as bench.py --busy-core")
    ap.add_argument("--pin", action="store_true",
                    help="a spinner on CPU 0 and every pair on CPU 1 (implies --busy-core 1): "
                         "no thread of a pair moves between CPUs, which is what moves "
                         "--busy-core's figures most from run to run")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--segments", action="store_true",
                    help="TCP segments sent per round trip instead of times (--count round "
                         "trips, default 20000 here; system-wide counter: a quiet machine)")
    ap.add_argument("--cpu", action="store_true",
                    help="CPU time per round trip of each side instead of times (--count "
                         "round trips, default 20000 here; --reps, --busy-core apply)")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per round trip under valgrind instead of times "
                         "(--count round trips, default 1000 here)")
    a = ap.parse_args(argv)
    if a.pin:
        if len(os.sched_getaffinity(0)) < 2:
            ap.error("--pin needs 2 CPUs (one for the spinner, one for the pairs)")
        a.busy_core = a.busy_core or 1
    shapes = a.shapes or [s for s in SHAPES if s != "wiring-old" or a.old]
    if "wiring-old" in shapes and not a.old:
        ap.error("wiring-old needs --old DIR")
    tools = c_build()
    if a.callgrind or a.segments or a.cpu:
        if a.count == 5000:
            a.count = 1000 if a.callgrind else 20000
        from pyzmq.testing import ServerProcess
        server = ServerProcess(host="127.0.0.1", port=0).start()
        try:
            if a.cpu:
                cpu(a, shapes, tools, server.address)
            else:
                (callgrind if a.callgrind else segments)(a, shapes, tools, server.address)
        finally:
            server.stop()
        return
    server = spinners = None
    results = {(s, z): [] for s in shapes for z in a.sizes}
    paired = {}         # (rep, size) -> {shape: value}: the ratios within a repetition
    load0 = os.getloadavg()
    try:
        if any(s.startswith("wiring") for s in shapes):
            from pyzmq.testing import ServerProcess
            server = ServerProcess(host="127.0.0.1", port=0).start()
        commands = Commands(sys.executable, tools, server.address if server else None, 256)
        if a.busy_core:
            spinners = _spinners(a)
            spinners.run(True)
        for rep in range(a.reps):
            order = shapes[rep % len(shapes):] + shapes[:rep % len(shapes)]
            for size in a.sizes:
                for shape in order:
                    if shape.startswith("wiring"):
                        commands.names_gone("lat")
                    res = run_pair(plan(shape, size, a.count, tools,
                                        server.address if server else None, a.old), a.timeout)
                    if res.status == "ok":
                        results[(shape, size)].append(res.value)
                        paired.setdefault((rep, size), {})[shape] = res.value
                    else:
                        print(f"  rep {rep + 1} {shape} {size} B: {res.status}: {res.error[:300]}",
                              file=sys.stderr)
            print(f"path_lat: rep {rep + 1}/{a.reps} done", file=sys.stderr)
    finally:
        if spinners:
            spinners.stop()
        if server:
            server.stop()
    load1 = os.getloadavg()
    print(f"path_lat: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
          f"{os.cpu_count()} cores, load {load0[0]:.2f} -> {load1[0]:.2f}, {a.reps} reps of "
          f"{a.count} round trips, busy-core {a.busy_core}{', pinned' if a.pin else ''}; one-way "
          "latency, medians")
    for size in a.sizes:
        ref = results.get(("c-reqrep", size))
        ref_med = statistics.median(ref) if ref else None
        for shape in shapes:
            v = results[(shape, size)]
            if not v:
                print(f"  {size:6d} B  {shape:11s}  (no result)")
                continue
            med = statistics.median(v)
            ratio = f"  {med / ref_med:.3f}x" if ref_med else ""
            pairs = [r[shape] / r["c-reqrep"] for (_, z), r in paired.items()
                     if z == size and shape in r and "c-reqrep" in r]
            within = f"  per-rep ratio median {statistics.median(pairs):.3f}x" if pairs else ""
            print(f"  {size:6d} B  {shape:11s} {med:8.2f} us{ratio}   min-max {min(v):.2f}-{max(v):.2f}"
                  f"{within}  (n={len(v)})")


if __name__ == "__main__":
    main()
