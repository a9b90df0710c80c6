# The process-wide libzmq context, shared by every instance.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

# the process-wide libzmq context, shared by every instance (inproc works
# between instances); made again after fork, since a context does not
# survive one.

cdef void *_ctx = NULL
cdef long _ctx_pid = 0


cdef int _open_file_limit():
    """Raise this process's soft open-file limit to its hard limit (allowed
    without privilege) and return the soft limit in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass        # a container may refuse: keep what there is
    return <int>min(soft, 1 << 30)


cdef void *_context() except NULL:
    global _ctx, _ctx_pid
    cdef long pid = os.getpid()
    cdef int limit
    if _ctx == NULL or _ctx_pid != pid:
        _ctx = zmq_ctx_new()
        if _ctx == NULL:
            _raise_zmq("cannot create a libzmq context")
        _ctx_pid = pid
        # libzmq caps a context at 1,023 sockets by default, far below what
        # the open-file limit allows (an exchange has one PUSH per binding):
        # let the file limit, raised as far as it may be, be the limit
        limit = min(_open_file_limit(), zmq_ctx_get(_ctx, ZMQ_SOCKET_LIMIT))
        if limit > zmq_ctx_get(_ctx, ZMQ_MAX_SOCKETS):
            zmq_ctx_set(_ctx, ZMQ_MAX_SOCKETS, limit)   # fails only above the socket limit
    return _ctx


def _socket_limits():
    """(libzmq's socket cap for the shared context, the open-file soft and
    hard limits): what a "cannot create a socket" error is measured against."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return zmq_ctx_get(_context(), ZMQ_MAX_SOCKETS), soft, hard


cdef int _raise_no_socket() except -1:
    """A failed zmq_socket(): EMFILE names the limit that was hit and how to
    raise it; anything else as libzmq says."""
    return _raise_out_of_files("cannot create a socket", zmq_errno())


cdef int _raise_out_of_files(str what, int err) except -1:
    """A failure to get a socket or another file descriptor: EMFILE names
    the limit that was hit and how to raise it; anything else as is."""
    if err != EMFILE:
        _raise_errno(what, err)
    cap, soft, hard = _socket_limits()
    raise Error(f"{what}: the process reached its limit of {cap} libzmq "
                f"sockets or of {soft} open files (every socket takes a file descriptor, "
                f"every TCP connection another); raise the open-file limit before starting "
                f"(ulimit -n, up to the hard limit {hard}, or the service manager's "
                f"LimitNOFILE), or close instances and bindings no longer needed", EMFILE)


def _term_context():
    """Terminate the shared context (waits for lingering sockets). For exit."""
    global _ctx
    cdef void *ctx = _ctx
    if ctx == NULL or _ctx_pid != os.getpid():
        return
    _zap_stop()     # its REP socket would hold zmq_ctx_term forever
    _ctx = NULL
    with nogil:
        # EINTR (a signal reached this thread while lingering sockets
        # drained) leaves the context up and their messages unsent: it is
        # to be restarted, as zmq_ctx_term(3) says.  The caller bounds the
        # whole wait (wiring._close_all_at_exit joins this thread 5 s).
        while zmq_ctx_term(ctx) != 0 and zmq_errno() == EINTR:
            pass

