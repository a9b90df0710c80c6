"""How many sockets one process may hold: libzmq's default cap of 1,023
per context is lifted to the open-file limit, and hitting a limit says
which one and how to raise it."""

import errno
import subprocess
import sys
import textwrap

import pyzmq
from pyzmq import _zmq

from helpers import child_env


def test_the_context_takes_as_many_sockets_as_the_open_file_limit():
    cap, soft, hard = _zmq._socket_limits()
    assert cap > 1023                   # libzmq's default, lifted
    assert cap <= soft


def test_an_exchange_bound_to_two_thousand_queues_reaches_every_one():
    # 2,000 PULLs and 2,000 PUSHes: four times libzmq's default cap
    n = 2000
    with pyzmq.ZMQ() as z:
        eid = z.create_exchange("E")
        qids = {z.create_queue(f"Q{i}"): i for i in range(n)}
        for i in range(n):
            z.bind("E", f"Q{i}")
        assert z.send(eid, b"to all", timeout=10)
        seen = set()
        for _ in range(n):
            qid, msg = z.receive2(timeout=10)
            assert msg == b"to all"
            seen.add(qid)
        assert seen == set(qids)


def test_running_out_of_sockets_says_which_limit_and_how_to_raise_it():
    script = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        import pyzmq
        z = pyzmq.ZMQ()
        eid = z.create_exchange("E")
        try:
            for i in range(1000):
                z.create_queue(f"Q{i}")
                z.bind("E", f"Q{i}")
        except pyzmq.Error as exc:
            print("ERRNO", exc.errno)
            print("TEXT", exc)
        z.close()
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, env=child_env())
    assert r.returncode == 0, r.stderr
    assert f"ERRNO {errno.EMFILE}" in r.stdout, r.stdout + r.stderr
    assert "ulimit -n" in r.stdout and "256" in r.stdout, r.stdout



def test_running_out_of_files_while_starting_the_service_thread_says_so():
    """An instance's first outgoing TCP binding sets up its service thread
    (to watch the PUSH), whose wake-up pipe takes two fds.  Out of fds at
    each step of that, the error is pyzmq.Error(EMFILE), naming the limit
    where it was the pipe (a MemoryError before), and the engine binds once
    fds are free again."""
    script = textwrap.dedent("""
        import os, resource
        import pyzmq
        from pyzmq import _zmq
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        warm = pyzmq.ZMQ()          # the context and its threads take their fds first
        warm.create_queue("W")
        for spare in range(4):
            e = _zmq.Engine()
            eid = e._new_exchange()
            held = []
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            for fd in held[:spare]:
                os.close(fd)
            del held[:spare]
            try:
                e._exchange_connect(eid, "tcp://127.0.0.1:1")
                print("SPARE", spare, "ok")
            except pyzmq.Error as exc:
                print("SPARE", spare, "ERRNO", exc.errno, "TEXT", exc)
            except MemoryError as exc:
                print("SPARE", spare, "MEMORYERROR", exc)
            for fd in held:
                os.close(fd)
            e._exchange_connect(eid, "tcp://127.0.0.1:1")     # fds to spare now
            e._close()
        warm.close()
        print("DONE")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, env=child_env())
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "DONE" in r.stdout, out
    assert "MEMORYERROR" not in out, out
    lines = [line for line in r.stdout.splitlines() if line.startswith("SPARE")]
    assert lines and all(f"ERRNO {errno.EMFILE}" in line for line in lines), out
    assert any("service thread" in line for line in lines), out    # the pipe was reached
    assert all("ulimit -n" in line for line in lines), out


def test_a_lowered_open_file_limit_does_not_make_the_service_thread_spin():
    """The service thread polls its watches' fds; with the open-file limit
    lowered under their count poll() fails at once (EINVAL), and looping on
    it took about a core.  It now looks every few ms instead."""
    script = textwrap.dedent("""
        import resource, time
        from pyzmq import _zmq
        e = _zmq.Engine()
        eid = e._new_exchange()
        # a watched PUSH to a closed port: its monitor wakes the thread on
        # every reconnection attempt
        e._exchange_connect(eid, "tcp://127.0.0.1:1")
        time.sleep(0.2)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        before = resource.getrusage(resource.RUSAGE_SELF)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1, hard))
        time.sleep(1.0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        after = resource.getrusage(resource.RUSAGE_SELF)
        print("CPU", (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        e._close()
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, env=child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    cpu = float(r.stdout.split("CPU", 1)[1])
    assert cpu < 0.2, f"{cpu:.3f} s of CPU in 1 s with nothing to do"
