"""pyzmq.asyncio.ZMQ never blocks its loop (issue 12, item 4): a ticker task
runs every 10 ms while each call that can wait waits: the directory
connection, create_*() of a global name and close() against a zmq_server
that is stopped (SIGSTOP) for a while, bind() to an exchange whose owner
process is stopped for a while, send_many() into a full queue and
receive_many() on an empty one.  The two forms that would block (the
constructor with a hostname, a plain ``with`` of a connected instance)
refuse at once inside a running loop.  Real processes, a real zmq_server."""

import asyncio
import os
import signal
import time

import pytest

import pyzmq
import pyzmq.asyncio
from helpers import Peer, free_port, process_state, wait_until
from test_busy_owner import SYNC_OWNER

STALL = 1.0         # how long the other side is stopped
MAX_GAP = 0.2       # the most the ticker may be held up


class Ticker:
    """A task that wakes every 10 ms and records the longest gap."""

    def __init__(self):
        self.gap = 0.0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.gap = max(self.gap, now - last)
            last = now

    async def during(self, awaitable):
        """Await it; returns (its result, seconds it took), and checks the ticker."""
        self.gap = 0.0
        t0 = time.monotonic()
        result = await awaitable
        took = time.monotonic() - t0
        await asyncio.sleep(0.02)       # one more tick after it returned
        assert self.gap < MAX_GAP, f"the loop was blocked for {self.gap:.3f} s"
        return result, took

    async def calling(self, fn, *args, **kw):
        """fn(*args, **kw), a plain call, between two ticks; returns what it
        returned or raised (as (result, exception)), and checks the ticker."""
        await asyncio.sleep(0.02)
        self.gap = 0.0
        result = error = None
        try:
            result = fn(*args, **kw)
        except Exception as exc:
            error = exc
        await asyncio.sleep(0.02)
        assert self.gap < MAX_GAP, f"the loop was blocked for {self.gap:.3f} s"
        return result, error

    def stop(self):
        self.task.cancel()


def stall(pid, seconds):
    """SIGSTOP pid now (and wait until it is stopped), SIGCONT it after seconds."""
    os.kill(pid, signal.SIGSTOP)
    assert wait_until(lambda: process_state(pid) == "T", 5)
    asyncio.get_running_loop().call_later(seconds, os.kill, pid, signal.SIGCONT)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_directory_calls_do_not_block_the_loop(directory_server):
    server = directory_server

    async def main():
        ticker = Ticker()
        try:
            stall(server.pid, STALL)
            z, took = await ticker.during(pyzmq.asyncio.ZMQ.connect(server.address, timeout=10))
            try:
                await asyncio.sleep(STALL)      # the server runs again
                stall(server.pid, STALL)
                eid, took = await ticker.during(
                    z.create_exchange("G", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0"))
                assert took > STALL / 2, f"create_exchange took {took:.3f} s: no stall?"
                assert eid == z.exchanges["G"]
                stall(server.pid, STALL)
                await ticker.during(z.close())
                assert took > STALL / 2, f"close took {took:.3f} s: no stall?"
                assert z.closed
            finally:
                if not z.closed:
                    await z.close()
        finally:
            ticker.stop()
    run(main())


def test_bind_waits_on_the_loop(directory):
    with Peer(SYNC_OWNER, directory, "sleep", 30, 0) as owner:
        owner.expect("READY")

        async def main():
            ticker = Ticker()
            try:
                async with await pyzmq.asyncio.ZMQ.connect(directory) as z:
                    await z.create_queue("Q")
                    stall(owner.proc.pid, STALL)
                    _, took = await ticker.during(z.bind("slow", "Q"))
                    assert took > STALL / 2, f"bind took {took:.3f} s: no stall?"
                    assert ("slow", "Q") in z.bindings
            finally:
                ticker.stop()
        run(main())


def test_send_many_and_receive_many_wait_on_the_loop():
    async def main():
        ticker = Ticker()
        try:
            async with pyzmq.asyncio.ZMQ(hwm=10) as z:
                eid = await z.create_exchange("E")
                await z.create_queue("Q")
                await z.bind("E", "Q")
                loop = asyncio.get_running_loop()
                loop.call_later(STALL, lambda: asyncio.ensure_future(z.send(eid, b"late")))
                got, took = await ticker.during(z.receive_many(10, timeout=10))
                assert got == [b"late"] and took > STALL / 2

                async def drain():
                    await asyncio.sleep(STALL)
                    return [await z.receive(timeout=5) for _ in range(200)]
                consumer = asyncio.ensure_future(drain())
                n, took = await ticker.during(z.send_many(eid, [b"%d" % i for i in range(200)]))
                assert n == 200 and took > STALL / 2
                assert await consumer == [b"%d" % i for i in range(200)]
        finally:
            ticker.stop()
    run(main())


def test_a_curve_bind_waits_for_its_handshake_on_the_loop(directory):
    from test_security import QUEUE_OWNER
    with Peer(QUEUE_OWNER, directory, pyzmq.curve_keypair()[1], 0) as owner:
        owner.expect("ready")

        async def main():
            ticker = Ticker()
            try:
                async with await pyzmq.asyncio.ZMQ.connect(directory) as z:
                    eid = await z.create_exchange("E")
                    stall(owner.proc.pid, STALL)
                    _, took = await ticker.during(z.bind("E", "orders"))
                    assert took > STALL / 2, f"bind took {took:.3f} s: no stall?"
                    assert await z.send(eid, b"sealed", timeout=5)
            finally:
                ticker.stop()
        run(main())
        assert owner.expect("got") == "sealed"


def test_a_relay_bind_waits_on_the_loop(directory):
    """Both objects remote: the relay's sync waits on the loop, then the
    relay passes on what the exchange's owner sends."""
    from test_security import QUEUE_OWNER
    with Peer(QUEUE_OWNER, directory, "-", 0) as sink, \
            Peer(SYNC_OWNER, directory, "sleep", 2 * STALL, 3) as owner:
        sink.expect("ready")
        owner.expect("READY")

        async def main():
            ticker = Ticker()
            try:
                async with await pyzmq.asyncio.ZMQ.connect(directory) as z:
                    stall(owner.proc.pid, STALL)
                    _, took = await ticker.during(z.bind("slow", "orders"))
                    assert took > STALL / 2, f"bind took {took:.3f} s: no stall?"
                    assert [sink.expect("got") for _ in range(3)] == ["0", "1", "2"]
            finally:
                ticker.stop()
        run(main())


# A global queue "SQ" whose owner never reads.
STALLED_QUEUE = """
import sys, time, pyzmq
z = pyzmq.ZMQ(sys.argv[1], hwm=5)
z.create_queue("SQ", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
print("ready", flush=True)
time.sleep(600)
"""


async def _stalled_exchange(directory):
    """An asyncio instance whose exchange "E" is bound to the stalled "SQ"
    and has sent until the pipes and the kernels are full."""
    z = await pyzmq.asyncio.ZMQ.connect(directory, hwm=5)
    try:
        eid = await z.create_exchange("E")
        await z.bind("E", "SQ")
        try:
            while True:
                await z.send(eid, b"x" * 1000, timeout=0.5)
        except pyzmq.Timeout:
            return z            # full
    except BaseException:
        await z.close(timeout=0)
        raise


def test_close_waits_for_a_stalled_consumer_on_the_loop(directory):
    # Before: await close() waited for queued messages in the loop's
    # thread, holding the loop for the whole wait (at least 0.3 s for any
    # TCP binding, up to `linger` for a stalled consumer).
    async def main():
        with Peer(STALLED_QUEUE, directory) as owner:
            owner.expect("ready")
            z = await _stalled_exchange(directory)
            ticker = Ticker()
            try:
                left, took = await ticker.during(z.close(timeout=1.0))
            finally:
                ticker.stop()
            assert left > 0 and took > 0.9, (left, took)
            assert z.closed
    run(main())


def test_overlapping_closes_are_one_close(directory):
    # The wait of await close() sleeps on the loop; a second close() meanwhile
    # (gather, an un-awaited close then `async with`) must not start a second
    # wait on the sockets the first one closes: it is the same close.
    async def main():
        with Peer(STALLED_QUEUE, directory) as owner:
            owner.expect("ready")
            z = await _stalled_exchange(directory)
            first = z.close(timeout=0.5)
            await asyncio.sleep(0.1)
            second = z.close(timeout=0.5)
            assert second is first
            left = await asyncio.gather(first, second)
            assert left[0] == left[1] > 0 and z.closed
            assert await z.close() == 0     # closed: nothing more
    run(main())


def test_a_blocking_close_during_await_close_leaves_it_nothing_to_touch(directory):
    # A plain `with` exit (the blocking close) while await close() sleeps
    # between its looks: the blocking close closes the sockets; the waiting
    # one then sees the instance closed and touches none of them.
    async def main():
        with Peer(STALLED_QUEUE, directory) as owner:
            owner.expect("ready")
            z = await _stalled_exchange(directory)
            waiting = z.close(timeout=5.0)
            await asyncio.sleep(0.1)
            assert pyzmq.ZMQ.close(z, 0.1) > 0      # the blocking form, at once
            assert z.closed
            assert await asyncio.wait_for(waiting, 2.0) == 0
    run(main())


def test_the_constructor_with_a_hostname_refuses_to_block_the_loop(directory):
    # Before: pyzmq.asyncio.ZMQ(host) connected in the blocking form, in the
    # loop's thread: up to `timeout` with nobody listening there (then
    # DirectoryUnreachable), the whole connection otherwise.  Inside a
    # running loop it now refuses at once and says what to use instead.
    nobody = f"127.0.0.1:{free_port()}"

    async def main():
        ticker = Ticker()
        try:
            for host in (nobody, directory):
                z, error = await ticker.calling(pyzmq.asyncio.ZMQ, host, timeout=1.0)
                assert z is None and isinstance(error, RuntimeError), (z, error)
                assert "await pyzmq.asyncio.ZMQ.connect(" in str(error), error
            # the standalone constructor never waits: still allowed
            async with pyzmq.asyncio.ZMQ() as alone:
                await alone.create_queue("Q")
        finally:
            ticker.stop()
    run(main())


def test_the_constructor_with_a_hostname_still_connects_outside_a_loop(directory):
    # the blocking form is fine where no loop runs (documented in the README)
    z = pyzmq.asyncio.ZMQ(directory)

    async def main():
        try:
            await z.create_queue("OUTSIDE", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            return await z.names("OUTSIDE")
        finally:
            await z.close()
    assert run(main()) == ["OUTSIDE"]
    assert z.closed


def test_a_plain_with_of_a_connected_instance_refuses_on_the_loop(directory):
    # Before: a plain ``with`` closed in the blocking form on leaving the
    # block: the UNREGISTERs and the wait for queued messages (up to
    # linger) in the loop's thread.  Now entering it inside a running loop
    # raises, before the block runs, and the instance stays open.
    async def main():
        ticker = Ticker()
        try:
            z = await pyzmq.asyncio.ZMQ.connect(directory)
            try:
                ran = []
                with pytest.raises(RuntimeError, match="async with"):
                    with z:
                        ran.append(1)
                assert not ran and not z.closed
                await z.create_queue("STILL", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            finally:
                await ticker.during(z.close())
            assert z.closed
            # a standalone instance's close never waits (inproc only): a
            # plain ``with`` stays allowed for it
            with pyzmq.asyncio.ZMQ() as alone:
                eid = await alone.create_exchange("E")
                await alone.create_queue("Q")
                await alone.bind("E", "Q")
                await alone.send(eid, b"x")
            assert alone.closed
        finally:
            ticker.stop()
    run(main())


def test_a_cancelled_connect_closes_its_late_client_off_the_loop(directory_server):
    # connect() cancelled while the directory is stopped: the client still
    # comes once it runs again, and is closed (its REVOKE answered, its
    # keeper ended) in the executor thread; the fixture checks that no
    # keeper thread or instance is left.
    server = directory_server

    async def main():
        ticker = Ticker()
        try:
            stall(server.pid, STALL)
            task = asyncio.ensure_future(pyzmq.asyncio.ZMQ.connect(server.address, timeout=10))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await ticker.during(task)
            await ticker.during(asyncio.sleep(STALL + 0.5))     # it resumes, the client comes
        finally:
            ticker.stop()
    run(main())
