"""A child process that ends with its parent: the "lifeline" between
:class:`pyzmq.Directory` (or ``pyzmq.testing.ServerProcess``) and the
``zmq_server`` it starts.

The parent starts the child with a pipe on the child's stdin and keeps
the write end (:func:`spawn`).  The child, ``zmq_server
--exit-with-parent``, watches it (:func:`watch_parent`) and stops when it
reads end-of-file.  The kernel closes the write end when the parent exits
in any way, SIGKILL included, so nothing is left running.

A copy of the write end can outlive the parent in a child forked without
exec (``os.fork``, multiprocessing's fork start method); for that case the
child also asks Linux to signal it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, through ctypes).  Linux sends that signal
when the *thread* that started the child ends, even if the process lives
on, so the handler stops only when the parent process is really gone
(the parent pid has changed).
"""

import ctypes
import ctypes.util
import os
import signal
import stat
import subprocess
import sys

FLAG = "--exit-with-parent"
PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGUSR2


def spawn(cmd, popen=subprocess.Popen, **kwargs):
    """Start ``cmd`` (which watches its stdin, e.g. it carries :data:`FLAG`)
    with a pipe on its stdin whose write end only this process holds
    (``proc.stdin``; closing it asks the child to stop)."""
    kwargs["stdin"] = subprocess.PIPE
    return popen(cmd, **kwargs)


def stdin_problem():
    """Why this process's stdin cannot carry a lifeline (it must be a pipe
    or socket from the parent), or None when it can."""
    try:
        mode = os.fstat(0).st_mode
    except OSError as exc:
        return f"stdin is not open ({exc.strerror})"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return None
    return "stdin must be a pipe from the parent process, which keeps its other end open"


def _set_pdeathsig(signum):
    """Ask Linux for ``signum`` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(loop, stop):
    """In the child, on its running asyncio ``loop``: call ``stop()`` once
    when the parent process is gone (stdin at end-of-file, or, on Linux,
    the parent-death signal with a changed parent pid)."""
    parent = os.getppid()
    done = []

    def once():
        if not done:
            done.append(True)
            stop()

    def stdin_readable():
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            once()

    def parent_signal():
        if os.getppid() != parent:
            once()
        # else only the thread that started us ended: the parent lives on

    loop.add_reader(0, stdin_readable)
    try:
        loop.add_signal_handler(DEATH_SIGNAL, parent_signal)
    except (NotImplementedError, RuntimeError, ValueError):
        return
    _set_pdeathsig(DEATH_SIGNAL)
    # the parent may have died before prctl took effect; checked from the
    # loop, once the server is serving and can be stopped
    loop.call_soon(parent_signal)
