"""Nanoseconds per send() and per receive() on a local binding, per build,
beside C's zmq_send/zmq_msg_recv and the Python loop's floor.

    python perf/percall.py                          # this checkout, C and the floor
    python perf/percall.py --old ../oldbuild        # old and new, alternately, with C
    python perf/percall.py --case global --old ../oldbuild
    python perf/percall.py --callgrind --old ../oldbuild   # instructions per call

--case global times send() on a global exchange instead: an exchange whose
only socket is its listener (an XPUB at a loopback TCP port, set up with
the C core's _exchange_listen, so no directory is needed) with no
subscriber, so every send is the listener fast path (which takes the
service thread's lock) and libzmq drops the message; receive is not timed,
and there is no C or floor row.

A worker process per build (its own working directory and PYTHONPATH, so it
imports that build's pyzmq) makes one instance with exchange E bound to
queue Q through inproc (no high-water mark, so no send waits), and on each
"run" times N sends of a 1-byte message, then N receives of them, with
time.perf_counter_ns around each loop; then the floor, the same loops
calling a minimal C function instead (operator.is_not(eid, msg) for send,
an empty list's clear() for receive: a Python loop and one call of a C
function with as many arguments, nothing else).  The C worker
(perf/c/bin/percall, built as needed) does the same with zmq_send and
zmq_msg_recv on an inproc PUSH/PULL pair.  The driver asks the workers in
turn, round after round (the order reversed every other round), so all see
the same machine state, and prints the median of the rounds for each, the
ratio new/old and the differences to C.

--callgrind counts instructions instead of time (valgrind's callgrind,
repeatable on a loaded machine): each build's worker runs once per count
pair under valgrind, and the per-call figure is the difference between
runs divided by the calls; the libzmq I/O thread's idle instructions are
included (a few hundred per run).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import cpu_model, load_c_build   # a sibling module: perf/ is on sys.path when run as a script

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import operator, sys, time
import pyzmq
calls = int(sys.argv[1])
glob = sys.argv[2] == "global"
with pyzmq.ZMQ(hwm=0) as z:
    eid = z.create_exchange("E")
    if glob:
        z._exchange_listen(eid, "tcp://127.0.0.1:*")
    else:
        z.create_queue("Q")
        z.bind("E", "Q")
    send, receive, msg = z.send, z.receive, b"x"
    is_not, clear = operator.is_not, [].clear
    clock = time.perf_counter_ns
    print("ready", pyzmq.__file__, flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = clock()
        for _ in range(calls):
            send(eid, msg)
        t1 = clock()
        for _ in range(0 if glob else calls):
            receive()
        t2 = clock()
        for _ in range(0 if glob else calls):
            is_not(eid, msg)
        t3 = clock()
        for _ in range(0 if glob else calls):
            clear()
        t4 = clock()
        print((t1 - t0) / calls, (t2 - t1) / calls, (t3 - t2) / calls, (t4 - t3) / calls,
              flush=True)
"""

# --callgrind: sends, receives, floor calls of each kind, once, then exit
ONCE = r"""
import operator, sys
import pyzmq
s, r, f, g = (int(x) for x in sys.argv[1:5])
with pyzmq.ZMQ(hwm=0) as z:
    eid = z.create_exchange("E")
    z.create_queue("Q")
    z.bind("E", "Q")
    send, receive, msg = z.send, z.receive, b"x"
    is_not, clear = operator.is_not, [].clear
    for _ in range(s):
        send(eid, msg)
    for _ in range(r):
        receive()
    for _ in range(f):
        is_not(eid, msg)
    for _ in range(g):
        clear()
"""


class Worker:
    def __init__(self, label, cmd, cwd, env):
        self.label = label
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            sys.exit(f"percall: the {label} worker ({' '.join(cmd[:2])}) did not start")
        self.module = ready[1]
        self.rows = []

    def run(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        self.rows.append([float(x) for x in self.proc.stdout.readline().split()])

    def median(self, i):
        return statistics.median(r[i] for r in self.rows)

    def minimum(self, i):
        return min(r[i] for r in self.rows)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def python_worker(label, tree, calls, case):
    env = dict(os.environ, PYTHONPATH=tree)
    return Worker(label, [sys.executable, "-c", WORKER, str(calls), case], tree, env)


def c_tool():
    tools = load_c_build().build(tools=("percall",))
    return tools["percall"]


def timed(a):
    workers = [python_worker("new", os.path.abspath(a.new), a.calls, a.case)]
    if a.old:
        workers.insert(0, python_worker("old", os.path.abspath(a.old), a.calls, a.case))
    if a.case == "local" and not a.no_c:
        workers.append(Worker("C", [c_tool(), str(a.calls)], HERE, None))
    load0 = os.getloadavg()[0]
    try:
        for w in workers:
            w.run()                         # warm-up, not counted
            w.rows.clear()
        for i in range(a.rounds):
            for w in (workers if i % 2 == 0 else workers[::-1]):
                w.run()
    finally:
        for w in workers:
            w.stop()
    print(f"percall: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
          f"{os.cpu_count()} cores, load {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
          f"{a.rounds} rounds of {a.calls} calls, 1-byte messages, "
          + ("inproc binding" if a.case == "local" else "global exchange, listener only"))
    by = {w.label: w for w in workers}
    for w in workers:
        if a.case == "local":
            print(f"  {w.label:4s} send {w.median(0):7.1f} ns  receive {w.median(1):7.1f} ns"
                  f"  (min {w.minimum(0):.1f} / {w.minimum(1):.1f})  {w.module}")
        else:
            print(f"  {w.label:4s} send {w.median(0):7.1f} ns  (min {w.minimum(0):.1f})"
                  f"  {w.module}")
    if a.case == "local":
        new = by["new"]
        print(f"  floor send-shaped {new.median(2):7.1f} ns  receive-shaped {new.median(3):7.1f} ns"
              "  (a Python loop calling operator.is_not(eid, msg) / [].clear(), new's worker)")
    if a.old:
        o, n = by["old"], by["new"]
        print(f"  new/old  send {n.median(0) / o.median(0):.3f}"
              + (f"  receive {n.median(1) / o.median(1):.3f}" if a.case == "local" else "")
              + f"  (new - old: send {n.median(0) - o.median(0):+.1f} ns"
              + (f", receive {n.median(1) - o.median(1):+.1f} ns" if a.case == "local" else "")
              + ")")
    if "C" in by:
        c = by["C"]
        for w in workers:
            if w is not c:
                print(f"  {w.label:4s} - C  send {w.median(0) - c.median(0):+7.1f} ns  "
                      f"receive {w.median(1) - c.median(1):+7.1f} ns   ({w.label} - floor: send "
                      f"{w.median(0) - w.median(2):+.1f} ns, receive {w.median(1) - w.median(3):+.1f} ns)")


COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def instructions(cmd, cwd, env):
    """Instructions executed by cmd under callgrind (every thread)."""
    with tempfile.TemporaryDirectory(prefix="percall-cg-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                           cwd=cwd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"percall: valgrind failed ({p.returncode}): {p.stderr[-600:]}")
        m = COLLECTED.search(p.stderr)
        if not m:
            sys.exit(f"percall: no instruction count in valgrind's output: {p.stderr[-600:]}")
        return int(m.group(1))


def counted(a):
    n = a.calls
    rows = []
    trees = ([("old", a.old)] if a.old else []) + [("new", a.new)]
    for label, tree in trees:
        tree = os.path.abspath(tree)
        env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
        cmd = [sys.executable, "-c", ONCE]
        base = instructions([*cmd, "0", "0", "0", "0"], tree, env)
        sent = instructions([*cmd, str(n), "0", "0", "0"], tree, env)
        both = instructions([*cmd, str(n), str(n), "0", "0"], tree, env)
        floor2 = instructions([*cmd, "0", "0", str(n), "0"], tree, env)
        floor0 = instructions([*cmd, "0", "0", "0", str(n)], tree, env)
        rows.append((label, (sent - base) / n, (both - sent) / n, (floor2 - base) / n,
                     (floor0 - base) / n))
    c = c_tool()
    base = instructions([c, "--once", "0", "0"], HERE, None)
    sent = instructions([c, "--once", str(n), "0"], HERE, None)
    both = instructions([c, "--once", str(n), str(n)], HERE, None)
    print(f"percall --callgrind: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{cpu_model()}, instructions per call (differences of runs of 0 and {n} calls), "
          "1-byte messages, inproc binding")
    for label, s, r, f2, f0 in rows:
        print(f"  {label:4s} send {s:7.0f}  receive {r:7.0f}   (floor: send-shaped {f2:.0f}, "
              f"receive-shaped {f0:.0f}; above it: send {s - f2:+.0f}, receive {r - f0:+.0f})")
    print(f"  C    send {(sent - base) / n:7.0f}  receive {(both - sent) / n:7.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new", default=HERE, help="the build to measure (default: this checkout)")
    ap.add_argument("--old", help="a second build (a checkout built in place) to compare with")
    ap.add_argument("--rounds", type=int, default=15, help="rounds per build (default 15)")
    ap.add_argument("--calls", type=int, default=None,
                    help="sends and receives per round (default 200,000; 20,000 with --callgrind)")
    ap.add_argument("--case", choices=("local", "global"), default="local",
                    help="local: E bound to Q through inproc (default); global: send on a "
                         "global exchange's listener with no subscriber")
    ap.add_argument("--no-c", action="store_true", help="leave out the C worker")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per call under valgrind instead of time (local case)")
    a = ap.parse_args(argv)
    if a.calls is None:
        a.calls = 20_000 if a.callgrind else 200_000
    if a.rounds < 1 or a.calls < 1:
        ap.error("--rounds and --calls must be at least 1")
    if a.callgrind:
        if a.case != "local":
            ap.error("--callgrind counts the local case only")
        counted(a)
    else:
        timed(a)


if __name__ == "__main__":
    main()
