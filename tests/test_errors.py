"""Every documented error: the right type, a message that names the problem."""

import socket
import time

import pytest

import pyzmq
from helpers import Peer, free_port


@pytest.fixture
def zmq():
    with pyzmq.ZMQ() as z:
        yield z


def test_error_hierarchy():
    assert issubclass(pyzmq.Timeout, pyzmq.Error)
    assert issubclass(pyzmq.Timeout, TimeoutError)
    assert pyzmq.Error("x", 11).errno == 11


def test_version_and_constants():
    assert pyzmq.__version__
    assert pyzmq.zmq_version().startswith("4.")
    assert pyzmq.SCOPE_LOCAL != pyzmq.SCOPE_GLOBAL


@pytest.mark.parametrize("name", [None, 1, b"E"])
def test_name_of_wrong_type(zmq, name):
    with pytest.raises(TypeError, match="name must be a str"):
        zmq.create_exchange(name)
    with pytest.raises(TypeError, match="name must be a str"):
        zmq.create_queue(name)


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 300])
def test_bad_name(zmq, name):
    with pytest.raises(ValueError):
        zmq.create_exchange(name)


def test_unknown_scope(zmq):
    with pytest.raises(ValueError, match="unknown scope 7"):
        zmq.create_queue("Q", 7)
    with pytest.raises(TypeError, match="scope"):
        zmq.create_queue("Q", "global")


def test_global_without_directory(zmq):
    with pytest.raises(pyzmq.Error, match="pass|ZMQ\\('host"):
        zmq.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")


def test_location_for_local_object(zmq):
    with pytest.raises(ValueError, match="only meaningful for SCOPE_GLOBAL"):
        zmq.create_queue("Q", pyzmq.SCOPE_LOCAL, "127.0.0.1:5555")


@pytest.mark.parametrize("location", ["127.0.0.1:notaport", "127.0.0.1:70000",
                                      "no-such-host.invalid:5555", "a:b:c", "1.2.3.4 :5"])
def test_malformed_location(directory, location):
    with pyzmq.ZMQ(directory) as zmq:
        with pytest.raises(ValueError, match="location|port"):
            zmq.create_exchange("E", pyzmq.SCOPE_GLOBAL, location)


@pytest.mark.parametrize("location", ["5555", "0", "80"])
def test_a_bare_port_as_location_says_how_to_write_it(directory, location):
    """location="5555" meant a port; read as a host it became the IPv4
    address 0.0.21.179 and failed to listen there."""
    with pyzmq.ZMQ(directory) as zmq:
        with pytest.raises(ValueError, match=rf"location '{location}' is a bare number.*"
                                             rf"'\*:{location}'.*'127.0.0.1:{location}'"):
            zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, location)


def test_a_directory_object_for_the_hostname_says_to_give_its_address(directory):
    with pyzmq.Directory() as embedded:
        with pytest.raises(TypeError, match=r"pyzmq.ZMQ\(directory.address\)"):
            pyzmq.ZMQ(embedded)


def test_location_in_use(directory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pyzmq.ZMQ(directory) as zmq:
            with pytest.raises(pyzmq.Error, match="cannot listen") as e:
                zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, f"127.0.0.1:{port}")
            assert e.value.errno is not None
            # the failed name is not half-created: it can be created elsewhere
            zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")


def test_same_name_other_arguments(zmq):
    zmq.create_exchange("E")
    with pytest.raises(pyzmq.Error, match="'E' already exists"):
        zmq.create_queue("E")


def test_unknown_exchange_id(zmq):
    with pytest.raises(ValueError, match="unknown exchange id 99"):
        zmq.send(99, b"x")
    with pytest.raises(ValueError, match="unknown exchange id 0"):
        zmq.send(0, b"x")
    # the name where the id goes: the message says which id, and how to keep it
    with pytest.raises(TypeError, match=r"exchange id must be the int create_exchange\(\) "
                                        r"returned, not the name 'E'.*eid = zmq.create_exchange"):
        zmq.send("E", b"x")
    with pytest.raises(TypeError, match="exchange id must be the int.*not float"):
        zmq.send(1.0, b"x")
    with pytest.raises(TypeError, match="exchange id must be the int.*not the name"):
        zmq.send_many("E", [b"x"])
    with pytest.raises(TypeError, match="exchange id must be the int.*not NoneType"):
        zmq.wait_bound(None, timeout=0)


def test_unknown_style_says_which_there_are(zmq):
    with pytest.raises(ValueError, match="unknown exchange style 9: use pyzmq.STYLE_DATA_"
                                         "DISTRIBUTION or pyzmq.STYLE_LOAD_BALANCING"):
        zmq.create_exchange("E", style=9)


def test_message_types(zmq):
    eid = zmq.create_exchange("E")
    with pytest.raises(TypeError, match="not str"):
        zmq.send(eid, "text")
    with pytest.raises(TypeError, match="not int"):
        zmq.send(eid, 5)
    with pytest.raises(TypeError, match="contiguous"):
        zmq.send(eid, memoryview(b"abcdef")[::2])


def test_bind_unknown_names(zmq):
    zmq.create_exchange("E")
    with pytest.raises(pyzmq.Error, match="unknown queue 'nope'"):
        zmq.bind("E", "nope")


def test_bind_global_name_of_the_other_kind(directory):
    with pyzmq.ZMQ(directory) as owner, pyzmq.ZMQ(directory) as zmq:
        owner.create_queue("GQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        zmq.create_queue("Q")
        with pytest.raises(pyzmq.Error, match="'GQ' is a queue, not an exchange"):
            zmq.bind("GQ", "Q")


def test_bind_unknown_global_name(directory):
    with pyzmq.ZMQ(directory) as zmq:
        zmq.create_queue("Q")
        with pytest.raises(pyzmq.Error, match="'nope'"):
            zmq.bind("nope", "Q")


def test_bind_kinds_swapped(directory):
    with pyzmq.ZMQ(directory) as zmq:
        zmq.create_exchange("E")
        zmq.create_queue("Q", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
        with pytest.raises(pyzmq.Error, match="'Q' is a queue of this instance, not an exchange"):
            zmq.bind("Q", "E")


def test_duplicate_global_name_from_another_process(directory):
    code = """
import sys, pyzmq
z = pyzmq.ZMQ(sys.argv[1])
z.create_exchange("TAKEN", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("READY", flush=True)
sys.stdin.readline()
"""
    with Peer(code, directory) as p:
        p.expect("READY")
        with pyzmq.ZMQ(directory) as zmq:
            with pytest.raises(pyzmq.Error, match="TAKEN"):
                zmq.create_exchange("TAKEN", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            with pytest.raises(pyzmq.Error, match="TAKEN"):
                zmq.create_queue("TAKEN", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")


def test_unreachable_directory_fails_in_bounded_time():
    port = free_port()
    t = time.monotonic()
    with pytest.raises(pyzmq.Error, match=str(port)):
        pyzmq.ZMQ(f"127.0.0.1:{port}", timeout=1.0)
    assert time.monotonic() - t < 3.0


def test_directory_gone(directory_server):
    zmq = pyzmq.ZMQ(directory_server.address, timeout=1.0)
    directory_server.stop()
    zmq.create_queue("Q")
    with pytest.raises(pyzmq.Error, match="directory"):
        zmq.create_queue("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    zmq.close()


@pytest.mark.parametrize("hostname,exc", [(5, TypeError), ("", ValueError),
                                          ("host:port", ValueError), ("h:99999", ValueError)])
def test_malformed_hostname(hostname, exc):
    with pytest.raises(exc):
        pyzmq.ZMQ(hostname)


def test_calls_after_close():
    zmq = pyzmq.ZMQ()
    eid = zmq.create_exchange("E")
    zmq.close()
    for call in (lambda: zmq.send(eid, b"x"), zmq.receive, lambda: zmq.create_queue("Q"),
                 lambda: zmq.bind("E", "Q")):
        with pytest.raises(pyzmq.Error, match="closed"):
            call()


def test_receive_timeout(zmq):
    zmq.create_queue("Q")
    t = time.monotonic()
    with pytest.raises(pyzmq.Timeout, match="0.2"):
        zmq.receive(timeout=0.2)
    assert 0.15 < time.monotonic() - t < 2.0
    assert zmq.receive(block=False) is None
    with pytest.raises(ValueError):
        zmq.receive(timeout=-1)
    with pytest.raises(TypeError):
        zmq.receive(timeout="1")


def test_receive_without_queue_does_not_hang(zmq):
    with pytest.raises(pyzmq.Error, match="no queue"):
        zmq.receive()


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        pyzmq.ZMQ(hwm=-1)
    with pytest.raises(TypeError):
        pyzmq.ZMQ(timeout="soon")
    with pytest.raises(ValueError, match="at most a day"):
        pyzmq.ZMQ("localhost", timeout=1e10)


# A bad timeout is an error on every path of send and receive, including
# those that return without waiting (and so never use it).
BAD_TIMEOUTS = [("abc", TypeError), (True, TypeError), (b"1", TypeError),
                (-5, ValueError), (-0.001, ValueError), (float("nan"), ValueError),
                (float("-inf"), ValueError), (-10**400, ValueError)]
BAD_IDS = ["str", "bool", "bytes", "-5", "-0.001", "nan", "-inf", "-10**400"]


@pytest.fixture
def bound(zmq):
    """(zmq, eid): exchange E bound to local queue Q, and an unbound U."""
    eid = zmq.create_exchange("E")
    zmq.create_exchange("U")
    zmq.create_queue("Q")
    zmq.bind("E", "Q")
    return zmq, eid


@pytest.mark.parametrize("timeout,exc", BAD_TIMEOUTS, ids=BAD_IDS)
def test_bad_timeout_on_every_send_path(bound, timeout, exc):
    zmq, eid = bound
    unbound = zmq.exchanges["U"]
    calls = {
        "fast path": lambda: zmq.send(eid, b"x", timeout),
        "no wait": lambda: zmq.send(eid, b"x", timeout, block=False),
        "buffer": lambda: zmq.send(eid, bytearray(b"x"), timeout),
        "zero copy": lambda: zmq.send(eid, b"x" * pyzmq._zmq.ZERO_COPY_MIN, timeout),
        "bound nowhere": lambda: zmq.send(unbound, b"x", timeout),
        "send_many": lambda: zmq.send_many(eid, [b"x", b"y"], timeout),
        "send_many, nothing": lambda: zmq.send_many(eid, [], timeout),
    }
    for path, call in calls.items():
        with pytest.raises(exc, match="timeout"):
            call()
            pytest.fail(f"{path}: no error")
    assert zmq.receive(block=False) is None      # nothing was sent


@pytest.mark.parametrize("timeout,exc", BAD_TIMEOUTS, ids=BAD_IDS)
def test_bad_timeout_on_every_receive_path(bound, timeout, exc):
    zmq, eid = bound
    for i in range(6):
        zmq.send(eid, b"%d" % i)
    calls = {
        "fast path": lambda: zmq.receive(timeout),
        "no wait": lambda: zmq.receive(timeout, block=False),
        "frame": lambda: zmq.receive(timeout, copy=False),
        "receive2": lambda: zmq.receive2(timeout),
        "receive2, frame": lambda: zmq.receive2(timeout, copy=False),
        "receive_many": lambda: zmq.receive_many(3, timeout),
    }
    for path, call in calls.items():
        with pytest.raises(exc, match="timeout"):
            call()
            pytest.fail(f"{path}: no error")
    # nothing was taken: every message is still there, in order
    assert zmq.receive_many(10, timeout=0) == [b"%d" % i for i in range(6)]
    with pytest.raises(exc, match="timeout"):       # and with nothing there
        zmq.receive(timeout, block=False)


@pytest.mark.parametrize("timeout", [None, 0, 0.5, 2, float("inf"), 10**400],
                         ids=["None", "0", "0.5", "2", "inf", "10**400"])
def test_good_timeouts_on_the_fast_paths(bound, timeout):
    zmq, eid = bound
    assert zmq.send(eid, b"a", timeout) is True
    assert zmq.send_many(eid, [b"b", b"c"], timeout) == 2
    assert zmq.receive(timeout) == b"a"
    assert zmq.receive2(timeout)[1] == b"b"
    assert zmq.receive_many(5, timeout) == [b"c"]


def test_batch_calls_take_their_documented_keywords_and_say_what_max_count_is(bound):
    # their parameters were named eid_obj and max_count_obj: a keyword was a
    # TypeError, and receive_many("5") said only that an int was needed
    zmq, eid = bound
    assert zmq.send_many(eid=eid, messages=[b"a", b"b"], timeout=1) == 2
    assert zmq.receive_many(max_count=5, timeout=1) == [b"a", b"b"]
    for bad in ("5", 2.0, None, True):
        with pytest.raises(TypeError, match=r"max_count must be an int \(how many messages"):
            zmq.receive_many(bad, timeout=0)


def test_send_many_survives_an_iterator_that_changes_the_instance(bound):
    # send_many read its exchange's slot once, before the loop: an
    # iterator that made exchanges (the slot table is realloc'd) or closed
    # the instance left it reading and sending through freed memory
    zmq, eid = bound

    def growing():
        for i in range(200):
            zmq.create_exchange(f"X{i}")        # the table moves
            yield b"%d" % i

    assert zmq.send_many(eid, growing(), timeout=1) == 200
    assert zmq.receive_many(500, timeout=1) == [b"%d" % i for i in range(200)]

    def closing():
        yield b"a"
        zmq.close()
        yield b"b"

    with pytest.raises(pyzmq.Error, match="closed"):
        zmq.send_many(eid, closing())
