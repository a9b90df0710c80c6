"""serve(): an owner that only serves its listeners lets a remote binder in."""

import threading

import pytest

import pyzmq


def test_serve_lets_a_binder_in(directory):
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
    with pyzmq.ZMQ() as zmq, pytest.raises(TypeError):
        zmq.serve(None)
