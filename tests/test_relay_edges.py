"""A relay's edges (bind() of a remote global exchange to a remote global
queue, src/relay.h): a mark of 1, what a relay given up still held, a
relay thread that cannot start.  Real processes, a real zmq_server, real
TCP (the peers are test_close_relay's)."""

import time

import pyzmq
from pyzmq.testing import PeerProcess

from test_close_relay import EXCHANGE_OWNER, QUEUE_OWNER, _end, _peers, _wait_relay


def test_a_relay_with_a_mark_of_one_binds_and_drains(directory):
    """bind(hwm=1) of two remote objects: the XSUB's subscriptions (the
    bind's everything + sync topic, the drain's unsubscriptions and end
    topic) are not data and must not be held to the data's mark.  Before,
    the second subscription was dropped by libzmq at the mark: the bind
    timed out, its sync never asked for."""
    a, b = _peers(directory)
    try:
        z = pyzmq.ZMQ(directory, bind_timeout=5)
        try:
            z.bind("RE", "RQ", hwm=1)
            a.tell("200 8")
            a.expect("SENT", timeout=30)
            b.tell("read")
            t = time.monotonic()
            left = z.close(timeout=20)
            took = time.monotonic() - t
        finally:
            z.close(0)
        assert left == 0
        assert took < 15, took          # a hang bound: the drain's end answer came
        assert b.expect("GOT", timeout=30) == "200 in-order"
    finally:
        _end(a, b)


def test_a_queue_with_a_mark_of_one_binds_a_remote_exchange(directory):
    """The same for a binder's SUB (a queue of mark 1, or bind(hwm=1)):
    its sync topic's subscription was dropped behind the first one."""
    a = PeerProcess(EXCHANGE_OWNER, directory)
    try:
        a.expect("READY")
        with pyzmq.ZMQ(directory, bind_timeout=5) as z:
            q1 = z.create_queue("Q1", hwm=1)
            z.bind("RE", "Q1")
            q2 = z.create_queue("Q2")
            z.bind("RE", "Q2", hwm=1)
            a.tell("3 8")
            got = {q1: [], q2: []}
            for _ in range(6):
                qid, m = z.receive2(timeout=10)
                got[qid].append(m[:8])
            a.expect("SENT", timeout=30)
            want = [b"%08d" % i for i in range(3)]
            assert got == {q1: want, q2: want}
    finally:
        a.close()


def test_a_relay_given_up_counts_what_its_xsub_held(directory, caplog):
    """B is killed with the relay full (its PUSH at its mark, its XSUB
    holding what the exchange sent): close() gives the relay up, as
    before, and now also counts what the relay had received and will
    never pass on (its XSUB's messages, the one waiting for room).  Before,
    those were dropped with the XSUB and close() returned 0."""
    n = 3000
    a, b = _peers(directory)
    try:
        z = pyzmq.ZMQ(directory)
        z.bind("RE", "RQ", hwm=10)
        _wait_relay(z, "up")
        a.tell(f"{n} 512")
        a.expect("SENT", timeout=30)
        b.close()                           # SIGKILL
        _wait_relay(z, "down")
        with caplog.at_level("WARNING", logger="pyzmq"):
            left = z.close(timeout=20)
        print(f"close() returned {left}")
        assert 0 < left <= n
        lost = [r.getMessage() for r in caplog.records
                if "could not pass on" in r.getMessage()]
        assert len(lost) == 1 and f"{left} messages" in lost[0], lost
        assert "relay 'RE' -> 'RQ'" in lost[0], lost
        # not the timeout's warning: close() did not wait for this relay
        assert not [r for r in caplog.records if "had not left" in r.getMessage()]
        gone = [r.getMessage() for r in caplog.records
                if "consumer of relay 'RE' -> 'RQ'" in r.getMessage()]
        assert len(gone) == 1 and "its pipe was full" in gone[0], gone
    finally:
        _end(a, b)


# A binder whose relay thread cannot start (threading.stack_size too large
# for the address space: pthread_create fails).  It says what bind()
# raised and how many file descriptors the process holds beyond what it
# held before the instance was made, once the instance is closed.
NO_THREAD = """
import os, sys, threading, time, pyzmq
def fds():
    return len(os.listdir("/proc/self/fd"))
def settled(base):
    deadline = time.monotonic() + 5
    while fds() > base and time.monotonic() < deadline:
        time.sleep(0.05)            # libzmq's reaper closes sockets after zmq_close
    return fds()
# a relay bound and closed first: what the process keeps after that (the
# context, its threads) is the base
with pyzmq.ZMQ(sys.argv[1]) as z:
    z.bind("RE", "RQ", hwm=10)
time.sleep(0.5)
base = settled(0)
z = pyzmq.ZMQ(sys.argv[1])
threading.stack_size(1 << 40)
try:
    z.bind("RE", "RQ", hwm=10)
    print("RAISED none", flush=True)
except Exception as exc:
    print("RAISED", type(exc).__name__, exc, flush=True)
finally:
    threading.stack_size(0)
z.close(0)
print("EXTRA", settled(base) - base, flush=True)
"""


def test_a_relay_thread_that_cannot_start_raises_and_leaves_no_sockets(directory):
    """Before, bind() raised the thread's RuntimeError and the relay's
    sockets (XSUB, PUSH, control pair, monitors) were nobody's: never
    closed, still connected to both owners, holding the context at exit."""
    a, b = _peers(directory)
    try:
        with PeerProcess(NO_THREAD, directory) as c:
            raised = c.expect("RAISED", timeout=30)
            assert raised.startswith("Error ") and "relay" in raised, raised
            assert c.expect("EXTRA", timeout=30) == "0"
            assert c.wait(15) == 0, c.err()
    finally:
        _end(a, b)
