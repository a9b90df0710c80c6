# _Core, the base of Engine: the slot tables of one instance's exchanges
# and queues, its poll set, the one EINTR-aware wait, and its lifecycle
# (thread and process checks, closing, what happens when it is collected).
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef long _engine_serial = 0

# Ids are ints, unique in the process across kinds and instances:
#     serial << ID_SERIAL_SHIFT | kind << ID_KIND_SHIFT | slot
# with the engine's serial, kind 0 for an exchange and 1 for a queue, and
# the slot's 1-based index.  An id is this engine's exchange n exactly when
# id - idbase == n for 1 <= n <= nex: one subtraction and one unsigned
# compare on the hot path.  The first instance's first exchange is
# 1 << 21 | 1 = 2097153.
DEF ID_KIND_SHIFT = 20
DEF ID_SERIAL_SHIFT = 21
DEF ID_SLOT_MAX = (1 << ID_KIND_SHIFT) - 1
DEF ID_QUEUE = 1 << ID_KIND_SHIFT


cdef int _grow(void ***arr, int n) except -1:
    cdef void **p = <void **>realloc(arr[0], (n + 1) * sizeof(void *))
    if p == NULL:
        raise MemoryError()
    arr[0] = p
    return 0


# An instance's Liveness (src/_zmq.pxd): made with the instance, marked
# closing when its close() begins, freed when the instance and every PUSH
# of another instance that held it have let go.  All under the GIL.
cdef Liveness *_live_new() except NULL:
    cdef Liveness *l = <Liveness *>malloc(sizeof(Liveness))
    if l == NULL:
        raise MemoryError()
    l.closing = 0
    l.refs = 1
    return l


cdef inline Liveness *_live_hold(Liveness *l) noexcept:
    if l != NULL:
        l.refs += 1
    return l


cdef inline void _live_release(Liveness *l) noexcept:
    if l != NULL:
        l.refs -= 1
        if l.refs == 0:
            free(l)


cdef void _release_peers(ExchangeSlot *e) noexcept:
    """Let go of an exchange's peers (its PUSHes are being closed)."""
    cdef int j
    if e.peers != NULL:
        for j in range(e.npush):
            _live_release(e.peers[j])
        free(e.peers)
    e.peers = NULL
    e.npeers = 0


cdef inline bint _peer_gone(ExchangeSlot *e, int i) noexcept:
    """PUSH i of e reaches a queue of another instance of this process
    that began closing: nothing may be sent on it (until it is re-pointed)."""
    return e.npeers != 0 and e.peers[i] != NULL and e.peers[i].closing != 0


# The checks of every call, as functions: the hot paths call them directly
# (a cdef method, even an inline one, is called through the vtable).
cdef inline int _check_owned(_Core self) except -1:
    """_Core._check: open, and called from the thread that made it (small
    enough for the compiler to inline; the errors are out of line)."""
    if self.closed or PyThread_get_thread_ident() != self.owner:
        return _not_owned(self)
    return 0


cdef int _not_owned(_Core self) except -1:
    if self.closed:
        raise Error("this ZMQ instance is closed")
    raise Error("this ZMQ instance belongs to the thread that created it; "
                "make one instance per thread")


cdef inline ExchangeSlot *_exchange_slot(_Core self, Py_ssize_t eid) except NULL:
    """_Core._exchange: exchange eid's slot, or the ValueError that says
    what eid is."""
    cdef size_t i = <size_t>(eid - self.idbase) - 1
    if i >= <size_t>self.nex:
        self._bad_id(eid, False)
    return &self.ex[i]


cdef class _Core:
    def __cinit__(self, *args, **kwargs):
        global _engine_serial
        _context()
        zmq_msg_init(&self.rmsg)
        self.owner = PyThread_get_thread_ident()
        self.pid = os.getpid()
        self._hwm = 1000
        self._linger_ms = 1000
        self.stash = _Stash()
        self._relays = []
        self._handles = []
        _engine_serial += 1
        self.serial = _engine_serial
        self.idbase = (<Py_ssize_t>_engine_serial) << ID_SERIAL_SHIFT
        self.prefix = f"inproc://pyzmq-wiring/{self.pid}/{_engine_serial}"
        self.live = _live_new()

    def __del__(self):
        # An instance dropped while open: say so, as files and sockets do,
        # and close its sockets without waiting for anything (relay threads
        # are told to stop, not joined).  Not in a forked child: the sockets
        # are its parent's.
        if not self.closed and self.pid == os.getpid():
            warnings.warn(f"unclosed {type(self).__name__} instance; close() it "
                          "or use it in a with statement", ResourceWarning, source=self)
        self._close_all(False)

    def __dealloc__(self):
        self._close_all(False)      # never blocks: see __del__
        zmq_msg_close(&self.rmsg)
        _live_release(self.live)
        self.live = NULL

    # ---- configuration, checks -------------------------------------------

    def _configure(self, hwm, int linger_ms):
        """The instance's default high-water mark (messages) and linger (ms)."""
        self._hwm = check_hwm(hwm)
        if linger_ms < 0:
            raise ValueError(f"linger must be >= 0 ms, not {linger_ms}")
        self._linger_ms = linger_ms

    cdef inline int _check(self) except -1:
        return _check_owned(self)

    def _check_usable(self):
        self._check()

    cdef ExchangeSlot *_exchange(self, Py_ssize_t eid) except NULL:
        return _exchange_slot(self, eid)

    cdef QueueSlot *_queue(self, Py_ssize_t qid) except NULL:
        cdef size_t i = <size_t>(qid - self.idbase - ID_QUEUE) - 1
        if i >= <size_t>self.nq:
            self._bad_id(qid, True)
        return &self.qs[i]

    cdef int _bad_id(self, Py_ssize_t oid, bint queue) except -1:
        """Raise the ValueError for an id that is not one of this instance's
        exchanges (queue: queues): say what it is instead."""
        want, other = ("queue", "exchange") if queue else ("exchange", "queue")
        cdef Py_ssize_t serial = oid >> ID_SERIAL_SHIFT if oid > 0 else 0
        cdef Py_ssize_t slot = oid & ID_SLOT_MAX if oid > 0 else 0
        cdef bint is_queue = (oid >> ID_KIND_SHIFT) & 1 if oid > 0 else 0
        cdef int nother = self.nex if queue else self.nq
        if serial == self.serial and is_queue != queue and 1 <= slot <= nother:
            raise ValueError(f"id {oid} is {'an' if other[0] == 'e' else 'a'} {other} id of "
                             f"this instance, not {'a' if queue else 'an'} {want} id: pass "
                             f"what create_{want}() returned")
        if serial != self.serial and 1 <= serial <= _engine_serial and slot >= 1:
            raise ValueError(f"id {oid} belongs to another ZMQ instance of this process "
                             f"(its {'queue' if is_queue else 'exchange'}), not to this one: "
                             f"ids are per instance; pass what this instance's "
                             f"create_{want}() returned")
        cdef int n = self.nq if queue else self.nex
        raise ValueError(f"unknown {want} id {oid}: not an id create_{want}() of this "
                         f"instance returned (this instance has {n} {want}"
                         f"{'' if n == 1 else 's'})")

    def _is_id(self, object oid, bint queue=False):
        """Whether oid is one of this instance's exchange (queue) ids."""
        cdef Py_ssize_t i
        if type(oid) is not int:
            return False
        try:
            i = oid
        except OverflowError:
            return False
        i -= self.idbase + (ID_QUEUE if queue else 0) + 1
        return 0 <= i < (self.nq if queue else self.nex)

    cdef void *_socket(self, int kind, int linger_ms, int hwm) except NULL:
        cdef void *s = zmq_socket(_context(), kind)
        if s == NULL:
            _raise_no_socket()
        # An idle connection to a host that vanished (no FIN) is dropped by
        # TCP keepalive after about 20 s (10 s idle, 5 probes 2 s apart);
        # connecting sides then reconnect on their own.  A link outage
        # shorter than that loses nothing; a longer one drops the connection
        # and what the kernels held for it.  Shorter (5 s) lost messages in
        # the rig's 8 s outage test.  Not ZMTP heartbeats: libzmq stops
        # reading a connection whose pipe is full, misses the heartbeat
        # replies and drops a healthy connection (libzmq #3937).
        if (_setopt_int(s, ZMQ_LINGER, linger_ms) != 0
                or _setopt_int(s, ZMQ_SNDHWM, hwm) != 0
                or _setopt_int(s, ZMQ_RCVHWM, hwm) != 0
                or _setopt_int(s, ZMQ_TCP_KEEPALIVE, 1) != 0
                or _setopt_int(s, ZMQ_TCP_KEEPALIVE_IDLE, 10) != 0
                or _setopt_int(s, ZMQ_TCP_KEEPALIVE_INTVL, 2) != 0
                or _setopt_int(s, ZMQ_TCP_KEEPALIVE_CNT, 5) != 0):
            err = zmq_errno()
            zmq_close(s)
            _raise_errno("cannot set up a socket", err)
        return s

    cdef int _rebuild_items(self) except -1:
        """Lay out the poll set: every queue socket, then every listener."""
        cdef int n = 0, i, j
        for i in range(self.nq):
            n += self.qs[i].nsock
        cdef int ninputs = n
        for i in range(self.nex):
            if self.ex[i].xpub != NULL:
                n += 1
        cdef zmq_pollitem_t *items = <zmq_pollitem_t *>realloc(
            self.items, (n + 1) * sizeof(zmq_pollitem_t))
        if items == NULL:
            raise MemoryError()
        self.items = items
        n = 0
        for i in range(self.nq):
            for j in range(self.qs[i].nsock):
                _item(&items[n], self.qs[i].socks[j], ZMQ_POLLIN)
                n += 1
        for i in range(self.nex):
            if self.ex[i].xpub != NULL:
                _item(&items[n], self.ex[i].xpub, ZMQ_POLLIN)
                n += 1
        cdef pollfd *fds = <pollfd *>realloc(self.fds, (n + 1) * sizeof(pollfd))
        if fds == NULL:
            raise MemoryError()
        self.fds = fds
        # the listeners' fds are read under the service lock: the service
        # thread may be using those sockets
        if self.svc != NULL:
            sv_lock(self.svc)
        try:
            for i in range(n):
                fds[i].fd = _signal_fd(items[i].socket)
                fds[i].events = POLLIN
                fds[i].revents = 0
        finally:
            if self.svc != NULL:
                sv_unlock(self.svc)
        self.nitems = n
        self.ninputs = ninputs
        self.rcvtimeo = -2          # unknown: set again before blocking
        self.single_qid = 0
        if ninputs == 1:
            for i in range(self.nq):
                if self.qs[i].nsock:
                    self.single_qid = i + 1
        return 0

    cdef int _grow_sitems(self, int n) except -1:
        n = n + self.nitems + 8
        cdef zmq_pollitem_t *p = <zmq_pollitem_t *>realloc(self.sitems, n * sizeof(zmq_pollitem_t))
        if p == NULL:
            raise MemoryError()
        self.sitems = p
        self.sitems_cap = n
        return 0

    def _new_exchange(self, style=DATA_DISTRIBUTION):
        """A new exchange of `style` (pyzmq.STYLE_*), with no socket yet;
        returns its id."""
        self._check()
        check_style(style)
        if self.nex >= ID_SLOT_MAX:
            raise Error(f"this instance has {self.nex} exchanges, the most it can have")
        cdef ExchangeSlot *p = <ExchangeSlot *>realloc(
            self.ex, (self.nex + 1) * sizeof(ExchangeSlot))
        if p == NULL:
            raise MemoryError()
        self.ex = p
        p = &self.ex[self.nex]
        p.xpub = NULL
        p.pushes = NULL
        p.npush = 0
        p.peers = NULL
        p.npeers = 0
        p.style = <Style>(<int>style)
        p.next = 0
        self.made += 1
        p.tag = self.made
        p.msgs = p.nbytes = p.dropped = 0
        p.blocked_s = 0.0
        self.nex += 1
        return self.idbase + self.nex

    def _new_queue(self, hwm=None):
        """A queue, with no socket yet: its PULL is made when something will
        push to it (a local exchange, or its global listener), and a queue fed
        only by remote exchanges has just their SUBs.  hwm: its own mark
        (None: the instance's).  Returns its id."""
        self._check()
        cdef int mark = self._hwm if hwm is None else check_hwm(hwm)
        if self.nq >= ID_SLOT_MAX:
            raise Error(f"this instance has {self.nq} queues, the most it can have")
        cdef QueueSlot *p = <QueueSlot *>realloc(self.qs, (self.nq + 1) * sizeof(QueueSlot))
        if p == NULL:
            raise MemoryError()
        self.qs = p
        p = &self.qs[self.nq]
        p.socks = NULL
        p.nsock = 0
        p.next = 0
        p.pull = NULL
        p.hwm = mark
        p.received = 0
        self.made += 1
        p.tag = self.made
        self.nq += 1
        return self.idbase + ID_QUEUE + self.nq

    def _drop_new(self, Py_ssize_t oid, bint queue):
        """Undo the _new_exchange or _new_queue that returned oid, whose
        create_*() failed (a refused global name): closes its sockets and
        forgets the slot, so the id is unknown again.  Only the newest slot
        of its kind can go (ids are slot indexes)."""
        cdef int j
        cdef ExchangeSlot *e
        cdef QueueSlot *q
        if queue:
            q = self._queue(oid)
            if q != &self.qs[self.nq - 1]:
                raise Error(f"queue id {oid} is not the newest queue")
            for j in range(q.nsock):
                zmq_close(q.socks[j])
            free(q.socks)
            self.nq -= 1
            self.next_q = 0
        else:
            e = self._exchange(oid)
            if e != &self.ex[self.nex - 1]:
                raise Error(f"exchange id {oid} is not the newest exchange")
            if e.xpub != NULL:
                if self.svc != NULL:
                    sv_remove(self.svc, e.xpub)     # with its pending sync answers
                zmq_close(e.xpub)
            for j in range(e.npush):
                if self.svc != NULL:
                    sv_watch_remove(self.svc, e.pushes[j])  # its monitor first
                zmq_close(e.pushes[j])
            free(e.pushes)
            _release_peers(e)
            self.nex -= 1
        self._rebuild_items()

    # ---- waiting ----------------------------------------------------------

    cdef int _signals(self) except -1:
        """After EINTR: run Python's signal handlers (KeyboardInterrupt and
        the like raise here), then check the instance again, since a handler
        may have closed it."""
        PyErr_CheckSignals()
        return self._check()

    cdef int _wait(self, zmq_pollitem_t *items, int n, double deadline,
                   double slice_s) except -1:
        """The one wait of the C core, with the GIL released, until something
        is ready (returns > 0) or the deadline passes (0).  With items,
        zmq_poll on n of them; with items NULL, poll() on this instance's
        libzmq signalling fds, its queue sockets' (n = FDS_INPUTS) or its
        listeners' (FDS_LISTENERS), read again after every interruption.  poll() on
        the fds is cheaper than zmq_poll, which asks every socket for its
        events before and after; it fits sockets that were just tried.  On
        EINTR Python's signal handlers run, so Ctrl-C raises
        KeyboardInterrupt here; any other failure raises pyzmq.Error with
        its errno.  slice_s > 0 caps one poll's length."""
        cdef int rc, err, first, count
        cdef long ms, cap
        while True:
            ms = _ms_left(deadline)
            if slice_s > 0:
                cap = <long>(slice_s * 1000)
                if ms < 0 or ms > cap:
                    ms = cap
            if items != NULL:
                with nogil:
                    rc = zmq_poll(items, n, ms)
                err = zmq_errno() if rc < 0 else 0
            else:
                first = self.ninputs if n == FDS_LISTENERS else 0
                count = self.nitems - first if n == FDS_LISTENERS else self.ninputs
                with nogil:
                    rc = poll(self.fds + first, count, <int>ms)
                    err = errno if rc < 0 else 0
            if rc >= 0:
                return rc
            if err != EINTR:
                _raise_errno("poll", err)
            self._signals()

    # ---- closing ----------------------------------------------------------

    def _withdraw(self):
        """From now on no binder of this process sends to this instance's
        queues: close() calls it before it unregisters its names, and
        closing calls it in any case.  An in-process binder's PUSH reaches
        a queue's PULL through inproc, and libzmq lets it go on sending
        into that pipe after the PULL was closed (zmq_close only hands the
        socket to the reaper thread, and a zmq_send processes the peer's
        termination at most once a millisecond), so those messages would
        vanish; with the flag set its send paths treat the PUSH as full,
        and it waits and follows the name as a TCP binding does."""
        if self.live != NULL:
            self.live.closing = 1

    def _withdrawn(self):
        """Whether _withdraw was called (close() began)."""
        return self.live != NULL and self.live.closing != 0

    def _close(self, bint wait=True):
        """Close every socket (outgoing ones linger to deliver what is
        queued).  With wait, waits (10 s at most) for relay threads to stop;
        without, only tells them to (what __del__ does)."""
        if self.closed:
            return
        self._close_all(wait)

    cdef void _close_all(self, bint wait) noexcept:
        """Close every socket and free the tables.  Relay threads are told to
        stop and, with wait, joined (never from __del__ or __dealloc__).  In
        a forked child the sockets are the parent's: they are forgotten,
        never closed."""
        cdef int i, j
        if self.closed:
            return
        if self.live != NULL:
            self.live.closing = 1       # _withdraw: binders of this process stop here
        self.closed = True
        cdef bint mine = self.pid == os.getpid()
        if self._relays:
            for relay in self._relays:
                if mine:
                    (<_Relay>relay).stop(wait)
            self._relays = []
        if self._handles:
            for h in self._handles:
                (<BindingHandle>h).sock = NULL
            self._handles = []
        if self.svc != NULL:
            # the service thread stops touching the listeners before they
            # are closed, and the PUSHes' monitors stop (their PAIRs are
            # closed); it ends on its own (nothing here waits for it).
            # In a forked child it does not exist: leave its state alone.
            if mine:
                sv_release(self.svc)
            self.svc = NULL
        for i in range(self.nex):
            _release_peers(&self.ex[i])
            if not mine:
                free(self.ex[i].pushes)
                continue
            if self.ex[i].xpub != NULL:
                zmq_close(self.ex[i].xpub)
            for j in range(self.ex[i].npush):
                zmq_close(self.ex[i].pushes[j])
            free(self.ex[i].pushes)
        for i in range(self.nq):
            for j in range(self.qs[i].nsock if mine else 0):
                zmq_close(self.qs[i].socks[j])
            free(self.qs[i].socks)
        if mine:
            # receive()'s reused message may hold the last large message
            # received, and with it a sender's loan: let go of it now
            zmq_msg_close(&self.rmsg)
            zmq_msg_init(&self.rmsg)
        free(self.ex)
        free(self.qs)
        free(self.items)
        free(self.fds)
        self.fds = NULL
        free(self.sitems)
        self.ex = NULL
        self.qs = NULL
        self.items = NULL
        self.sitems = NULL
        self.nex = self.nq = self.nitems = self.ninputs = 0

    def _fds(self, object eid_obj=0, bint listeners=False):
        """The libzmq signalling fds an event loop should watch to wait for a
        receive (every queue socket: the listeners are the service
        thread's, as in the blocking receive) or, with eid, for room to
        send on that exchange (its PUSHes and every listener); with
        listeners, only the listeners' (to serve them).  An fd turns
        readable when its socket has news; a non-blocking call on that socket
        (or serve(0) for listeners) then takes the news in."""
        self._check()
        cdef Py_ssize_t eid = _id(eid_obj, "exchange") if eid_obj else 0
        cdef bint serving = eid != 0 or listeners
        cdef int first = self.ninputs if serving else 0
        cdef int last = self.nitems if serving else self.ninputs
        cdef list out = [self.fds[i].fd for i in range(first, last)]
        cdef ExchangeSlot *e
        cdef int i
        if eid:
            e = self._exchange(eid)
            for i in range(e.npush):
                out.append(_signal_fd(e.pushes[i]))
        return out

    def _stashed(self):
        """(count the fast path sees, messages really kept) of the stash,
        for tests: always equal."""
        return self.stash.n, len(self.stash)

    def _counts(self):
        """(exchanges, queues, sockets per queue) for repr and tests."""
        return (self.nex, self.nq, [self.qs[i].nsock for i in range(self.nq)])
