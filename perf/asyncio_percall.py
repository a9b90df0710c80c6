"""ns per ``await receive()`` and per ``await send()`` of pyzmq.asyncio, this
checkout's asyncio.py beside another revision's (default: main), over the
same C core, in alternating rounds in one process.

    .venv/bin/python perf/asyncio_percall.py [--old-rev main] [--case local|global]

Each round: N sends (``await send``, never waiting: the queue's mark is
above N), then N receives (``await receive``, a message always there),
timed apart; then the same N awaits of a coroutine that does nothing (the
loop's floor: what any coroutine call costs).  ``--case global`` makes the
exchange global (an embedded directory, a listener and its service
thread), where the old receive's ``serve(0)`` took the listener lock on
every try.  Prints the medians per build and new/old.
"""

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

import pyzmq  # noqa: E402
import pyzmq.asyncio  # noqa: E402


def load_old(rev):
    """pyzmq/asyncio.py of git revision rev, as module pyzmq._asyncio_old."""
    source = subprocess.run(["git", "-C", HERE, "show", f"{rev}:pyzmq/asyncio.py"],
                            check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        spec = importlib.util.spec_from_file_location("pyzmq._asyncio_old", f.name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.unlink(f.name)
    return module


async def make(cls, case, address, n, name):
    if case == "global":
        z = await cls.connect(address, hwm=n + 10)
        eid = await z.create_exchange(name, pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    else:
        z = cls(hwm=n + 10)
        eid = await z.create_exchange(name)
    await z.create_queue("Q")
    await z.bind(name, "Q")
    return z, eid


async def one_round(z, eid, n):
    """(ns per send, ns per receive) over n calls each."""
    msg = b"x"
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await z.send(eid, msg)
    t1 = time.perf_counter_ns()
    for _ in range(n):
        await z.receive()
    t2 = time.perf_counter_ns()
    return (t1 - t0) / n, (t2 - t1) / n


async def nothing():
    return None


async def floor_round(n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await nothing()
    return (time.perf_counter_ns() - t0) / n


async def main(args, old_cls, address):
    builds = {"old": old_cls, "new": pyzmq.asyncio.ZMQ}
    made = {name: await make(cls, args.case, address, args.calls, "E." + name) for name, cls in builds.items()}
    sends = {name: [] for name in builds}
    receives = {name: [] for name in builds}
    floor = []
    try:
        for name, (z, eid) in made.items():      # warm up
            await one_round(z, eid, args.calls)
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in order:
                z, eid = made[name]
                s, rc = await one_round(z, eid, args.calls)
                sends[name].append(s)
                receives[name].append(rc)
            floor.append(await floor_round(args.calls))
    finally:
        for z, _ in made.values():
            await z.close()
    return sends, receives, floor


def run():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-rev", default="main", help="git revision of pyzmq/asyncio.py to compare with")
    ap.add_argument("--case", choices=("local", "global"), default="local")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    old = load_old(args.old_rev)
    directory = pyzmq.Directory() if args.case == "global" else None
    try:
        sends, receives, floor = asyncio.run(
            main(args, old.ZMQ, directory.address if directory else None))
    finally:
        if directory is not None:
            directory.close()
    load = os.getloadavg()
    print(f"pyzmq.asyncio per call, case {args.case}, {args.rounds} rounds of {args.calls} "
          f"calls, alternating; old = {args.old_rev}:pyzmq/asyncio.py; "
          f"load {load[0]:.2f} {load[1]:.2f}")
    print(f"{'':10}{'old ns':>10}{'new ns':>10}{'new/old':>10}")
    for what, table in (("send", sends), ("receive", receives)):
        o, n = statistics.median(table["old"]), statistics.median(table["new"])
        print(f"{what:10}{o:10.1f}{n:10.1f}{n / o:10.3f}")
    print(f"{'floor':10}{statistics.median(floor):10.1f}   (await of a coroutine that does nothing)")


if __name__ == "__main__":
    run()
