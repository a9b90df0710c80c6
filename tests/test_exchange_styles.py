"""Exchange styles: load balancing (round-robin over the bound queues with
room) beside data distribution, and bad style arguments."""

import pytest

import pyzmq


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
