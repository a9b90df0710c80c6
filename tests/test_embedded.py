"""pyzmq.Directory, the embedded zmq_server, and the lifeline that makes a
server child (Directory or testing.ServerProcess) stop with its owner.

Real processes throughout: the owner is a child Python process that we
SIGKILL, and we watch its zmq_server (our grandchild) go.
"""

import os
import signal
import socket
import threading
import time

import pytest

import pyzmq
from pyzmq.testing import PeerProcess, ServerProcess

from helpers import gone, wait_gone


def test_directory_is_a_real_server_and_stops_with_its_block():
    with pyzmq.Directory() as directory:
        assert directory.running
        assert directory.address == f"127.0.0.1:{directory.port}" and directory.port > 0
        with pyzmq.ZMQ(directory.address) as owner, pyzmq.ZMQ(directory.address) as binder:
            eid = owner.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            binder.create_queue("Q")
            binder.bind("E", "Q")       # looked up in the directory, wired over TCP
            owner.send(eid, b"through the embedded directory")
            assert binder.receive(timeout=5) == b"through the embedded directory"
        pid = directory.pid
    assert not directory.running and gone(pid)
    with pytest.raises(pyzmq.DirectoryUnreachable):
        pyzmq.ZMQ(directory.address, timeout=1)
    directory.close()       # idempotent


def test_directory_without_with_and_its_errors():
    directory = pyzmq.Directory()
    try:
        assert "running" in repr(directory)
        with socket.socket() as s:
            s.connect(("127.0.0.1", directory.port))        # it listens
        with pytest.raises(pyzmq.Error, match="did not start") as info:
            pyzmq.Directory(port=directory.port)            # that port is taken
        assert "in use" in str(info.value)                  # with what the server said
        assert "exited with status" in str(info.value)      # at once, not "within 10 s"
        assert "within" not in str(info.value)
    finally:
        directory.close()
    assert "stopped" in repr(directory)
    with pytest.raises(ValueError):
        pyzmq.Directory(port=70000)
    with pytest.raises(TypeError):
        pyzmq.Directory(host=1)


OWNERS = {
    "Directory": """
        import os, sys, time, pyzmq
        d = pyzmq.Directory()
        print("server", d.pid, flush=True)
        time.sleep(600)
    """,
    # a script that starts a test server and never stops it
    "ServerProcess": """
        import os, sys, time
        from pyzmq.testing import ServerProcess
        s = ServerProcess().start()
        print("server", s.pid, flush=True)
        time.sleep(600)
    """,
    # a forked copy of the owner keeps the pipe's write end open: the
    # server must still go when the owner dies (Linux: parent-death signal)
    "Directory, forked copy": """
        import os, sys, time, pyzmq
        d = pyzmq.Directory()
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        print("fork", pid, flush=True)
        print("server", d.pid, flush=True)
        time.sleep(600)
    """,
}


@pytest.mark.parametrize("kind", list(OWNERS))
def test_server_child_stops_when_its_owner_is_sigkilled(kind):
    with PeerProcess(OWNERS[kind]) as owner:
        fork = int(owner.expect("fork")) if "fork" in kind else None
        server = int(owner.expect("server"))
        try:
            assert not gone(server)
            time.sleep(0.3)
            assert not gone(server)         # it does not stop by itself
            owner.proc.send_signal(signal.SIGKILL)
            owner.proc.wait(5)
            assert wait_gone(server), f"zmq_server {server} outlived its SIGKILLed owner ({kind})"
        finally:
            for pid in (server, fork):
                if pid is not None and not gone(pid):
                    os.kill(pid, signal.SIGKILL)


def test_server_outlives_the_thread_that_started_it():
    """Linux's parent-death signal fires when the starting *thread* ends:
    the server must ignore it while this process lives."""
    box = {}

    def start():
        box["server"] = ServerProcess(quiet=True).start()

    t = threading.Thread(target=start)
    t.start()
    t.join()
    server = box["server"]
    try:
        time.sleep(0.5)
        assert server.running
        with pyzmq.ZMQ(server.address) as zmq:
            zmq.create_queue("still-here", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    finally:
        server.stop()


def test_stopped_server_process_leaves_no_pipe_behind():
    server = ServerProcess(quiet=True).start()
    proc = server.proc
    server.stop()
    assert proc.stdin.closed


def test_exit_with_parent_needs_a_pipe_on_stdin():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "pyzmq.server", "--exit-with-parent",
                           "--port", "0", "127.0.0.1"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--exit-with-parent: stdin must be a pipe" in proc.stderr


def test_closing_the_pipe_stops_the_server():
    """What close() and the owner's death have in common: end of file on stdin."""
    directory = pyzmq.Directory()
    directory._proc.stdin.close()
    assert directory._proc.wait(10) == 0          # a clean stop, not a kill


def test_a_second_directory_leaves_the_first_running():
    """A notebook cell `directory = pyzmq.Directory()` run again
    (docs/notebooks.md): a second server on another port; the first, and an
    instance connected to it, keep working until it is closed."""
    first = pyzmq.Directory()
    try:
        with pyzmq.ZMQ(first.address) as zmq:
            zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            with pyzmq.Directory() as second:
                assert second.address != first.address and first.running
                assert zmq.names() == ["Q"]
                with pyzmq.ZMQ(second.address) as other:
                    assert other.names() == []
    finally:
        first.close()
    assert not first.running
