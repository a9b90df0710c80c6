"""What several test files need: the checkout's paths, free ports, polling
until something holds, a child-process environment, peer processes, and
the snapshot the leak check (conftest.py) takes around every test.

Import it as ``from helpers import ...`` (pytest puts tests/ on sys.path).
"""

import os
import socket
import threading
import time
import weakref
from pathlib import Path

import pytest

import pyzmq
from pyzmq import wiring
from pyzmq.testing import PeerProcess

ROOT = Path(__file__).resolve().parent.parent      # the checkout
PERF = ROOT / "perf"


def free_port(host="127.0.0.1"):
    """A TCP port on `host` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05):
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def process_state(pid):
    """The state letter of process ``pid`` in /proc (R, S, T, Z, ...), or
    None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):     # reaped before or while read
        return None


def gone(pid):
    """True when process ``pid`` has exited (a zombie not reaped yet counts)."""
    return process_state(pid) in (None, "Z", "X")


def wait_gone(pid, timeout=10.0):
    """Wait up to ``timeout`` for process ``pid`` to exit; whether it did."""
    return wait_until(lambda: gone(pid), timeout)


def close_in_forked_child(engine, timeout=10.0):
    """Fork; the child closes ``engine`` (its parent's, so it must only
    forget its sockets) and exits 0 when the engine then reads as closed, 2
    when not, 1 on an exception.  Returns the child's exit code; fails the
    test when the child hangs for ``timeout`` seconds."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            engine._close()
            code = 0 if engine.closed else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung closing its parent's engine")
        time.sleep(0.02)


def child_env(**extra):
    """os.environ for a child Python process that imports pyzmq from this
    checkout (the checkout first on PYTHONPATH), plus `extra`."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def loans_back(loans=0, timeout=2.0):
    """Whether the bytes lent to libzmq for zero-copy sends are all handed
    back (down to `loans` outstanding) within `timeout` seconds."""
    def settled():
        pyzmq._zmq._collect_loans()
        return pyzmq._zmq._loans_outstanding() <= loans
    return wait_until(settled, timeout, interval=0.01)


# ------------------------------------------------------------ peer processes

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

# A peer is pyzmq.testing's PeerProcess: a Python snippet in a real child
# process, talked to by lines (perf/netns.py starts the same kind inside a
# network namespace).
Peer = PeerProcess


def wait_name_free(directory, name, timeout=10.0):
    """Wait until the directory at ``directory`` holds no ``name`` (a killed
    owner's names go when its lease expires, within the lease TTL)."""
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


# ------------------------------------------------------------ leak check

# Threads that live for the whole process by design, not for one test: the
# ZAP handler (started by the first CURVE instance, stopped at exit).
PROCESS_THREADS = frozenset({"pyzmq-wiring ZAP"})


class Snapshot:
    """What the library holds at one moment: bytes lent to libzmq, running
    threads, open instances.  ``leaks()`` says what appeared since."""

    def __init__(self):
        self.loans = pyzmq._zmq._loans_outstanding()
        self.threads = set(threading.enumerate())
        self.instances = weakref.WeakSet(wiring._live)

    def new_instances(self):
        """Instances opened since the snapshot and not closed."""
        return [z for z in list(wiring._live) if z not in self.instances and not z.closed]

    def new_threads(self, grace):
        """Threads started since the snapshot still running after `grace` seconds."""
        deadline = time.monotonic() + grace
        left = []
        for t in threading.enumerate():
            if t in self.threads or t is threading.current_thread() or t.name in PROCESS_THREADS:
                continue
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                left.append(t)
        return left

    def leaks(self, grace=2.0):
        """A list of what is left over, as sentences; leftover instances
        are closed (so that one leak does not spill into the next test)."""
        found = []
        instances = self.new_instances()
        if instances:
            found.append(f"{len(instances)} instance(s) left open: " +
                         ", ".join(_describe(z) for z in instances))
            for z in instances:
                try:
                    z.close()
                except Exception as e:  # noqa: BLE001 - reported with the leak
                    found.append(f"closing {_describe(z)} failed: {e!r}")
        threads = self.new_threads(grace)
        if threads:
            found.append(f"{len(threads)} thread(s) still running {grace:g} s after the test: " +
                         ", ".join(repr(t.name) for t in threads))
        if not loans_back(self.loans, timeout=grace):
            found.append(f"{pyzmq._zmq._loans_outstanding() - self.loans} zero-copy loan(s) "
                         f"outstanding {grace:g} s after the test (bytes lent to libzmq and "
                         f"never handed back)")
        return found


def _describe(z):
    names = ", ".join(sorted(getattr(z, "_objects", {}))) or "no objects"
    return f"{type(z).__module__}.{type(z).__qualname__} ({names})"


def check_zmq_names_watch(directory, client):
    """Run ``zmq_names -d directory watch 'watched.*'``, in text and with
    ``--json``, while ``client`` (a directory backend of that directory)
    registers, moves and withdraws names; assert the same lines for either
    backend: the snapshot, then one line per change, nothing of other names."""
    import json
    import signal
    import subprocess
    import sys
    client.register("E", "watched.a", "127.0.0.1:1")
    for as_json in (False, True):
        args = [sys.executable, "-m", "pyzmq.names", "-d", directory, "watch", "watched.*"]
        proc = subprocess.Popen(args + (["--json"] if as_json else []), env=child_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
            reader.start()
            assert wait_until(lambda: lines, 15), proc.stderr.read() if proc.poll() is not None else "no line"
            client.register("Q", "watched.b", "127.0.0.1:2")
            client.register("E", "not-watched", "127.0.0.1:9")
            client.register("E", "watched.a", "127.0.0.1:3")     # moved
            client.unregister("watched.a")
            client.unregister("watched.b")
            client.unregister("not-watched")
            assert wait_until(lambda: len(lines) >= 5, 10), lines
            time.sleep(0.3)                                      # (nothing more comes)
            if as_json:
                got = [json.loads(line) for line in lines]
                assert all(set(d) == {"event", "name", "kind", "address", "key", "owner", "registered"}
                           for d in got), got
                got = [(d["event"], d["name"], d["kind"], d["address"]) for d in got]
            else:
                got = [(line[0],) + tuple(line[2:].split("\t")[:3]) for line in lines]
            present, added, removed, changed = ("present", "added", "removed", "changed") if as_json \
                else ("=", "+", "-", "~")
            assert got == [(present, "watched.a", "exchange", "127.0.0.1:1"),
                           (added, "watched.b", "queue", "127.0.0.1:2"),
                           (changed, "watched.a", "exchange", "127.0.0.1:3"),
                           (removed, "watched.a", "exchange", "127.0.0.1:3"),
                           (removed, "watched.b", "queue", "127.0.0.1:2")], got
        finally:
            proc.send_signal(signal.SIGINT)     # Ctrl-C ends it cleanly
            try:
                assert proc.wait(10) == 0, proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        client.register("E", "watched.a", "127.0.0.1:1")    # again for the --json round
    client.unregister("watched.a")


# A remote queue "SLOWQ" bound to the global exchange "G", read in bursts:
# nothing for PAUSE s, then everything there is, until COUNT have come.
BURSTY_BINDER = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1], hwm=5)
z.create_queue("SLOWQ")
z.bind("G", "SLOWQ")
print("bound", flush=True)
n, want, pause = 0, int(sys.argv[2]), float(sys.argv[3])
while n < want:
    time.sleep(pause)
    try:
        while n < want:
            z.receive(timeout=0.02)
            n += 1
    except pyzmq.Timeout:
        pass
print("got", n, flush=True)
sys.stdin.readline()
z.close(0)
"""


def check_watch_bound(watcher, owner):
    """A watch of ``watcher`` (a directory backend) that nobody reads while
    ``owner`` (another backend of the same directory) makes more changes
    than its ``max_unread``: it ends, keeping the events it had, and says
    it fell behind; its memory stops growing.  The same for either backend."""
    from pyzmq.directory import WatchOverflow

    def name(entry):
        return entry["name"] if isinstance(entry, dict) else entry.name
    owner.register("E", "bound.first", "127.0.0.1:1")
    watch = watcher.subscribe("bound.*", max_unread=20)
    assert watch.snapshot_size == 1 and not hasattr(watch, "snapshot")    # no second copy of the records
    for i in range(30):
        owner.register("E", f"bound.{i:02d}", "127.0.0.1:2")
    assert wait_until(lambda: watch.error is not None, 10), "the watch did not end"
    assert watch._events.qsize() <= 22         # the snapshot's one event, 20, the end
    for i in range(30, 40):                    # after the end: nothing more is kept
        owner.register("E", f"bound.{i:02d}", "127.0.0.1:2")
    time.sleep(0.3)
    assert watch._events.qsize() <= 22
    got = [watch.get(1) for _ in range(21)]
    assert [(kind, name(entry)) for kind, entry in got] == \
        [("added", "bound.first")] + [("added", f"bound.{i:02d}") for i in range(20)]
    for _ in range(2):                          # it stays ended
        try:
            watch.get(1)
        except WatchOverflow as exc:
            assert isinstance(exc, pyzmq.Error)
            assert "fell behind" in str(exc) and "20 events" in str(exc) and "subscribe again" in str(exc), exc
        else:
            raise AssertionError("no WatchOverflow after the events kept")
    watch.close()
    again = watcher.subscribe("bound.*")        # what the error says to do: the current records
    assert len(again.records()) == 41
    again.close()


class TcpProxy:
    """A real TCP proxy on a free loopback port (``address``) to
    ``upstream`` ("host:port"): a thread per direction of each connection,
    each running ``pump(src, dst, direction, link)`` ("up" is client to
    server; ``link`` is what ``new_link()`` made for that connection) until
    it returns or its socket fails, then both sockets are shut down.
    ``admit()`` False closes a new connection at once."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def admit(self):
        return True

    def new_link(self):
        return None

    def pump(self, src, dst, direction, link):
        raise NotImplementedError

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            if not self.admit():
                down.close()
                continue
            host, port = self.upstream.rsplit(":", 1)
            up = socket.create_connection((host, int(port)))
            link = self.new_link()
            for src, dst, direction in ((down, up, "up"), (up, down, "down")):
                threading.Thread(target=self._run, args=(src, dst, direction, link),
                                 daemon=True).start()

    def _run(self, src, dst, direction, link):
        try:
            self.pump(src, dst, direction, link)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        # shutdown() wakes the accept() blocked in the other thread (close()
        # alone does not), so the acceptor ends with the proxy
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._acceptor.join(5)
