# Small socket helpers: checked options, bind, one copy of a send, poll
# items, dropping the rest of a multipart message, zero-copy loans.
# (Included by _zmq.pyx: one extension module, one compilation unit.)


cdef inline int _setopt_int(void *s, int option, int value) noexcept nogil:
    """zmq_setsockopt of an int option; its return code (0, or -1 with
    zmq_errno set), for the caller to check."""
    return zmq_setsockopt(s, option, &value, sizeof(int))


cdef int _setopt(void *s, int option, int value, str what) except -1:
    """Set an int option or raise pyzmq.Error saying what failed."""
    if zmq_setsockopt(s, option, &value, sizeof(int)) != 0:
        _raise_zmq(what)
    return 0


cdef int _signal_fd(void *s) except -1:
    """The socket's signalling fd (ZMQ_FD): readable when it has news."""
    cdef int fd = -1
    cdef size_t n = sizeof(int)
    if zmq_getsockopt(s, ZMQ_FD, &fd, &n) != 0:
        _raise_zmq("cannot read a socket's signalling fd")
    return fd


cdef inline void _item(zmq_pollitem_t *it, void *s, short events) noexcept nogil:
    """Fill one zmq_poll item for socket s."""
    it.socket = s
    it.fd = 0
    it.events = events
    it.revents = 0

cdef void _close_now(void *s) noexcept:
    """Close a socket that holds nothing worth delivering, without linger.
    (On a failure path: if even LINGER cannot be set the socket lingers
    with the instance's setting, which is all that is lost.)"""
    _setopt_int(s, ZMQ_LINGER, 0)
    zmq_close(s)


cdef str _bind(void *s, str endpoint):
    """Bind s and return the endpoint libzmq actually bound (ports resolved)."""
    cdef bytes ep = endpoint.encode()
    if zmq_bind(s, ep) != 0:
        err = zmq_errno()
        _raise_errno(f"cannot listen at {endpoint}", err)
    cdef char buf[256]
    cdef size_t n = sizeof(buf)
    if zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &n) != 0:
        _raise_zmq("cannot read the bound endpoint")
    return buf[:n - 1].decode() if n > 0 else endpoint


cdef int _get_buffer(object msg, Py_buffer *view) except -1:
    if isinstance(msg, str):
        raise TypeError("messages are bytes, not str: encode the text first "
                        "(e.g. msg.encode())")
    try:
        PyObject_GetBuffer(msg, view, PyBUF_ANY_CONTIGUOUS)
    except BufferError as e:
        raise TypeError(f"message must be a contiguous buffer: {e}") from None
    except TypeError:
        raise TypeError(f"message must be bytes, bytearray, memoryview or another "
                        f"contiguous buffer, not {type(msg).__name__}") from None
    return 0


cdef inline int _send_one(void *s, const char *data, Py_ssize_t size,
                          zmq_msg_t *shared, int flags) noexcept nogil:
    """Send one copy: a reference to the shared message when there is one
    (large messages, no copy), else copy data."""
    cdef zmq_msg_t m
    cdef int rc
    if shared == NULL:
        return zmq_send(s, data, size, flags)
    zmq_msg_init(&m)
    zmq_msg_copy(&m, shared)    # fails only on an invalid message (EFAULT: a bug)
    rc = zmq_msg_send(&m, s, flags)
    if rc < 0:
        zmq_msg_close(&m)
    return rc


cdef inline void *_only(ExchangeSlot *e) noexcept:
    """The one socket a message on exchange e goes to, when there is exactly
    one (a single PUSH, or only the listener); else NULL.  Load balancing
    over a single PUSH is the same as sending to it.  A single PUSH whose
    queue's owner, an instance of this process, began closing is not one
    (NULL): the slow paths treat it as full."""
    if e.xpub == NULL and e.npush == 1:
        if e.npeers != 0 and e.peers[0].closing:
            return NULL     # its queue's owner (in this process) is closing: no room
        return e.pushes[0]
    if e.npush == 0:
        return e.xpub
    return NULL


cdef inline int _can_send(void *s) except -1:
    """1 when s has room for a message now, else 0."""
    cdef int events = 0
    cdef size_t n = sizeof(int)
    if zmq_getsockopt(s, ZMQ_EVENTS, &events, &n) != 0:
        _raise_zmq("cannot read a socket's events")
    return (events & ZMQ_POLLOUT) != 0


cdef inline void _drop_rest(void *s) noexcept nogil:
    """Read and discard the remaining frames of a multi-frame message: the
    one loop that does it (data is one frame; two frames are a sync answer
    or a monitor event's endpoint)."""
    cdef zmq_msg_t m
    cdef int more = 1
    while more:
        zmq_msg_init(&m)
        if zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0:
            zmq_msg_close(&m)
            return
        more = zmq_msg_more(&m)
        zmq_msg_close(&m)



# zero-copy loans (src/zerocopy.h)

def _collect_loans():
    """Release the bytes objects libzmq has finished sending; returns how many."""
    return zw_collect()


def _loans_outstanding():
    """How many bytes objects libzmq still holds for zero-copy sends."""
    return zw_outstanding



cdef inline int _binders(sv_service *svc, ExchangeSlot *e) noexcept:
    """How many wiring binders exchange e's listener has: their sync topics
    stay subscribed, and the service thread counts them (src/service.h)."""
    if svc == NULL or e.xpub == NULL:
        return 0
    return sv_subscribers(svc, e.xpub)
