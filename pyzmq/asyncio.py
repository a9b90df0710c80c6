"""asyncio flavour of the wiring API: ``await zmq.receive()``, ``await zmq.send()``.

    import asyncio, pyzmq.asyncio

    async def main():
        with pyzmq.asyncio.ZMQ() as zmq:
            eid = zmq.create_exchange("E")
            zmq.create_queue("Q")
            zmq.bind("E", "Q")
            await zmq.send(eid, b"hi")
            print(await zmq.receive())

    asyncio.run(main())

The instance belongs to the thread of its event loop.  Waiting is driven by
libzmq's signalling fds registered with the running loop (``add_reader``):
no busy polling and no helper thread.  Each await first tries the call
without blocking; only when that would block does it wait for one of the
fds to turn readable, then tries again.  Any number of tasks may await at
once; cancelling one loses nothing (a message is only taken by a task that
then returns it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Literal, Optional, Set, Tuple, Union, overload

from pyzmq import _zmq, wiring
from pyzmq._zmq import Frame
from pyzmq.errors import Timeout

Seconds = Optional[float]
if TYPE_CHECKING:
    from pyzmq._zmq import Message

# as the blocking calls: seconds of waiting before looking for moved peers,
# and between looks while the wait goes on
FOLLOW_FIRST = _zmq.FOLLOW_FIRST
FOLLOW_EVERY = _zmq.FOLLOW_EVERY


class ZMQ(wiring.ZMQ):
    """A wiring instance whose send/receive are coroutines.  The blocking
    forms stay available as ``send_now``/``receive_now`` (non-blocking).

    Every inherited call that could wait is a coroutine here too
    (``send``, ``send_many``, ``receive``, ``receive2``, ``receive_many``,
    ``serve``); ``bind`` and ``close`` keep their blocking forms (a remote
    bind waits for its owner's answer, up to ``bind_timeout``)."""

    # the same arguments as pyzmq.ZMQ (tests/test_types.py checks they stay so)
    def __init__(self, hostname: Optional[str] = None, *, timeout: float = 5.0,
                 hwm: int = 1000, linger: float = 10.0, bind_timeout: float = 10.0,
                 secret_key: Optional[str] = None, allowed_keys: Optional[Iterable[str]] = None,
                 directory_key: Optional[str] = None, require_curve: bool = False,
                 on_lost: Optional[Callable[[str, str], None]] = None) -> None:
        super().__init__(hostname, timeout=timeout, hwm=hwm, linger=linger,
                         bind_timeout=bind_timeout, secret_key=secret_key,
                         allowed_keys=allowed_keys, directory_key=directory_key,
                         require_curve=require_curve, on_lost=on_lost)
        self._watched: Dict[int, asyncio.AbstractEventLoop] = {}   # fd -> its loop
        self._waiters: Set[asyncio.Future[None]] = set()  # woken when a watched fd is readable

    # ---- waiting on the loop ---------------------------------------------

    def _wake(self):
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()
        self._unwatch()

    def _pass_on(self):
        """After a call succeeded, let the other waiters try again: libzmq's
        fds signal news once, so a message left behind (or room left) would
        otherwise wake nobody."""
        if self._waiters:
            self._wake()

    def _unwatch(self):
        for fd, loop in self._watched.items():
            loop.remove_reader(fd)
        self._watched.clear()

    async def _readable(self, deadline, eid=0, follow=None, listeners=False):
        """Until one of the instance's fds is readable (or the deadline).

        ``follow`` is the calling wait's [next time to look for moved
        peers]: kept by the caller across wake-ups, so other tasks' traffic
        waking this one often does not postpone the look for ever."""
        loop = asyncio.get_running_loop()
        for fd in self._fds(eid, listeners):
            if fd not in self._watched:
                loop.add_reader(fd, self._wake)
                self._watched[fd] = loop
        fut = loop.create_future()
        self._waiters.add(fut)
        try:
            now = loop.time()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                raise Timeout("timed out")
            # with remote bindings, look every so often for peers that moved
            # (as the blocking calls do; it never blocks)
            piece = left
            if self.following and follow is not None:
                if follow[0] is None:
                    follow[0] = now + FOLLOW_FIRST
                if follow[0] <= now:
                    self._follow_moved(eid)
                    follow[0] = now + FOLLOW_EVERY
                if piece is None or piece > follow[0] - now:
                    piece = follow[0] - now
            try:
                if piece is None:
                    await fut
                else:
                    await asyncio.wait_for(fut, piece)
            except asyncio.TimeoutError:
                if piece != left:
                    return          # time to look for moved peers: the caller retries
                raise Timeout("timed out") from None
        finally:
            self._waiters.discard(fut)
            if not self._waiters:
                self._unwatch()

    @staticmethod
    def _deadline(timeout):
        seconds = _zmq.check_timeout(timeout)     # as the blocking calls check it
        if seconds is None:
            return None
        return asyncio.get_running_loop().time() + seconds

    # ---- the coroutines ---------------------------------------------------

    @overload  # type: ignore[override]
    async def receive(self, timeout: Seconds = None, copy: Literal[True] = True) -> bytes: ...
    @overload
    async def receive(self, timeout: Seconds, copy: Literal[False]) -> Frame: ...
    @overload
    async def receive(self, timeout: Seconds = None, *, copy: Literal[False]) -> Frame: ...

    async def receive(self, timeout: Seconds = None, copy: bool = True) -> Union[bytes, Frame]:
        """The next message from any queue; pyzmq.Timeout after timeout s."""
        deadline = self._deadline(timeout)
        follow = [None]
        while True:
            wiring.ZMQ.serve(self, 0)      # let binders of our global exchanges in
            msg = self.receive_now(copy=copy)
            if msg is not None:
                self._pass_on()
                return msg
            try:
                await self._readable(deadline, 0, follow)
            except Timeout:
                raise Timeout(f"no message arrived within {timeout} s"
                              + self._follow_refusals(0)) from None

    @overload  # type: ignore[override]
    async def receive2(self, timeout: Seconds = None,
                       copy: Literal[True] = True) -> Tuple[int, bytes]: ...
    @overload
    async def receive2(self, timeout: Seconds, copy: Literal[False]) -> Tuple[int, Frame]: ...
    @overload
    async def receive2(self, timeout: Seconds = None, *,
                       copy: Literal[False]) -> Tuple[int, Frame]: ...

    async def receive2(self, timeout: Seconds = None,
                       copy: bool = True) -> Tuple[int, Union[bytes, Frame]]:
        """(queue_id, message), as receive()."""
        deadline = self._deadline(timeout)
        follow = [None]
        while True:
            wiring.ZMQ.serve(self, 0)
            item = wiring.ZMQ.receive2(self, block=False, copy=copy)
            if item is not None:
                self._pass_on()
                return item
            try:
                await self._readable(deadline, 0, follow)
            except Timeout:
                raise Timeout(f"no message arrived within {timeout} s"
                              + self._follow_refusals(0)) from None

    async def send(self, eid: int, msg: Message,  # type: ignore[override]
                   timeout: Seconds = None) -> bool:
        """Send; waits (without blocking the loop) while a bound queue is full."""
        deadline = self._deadline(timeout)
        follow = [None]
        while True:
            wiring.ZMQ.serve(self, 0)      # listeners' fds are watched too: take their news
            if wiring.ZMQ.send(self, eid, msg, block=False):
                self._pass_on()
                return True
            try:
                await self._readable(deadline, eid, follow)
            except Timeout:
                raise Timeout("send timed out: a bound queue stayed full "
                              "(high-water mark)" + self._follow_refusals(eid)) from None

    async def send_many(self, eid: int, messages: Iterable["Message"],
                        timeout: Seconds = None) -> int:
        """Send every message of an iterable on exchange eid, in order,
        waiting (without blocking the loop) while a bound queue is full;
        timeout bounds each wait.  Returns the count sent."""
        _zmq.check_timeout(timeout)
        n = 0
        for msg in messages:
            if not wiring.ZMQ.send(self, eid, msg, block=False):
                await self.send(eid, msg, timeout)
            else:
                self._pass_on()
            n += 1
        return n

    async def receive_many(self, max_count: int, timeout: Seconds = None) -> List[bytes]:
        """Up to max_count messages: waits (up to timeout, without blocking
        the loop) for the first, then takes whatever else is already there."""
        if isinstance(max_count, bool) or not isinstance(max_count, int):
            raise TypeError(f"max_count must be an int, not {type(max_count).__name__}")
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, not {max_count}")
        out = [await self.receive(timeout)]
        while len(out) < max_count:
            msg = wiring.ZMQ.receive(self, block=False)
            if msg is None:
                break
            out.append(msg)
        return out

    async def serve(self, timeout: float) -> None:
        """Let remote binders in for `timeout` seconds (as the blocking
        serve()), waiting on the loop."""
        seconds = _zmq.check_timeout(timeout)
        if seconds is None:
            raise TypeError("serve() needs a timeout in seconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            wiring.ZMQ.serve(self, 0)
            if loop.time() >= deadline:
                return
            if not self._fds(0, True):
                await asyncio.sleep(deadline - loop.time())     # no listener: nothing to serve
                continue
            try:
                await self._readable(deadline, 0, None, True)
            except Timeout:
                wiring.ZMQ.serve(self, 0)
                return

    @overload
    def receive_now(self, copy: Literal[True] = True) -> Optional[bytes]: ...
    @overload
    def receive_now(self, copy: Literal[False]) -> Optional[Frame]: ...

    def receive_now(self, copy: bool = True) -> Union[bytes, Frame, None]:
        """A message if one is there, else None; never waits."""
        return wiring.ZMQ.receive(self, block=False, copy=copy)

    def send_now(self, eid: int, msg: Message) -> bool:
        """Send if there is room (True), else False; never waits."""
        return wiring.ZMQ.send(self, eid, msg, block=False)

    async def wait_bound(self, eid: int, count: int = 1,  # type: ignore[override]
                         timeout: Optional[float] = None) -> int:
        """Wait until at least `count` queues are bound to exchange `eid`
        (as the blocking wait_bound()), letting binders in from the loop."""
        seconds = _zmq.check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            try:
                return _zmq._wait_bound(self, eid, count, 0)
            except Timeout:
                pass
            try:
                await self._readable(deadline, 0, None, True)
            except Timeout:
                return _zmq._wait_bound(self, eid, count, 0)    # raises, saying how many

    def close(self, timeout: Optional[float] = None) -> int:
        """As the blocking close(); its wait for queued messages to leave
        (up to `linger`) still blocks the loop."""
        try:
            return super().close(timeout)
        finally:
            self._wake()           # waiting tasks retry and get "closed"
