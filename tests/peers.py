"""Run a Python snippet as a real separate process and talk to it by lines.

Tests use peers for the other side of a wiring: a real process with its own
pyzmq instance, talking to the same real zmq_server over TCP.
"""

from pathlib import Path

from pyzmq.testing import PeerProcess

ROOT = Path(__file__).resolve().parent.parent


# Prepended to a peer script: next_command(z) serves instance z's listeners
# (so remote binders get in) until a line arrives on stdin, and returns it.
COMMANDS = """
import queue as _queue, sys as _sys, threading as _threading
_lines = _queue.Queue()
_threading.Thread(target=lambda: [_lines.put(l.strip()) for l in _sys.stdin], daemon=True).start()


def next_command(z, every=0.02):
    while True:
        z.serve(every)
        try:
            return _lines.get_nowait()
        except _queue.Empty:
            pass
"""


# A peer is pyzmq.testing's PeerProcess (perf/netns.py starts the same kind
# inside a network namespace).
Peer = PeerProcess


def wait_name_free(directory, name, timeout=10.0):
    """Wait until the directory at ``directory`` holds no ``name`` (a killed
    owner's names go when its lease expires, within the lease TTL)."""
    import time
    from pyzmq import protocol as p
    from pyzmq.directory import DirectoryClient, DirectoryError
    deadline = time.monotonic() + timeout
    with DirectoryClient(directory, timeout=3.0) as client:
        while True:
            try:
                client.lookup(name)
            except DirectoryError as exc:
                if exc.code == p.NOT_FOUND:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name!r} still registered {timeout:g} s later")
            time.sleep(0.05)
