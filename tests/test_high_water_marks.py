"""High-water marks per binding and per queue, beside the instance's."""

import pytest

import pyzmq


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
