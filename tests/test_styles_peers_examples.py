"""Load balancing, plain ZeroMQ peers, serve(), and the examples."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq as zmq_binding     # the pyzmq socket binding, as a foreign peer

import pyzmq

ROOT = Path(__file__).resolve().parent.parent


def test_load_balancing_round_robin():
    with pyzmq.ZMQ() as zmq:
        eid = zmq.create_exchange("jobs", style=pyzmq.STYLE_LOAD_BALANCING)
        qids = [zmq.create_queue(f"w{i}") for i in range(3)]
        for i in range(3):
            zmq.bind("jobs", f"w{i}")
        for n in range(300):
            zmq.send(eid, b"%d" % n)
        got = {q: [] for q in qids}
        for _ in range(300):
            qid, m = zmq.receive2(timeout=1)
            got[qid].append(int(m))
        assert [len(v) for v in got.values()] == [100, 100, 100]
        assert sorted(sum(got.values(), [])) == list(range(300))
        assert zmq.receive(block=False) is None


def test_load_balancing_blocks_only_when_every_queue_is_full():
    with pyzmq.ZMQ(hwm=5) as zmq:
        eid = zmq.create_exchange("jobs", style=pyzmq.STYLE_LOAD_BALANCING)
        for i in range(2):
            zmq.create_queue(f"w{i}")
            zmq.bind("jobs", f"w{i}")
        sent = 0
        while zmq.send(eid, b"j", block=False):
            sent += 1
            assert sent < 1000
        assert sent >= 10          # both queues filled before it refused
        with pytest.raises(pyzmq.Timeout):
            zmq.send(eid, b"j", timeout=0.1)
        assert len(zmq.receive_many(sent + 10, timeout=1)) >= 1


def test_style_errors():
    with pyzmq.ZMQ() as zmq:
        with pytest.raises(ValueError, match="style"):
            zmq.create_exchange("E", style=9)
        with pytest.raises(TypeError, match="style"):
            zmq.create_exchange("E", style="lb")


def test_plain_push_peer_feeds_a_global_queue(directory):
    with pyzmq.ZMQ(directory) as zmq:
        zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        address = zmq._objects["Q"].address
        ctx = zmq_binding.Context()
        push = ctx.socket(zmq_binding.PUSH)
        push.connect(f"tcp://{address}")
        for i in range(100):
            push.send(b"%d" % i)
        assert [zmq.receive(timeout=5) for _ in range(100)] == [b"%d" % i for i in range(100)]
        push.close(0)
        ctx.term()


def test_plain_sub_peer_reads_a_global_exchange(directory):
    with pyzmq.ZMQ(directory) as zmq:
        eid = zmq.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        address = zmq._objects["E"].address
        ctx = zmq_binding.Context()
        sub = ctx.socket(zmq_binding.SUB)
        sub.setsockopt(zmq_binding.SUBSCRIBE, b"")
        sub.connect(f"tcp://{address}")
        # a plain SUB has no bind handshake: like any late joiner it sees
        # what is sent after its subscription arrives
        deadline = time.monotonic() + 5
        while not sub.poll(10):
            zmq.send(eid, b"hello")
            assert time.monotonic() < deadline
        assert sub.recv() == b"hello"
        sub.close(0)
        ctx.term()


def test_serve_lets_a_binder_in(directory):
    import threading
    bound = threading.Event()
    with pyzmq.ZMQ(directory) as owner:
        eid = owner.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        got = []

        def binder():
            with pyzmq.ZMQ(directory) as zmq:
                zmq.create_queue("Q")
                zmq.bind("E", "Q")
                bound.set()
                got.append(zmq.receive(timeout=5))

        t = threading.Thread(target=binder)
        t.start()
        while not bound.is_set():
            owner.serve(0.01)
        owner.send(eid, b"first")
        t.join(10)
        assert got == [b"first"]
    with pytest.raises(TypeError):
        pyzmq.ZMQ().serve(None)


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(example):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "examples" / example)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def _fill(zmq, eid):
    sent = 0
    while zmq.send(eid, b"x", block=False):
        sent += 1
        assert sent < 100_000
    return sent


def test_per_binding_and_per_queue_high_water_marks():
    with pyzmq.ZMQ(hwm=1000) as zmq:
        small = zmq.create_exchange("small")
        zmq.create_queue("Q")
        zmq.bind("small", "Q", hwm=5)
        # PUSH side 5 plus the queue's side (the instance's 1000)
        assert 5 <= _fill(zmq, small) <= 1005 + 5
        big = zmq.create_exchange("big")
        zmq.create_queue("R", hwm=3)
        zmq.bind("big", "R")             # takes the queue's mark: 3 each side
        assert 3 <= _fill(zmq, big) <= 10
        with pytest.raises(ValueError, match="hwm"):
            zmq.bind("big", "Q", hwm=-1)
        with pytest.raises(TypeError, match="hwm"):
            zmq.create_queue("S", hwm="lots")
        # asking again with other arguments is the usual error
        with pytest.raises(pyzmq.Error, match="already exists"):
            zmq.create_queue("R", hwm=4)
