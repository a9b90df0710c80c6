"""pyzmq.asyncio: coroutines driven by libzmq's fds on the running loop."""

import asyncio
import resource
import time

import pytest

import pyzmq
import pyzmq.asyncio
from helpers import BURSTY_BINDER, Peer


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def wired(**kw):
    zmq = pyzmq.asyncio.ZMQ(**kw)
    eid = await zmq.create_exchange("E")
    await zmq.create_queue("Q")
    await zmq.bind("E", "Q")
    return zmq, eid


def test_send_and_receive():
    async def main():
        zmq, eid = await wired()
        with zmq:
            await zmq.send(eid, b"hi")
            assert await zmq.receive(timeout=1) == b"hi"
            await zmq.send(eid, b"two")
            qid, m = await zmq.receive2(timeout=1)
            assert m == b"two" and qid == zmq.queues["Q"]
    run(main())


def test_concurrent_tasks_with_backpressure():
    """A producer task against a small high-water mark, three consumers."""
    n = 20_000

    async def main():
        zmq, eid = await wired(hwm=50)
        with zmq:
            got = []

            async def consumer():
                while True:
                    m = await zmq.receive()
                    if m == b"end":
                        return
                    got.append(int(m))

            async def producer():
                for i in range(n):
                    await zmq.send(eid, b"%d" % i)
                for _ in range(3):
                    await zmq.send(eid, b"end")

            await asyncio.gather(producer(), *(consumer() for _ in range(3)))
            assert sorted(got) == list(range(n))
    run(main())


def test_cancelled_receive_loses_nothing():
    async def main():
        zmq, eid = await wired()
        with zmq:
            task = asyncio.ensure_future(zmq.receive())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await zmq.send(eid, b"kept")
            assert await zmq.receive(timeout=1) == b"kept"
    run(main())


def test_timeouts():
    async def main():
        zmq, eid = await wired(hwm=1)
        with zmq:
            t = time.monotonic()
            with pytest.raises(pyzmq.Timeout):
                await zmq.receive(timeout=0.1)
            assert time.monotonic() - t >= 0.09
            with pytest.raises(pyzmq.Timeout):
                for _ in range(1000):
                    await zmq.send(eid, b"x", timeout=0.1)
    run(main())


def test_waiting_does_not_spin():
    async def main():
        zmq, eid = await wired()
        with zmq:
            before = resource.getrusage(resource.RUSAGE_SELF)
            with pytest.raises(pyzmq.Timeout):
                await zmq.receive(timeout=1.0)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            assert cpu < 0.2, f"{cpu:.3f} s of CPU while waiting 1 s"
    run(main())


def test_remote_exchange_through_the_loop(directory):
    async def main():
        async with await pyzmq.asyncio.ZMQ.connect(directory) as owner:
            eid = await owner.create_exchange("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            await owner.create_queue("IN", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            # the binder is a blocking instance in a thread; the async owner
            # answers its bind while awaiting receive()
            loop = asyncio.get_running_loop()

            def binder():
                with pyzmq.ZMQ(directory) as zmq:
                    zmq.create_queue("OUT")
                    zmq.bind("G", "OUT")
                    x = zmq.create_exchange("X")
                    zmq.bind("X", "IN")
                    zmq.send(x, b"ready")
                    return zmq.receive(timeout=5)

            fut = loop.run_in_executor(None, binder)
            assert await owner.receive(timeout=10) == b"ready"
            await owner.send(eid, b"hello")
            assert await fut == b"hello"
    run(main())


def test_a_queue_owner_recreated_elsewhere_is_followed(directory):
    # as the blocking calls do, an awaiting send re-points a binding whose
    # queue's owner came back at another address (here: another instance)
    async def main():
        async with await pyzmq.asyncio.ZMQ.connect(directory, hwm=10) as binder:
            eid = await binder.create_exchange("E")
            first = pyzmq.ZMQ(directory)
            first.create_queue("AQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            await binder.bind("E", "AQ")
            await binder.send(eid, b"before")
            assert first.receive(timeout=5) == b"before"
            first.close()
            # other traffic on the instance wakes the blocked send often;
            # that must not keep postponing its look for the moved queue
            busy = await binder.create_exchange("BUSY")
            await binder.create_queue("LOCAL")
            await binder.bind("BUSY", "LOCAL")

            async def chatter():
                while True:
                    await binder.send(busy, b"x")
                    await binder.receive(timeout=5)
                    await asyncio.sleep(0.1)

            noise = asyncio.ensure_future(chatter())
            try:
                with pyzmq.ZMQ(directory) as second:
                    second.create_queue("AQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
                    for i in range(30):          # more than the old pipe held
                        await binder.send(eid, b"after%d" % i, timeout=10)
                    got = [second.receive(timeout=5) for _ in range(5)]
                    assert all(m.startswith(b"after") for m in got), got
            finally:
                noise.cancel()      # and ended before the binder closes
                await asyncio.gather(noise, return_exceptions=True)
    run(main())


def test_a_send_on_a_global_exchange_wakes_when_its_binder_makes_room(directory):
    # Before: a send waiting for room on a global exchange waited on its
    # listener's fd alone, whose news the service thread takes in (it polls
    # the same fd), so the send missed the room its binder made and waited
    # for its timeout (for ever, without one).  Found in review.
    count, pause = 60, 0.1

    async def main():
        async with await pyzmq.asyncio.ZMQ.connect(directory, hwm=5) as z:
            eid = await z.create_exchange("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            with Peer(BURSTY_BINDER, directory, count, pause) as binder:
                binder.expect("bound")
                assert await z.wait_bound(eid, 1, timeout=10) == 1
                for i in range(count):      # 20 kB each: the pipes fill at once
                    await z.send(eid, b"%05d" % i + b"." * 20_000, timeout=3.0)
                assert binder.expect("got") == str(count)
    run(main())


def test_wait_bound_sees_binders_the_service_thread_let_in(directory):
    # Before: await wait_bound() waited on the listener's fd, whose news
    # the service thread takes in, so it mostly saw a new binder only at
    # its timeout (and never, without one).  Each binder here must be seen
    # well before the timeout.
    async def main():
        async with await pyzmq.asyncio.ZMQ.connect(directory) as z:
            eid = await z.create_exchange("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            binders = []
            try:
                for k in range(1, 4):
                    binders.append(Peer(BURSTY_BINDER, directory, 0, 0))
                    t0 = time.monotonic()
                    assert await z.wait_bound(eid, k, timeout=10) == k
                    took = time.monotonic() - t0
                    assert took < 5, f"binder {k} was seen after {took:.3f} s"
            finally:
                for peer in binders:
                    peer.close()
    run(main())


def test_the_asyncio_per_call_script_runs():
    # the short variant of perf/asyncio_percall.py (figures: docs/design.md)
    import subprocess
    import sys
    from helpers import ROOT, child_env
    out = subprocess.run([sys.executable, "perf/asyncio_percall.py", "--old-rev", "HEAD", "--rounds", "1",
                          "--calls", "200"], cwd=ROOT, env=child_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "receive" in out.stdout and "new/old" in out.stdout, out.stdout


def test_a_send_stuck_on_a_global_exchange_does_not_spin(directory):
    # a send waiting for room on a listener looks again on a timer (its fd
    # is the service thread's); a long wait must not become a busy loop
    async def main():
        async with await pyzmq.asyncio.ZMQ.connect(directory, hwm=5) as z:
            eid = await z.create_exchange("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            with Peer(BURSTY_BINDER, directory, 10**6, 600) as binder:    # never reads
                binder.expect("bound")
                assert await z.wait_bound(eid, 1, timeout=10) == 1
                with pytest.raises(pyzmq.Timeout):
                    while True:
                        await z.send(eid, b"." * 20_000, timeout=0.5)
                before = resource.getrusage(resource.RUSAGE_SELF)
                with pytest.raises(pyzmq.Timeout):
                    await z.send(eid, b"." * 20_000, timeout=2.0)
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                assert cpu < 0.1, f"{cpu:.3f} s of CPU while a send waited 2 s"
            await z.close(timeout=0)
    run(main())


@pytest.mark.parametrize("queue_first", [False, True])
def test_a_receive_awaited_before_any_bound_queue_gets_a_later_binding(queue_first):
    """The blocking receive() of an instance with no bound queue is refused
    (it could never return); an awaited one waits, because another task may
    create and bind a queue meanwhile, and it gets that queue's message."""
    async def main():
        with pyzmq.asyncio.ZMQ() as zmq:
            if queue_first:
                await zmq.create_queue("Q")          # there, but not bound
            with pytest.raises(pyzmq.Error, match="would wait forever"):
                pyzmq.ZMQ.receive(zmq)               # the blocking form refuses
            waiting = asyncio.ensure_future(zmq.receive(timeout=30))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            if not queue_first:
                await zmq.create_queue("Q")
            eid = await zmq.create_exchange("E")
            await zmq.bind("E", "Q")
            await zmq.send(eid, b"late")
            assert await waiting == b"late"
    run(main())
