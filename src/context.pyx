# The process-wide libzmq context, shared by every instance.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

# the process-wide libzmq context, shared by every instance (inproc works
# between instances); made again after fork, since a context does not
# survive one.

cdef void *_ctx = NULL
cdef long _ctx_pid = 0


cdef void *_context() except NULL:
    global _ctx, _ctx_pid
    cdef long pid = os.getpid()
    if _ctx == NULL or _ctx_pid != pid:
        _ctx = zmq_ctx_new()
        if _ctx == NULL:
            _raise_zmq("cannot create a libzmq context")
        _ctx_pid = pid
    return _ctx


def _term_context():
    """Terminate the shared context (waits for lingering sockets). For exit."""
    global _ctx
    cdef void *ctx = _ctx
    if ctx == NULL or _ctx_pid != os.getpid():
        return
    _zap_stop()     # its REP socket would hold zmq_ctx_term forever
    _ctx = NULL
    with nogil:
        zmq_ctx_term(ctx)

