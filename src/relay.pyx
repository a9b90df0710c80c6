# _Relay: a thread of the binder forwarding one remote global exchange to
# one remote global queue (bind() of two objects of other owners).  The
# thread itself is plain C (pzr_run in src/relay.h, which says how it
# drains at close); this is its owner's side.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

from libc.stdlib cimport calloc
from libc.string cimport strlen


cdef class _Relay:
    """A proxy thread forwarding one remote exchange to one remote queue.

    Once its thread runs, its sockets (sub, push, ctl and the monitors'
    PAIRs, all in r) are the thread's: it closes them when it ends.  The
    owner keeps only ctl_peer, to send DRAIN, STOP or DROP, and reads the
    ints the thread publishes in r (atomically)."""

    def __cinit__(self):
        self.r = <pzr *>calloc(1, sizeof(pzr))
        if self.r == NULL:
            raise MemoryError()

    def __dealloc__(self):
        # only once the thread is done with it: the thread's run() holds
        # a reference until it returns
        free(self.r)

    cdef int watch(self, bint queue_side, str prefix, int state) except -1:
        """Watch the PUSH's (queue_side) or the XSUB's connection, as the
        service thread watches an exchange's PUSHes (src/service.h), but
        read by the relay's own thread.  Before the socket connects (state
        SV_NEW), or after its awaited CURVE handshake (SV_UP: a socket has
        one monitor, and that wait used it)."""
        cdef sv_watch *w = &self.r.pw if queue_side else &self.r.sw
        cdef void *s = self.push if queue_side else self.sub
        w.sock = s
        w.mon = _monitor(s, f"{prefix}/watch{_next_serial()}", SV_WATCH_EVENTS)
        w.state = state
        w.ups = state == SV_UP
        if queue_side:
            self.r.pstate = state
            self.r.pups = w.ups
        return 0

    cdef int set_topic(self, bytes topic) except -1:
        """The bind's sync topic (unsubscribed at the drain) and a new one
        for the drain's end."""
        cdef bytes end = _sync_topic()
        if len(topic) > 64 or len(end) > 64:
            raise ValueError("sync topic too long")
        memcpy(self.r.sync_topic, <char *>topic, len(topic))
        self.r.sync_len = len(topic)
        memcpy(self.r.end_topic, <char *>end, len(end))
        self.r.end_len = len(end)
        return 0

    cdef int load_stash(self) except -1:
        """What its SUB delivered while syncing (self.stashed), made into
        libzmq messages for the thread to pass on first.  By the owner,
        before the thread starts, so that running out of memory raises
        MemoryError from bind() instead of dropping them unseen."""
        cdef list stashed = self.stashed
        cdef bytes m
        cdef pzr *r = self.r
        self.stashed = None
        if not stashed:
            return 0
        r.stash = <zmq_msg_t *>calloc(len(stashed), sizeof(zmq_msg_t))
        if r.stash == NULL:
            raise MemoryError(f"cannot keep the {len(stashed)} messages a relay "
                              "received while it bound")
        for m in stashed:
            if zmq_msg_init_size(&r.stash[r.nstash], len(m)) != 0:
                self.free_stash()
                raise MemoryError(f"cannot keep the {len(stashed)} messages a relay "
                                  "received while it bound")
            memcpy(zmq_msg_data(&r.stash[r.nstash]), <char *>m, len(m))
            r.nstash += 1
        return 0

    cdef void free_stash(self) noexcept:
        """Drop a loaded stash whose thread never started."""
        cdef int i
        for i in range(self.r.nstash):
            zmq_msg_close(&self.r.stash[i])
        free(self.r.stash)
        self.r.stash = NULL
        self.r.nstash = 0

    def run(self):
        """The thread: pzr_run with the sockets (and the stash, load_stash)."""
        cdef pzr *r = self.r
        r.sub = self.sub
        r.push = self.push
        r.ctl = self.ctl
        self.sub = self.push = self.ctl = NULL
        with nogil:
            pzr_run(r)

    cdef bint command(self, const char *cmd) noexcept:
        """Send the thread a command (never waits): whether it went (not
        once the thread has ended and closed its end)."""
        if self.ctl_peer == NULL or self.thread is None:
            return False
        return zmq_send(self.ctl_peer, cmd, strlen(cmd), ZMQ_DONTWAIT) >= 0

    cdef void stop(self, bint wait) noexcept:
        """Tell the thread to stop (it then closes its sockets); with wait,
        also wait for it (10 s at most).  Never waits without: this is what
        an instance collected while open does."""
        if self.thread is None:         # never started: the sockets are ours
            self.close_sockets()
            return
        if self.ctl_peer != NULL:
            # ctl_peer lingers, so the STOP reaches the thread after the close;
            # EAGAIN means the thread has already ended (ctl is closed)
            zmq_send(self.ctl_peer, b"STOP", 4, ZMQ_DONTWAIT)
            zmq_close(self.ctl_peer)
            self.ctl_peer = NULL
        if wait:
            try:
                self.thread.join(10)
            except BaseException:       # Ctrl-C while waiting: it stops anyway
                pass

    cdef void close_sockets(self) noexcept:
        """Close the sockets of a relay whose thread never started (its
        monitors first: libzmq must not write to a closed PAIR), and drop
        its stash."""
        self.free_stash()
        self.stashed = None
        if self.r.pw.mon != NULL:
            _unmonitor(self.r.pw.sock, self.r.pw.mon)
            self.r.pw.mon = NULL
        if self.r.sw.mon != NULL:
            _unmonitor(self.r.sw.sock, self.r.sw.mon)
            self.r.sw.mon = NULL
        for s in (<size_t>self.sub, <size_t>self.push, <size_t>self.ctl, <size_t>self.ctl_peer):
            if s:
                zmq_close(<void *>s)
        self.sub = self.push = self.ctl = self.ctl_peer = NULL
