# What close() waits for: every message queued on an outgoing TCP socket
# (a PUSH to a remote queue, a global exchange's listener) to have left
# this process; and wait_bound(), for a producer that waits for its
# consumers.  (Included by _zmq.pyx: one extension module, one compilation
# unit.)
#
# libzmq has no pipe-depth API (zmq_socket_monitor_pipes_stats is draft,
# not built here).  So close() sends a marker behind the queued messages of
# each such socket: two frames, so every receiver drops it (data is always
# one frame), the first of MARKER_SIZE bytes made with zmq_msg_init_data and
# a free callback.  libzmq calls it when it lets go of the marker: when its
# TCP engine has written it out, or when it dropped it (a peer that went).
# The marker is larger than two of the engine's output batches (8 KiB), so
# the engine writes part of it straight from the message, which it does only
# with an empty batch buffer: everything queued before it is then in the
# kernel.  A pipe delivers in order, so the callback means every earlier
# message has left this process.  The hot path pays nothing for this.

cdef extern from *:
    """
    static char pzw_marker_data[65536];
    static void pzw_marker_free(void *data, void *hint)
    {
        (void)data;
        __atomic_store_n((int *)hint, 1, __ATOMIC_RELEASE);
    }
    static int pzw_marker_done(int *flag)
    {
        return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    }
    """
    char pzw_marker_data[65536]
    void pzw_marker_free(void *data, void *hint) noexcept nogil
    int pzw_marker_done(int *flag) noexcept nogil

from libc.stdlib cimport calloc

DEF MARKER_SIZE = 65536
DEF DRAIN_POLL_MS = 5
# A PUSH whose consumer is gone (its reconnections are refused) would hold
# its marker until the timeout even when nothing else is queued.  So a
# PUSH gets its marker only after SETTLE_S in which its monitor reported
# no connection attempt (there is none while it is connected); one whose
# consumer is not there is not waited for.
DEF SETTLE_S = 0.3
# libzmq's monitor events (zmq.h; not in include/libzmq.pxd): a connection
# attempt under way, refused and retried later; these come only while the
# socket is not connected (every 100 ms, its reconnect interval)
DEF EV_CONNECT_DELAYED = 0x0002
DEF EV_CONNECT_RETRIED = 0x0004
DEF EV_CLOSED = 0x0080
DEF EV_NOT_CONNECTED = EV_CONNECT_DELAYED | EV_CONNECT_RETRIED | EV_CLOSED
DEF EV_MONITOR_STOPPED = 0x0400


cdef int _events(void *mon) noexcept:
    """The kinds of the monitor events waiting on mon, or-ed; read them all."""
    cdef zmq_msg_t m
    cdef int seen = 0
    cdef unsigned short event
    while True:
        zmq_msg_init(&m)
        if zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0:
            zmq_msg_close(&m)
            return seen
        if zmq_msg_size(&m) == 6:
            memcpy(&event, zmq_msg_data(&m), 2)
            seen |= event
        zmq_msg_close(&m)


cdef int _send_marker(void *s, int *flag) except -1:
    """Queue a close marker on s: 0 once queued, 1 when s has no room (try
    again).  *flag turns 1 when libzmq lets go of it."""
    cdef zmq_msg_t m
    cdef int err
    if zmq_msg_init_data(&m, pzw_marker_data, MARKER_SIZE, pzw_marker_free, flag) != 0:
        _raise_zmq("cannot make a close marker")
    if zmq_msg_send(&m, s, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0:
        err = zmq_errno()
        zmq_msg_close(&m)       # calls the callback: not a marker that left
        flag[0] = 0
        if err == EAGAIN or err == EINTR:
            return 1
        _raise_errno("cannot queue a close marker", err)
    # the second frame goes with the first: a multipart message is queued
    # whole or not at all
    if zmq_send(s, b"", 0, ZMQ_DONTWAIT) < 0:
        _raise_zmq("cannot queue a close marker")
    return 0


cdef bint _over_tcp(void *s):
    """Whether s was last connected (or bound) over TCP: an inproc peer is in
    this process, and what its pipe holds stays readable after we close."""
    cdef char buf[256]
    cdef size_t n = sizeof(buf)
    if zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &n) != 0 or n < 6:
        return False
    return memcmp(buf, b"tcp://", 6) == 0


cdef long long _sndhwm(void *s):
    cdef int v = 0
    cdef size_t n = sizeof(v)
    if zmq_getsockopt(s, ZMQ_SNDHWM, &v, &n) != 0:
        return 0
    return v


cdef class _Drain:
    """One close()'s wait for what is queued to leave, in steps: step()
    never waits, so the blocking close() (_drain) sleeps between steps and
    asyncio's close awaits the loop instead (_drain_start).  result() says
    what was left; release() (idempotent, never waits) gives back the
    monitors and memory."""
    cdef _Core core
    cdef double deadline
    cdef double settled
    cdef int n
    cdef void **socks
    cdef int *slot
    cdef int **flags
    # 0 not queued, 1 queued, 2 left, 3 closed (no consumer)
    cdef char *state
    cdef void **mons
    cdef int *push          # index in pushes, -1: the listener
    cdef bint done

    def __dealloc__(self):
        self.release()

    cdef int setup(self, _Core core, timeout) except -1:
        cdef int i, j, k, n = 0
        cdef void *s
        self.core = core
        self.deadline = _deadline(timeout)
        for i in range(core.nex):
            if core.ex[i].msgs:
                n += core.ex[i].npush + (1 if core.ex[i].xpub != NULL else 0)
        if n == 0:
            self.done = True
            return 0
        self.socks = <void **>calloc(n, sizeof(void *))
        self.slot = <int *>calloc(n, sizeof(int))
        self.flags = <int **>calloc(n, sizeof(int *))
        self.state = <char *>calloc(n, 1)
        self.mons = <void **>calloc(n, sizeof(void *))
        self.push = <int *>calloc(n, sizeof(int))
        if (self.socks == NULL or self.slot == NULL or self.flags == NULL
                or self.state == NULL or self.mons == NULL or self.push == NULL):
            raise MemoryError()
        for i in range(core.nex):
            if not core.ex[i].msgs:
                continue
            for j in range(-1, core.ex[i].npush):
                s = core.ex[i].xpub if j < 0 else core.ex[i].pushes[j]
                if s == NULL or not _over_tcp(s):
                    continue
                self.socks[self.n] = s
                self.slot[self.n] = i
                self.push[self.n] = j
                self.n += 1
        self.settled = _now() + SETTLE_S
        for k in range(self.n):
            self.flags[k] = <int *>calloc(1, sizeof(int))
            if self.flags[k] == NULL:
                raise MemoryError()
            if self.push[k] >= 0:
                self.mons[k] = _monitor(self.socks[k], f"inproc://pyzmq-wiring-drain/{core.pid}/"
                                        f"{_next_serial()}", EV_NOT_CONNECTED)
        return 0

    def step(self):
        """One look, never waiting: True once everything left or the
        deadline passed (then result() counts what did not)."""
        cdef int k, left = 0, ev
        if self.done:
            return True
        if self.core.closed:
            # closed meanwhile (asyncio: another close() while this one
            # slept): the sockets are gone, and so is what was queued
            self.done = True
            return True
        for k in range(self.n):
            if self.mons[k] != NULL and self.state[k] <= 1:
                ev = _events(self.mons[k])
                if ev & EV_NOT_CONNECTED and self.state[k] == 0:
                    # no consumer there: nothing can leave now, and
                    # libzmq does not say whether its pipe is empty, so
                    # it is not waited for (libzmq keeps what is queued
                    # for the socket's linger, for a consumer that
                    # comes back).  (Closing it here to learn from its
                    # MONITOR_STOPPED whether the pipe was empty would
                    # leave its monitor writing to a closed PAIR, which
                    # blocks libzmq's I/O thread.)
                    self.state[k] = 3
            if (self.state[k] == 0 and (self.mons[k] == NULL or _now() >= self.settled)
                    and _send_marker(self.socks[k], self.flags[k]) == 0):
                self.state[k] = 1
            if self.state[k] == 1 and pzw_marker_done(self.flags[k]):
                self.state[k] = 2
            if self.state[k] == 1 or self.state[k] == 0:
                left += 1
        if left == 0 or _ms_left(self.deadline) == 0:
            self.done = True
        return self.done

    def ms_to_wait(self):
        """How long to sleep before the next step (ms)."""
        cdef long ms = <long>_ms_left(self.deadline)
        return DRAIN_POLL_MS if ms < 0 or ms > DRAIN_POLL_MS else ms

    def result(self):
        """(messages not known to have left, [ids of their exchanges]):
        (0, []) when all left.  Per exchange that is at most what it sent,
        and at most what its unconfirmed sockets' marks let queue (libzmq
        does not say how many of them are still there).  Those sockets'
        linger is set to 0: closing them drops what is left at once."""
        cdef int k, i
        cdef long long cap
        cdef dict bound = {}
        cdef list late = []
        if self.core.closed:
            return 0, []        # another close() closed it and said what was left
        for k in range(self.n):
            if self.state[k] >= 2:
                continue
            i = self.slot[k]
            cap = _sndhwm(self.socks[k])
            cap = <long long>self.core.ex[i].msgs if cap <= 0 else cap + 1
            bound[i] = bound.get(i, 0) + cap
            _setopt_int(self.socks[k], ZMQ_LINGER, 0)
        total = 0
        for i, cap in bound.items():
            total += min(cap, <long long>self.core.ex[i].msgs)
            late.append(self.core.idbase + i + 1)
        return total, late

    cpdef release(self):
        cdef int k
        if self.socks == NULL and self.flags == NULL:
            return
        for k in range(self.n):
            if self.mons != NULL and self.mons[k] != NULL:
                if self.core.closed:
                    zmq_close(self.mons[k])     # its socket is closed: so is its monitor
                else:
                    _unmonitor(self.socks[k], self.mons[k])   # the socket first: see above
                self.mons[k] = NULL
            if self.flags != NULL and self.flags[k] != NULL:
                if self.state[k] != 1 or pzw_marker_done(self.flags[k]):
                    free(self.flags[k])
                # else libzmq still holds the marker and will set the flag
                # when it drops it: the int is left to it (4 bytes a socket)
                self.flags[k] = NULL
        free(self.socks); free(self.slot); free(self.flags); free(self.state)
        free(self.mons); free(self.push)
        self.socks = NULL; self.slot = NULL; self.flags = NULL; self.state = NULL
        self.mons = NULL; self.push = NULL
        self.n = 0


def _drain_start(_Core self, timeout):
    """A _Drain of this instance's outgoing TCP sockets (see _drain), for
    a caller that waits between its steps itself (asyncio's close)."""
    self._check()
    cdef _Drain d = _Drain.__new__(_Drain)
    try:
        d.setup(self, timeout)
    except BaseException:
        d.release()
        raise
    return d


def _drain(_Core self, timeout):
    """Wait (up to timeout seconds, None: no limit) until every message
    queued on this instance's outgoing TCP sockets has left the process.

    Returns (messages not known to have left, [ids of their exchanges]):
    (0, []) when all left (see _Drain.result).  Ctrl-C (any exception of a
    signal handler) interrupts the wait; the sockets are left as they were."""
    cdef _Drain d = _drain_start(self, timeout)
    cdef int ms, rc, err
    try:
        while not d.step():
            ms = d.ms_to_wait()
            with nogil:
                rc = poll(NULL, 0, ms)
                err = errno if rc < 0 else 0
            if rc < 0 and err == EINTR:
                PyErr_CheckSignals()        # Ctrl-C: KeyboardInterrupt here
        return d.result()
    finally:
        d.release()


def _bound_count(_Core self, object eid):
    """(bindings made by this instance's bind(), binders attached to the
    listener) of exchange eid."""
    self._check()
    cdef ExchangeSlot *e = self._exchange(_id(eid, "exchange"))
    return e.npush, _binders(self.svc, e)


def _wait_bound(_Binder self, object eid_obj, object count, timeout):
    """Wait until at least count queues are bound to exchange eid: its own
    bindings (this instance's bind()) and wiring binders attached to its
    listener (remote ones, relays, other instances of this process), which
    are let in meanwhile (by the service thread: the count is read again
    every BOUND_LOOK_S while it waits).  Returns how many are bound;
    pyzmq.Timeout after timeout seconds (None: no limit)."""
    self._check()
    _check_timeout(timeout)
    cdef Py_ssize_t eid = _id(eid_obj, "exchange")
    cdef ExchangeSlot *e = self._exchange(eid)
    if type(count) is not int:
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 1:
        raise ValueError(f"count must be >= 1, not {count}")
    cdef double deadline = _deadline(timeout)
    cdef int n
    while True:
        self._service()             # reads the binders' subscriptions
        e = self._exchange(eid)
        n = e.npush + _binders(self.svc, e)
        if n >= count:
            return n
        if e.xpub == NULL:
            raise Error(f"wait_bound(): exchange {eid} has {n} bound queue"
                        f"{'' if n == 1 else 's'} and is not global: only this instance's "
                        "bind() can bind more, and it cannot run while this waits")
        if deadline >= 0 and _now() >= deadline:
            raise Timeout(f"wait_bound(): {n} of {count} queues bound to exchange {eid} "
                          f"after {timeout} s")
        # the service thread may take the fds' news (and count the binder)
        # first: look again after BOUND_LOOK_S at most
        self._wait(NULL, FDS_LISTENERS, deadline, BOUND_LOOK_S)
