"""How long a remote bind() takes while the exchange's owner sleeps.

    python perf/bind_busy.py [--binds 30] [--mode sleep|compute]

Starts a real zmq_server and an owner process that creates a global
exchange and then sleeps in time.sleep (or computes in a pure-Python loop)
for the whole run, making no pyzmq call; this process then binds a new
queue to that exchange --binds times (each bind its own SUB and sync) and
prints the median and the largest time per bind.  The owner's service
thread (src/service.h) is what answers.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

import pyzmq  # noqa: E402
from pyzmq.testing import PeerProcess, ServerProcess  # noqa: E402

OWNER = """
import sys, time, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as z:
    z.create_exchange("slow", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    print("READY", flush=True)
    end = time.monotonic() + 600
    if sys.argv[2] == "sleep":
        time.sleep(600)
    else:
        while time.monotonic() < end:
            sum(i * i for i in range(1000))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binds", type=int, default=30)
    ap.add_argument("--mode", choices=("sleep", "compute"), default="sleep")
    a = ap.parse_args(argv)
    with ServerProcess(host="127.0.0.1", port=0) as server:
        owner = PeerProcess(OWNER, server.address, a.mode)
        try:
            owner.expect("READY")
            took = []
            with pyzmq.ZMQ(server.address, bind_timeout=10) as z:
                for i in range(a.binds):
                    z.create_queue(f"Q{i}")
                    t0 = time.perf_counter()
                    z.bind("slow", f"Q{i}")
                    took.append(time.perf_counter() - t0)
        finally:
            owner.close()
    ms = sorted(t * 1000 for t in took)
    print(f"bind_busy: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, owner in "
          f"{a.mode}, {a.binds} binds over loopback TCP, load {os.getloadavg()[0]:.2f}")
    print(f"  per bind: median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms, "
          f"min {ms[0]:.2f} ms")


if __name__ == "__main__":
    main()
