# Received messages: the one way a copy is made (_copy), and Frame, a
# received message still held by libzmq (no copy).
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef inline bytes _copy(zmq_msg_t *msg):
    """A received message's content, copied into a new bytes object: the one
    way every copying receive makes its result."""
    return PyBytes_FromStringAndSize(<char *>zmq_msg_data(msg), zmq_msg_size(msg))


cdef inline void _release_large(zmq_msg_t *msg) noexcept:
    """Let the engine's reused message drop a large content now rather than
    at the next receive (it may be a sender's bytes object lent to libzmq,
    kept alive while the message holds it).  Not on receive()'s fast path:
    the call into libzmq costs it a few percent; it keeps the last message
    until the next receive."""
    if zmq_msg_size(msg) >= _ZERO_COPY_MIN:
        zmq_msg_close(msg)
        zmq_msg_init(msg)


# without a copy

@cython.freelist(16)     # a receive(copy=False) loop reuses a few objects
cdef class Frame:
    """A received message still held by libzmq: a read-only buffer, no copy.

    Use ``memoryview(frame)``, ``bytes(frame)`` or ``len(frame)``.
    """

    def __cinit__(self):
        zmq_msg_init(&self.msg)

    def __dealloc__(self):
        zmq_msg_close(&self.msg)

    def __len__(self):
        return zmq_msg_size(&self.msg)

    def __bytes__(self):
        return _copy(&self.msg)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a received Frame is read-only")
        self.shape[0] = zmq_msg_size(&self.msg)
        view.buf = zmq_msg_data(&self.msg)
        view.len = self.shape[0]
        view.readonly = 1
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        view.ndim = 1
        view.shape = self.shape if (flags & PyBUF_ND) else NULL
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL
        view.obj = self

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __eq__(self, other):
        if isinstance(other, Frame):
            other = bytes(other)
        try:
            return bytes(self) == bytes(memoryview(other))
        except TypeError:
            return NotImplemented

    def __hash__(self):
        return hash(bytes(self))

    @property
    def sender_key(self):
        """The CURVE public key (Z85) of the client that sent this message,
        as this process's ZAP handler admitted it; None when the message
        did not come over CURVE to one of this instance's listeners (a
        plain or inproc connection, or a message read while a bind waited)."""
        cdef const char *mark = zmq_msg_gets(&self.msg, <char *>_ZAP_MARK_NAME)
        if mark == NULL or <bytes>mark != _ZAP_MARK:
            return None     # no word from our ZAP handler: a User-Id is the peer's claim
        cdef const char *v = zmq_msg_gets(&self.msg, b"User-Id")
        if v == NULL or v[0] == 0:
            return None
        return (<bytes>v).decode("ascii", "replace")

    def __repr__(self):
        return f"<pyzmq.Frame {len(self)} bytes>"
