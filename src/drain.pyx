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

# (The marker's data and free callback are in src/relay.h: a relay's
# thread queues the same marker on its PUSH.)
#
# A relay (bind() of a remote exchange to a remote queue) drains itself in
# its own thread, which owns its sockets (src/relay.h): close() tells it to
# (DRAIN), and each step reads what it published.  A relay whose queue's
# consumer is gone is given up (STOP) and reported as a departed PUSH is;
# one still passing on at the deadline is told to DROP what it holds and
# counts it, which close() waits for (RELAY_DROP_S at most: the thread
# answers at once).

DEF MARKER_SIZE = 65536
DEF DRAIN_POLL_MS = 5
# the first looks come sooner: a marker on a connected socket with little
# queued before it is written out within a millisecond
DEF DRAIN_FIRST_MS = 1
DEF DRAIN_FIRST_LOOKS = 5
# A PUSH whose consumer is gone (its reconnections are refused) would hold
# its marker until the timeout even when nothing else is queued.  Whether a
# PUSH's consumer is connected is known at once: the service thread keeps
# what each outgoing TCP PUSH's monitor said last (sv_watch, src/service.h).
# One that is not connected gets no marker and is not waited for; one that
# loses its consumer while close waits is given up then.  Both are
# reported (result()): what was queued for them is not known.

# a socket's state in a _Drain
DEF ROOM = 0            # its marker is not queued yet (no room: tried again)
DEF QUEUED = 1          # queued, not written out yet
DEF LEFT = 2            # written out: everything before it left
DEF GONE = 3            # its consumer is not connected: not waited for
DEF GONE_MARKED = 4     # the same, with its marker still queued
_STATE_NAMES = ("waiting for room", "queued", "left", "gone", "gone")

# a relay's state in a _Drain (LEFT and GONE as above)
DEF R_WAIT = 0          # passing on what it took in, or its marker not yet written out
DEF R_DROPPING = 5      # told to drop what it holds (the deadline passed)
DEF R_DROPPED = 6       # it did, and counted it
DEF R_FAILED = 7        # its thread ended on its own (a socket failure)
DEF R_STOPPING = 8      # its consumer is gone: told to STOP, its count not in yet
_RELAY_STATE_NAMES = {R_WAIT: "passing on", LEFT: "left", GONE: "gone",
                      R_DROPPING: "dropping", R_DROPPED: "dropped", R_FAILED: "failed",
                      R_STOPPING: "gone"}
DEF RELAY_DROP_S = 1.0


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


cdef str _last_endpoint(void *s):
    """The endpoint s was last connected (or bound) to ("" if none)."""
    cdef char buf[256]
    cdef size_t n = sizeof(buf)
    if zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &n) != 0 or n < 2:
        return ""
    return buf[:n - 1].decode(errors="replace")


cdef bint _over_tcp(void *s):
    """Whether s was last connected (or bound) over TCP: an inproc peer is in
    this process, and what its pipe holds stays readable after we close."""
    return _last_endpoint(s).startswith("tcp://")


cdef bint _no_room(void *s):
    """Whether s could not take another message now (its pipe is at its
    mark)."""
    cdef int ev = 0
    cdef size_t n = sizeof(ev)
    if zmq_getsockopt(s, ZMQ_EVENTS, &ev, &n) != 0:
        return False
    return not (ev & ZMQ_POLLOUT)


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
    memory."""
    cdef _Core core
    cdef double deadline
    cdef int n
    cdef void **socks
    cdef int *slot
    cdef int **flags
    cdef char *state        # ROOM, QUEUED, LEFT, GONE, GONE_MARKED
    cdef int *push          # index in pushes, -1: the listener
    cdef char *before       # GONE: not connected when close looked (else: left meanwhile)
    cdef char *full         # GONE: no room for another message when given up
    cdef char *ever         # GONE: had been connected since it was bound
    cdef int looks          # steps taken
    cdef bint done
    cdef list relays        # the _Relays told to DRAIN
    cdef list rstate        # R_WAIT, LEFT, GONE, R_DROPPING, R_DROPPED, R_FAILED
    cdef list rgone         # GONE: (before, full, connected), as for a PUSH
    cdef bint timed_out     # the deadline passed: relays told to DROP
    cdef double drop_until  # how long close() waits for them to count

    def __dealloc__(self):
        self.release()

    cdef int setup(self, _Core core, timeout) except -1:
        cdef int i, j, k, n = 0
        cdef void *s
        self.core = core
        self.deadline = _deadline(timeout)
        self.relays = []
        self.rstate = []
        self.rgone = []
        for relay in core._relays:
            if (<_Relay>relay).command(b"DRAIN"):
                self.relays.append(relay)
                self.rstate.append(R_WAIT)
                self.rgone.append(None)
        for i in range(core.nex):
            if core.ex[i].msgs:
                n += core.ex[i].npush + (1 if core.ex[i].xpub != NULL else 0)
        if n == 0:
            self.done = not self.relays
            return 0
        self.socks = <void **>calloc(n, sizeof(void *))
        self.slot = <int *>calloc(n, sizeof(int))
        self.flags = <int **>calloc(n, sizeof(int *))
        self.state = <char *>calloc(n, 1)
        self.push = <int *>calloc(n, sizeof(int))
        self.before = <char *>calloc(n, 1)
        self.full = <char *>calloc(n, 1)
        self.ever = <char *>calloc(n, 1)
        if (self.socks == NULL or self.slot == NULL or self.flags == NULL
                or self.state == NULL or self.push == NULL or self.before == NULL
                or self.full == NULL or self.ever == NULL):
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
        for k in range(self.n):
            self.flags[k] = <int *>calloc(1, sizeof(int))
            if self.flags[k] == NULL:
                raise MemoryError()
        return 0

    cdef bint _gone(self, int k) noexcept:
        """Whether socket k is a PUSH whose consumer is not connected now,
        as its watch says (a listener, or a PUSH not watched: False)."""
        cdef int ups = 0
        if self.push[k] < 0 or self.core.svc == NULL:
            return False
        if sv_watch_state(self.core.svc, self.socks[k], &ups) != SV_DOWN:
            return False
        self.ever[k] = ups > 0
        return True

    cdef int _relay_step(self) except -1:
        """Look at each relay (after the deadline: tell those still passing
        on to DROP).  Returns the number still passing on or counting what
        it dropped (R_WAIT, R_STOPPING) plus the number whose count has
        not come yet (R_STOPPING, R_DROPPING) << 16.  Never waits."""
        cdef int k, st, waiting = 0, dropping = 0
        cdef _Relay relay
        cdef pzr *r
        for k in range(len(self.relays)):
            relay = <_Relay>self.relays[k]
            r = relay.r
            st = self.rstate[k]
            if st == R_WAIT:
                if pzr_get(&r.phase) >= PZR_LEFT:
                    st = LEFT
                elif pzr_get(&r.pstate) == SV_DOWN:
                    # its queue's consumer is not connected: nothing can
                    # leave now; what its PUSH holds is kept for its linger
                    self.rgone[k] = (self.looks == 0, bool(pzr_get(&r.blocked)),
                                     pzr_get(&r.pups) > 0)
                    # it counts what it held and drops (what its XSUB
                    # received, the message waiting for room): waited for
                    # as a DROP's count is
                    st = R_STOPPING if relay.command(b"STOP") else GONE
                elif pzr_get(&r.ended):
                    st = R_FAILED
                elif self.timed_out:
                    st = R_DROPPING if relay.command(b"DROP") else R_FAILED
            if st == R_DROPPING and pzr_get(&r.ended):
                st = R_DROPPED
            if st == R_STOPPING and pzr_get(&r.ended):
                st = GONE
            self.rstate[k] = st
            waiting += st == R_WAIT or st == R_STOPPING
            dropping += st == R_DROPPING or st == R_STOPPING
        return waiting + (dropping << 16)

    def step(self):
        """One look, never waiting: True once everything left or was given
        up, or the deadline passed (then result() counts what did not)."""
        cdef int k, left = 0, rl
        if self.done:
            return True
        if self.core.closed:
            # closed meanwhile (asyncio: another close() while this one
            # slept): the sockets are gone, and so is what was queued
            self.done = True
            return True
        rl = self._relay_step() if self.relays else 0
        if self.timed_out:
            # past the deadline: only the relays' counts are waited for
            self.looks += 1
            self.done = (rl >> 16) == 0 or _now() >= self.drop_until
            return self.done
        left = rl & 0xffff
        for k in range(self.n):
            if self.state[k] == QUEUED and pzw_marker_done(self.flags[k]):
                self.state[k] = LEFT
            if (self.state[k] == ROOM or self.state[k] == QUEUED) and self._gone(k):
                # no consumer there: nothing can leave now.  libzmq keeps
                # what is queued for the socket's linger, for a consumer
                # that comes back, and does not say how much that is
                self.before[k] = self.looks == 0
                self.full[k] = _no_room(self.socks[k])
                self.state[k] = GONE_MARKED if self.state[k] == QUEUED else GONE
            if self.state[k] == ROOM and _send_marker(self.socks[k], self.flags[k]) == 0:
                self.state[k] = QUEUED
            if self.state[k] == QUEUED and pzw_marker_done(self.flags[k]):
                self.state[k] = LEFT
            if self.state[k] == QUEUED or self.state[k] == ROOM:
                left += 1
        self.looks += 1
        if left == 0:
            self.done = True
        elif _ms_left(self.deadline) == 0:
            if self.relays and not self.timed_out:
                # tell the relays still passing on to drop and count what
                # they hold; the next steps wait for their counts
                self.timed_out = True
                self.drop_until = _now() + RELAY_DROP_S
                self._relay_step()
                return False
            self.done = True
        return self.done

    def ms_to_wait(self):
        """How long to sleep before the next step (ms)."""
        if self.timed_out:
            return 1            # a relay's count comes at once
        cdef long ms = <long>_ms_left(self.deadline)
        cdef long poll_ms = DRAIN_FIRST_MS if self.looks < DRAIN_FIRST_LOOKS else DRAIN_POLL_MS
        return poll_ms if ms < 0 or ms > poll_ms else ms

    def states(self):
        """[(exchange id, endpoint, state)] of the sockets this close waits
        for, state one of "waiting for room", "queued", "left", "gone" (for
        tests and the docs' measurements)."""
        if self.core.closed:
            return []
        return [(self.core.idbase + self.slot[k] + 1, _last_endpoint(self.socks[k]),
                 _STATE_NAMES[self.state[k]]) for k in range(self.n)] + [
                ((<_Relay>self.relays[k]).label, (<_Relay>self.relays[k]).qendpoint,
                 _RELAY_STATE_NAMES[self.rstate[k]]) for k in range(len(self.relays))]

    def result(self):
        """(messages not known to have left, [ids of their exchanges],
        [departed]).  The first two are (0, []) when all left: per
        exchange at most what it sent, and at most what its unconfirmed
        sockets' marks let queue (libzmq does not say how many of them are
        still there); those sockets' linger is set to 0, so closing them
        drops what is left at once.  departed: one dict per PUSH whose
        consumer was not connected (so close did not wait for it), with
        "exchange" (id), "endpoint", "when" ("before": not connected when
        close looked, "during": went while close waited), "full" (its
        pipe had no room for another message: messages are certainly left
        in it; else there may be none) and "connected" (it had been
        connected since it was bound or re-pointed).  What is queued for
        those is not counted: libzmq does not say, and keeps it for the
        socket's linger, for a consumer that comes back.  A relay's also
        has "relay" (its label, "exchange" None) and "dropped": what it
        had received and could not pass on (its XSUB's messages, the one
        waiting for room, the rest of its stash), which the count
        includes."""
        cdef int k, i
        cdef long long cap
        cdef dict bound = {}
        cdef list late = [], departed = []
        if self.core.closed:
            return 0, [], []    # another close() closed it and said what was left
        for k in range(self.n):
            i = self.slot[k]
            if self.state[k] == GONE or self.state[k] == GONE_MARKED:
                departed.append({"exchange": self.core.idbase + i + 1,
                                 "endpoint": _last_endpoint(self.socks[k]),
                                 "when": "before" if self.before[k] else "during",
                                 "full": bool(self.full[k]),
                                 "connected": bool(self.ever[k])})
                continue
            if self.state[k] == LEFT:
                continue
            cap = _sndhwm(self.socks[k])
            cap = <long long>self.core.ex[i].msgs if cap <= 0 else cap + 1
            bound[i] = bound.get(i, 0) + cap
            # not checked: what it holds is counted lost just above, and
            # it fails only on a context being ended (nothing left to drop)
            _setopt_int(self.socks[k], ZMQ_LINGER, 0)
        total = 0
        for i, cap in bound.items():
            total += min(cap, <long long>self.core.ex[i].msgs)
            late.append(self.core.idbase + i + 1)
        cdef _Relay relay
        for k in range(len(self.relays)):
            relay = <_Relay>self.relays[k]
            st = self.rstate[k]
            if st == GONE or st == R_STOPPING:
                before, full, ever = self.rgone[k]
                # "dropped": what it had received and could not pass on
                # (counted in the total; its PUSH's pipe is not: kept for
                # the linger, as a PUSH's is); 0 if its count did not
                # come in time (R_STOPPING)
                n = pzr_get64(&relay.r.lost) if st == GONE else 0
                departed.append({"exchange": None, "relay": relay.label,
                                 "endpoint": relay.qendpoint,
                                 "when": "before" if before else "during",
                                 "full": full, "connected": ever, "dropped": n})
                total += n
            elif st != LEFT:
                # dropped at the deadline (R_DROPPING: its count did not
                # come in time, so at least its PUSH's mark is not known)
                n = pzr_get64(&relay.r.lost)
                if st == R_DROPPING:
                    n = max(n, 1)
                total += n
                late.append(relay.label)
        return total, late, departed

    cpdef release(self):
        cdef int k
        if self.socks == NULL and self.flags == NULL:
            return
        for k in range(self.n):
            if self.flags != NULL and self.flags[k] != NULL:
                if ((self.state[k] != QUEUED and self.state[k] != GONE_MARKED)
                        or pzw_marker_done(self.flags[k])):
                    free(self.flags[k])
                # else libzmq still holds the marker and will set the flag
                # when it drops it: the int is left to it (4 bytes a socket)
                self.flags[k] = NULL
        free(self.socks); free(self.slot); free(self.flags); free(self.state)
        free(self.push); free(self.before); free(self.full); free(self.ever)
        self.socks = NULL; self.slot = NULL; self.flags = NULL; self.state = NULL
        self.push = NULL; self.before = NULL; self.full = NULL; self.ever = NULL
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

    Returns (messages not known to have left, [ids of their exchanges],
    [departed consumers]): (0, [], []) when all left (see _Drain.result).  Ctrl-C (any exception of a
    signal handler) interrupts the wait; the sockets are left as they were."""
    cdef _Drain d = _drain_start(self, timeout)
    cdef int ms, rc, err
    try:
        while not d.step():
            ms = d.ms_to_wait()
            with nogil:
                rc = poll(NULL, 0, ms)
                err = errno if rc < 0 else 0
            # Ctrl-C: KeyboardInterrupt here.  After every sleep, not only
            # on EINTR: a signal taken by another thread of the process
            # (the kernel may pick one; pthread_kill does) only sets
            # Python's flag, and this thread's sleep goes on undisturbed
            PyErr_CheckSignals()
        return d.result()
    finally:
        d.release()


def _push_states(_Core self):
    """[(exchange id, endpoint, state)] of this instance's watched PUSHes,
    state "new", "up" or "down" as the service thread's watch says now
    (for tests: what close() will find)."""
    self._check()
    cdef int i, j, st
    cdef list out = []
    if self.svc == NULL:
        return out
    for i in range(self.nex):
        for j in range(self.ex[i].npush):
            st = sv_watch_state(self.svc, self.ex[i].pushes[j], NULL)
            if st >= 0:
                out.append((self.idbase + i + 1, _last_endpoint(self.ex[i].pushes[j]),
                            ("new", "up", "down")[st]))
    return out


def _relay_states(_Core self):
    """[(label, queue endpoint, phase, PUSH watch)] of this instance's
    relays, phase one of "running", "draining", "marking", "marked",
    "left", "ended", the watch "new", "up" or "down" (for tests)."""
    self._check()
    cdef _Relay relay
    cdef list out = []
    for x in self._relays:
        relay = <_Relay>x
        ph = ("running", "draining", "marking", "marked", "left")[pzr_get(&relay.r.phase)]
        out.append((relay.label, relay.qendpoint,
                    "ended" if pzr_get(&relay.r.ended) and ph != "left" else ph,
                    ("new", "up", "down")[pzr_get(&relay.r.pstate)]))
    return out


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
