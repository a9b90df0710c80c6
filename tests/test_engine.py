"""The C core on its own: pyzmq._zmq.Engine with no directory and no names.

Slots, the stash, the fast paths, error paths and lifecycles, through the
underscore methods pyzmq/_zmq.pyi lists (the wiring layer's contract).  The
owner side of a sync in the stash tests is the real pyzmq binding's XPUB
(libzmq as well), so the test decides exactly what arrives when.
"""

import asyncio
import errno
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import pyzmq
import pyzmq.asyncio
from pyzmq import _zmq

from helpers import close_in_forked_child

zmq_binding = pytest.importorskip("zmq")   # the pyzmq socket binding (import name zmq)


def local_pair(engine, hwm=-1):
    """An exchange bound to a queue of the same engine through inproc."""
    eid = engine._new_exchange()
    qid = engine._new_queue()
    engine._exchange_connect(eid, engine._queue_connectable(qid), None, hwm)
    return eid, qid


@pytest.fixture
def engine():
    e = _zmq.Engine()
    yield e
    e._close()


# ---- slots ------------------------------------------------------------------

def test_ids_count_up_and_sockets_are_made_when_needed(engine):
    assert engine._counts() == (0, 0, [])
    e1 = engine._new_exchange()
    assert engine._new_exchange(_zmq.STYLE_LOAD_BALANCING) == e1 + 1
    q1 = engine._new_queue()
    assert engine._new_queue(hwm=5) == q1 + 1
    assert engine._counts() == (2, 2, [0, 0])      # no socket until something binds
    engine._queue_connectable(q1 + 1)
    assert engine._counts() == (2, 2, [0, 1])


def test_ids_are_unique_in_the_process_across_kinds_and_instances(engine):
    other = _zmq.Engine()
    try:
        ids = [engine._new_exchange(), engine._new_queue(), other._new_exchange(),
               other._new_queue(), engine._new_exchange(), engine._new_queue()]
        assert len(set(ids)) == len(ids) and all(type(i) is int and i > 0 for i in ids)
        assert engine._is_id(ids[0]) and not engine._is_id(ids[1])
        assert engine._is_id(ids[1], True) and not other._is_id(ids[0])
    finally:
        other._close()


def test_an_id_that_is_not_this_instances_exchange_says_what_it_is(engine):
    eid, qid = local_pair(engine)
    other = _zmq.Engine()
    try:
        oeid, oqid = local_pair(other)
        with pytest.raises(ValueError, match=f"id {qid} is a queue id of this instance"):
            engine.send(qid, b"x")
        with pytest.raises(ValueError, match="belongs to another ZMQ instance"):
            engine.send(oeid, b"x")
        with pytest.raises(ValueError, match="an exchange id of this instance, not a queue"):
            engine._queue_connectable(eid)
        with pytest.raises(ValueError, match="belongs to another ZMQ instance"):
            engine._queue_connectable(oqid)
        with pytest.raises(ValueError, match="unknown exchange id 1: "):
            engine.send(1, b"x")
        with pytest.raises(ValueError, match="belongs to another"):
            engine.send_many(oeid, [b"x"])
        with pytest.raises(ValueError, match="queue id of this instance"):
            engine._fds(qid)
        # nothing went anywhere: neither engine's queue got a message
        assert engine.receive(block=False) is None
        assert other.receive(block=False) is None
    finally:
        other._close()


def test_a_dropped_slot_is_unknown_again(engine):
    eid, qid = local_pair(engine)
    e2 = engine._new_exchange()
    engine._exchange_listen(e2, "tcp://127.0.0.1:0")
    engine._drop_new(e2, False)
    with pytest.raises(ValueError, match=f"unknown exchange id {e2}"):
        engine.send(e2, b"x")
    q2 = engine._new_queue()
    engine._queue_connectable(q2)
    engine._drop_new(q2, True)
    assert engine._counts() == (1, 1, [1])
    assert engine._new_exchange() == e2     # never handed out, so free again
    assert engine.send(eid, b"still") and engine.receive(timeout=1) == b"still"


@pytest.mark.parametrize("style, exc", [(9, ValueError), (True, TypeError), ("lb", TypeError)])
def test_a_bad_style_is_refused_by_the_engine_too(engine, style, exc):
    with pytest.raises(exc, match="style"):
        engine._new_exchange(style)
    assert engine._counts()[0] == 0


@pytest.mark.parametrize("hwm, exc", [(-1, ValueError), (2**31, ValueError), (1.5, TypeError)])
def test_a_bad_mark_is_refused(engine, hwm, exc):
    with pytest.raises(exc, match="hwm"):
        engine._new_queue(hwm)
    with pytest.raises(exc, match="hwm"):
        engine._configure(hwm, 0)


def test_unknown_ids(engine):
    eid, qid = local_pair(engine)
    with pytest.raises(ValueError, match="unknown exchange id 7"):
        engine.send(7, b"x")
    with pytest.raises(ValueError, match="unknown exchange id"):
        engine.send(eid + 1, b"x")
    with pytest.raises(ValueError, match="unknown exchange id"):
        engine.send(10**30, b"x")
    with pytest.raises(TypeError):
        engine.send("1", b"x")
    with pytest.raises(ValueError, match="unknown queue id"):
        engine._queue_connectable(9)


# ---- fast paths ---------------------------------------------------------------

def test_send_and_receive_on_the_fast_paths(engine):
    eid, qid = local_pair(engine)
    for i in range(1000):
        assert engine.send(eid, b"%d" % i) is True
    assert [engine.receive() for _ in range(1000)] == [b"%d" % i for i in range(1000)]
    assert engine.receive(block=False) is None
    engine.send(eid, bytearray(b"buffer"))
    engine.send(eid, memoryview(b"view"))
    assert engine.receive2(timeout=1) == (qid, b"buffer")
    frame = engine.receive(timeout=1, copy=False)
    assert isinstance(frame, _zmq.Frame) and bytes(frame) == b"view" and frame.queue_id == qid


def test_receive_on_one_socket_after_a_wait(engine):
    """With a listener beside it (the service thread's), a queue's one
    socket is received on through the fast path; a call after one that
    waited blocks in the socket at once: it still takes what is already
    there, in order, and honours its timeout and block=False."""
    eid, qid = local_pair(engine)
    engine._exchange_listen(engine._new_exchange(), "tcp://127.0.0.1:0")
    t0 = time.monotonic()
    with pytest.raises(pyzmq.Timeout):
        engine.receive(timeout=0.1)     # waited
    assert time.monotonic() - t0 >= 0.09
    for i in range(5):
        engine.send(eid, b"%d" % i)
    assert [engine.receive(timeout=1) for _ in range(5)] == [b"%d" % i for i in range(5)]
    t0 = time.monotonic()
    with pytest.raises(pyzmq.Timeout):
        engine.receive(timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    assert engine.receive(block=False) is None
    engine.send(eid, b"late")
    assert engine.receive() == b"late"
    engine.send(eid, b"x")
    assert engine.receive2(timeout=0) == (qid, b"x")


def test_batch_forms(engine):
    eid, _ = local_pair(engine)
    assert engine.send_many(eid, (b"m%d" % i for i in range(500))) == 500
    got = engine.receive_many(1000, timeout=1)
    assert got == [b"m%d" % i for i in range(500)]
    with pytest.raises(ValueError, match="max_count"):
        engine.receive_many(0)


def test_send_many_uses_the_engine_send_even_when_a_subclass_replaces_it():
    class Replaced(_zmq.Engine):
        def send(self, *args, **kwargs):
            raise AssertionError("send_many must not call a subclass's send")

    e = Replaced()
    try:
        eid, _ = local_pair(e)
        # one PUSH: the fast path; a str message takes the slow path
        assert e.send_many(eid, [b"a", b"b"]) == 2
        with pytest.raises(TypeError, match="not str"):
            e.send_many(eid, ["text"])
        assert e.receive_many(5, timeout=1) == [b"a", b"b"]
    finally:
        e._close()


def test_large_messages_are_lent_and_given_back(engine):
    eid, _ = local_pair(engine)
    big = b"z" * (_zmq.ZERO_COPY_MIN * 2)
    engine.send(eid, big)
    assert engine.receive(timeout=1) == big
    assert _zmq._loans_outstanding() >= 1      # the fast path keeps the last message...
    engine.send(eid, b"small")
    assert engine.receive(timeout=1) == b"small"   # ...until the next receive
    deadline = time.monotonic() + 5
    while _zmq._loans_outstanding() and time.monotonic() < deadline:
        _zmq._collect_loans()
        time.sleep(0.01)
    assert _zmq._loans_outstanding() == 0


def test_send_waits_for_room_and_times_out(engine):
    eid, _ = local_pair(engine, hwm=1)
    sent = 0
    while engine.send(eid, b"x", block=False):
        sent += 1
        assert sent < 10_000
    t0 = time.monotonic()
    with pytest.raises(pyzmq.Timeout):
        engine.send(eid, b"x", timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 5
    got = 0
    while engine.receive(block=False) is not None:     # the pipe wakes its writer
        got += 1                                        # when it has room again
    assert got == sent
    assert engine.send(eid, b"x", timeout=1)


# ---- the stash: data read while a bind waited for its sync answer -------------

class Owner(threading.Thread):
    """An XPUB of the pyzmq binding playing a global exchange's owner: it
    sends `before` after the first subscription, answers the sync, then
    sends `after`; without `answer` it never answers."""

    def __init__(self, before, after, answer=True):
        super().__init__(daemon=True)
        self.ctx = zmq_binding.Context()
        self.xpub = self.ctx.socket(zmq_binding.XPUB)
        self.xpub.setsockopt(zmq_binding.LINGER, 0)
        port = self.xpub.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.before, self.after, self.answer = before, after, answer
        self.error = None

    def run(self):
        try:
            assert self.xpub.poll(10_000), "no subscription came"
            assert self.xpub.recv() == b"\x01"              # subscribe to everything
            for m in self.before:
                self.xpub.send(m)
            assert self.xpub.poll(10_000), "no sync subscription came"
            topic = self.xpub.recv()[1:]
            assert topic.startswith(_zmq.SYNC_PREFIX)
            if self.answer:
                self.xpub.send_multipart([b"another binder's topic", b""])
                self.xpub.send_multipart([topic, b""])
                for m in self.after:
                    self.xpub.send(m)
        except BaseException as exc:        # reported by the test
            self.error = exc

    def close(self):
        self.join(10)
        self.xpub.close()
        self.ctx.term()
        if self.error:
            raise self.error


def test_what_arrives_before_the_sync_answer_is_stashed_and_received_first(engine):
    owner = Owner([b"s1", b"s2"], [b"a1"])
    owner.start()
    try:
        qid = engine._new_queue()
        handle = engine._queue_subscribe(qid, owner.endpoint, 10)
        assert isinstance(handle, _zmq.BindingHandle)
        assert engine._stashed() == (2, 2)
        assert engine.receive2(timeout=5) == (qid, b"s1")
        assert engine._stashed() == (1, 1)
        assert engine.receive(timeout=5) == b"s2"
        assert engine.receive(timeout=5) == b"a1"   # the other binder's answer was dropped
        assert engine._stashed() == (0, 0)
    finally:
        owner.close()


def test_a_failed_bind_keeps_nothing_it_stashed(engine):
    owner = Owner([b"s1", b"s2"], [], answer=False)
    owner.start()
    try:
        qid = engine._new_queue()
        with pytest.raises(pyzmq.Timeout, match="did not confirm"):
            engine._queue_subscribe(qid, owner.endpoint, 0.5)
        assert engine._stashed() == (0, 0)
        assert engine._counts()[2] == [0]           # the SUB is gone too
    finally:
        owner.close()


def test_an_exchange_listener_answers_a_binder_of_the_same_thread():
    owner, binder = _zmq.Engine(), _zmq.Engine()
    try:
        eid = owner._new_exchange()
        endpoint = owner._exchange_listen(eid, "tcp://127.0.0.1:0")
        qid = binder._new_queue()
        binder._queue_subscribe(qid, endpoint, 10, owner)
        owner.send(eid, b"hello")
        assert binder.receive(timeout=5) == b"hello"
    finally:
        owner._close()
        binder._close()


# ---- error paths ----------------------------------------------------------------

def test_closed_and_other_thread(engine):
    eid, _ = local_pair(engine)
    errors = []

    def other():
        try:
            engine.send(eid, b"x")
        except pyzmq.Error as exc:
            errors.append(str(exc))
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "thread" in errors[0]
    engine._close()
    with pytest.raises(pyzmq.Error, match="closed"):
        engine.send(eid, b"x")
    with pytest.raises(pyzmq.Error, match="closed"):
        engine.receive(block=False)


@pytest.mark.parametrize("timeout, exc", [("1", TypeError), (True, TypeError), (-1, ValueError),
                                          (float("nan"), ValueError)])
def test_bad_timeouts_on_paths_that_do_not_wait(engine, timeout, exc):
    eid, _ = local_pair(engine)
    with pytest.raises(exc, match="timeout"):
        engine.send(eid, b"x", timeout=timeout)      # would not wait
    with pytest.raises(exc, match="timeout"):
        engine.receive(timeout=timeout, block=False)
    with pytest.raises(exc, match="timeout"):
        _zmq.check_timeout(timeout)                   # the same check, for the Python layer


def test_messages_are_bytes_not_str(engine):
    eid, _ = local_pair(engine)
    with pytest.raises(TypeError, match="encode"):
        engine.send(eid, "text")
    with pytest.raises(TypeError, match="contiguous buffer"):
        engine.send(eid, 42)


def test_retarget_takes_only_this_engines_binding_handles(engine):
    other = _zmq.Engine()
    try:
        eid, _ = local_pair(engine)
        oeid = other._new_exchange()
        oqid = other._new_queue()
        foreign = other._exchange_connect(oeid, other._queue_connectable(oqid))
        with pytest.raises(pyzmq.Error, match="not a binding socket") as info:
            engine._retarget(foreign, None, "inproc://nowhere")
        assert info.value.errno == errno.EINVAL
        with pytest.raises(TypeError):
            engine._retarget(12345678, None, "inproc://nowhere")  # no pointers as ints
    finally:
        other._close()
    assert "closed" in repr(foreign)          # dead with its engine


def test_retarget_moves_a_binding(engine):
    eid = engine._new_exchange()
    q1, q2 = engine._new_queue(), engine._new_queue()
    ep1, ep2 = engine._queue_connectable(q1), engine._queue_connectable(q2)
    handle = engine._exchange_connect(eid, ep1)
    engine.send(eid, b"one")
    assert engine.receive2(timeout=1) == (q1, b"one")
    engine._retarget(handle, ep1, ep2)
    engine.send(eid, b"two")
    assert engine.receive2(timeout=1) == (q2, b"two")


def test_following_on_a_bare_engine_is_a_no_op(engine):
    """The follow hook is Engine's own: a bare Engine waiting with
    following set times out instead of failing with AttributeError."""
    local_pair(engine)
    engine.following = True
    t0 = time.monotonic()
    with pytest.raises(pyzmq.Timeout):
        engine.receive(timeout=1.4)          # FOLLOW_FIRST is 1 s: the hook runs
    assert time.monotonic() - t0 >= 1.3


def test_the_follow_hook_is_called_while_waiting():
    calls = []

    class Following(_zmq.Engine):
        def _follow_moved(self, eid):
            calls.append(eid)

    e = Following()
    try:
        eid, _ = local_pair(e, hwm=1)
        e.following = True
        with pytest.raises(pyzmq.Timeout):
            e.receive(timeout=_zmq.FOLLOW_FIRST + 3 * _zmq.FOLLOW_EVERY)
        assert calls and set(calls) == {0}
        calls.clear()
        while e.send(eid, b"x", block=False):
            pass
        with pytest.raises(pyzmq.Timeout):
            e.send(eid, b"x", timeout=_zmq.FOLLOW_FIRST + 3 * _zmq.FOLLOW_EVERY)
        assert calls and set(calls) == {eid}
    finally:
        e._close()


def test_a_terminated_context_is_a_pyzmq_error_with_its_errno():
    """A wait failing inside libzmq (ETERM here: the context is being
    terminated under a blocked send) raises pyzmq.Error with the errno."""
    code = textwrap.dedent("""
        import threading, pyzmq
        from pyzmq import _zmq
        e = _zmq.Engine()
        e._configure(1, 0)
        eid = e._new_exchange()
        e._exchange_connect(eid, e._queue_connectable(e._new_queue()), None, 1)
        while e.send(eid, b"x", block=False):
            pass
        threading.Timer(0.3, _zmq._term_context).start()
        try:
            e.send(eid, b"x", timeout=10)
        except pyzmq.Error as exc:
            print("errno", exc.errno, type(exc).__name__)
        e._close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    eterm = 156384765       # libzmq's ETERM (ZMQ_HAUSNUMERO + 53)
    assert f"errno {eterm} Error" in out.stdout, out.stdout + out.stderr


def test_a_failed_poll_is_a_pyzmq_error_with_its_errno():
    """poll() on the signalling fds fails with EINVAL when it is given more
    fds than RLIMIT_NOFILE allows; that is pyzmq.Error(errno=EINVAL) like
    every other failure, not an OSError of its own."""
    code = textwrap.dedent("""
        import resource, pyzmq
        from pyzmq import _zmq
        e = _zmq.Engine()
        for _ in range(3):
            e._queue_connectable(e._new_queue())      # three input sockets: poll() waits
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (2, hard))
        try:
            e.receive(timeout=0.5)
        except pyzmq.Error as exc:
            print("errno", exc.errno, type(exc).__name__, exc)
        except OSError as exc:
            print("OSError", exc.errno)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        e._close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert f"errno {errno.EINVAL} Error poll" in out.stdout, out.stdout + out.stderr


# ---- lifecycles -------------------------------------------------------------------

def test_an_open_engine_collected_warns_and_closes():
    e = _zmq.Engine()
    local_pair(e)
    with pytest.warns(ResourceWarning, match="unclosed Engine"):
        del e
        gc.collect()


def test_an_open_instance_collected_warns_without_blocking():
    z = pyzmq.ZMQ()
    eid = z.create_exchange("E")
    z.create_queue("Q")
    z.bind("E", "Q")
    z.send(eid, b"x")
    t0 = time.monotonic()
    with pytest.warns(ResourceWarning, match="unclosed"):
        del z
        gc.collect()
    assert time.monotonic() - t0 < 1.0


def test_a_closed_instance_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pyzmq.ZMQ() as z:
            z.create_queue("Q")
        del z
        gc.collect()
        e = _zmq.Engine()
        e._close()
        del e
        gc.collect()


def test_an_open_relay_is_stopped_without_waiting_when_collected():
    owner, sink, binder = _zmq.Engine(), _zmq.Engine(), _zmq.Engine()
    try:
        eid = owner._new_exchange()
        x_ep = owner._exchange_listen(eid, "tcp://127.0.0.1:0")
        qid = sink._new_queue()
        q_ep = sink._queue_listen(qid, "tcp://127.0.0.1:0")
        binder._relay(x_ep, q_ep, 10, owner)
        assert any(t.name.startswith("pyzmq-wiring relay") for t in threading.enumerate())
        owner.send(eid, b"through")
        assert sink.receive(timeout=5) == b"through"
        t0 = time.monotonic()
        with pytest.warns(ResourceWarning):
            del binder
            gc.collect()
        assert time.monotonic() - t0 < 0.5
        deadline = time.monotonic() + 10
        while any(t.name.startswith("pyzmq-wiring relay") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the relay thread did not stop"
            time.sleep(0.02)
    finally:
        owner._close()
        sink._close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_closes_its_parents_sockets(engine):
    eid, _ = local_pair(engine)
    engine.send(eid, b"before")
    assert close_in_forked_child(engine) == 0
    assert engine.pid == os.getpid() and not engine.closed
    assert engine.receive(timeout=2) == b"before"
    engine.send(eid, b"after")
    assert engine.receive(timeout=2) == b"after"


# ---- asyncio: nothing inherited blocks the loop -----------------------------------

def test_asyncio_batch_forms_and_serve_are_coroutines():
    async def main():
        with pyzmq.asyncio.ZMQ() as z:
            eid = await z.create_exchange("E")
            await z.create_queue("Q")
            await z.bind("E", "Q")
            assert await z.send_many(eid, [b"a", b"b", b"c"]) == 3
            assert await z.receive_many(2, timeout=1) == [b"a", b"b"]
            assert await z.receive_many(5, timeout=1) == [b"c"]
            t0 = asyncio.get_running_loop().time()
            await z.serve(0.1)
            assert asyncio.get_running_loop().time() - t0 >= 0.09
            with pytest.raises(pyzmq.Timeout):
                await z.receive_many(3, timeout=0.1)
    asyncio.run(asyncio.wait_for(main(), 30))


def test_asyncio_checks_timeouts_as_the_blocking_calls_do():
    async def main():
        with pyzmq.asyncio.ZMQ() as z:
            await z.create_queue("Q")
            with pytest.raises(TypeError, match="number of seconds or None"):
                await z.receive(timeout="soon")
    asyncio.run(main())


def test_the_directory_client_checks_its_timeout_before_connecting():
    from pyzmq.directory import DirectoryClient
    with pytest.raises(ValueError, match="positive, finite"):
        DirectoryClient("127.0.0.1:1", timeout=0)
    with pytest.raises(TypeError, match="number of seconds"):
        DirectoryClient("127.0.0.1:1", timeout="5")
