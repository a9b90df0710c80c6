"""close() of an instance that relays (bind() of a remote global exchange to
a remote global queue: its relay thread, SUB from the exchange, PUSH to the
queue) loses nothing the exchange published before the relay let go of it.
Real processes, a real zmq_server, real TCP."""

import asyncio
import time


import pyzmq
from pyzmq import _zmq
from pyzmq.testing import PeerProcess

# Owner A of the global exchange "RE": told "COUNT SIZE", sends COUNT
# messages of SIZE bytes numbered 0, 1, ... (8 digits first; COUNT 0: until
# a send waits 0.5 s, everything between here and B full), says SENT with
# the count once every send went through, then closes when told (its close
# waits until they left its process).
EXCHANGE_OWNER = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
eid = z.create_exchange("RE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", flush=True)
n, size = map(int, sys.stdin.readline().split())
pad = b"." * (size - 8)
i = 0
try:
    while n == 0 or i < n:
        assert z.send(eid, b"%08d" % i + pad, timeout=0.5 if n == 0 else 30) is True
        i += 1
except pyzmq.Timeout:
    if n:
        raise
print("SENT", i, flush=True)
sys.stdin.readline()
print("CLOSED", z.close(), flush=True)
"""

# Owner B of the global queue "RQ" (mark 5): reads nothing until told,
# then reads slowly (a pause every 100) until nothing has come for 3 s,
# and says how many came and whether they were 0, 1, 2, ... in order.
QUEUE_OWNER = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
z.create_queue("RQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0", hwm=5)
print("READY", flush=True)
sys.stdin.readline()
got = []
try:
    while True:
        got.append(int(z.receive(timeout=3)[:8]))
        if len(got) % 100 == 0:
            time.sleep(0.01)
except pyzmq.Timeout:
    pass
print("GOT", len(got), "in-order" if got == list(range(len(got))) else "out-of-order", flush=True)
sys.stdin.readline()
z.close(0)
"""

N = 3000
SIZE = 512      # N of them fit in the kernels' buffers: A's sends all go through


def _peers(directory):
    a = PeerProcess(EXCHANGE_OWNER, directory)
    b = PeerProcess(QUEUE_OWNER, directory)
    a.expect("READY")
    b.expect("READY")
    return a, b


def _end(*peers):
    for p in peers:
        p.close()


def test_close_of_a_relay_passes_on_everything_the_exchange_sent(directory):
    """A sends N while B reads nothing: they wait in the relay's SUB, its
    PUSH and the kernels between.  C closes while B reads slowly: every one
    reaches B, in order, and close() says nothing was left.  Before, the
    relay thread was stopped at once and what it held was dropped."""
    a, b = _peers(directory)
    try:
        z = pyzmq.ZMQ(directory)
        try:
            z.bind("RE", "RQ", hwm=10)          # a relay: both objects remote
            a.tell(f"{N} {SIZE}")
            a.expect("SENT", timeout=30)        # every send of A went through
            b.tell("read")
        finally:
            left = z.close(timeout=30)
        got = b.expect("GOT", timeout=60)
        print(f"close() returned {left}; B got {got} of {N}")
        assert got == f"{N} in-order"
        assert left == 0
    finally:
        _end(a, b)


def _wait_relay(z, watch, seconds=15.0):
    """Wait until the relay's PUSH watch says `watch` (a hang bound)."""
    deadline = time.monotonic() + seconds
    while _zmq._relay_states(z)[0][3] != watch:
        assert time.monotonic() < deadline, _zmq._relay_states(z)
        time.sleep(0.01)


def test_a_relay_whose_consumer_is_gone_is_reported_and_does_not_hold_close(directory, caplog):
    """B is killed with the relay's PUSH full: close() does not wait for
    it (nothing can leave), and says so, naming the relay."""
    a, b = _peers(directory)
    try:
        z = pyzmq.ZMQ(directory)
        z.bind("RE", "RQ", hwm=10)
        _wait_relay(z, "up")
        a.tell(f"{N} {SIZE}")
        a.expect("SENT", timeout=30)
        b.close()                           # SIGKILL
        _wait_relay(z, "down")
        t = time.monotonic()
        with caplog.at_level("WARNING", logger="pyzmq"):
            z.close(timeout=20)
        took = time.monotonic() - t
        assert took < 15, took              # not its whole timeout: a hang bound
        # (close() returns what the relay had received and dropped, its PUSH's pipe
        # not counted; tests/test_relay_edges.py checks that count)
        gone = [r.getMessage() for r in caplog.records
                if "consumer of relay 'RE' -> 'RQ'" in r.getMessage()]
        assert len(gone) == 1 and "when close() began" in gone[0], gone
        assert "its pipe was full" in gone[0], gone
    finally:
        _end(a, b)


def test_a_relay_close_that_runs_out_of_time_counts_what_it_dropped(directory, caplog):
    """B never reads: close(timeout=1) gives up, counts what the relay held
    (some of the N, never more), and warns with the relay's name."""
    a, b = _peers(directory)
    try:
        z = pyzmq.ZMQ(directory)
        z.bind("RE", "RQ", hwm=10)
        a.tell(f"0 {16384}")               # until full: the relay cannot pass on
        sent = int(a.expect("SENT", timeout=60))
        t = time.monotonic()
        with caplog.at_level("WARNING", logger="pyzmq"):
            left = z.close(timeout=1.0)
        took = time.monotonic() - t
        print(f"A sent {sent} until full; close(timeout=1) returned {left} after {took:.2f} s")
        assert took < 10, took              # a hang bound
        assert 0 < left <= sent
        warned = [r.getMessage() for r in caplog.records if "had not left" in r.getMessage()]
        assert len(warned) == 1 and f"{left} messages" in warned[0], warned
        assert "relay 'RE' -> 'RQ'" in warned[0], warned
    finally:
        _end(a, b)


def test_a_relay_whose_exchange_owner_is_gone_does_not_hold_close(directory):
    """The end of the relay's intake is the exchange's answer; with its
    owner gone no answer comes, but nothing more can come either: what the
    relay holds is passed on, and close() does not wait for its timeout."""
    a, b = _peers(directory)
    try:
        z = pyzmq.ZMQ(directory)
        z.bind("RE", "RQ", hwm=10)
        a.tell("100 8")
        a.expect("SENT", timeout=30)
        a.tell("close")                     # its close sees them out of its process
        assert a.expect("CLOSED", timeout=30) == "0"
        assert a.wait(15) == 0, a.err()     # and it is gone
        b.tell("read")
        t = time.monotonic()
        left = z.close(timeout=30)
        took = time.monotonic() - t
        assert left == 0
        assert took < 20, took              # a hang bound, far below the timeout
        assert b.expect("GOT", timeout=60) == "100 in-order"
    finally:
        _end(a, b)


def test_await_close_of_a_relay_passes_everything_on_without_blocking_the_loop(directory):
    """asyncio: the same drain in steps, the loop ticking all along."""
    import pyzmq.asyncio
    from test_asyncio_never_blocks import Ticker

    async def main():
        ticker = Ticker()
        try:
            z = await pyzmq.asyncio.ZMQ.connect(directory)
            await z.bind("RE", "RQ", hwm=10)
            a.tell(f"{N} {SIZE}")
            await asyncio.get_running_loop().run_in_executor(None, a.expect, "SENT", 30)
            b.tell("read")
            left, took = await ticker.during(z.close(timeout=30))
            return left
        finally:
            ticker.stop()

    a, b = _peers(directory)
    try:
        assert asyncio.run(asyncio.wait_for(main(), 60)) == 0
        assert b.expect("GOT", timeout=60) == f"{N} in-order"
    finally:
        _end(a, b)


# Binder C in a process of its own: binds RE to RQ, closes when told and
# says whether Ctrl-C interrupted the close, and whether the relay thread
# ended after it.
BINDER = """
import sys, threading, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
z.bind("RE", "RQ", hwm=10)
print("BOUND", flush=True)
sys.stdin.readline()
print("CLOSING", flush=True)
t = time.monotonic()
try:
    z.close(timeout=30)
    print("CLOSED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED %.3f" % (time.monotonic() - t), z.closed, flush=True)
deadline = time.monotonic() + 5
while any(t.name.startswith("pyzmq-wiring relay") for t in threading.enumerate()):
    assert time.monotonic() < deadline, "the relay thread did not end"
    time.sleep(0.01)
print("ENDED", flush=True)
"""


def test_ctrl_c_interrupts_the_close_of_a_relay(directory):
    """The relay cannot pass on (B never reads, A filled everything up):
    Ctrl-C ends close() at once, the instance is closed and the relay's
    thread ends."""
    a, b = _peers(directory)
    try:
        with PeerProcess(BINDER, directory) as c:
            c.expect("BOUND")
            a.tell("0 16384")
            a.expect("SENT", timeout=60)
            c.tell("close")
            c.expect("CLOSING")
            time.sleep(0.3)                 # let it wait for real
            c.proc.send_signal(2)           # SIGINT
            took, closed = c.expect("INTERRUPTED", timeout=10).split()
            assert closed == "True"
            c.expect("ENDED", timeout=10)
            assert c.wait(10) == 0, c.err()
    finally:
        _end(a, b)
