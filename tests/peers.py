"""Run a Python snippet as a real separate process and talk to it by lines.

Tests use peers for the other side of a wiring: a real process with its own
pyzmq instance, talking to the same real zmq_server over TCP.
"""

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

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


class Peer:
    def __init__(self, code, *args):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=ROOT, env=env)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self._keep_err), daemon=True).start()

    @staticmethod
    def _read(stream, put):
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def expect(self, prefix, timeout=15.0):
        """The next stdout line starting with prefix (others are skipped)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"peer said no {prefix!r} within {timeout} s; "
                                     f"stderr: {self.err()}") from None
            if line is None:
                self.proc.wait(5)
                raise AssertionError(f"peer exited ({self.proc.returncode}) before {prefix!r}; "
                                     f"stderr: {self.err()}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def remaining_lines(self, quiet_for=5.0):
        """Every stdout line until the peer says nothing for ``quiet_for`` s or exits."""
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=quiet_for)
            except queue.Empty:
                return lines
            if line is None:
                return lines
            lines.append(line)

    def interrupt(self, expect="INTERRUPTED", timeout=5.0):
        """Send SIGINT; return the seconds until the peer prints ``expect``."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.expect(expect, timeout=timeout)
        return time.monotonic() - started

    def _keep_err(self, line):
        if line is not None:
            self.stderr.append(line)

    def tell(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def err(self):
        return "\n".join(self.stderr[-30:])

    def wait(self, timeout=15.0):
        return self.proc.wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
