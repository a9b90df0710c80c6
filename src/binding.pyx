# _Binder, the base of Engine that wires: listeners (listen, unlisten),
# connecting sockets (connect, subscribe and sync), the owner's service of
# its listeners (attach binders, answer syncs), following moved peers
# (the _follow_moved hook, _retarget) and setting up relays.
# (Included by _zmq.pyx: one extension module, one compilation unit.)


cdef str _exchange_what(str name, str endpoint):
    """How a bind's errors name a remote exchange: its name and address."""
    if name is None:
        return f"the exchange at {endpoint}"
    return f"the exchange {name!r} at {endpoint}"


cdef bytes _sync_topic():
    """A binder's unique sync topic."""
    return _SYNC_PREFIX + os.urandom(16)


cdef int _sub_connect(void *s, str endpoint, bytes topic) except -1:
    """Connect a binder's SUB (or a relay's XSUB) and subscribe to
    everything, then to its sync topic (subscriptions on one pipe apply in
    order)."""
    cdef int kind = 0
    cdef size_t n = sizeof(int)
    cdef bytes sub
    # Its sends are subscriptions only, never data: libzmq holds them to
    # the socket's SNDHWM and drops (silently) what is past it, so with a
    # mark of 1 the sync topic's subscription was lost behind the first
    # one and the bind timed out; a relay's drain sends three at once.
    # Set before connecting: a pipe takes the mark it is made with.
    _setopt(s, ZMQ_SNDHWM, 0, "cannot set up a binding socket's subscriptions")
    if zmq_connect(s, endpoint.encode()) != 0:
        _raise_zmq(f"cannot connect to {endpoint}")
    if zmq_getsockopt(s, ZMQ_TYPE, &kind, &n) != 0:
        _raise_zmq("cannot read a binding socket's type")
    if kind == ZMQ_XSUB:
        # an XSUB subscribes by sending: \x01 + topic
        for sub in (b"\x01", b"\x01" + topic):
            if zmq_send(s, <char *>sub, len(sub), ZMQ_DONTWAIT) < 0:
                _raise_zmq(f"cannot subscribe to the exchange at {endpoint}")
    elif (zmq_setsockopt(s, ZMQ_SUBSCRIBE, b"", 0) != 0
            or zmq_setsockopt(s, ZMQ_SUBSCRIBE, <char *>topic, len(topic)) != 0):
        _raise_zmq(f"cannot subscribe to the exchange at {endpoint}")
    return 0


cdef int _sync_timeout(void *mon, Handshake *h, str what, bint curve) except -1:
    """Raise what a bind whose sync answer did not come in time says."""
    if mon != NULL and _handshake_news(mon, h):
        _handshake_failed(h, what)
    if h.dropped:
        raise Timeout(f"{what} did not confirm the "
                      f"binding in time (its listener closed the connection "
                      f"{h.dropped} times during the CURVE handshake: is "
                      "the key in the directory its owner's?)")
    raise Timeout(f"{what} did not confirm the binding in time (is "
                  "its owner's process alive and its address "
                  "reachable from here?"
                  + (" Does it allow this instance's CURVE key?"
                     if curve else "") + ")")


cdef class _PendingBind:
    """A bind started by _subscribe_start or _connect_start and completed
    by _bind_step: for the asyncio class, which waits on the loop.  Its
    user completes or aborts it (_bind_abort, in a finally)."""


cdef class BindingHandle:
    """A binding's connecting socket (a PUSH to a remote queue, or a SUB on
    a remote exchange), as _exchange_connect and _queue_subscribe return it
    and _retarget takes it.  Opaque to Python; dead once its engine closed."""

    def __repr__(self):
        return f"<pyzmq._zmq.BindingHandle of engine {self.engine}" + (
            ">" if self.sock != NULL else ", closed>")


cdef class _Binder(_Core):
    def _curve_setup(self, secret, str domain):
        """Make this instance's listeners CURVE servers with this secret key
        (Z85), under ZAP domain `domain`."""
        public = curve_public(secret)
        self._csec = secret.encode("ascii")
        self._cpub = public.encode("ascii")
        self._cserver = True
        self._zap_domain = domain.encode()
        return public

    cdef BindingHandle _handle(self, void *s):
        """A new handle on s, one of this instance's connecting sockets."""
        cdef BindingHandle h = BindingHandle.__new__(BindingHandle)
        h.sock = s
        h.engine = self.serial
        self._handles.append(h)
        return h

    cdef int _ensure_service(self) except -1:
        """Make the instance's service state (src/service.h) if it has none
        yet: its thread starts with the first listener or watch."""
        cdef int err
        if self.svc == NULL:
            err = sv_new(&self.svc, <char *>_SYNC_PREFIX, len(_SYNC_PREFIX))
            if err == ENOMEM:
                raise MemoryError("cannot set up the instance's service thread")
            if err:
                # its wake-up pipe takes two fds: EMFILE says which limit
                _raise_out_of_files("cannot set up the instance's service thread", err)
        return 0

    cdef int _watch_push(self, void *s, str endpoint, int state) except -1:
        """Have the service thread keep whether PUSH s, connected to
        endpoint, has its consumer connected (what close() needs to know
        without waiting: src/drain.pyx).  Only TCP ones: an inproc peer is in
        this process.  state: what is known now (SV_UP after an awaited
        CURVE handshake, else SV_NEW).  On failure s is not watched and
        the error is raised."""
        cdef void *mon
        cdef int err
        if not endpoint.startswith("tcp://"):
            return 0
        self._ensure_service()
        mon = _monitor(s, f"{self.prefix}/watch{_next_serial()}", SV_WATCH_EVENTS)
        err = sv_watch_add(self.svc, s, mon, _signal_fd(mon), state)
        if err:
            _unmonitor(s, mon)
            _raise_errno("cannot start the instance's service thread", err)
        return 0

    def _curve_public_key(self):
        """The public key registered with global objects ("" without CURVE)."""
        return self._cpub.decode("ascii") if self._cserver else ""

    cdef int _curve_server_opts(self, void *s) except -1:
        cdef int one = 1
        if not self._cserver:
            return 0
        if (zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, <char *>self._zap_domain, len(self._zap_domain)) != 0
                or zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof(int)) != 0
                or zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, <char *>self._csec, 40) != 0):
            _raise_zmq("cannot make a CURVE server socket")
        if zmq_setsockopt(s, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof(int)) != 0:
            # never run a CURVE server that would admit anyone without ZAP
            _raise_zmq("cannot make a CURVE server refuse clients when no ZAP handler "
                       "answers (ZMQ_ZAP_ENFORCE_DOMAIN)")
        return 0

    cdef int _curve_client_opts(self, void *s, object serverkey) except -1:
        """Make s a CURVE client of serverkey (Z85 str), unless it is None/""."""
        if not serverkey:
            return 0
        if self._cpub is None:
            pub, sec = curve_keypair()      # ephemeral, for this instance
            self._cpub = pub.encode("ascii")
            self._csec = sec.encode("ascii")
        cdef bytes sk = _check_z85_key(serverkey, "server key").encode("ascii")
        if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, <char *>sk, 40) != 0
                or zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, <char *>self._cpub, 40) != 0
                or zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, <char *>self._csec, 40) != 0):
            _raise_zmq("cannot make a CURVE client socket")
        return 0

    def _exchange_listen(self, Py_ssize_t eid, str endpoint):
        """Make exchange eid listen for remote binders at a TCP endpoint."""
        self._check()
        cdef ExchangeSlot *e = self._exchange(eid)
        if e.xpub != NULL:
            raise Error(f"exchange {eid} already listens")
        cdef void *s = self._socket(ZMQ_XPUB, self._linger_ms, self._hwm)
        try:
            # a full subscriber makes send wait instead of losing the message
            _setopt(s, ZMQ_XPUB_NODROP, 1, "cannot make the exchange's listener lossless")
            self._curve_server_opts(s)
            endpoint = _bind(s, endpoint)
            # instances of this process bind through inproc instead of TCP
            _bind(s, self._exchange_inproc(eid))
            self._ensure_service()
            # from here on the service thread may use s: under its lock
            err = sv_add(self.svc, s, _signal_fd(s))
            if err:
                _raise_errno("cannot start the listeners' service thread", err)
        except BaseException:
            zmq_close(s)
            raise
        e = self._exchange(eid)
        e.xpub = s
        self._rebuild_items()
        return endpoint

    def _exchange_inproc(self, Py_ssize_t eid):
        return f"{self.prefix}/x{self._exchange(eid).tag}"

    def _exchange_unlisten(self, Py_ssize_t eid):
        """Undo _exchange_listen (its registration failed)."""
        cdef ExchangeSlot *e = self._exchange(eid)
        if e.xpub != NULL:
            sv_remove(self.svc, e.xpub)     # with its pending sync answers
            zmq_close(e.xpub)
            e.xpub = NULL
            self._rebuild_items()

    def _exchange_connect(self, Py_ssize_t eid, str endpoint, serverkey=None, int hwm=-1,
                          timeout=None, _Core owner=None):
        """Give exchange eid a new PUSH connected to a queue's endpoint.

        With serverkey the PUSH is a CURVE client of that key, and this waits
        (up to timeout seconds) for the handshake: a queue whose owner
        refuses this instance's key raises instead of swallowing every
        message.  owner: the other instance of this process whose queue's
        inproc endpoint this is; once it begins closing, sends treat the
        PUSH as full (_Core._withdraw).  On any failure the exchange is
        left as it was."""
        self._check()
        self._exchange(eid)
        cdef bint curve = bool(serverkey)
        cdef double deadline = _deadline(timeout) if curve else -1.0
        cdef void *s = self._socket(ZMQ_PUSH, self._linger_ms, hwm if hwm >= 0 else self._hwm)
        cdef ExchangeSlot *e
        try:
            self._curve_client_opts(s, serverkey)
            if not curve:
                # watched before it connects, so no event is missed (a
                # CURVE one is watched once its awaited handshake is done:
                # a socket has one monitor, and that wait uses it)
                self._watch_push(s, endpoint, SV_NEW)
            self._connect_push(s, endpoint, curve, deadline, "queue")
            # looked up again: Python code (a signal handler) may have run
            # while the handshake was awaited
            e = self._exchange(eid)
            _grow(&e.pushes, e.npush)
            _grow(<void ***>&e.peers, e.npush)
            if curve:
                self._watch_push(s, endpoint, SV_UP)
        except BaseException:
            if self.svc != NULL:
                sv_watch_remove(self.svc, s)        # its monitor first
            _close_now(s)
            raise
        e = self._exchange(eid)
        e.pushes[e.npush] = s
        e.peers[e.npush] = NULL
        if owner is not None and owner is not self:
            e.peers[e.npush] = _live_hold(owner.live)
            e.npeers += 1
        e.npush += 1
        if self.sitems_cap < e.npush + 1:
            self._grow_sitems(e.npush + 1)
        return self._handle(s)

    cdef int _connect_push(self, void *s, str endpoint, bint curve, double deadline,
                           str what) except -1:
        """Connect s (a PUSH) to endpoint.  A plain one returns at once: its
        pipe holds what is sent until TCP is up.  A CURVE client waits until
        the handshake succeeded, since a refused one would hold its messages
        forever; raises pyzmq.Error (EACCES when the owner refused this
        instance's key, EPROTO for a failed handshake) or pyzmq.Timeout."""
        cdef bytes ep = endpoint.encode()
        cdef void *mon = NULL
        if curve:
            mon = _monitor(s, f"{self.prefix}/mon{_next_serial()}", _HANDSHAKE_EVENTS)
        try:
            if zmq_connect(s, ep) != 0:
                _raise_errno(f"cannot connect to {endpoint}", zmq_errno())
            if curve:
                self._await_handshake(mon, f"the {what} at {endpoint}", deadline)
        finally:
            if mon != NULL:
                _unmonitor(s, mon)
        return 0

    cdef int _await_handshake(self, void *mon, str what, double deadline) except -1:
        """Wait for the monitored CURVE client's first handshake to succeed,
        serving this instance's listeners meanwhile; Ctrl-C interrupts."""
        cdef Handshake h
        cdef zmq_pollitem_t item
        memset(&h, 0, sizeof(h))
        while True:
            if _handshake_news(mon, &h):
                _handshake_failed(&h, what)
                return 0            # succeeded
            if deadline >= 0 and _now() >= deadline:
                raise Timeout(f"{what} did not complete the CURVE handshake in time"
                              + (f" (its listener closed the connection {h.dropped} "
                                 "times during the handshake: is the key in the "
                                 "directory its owner's?)" if h.dropped else
                                 " (is its owner running and reachable?)"))
            self._service()
            _item(&item, mon, ZMQ_POLLIN)
            self._wait(&item, 1, deadline, 0.05)

    cdef void *_queue_pull(self, Py_ssize_t qid) except NULL:
        """Queue qid's PULL, bound to its inproc endpoint; made on first use."""
        cdef QueueSlot *q = self._queue(qid)
        if q.pull != NULL:
            return q.pull
        cdef void *s = self._socket(ZMQ_PULL, 0, q.hwm)
        try:
            _bind(s, self._queue_endpoint(qid))
            _grow(&q.socks, q.nsock)
        except BaseException:
            zmq_close(s)
            raise
        q.socks[q.nsock] = s
        q.nsock += 1
        q.pull = s
        self._rebuild_items()
        return s

    def _queue_endpoint(self, Py_ssize_t qid):
        return f"{self.prefix}/q{self._queue(qid).tag}"

    def _queue_connectable(self, Py_ssize_t qid):
        """The inproc endpoint a local exchange connects to for queue qid."""
        self._check()
        self._queue_pull(qid)
        return self._queue_endpoint(qid)

    def _queue_listen(self, Py_ssize_t qid, str endpoint):
        """Make queue qid's PULL also listen at a TCP endpoint."""
        self._check()
        cdef void *s = self._queue_pull(qid)
        self._curve_server_opts(s)
        return _bind(s, endpoint)

    def _queue_unlisten(self, Py_ssize_t qid, str endpoint):
        """Undo _queue_listen (its registration failed)."""
        cdef QueueSlot *q = self._queue(qid)
        cdef bytes ep = endpoint.encode()
        if q.pull != NULL:
            # an undo while another error is raised: its own failure must
            # not replace that error.  It fails only for an endpoint not
            # bound (ENOENT), and `endpoint` is the one _queue_listen
            # returned (libzmq's ZMQ_LAST_ENDPOINT, ports resolved); and
            # the caller then drops the queue (_drop_new closes its PULL),
            # but for the slot asyncio cannot drop (a newer one came)
            zmq_unbind(q.pull, ep)

    def _queue_subscribe(self, Py_ssize_t qid, str endpoint, timeout, _Binder owner=None,
                         serverkey=None, int hwm=-1, str name=None):
        """Bind a remote global exchange, listening at endpoint, to queue qid.

        Connects a SUB, subscribes to everything and then to a unique sync
        topic, and returns once the exchange's owner has answered the sync:
        from then on every message the exchange sends reaches this queue.
        """
        self._check()
        cdef QueueSlot *q0 = self._queue(qid)
        cdef double deadline = _deadline(timeout)
        cdef void *s = self._socket(ZMQ_SUB, 0, hwm if hwm >= 0 else q0.hwm)
        try:
            self._curve_client_opts(s, serverkey)
            self._subscribe_and_sync(s, endpoint, qid, deadline, owner, bool(serverkey),
                                     _exchange_what(name, endpoint), _sync_topic())
        except BaseException:
            zmq_close(s)
            raise
        try:
            return self._attach_sub(qid, s)
        except BaseException:
            zmq_close(s)
            raise

    cdef int _subscribe_and_sync(self, void *s, str endpoint, Py_ssize_t qid,
                                 double deadline, _Binder owner, bint curve,
                                 str what, bytes topic) except -1:
        cdef void *mon = NULL
        cdef Py_ssize_t kept = self.stash.n
        if curve:
            # failures only: a handshake that succeeded is not the end of
            # the wait, the owner's sync answer is
            mon = _monitor(s, f"{self.prefix}/mon{_next_serial()}",
                           _HANDSHAKE_EVENTS & ~ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        try:
            return self._subscribe_and_sync_mon(s, endpoint, qid, deadline, owner, curve, mon,
                                                what, topic)
        except BaseException:
            # the bind failed: what this SUB delivered meanwhile (everything
            # stashed since we started) belongs to no binding
            self.stash.truncate(kept)
            raise
        finally:
            if mon != NULL:
                _unmonitor(s, mon)

    cdef int _subscribe_and_sync_mon(self, void *s, str endpoint, Py_ssize_t qid,
                                     double deadline, _Binder owner, bint curve,
                                     void *mon, str what, bytes topic) except -1:
        cdef zmq_pollitem_t items[2]
        cdef Handshake h
        memset(&h, 0, sizeof(h))
        _sub_connect(s, endpoint, topic)
        while True:
            # answer our own listeners' syncs too, and those of the
            # exchange's owner when it is another instance of this thread
            # (its service thread answers anyway; this is sooner)
            self._service()
            if owner is not None and not owner.closed and owner.owner == self.owner:
                owner._service()
            _item(&items[0], s, ZMQ_POLLIN)
            _item(&items[1], mon, ZMQ_POLLIN)
            if self._wait(items, 2 if mon != NULL else 1, deadline, 0.05) == 0:
                if deadline >= 0 and _now() >= deadline:
                    _sync_timeout(mon, &h, what, curve)
                continue
            if mon != NULL and items[1].revents and _handshake_news(mon, &h):
                _handshake_failed(&h, what)
            if self._sync_read(s, topic, qid, endpoint):
                return 0

    cdef int _sync_read(self, void *s, bytes topic, Py_ssize_t qid, str endpoint) except -1:
        """Read what a syncing SUB has (never waits): data is stashed for
        queue qid, other binders' sync answers dropped.  Returns 1 once our
        own sync answer came (its topic stays subscribed), else 0."""
        cdef zmq_msg_t msg
        cdef int rc, more
        cdef bytes first
        while True:
            zmq_msg_init(&msg)
            rc = zmq_msg_recv(&msg, s, ZMQ_DONTWAIT)
            if rc < 0:
                zmq_msg_close(&msg)
                if zmq_errno() == EAGAIN:
                    return 0
                _raise_zmq(f"receiving from {endpoint}")
            more = zmq_msg_more(&msg)
            if not more:
                # data published after our subscription took effect
                self.stash.push(qid, _copy(&msg))
                zmq_msg_close(&msg)
                continue
            first = _copy(&msg)
            zmq_msg_close(&msg)
            _drop_rest(s)
            if first == topic:
                # the sync topic stays subscribed: it is how the owner counts
                # its binders (it sees the topic go when this socket does)
                return 1

    cdef BindingHandle _attach_sub(self, Py_ssize_t qid, void *s):
        """A synced SUB joins queue qid."""
        cdef QueueSlot *q = self._queue(qid)
        _grow(&q.socks, q.nsock)
        q.socks[q.nsock] = s
        q.nsock += 1
        self._rebuild_items()
        return self._handle(s)

    cdef BindingHandle _attach_push(self, Py_ssize_t eid, void *s, str endpoint):
        """A PUSH whose CURVE handshake succeeded joins exchange eid."""
        cdef ExchangeSlot *e = self._exchange(eid)
        _grow(&e.pushes, e.npush)
        _grow(<void ***>&e.peers, e.npush)
        self._watch_push(s, endpoint, SV_UP)
        e = self._exchange(eid)
        e.pushes[e.npush] = s
        e.peers[e.npush] = NULL     # over CURVE: TCP, never inproc
        e.npush += 1
        if self.sitems_cap < e.npush + 1:
            self._grow_sitems(e.npush + 1)
        return self._handle(s)

    # ---- the same binds in steps, for an event loop ----------------------

    def _subscribe_start(self, Py_ssize_t qid, str endpoint, timeout, serverkey=None,
                         int hwm=-1, str name=None):
        """_queue_subscribe without waiting: connects and subscribes, and
        returns a _PendingBind for _bind_step (and _bind_fds to wait on)."""
        self._check()
        cdef QueueSlot *q = self._queue(qid)
        cdef _PendingBind p = _PendingBind.__new__(_PendingBind)
        p.engine = self.serial
        p.id = qid
        p.deadline = _deadline(timeout)
        p.what = _exchange_what(name, endpoint)
        p.endpoint = endpoint
        p.curve = bool(serverkey)
        p.kept = self.stash.n
        p.topic = _sync_topic()
        p.s = self._socket(ZMQ_SUB, 0, hwm if hwm >= 0 else q.hwm)
        try:
            self._curve_client_opts(p.s, serverkey)
            if p.curve:
                p.mon = _monitor(p.s, f"{self.prefix}/mon{_next_serial()}",
                                 _HANDSHAKE_EVENTS & ~ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            _sub_connect(p.s, endpoint, p.topic)
        except BaseException:
            self._bind_abort(p)
            raise
        return p

    def _connect_start(self, Py_ssize_t eid, str endpoint, serverkey, int hwm, timeout):
        """_exchange_connect of a CURVE PUSH without waiting for its
        handshake: a _PendingBind for _bind_step."""
        self._check()
        self._exchange(eid)
        cdef _PendingBind p = _PendingBind.__new__(_PendingBind)
        p.engine = self.serial
        p.id = eid
        p.deadline = _deadline(timeout)
        p.what = f"the queue at {endpoint}"
        p.endpoint = endpoint
        p.curve = True
        p.s = self._socket(ZMQ_PUSH, self._linger_ms, hwm if hwm >= 0 else self._hwm)
        try:
            self._curve_client_opts(p.s, serverkey)
            p.mon = _monitor(p.s, f"{self.prefix}/mon{_next_serial()}", _HANDSHAKE_EVENTS)
            if zmq_connect(p.s, endpoint.encode()) != 0:
                _raise_errno(f"cannot connect to {endpoint}", zmq_errno())
        except BaseException:
            self._bind_abort(p)
            raise
        return p

    def _bind_fds(self, _PendingBind p not None):
        """The fds an event loop waits on before the next _bind_step."""
        out = [_signal_fd(p.mon)] if p.mon != NULL else []
        if p.pmon != NULL:
            out.append(_signal_fd(p.pmon))
        if p.topic is not None and p.s != NULL:
            out.append(_signal_fd(p.s))
        return out

    def _bind_step(self, _PendingBind p not None):
        """One look at a pending bind, never waiting: its BindingHandle once
        it is complete, None while it is not.  A failure or the deadline
        raises (as the blocking forms do) and undoes the bind."""
        self._check()
        if p.engine != self.serial or p.s == NULL:
            raise Error("not a pending bind of this instance", EINVAL)
        cdef void *s = p.s
        try:
            if p.relay is not None:
                return self._relay_step(p)
            if p.topic is None:             # a CURVE PUSH: its handshake
                if _handshake_news(p.mon, &p.h):
                    _handshake_failed(&p.h, p.what)
                    _unmonitor(s, p.mon)
                    p.mon = NULL
                    p.s = NULL
                    try:
                        return self._attach_push(p.id, s, p.endpoint)
                    except BaseException:
                        _close_now(s)
                        raise
                if p.deadline >= 0 and _now() >= p.deadline:
                    raise Timeout(f"{p.what} did not complete the CURVE handshake in time"
                                  + (f" (its listener closed the connection {p.h.dropped} "
                                     "times during the handshake: is the key in the "
                                     "directory its owner's?)" if p.h.dropped else
                                     " (is its owner running and reachable?)"))
                return None
            if p.mon != NULL and _handshake_news(p.mon, &p.h):
                _handshake_failed(&p.h, p.what)
            if self._sync_read(s, p.topic, p.id, p.endpoint):
                if p.mon != NULL:
                    _unmonitor(s, p.mon)
                    p.mon = NULL
                p.s = NULL
                try:
                    return self._attach_sub(p.id, s)
                except BaseException:
                    zmq_close(s)
                    raise
            if p.deadline >= 0 and _now() >= p.deadline:
                _sync_timeout(p.mon, &p.h, p.what, p.curve)
            return None
        except BaseException:
            self._bind_abort(p)
            raise

    def _bind_abort(self, _PendingBind p not None):
        """Undo a pending bind (failed, timed out or cancelled): its socket
        is closed, and what its SUB delivered meanwhile dropped."""
        if p.engine != self.serial:
            return
        cdef _Relay relay
        if p.relay is not None:
            relay = <_Relay>p.relay
            if p.pmon != NULL:
                _unmonitor(relay.push, p.pmon)
                p.pmon = NULL
            if p.mon != NULL:
                _unmonitor(relay.sub, p.mon)
                p.mon = NULL
            relay.close_sockets()
            p.relay = None
            p.s = NULL
            if not self.closed:
                self.stash.truncate(p.kept)
            return
        if p.mon != NULL:
            if p.s != NULL:
                _unmonitor(p.s, p.mon)
            p.mon = NULL
        if p.s != NULL:
            _close_now(p.s)
            p.s = NULL
            if p.topic is not None and not self.closed:
                self.stash.truncate(p.kept)

    # ---- the owner's duty: let binders in, answer their syncs -------------

    cdef int _service(self) except -1:
        """Read every listener's subscriptions; answer sync requests (the
        service thread's own pass, src/service.h, under its lock)."""
        cdef int err = 0
        if self.svc != NULL:
            # the GIL stays held: the service thread never takes it, and
            # holds the lock only for non-blocking calls
            sv_lock(self.svc)
            err = sv_serve_locked(self.svc)
            sv_unlock(self.svc)
            if err:
                _raise_errno("cannot answer a binder's sync", err)
        if zw_outstanding:
            zw_collect()        # bytes lent to libzmq that it has finished sending
        return 0

    cdef double _follow_from(self) noexcept:
        """When a wait starting now should first look for moved peers (-1.0:
        never, the instance has no remote binding)."""
        return _now() + FOLLOW_FIRST_S if self.following else -1.0

    cdef double _follow(self, Py_ssize_t eid, double check_at) except -2.0:
        """If check_at has come, call the _follow_moved hook for exchange eid
        (0: for this instance's queues); returns the next check time.  The
        hook may run any Python code, so the instance is checked again
        afterwards (closed: pyzmq.Error)."""
        if check_at <= 0 or _now() < check_at:
            return check_at
        self._follow_moved(eid)
        self._check()
        return _now() + FOLLOW_EVERY_S

    def _follow_moved(self, eid):
        """The hook a send on exchange eid (or, eid 0, a receive) calls when
        it has waited FOLLOW_FIRST seconds with `following` set, and every
        FOLLOW_EVERY seconds after: re-point the bindings whose peer moved
        (with _retarget).  It must not block.  Here it does nothing: an
        Engine alone knows no names; pyzmq.wiring.ZMQ overrides it."""
        return None

    def _follow_refusals(self, eid):
        """Why bindings of exchange eid (0: of this instance's queues) did not
        follow their name, for a Timeout's message ("" if none); the wiring
        layer overrides it.  Called only when a Timeout is raised."""
        return ""

    def _retarget(self, BindingHandle handle not None, old_endpoint, str new_endpoint,
                  serverkey=None, _Core owner=None):
        """Re-point a binding's connecting socket (the BindingHandle from
        _exchange_connect or _queue_subscribe) from the old endpoint to the
        new one, as a CURVE client of serverkey or a plain one: drop the old
        connection (and what was queued for it, which could not be delivered
        any more), then connect.  owner: as for _exchange_connect, the
        instance of this process whose inproc endpoint the new one is."""
        self._check()
        if handle.engine != self.serial or handle.sock == NULL:
            raise Error("not a binding socket of this instance", EINVAL)
        cdef void *s = handle.sock
        cdef bytes new_ep = new_endpoint.encode()
        if old_endpoint is not None:    # None: a failed re-point left it unconnected
            if (zmq_disconnect(s, (<str>old_endpoint).encode()) != 0
                    and zmq_errno() != ENOENT):     # ENOENT: never connected, fine
                _raise_zmq(f"cannot disconnect from {old_endpoint}")
        if serverkey:
            self._curve_client_opts(s, serverkey)
        else:                           # back to the NULL mechanism
            _setopt(s, ZMQ_CURVE_SERVER, 0, "cannot turn CURVE off on a socket")
        cdef int kind = 0
        cdef size_t n = sizeof(int)
        if zmq_getsockopt(s, ZMQ_TYPE, &kind, &n) != 0:
            _raise_zmq("cannot read a binding socket's type")
        cdef bytes old_ep = (<str>old_endpoint).encode() if old_endpoint is not None else None
        # the watch ignores the old endpoint's events from now on: libzmq
        # keeps its session (and its connecter retrying) for the linger
        if kind == ZMQ_PUSH and (self.svc == NULL or not sv_watch_reset(
                self.svc, s, <const char *>old_ep if old_ep is not None else NULL, new_ep)):
            # a PUSH not watched yet (it was inproc): from now on, if TCP
            self._watch_push(s, new_endpoint, SV_NEW)
        if zmq_connect(s, new_ep) != 0:
            _raise_zmq(f"cannot connect to {new_endpoint}")
        if kind == ZMQ_PUSH:
            self._set_peer(s, owner)

    cdef int _set_peer(self, void *s, _Core owner) except -1:
        """The PUSH s now reaches a queue of owner (another instance of this
        process, through inproc), or of nobody here (None): the Liveness its
        sends look at.  A search, on the cold path of a re-point."""
        cdef int i, j
        cdef ExchangeSlot *e
        cdef Liveness *live = NULL
        if owner is not None and owner is not self:
            live = owner.live
        for i in range(self.nex):
            e = &self.ex[i]
            for j in range(e.npush):
                if e.pushes[j] == s:
                    if e.peers[j] != NULL:
                        e.npeers -= 1
                    _live_release(e.peers[j])
                    e.peers[j] = _live_hold(live)
                    if live != NULL:
                        e.npeers += 1
                    return 0
        return 0

    # ---- relays: binding two remote global objects --------------------------

    def _relay(self, str exchange_endpoint, str queue_endpoint, timeout, _Binder owner=None,
               exchange_key=None, queue_key=None, int hwm=-1, str name=None, str label=None):
        """Bind a remote exchange to a remote queue through this process.

        An XSUB on the exchange's listener (synced as in _queue_subscribe) and
        a PUSH to the queue, joined by pzr_run (src/relay.h) in a thread of
        its own until this instance closes (close() drains it first).  label:
        how close() names the relay ("'E' -> 'Q'")."""
        self._check()
        cdef double deadline = _deadline(timeout)
        cdef bytes topic = _sync_topic()
        cdef _Relay relay = self._relay_sockets(exchange_key, queue_key, hwm)
        try:
            # the queue's side first: a refused PUSH would pass on nothing
            self._connect_push(relay.push, queue_endpoint, bool(queue_key), deadline, "queue")
            self._subscribe_and_sync(relay.sub, exchange_endpoint, 0, deadline, owner,
                                     bool(exchange_key), _exchange_what(name, exchange_endpoint),
                                     topic)
            relay.set_topic(topic)
        except BaseException:
            relay.close_sockets()
            raise
        self._relay_go(relay, exchange_endpoint, queue_endpoint, label)

    cdef _Relay _relay_sockets(self, exchange_key, queue_key, int hwm):
        """A relay's four sockets, not connected yet."""
        cdef _Relay relay = _Relay()
        # a serial, never reused: a refused relay's closed control socket may
        # still hold its inproc endpoint for a moment (libzmq reaps it later)
        relay.n = _next_serial()
        relay.pid = self.pid
        try:
            if hwm < 0:
                hwm = self._hwm
            # an XSUB: a SUB would drop what is in flight when it
            # unsubscribes at close (src/relay.h)
            relay.sub = self._socket(ZMQ_XSUB, 0, hwm)
            relay.push = self._socket(ZMQ_PUSH, self._linger_ms, hwm)
            relay.ctl = self._socket(ZMQ_PAIR, 0, 0)
            relay.ctl_peer = self._socket(ZMQ_PAIR, 1000, 0)   # lingers: see _Relay.stop
            ep = f"{self.prefix}/relay{relay.n}".encode()
            if zmq_bind(relay.ctl, ep) != 0 or zmq_connect(relay.ctl_peer, ep) != 0:
                _raise_zmq("cannot set up the relay's control pair")
            self._curve_client_opts(relay.push, queue_key)
            self._curve_client_opts(relay.sub, exchange_key)
            # plain sides are watched before they connect; CURVE ones once
            # their handshake was awaited (_relay_go)
            if not queue_key:
                relay.watch(True, self.prefix, SV_NEW)
            if not exchange_key:
                relay.watch(False, self.prefix, SV_NEW)
        except BaseException:
            relay.close_sockets()
            raise
        return relay

    cdef int _relay_go(self, _Relay relay, str exchange_endpoint, str queue_endpoint,
                       str label) except -1:
        """A connected, synced relay: pass on what its SUB delivered while
        syncing, and start its thread.  On failure its sockets are closed."""
        try:
            if relay.r.pw.mon == NULL:
                relay.watch(True, self.prefix, SV_UP)
            if relay.r.sw.mon == NULL:
                relay.watch(False, self.prefix, SV_UP)
        except BaseException:
            self.stash.take(0)
            relay.close_sockets()
            raise
        relay.label = label if label is not None else f"{exchange_endpoint} -> {queue_endpoint}"
        relay.qendpoint = queue_endpoint
        # data that arrived while syncing was stashed under queue id 0: it
        # is the relay's, never receive()'s.  Its thread passes it on before
        # anything newer, waiting for room: there may be more of it than
        # the PUSH's mark lets in at once
        relay.stashed = self.stash.take(0)
        thread = threading.Thread(target=relay.run, daemon=True,
                                  name=f"pyzmq-wiring relay {exchange_endpoint} -> {queue_endpoint}")
        try:
            relay.load_stash()
            thread.start()
        except BaseException as exc:
            # the sockets are still ours (run() takes them): closed here,
            # or they would stay connected to both owners, nobody's, and
            # hold the context at exit
            relay.close_sockets()
            if isinstance(exc, RuntimeError):
                raise Error(f"cannot start the relay thread of {relay.label} ({exc}): "
                            "the process may be at its thread limit (ulimit -u, the "
                            "cgroup's pids.max) or out of address space for a thread's "
                            "stack (threading.stack_size)", EAGAIN) from exc
            raise
        relay.thread = thread
        self._relays.append(relay)
        return 0

    def _relay_start(self, str exchange_endpoint, str queue_endpoint, timeout,
                     exchange_key=None, queue_key=None, int hwm=-1, str name=None,
                     str label=None):
        """_relay without waiting: a _PendingBind for _bind_step, which
        completes it (returns True) once the queue's CURVE handshake (if
        any) and the exchange's sync answer both came."""
        self._check()
        cdef _PendingBind p = _PendingBind.__new__(_PendingBind)
        p.engine = self.serial
        p.id = 0                        # the stash's queue id of relays
        p.deadline = _deadline(timeout)
        p.what = _exchange_what(name, exchange_endpoint)
        p.qwhat = f"the queue at {queue_endpoint}"
        p.endpoint = exchange_endpoint
        p.qendpoint = queue_endpoint
        p.label = label
        p.curve = bool(exchange_key)
        p.kept = self.stash.n
        p.topic = _sync_topic()
        cdef _Relay relay = self._relay_sockets(exchange_key, queue_key, hwm)
        p.relay = relay
        p.s = relay.sub
        try:
            if queue_key:
                p.pmon = _monitor(relay.push, f"{self.prefix}/mon{_next_serial()}",
                                  _HANDSHAKE_EVENTS)
            if zmq_connect(relay.push, queue_endpoint.encode()) != 0:
                _raise_errno(f"cannot connect to {queue_endpoint}", zmq_errno())
            if p.curve:
                p.mon = _monitor(relay.sub, f"{self.prefix}/mon{_next_serial()}",
                                 _HANDSHAKE_EVENTS & ~ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            _sub_connect(relay.sub, exchange_endpoint, p.topic)
        except BaseException:
            self._bind_abort(p)
            raise
        return p

    cdef object _relay_step(self, _PendingBind p):
        cdef _Relay relay = <_Relay>p.relay
        if p.pmon != NULL and _handshake_news(p.pmon, &p.ph):
            _handshake_failed(&p.ph, p.qwhat)
            _unmonitor(relay.push, p.pmon)
            p.pmon = NULL
        if p.mon != NULL and _handshake_news(p.mon, &p.h):
            _handshake_failed(&p.h, p.what)
        if not p.synced and self._sync_read(relay.sub, p.topic, 0, p.endpoint):
            p.synced = True
            if p.mon != NULL:
                _unmonitor(relay.sub, p.mon)
                p.mon = NULL
        if p.synced and p.pmon == NULL:
            relay.set_topic(p.topic)
            p.relay = None
            p.s = NULL
            self._relay_go(relay, p.endpoint, p.qendpoint, p.label)
            return True
        if p.deadline >= 0 and _now() >= p.deadline:
            if p.pmon != NULL:
                raise Timeout(f"{p.qwhat} did not complete the CURVE handshake in time"
                              " (is its owner running and reachable?)")
            _sync_timeout(p.mon, &p.h, p.what, p.curve)
        return None
