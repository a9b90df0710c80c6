"""What the four baseline scripts share: argument parsing with the C tools'
rules, and attaching the socket with their error exits.

Loaded by each script from its own directory by file path (never through
sys.path), after the script has imported ``zmq``, so neither this file nor a
stray module elsewhere can shadow the binding.

Import hygiene: this repository holds our own package, import name
``pyzmq`` (the ØMQ 0.3 wiring API), while the binding measured here is the
PyPI distribution "pyzmq" whose import name is ``zmq``.  The scripts only
ever import ``zmq``.  ``-I`` (isolated mode) keeps the script's directory,
the current directory, PYTHONPATH and the user site-packages off sys.path,
so only the interpreter's own site-packages (the venv's) can provide
``zmq``.  Without ``-I`` each script drops the entry Python put first on
sys.path (its own directory, or the current directory under ``-c``/``-m``)
before importing, so a stray zmq.py there cannot shadow the binding either;
PYTHONPATH is then honoured as the user set it.
"""

import sys


def usage(tool, role, count_name):
    return (f"usage: {tool} <{role}-endpoint> <message-size> <{count_name}>\n"
            "  message-size: bytes per message, 0..2147483647\n"
            f"  {count_name}: 1..9223372036854775807")


def parse_args(tool, argv, role, count_name):
    """(endpoint, size, count); on bad arguments print usage and exit 2.

    role is "bind" or "connect", count_name "message-count" or
    "roundtrip-count" (they only change the usage text)."""

    def bad(problem=None):
        if problem:
            print(f"{tool}: {problem}", file=sys.stderr)
        print(usage(tool, role, count_name), file=sys.stderr)
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


def fail(tool, ctx, text):
    """Print ``tool: text``, drop everything queued, exit 1."""
    print(f"{tool}: {text}", file=sys.stderr)
    ctx.destroy(linger=0)
    sys.exit(1)


def attach(tool, ctx, sock, endpoint, role, error):
    """Bind or connect (role) sock to endpoint; exit 1 saying why on failure.
    error is the binding's exception class (zmq.ZMQError)."""
    try:
        (sock.bind if role == "bind" else sock.connect)(endpoint)
    except error as exc:
        fail(tool, ctx, f"cannot {role} to {endpoint}: {exc}")
