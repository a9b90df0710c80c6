"""remote_thr <connect-endpoint> <message-size> <message-count>

Baseline throughput test, sending side, written the way an ordinary user of
the pyzmq socket binding (import name ``zmq``) would write it: a PUSH
socket connected to local_thr, one ``sock.send(msg)`` per message with the
default copy=True (pyzmq copies the bytes object into a fresh libzmq
message on every send).  Prints nothing; local_thr does the timing.
Linger is -1, so closing waits until every message is on the wire.  Same
arguments and exit statuses as the C reference tool perf/c/remote_thr
(which, unlike this script, leaves its payloads unwritten).

How to run (from anywhere, the repo root included)::

    python -I perf/pyzmq_socket/remote_thr.py tcp://127.0.0.1:5555 1 1000000

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

TOOL = "remote_thr"


def main():
    endpoint, size, count = _cli.parse_args(TOOL, sys.argv[1:], "connect", "message-count")

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, -1)
    _cli.attach(TOOL, ctx, sock, endpoint, "connect", zmq.ZMQError)

    msg = bytes(size)
    for _ in range(count):
        sock.send(msg)

    sock.close()
    ctx.term()  # returns once every queued message has been sent


if __name__ == "__main__":
    main()
