"""local_lat <bind-endpoint> <message-size> <roundtrip-count>

Baseline latency test, passive side, written the way an ordinary user of the
pyzmq socket binding (import name ``zmq``) would write it: a REP socket
bound to the endpoint, ``sock.recv()`` then ``sock.send(msg)`` with the
default copy=True, roundtrip-count times.  Prints nothing; remote_lat.py
does the timing.  Same arguments, output and exit statuses (2 for bad
arguments, 1 for a runtime failure such as a wrong message size) as the C
reference tool perf/c/local_lat.

How to run (from anywhere, the repo root included)::

    python -I perf/pyzmq_socket/local_lat.py tcp://127.0.0.1:5555 1 10000

Import hygiene (why ``-I``, and why this script never imports ``pyzmq``):
see _cli.py.
"""

import os
import sys

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

TOOL = "local_lat"


def main():
    endpoint, size, count = _cli.parse_args(TOOL, sys.argv[1:], "bind", "roundtrip-count")

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, -1)  # deliver the last reply before exiting
    _cli.attach(TOOL, ctx, sock, endpoint, "bind", zmq.ZMQError)

    for i in range(count):
        msg = sock.recv()
        if len(msg) != size:
            _cli.fail(TOOL, ctx, f"message {i} has {len(msg)} bytes, expected {size}")
        sock.send(msg)

    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
