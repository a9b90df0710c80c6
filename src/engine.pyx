# Engine, what pyzmq.wiring.ZMQ extends: send and receive (the hot paths,
# with their slow paths for fan-out, load balancing and waiting), their
# batch forms, and serve().
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef class Engine(_Binder):
    """Sockets of one wiring instance; used by one thread, the one that made it."""

    def serve(self, timeout):
        """Let remote binders in for `timeout` seconds without sending or
        receiving: attaches them to this instance's global exchanges and
        confirms their bind().  (The service thread does this at any time,
        and send() too while it waits for room; serve() is for an owner
        that wants it done before it goes on.)"""
        self._check()
        if timeout is None:
            raise TypeError("serve() needs a timeout in seconds")
        cdef double deadline = _deadline(timeout)
        cdef int ms
        if self.nitems == self.ninputs and deadline < 0:
            raise Error("serve() would wait forever: this instance has no global exchange")
        while True:
            self._service()
            ms = <int>_ms_left(deadline)
            if ms == 0:
                return
            if self.nitems == self.ninputs:
                __import__("time").sleep(ms / 1000.0)   # nothing to serve
                continue
            self._wait(NULL, FDS_LISTENERS, deadline, 0)

    # ---- send -------------------------------------------------------------

    @cython.binding(False)
    @cython.embedsignature.format("clinic")
    def send(self, object eid, msg, timeout=None, bint block=True):
        """Send msg (bytes, any contiguous buffer, or a received Frame, which
        goes on without a copy) on exchange eid.

        Fan-out: every queue bound to the exchange gets one copy; with no
        bound queue the message is dropped.  Blocks while a bound queue is
        at its high-water mark, up to timeout seconds (None: no limit),
        then raises pyzmq.Timeout.  With block=False returns False instead of
        waiting.  Returns True once sent.
        """
        return _send(self, eid, msg, timeout, block)

    cdef object _send_lent(self, ExchangeSlot *e, object msg, const char *data,
                           Py_ssize_t size, object timeout, bint block):
        """Send a large bytes object without copying it."""
        zw_collect()
        cdef zmq_msg_t zm
        cdef zw_loan *loan = zw_lend(msg)
        if loan == NULL:
            raise MemoryError()
        if zmq_msg_init_data(&zm, <void *>data, size, zw_give_back, loan) != 0:
            zw_cancel(loan)
            _raise_zmq("cannot wrap the message")
        return self._send_shared(e, &zm, data, size, timeout, block)

    cdef object _send_shared(self, ExchangeSlot *e, zmq_msg_t *zm, const char *data,
                             Py_ssize_t size, object timeout, bint block):
        """Send zm's content on e without copying it (each socket gets a
        reference); closes zm, whatever happens."""
        cdef void *only = _only(e)
        cdef int rc
        try:
            # one socket: zm itself goes (a successful send leaves it empty);
            # several, or a wait: each send takes a reference of its own
            if only != NULL and only == e.xpub:
                if sv_msg_send(self.svc, zm, only, ZMQ_DONTWAIT) >= 0:
                    e.msgs += 1
                    e.nbytes += size
                    if _binders(self.svc, e) == 0:
                        e.dropped += 1  # a listener no binder is attached to
                    return True
            elif only != NULL:
                rc = zmq_msg_send(zm, only, ZMQ_DONTWAIT)
                if rc >= 0:
                    e.msgs += 1
                    e.nbytes += size
                    return True
            return self._send_slow(e, data, size, timeout, block, zm)
        finally:
            zmq_msg_close(zm)   # drops our reference, if it still has one

    cdef object _send_slow(self, ExchangeSlot *e, const char *data, Py_ssize_t size,
                           object timeout, bint block, zmq_msg_t *shared):
        """Every case but the one-socket fast path: several bound queues,
        load balancing, or waiting for room."""
        cdef double deadline = 0.0 if not block else _deadline(timeout)
        cdef int i, n, rc, ready
        cdef bint sent, gone
        if e.npush == 0 and e.xpub == NULL:
            e.dropped += 1          # nothing bound: dropped, as documented
            return True
        if self.sitems_cap < e.npush + self.nitems + 1:
            self._grow_sitems(e.npush + 1)
        if e.style == LOAD_BALANCING and e.npush > 0:
            return self._send_balanced(e, data, size, deadline, shared)
        cdef Py_ssize_t eid = self.idbase + (e - self.ex) + 1
        cdef double check_at = 0.0 if self.following else -1.0    # 0.0: not started
        # Fan-out is all or nothing: wait until every PUSH has room, then send
        # to the listener (which waits for room itself), then to the PUSHes.
        while True:
            n = 0
            for i in range(e.npush):
                _item(&self.sitems[n], e.pushes[i], ZMQ_POLLOUT)
                n += 1
            if n == 0:
                break
            # can all of them take it now?  (ZMQ_EVENTS is read on every
            # PUSH: it clears the signalling fd an asyncio wait watches.)  A
            # PUSH to the queue of an instance of this process that began
            # closing has no room, whatever libzmq says, and its wait is on
            # the deadline and the look for moved peers alone
            ready = 0
            for i in range(n):
                gone = _peer_gone(e, i)
                if _can_send(self.sitems[i].socket) and not gone:
                    ready += 1
                elif gone:
                    self.sitems[i].events = 0
            if ready == n:
                break
            if deadline == 0.0 or (deadline > 0 and _now() >= deadline):
                return self._would_block(block, eid)
            check_at = self._wait_room(eid, n, deadline, check_at)
            e = self._exchange(eid)     # a signal handler or the hook may have run
        if e.xpub != NULL:
            self._listener_waited = 0.0
            sent = self._send_listener(e.xpub, data, size, deadline, shared)
            e = self._exchange(eid)     # a signal handler may have run
            e.blocked_s += self._listener_waited
            if not sent:
                return self._would_block(block, eid)
        for i in range(e.npush):
            rc = _send_one(e.pushes[i], data, size, shared, ZMQ_DONTWAIT)
            if rc < 0:
                _raise_zmq("send")
        e.msgs += 1
        e.nbytes += size
        if e.npush == 0 and _binders(self.svc, e) == 0:
            e.dropped += 1          # only the listener, and no binder on it
        return True

    cdef object _would_block(self, bint block, Py_ssize_t eid):
        if not block:
            return False
        raise Timeout("send timed out: a bound queue stayed full (at its high-water "
                      "mark: a slow or stalled consumer, or one that is unreachable)"
                      + (self._follow_refusals(eid) if self.following else ""))

    cdef double _wait_room(self, Py_ssize_t eid, int n, double deadline,
                           double check_at) except -2.0:
        """One wait of a send for room: the n PUSH items already in sitems,
        plus the listeners' fds (served after it), until one is ready, the
        deadline, or the next look for moved peers (check_at; 0.0: not
        started yet, -1.0: never).  Adds the time waited to the exchange's
        blocked_s; returns the next check_at.  The caller reads its slot
        again: signal handlers and the hook may have run."""
        n = self._add_listeners(n)
        if check_at == 0.0:
            check_at = self._follow_from()
        cdef double waited_from = _now()
        self._wait(self.sitems, n, _earlier(deadline, check_at), 0)
        self._service()
        check_at = self._follow(eid, check_at)
        self._exchange(eid).blocked_s += _now() - waited_from
        return check_at

    cdef int _add_listeners(self, int n) except -1:
        """The listeners' signalling fds as poll items (not the sockets:
        zmq_poll would use them outside the service lock)."""
        cdef int i
        for i in range(self.ninputs, self.nitems):
            _item(&self.sitems[n], NULL, ZMQ_POLLIN)
            self.sitems[n].fd = self.fds[i].fd
            n += 1
        return n

    cdef bint _send_listener(self, void *s, const char *data, Py_ssize_t size,
                             double deadline, zmq_msg_t *shared) except -1:
        """Send on an XPUB: NODROP makes it refuse while any subscriber is full,
        and libzmq reports no POLLOUT for XPUB, so wait in short blocking
        sends (SV_SEND_SLICE_MS each, under the service lock, GIL released),
        serving listeners in between."""
        cdef int rc, err, ms
        cdef long left
        rc = self._send_xpub(s, data, size, shared, ZMQ_DONTWAIT)
        if rc >= 0:
            return True
        err = zmq_errno()
        cdef double waited_from = _now()
        while True:
            if err == EINTR:
                self._signals()
            elif err != EAGAIN:
                _raise_errno("send", err)
            left = _ms_left(deadline)
            if left == 0:
                self._listener_waited = _now() - waited_from
                return False
            ms = SV_SEND_SLICE_MS if (left < 0 or left > SV_SEND_SLICE_MS) else <int>left
            with nogil:
                # the two SNDTIMEO sets are not checked: they fail only on a
                # context being ended (ETERM), and then the send fails too
                sv_lock(self.svc)
                _setopt_int(s, ZMQ_SNDTIMEO, ms)
                rc = _send_one(s, data, size, shared, 0)
                err = zmq_errno() if rc < 0 else 0
                _setopt_int(s, ZMQ_SNDTIMEO, -1)
                sv_touch_locked(self.svc)
                sv_unlock(self.svc)
            if rc >= 0:
                self._listener_waited = _now() - waited_from
                return True
            self._service()

    cdef int _send_xpub(self, void *s, const char *data, Py_ssize_t size,
                        zmq_msg_t *shared, int flags) noexcept:
        """_send_one on a listener, under the service lock."""
        cdef zmq_msg_t m
        cdef int rc, err
        if shared == NULL:
            return sv_send(self.svc, s, data, size, flags, NULL)
        zmq_msg_init(&m)
        zmq_msg_copy(&m, shared)    # fails only on an invalid message (EFAULT: a bug)
        rc = sv_msg_send(self.svc, &m, s, flags)
        if rc < 0:
            err = zmq_errno()
            zmq_msg_close(&m)
            errno = err
        return rc

    cdef object _send_balanced(self, ExchangeSlot *e, const char *data, Py_ssize_t size,
                               double deadline, zmq_msg_t *shared):
        """Load balancing: the next bound queue, round-robin, that has room."""
        cdef int i, k
        cdef Py_ssize_t eid = self.idbase + (e - self.ex) + 1
        cdef double check_at = 0.0 if self.following else -1.0    # 0.0: not started
        while True:
            for k in range(e.npush):
                i = (e.next + k) % e.npush
                if _peer_gone(e, i):
                    _can_send(e.pushes[i])  # (clears its fd, as _send_slow does)
                    continue
                if _send_one(e.pushes[i], data, size, shared, ZMQ_DONTWAIT) >= 0:
                    e.next = (i + 1) % e.npush
                    e.msgs += 1
                    e.nbytes += size
                    return True
                if zmq_errno() != EAGAIN:
                    _raise_zmq("send")
            if deadline == 0.0 or (deadline > 0 and _now() >= deadline):
                return self._would_block(deadline != 0.0, eid)
            for i in range(e.npush):
                _item(&self.sitems[i], e.pushes[i], 0 if _peer_gone(e, i) else ZMQ_POLLOUT)
            check_at = self._wait_room(eid, e.npush, deadline, check_at)
            e = self._exchange(eid)     # a signal handler or the hook may have run

    def send_many(self, object eid, messages, timeout=None):
        """Send every message of an iterable on exchange eid, in order.

        The same as calling send() for each, without a Python call per
        message.  timeout bounds each wait for room; returns the count sent.
        """
        self._check()
        _check_timeout(timeout)
        cdef Py_ssize_t xid = _id(eid, "exchange")
        cdef ExchangeSlot *e = self._exchange(xid)
        cdef void *only
        cdef Py_ssize_t n = 0
        cdef int rc
        for m in messages:
            # the slot and its one socket are read again for every message:
            # the iterator, a signal handler or a wait's follow hook in the
            # last send may have run any code (closed this instance or the
            # queue's owner, re-pointed the PUSH, made exchanges, which
            # moves the table)
            if self.closed:
                self._check()
            e = _exchange_slot(self, xid)
            only = _only(e)
            if only == e.xpub:
                only = NULL             # the listener's sends go through send()
            if only != NULL and PyBytes_CheckExact(m) and PyBytes_GET_SIZE(m) < _ZERO_COPY_MIN:
                rc = zmq_send(only, PyBytes_AS_STRING(m), PyBytes_GET_SIZE(m), ZMQ_DONTWAIT)
                if rc >= 0:
                    e.msgs += 1
                    e.nbytes += <size_t>rc
                    n += 1
                    continue
                if zmq_errno() != EAGAIN:
                    _send_failed(eid)
            _send(self, eid, m, timeout, True)
            n += 1
        return n

    # ---- receive ----------------------------------------------------------

    cdef int _try_receive(self, zmq_msg_t *msg) except -2:
        """One non-blocking pass over the queues, fairly.  Returns the queue
        id of a message now in msg, or 0 when every queue is empty."""
        cdef int k, j, qi, si, rc, err
        cdef QueueSlot *q
        cdef int nq = self.nq
        for k in range(nq):
            qi = self.next_q + k
            if qi >= nq:
                qi -= nq
            q = &self.qs[qi]
            j = 0
            while j < q.nsock:
                si = q.next + j
                if si >= q.nsock:
                    si -= q.nsock
                rc = zmq_msg_recv(msg, q.socks[si], ZMQ_DONTWAIT)
                if rc < 0:
                    err = zmq_errno()
                    if err == EAGAIN:
                        j += 1
                        continue
                    _raise_errno("receive", err)
                if zmq_msg_more(msg):
                    # a sync answer meant for another binder, not data: drop
                    # it and look at the same socket again
                    _drop_rest(q.socks[si])
                    continue
                q.next = si + 1 if si + 1 < q.nsock else 0
                self.next_q = qi + 1 if qi + 1 < nq else 0
                q.received += 1
                return qi + 1
        return 0

    cdef int _receive_msg(self, zmq_msg_t *msg, double deadline) except -2:
        """Wait for a message on any queue; its queue id, or 0 on timeout."""
        # The listeners are not waited on: the service thread (src/service.h)
        # lets binders in and answers their syncs whatever this thread does,
        # so a receive waits on the queue sockets alone, and on one of them
        # blocks in the socket itself.
        cdef int qid = self._try_receive(msg)
        if qid or deadline == 0.0:
            return qid
        if self.ninputs == 0:
            return self._wait_unbound(deadline)
        if self.ninputs == 1:
            return self._wait_one(msg, deadline)
        cdef int rc
        cdef double check_at = self._follow_from()
        while True:
            # every socket was just tried, so its pending commands were
            # processed: its fd turns readable only when something new comes
            rc = self._wait(NULL, FDS_INPUTS, _earlier(deadline, check_at), 0)
            check_at = self._follow(0, check_at)
            qid = self._try_receive(msg)
            if qid:
                return qid
            if rc == 0 and deadline >= 0 and _now() >= deadline:
                return 0

    cdef int _wait_one(self, zmq_msg_t *msg, double deadline) except -2:
        """The only input socket: block in zmq_msg_recv itself, which wakes
        sooner than a poll followed by a receive (one poll() of its mailbox
        and one read, where poll() on its fd and a non-blocking receive make
        two polls and a read).  Listeners are the service thread's."""
        cdef void *s = self.items[0].socket
        cdef int rc, err, ms
        # Without a deadline, the first wait is FOLLOW_FIRST long and reads
        # no clock (a message almost always comes first: two clock reads
        # saved per call); from its first EAGAIN or EINTR on, check_at is
        # an absolute time as in the other waits.
        cdef bint first = deadline < 0 and self.following
        cdef double check_at = -1.0 if first else self._follow_from()
        while True:
            if first:
                ms = <int>(FOLLOW_FIRST_S * 1000)
            else:
                ms = <int>_ms_left(_earlier(deadline, check_at))
            if ms != self.rcvtimeo:
                _setopt(s, ZMQ_RCVTIMEO, ms, "cannot set a receive timeout")
                self.rcvtimeo = ms
            with nogil:
                rc = zmq_msg_recv(msg, s, 0)
            if rc >= 0:
                if zmq_msg_more(msg):
                    _drop_rest(s)       # a sync answer for another binder
                    continue
                self.qs[self.single_qid - 1].received += 1
                return self.single_qid
            err = zmq_errno()
            if first:
                # FOLLOW_FIRST has passed (EAGAIN), or an unknown part of it
                # (EINTR: counted as none, so the look may come late, never
                # early)
                first = False
                check_at = _now() + (0.0 if err == EAGAIN else FOLLOW_FIRST_S)
            if err == EINTR:
                self._signals()
            elif err != EAGAIN:
                _raise_errno("receive", err)
            elif deadline >= 0 and _now() >= deadline:
                return 0
            else:
                check_at = self._follow(0, check_at)
                s = self.items[0].socket    # re-read: the hook ran Python code

    cdef int _wait_unbound(self, double deadline) except -2:
        """No queue has a socket yet: nothing can arrive before another call
        of this thread binds one."""
        if deadline < 0:
            if self.nq == 0:
                raise Error("receive() would wait forever: this instance has no queue")
            raise Error("receive() would wait forever: no queue of this instance "
                        "is bound or global")
        self.serve(max(0.0, deadline - _now()))     # binders may still come in
        return 0

    @cython.binding(False)
    @cython.embedsignature.format("clinic")
    def receive(self, timeout=None, bint block=True, bint copy=True):
        """The next message from any of this instance's queues, as bytes.

        Fair across queues; order is kept per (exchange, queue) pair.  Waits
        up to timeout seconds (None: no limit) and raises pyzmq.Timeout;
        block=False returns None at once when nothing is there.  copy=False
        returns a Frame (a buffer backed by libzmq's message, no copy).
        """
        _check_owned(self)
        _check_timeout(timeout)
        cdef int qid, got
        cdef Frame f
        if self.stash.n:
            return self._from_stash(copy)[1]
        if self.ninputs == 1:
            # fast path: one input socket (listeners are the service
            # thread's); a copy is made from the engine's own reused
            # message object (zmq_msg_recv closes its old content), a Frame
            # receives into its own
            if copy:
                got = _receive_one(self, &self.rmsg, timeout, block)
                if got == 1:
                    return _copy(&self.rmsg)
            else:
                f = Frame.__new__(Frame)
                got = _receive_one(self, &f.msg, timeout, block)
                if got == 1:
                    f.queue_id = self.idbase + ID_QUEUE + self.single_qid
                    return f
            if got == 0:
                return self._nothing(block, timeout)
        if copy:
            m = _receive_copy(self, _deadline(timeout) if block else 0.0, &qid)
            return self._nothing(block, timeout) if m is None else m
        return self._receive_frame(timeout, block)

    cdef object _nothing(self, bint block, object timeout):
        if not block:
            return None
        raise Timeout(f"no message arrived within {timeout} s"
                      + (self._follow_refusals(0) if self.following else ""))

    cdef object _receive_frame(self, object timeout, bint block):
        cdef Frame f = Frame.__new__(Frame)
        cdef double deadline = _deadline(timeout) if block else 0.0
        cdef int qid = self._receive_msg(&f.msg, deadline)
        if qid == 0:
            return self._nothing(block, timeout)
        f.queue_id = self.idbase + ID_QUEUE + qid
        return f

    cdef tuple _from_stash(self, bint copy):
        cdef tuple item = self.stash.pop()
        self._queue(item[0]).received += 1
        if copy:
            return item
        cdef Frame f = Frame.__new__(Frame)
        cdef bytes b = item[1]
        zmq_msg_close(&f.msg)
        if zmq_msg_init_size(&f.msg, len(b)) != 0:
            zmq_msg_init(&f.msg)
            _raise_zmq("cannot make a message for a stashed frame")
        memcpy(zmq_msg_data(&f.msg), <char *>b, len(b))
        f.queue_id = item[0]
        return (item[0], f)

    def receive2(self, timeout=None, bint block=True, bint copy=True):
        """Like receive(), but returns (queue_id, message); None with
        block=False when nothing is there."""
        self._check()
        _check_timeout(timeout)
        cdef int qid
        if self.stash.n:
            return self._from_stash(copy)
        if not copy:
            f = self._receive_frame(timeout, block)
            return None if f is None else ((<Frame>f).queue_id, f)
        m = _receive_copy(self, _deadline(timeout) if block else 0.0, &qid)
        return self._nothing(block, timeout) if m is None else (self.idbase + ID_QUEUE + qid, m)

    def receive_many(self, object max_count, timeout=None):
        """Up to max_count messages: waits (up to timeout) for the first,
        then takes whatever else is already there.  Returns a list."""
        self._check()
        _check_timeout(timeout)
        if isinstance(max_count, bool) or not PyIndex_Check(max_count):
            raise TypeError(f"max_count must be an int (how many messages at most), "
                            f"not {type(max_count).__name__}")
        cdef Py_ssize_t most
        try:
            most = max_count
        except OverflowError:
            if max_count < 0:
                raise ValueError(f"max_count must be >= 1, not {max_count}") from None
            most = PY_SSIZE_T_MAX      # "up to": as many as there are
        if most < 1:
            raise ValueError(f"max_count must be >= 1, not {most}")
        cdef list out = []
        cdef int qid
        while self.stash.n and len(out) < most:
            out.append(self._from_stash(True)[1])
        if not out:
            m = _receive_copy(self, _deadline(timeout), &qid)
            if m is None:
                raise Timeout(f"no message arrived within {timeout} s"
                              + (self._follow_refusals(0) if self.following else ""))
            out.append(m)
        while len(out) < most and self._try_receive(&self.rmsg):
            out.append(_copy(&self.rmsg))
        _release_large(&self.rmsg)
        return out


cdef inline object _send(Engine self, object eid, object msg, object timeout, bint block):
    """Engine.send, as a C function: send_many calls it, whatever a subclass
    made of send (asyncio's is a coroutine).  (A function, not a method:
    methods are called through the vtable and are never inlined.)"""
    _check_owned(self)
    _check_timeout(timeout)
    cdef ExchangeSlot *e = _exchange_slot(self, _id(eid, "exchange"))
    cdef const char *data
    cdef Py_ssize_t size
    cdef int rc, binders
    cdef void *only
    if PyBytes_CheckExact(msg):
        data = PyBytes_AS_STRING(msg)
        size = PyBytes_GET_SIZE(msg)
        if size >= _ZERO_COPY_MIN:
            return self._send_lent(e, msg, data, size, timeout, block)
    elif isinstance(msg, Frame):
        # a received message sent on: a reference to its content, unless
        # libzmq keeps it inside the message (then a copy is cheaper)
        size = zmq_msg_size(&(<Frame>msg).msg)
        if size > _VSM_MAX:
            return _send_frame(self, e, <Frame>msg, timeout, block)
        data = <const char *>zmq_msg_data(&(<Frame>msg).msg)
    else:
        return _send_buffer(self, e, msg, timeout, block)
    # fast path: one socket, room in its pipe
    only = _only(e)
    if only == NULL and e.npush == 0:
        e.dropped += 1
        return True         # nothing bound: dropped, as documented
    if only != NULL:
        if only != e.xpub:
            rc = zmq_send(only, data, size, ZMQ_DONTWAIT)
        else:           # the service thread may use it: under its lock
            rc = sv_send(self.svc, only, data, size, ZMQ_DONTWAIT, &binders)
            if rc >= 0 and binders == 0:
                e.dropped += 1  # a listener no binder is attached to
        if rc >= 0:
            e.msgs += 1
            e.nbytes += size
            return True
        if zmq_errno() != EAGAIN:
            _send_failed(eid)
    return self._send_slow(e, data, size, timeout, block, NULL)


# The cold parts of _send, out of line so that _send stays small enough for
# the compiler to inline it into send().

cdef int _send_failed(object eid) except -1:
    return _raise_zmq(f"send on exchange {eid}")


cdef object _send_frame(Engine self, ExchangeSlot *e, Frame f, object timeout, bint block):
    """Send a received Frame on without copying it: every socket gets a
    reference to the content libzmq holds (small messages, which libzmq
    keeps inside the message, are copied by zmq_msg_copy itself)."""
    cdef zmq_msg_t zm
    zmq_msg_init(&zm)
    if zmq_msg_copy(&zm, &f.msg) != 0:
        zmq_msg_close(&zm)
        _raise_zmq("cannot share the frame's content")
    return self._send_shared(e, &zm, <const char *>zmq_msg_data(&f.msg),
                             zmq_msg_size(&f.msg), timeout, block)


cdef object _send_buffer(Engine self, ExchangeSlot *e, object msg, object timeout, bint block):
    """Send any contiguous buffer but bytes (a str is a TypeError)."""
    cdef Py_buffer view
    _get_buffer(msg, &view)
    try:
        return self._send_slow(e, <const char *>view.buf, view.len, timeout, block, NULL)
    finally:
        PyBuffer_Release(&view)


cdef inline int _receive_one(Engine self, zmq_msg_t *msg, object timeout, bint block) except -2:
    """receive()'s fast path with one input socket, into msg: 1 with a
    message there, 0 when none came (block=False, or the timeout), -1 when
    the caller must take the general path (what came was a sync answer for
    another binder, dropped).  After a call that had to wait it blocks in
    the socket at once: the next call most likely waits too (a request and
    its answer, a slow producer), a message already there comes out of the
    blocking call as fast (the GIL released and taken back aside), and the
    non-blocking try this skips costs an empty poll() of the socket's
    mailbox (and libzmq's getpid() check) on every wait.  A call that did
    not wait (back within RECV_WAITED_S) returns to trying first, which
    keeps the GIL for a stream of ready messages.  (A function, not a
    method: methods are called through the vtable and are never inlined.)"""
    cdef double start
    cdef int rc
    if self._rwaited and block:
        start = _now()
        if self._wait_one(msg, _deadline(timeout)) == 0:
            return 0
        self._rwaited = _now() - start >= RECV_WAITED_S
        return 1
    rc = zmq_msg_recv(msg, self.items[0].socket, ZMQ_DONTWAIT)
    if rc >= 0 and not zmq_msg_more(msg):
        self.qs[self.single_qid - 1].received += 1
        return 1
    if rc >= 0:
        _drop_rest(self.items[0].socket)     # a sync answer, not data
        return -1
    if zmq_errno() != EAGAIN:
        _raise_zmq("receive")
    if not block:
        return 0
    # nothing there: wait in the socket itself, without trying again first
    # (each empty try costs libzmq a syscall)
    self._rwaited = True
    return 1 if self._wait_one(msg, _deadline(timeout)) else 0


cdef inline object _receive_copy(Engine self, double deadline, int *qid):
    """The next message from any of self's queues, copied into bytes (its
    queue id in qid[0]); None when nothing came by the deadline (0.0: do not
    wait).  Received into the engine's reused message, as on the fast path.
    (A function, not a method: methods are called through the vtable and
    are never inlined.)"""
    qid[0] = self._receive_msg(&self.rmsg, deadline)
    if qid[0] == 0:
        return None
    cdef bytes b = _copy(&self.rmsg)
    _release_large(&self.rmsg)
    return b
