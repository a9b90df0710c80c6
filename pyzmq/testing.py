"""Run a real ``zmq_server`` in a child process, for tests and the perf runner.

    with ServerProcess() as server:
        client = DirectoryClient(server.address)
        ...
        server.kill()              # SIGKILL, as a crash would
        server.start(server.port)  # back on the same port

The child's stdout and stderr are drained by daemon threads (so a chatty
server never blocks on a full pipe); the last lines of stderr are kept for
:meth:`ServerProcess.logs` and :meth:`ServerProcess.wait_for_log`.
"""

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time

from pyzmq.errors import Error

_READY = re.compile(r"^zmq_server: listening on (.+):(\d+)(?: \(CURVE, public key (\S{40})\))?$")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerProcess:
    """A ``zmq_server`` child process listening on ``host`` (default 127.0.0.1).

    ``port=0`` picks a free port on the first start; later starts without a
    port reuse the port of the previous run, so clients can find it again.
    """

    def __init__(self, host="127.0.0.1", port=0, quiet=False, ready_timeout=10.0, log_lines=2000,
                 extra_args=()):
        self.extra_args = list(extra_args)   # e.g. ["--curve-secret", path]
        self.public_key = None               # the server's CURVE public key, when it has one
        self.host = host
        self.port = port
        self.quiet = quiet
        self.ready_timeout = ready_timeout
        self._logs = collections.deque(maxlen=log_lines)
        self._logs_changed = threading.Condition()
        self._proc = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, port=None):
        """Start the server (on ``port``, or the last one) and wait until it listens.

        Raises :class:`pyzmq.errors.Error` if it exits or stays silent for
        ``ready_timeout`` seconds, with the tail of its stderr.
        """
        if self.running:
            raise Error(f"zmq_server is already running as pid {self._proc.pid}")
        if port is not None:
            self.port = port
        cmd = [sys.executable, "-m", "pyzmq.server", "--port", str(self.port)]
        if self.quiet:
            cmd.append("-q")
        cmd.extend(self.extra_args)
        cmd.append(self.host)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, env=env, text=True,
                                             errors="replace")
        ready = {}
        ready_event = threading.Event()
        threading.Thread(target=self._drain_stdout, args=(proc, ready, ready_event),
                         name="zmq_server-stdout", daemon=True).start()
        stderr_thread = threading.Thread(target=self._drain_stderr, args=(proc,),
                                         name="zmq_server-stderr", daemon=True)
        stderr_thread.start()
        ready_event.wait(self.ready_timeout)
        if "port" not in ready:
            if ready_event.is_set():  # stdout closed: the server is exiting
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                self._terminate(proc)
                why = f"did not report readiness within {self.ready_timeout:g} s"
            else:
                why = f"exited with status {proc.returncode} before listening"
            stderr_thread.join(1.0)
            tail = "\n".join(list(self._logs)[-20:])
            raise Error(f"zmq_server ({' '.join(cmd)}) {why}" + (f"; its stderr:\n{tail}" if tail else ""))
        self.port = ready["port"]
        self.public_key = ready["key"]
        return self

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL.  Return the exit status (None if not started)."""
        proc = self._proc
        if proc is None:
            return None
        return self._terminate(proc, timeout)

    def kill(self):
        """SIGKILL the server, as a crash would, and reap it.  Return the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    @staticmethod
    def _terminate(proc, timeout=5.0):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- state -------------------------------------------------------------

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self):
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self):
        return None if self._proc is None else self._proc.poll()

    @property
    def address(self):
        """``host:port`` for clients (a wildcard listen address is reached as 127.0.0.1)."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def rss_kib(self):
        """The server's resident memory in KiB (Linux /proc), or None if unknown."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, TypeError, ValueError):
            pass
        return None

    # -- logs --------------------------------------------------------------

    def logs(self):
        """The last stderr lines of the server (all runs), oldest first."""
        with self._logs_changed:
            return list(self._logs)

    def wait_for_log(self, pattern, timeout=5.0):
        """Wait until a stderr line matches the regex ``pattern``; return it, or None on timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._logs_changed:
            while True:
                for line in self._logs:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._logs_changed.wait(remaining)

    def _drain_stdout(self, proc, ready, ready_event):
        try:
            for line in proc.stdout:
                match = _READY.match(line.rstrip("\n"))
                if match and not ready_event.is_set():
                    ready["port"] = int(match.group(2))
                    ready["key"] = match.group(3)
                    ready_event.set()
        finally:
            ready_event.set()

    def _drain_stderr(self, proc):
        for line in proc.stderr:
            with self._logs_changed:
                self._logs.append(line.rstrip("\n"))
                self._logs_changed.notify_all()
