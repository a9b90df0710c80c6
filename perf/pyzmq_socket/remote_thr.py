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

Import hygiene: this repository holds our own package, import name
``pyzmq`` (the ØMQ 0.3 wiring API), while the binding measured here is the
PyPI distribution "pyzmq" whose import name is ``zmq``.  This script only
ever imports ``zmq``.  ``-I`` (isolated mode) keeps the script's directory,
the current directory, PYTHONPATH and the user site-packages off sys.path,
so only the interpreter's own site-packages (the venv's) can provide
``zmq``.  Without ``-I`` the script drops the entry Python put first on
sys.path (its own directory, or the current directory under ``-c``/``-m``)
before importing, so a stray zmq.py there cannot shadow the binding either;
PYTHONPATH is then honoured as the user set it.
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

TOOL = "remote_thr"
USAGE = (
    f"usage: {TOOL} <connect-endpoint> <message-size> <message-count>\n"
    "  message-size: bytes per message, 0..2147483647\n"
    "  message-count: 1..9223372036854775807"
)


def parse_args(argv):
    """(endpoint, size, count); on bad arguments print usage and exit 2."""

    def bad(problem=None):
        if problem:
            print(f"{TOOL}: {problem}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(2)

    def number(text, lowest, highest):
        # ASCII decimal digits only, as the C tools accept (no sign, space,
        # underscore); the length cap keeps int() away from huge strings.
        if not (text.isascii() and text.isdigit() and len(text) <= 20):
            return None
        value = int(text)
        return value if lowest <= value <= highest else None

    if len(argv) != 3:
        bad()
    endpoint = argv[0]
    if not endpoint:
        bad("endpoint must not be empty")
    size = number(argv[1], 0, 2**31 - 1)
    if size is None:
        bad("invalid message-size")
    count = number(argv[2], 1, 2**63 - 1)
    if count is None:
        bad("invalid count")
    return endpoint, size, count


def main():
    endpoint, size, count = parse_args(sys.argv[1:])

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, -1)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        print(f"{TOOL}: cannot connect to {endpoint}: {exc}", file=sys.stderr)
        ctx.destroy(linger=0)
        sys.exit(1)

    msg = bytes(size)
    for _ in range(count):
        sock.send(msg)

    sock.close()
    ctx.term()  # returns once every queued message has been sent


if __name__ == "__main__":
    main()
