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
