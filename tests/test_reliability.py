"""Reliability promises, end to end: real processes, a real zmq_server, TCP on
127.0.0.1.  See docs/reliability.md; the long variants are perf/soak.py,
whose roles and harness these tests share (with smaller counts).

1. No silent loss, bounded memory: every message arrives in order through
   each binding kind with a slow consumer; the producer waits at the
   high-water mark, send(timeout=...) raises Timeout while the consumer
   stalls, the producer's RSS stays bounded.
2. Dead processes are noticed: a SIGKILLed owner's names are freed, its
   survivors get Timeouts (no crash, no hang), and links resume when it
   comes back at the same location.
3. The directory is not in the data path: a stream survives its death;
   a restarted directory is repopulated by the live instances.
4. Random arguments give only TypeError, ValueError or pyzmq.Error.
"""

import array
import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import pyzmq
from pyzmq import _zmq
from helpers import COMMANDS, Peer, wait_name_free
from test_directory import is_free, wait_until
from pyzmq.directory import DirectoryClient, DirectoryError
from pyzmq.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "perf"))
import soak  # noqa: E402  (perf/soak.py: the stream roles and harness)

N = 200_000                  # messages per stream (the soak runs 1,000,000)
RSS_LIMIT_KIB = 200 * 1024   # the producer's peak resident memory
RSS_GROWTH_KIB = 30 * 1024   # from 10% of the stream to its end
DOCUMENTED = (TypeError, ValueError, pyzmq.Error)


def _report(name, figures):
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# ------------------------------------------------- 1. no silent loss, bounded memory

def test_local_to_local_loses_nothing_and_stays_bounded():
    """One instance, one thread: the queue fills to its mark (hwm at each end
    of the inproc pipe), send(block=False) says so, send(timeout) raises
    Timeout, and every message still comes out once, in order."""
    r = soak.run_local(N, hwm=1000)
    _report("local->local", r)
    assert r["received"] == N               # and in order: the role checks each one
    assert r["blocked"] > 0                 # the producer did reach the mark
    assert r["max_in_flight"] <= 2 * 1000   # ... and it held there
    assert 0.04 <= float(r["timeout_secs"]) < 1.0
    assert r["vmhwm_kib"] < RSS_LIMIT_KIB
    assert r["rss_peak_kib"] - r["rss_warm_kib"] < RSS_GROWTH_KIB


@pytest.mark.parametrize("kind", ["to_remote_queue", "from_remote_exchange"])
def test_stream_across_processes_loses_nothing_and_stays_bounded(directory, kind):
    """Producer and slower consumer in two processes; half-way the consumer
    stops until the producer's send(timeout=0.05) has raised Timeout (a
    Timeout means not sent: the producer sends that message again, and the
    consumer would see a duplicate or a gap)."""
    produced, consumed = soak.run_remote(directory, kind, N, hwm=1000)
    _report(kind, {**produced, **{"consumer_" + k: v for k, v in consumed.items()}})
    assert consumed["received"] == N        # in order: the consumer checks each one
    assert produced["blocked"] > 0
    assert produced["stall_timeout"] is not None, "the stalled consumer made no send() time out"
    assert produced["vmhwm_kib"] < RSS_LIMIT_KIB
    assert produced["rss_peak_kib"] - produced["rss_warm_kib"] < RSS_GROWTH_KIB


@pytest.mark.parametrize("kind", ["to_remote_queue", "from_remote_exchange"])
def test_consumer_stalled_for_five_seconds_loses_nothing(directory, kind):
    """A consumer that stops reading for 5 s (a GC pause, a slow disk, a
    debugger) must find every message waiting when it comes back.

    This failed while the sockets used ZMTP heartbeats (timeout 3 s): a
    receiver whose pipe is full stops reading its TCP connection, misses the
    peer's PONGs and libzmq dropped the connection with what the kernel held
    (a gap in the sequence), or aborted in stream_engine_base.cpp (libzmq
    #3937).  TCP keepalive, which the kernel answers, replaced them.
    """
    produced, consumed = soak.run_remote(directory, kind, 100_000, hwm=1000,
                                         stall=5.0, recv_timeout=5)
    assert consumed["received"] == 100_000


# ------------------------------------------------- 2. dead processes are noticed

# Owns global queue VQ (prints every message) and global exchange VE (ticks
# on it whenever nothing arrives for 50 ms).  argv: directory, VQ location,
# VE location, tick text.
VICTIM = """
import sys, pyzmq
zmq = pyzmq.ZMQ(sys.argv[1])
zmq.create_queue("VQ", pyzmq.SCOPE_GLOBAL, sys.argv[2])
ve = zmq.create_exchange("VE", pyzmq.SCOPE_GLOBAL, sys.argv[3])
print("READY", flush=True)
tick = 0
while True:
    try:
        print("GOT", zmq.receive(timeout=0.05).decode(), flush=True)
    except pyzmq.Timeout:
        try:
            zmq.send(ve, b"%s %d" % (sys.argv[4].encode(), tick), timeout=0.05)
        except pyzmq.Timeout:
            pass
        tick += 1
"""

# Registers VQ and VE somewhere else, then closes (which frees them).
TAKER = """
import sys, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as zmq:
    zmq.create_queue("VQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    zmq.create_exchange("VE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    print("TOOK", flush=True)
"""


def _wait_unregistered(directory, names, limit):
    """Seconds until a fresh client finds none of names (AssertionError past limit)."""
    start = time.monotonic()
    with DirectoryClient(directory, timeout=2.0) as client:
        pending = set(names)
        while pending:
            for name in list(pending):
                try:
                    client.lookup(name)
                except DirectoryError:
                    pending.discard(name)
            if time.monotonic() - start > limit:
                raise AssertionError(f"{sorted(pending)} still registered after {limit} s")
            time.sleep(0.01)
    return time.monotonic() - start


def test_killed_owner_is_noticed_and_its_links_resume(directory):
    with Peer(VICTIM, directory, "127.0.0.1:0", "127.0.0.1:0", "tick") as victim:
        victim.expect("READY")
        with DirectoryClient(directory, timeout=2.0) as client:
            q_addr = client.lookup("VQ")[1]
            e_addr = client.lookup("VE")[1]
        # the survivor is this process: it feeds VQ and listens to VE
        with pyzmq.ZMQ(directory, hwm=50) as zmq:
            zmq.create_exchange("SE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            eid = zmq.create_exchange("E")
            zmq.bind("E", "VQ")
            zmq.create_queue("SQ")
            zmq.bind("VE", "SQ")
            for i in range(10):
                zmq.send(eid, b"before-%d" % i, timeout=5)
            assert [victim.expect("GOT") for _ in range(10)] == [f"before-{i}" for i in range(10)]
            assert zmq.receive(timeout=5).startswith(b"tick ")

            victim.proc.kill()                          # SIGKILL
            victim.proc.wait(5)
            freed_after = _wait_unregistered(directory, ["VQ", "VE"], limit=10.0)
            with DirectoryClient(directory, timeout=2.0) as client:
                assert client.lookup("SE")[0] == "E"    # the survivor's name stays

            # Whatever was sent before libzmq saw the connection die went
            # with it; give the survivor's I/O thread a moment to see it.
            time.sleep(0.2)
            accepted = []
            started = time.monotonic()
            with pytest.raises(pyzmq.Timeout):
                for i in range(100_000):
                    zmq.send(eid, b"dead-%d" % i, timeout=0.5)
                    accepted.append(f"dead-{i}")
            timed_out_after = time.monotonic() - started
            assert 0 < len(accepted) <= 4 * 50          # queued up to the mark, no further
            with pytest.raises(pyzmq.Timeout):          # VE is silent now: no hang
                while True:
                    zmq.receive(timeout=0.5)

            with Peer(TAKER, directory) as taker:       # the names are free for others
                taker.expect("TOOK")
                assert taker.wait() == 0

            # back at the same location: the links resume without a new bind
            with Peer(VICTIM, directory, q_addr, e_addr, "tock") as again:
                again.expect("READY")
                back = time.monotonic()
                after = [f"after-{i}" for i in range(10)]
                for m in after:
                    zmq.send(eid, m.encode(), timeout=5)
                got = [again.expect("GOT") for _ in range(len(accepted) + len(after))]
                assert got == accepted + after
                queue_resumed_after = time.monotonic() - back
                while not zmq.receive(timeout=5).startswith(b"tock "):
                    assert time.monotonic() - back < 10
                exchange_resumed_after = time.monotonic() - back
    _report("killed owner", {"names_freed_after_s": round(freed_after, 3),
                             "accepted_while_dead": len(accepted),
                             "send_timed_out_after_s": round(timed_out_after, 3),
                             "VQ_link_resumed_after_s": round(queue_resumed_after, 3),
                             "VE_link_resumed_after_s": round(exchange_resumed_after, 3)})


# ------------------------------------------------- 3. the directory is not in the data path

def test_directory_killed_mid_stream(directory_server):
    figures = soak.run_outage(directory_server, N, hwm=1000, wait=10.0)
    _report("directory outage", figures)
    assert figures["received"] == N
    assert figures["reregistered_after_s"] < 10.0


# ------------------------------------------------- 4. random arguments

_POOL = ["E", "Q", "E2", "Q2"]



def _half(valid, *anything):
    """Half the time a valid value, else anything (a plain one_of would
    flatten and draw each branch equally often)."""
    return st.booleans().flatmap(lambda ok: valid if ok else st.one_of(*anything))


# Half valid values, half anything, so that random sequences both wire real
# objects and reach the error paths.
names = _half(st.sampled_from(_POOL), 
    st.text(max_size=20),
    st.text(min_size=200, max_size=300),
    st.text(alphabet=st.characters(max_codepoint=0x20), max_size=5),
    st.sampled_from(["", "\x00", "a\x7f", "a" * 255, "a" * 256, "é" * 127, "é" * 128,
                     "\U0001f600" * 63, "\U0001f600" * 64, "\ud800", "a\nb"]),
    st.binary(max_size=5), st.integers(), st.none(), st.floats(), st.lists(st.text(max_size=2)),
)
scopes = st.one_of(
    st.sampled_from([pyzmq.SCOPE_LOCAL, pyzmq.SCOPE_GLOBAL]),
    st.integers(), st.booleans(), st.none(), st.floats(), st.text(max_size=3),
    st.builds(object),
)
styles = _half(st.sampled_from([pyzmq.STYLE_DATA_DISTRIBUTION, pyzmq.STYLE_LOAD_BALANCING]),
               st.integers(), st.none(), st.text(max_size=2))
any_text = st.text(max_size=40)
# Locations an instance with a directory may really listen at: loopback
# only, and nothing that would send a random host name to DNS.
_ports = st.one_of(st.sampled_from(["0", "", "*", "65535", "65536", "-1", "0x10", "٣", "²"]),
                   st.integers(-5, 70_000).map(str), st.text(max_size=6))
loopback_locations = st.one_of(
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["127.0.0.1", "127.0.0.2", "lo"]), _ports),
    st.sampled_from(["127.0.0.1", "lo", ":", "tcp://127.0.0.1:0", "127.0.0.1:0:0"]),
    st.builds(lambda a, b: f"{a} {b}", any_text, any_text),         # whitespace: refused
    st.builds(lambda a, b: f"{a}:{b}:", any_text, any_text),        # two colons: refused
    st.text(min_size=256, max_size=300).map(lambda s: "127.0.0.1:" + s),
    st.integers(), st.none(), st.binary(max_size=4),
)
ids = _half(
    st.integers(-1, 6),
    st.integers(), st.sampled_from([2**31, 2**63 - 1, 2**63, -2**63 - 1, 2**64, 10**30]),
    st.floats(), st.none(), st.text(max_size=3), st.booleans(),
)


class _Big:
    """Stands for a 70,000-byte message (the zero-copy path) in examples,
    so that a failure report does not print 70,000 bytes."""

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"<70,000-byte {self.kind.__name__}>"

    def make(self):
        return self.kind(bytearray(70_000))


messages = _half(
    st.binary(max_size=64),
    st.binary(max_size=64).map(bytearray),
    st.binary(max_size=64).map(memoryview),
    st.binary(min_size=2, max_size=64).map(lambda b: memoryview(b)[::2]),    # not contiguous
    st.sampled_from([_Big(bytes), _Big(memoryview)]),
    st.builds(array.array, st.just("d"), st.lists(st.floats(), max_size=3)),
    st.text(max_size=10), st.integers(), st.none(), st.lists(st.binary(max_size=4), max_size=3),
    st.builds(object),
)
short_timeouts = st.one_of(st.sampled_from([0, 0.0, 0.001]), st.floats(max_value=0.001),
                           st.just(float("nan")), st.booleans(), st.text(max_size=2))
counts = st.one_of(st.integers(-3, 5), st.integers(), st.floats(), st.none())


def _operations(locations):
    # (scope, location): often a valid pair, else anything
    where = _half(st.sampled_from([(pyzmq.SCOPE_LOCAL, ""), (pyzmq.SCOPE_GLOBAL, "127.0.0.1:0"),
                                   (pyzmq.SCOPE_GLOBAL, "lo:0")]),
                  st.tuples(st.just(pyzmq.SCOPE_GLOBAL), locations),
                  st.tuples(scopes, locations))
    return st.lists(st.one_of(
        st.tuples(st.just("exchange"), names, where, styles),
        st.tuples(st.just("queue"), names, where),
        st.tuples(st.just("bind"), names, names),
        st.tuples(st.just("send"), ids, messages, short_timeouts),
        st.tuples(st.just("send_nb"), ids, messages),
        st.tuples(st.just("send_many"), ids, st.lists(messages, max_size=4), short_timeouts),
        st.tuples(st.just("receive"), short_timeouts, st.booleans()),
        st.tuples(st.just("receive_nb"), st.booleans()),
        st.tuples(st.just("receive2"), short_timeouts, st.booleans()),
        st.tuples(st.just("receive_many"), counts, short_timeouts),
    ), min_size=3, max_size=30)


def _real(value):
    if isinstance(value, _Big):
        return value.make()
    if isinstance(value, list):
        return [_real(v) for v in value]
    return value


def _run(zmq, ops):
    for op, *args in ops:
        args = [_real(a) for a in args]
        if op.startswith("send") and type(args[0]) is int and -1 <= args[0] <= 6:
            # small ids stand for this instance's exchange slots (ids are
            # serial << 21 | slot): 1..n are real, 0, -1 and the rest not
            args[0] += zmq.serial << 21
        try:
            if op == "exchange":
                name, (scope, location), style = args
                zmq.create_exchange(name, scope, location, style=style)
            elif op == "queue":
                name, (scope, location) = args
                zmq.create_queue(name, scope, location)
            elif op == "bind":
                zmq.bind(*args)
            elif op == "send":
                zmq.send(args[0], args[1], timeout=args[2])
            elif op == "send_nb":
                zmq.send(args[0], args[1], block=False)
            elif op == "send_many":
                zmq.send_many(*args)
            elif op == "receive":
                zmq.receive(timeout=args[0], copy=args[1])
            elif op == "receive_nb":
                zmq.receive(block=False, copy=args[0])
            elif op == "receive2":
                zmq.receive2(timeout=args[0], copy=args[1])
            elif op == "receive_many":
                zmq.receive_many(args[0], timeout=args[1])
        except DOCUMENTED:
            pass
        except Exception as e:
            call = f"{op}({', '.join(repr(a)[:80] for a in args)})"
            raise AssertionError(f"{call} raised {type(e).__name__}: {e}") from e
    # and the instance still works
    eid = zmq.create_exchange("sanity E")
    zmq.create_queue("sanity Q")
    zmq.bind("sanity E", "sanity Q")
    while zmq.receive(block=False) is not None:
        pass
    zmq.send(eid, b"still fine", timeout=1)
    assert zmq.receive(timeout=1) == b"still fine"


# No shrinking: it would take a minute on a failure; _run names the call
# that raised instead.
_FUZZ = dict(deadline=None, report_multiple_bugs=False,
             phases=[Phase.explicit, Phase.reuse, Phase.generate])


@settings(max_examples=300, **_FUZZ)
@given(_operations(any_text))
def test_random_arguments_standalone(ops):
    with pyzmq.ZMQ(hwm=10) as zmq:
        zmq.create_exchange("E")            # slot 1, bound to a queue: ids hit it often
        zmq.create_queue("Q")
        zmq.bind("E", "Q")
        _run(zmq, ops)


# A process owning global exchange RE and global queue RQ, so that random
# binds reach real remote objects (and RE -> RQ makes a relay).
REMOTE_OWNER = """
import sys, pyzmq
zmq = pyzmq.ZMQ(sys.argv[1])
zmq.create_exchange("RE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
zmq.create_queue("RQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", flush=True)
while True:
    try:
        zmq.receive(timeout=0.1)
    except pyzmq.Timeout:
        pass
"""


@pytest.fixture(scope="module")
def fuzz_directory():
    with ServerProcess(quiet=True) as server:
        with Peer(REMOTE_OWNER, server.address) as owner:
            owner.expect("READY")
            yield server.address


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], **_FUZZ)
@given(ops=_operations(loopback_locations),
       extra=st.lists(st.sampled_from(["RE", "RQ"]), max_size=2))
def test_random_arguments_with_directory(fuzz_directory, ops, extra):
    ops = ops + [("bind", n, m) for n, m in zip(extra, reversed(extra))]
    with pyzmq.ZMQ(fuzz_directory, timeout=2.0, hwm=10, bind_timeout=2.0) as zmq:
        zmq.create_exchange("E")            # slot 1: to a local, a global and a remote queue
        zmq.create_queue("Q")
        zmq.create_queue("GQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        zmq.bind("E", "Q")
        zmq.bind("E", "GQ")
        zmq.bind("E", "RQ")
        zmq.bind("RE", "Q")
        _run(zmq, ops)


# Out-of-range numbers are bad values: ValueError (README, "Errors").
_numbers = {
    "send id 2**63": lambda z, e: z.send(2**63, b"x"),
    "send id -2**63-1": lambda z, e: z.send(-2**63 - 1, b"x"),
    "send_many id 2**64": lambda z, e: z.send_many(2**64, [b"x"]),
    "receive_many 2**63": lambda z, e: z.receive_many(2**63, timeout=0),
    # a huge timeout is a long wait, not an error: a message is waiting here
    "receive timeout 10**400": lambda z, e: (z.send(e, b"x"), z.receive(timeout=10**400)),
    "send timeout 10**400": lambda z, e: z.send(e, b"x", timeout=10**400),
    "serve -10**400": lambda z, e: z.serve(-10**400),
    "ZMQ hwm 2**31": lambda z, e: pyzmq.ZMQ(hwm=2**31),
    "ZMQ linger 1e12": lambda z, e: pyzmq.ZMQ(linger=1e12),
    "ZMQ timeout 10**400": lambda z, e: pyzmq.ZMQ(timeout=10**400),
}


@pytest.mark.parametrize("case", list(_numbers))
def test_out_of_range_numbers_raise_documented_errors(case):
    with pyzmq.ZMQ() as zmq:
        eid = zmq.create_exchange("E")
        zmq.create_queue("Q")
        zmq.bind("E", "Q")
        try:
            _numbers[case](zmq, eid)
        except DOCUMENTED:
            pass


# -- a relay whose queue stops taking messages ---------------------------------

RELAY_EXCHANGE = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], hwm=10)
e = z.create_exchange("RE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while True:
    try:
        z.send(e, b"x" * 1000, timeout=0.01)
    except pyzmq.Timeout:
        pass
    z.serve(0)
"""

RELAY_QUEUE = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1], hwm=10)
z.create_queue("RQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
time.sleep(600)
"""

RELAY_BINDER = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1], hwm=10)
z.bind("RE", "RQ")              # both remote: a relay thread in this process
print("bound", flush=True)
sys.stdin.readline()
started = time.monotonic()
left = z.close(timeout=float(sys.argv[2]))
print("closed", round(time.monotonic() - started, 3), left, flush=True)
"""


@pytest.mark.parametrize("fate", ["stopped", "killed"])
def test_relay_to_a_queue_that_stops_reading_closes_cleanly(directory, fate):
    # libzmq's own proxy, used here before, blocked in a send to the full
    # queue and could not be stopped: close() waited 5 s, then closed the
    # relay's sockets under its thread and libzmq aborted the process.
    # Now close() drains the relay: a stopped queue is waited for up to the
    # close timeout (1 s here), then what the relay held is counted; a
    # killed one is not waited for at all (its consumer is gone), and what
    # the relay had received for it and drops (its XSUB's) is counted.
    import signal
    with Peer(RELAY_EXCHANGE, directory) as ex, Peer(RELAY_QUEUE, directory) as q:
        ex.expect("ready")
        q.expect("ready")
        with Peer(RELAY_BINDER, directory, 1.0 if fate == "stopped" else 10.0) as binder:
            binder.expect("bound")
            time.sleep(1.0)     # the relay fills the queue's pipes
            if fate == "stopped":
                q.proc.send_signal(signal.SIGSTOP)
            else:
                q.proc.kill()
            time.sleep(1.0)     # and then its own
            binder.tell("close")
            took, left = binder.expect("closed", timeout=20).split()
            assert binder.wait(10) == 0, binder.err()
            assert float(took) < 3.0, f"close() took {took} s"
            # the exchange kept sending: the relay's XSUB was full (and,
            # stopped, its PUSH too when the second ran out)
            assert int(left) > 0, left
        if fate == "stopped":
            q.proc.send_signal(signal.SIGCONT)


# -- an owner that comes back at another address is followed -------------------

MOVING_QUEUE = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
z.create_queue("MQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")    # a new free port each start
print("ready", z._objects["MQ"].address, flush=True)
while True:
    print("got", z.receive().decode(), flush=True)
"""

MOVING_EXCHANGE = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
e = z.create_exchange("MX", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", z._objects["MX"].address, flush=True)
i = 0
while True:
    z.send(e, f"{sys.argv[2]}{i}".encode())
    i += 1
    z.serve(0.05)               # lets binders in between messages
"""


def test_a_queue_owner_back_on_another_port_is_followed(directory):
    # Before: the binder's PUSH kept reconnecting to the dead port forever.
    with pyzmq.ZMQ(directory, hwm=10) as z:
        eid = z.create_exchange("E")
        with Peer(MOVING_QUEUE, directory) as first:
            old = first.expect("ready")
            z.bind("E", "MQ")
            z.send(eid, b"before")
            assert first.expect("got") == "before"
            first.proc.kill()
            first.proc.wait(5)
        client = DirectoryClient(directory)
        try:
            assert wait_until(lambda: is_free(client, "MQ"), 10.0)
        finally:
            client.close()
        with Peer(MOVING_QUEUE, directory) as second:
            new = second.expect("ready")
            assert new != old
            started = time.monotonic()
            for i in range(100):
                z.send(eid, f"m{i}".encode(), timeout=20)
            got = []
            while not got or got[-1] != "m99":
                got.append(second.expect("got", timeout=20))
            numbers = [int(m[1:]) for m in got]
            assert numbers == sorted(numbers), "out of order"
            print(f"followed {old} -> {new}: m{numbers[0]}..m99 arrived, "
                  f"{time.monotonic() - started:.2f} s after the first send")
            # a close now finds the re-pointed PUSH connected (its watch
            # forgot the dead port): its marker goes and is written out
            drain = _zmq._drain_start(z, 10)
            try:
                deadline = time.monotonic() + 15
                while not drain.step():
                    assert time.monotonic() < deadline, drain.states()
                    time.sleep(0.001)
                assert [(ep, st) for _, ep, st in drain.states()] == [(f"tcp://{new}", "left")]
            finally:
                drain.release()


def test_an_exchange_owner_back_on_another_port_is_followed(directory):
    with pyzmq.ZMQ(directory) as z:
        z.create_queue("Q")
        with Peer(MOVING_EXCHANGE, directory, "a") as first:
            old = first.expect("ready")
            z.bind("MX", "Q")
            assert z.receive(timeout=10).startswith(b"a")
            first.proc.kill()
            first.proc.wait(5)
        while z.receive(block=False) is not None:
            pass                # what the first owner sent before it died
        wait_name_free(directory, "MX")     # its lease expires
        with Peer(MOVING_EXCHANGE, directory, "b") as second:
            new = second.expect("ready")
            assert new != old
            started = time.monotonic()
            message = z.receive(timeout=20)
            assert message.startswith(b"b"), message
            print(f"followed {old} -> {new}: first message after "
                  f"{time.monotonic() - started:.2f} s")


STALLED_QUEUE = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1], hwm=5)
z.create_queue("SQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
time.sleep(600)                  # never reads
"""


def test_looking_for_a_moved_peer_keeps_the_send_timeout(directory_server):
    # A send waiting on a full queue asks the directory whether the queue
    # moved; a directory that hangs must not stretch the send's timeout.
    import signal
    with Peer(STALLED_QUEUE, directory_server.address) as owner, \
            pyzmq.ZMQ(directory_server.address, hwm=5, timeout=5.0, linger=0.5) as z:
        # (linger: the stalled queue never reads, so close() would wait its 10 s)
        owner.expect("ready")
        eid = z.create_exchange("E")
        z.bind("E", "SQ")
        os.kill(directory_server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(pyzmq.Timeout):
                for _ in range(100_000):
                    z.send(eid, b"x" * 1000, timeout=2.0)
            took = time.monotonic() - started
        finally:
            os.kill(directory_server.pid, signal.SIGCONT)
        # the last send waited its 2 s (the earlier ones went straight into
        # the pipes), not 2 s plus the directory's 5 s timeout
        assert took < 4.0, f"the timed-out send returned after {took:.2f} s"


def test_an_owner_recreated_by_another_instance_of_this_process_is_followed(directory):
    # in one process bindings go through inproc, to the owning instance's
    # own endpoint: a new owner instance has a new one
    with pyzmq.ZMQ(directory, hwm=10) as binder:
        eid = binder.create_exchange("E")
        first = pyzmq.ZMQ(directory)
        first.create_queue("RQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        binder.bind("E", "RQ")
        binder.send(eid, b"before")
        assert first.receive(timeout=5) == b"before"
        first.close()
        with pyzmq.ZMQ(directory) as second:
            second.create_queue("RQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            for i in range(30):          # more than the old pipe held
                binder.send(eid, b"after%d" % i, timeout=10)
            got = [second.receive(timeout=5) for _ in range(5)]
            assert all(m.startswith(b"after") for m in got), got


HELD_EXCHANGE = COMMANDS + """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
e = z.create_exchange("HX", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while (c := next_command(z)) != "quit":
    z.send(e, c.encode())
"""


def test_a_hung_directory_does_not_delay_delivery(directory_server):
    # The look for moved peers runs in the directory client's own thread: a
    # receive waiting on a remote exchange gets its message at once even
    # while the directory hangs (it once waited out the directory timeout).
    import signal
    import threading
    with Peer(HELD_EXCHANGE, directory_server.address) as owner, \
            pyzmq.ZMQ(directory_server.address, timeout=5.0) as z:
        owner.expect("ready")
        z.create_queue("Q")
        z.bind("HX", "Q")
        os.kill(directory_server.pid, signal.SIGSTOP)
        try:
            timer = threading.Timer(1.5, owner.tell, ("late",))
            started = time.monotonic()
            timer.start()
            message = z.receive(timeout=10)
            took = time.monotonic() - started
        finally:
            os.kill(directory_server.pid, signal.SIGCONT)
        assert message == b"late"
        assert took < 3.0, f"received {took:.2f} s into the wait, sent at 1.5 s"
        owner.tell("quit")
