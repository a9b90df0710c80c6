"""CURVE on the data path: encrypted listeners, keys in the directory, ZAP
refusal of client keys not allowed.  Real zmq_server, real peer processes
(bindings between instances of one process go through inproc, never CURVE)."""

import errno
import os
import signal
import socket
import time

import pytest

import pyzmq
from pyzmq.directory import DirectoryClient
from helpers import Peer, wait_name_free

pytestmark = pytest.mark.skipif(not pyzmq._zmq.has("curve"), reason="libzmq without CURVE")

# A peer owning, with a secret key, the global exchange E and global queue Q
# (and, in a plain instance beside it, the global exchange P and queue PQ).
# Commands on stdin: "send TEXT" on E, "psend TEXT" on P, "quit".  Prints
# "got TEXT" for every message reaching Q, "pgot TEXT" for PQ.
OWNER = """
import queue, sys, threading, pyzmq
cmds = queue.Queue()
threading.Thread(target=lambda: [cmds.put(l.strip()) for l in sys.stdin], daemon=True).start()
allowed = None if sys.argv[3] == "-" else sys.argv[3].split(",")
z = pyzmq.ZMQ(sys.argv[1], secret_key=sys.argv[2], allowed_keys=allowed)
e = z.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
z.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
p = pyzmq.ZMQ(sys.argv[1])
pe = p.create_exchange("P", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
p.create_queue("PQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
while True:
    m = z.receive(block=False) or None
    if m is None:
        try:
            m = z.receive(timeout=0.02)
        except pyzmq.Timeout:
            pass
    if m is not None:
        print("got", m.decode(), flush=True)
    try:
        print("pgot", p.receive(timeout=0.005).decode(), flush=True)
    except pyzmq.Timeout:
        pass
    try:
        c = cmds.get_nowait()
    except queue.Empty:
        continue
    if c == "quit":
        break
    verb, text = c.split(" ", 1)
    (z.send(e, text.encode()) if verb == "send" else p.send(pe, text.encode()))
    print("sent", text, flush=True)
z.close()
p.close()
"""


def _receive(zmq, timeout=5.0):
    return zmq.receive(timeout=timeout)


def test_keypair_and_public():
    pub, sec = pyzmq.curve_keypair()
    assert len(pub) == len(sec) == 40
    assert pyzmq.curve_public(sec) == pub
    assert pyzmq.curve_keypair() != (pub, sec)


def test_key_of_wrong_type():
    with pytest.raises(TypeError, match="must be a str"):
        pyzmq.ZMQ(secret_key=b"x" * 40)


@pytest.mark.parametrize("kwargs, text", [
    ({"secret_key": "short"}, "40 Z85"),
    ({"secret_key": "~" * 40}, "not a Z85 character"),
    ({"secret_key": "SECRET", "allowed_keys": None}, "40 Z85"),
    ({"allowed_keys": []}, "needs secret_key"),
    ({"secret_key": "GOOD", "allowed_keys": "GOOD"}, "iterable"),
    ({"secret_key": "GOOD", "allowed_keys": ["nope"]}, "40 Z85"),
])
def test_bad_keys(kwargs, text):
    pub, sec = pyzmq.curve_keypair()
    kwargs = {k: (sec if v == "GOOD" else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=text):
        pyzmq.ZMQ(**kwargs)
    with pytest.raises(ValueError):
        pyzmq.curve_public("abc")


def test_round_trip_both_directions(directory):
    pub, sec = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, "-") as owner:
        owner.expect("ready")
        with DirectoryClient(directory) as d:
            assert d.lookup("E")[2] == pub
            assert d.lookup("Q")[2] == pub
            assert d.lookup("P")[2] == ""
        with pyzmq.ZMQ(directory, bind_timeout=10) as zmq:   # ephemeral client key
            zmq.create_queue("q")
            x = zmq.create_exchange("x")
            zmq.bind("E", "q")                 # SUB -> CURVE XPUB
            zmq.bind("x", "Q")                 # PUSH -> CURVE PULL
            owner.tell("send from-owner")
            assert _receive(zmq) == b"from-owner"
            zmq.send(x, b"to-owner")
            assert owner.expect("got") == "to-owner"
            zmq.bind("P", "q")                 # plain beside it
            owner.tell("psend plain")
            assert _receive(zmq) == b"plain"
        owner.tell("quit")
        owner.wait()


def test_relay_between_two_curve_objects(directory):
    pub, sec = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, "-") as owner:
        owner.expect("ready")
        with pyzmq.ZMQ(directory) as zmq:
            zmq.bind("E", "Q")                 # both remote: relay, both CURVE
            owner.tell("send relayed")
            assert owner.expect("got") == "relayed"
        owner.tell("quit")
        owner.wait()


def test_allowed_keys(directory):
    pub, sec = pyzmq.curve_keypair()
    good_pub, good_sec = pyzmq.curve_keypair()
    bad_pub, bad_sec = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, good_pub) as owner:
        owner.expect("ready")
        with pyzmq.ZMQ(directory, secret_key=bad_sec, bind_timeout=1.5) as bad, \
                pyzmq.ZMQ(directory, secret_key=good_sec) as good, \
                pyzmq.ZMQ(directory, bind_timeout=1.5) as stranger:
            # refused: a bind to the exchange times out, within bind_timeout
            bad.create_queue("q")
            t = time.monotonic()
            with pytest.raises(pyzmq.Error, match="CURVE key") as refused:
                bad.bind("E", "q")
            assert time.monotonic() - t < 1.5 + 1
            # the handshake failure is seen at once (socket monitor), not as a Timeout
            assert not isinstance(refused.value, pyzmq.Timeout)
            assert "refused" in str(refused.value)
            stranger.create_queue("q")
            with pytest.raises((pyzmq.Timeout, pyzmq.Error)):
                stranger.bind("E", "q")
            # refused: a bind to the queue says so, and nothing is wired
            bx = bad.create_exchange("x")
            with pytest.raises(pyzmq.Error, match="refused this instance's CURVE key"):
                bad.bind("x", "Q")
            assert ("x", "Q") not in bad.bindings
            bad.send(bx, b"from-bad")       # bound nowhere: dropped

            good.create_queue("q")
            gx = good.create_exchange("x")
            good.bind("E", "q")
            good.bind("x", "Q")
            owner.tell("send secret")
            assert _receive(good) == b"secret"
            good.send(gx, b"from-good")
            assert owner.expect("got") == "from-good"
            with pytest.raises(pyzmq.Timeout):
                bad.receive(timeout=0.3)
            # the plain exchange beside it still serves anyone
            bad.bind("P", "q")
            owner.tell("psend plain")
            assert _receive(bad) == b"plain"
        owner.tell("quit")
        assert not any("from-bad" in line for line in owner.remaining_lines())
        owner.wait()


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _settled_fds(before, timeout=2.0):
    """The open fd count once libzmq's reaper has closed what it will
    (sockets close asynchronously); returns early when back to before."""
    t = time.monotonic() + timeout
    while _open_fds() > before and time.monotonic() < t:
        time.sleep(0.02)
    return _open_fds()


def test_refused_bind_to_a_queue_raises_at_once_and_wires_nothing(directory):
    pub, sec = pyzmq.curve_keypair()
    good_pub, good_sec = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, good_pub) as owner:
        owner.expect("ready")
        with pyzmq.ZMQ(directory, bind_timeout=10) as zmq:     # a key not allowed
            x = zmq.create_exchange("x")
            zmq.create_queue("q")
            zmq.bind("P", "q")          # a plain binding first: its sockets stay
            fds = _open_fds()
            for attempt in range(3):
                t = time.monotonic()
                with pytest.raises(pyzmq.Error) as refused:
                    zmq.bind("x", "Q")
                assert time.monotonic() - t < 2.0       # not bind_timeout
                assert not isinstance(refused.value, pyzmq.Timeout)
                assert refused.value.errno == errno.EACCES
                assert "the queue at tcp://" in str(refused.value)
                assert "refused this instance's CURVE key" in str(refused.value)
                assert "allowed_keys" in str(refused.value)
            # the PUSHes and their monitors are gone, and the exchange is as
            # it was: bound nowhere, so a send is dropped at once
            assert _settled_fds(fds) <= fds
            assert zmq.bindings == [("P", "q")]
            assert zmq.send(x, b"lost", timeout=0) is True
            # ... and it still works with another binding, local or remote
            zmq.bind("x", "q")
            zmq.send(x, b"local")
            assert _receive(zmq) == b"local"
            zmq.bind("x", "PQ")
            zmq.send(x, b"plain")
            assert owner.expect("pgot") == "plain"
            assert _receive(zmq) == b"plain"        # fan-out: q has a copy too
        owner.tell("quit")
        assert not any("lost" in line for line in owner.remaining_lines())


def test_allowed_bind_to_a_queue_returns_with_the_link_up(directory):
    pub, sec = pyzmq.curve_keypair()
    good_pub, good_sec = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, good_pub) as owner:
        owner.expect("ready")
        with pyzmq.ZMQ(directory, secret_key=good_sec, bind_timeout=10) as zmq:
            x = zmq.create_exchange("x")
            t = time.monotonic()
            zmq.bind("x", "Q")
            assert time.monotonic() - t < 2.0
            assert zmq.bindings == [("x", "Q")]
            zmq.send(x, b"first")
            assert owner.expect("got") == "first"
            zmq.bind("x", "PQ")             # a plain queue beside it
            zmq.send(x, b"both")
            assert {owner.expect(""), owner.expect("")} == {"got both", "pgot both"}
        owner.tell("quit")
        owner.wait()


def test_refused_relay_to_a_queue(directory):
    pub, sec = pyzmq.curve_keypair()
    good_pub, good_sec = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, good_pub) as owner:
        owner.expect("ready")
        with pyzmq.ZMQ(directory, bind_timeout=10) as zmq:
            t = time.monotonic()
            with pytest.raises(pyzmq.Error) as refused:
                zmq.bind("P", "Q")          # plain exchange -> refusing CURVE queue
            assert time.monotonic() - t < 2.0
            assert refused.value.errno == errno.EACCES
            assert "refused this instance's CURVE key" in str(refused.value)
            assert zmq.bindings == []
            zmq.bind("P", "PQ")             # a relay that is let in still works
            owner.tell("psend relayed")
            assert owner.expect("pgot") == "relayed"
        with pyzmq.ZMQ(directory, secret_key=good_sec) as zmq:
            zmq.bind("P", "Q")
            owner.tell("psend allowed")
            assert owner.expect("got") == "allowed"
        owner.tell("quit")
        owner.wait()


def test_key_that_is_not_the_owners(directory):
    """A directory record whose key does not fit the listener.  A plain
    listener fails the handshake (EPROTO at once when libzmq reads the
    mismatched greeting before the listener hangs up; else a Timeout that
    says the listener kept closing the connection); a CURVE listener with
    another key just hangs up, so bind() times out, saying so."""
    pub, sec = pyzmq.curve_keypair()
    other_pub, _ = pyzmq.curve_keypair()
    with Peer(OWNER, directory, sec, "-") as owner, DirectoryClient(directory) as d:
        owner.expect("ready")
        d.register("Q", "PQ-with-key", d.lookup("PQ")[1], key=other_pub)
        d.register("E", "P-with-key", d.lookup("P")[1], key=other_pub)
        d.register("Q", "Q-other-key", d.lookup("Q")[1], key=other_pub)
        with pyzmq.ZMQ(directory, bind_timeout=1.0) as zmq:
            x = zmq.create_exchange("x")
            zmq.create_queue("q")
            for args in (("x", "PQ-with-key"), ("P-with-key", "q")):
                with pytest.raises(pyzmq.Error) as failed:
                    zmq.bind(*args)
                if isinstance(failed.value, pyzmq.Timeout):
                    assert "closed the connection" in str(failed.value)
                else:
                    assert failed.value.errno == errno.EPROTO
                    assert "not a CURVE server" in str(failed.value)
            t = time.monotonic()
            with pytest.raises(pyzmq.Timeout, match="did not complete the CURVE handshake"
                                                    ".*closed the connection"):
                zmq.bind("x", "Q-other-key")
            assert 0.9 < time.monotonic() - t < 3.0
            assert zmq.bindings == []
        owner.tell("quit")
        owner.wait()


# A binder whose CURVE handshake never ends (the queue's "listener" accepts
# and says nothing): Ctrl-C interrupts bind(), and the instance stays usable.
SILENT_QUEUE_BINDER = """
import sys, time, pyzmq
zmq = pyzmq.ZMQ(sys.argv[1], bind_timeout=60)
x = zmq.create_exchange("x")
zmq.create_queue("q")
print("WAITING", flush=True)
t = time.monotonic()
try:
    zmq.bind("x", "SILENT")
except KeyboardInterrupt:
    print("INTERRUPTED %.3f" % (time.monotonic() - t), flush=True)
zmq.bind("x", "q")
zmq.send(x, b"again")
assert zmq.receive(timeout=1) == b"again"
assert zmq.bindings == [("x", "q")]
print("USABLE", flush=True)
zmq.close()
"""


@pytest.fixture
def silent_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_bind_to_a_queue_that_never_answers(directory, silent_listener):
    pub, _ = pyzmq.curve_keypair()
    with DirectoryClient(directory) as d:
        d.register("Q", "SILENT", silent_listener, key=pub)
        d.register("Q", "SILENT-PLAIN", silent_listener)
        with pyzmq.ZMQ(directory, bind_timeout=0.5) as zmq:
            x = zmq.create_exchange("x")
            t = time.monotonic()
            with pytest.raises(pyzmq.Timeout, match="CURVE handshake"):
                zmq.bind("x", "SILENT")
            assert 0.45 < time.monotonic() - t < 2.0
            # a plain PUSH does not wait for its peer at all
            t = time.monotonic()
            zmq.bind("x", "SILENT-PLAIN")
            assert time.monotonic() - t < 0.2
        with Peer(SILENT_QUEUE_BINDER, directory) as p:
            p.expect("WAITING")
            time.sleep(0.5)                 # in the handshake wait by now
            assert p.interrupt() < 1.0
            p.expect("USABLE")
            assert p.wait() == 0


def test_zap_handler_does_not_hold_exit(directory):
    code = """
import sys, pyzmq
pub, sec = pyzmq.curve_keypair()
z = pyzmq.ZMQ(sys.argv[1], secret_key=sec)
z.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
assert pyzmq._zmq._zap_running()
print("made", flush=True)
"""
    t = time.monotonic()
    with Peer(code, directory) as p:
        p.expect("made")
        assert p.wait(10) == 0
    assert time.monotonic() - t < 5


KEYED_QUEUE = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1], secret_key=sys.argv[2])
z.create_queue("KQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:" + sys.argv[3])
print("ready", flush=True)
while True:
    print("got", z.receive().decode(), flush=True)
"""


@pytest.mark.parametrize("second_key", ["new", "none"])
def test_an_owner_back_at_the_same_port_with_another_key_is_followed(directory, second_key):
    # the address is the same, the key in the directory is not: a binder
    # that said the key may change (follow=) re-points with the new key (or,
    # none, back to a plain connection); by default it would not
    # (tests/test_security.py)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pyzmq.ZMQ(directory, hwm=10) as zmq:
        eid = zmq.create_exchange("E")
        with Peer(KEYED_QUEUE, directory, pyzmq.curve_keypair()[1], port) as first:
            first.expect("ready")
            zmq.bind("E", "KQ", follow="any-key" if second_key == "new" else "any")
            zmq.send(eid, b"before")
            assert first.expect("got") == "before"
            first.proc.kill()
            first.proc.wait(5)
        wait_name_free(directory, "KQ")   # its lease expires
        if second_key == "new":
            code = KEYED_QUEUE
        else:
            code = KEYED_QUEUE.replace(", secret_key=sys.argv[2]", "")
        with Peer(code, directory, pyzmq.curve_keypair()[1], port) as second:
            second.expect("ready")
            for i in range(40):
                zmq.send(eid, f"m{i}".encode(), timeout=10)
            got = []
            while not got or got[-1] != "m39":
                got.append(second.expect("got", timeout=15))
