"""asyncio flavour of the wiring API: ``await zmq.receive()``, ``await zmq.send()``.

    import asyncio, pyzmq.asyncio

    async def main():
        async with await pyzmq.asyncio.ZMQ.connect("localhost:5682") as zmq:
            eid = await zmq.create_exchange("E")
            await zmq.create_queue("Q")
            await zmq.bind("E", "Q")
            await zmq.send(eid, b"hi")
            print(await zmq.receive())

    asyncio.run(main())

The instance belongs to the thread of its event loop.  Every call that
can wait is a coroutine, and nothing waits in the loop's thread: inside a
running loop, the two forms that would (the constructor with a hostname,
and a plain ``with`` block of an instance with a directory, which closes
in the blocking form) raise RuntimeError saying what to use instead:
``await ZMQ.connect(host)`` and ``async with``.  Waiting for sockets is driven by libzmq's
signalling fds registered with the running loop (``add_reader``): no busy
polling (but for the fds of listeners, which the service thread reads
first: a send waiting for room on a global exchange tries again after
5 ms, wait_bound() looks after 20 ms, then each at twice the last
interval, up to 0.1 s); directory requests run in the loop's default
executor.  Each await first tries the call
without blocking; only when that would block does it wait for one of the
fds to turn readable, then tries again.  Any number of tasks may await at
once; cancelling one loses nothing (a message is only taken by a task that
then returns it).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Awaitable, Callable, Dict, Iterable, List, Literal, Optional, Set, Tuple, Union, overload

from pyzmq import _zmq, wiring
from pyzmq._zmq import Frame
from pyzmq.errors import Timeout

Seconds = Optional[float]
if TYPE_CHECKING:
    from typing_extensions import Self

    from pyzmq._zmq import Message

# as the blocking calls: seconds of waiting before looking for moved peers,
# and between looks while the wait goes on
FOLLOW_FIRST = _zmq.FOLLOW_FIRST
FOLLOW_EVERY = _zmq.FOLLOW_EVERY

# The listeners' signalling fds are the service thread's: it polls them too
# and takes their news in, often before the loop sees the fd readable.  So
# a wait that depends on a listener does not rely on its fd alone: a send
# waiting for room on a global exchange tries again after SEND_LOOK s (as
# the blocking send's 5 ms slices on a listener), wait_bound() reads the
# binder count after BOUND_LOOK s (as the blocking wait_bound()).  Each
# look doubles the next one's interval, up to LOOK_MAX: a wake-up of the
# loop costs 0.2 ms of CPU or so, and a long wait (a stalled binder, a
# consumer not started yet) should not cost 5 % of a core.
SEND_LOOK = 0.005
BOUND_LOOK = _zmq.BOUND_LOOK
LOOK_MAX = 0.1


class ZMQ(wiring.ZMQ):
    """A wiring instance whose every call that can wait is a coroutine:
    ``await ZMQ.connect(host)`` (the directory connection), ``create_*``,
    ``bind``, ``send``, ``send_many``, ``receive``, ``receive2``,
    ``receive_many``, ``serve``, ``wait_bound``, ``close``.
    ``send_now``/``receive_now`` never wait.

    Inside a running loop, ``ZMQ(hostname)`` raises RuntimeError (it would
    connect in the blocking form, in the loop's thread): use ``await
    ZMQ.connect(hostname)``.  Outside one (a script that builds the
    instance before ``asyncio.run``) it connects as pyzmq.ZMQ does.  A
    plain ``with`` of an instance that has a directory raises RuntimeError
    on entering inside a running loop (its exit would close in the
    blocking form: UNREGISTERs, the wait for queued messages): use ``async
    with``.  A standalone instance (``ZMQ()``, inproc only) closes without
    waiting, so a plain ``with`` of it is allowed anywhere."""

    # Every call that can wait is a coroutine here and a plain call in
    # wiring.ZMQ / Engine: an override that changes the return type to an
    # awaitable, which is the point of this class and which mypy's override
    # check cannot accept.  Each such method carries `# type: ignore[override]`
    # and nothing broader; code that uses this class is typed by its own
    # signatures (tests/test_types.py).

    # the same arguments as pyzmq.ZMQ (tests/test_types.py checks they stay so)
    def __init__(self, hostname: Optional[str] = None, *, timeout: float = 5.0,
                 hwm: int = 1000, linger: float = 10.0, bind_timeout: float = 10.0,
                 secret_key: Optional[str] = None, allowed_keys: Optional[Iterable[str]] = None,
                 directory_key: Optional[str] = None, require_curve: bool = False,
                 on_lost: Optional[Callable[[str, str], None]] = None,
                 etcd_options: Optional[Dict[str, object]] = None) -> None:
        if hostname is not None and _loop_running():
            raise RuntimeError(
                f"pyzmq.asyncio.ZMQ({hostname!r}) inside a running event loop would connect "
                "to the directory in the blocking form and hold the loop meanwhile: use "
                f"`zmq = await pyzmq.asyncio.ZMQ.connect({hostname!r}, ...)` (same arguments), "
                "or `async with await pyzmq.asyncio.ZMQ.connect(...) as zmq:`")
        super().__init__(hostname, timeout=timeout, hwm=hwm, linger=linger,
                         bind_timeout=bind_timeout, secret_key=secret_key,
                         allowed_keys=allowed_keys, directory_key=directory_key,
                         require_curve=require_curve, on_lost=on_lost,
                         etcd_options=etcd_options)
        self._watched: Dict[int, asyncio.AbstractEventLoop] = {}   # fd -> its loop
        self._waiters: Set[asyncio.Future[None]] = set()  # woken when a watched fd is readable
        self._closing: Optional["asyncio.Task[int]"] = None   # the close() under way

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

    async def _readable(self, deadline, eid=0, follow=None, listeners=False, look=None):
        """Until one of the instance's fds is readable (or the deadline).

        ``follow`` is the calling wait's [next time to look for moved
        peers]: kept by the caller across wake-ups, so other tasks' traffic
        waking this one often does not postpone the look for ever.  With
        ``look``, returns after that many seconds at most (the caller
        tries again: a listener's fd may never tell)."""
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
            if look is not None and (piece is None or piece > look):
                piece = look
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
            # (binders of global exchanges are the service thread's)
            msg = wiring.ZMQ.receive(self, block=False, copy=copy)
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
        look: Optional[float] = None
        waited = False      # look is known from the first wait on
        while True:
            if wiring.ZMQ.send(self, eid, msg, block=False):
                self._pass_on()
                return True
            if not waited:
                waited = True
                look = SEND_LOOK if self._listens(eid) else None
            try:
                await self._readable(deadline, eid, follow, look=look)
                if look is not None:
                    look = min(2 * look, LOOK_MAX)
            except Timeout:
                raise Timeout("send timed out: a bound queue stayed full "
                              "(high-water mark)" + self._follow_refusals(eid)) from None

    async def send_many(self, eid: int, messages: Iterable["Message"],  # type: ignore[override]
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

    async def receive_many(self, max_count: int,  # type: ignore[override]
                           timeout: Seconds = None) -> List[bytes]:
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

    async def serve(self, timeout: float) -> None:  # type: ignore[override]
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

    def _listens(self, eid):
        """Whether exchange eid has a listener (it is global): then a send
        waiting for room cannot rely on the fds (SEND_LOOK)."""
        return any(o.id == eid and o.kind == "exchange" and o.scope == wiring.SCOPE_GLOBAL
                   for o in self._objects.values())

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
        (as the blocking wait_bound()), on the loop: the service thread
        lets binders in, and the count is read after BOUND_LOOK s, then at
        doubling intervals up to LOOK_MAX."""
        seconds = _zmq.check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        look = BOUND_LOOK
        while True:
            try:
                return _zmq._wait_bound(self, eid, count, 0)
            except Timeout:
                pass
            try:
                await self._readable(deadline, 0, None, True, look=look)
                look = min(2 * look, LOOK_MAX)
            except Timeout:
                return _zmq._wait_bound(self, eid, count, 0)    # raises, saying how many

    # ---- creating and binding without blocking the loop ---------------------

    async def create_exchange(self, name: str, scope: int = wiring.SCOPE_LOCAL,  # type: ignore[override]
                              location: str = "", *,
                              style: int = wiring.STYLE_DATA_DISTRIBUTION) -> int:
        """As pyzmq.ZMQ.create_exchange, a coroutine: a global name is
        registered in the loop's default executor."""
        wiring.check_style(style)
        return await self._acreate("exchange", name, scope, location, style)

    async def create_queue(self, name: str, scope: int = wiring.SCOPE_LOCAL,  # type: ignore[override]
                           location: str = "", *, hwm: Optional[int] = None) -> int:
        """As pyzmq.ZMQ.create_queue, a coroutine (see create_exchange)."""
        if hwm is not None:
            wiring.check_hwm(hwm)
        return await self._acreate("queue", name, scope, location,
                                   wiring.STYLE_DATA_DISTRIBUTION, hwm)

    async def _acreate(self, kind, name, scope, location, style, hwm=None):
        return await _run_steps(self._creating(kind, name, scope, location, style, hwm))

    async def bind(self, exchange_name: str, queue_name: str, *,  # type: ignore[override]
                   hwm: Optional[int] = None, follow: Optional[str] = None,
                   key: Optional[str] = None, wait: Optional[float] = None) -> None:
        """As pyzmq.ZMQ.bind, a coroutine: names are looked up in the loop's
        default executor, and a wait for a remote owner (its sync answer,
        a CURVE handshake) is a wait on the loop, for a relay (two remote
        objects) too.  A wait= for a name not registered yet is spent in
        the executor too."""
        plan = self._bind_plan(exchange_name, queue_name, hwm, follow, key, wait)
        if plan is None:
            return
        if not plan.ex:
            plan.ex_rec = await _in_executor(self._lookup, exchange_name, "exchange", plan.wait)
        if not plan.q:
            plan.q_rec = await _in_executor(self._lookup, queue_name, "queue", plan.wait)
        self._check_usable()
        self._bind_checked(plan)
        if (exchange_name, queue_name) in self._bindings:
            return                  # another task bound it meanwhile
        ex, q, mark = plan.ex, plan.q, plan.mark
        if ex and q:
            self._exchange_connect(ex.id, self._queue_connectable(q.id), None, mark)
        elif ex:
            q_ep, q_ckey, q_owner = wiring._connect_target(*plan.q_rec)
            if q_ckey:
                handle = await self._complete(self._connect_start(
                    ex.id, q_ep, q_ckey, mark, self._bind_timeout))
            else:
                handle = self._exchange_connect(ex.id, q_ep, None, mark, None, q_owner)
            self._bind_remote(plan, handle, q_ep, q_ckey, q_owner)
        elif q:
            ex_ep, ex_ckey = wiring._target(*plan.ex_rec)
            handle = await self._complete(self._subscribe_start(
                q.id, ex_ep, self._bind_timeout, ex_ckey, mark, exchange_name))
            self._bind_remote(plan, handle, ex_ep, ex_ckey)
        else:
            q_ep, q_key = wiring._target(*plan.q_rec)
            ex_ep, ex_key = wiring._target(*plan.ex_rec)
            await self._complete(self._relay_start(ex_ep, q_ep, self._bind_timeout,
                                                   ex_key, q_key, mark, exchange_name,
                                                   f"{exchange_name!r} -> {queue_name!r}"))
        if (exchange_name, queue_name) not in self._bindings:
            self._bind_done(plan)

    async def _complete(self, pending):
        """Drive a pending bind (_subscribe_start, _connect_start,
        _relay_start) to its
        end on the loop: its fds are watched; the step raises at its deadline.
        Cancelled or failed, the bind is undone."""
        loop = asyncio.get_running_loop()
        done = False
        try:
            while True:
                handle = self._bind_step(pending)
                if handle is not None:
                    done = True
                    return handle
                wake = loop.create_future()
                fds = self._bind_fds(pending)
                for fd in fds:
                    loop.add_reader(fd, lambda: wake.done() or wake.set_result(None))
                try:
                    # a libzmq fd signals news once: look again at least
                    # every 50 ms, as the blocking form does
                    await asyncio.wait_for(wake, 0.05)
                except asyncio.TimeoutError:
                    pass
                finally:
                    for fd in fds:
                        loop.remove_reader(fd)
        finally:
            if not done:
                self._bind_abort(pending)

    # ---- the directory, asked in the executor -------------------------------

    async def names(self, pattern: str = "*") -> List[str]:  # type: ignore[override]
        """As pyzmq.ZMQ.names, a coroutine: the directory is asked in the
        loop's default executor."""
        from pyzmq.directory import entry_dict
        directory = self._need_directory()
        entries = await _in_executor(directory.list, pattern)
        return [entry_dict(entry)["name"] for entry in entries]

    async def info(self, name: str) -> Dict[str, object]:  # type: ignore[override]
        """As pyzmq.ZMQ.info, a coroutine (the directory is asked in the
        loop's default executor)."""
        from pyzmq.directory import entry_dict
        from pyzmq.protocol import validate_name
        directory = self._need_directory()
        return entry_dict(await _in_executor(directory.info, validate_name(name)))

    # ---- connecting and closing without blocking the loop -------------------

    @classmethod
    async def connect(cls, hostname: str, *, timeout: float = 5.0, hwm: int = 1000,
                      linger: float = 10.0, bind_timeout: float = 10.0,
                      secret_key: Optional[str] = None,
                      allowed_keys: Optional[Iterable[str]] = None,
                      directory_key: Optional[str] = None, require_curve: bool = False,
                      on_lost: Optional[Callable[[str, str], None]] = None,
                      etcd_options: Optional[Dict[str, object]] = None) -> "ZMQ":
        """An instance connected to the directory at `hostname`, made without
        blocking the loop: ``zmq = await pyzmq.asyncio.ZMQ.connect(host)``.
        The same arguments as the constructor (which, inside a running
        loop, refuses).  The connection (up to `timeout`) is made in the
        loop's default executor; the instance belongs to the loop's thread.
        Cancelled while it connects, the client that still comes is closed
        in that executor thread, never in the loop's."""
        self = cls(None, timeout=timeout, hwm=hwm, linger=linger, bind_timeout=bind_timeout,
                   secret_key=secret_key, allowed_keys=allowed_keys,
                   require_curve=require_curve, on_lost=on_lost)
        loop = asyncio.get_running_loop()
        hand_over = _HandOver()
        job = loop.run_in_executor(None, hand_over.run, self._open_directory, hostname,
                                   directory_key, secret_key, etcd_options)
        try:
            self._directory = await asyncio.shield(job)
        except BaseException:
            # cancelled while connecting: the client may still come, and its
            # close (a REVOKE and its answer, the keeper's end) waits
            late = hand_over.abandon()
            if late is not None:
                loop.run_in_executor(None, late.close)
            wiring.ZMQ.close(self)      # standalone so far: closes at once
            raise
        return self

    async def __aenter__(self) -> "ZMQ":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> Self:
        # a plain ``with`` closes in the blocking form (its exit cannot
        # await): refused inside a running loop when that close can wait
        # (a directory: UNREGISTERs, and TCP sockets to drain); a standalone
        # instance is inproc only and closes at once
        if self._directory is not None and _loop_running():
            raise RuntimeError(
                "a plain `with` of a pyzmq.asyncio.ZMQ with a directory inside a running "
                "event loop would close it in the blocking form on leaving the block "
                "(unregistering its names, waiting up to linger for queued messages) and "
                "hold the loop meanwhile: use `async with zmq:` (or `await zmq.close()`)")
        return self

    def __exit__(self, *exc: object) -> None:
        # entered outside a running loop, or standalone: the blocking form
        wiring.ZMQ.close(self)
        self._wake()

    def close(self, timeout: Optional[float] = None) -> Awaitable[int]:  # type: ignore[override]
        """Close: unregister this instance's global names (in the loop's
        default executor), wait up to `timeout` (None: `linger`) for queued
        messages to leave, and close its sockets.  ``await zmq.close()``
        gives the count of messages that had not left (0: all did), as the
        blocking close().  The wait for queued messages never blocks the
        loop (it looks every 5 ms and sleeps on the loop between); what
        other tasks send meanwhile is not waited for, and a second close()
        meanwhile returns this one's task.  Inside a
        running loop the close is a task that runs even if nobody awaits
        it; outside one (atexit, a leak check) it closes at once, in the
        blocking form, and returns an awaitable that is already done."""
        if self.closed:
            return _Done(0)
        if self._closing is not None:
            return self._closing        # one close at a time: the first one's
        self._check_usable()
        if timeout is not None:
            timeout = wiring.check_seconds(timeout, "timeout", at_most=86400)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                return _Done(wiring.ZMQ.close(self, timeout))
            finally:
                self._wake()
        # binders of this process stop sending to its queues now, not when
        # the task gets to it (wiring.ZMQ._shutdown says why)
        self._withdraw()
        self._closing = loop.create_task(self._aclose(loop, timeout))
        return self._closing

    async def _await_drained(self, timeout):
        """wiring.ZMQ._wait_drained without blocking the loop: the drain's
        steps never wait, and the loop sleeps between them.  Cancelled, the
        instance is closed and the cancellation goes on."""
        seconds = self._linger if timeout is None else timeout
        try:
            drain = _zmq._drain_start(self, seconds)
            try:
                while not drain.step():
                    await asyncio.sleep(drain.ms_to_wait() / 1000)
                left, late, departed = drain.result()
            finally:
                drain.release()
        except BaseException:
            # (its directory client is gone already: _aclose took it)
            self._forget()
            self._close(False)      # relay threads are told to stop, not joined
            raise
        return self._report_drained(left, late, departed, seconds)

    async def _aclose(self, loop, timeout):
        directory, self._directory = self._directory, None
        left = 0
        try:
            if directory is not None:
                names = [o.name for o in self._objects.values() if o.address is not None]
                await asyncio.shield(loop.run_in_executor(None, _unregister_all,
                                                          directory, names))
        finally:
            try:
                if not self.closed and self.pid == os.getpid():
                    left = await self._await_drained(timeout)
            finally:
                if not self.closed:
                    self._forget()
                    self._close(False)      # relay threads are told to stop, not joined
                self._wake()           # waiting tasks retry and get "closed"
        return left


def _loop_running():
    """Whether an event loop runs in this thread now (whose thread a
    blocking call would hold)."""
    return asyncio._get_running_loop() is not None


async def _run_steps(steps):
    """wiring.run_steps with each directory request in the loop's default
    executor (_in_executor), so the loop never waits for the directory."""
    try:
        request = next(steps)
        while True:
            try:
                result = await _in_executor(*request)
            except BaseException as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(result)
    except StopIteration as done:
        return done.value


async def _in_executor(fn, *args):
    """fn(*args) in the running loop's default executor.  Cancelled, the
    call still runs to its end there (a directory request cannot be taken
    back); its result is dropped."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _unregister_all(directory, names):
    """In an executor thread: what close() tells the directory."""
    from pyzmq.errors import Error
    try:
        for name in names:
            try:
                directory.unregister(name)
            except Error:
                pass    # the directory drops them with the connection anyway
    finally:
        directory.close()


class _HandOver:
    """A directory client made in an executor thread for connect(): handed
    to the loop, or, once connect() gave up (cancelled), closed in that
    thread (close() waits for the directory's answer and the keeper)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._abandoned = False
        self._client = None

    def run(self, make, *args):
        client = make(*args)
        with self._lock:
            if not self._abandoned:
                self._client = client
                return client
        client.close()
        return None

    def abandon(self):
        """connect() gives up: the client if it had come (the caller
        closes it off the loop), else None (run() will close it)."""
        with self._lock:
            self._abandoned = True
            client, self._client = self._client, None
        return client


class _Done:
    """An awaitable that is already done (close() outside a running loop)."""

    def __init__(self, value):
        self.value = value

    def __await__(self):
        return self.value
        yield
