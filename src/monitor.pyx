# Socket monitors: what a CURVE client's handshake came to (the binder
# waits for it, since libzmq keeps a refused connection retrying).
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef long _monitor_serial = 0


cdef long _next_serial():
    global _monitor_serial
    _monitor_serial += 1
    return _monitor_serial


cdef void *_monitor(void *s, str endpoint, int events) except NULL:
    """A PAIR receiving s's monitor events of the kinds in `events`.  Call it
    before s connects, so no event is missed."""
    cdef bytes ep = endpoint.encode()
    cdef int err
    if zmq_socket_monitor(s, ep, events) != 0:
        # libzmq makes a socket of its own for the monitor: EMFILE too
        _raise_out_of_files("cannot monitor a socket", zmq_errno())
    cdef void *m = zmq_socket(_context(), ZMQ_PAIR)
    if m == NULL:
        err = zmq_errno()
        zmq_socket_monitor(s, NULL, 0)
        _raise_out_of_files("cannot create a monitor socket", err)
    if _setopt_int(m, ZMQ_LINGER, 0) != 0 or zmq_connect(m, ep) != 0:
        zmq_close(m)
        zmq_socket_monitor(s, NULL, 0)
        _raise_zmq("cannot connect a monitor socket")
    return m


cdef void _unmonitor(void *s, void *mon) noexcept:
    """Stop s's monitor, then close its PAIR.  Unchecked: both fail only on
    a pointer that is not a socket (ENOTSOCK: a bug, not a condition) or a
    context being terminated (ETERM: no monitor is left to stop), and this
    runs on undo and close paths, which have an error of their own to raise
    or none to raise."""
    zmq_socket_monitor(s, NULL, 0)
    zmq_close(mon)


# What a CURVE client's monitor has told so far: struct Handshake (_zmq.pxd).
cdef int _HANDSHAKE_EVENTS = (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                              | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                              | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)


cdef bint _handshake_news(void *mon, Handshake *h) noexcept:
    """Read the monitor's pending events into h, stopping at the first one
    that settles the outcome (success, refusal, protocol failure); returns
    whether the outcome is settled."""
    cdef zmq_msg_t m
    cdef int more
    cdef unsigned int value
    cdef const unsigned char *d
    cdef unsigned short event
    cdef bint settled = False
    while not settled:
        zmq_msg_init(&m)
        if zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0:
            zmq_msg_close(&m)
            return False
        more = zmq_msg_more(&m)
        if zmq_msg_size(&m) == 6:
            # native-endian uint16 event, then uint32 value; the second
            # frame (the endpoint) is not needed
            d = <const unsigned char *>zmq_msg_data(&m)
            memcpy(&event, d, 2)
            memcpy(&value, d + 2, 4)
            if event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
                h.done = True
                settled = True
            elif event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                h.refused = value if value else 1
                settled = True
            elif event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
                h.protocol = value if value else 1
                settled = True
            elif event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                h.dropped += 1      # libzmq reconnects: not settled
        zmq_msg_close(&m)
        if more:
            _drop_rest(mon)
    return True


cdef int _handshake_failed(Handshake *h, str what) except -1:
    """Raise for a settled failure of the CURVE handshake with `what` (e.g.
    "the queue at tcp://..."); 0 when it did not fail."""
    if h.refused:
        raise Error(f"{what} refused this instance's CURVE key (ZAP status "
                    f"{h.refused}): is it in the owner's allowed_keys?", EACCES)
    if h.protocol == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        why = "its listener is not a CURVE server, though the directory gave a key"
    else:
        why = "is the key in the directory its owner's?"
    if h.protocol:
        raise Error(f"the CURVE handshake with {what} failed (ZMTP protocol "
                    f"error {h.protocol:#x}): {why}", EPROTO)
    return 0
