"""The check conftest.py runs around every test (helpers.Snapshot): it sees
an instance left open, a thread left running and bytes lent to libzmq that
never come back, and lets through what lives for the process by design."""

import subprocess
import sys
import textwrap
import threading

import pytest

import pyzmq
from helpers import ROOT, Snapshot, child_env, loans_back

BIG = b"x" * (1 << 20)          # above ZERO_COPY_MIN: lent to libzmq, not copied


def _wired(z):
    """Exchange E bound to queue Q (inproc) in instance z; returns E's id."""
    eid = z.create_exchange("E")
    z.create_queue("Q")
    z.bind("E", "Q")
    return eid


def test_an_instance_left_open_is_reported_and_closed():
    before = Snapshot()
    z = pyzmq.ZMQ()
    z.create_queue("forgotten")
    leaks = before.leaks(grace=0.1)
    assert len(leaks) == 1 and "1 instance(s) left open" in leaks[0] and "forgotten" in leaks[0], leaks
    assert z.closed                 # closed, so that the next test starts clean
    assert before.leaks(grace=0.1) == []


def test_a_closed_instance_is_not_a_leak():
    before = Snapshot()
    with pyzmq.ZMQ() as z:
        eid = _wired(z)
        z.send(eid, BIG)
        assert z.receive2(timeout=5) == (z._objects["Q"].id, BIG)
    assert before.leaks() == []


def test_close_lets_go_of_the_last_large_message_received():
    before = Snapshot()
    with pyzmq.ZMQ() as z:
        eid = _wired(z)
        z.send(eid, BIG)
        assert z.receive(timeout=5) == BIG      # the fast path keeps this message
    released = loans_back(before.loans, timeout=1.0)
    del z                           # freeing the instance lets go of it (so the leak
    assert loans_back(before.loans)  # check after this test passes either way)
    assert released


def test_a_thread_left_running_is_reported_until_it_ends():
    before = Snapshot()
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="left running", daemon=True)
    t.start()
    leaks = before.leaks(grace=0.1)
    assert len(leaks) == 1 and "'left running'" in leaks[0], leaks
    release.set()
    t.join(5)
    assert before.leaks(grace=0.1) == []


def test_the_process_wide_zap_thread_is_allowed():
    before = Snapshot()
    public, secret = pyzmq.curve_keypair()
    with pyzmq.ZMQ(secret_key=secret, allowed_keys=[public]):
        pass                        # the first CURVE instance starts the ZAP handler
    zap = [t for t in threading.enumerate() if t.name == "pyzmq-wiring ZAP"]
    assert len(zap) == 1 and zap[0].is_alive()
    before.threads.discard(zap[0])  # as if this test started it (an earlier one may have)
    assert before.leaks(grace=0.1) == []


def test_a_loan_never_handed_back_is_reported():
    with pyzmq.ZMQ() as z:
        eid = _wired(z)
        before = Snapshot()             # the instance is older: only the loan is new
        z.send(eid, BIG)                # waits, unread, in the queue's pipe
        leaks = before.leaks(grace=0.2)
        assert len(leaks) == 1 and "1 zero-copy loan(s) outstanding" in leaks[0], leaks
    assert loans_back(before.loans)     # closing the queue dropped the message


LEAKY_TESTS = """
import threading
import pyzmq

def test_clean():
    with pyzmq.ZMQ() as z:
        z.create_queue("Q")

def test_leaves_an_instance():
    test_leaves_an_instance.z = pyzmq.ZMQ()

def test_leaves_a_thread():
    ev = threading.Event()
    test_leaves_a_thread.ev = ev
    threading.Thread(target=ev.wait, args=(30,), name="stray", daemon=True).start()
"""

SUITE_CONFTEST = """
import importlib.util, sys
sys.path.insert(0, {tests!r})
spec = importlib.util.spec_from_file_location("suite_conftest", {conftest!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
leaves_nothing_behind = suite.leaves_nothing_behind
"""


def test_the_autouse_fixture_fails_a_leaking_test(tmp_path):
    """The suite's conftest.py, in a pytest run of its own: the clean test
    passes, each leaking one errors at teardown saying what it left."""
    tests = ROOT / "tests"
    (tmp_path / "conftest.py").write_text(textwrap.dedent(SUITE_CONFTEST.format(
        tests=str(tests), conftest=str(tests / "conftest.py"))))
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rE",
                        str(tmp_path)], cwd=tmp_path, env=child_env(), capture_output=True,
                       text=True, timeout=60)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "3 passed, 2 errors" in out, out      # a leak errors at teardown
    assert "ERROR test_leaky.py::test_leaves_an_instance" in out, out
    assert "ERROR test_leaky.py::test_leaves_a_thread" in out, out
    assert "1 instance(s) left open" in out and "'stray'" in out, out
