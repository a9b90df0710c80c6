"""Plain ZeroMQ sockets (the pyzmq socket binding) as peers of global
objects: a PUSH feeding a global queue, a SUB reading a global exchange."""

import time

import zmq as zmq_binding     # the pyzmq socket binding, as a foreign peer

import pyzmq


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
