"""ZMQ.stats() (issue 16 item 7): the counters the C slots keep, with a real
zmq_server and a real remote binder in another process."""

import time

import pytest

import pyzmq
from pyzmq.testing import PeerProcess

BINDER = """
import sys, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as z:
    z.create_queue("in", hwm=int(sys.argv[2]))
    z.bind("pub", "in", hwm=int(sys.argv[2]))
    print("BOUND", flush=True)
    sys.stdin.readline()            # does not read until told
    n = 0
    while z.receive(timeout=3) != b"stop":
        n += 1
    print("GOT", n, flush=True)
"""


def test_local_counters():
    with pyzmq.ZMQ(hwm=0) as z:
        eid = z.create_exchange("E")
        z.create_exchange("idle")
        qid = z.create_queue("Q")
        z.create_queue("Q2")
        assert z.send(z.exchanges["idle"], b"nobody") is True
        z.bind("E", "Q")
        z.bind("E", "Q2")
        for i in range(10):
            z.send(eid, b"x" * i)
        z.send_many(eid, [b"abc"] * 5)
        z.send(eid, bytearray(7))
        for _ in range(3):
            z.receive(timeout=1)
        z.receive2(timeout=1)
        s = z.stats()
        e = s["exchanges"]["E"]
        assert (e["id"], e["sent"], e["bytes"], e["dropped"]) == (eid, 16, 45 + 15 + 7, 0)
        assert (e["bound"], e["bindings"], e["binders"]) == (2, 2, 0)
        assert e["blocked"] == 0.0
        assert s["exchanges"]["idle"]["dropped"] == 1 and s["exchanges"]["idle"]["sent"] == 0
        q, q2 = s["queues"]["Q"], s["queues"]["Q2"]
        assert q["id"] == qid and q["received"] + q2["received"] == 4
        assert q["ready"] and q2["ready"] and q["stashed"] == 0
        while z.receive(block=False) is not None:
            pass
        s = z.stats()
        assert s["queues"]["Q"]["received"] == s["queues"]["Q2"]["received"] == 16
        assert not s["queues"]["Q"]["ready"]


def test_remote_subscribers_dropped_and_blocked_time(directory):
    with pyzmq.ZMQ(directory, hwm=5) as z:
        eid = z.create_exchange("pub", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        z.send(eid, b"before")      # no binder yet: dropped
        with PeerProcess(BINDER, directory, 5) as binder:
            z.wait_bound(eid, timeout=15)
            binder.expect("BOUND")
            s = z.stats()["exchanges"]["pub"]
            assert (s["bound"], s["bindings"], s["binders"], s["dropped"]) == (1, 0, 1, 1)
            # the binder does not read: after its pipes and the kernels fill,
            # send waits at the mark, and the time is counted
            sent, t = 0, time.monotonic()
            with pytest.raises(pyzmq.Timeout):
                while time.monotonic() - t < 30:
                    z.send(eid, b"y" * 65000, timeout=0.5)
                    sent += 1
            s = z.stats()["exchanges"]["pub"]
            assert s["blocked"] >= 0.4
            assert s["sent"] == sent + 1 and s["bytes"] == 6 + 65000 * sent
            binder.tell("go")
            z.send(eid, b"stop", timeout=20)
            assert binder.expect("GOT", timeout=30) == str(sent)
