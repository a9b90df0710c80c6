"""Nanoseconds per send() and per receive() on a local binding, per build.

    python perf/percall.py                          # this checkout alone
    python perf/percall.py --old ../oldbuild        # old and new, alternately
    python perf/percall.py --case global --old ../oldbuild

--case global times send() on a global exchange instead: an exchange whose
only socket is its listener (an XPUB at a loopback TCP port, set up with
the C core's _exchange_listen, so no directory is needed) with no
subscriber, so every send is the listener fast path (which takes the
service thread's lock) and libzmq drops the message; receive is not timed.

A worker process per build (its own working directory and PYTHONPATH, so it
imports that build's pyzmq) makes one instance with exchange E bound to
queue Q through inproc (no high-water mark, so no send waits), and on each
"run" times N sends of a 1-byte message, then N receives of them, with
time.perf_counter_ns around each loop.  The driver asks the workers in
turn, round after round, so both see the same machine state, and prints the
median of the rounds for each build and the ratio new/old.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from benchlib import cpu_model     # a sibling module: perf/ is on sys.path when run as a script

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import sys, time
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
        print((t1 - t0) / calls, (t2 - t1) / calls, flush=True)
"""


class Worker:
    def __init__(self, label, tree, calls, case):
        self.label = label
        env = dict(os.environ, PYTHONPATH=tree)
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(calls), case], cwd=tree,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            sys.exit(f"percall: the {label} worker in {tree} did not start")
        self.module = ready[1]
        self.send_ns, self.recv_ns = [], []

    def run(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        s, r = (float(x) for x in self.proc.stdout.readline().split())
        self.send_ns.append(s)
        self.recv_ns.append(r)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new", default=HERE, help="the build to measure (default: this checkout)")
    ap.add_argument("--old", help="a second build (a checkout built in place) to compare with")
    ap.add_argument("--rounds", type=int, default=15, help="rounds per build (default 15)")
    ap.add_argument("--calls", type=int, default=200_000, help="sends and receives per round")
    ap.add_argument("--case", choices=("local", "global"), default="local",
                    help="local: E bound to Q through inproc (default); global: send on a "
                         "global exchange's listener with no subscriber")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.calls < 1:
        ap.error("--rounds and --calls must be at least 1")
    workers = [Worker("new", os.path.abspath(a.new), a.calls, a.case)]
    if a.old:
        workers.insert(0, Worker("old", os.path.abspath(a.old), a.calls, a.case))
    try:
        for w in workers:
            w.run()                         # warm-up, not counted
            w.send_ns.clear()
            w.recv_ns.clear()
        for i in range(a.rounds):
            for w in (workers if i % 2 == 0 else workers[::-1]):
                w.run()
    finally:
        for w in workers:
            w.stop()
    print(f"percall: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_model()}, "
          f"{a.rounds} rounds of {a.calls} calls, 1-byte messages, "
          + ("inproc binding" if a.case == "local" else "global exchange, listener only"))
    med = {}
    for w in workers:
        med[w.label] = (statistics.median(w.send_ns), statistics.median(w.recv_ns))
        if a.case == "local":
            print(f"  {w.label:4s} send {med[w.label][0]:7.1f} ns  receive {med[w.label][1]:7.1f} ns"
                  f"  (min {min(w.send_ns):.1f} / {min(w.recv_ns):.1f})  {w.module}")
        else:
            print(f"  {w.label:4s} send {med[w.label][0]:7.1f} ns  (min {min(w.send_ns):.1f})"
                  f"  {w.module}")
    if a.old:
        print(f"  new/old  send {med['new'][0] / med['old'][0]:.3f}"
              + (f"  receive {med['new'][1] / med['old'][1]:.3f}" if a.case == "local" else "")
              + f"  (new - old: send {med['new'][0] - med['old'][0]:+.1f} ns)")


if __name__ == "__main__":
    main()
