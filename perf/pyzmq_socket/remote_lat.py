"""remote_lat <connect-endpoint> <message-size> <roundtrip-count>

Baseline latency test, active side, written the way an ordinary user of the
pyzmq socket binding (import name ``zmq``) would write it: a REQ socket
connected to local_lat, ``sock.send(msg)`` then ``sock.recv()`` with the
default copy=True, roundtrip-count times, timed with time.perf_counter().
Prints the average one-way latency (half the round trip).  Same arguments,
output and exit statuses as the C reference tool perf/c/remote_lat,
including its one measurement rule: the clock starts once the connection
is up (a socket monitor reports EVENT_HANDSHAKE_SUCCEEDED), so connection
setup is never counted as latency.  (Not zmq.IMMEDIATE for that wait: with
it libzmq drops the pipe when local_lat disconnects right after its last
reply, and REQ discards that unread reply: the run then hangs.)

How to run (from anywhere, the repo root included)::

    python -I perf/pyzmq_socket/remote_lat.py tcp://127.0.0.1:5555 1 10000

Import hygiene (why ``-I``, and why this script never imports ``pyzmq``):
see _cli.py.
"""

import os
import sys
import time

_here = os.path.dirname(os.path.realpath(__file__))
if sys.path and os.path.realpath(sys.path[0] or os.curdir) in (
    _here,
    os.path.realpath(os.getcwd()),
):
    del sys.path[0]

import zmq  # noqa: E402  (the pyzmq socket binding)
import importlib.util  # noqa: E402

# the shared argument parsing, loaded by path (see _cli.py)
_spec = importlib.util.spec_from_file_location("_pyzmq_socket_cli", os.path.join(_here, "_cli.py"))
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)

TOOL = "remote_lat"


def main():
    endpoint, size, count = _cli.parse_args(TOOL, sys.argv[1:], "connect", "roundtrip-count")

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, -1)
    # Watch for the end of the handshake; monitor first, so that the event
    # cannot be missed.
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    _cli.attach(TOOL, ctx, sock, endpoint, "connect", zmq.ZMQError)
    monitor.recv_multipart()  # the only event asked for: handshake done
    sock.disable_monitor()
    monitor.close()

    msg = bytes(size)
    start = time.perf_counter()
    for i in range(count):
        sock.send(msg)
        reply = sock.recv()
        if len(reply) != size:
            _cli.fail(TOOL, ctx, f"message {i} has {len(reply)} bytes, expected {size}")
    elapsed = time.perf_counter() - start

    sock.close()
    ctx.term()

    latency = elapsed * 1e6 / (count * 2)
    print(f"message size: {size} [B]")
    print(f"roundtrip count: {count}")
    print(f"average latency: {latency:.3f} [us]")


if __name__ == "__main__":
    main()
