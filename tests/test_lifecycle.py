"""Lifecycles with a real directory: an instance collected while open."""

import gc
import os
import signal
import time

import pytest

import pyzmq
from pyzmq.directory import DirectoryClient, DirectoryError


def test_an_instance_collected_while_open_does_no_directory_io(directory_server):
    """With its zmq_server stopped (SIGSTOP: it answers nothing), dropping
    an open instance with a global name warns and returns at once: no
    UNREGISTER is sent.  The name goes with the closed connection."""
    z = pyzmq.ZMQ(directory_server.address, timeout=3)
    z.create_exchange("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    os.kill(directory_server.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.warns(ResourceWarning, match="unclosed"):
            del z
            gc.collect()
        assert time.monotonic() - t0 < 1.0     # an UNREGISTER would wait 3 s
    finally:
        os.kill(directory_server.pid, signal.SIGCONT)
    with DirectoryClient(directory_server.address, timeout=3) as c:
        deadline = time.monotonic() + 10
        while True:
            try:
                c.lookup("G")
            except DirectoryError:
                break                           # gone with its connection
            assert time.monotonic() < deadline, "the name outlived its instance"
            time.sleep(0.05)
