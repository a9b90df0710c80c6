"""Shared fixtures: a real zmq_server child process on 127.0.0.1 and a free port."""

import os
import sys

import pytest

# Import the package from this checkout (built in place), not from anywhere else.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != REPO_ROOT:
    sys.path.insert(0, REPO_ROOT)

from pyzmq.testing import ServerProcess  # noqa: E402


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
