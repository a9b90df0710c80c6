"""local_thr <bind-endpoint> <message-size> <message-count>

Baseline throughput test, receiving side, written the way an ordinary user
of the pyzmq socket binding (import name ``zmq``) would write it: a PULL
socket bound to the endpoint, ``sock.recv()`` (default copy=True) per
message, timed with time.perf_counter() from the arrival of the first
message to that of the last; the rate is message-count over that interval,
as in the C reference tool perf/c/local_thr (same arguments, output and
exit statuses).

How to run (from anywhere, the repo root included)::

    python -I perf/pyzmq_socket/local_thr.py tcp://127.0.0.1:5555 1 1000000

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

TOOL = "local_thr"


def main():
    endpoint, size, count = _cli.parse_args(TOOL, sys.argv[1:], "bind", "message-count")

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    _cli.attach(TOOL, ctx, sock, endpoint, "bind", zmq.ZMQError)

    def wrong_size(i, got):
        _cli.fail(TOOL, ctx, f"message {i} has {got} bytes, expected {size}")

    msg = sock.recv()
    start = time.perf_counter()
    if len(msg) != size:
        wrong_size(0, len(msg))
    for i in range(1, count):
        msg = sock.recv()
        if len(msg) != size:
            wrong_size(i, len(msg))
    elapsed = time.perf_counter() - start

    sock.close()
    ctx.term()

    # msg/s truncated to an integer; Mb/s derived from that integer.
    throughput = int(count / max(elapsed, 1e-9))
    megabits = throughput * size * 8 / 1e6
    print(f"message size: {size} [B]")
    print(f"message count: {count}")
    print(f"mean throughput: {throughput} [msg/s]")
    print(f"mean throughput: {megabits:.3f} [Mb/s]")


if __name__ == "__main__":
    main()
