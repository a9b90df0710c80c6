"""How long close() takes after TCP sends that were all delivered.

    python perf/close_time.py                       # this build
    python perf/close_time.py --old ../oldbuild     # and another, alternately

One real zmq_server and one consumer process (a global queue that reads
everything) are shared by every round.  Each round runs a fresh producer
process per build (old first or new first, alternately): `--closes` times
it makes an instance, binds an exchange to the consumer's queue over TCP,
sends 10 messages of 4 KiB, sleeps 50 ms (on loopback they were delivered
long before), and times close().  Prints each round's median per build,
then the median of the rounds and the ratio new/old.  --old is a checkout
(or a copy of its pyzmq/ package) built in place.
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pyzmq.testing import PeerProcess, ServerProcess  # noqa: E402

CONSUMER = """
import sys, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as z:
    z.create_queue("sink", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    print("READY", flush=True)
    n = 0
    while True:
        try:
            z.receive(timeout=0.5)
            n += 1
        except pyzmq.Timeout:
            if sys.stdin.closed:
                break
"""

PRODUCER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import pyzmq
directory, closes = sys.argv[2], int(sys.argv[3])
msg = b"m" * 4096
took = []
for i in range(closes):
    z = pyzmq.ZMQ(directory)
    eid = z.create_exchange("E")
    z.bind("E", "sink")
    for _ in range(10):
        z.send(eid, msg, timeout=5)
    time.sleep(0.05)
    t = time.perf_counter()
    left = z.close()
    took.append(time.perf_counter() - t)
    assert left == 0, left
print(pyzmq.__file__, flush=True)
print(" ".join("%.6f" % s for s in took), flush=True)
"""


def run(tree, directory, closes):
    out = subprocess.run([sys.executable, "-c", PRODUCER, tree, directory, str(closes)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the producer of {tree} failed:\n{out.stderr}")
    where, times = out.stdout.strip().splitlines()[-2:]
    if not os.path.abspath(where).startswith(os.path.abspath(tree)):
        raise SystemExit(f"{tree}: imported pyzmq from {where}, not from that build")
    return [float(x) for x in times.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", help="a second build to compare with (its checkout directory)")
    ap.add_argument("--new", default=os.path.dirname(HERE), help="this build (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--closes", type=int, default=20, help="closes per producer process")
    a = ap.parse_args()
    trees = ([("old", a.old)] if a.old else []) + [("new", a.new)]
    medians = {name: [] for name, _ in trees}
    server = ServerProcess(host="127.0.0.1", port=0)
    server.start()
    try:
        with PeerProcess(CONSUMER, server.address) as consumer:
            consumer.expect("READY")
            for r in range(a.rounds):
                order = trees if r % 2 == 0 else trees[::-1]
                line = []
                for name, tree in order:
                    m = statistics.median(run(tree, server.address, a.closes))
                    medians[name].append(m)
                    line.append(f"{name} {m * 1000:8.2f} ms")
                print(f"round {r + 1}: " + "   ".join(line), flush=True)
    finally:
        server.stop()
    print(f"close() after delivered TCP sends, median of {a.rounds} rounds "
          f"(each the median of {a.closes} closes):")
    for name, _ in trees:
        print(f"  {name}: {statistics.median(medians[name]) * 1000:.2f} ms")
    if a.old:
        print(f"  new/old: {statistics.median(medians['new']) / statistics.median(medians['old']):.3f}")
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
