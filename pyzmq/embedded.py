"""An embedded directory: a real ``zmq_server`` child process that belongs
to this process, for scripts and notebooks.

    with pyzmq.Directory() as directory:            # listening on a free port
        with pyzmq.ZMQ(directory.address) as zmq:
            ...

The child stops when :meth:`Directory.close` is called, when the ``with``
block ends, and when this process ends in any way, SIGKILL included (see
``pyzmq/lifeline.py``): it never outlives its owner.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Deque, Dict, List

from pyzmq import lifeline
from pyzmq.errors import Error

if TYPE_CHECKING:
    from typing_extensions import Self

# the line zmq_server prints on stdout once it listens
READY_LINE = re.compile(r"^zmq_server: listening on (\S+):(\d+)(?: \(CURVE, public key (\S{40})\))?(?: -- .*)?$")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env() -> Dict[str, str]:
    """This process's environment, with the directory this ``pyzmq`` was
    imported from first on PYTHONPATH (the child imports the same code)
    and unbuffered output (its lines arrive as they are printed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def server_command(host: str, port: int, args: List[str]) -> List[str]:
    """The command line of a ``zmq_server`` child that stops with its parent."""
    return [sys.executable, "-m", "pyzmq.server", "--port", str(port), lifeline.FLAG,
            *args, host]


class Directory:
    """A ``zmq_server`` run as a child of this process; ``address`` is what
    to give ``pyzmq.ZMQ()``.

    It starts when made and listens on ``host`` (default 127.0.0.1) at
    ``port`` (default 0: a free port).  ``verbose=True`` has the server
    log registrations and removals and copies its log to this process's
    stderr; either way its last log lines are kept (:meth:`logs`).  Raises
    :class:`pyzmq.Error`, with the server's last log lines, when it
    cannot start within ``ready_timeout`` seconds (a port in use, say).

    :meth:`close` (also the end of a ``with`` block) stops it.  It also
    stops by itself when this process ends, however it ends.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False,
                 ready_timeout: float = 10.0) -> None:
        if not isinstance(host, str):
            raise TypeError(f"host must be a str such as '127.0.0.1', not {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 (a free port) to 65535, not {port}")
        self.host = host
        self.port = port
        self._verbose = verbose
        self._logs: Deque[str] = collections.deque(maxlen=200)
        cmd = server_command(host, port, ["-q"] if not verbose else [])
        self._proc: subprocess.Popen[str] = lifeline.spawn(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), text=True,
            errors="replace")
        ready: Dict[str, int] = {}
        event = threading.Event()
        threading.Thread(target=self._drain_stdout, args=(ready, event), daemon=True,
                         name="pyzmq-directory-stdout").start()
        errors = threading.Thread(target=self._drain_stderr, daemon=True,
                                  name="pyzmq-directory-stderr")
        errors.start()
        event.wait(ready_timeout)
        if "port" not in ready:
            status = self._proc.poll()      # exited by itself (a taken port, ...)?
            if status is None and event.is_set():
                # its stdout closed before the ready line: it is exiting
                try:
                    status = self._proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    pass
            self._stop(2.0)
            errors.join(1.0)
            tail = "\n".join(list(self._logs)[-10:])
            why = (f"it exited with status {status}" if status is not None else
                   f"it was not ready within {ready_timeout:g} s (Directory(ready_timeout=))")
            raise Error(f"the embedded zmq_server did not start on {host}:{port}: {why}"
                        + (f"; it said:\n{tail}" if tail else ""))
        self.port = ready["port"]

    # -- what it is --------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` for ``pyzmq.ZMQ()``."""
        from pyzmq.location import client_address
        return client_address(self.host, self.port)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def logs(self) -> List[str]:
        """The server's last log lines (stderr), oldest first."""
        return list(self._logs)

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped ({self._proc.returncode})"
        return f"<pyzmq.Directory {self.address} pid={self.pid} {state}>"

    # -- stopping ----------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server (its names go with it) and wait for it; idempotent."""
        self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()          # end of file: the server stops
            except OSError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except Exception:
                pass

    # -- its output --------------------------------------------------------

    def _drain_stdout(self, ready: Dict[str, int], event: threading.Event) -> None:
        assert self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                match = READY_LINE.match(line.rstrip("\n"))
                if match and not event.is_set():
                    ready["port"] = int(match.group(2))
                    event.set()
        finally:
            event.set()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._logs.append(line.rstrip("\n"))
            if self._verbose:
                sys.stderr.write(line)
