"""CURVE on the data path: encrypted listeners, keys in the directory, ZAP
refusal of client keys not allowed.  Real zmq_server, real peer processes
(bindings between instances of one process go through inproc, never CURVE)."""

import time

import pytest

import pyzmq
from pyzmq.directory import DirectoryClient
from peers import Peer

pytestmark = pytest.mark.skipif(not pyzmq._zmq.has("curve"), reason="libzmq without CURVE")

# A peer owning, with a secret key, the global exchange E and global queue Q
# (and, in a plain instance beside it, the global exchange P).  Commands on
# stdin: "send TEXT" on E, "psend TEXT" on P, "quit".  Prints "got TEXT" for
# every message reaching Q.
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
    p.serve(0.005)
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
            # refused: what is pushed to the queue never arrives
            bx = bad.create_exchange("x")
            bad.bind("x", "Q")
            bad.send(bx, b"from-bad")

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
        lines = []
        while True:
            try:
                lines.append(owner.expect("", timeout=5))
            except AssertionError:
                break
        assert not any("from-bad" in line for line in lines)
        owner.wait()


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
