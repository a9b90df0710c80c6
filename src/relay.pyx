# _Relay: a thread of the binder forwarding one remote global exchange to
# one remote global queue (bind() of two objects of other owners), and its
# loop, _relay_loop.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef class _Relay:
    """A proxy thread forwarding one remote exchange to one remote queue.

    Once its thread runs, sub, push and ctl are the thread's: it closes them
    when its loop ends.  The owner keeps only ctl_peer, to say STOP."""

    def run(self):
        cdef list stashed = self.stashed
        self.stashed = None
        if _relay_pass_on(self.push, self.ctl, stashed):
            with nogil:
                _relay_loop(self.sub, self.push, self.ctl)
        zmq_close(self.sub)
        zmq_close(self.push)
        zmq_close(self.ctl)
        self.sub = self.push = self.ctl = NULL

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
        """Close the four sockets of a relay whose thread never started."""
        for s in (<size_t>self.sub, <size_t>self.push, <size_t>self.ctl, <size_t>self.ctl_peer):
            if s:
                zmq_close(<void *>s)
        self.sub = self.push = self.ctl = self.ctl_peer = NULL


cdef bint _relay_pass_on(void *push, void *ctl, list stashed) noexcept:
    """Send what the relay's SUB delivered while syncing, in order, each
    waiting for room (the GIL released) or for the stop message.  False
    when stopped (or the PUSH failed): the loop is not to run."""
    cdef bytes m
    cdef const char *data
    cdef Py_ssize_t size
    cdef zmq_pollitem_t items[2]
    cdef int rc
    if not stashed:
        return True
    items[0].socket = ctl
    items[0].fd = 0
    items[0].events = ZMQ_POLLIN
    items[1].socket = push
    items[1].fd = 0
    items[1].events = ZMQ_POLLOUT
    for m in stashed:
        data = m
        size = len(m)
        with nogil:
            while True:
                if zmq_send(push, data, size, ZMQ_DONTWAIT) >= 0:
                    break
                if zmq_errno() != EAGAIN and zmq_errno() != EINTR:
                    return False
                items[0].revents = items[1].revents = 0
                rc = zmq_poll(items, 2, -1)
                if rc < 0 and zmq_errno() != EINTR:
                    return False
                if items[0].revents:
                    return False
    return True


cdef void _relay_loop(void *sub, void *push, void *ctl) noexcept nogil:
    """Pass single-frame messages from sub to push until ctl has a message.

    Not zmq_proxy_steerable: libzmq 4.3's proxy blocks in a send to a PUSH
    whose queue is full (its owner stopped or gone) and then never reads
    its control socket, so it could not be stopped.  Here every send is
    non-blocking: a message that does not fit waits, and the loop waits for
    room or for the stop message, whichever comes first.  Multi-frame
    messages (the exchange's answers to binders' syncs) are dropped, as
    every receiver drops them.

    A failure other than EAGAIN or EINTR ends the loop (and the thread,
    which closes the sockets).  On a SUB's receive and a PUSH's
    non-blocking send that is ETERM alone (the context is being terminated,
    at exit), so there is no binder left to tell.
    """
    cdef zmq_msg_t msg
    cdef zmq_pollitem_t items[2]
    cdef bint pending = False
    cdef int rc
    items[0].socket = ctl
    items[0].fd = 0
    items[0].events = ZMQ_POLLIN
    while True:
        items[0].revents = 0
        items[1].socket = push if pending else sub
        items[1].fd = 0
        items[1].events = ZMQ_POLLOUT if pending else ZMQ_POLLIN
        items[1].revents = 0
        if zmq_poll(items, 2, -1) < 0:
            if zmq_errno() == EINTR:
                continue
            break
        if items[0].revents:
            break
        if not pending:
            zmq_msg_init(&msg)
            if zmq_msg_recv(&msg, sub, ZMQ_DONTWAIT) < 0:
                zmq_msg_close(&msg)
                if zmq_errno() == EAGAIN or zmq_errno() == EINTR:
                    continue
                return
            if zmq_msg_more(&msg):
                zmq_msg_close(&msg)
                _drop_rest(sub)
                continue
            pending = True
        rc = zmq_msg_send(&msg, push, ZMQ_DONTWAIT)
        if rc >= 0:
            pending = False
        elif zmq_errno() != EAGAIN and zmq_errno() != EINTR:
            break
    if pending:
        zmq_msg_close(&msg)

