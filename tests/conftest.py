"""Shared fixtures: a real zmq_server child process on 127.0.0.1, and a
check around every test that it leaves nothing of the library behind."""

import os
import sys

import pytest

# Import the package from this checkout (built in place), not from anywhere else.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != REPO_ROOT:
    sys.path.insert(0, REPO_ROOT)

from helpers import Snapshot  # noqa: E402
from pyzmq.testing import ServerProcess  # noqa: E402


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    """Fail a test that leaves instances open, threads running (relays,
    directory keepers, peer readers...) or zero-copy loans outstanding.

    Threads get a short grace to end (a closed relay or keeper stops on its
    own); the process-wide ZAP handler thread is allowed.  Set up before
    and torn down after the test's other function fixtures, so what a
    fixture opens and closes (a zmq_server, an instance) is not counted."""
    before = Snapshot()
    yield
    leaks = before.leaks()
    if leaks:
        pytest.fail("the test left behind: " + "; ".join(leaks), pytrace=False)


@pytest.fixture
def directory_server():
    """A running zmq_server (a :class:`pyzmq.testing.ServerProcess`), stopped afterwards."""
    server = ServerProcess(host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def directory(directory_server):
    """The "127.0.0.1:PORT" address of a running zmq_server."""
    return directory_server.address
