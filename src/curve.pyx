# CURVE: keypairs, Z85, and the process's ZAP handler (_Zap, a daemon
# thread answering libzmq's authentication requests per ZAP domain).
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef int _need_curve() except -1:
    if not zmq_has(b"curve"):
        raise Error("this libzmq was built without CURVE security", EINVAL)
    return 0


def curve_keypair():
    """A new CURVE keypair: (public, secret), each 40 Z85 characters."""
    _need_curve()
    cdef char pub[41]
    cdef char sec[41]
    if zmq_curve_keypair(pub, sec) != 0:
        _raise_zmq("cannot make a CURVE keypair")
    return pub[:40].decode("ascii"), sec[:40].decode("ascii")


def curve_public(secret):
    """The CURVE public key (Z85) that belongs to a secret key (Z85)."""
    secret = _check_z85_key(secret, "secret key")
    _need_curve()
    cdef bytes sec = secret.encode("ascii")
    cdef char pub[41]
    if zmq_curve_public(pub, sec) != 0:
        raise ValueError("secret key is not a valid Z85 CURVE key")
    return pub[:40].decode("ascii")


def _z85_decode(key):
    """The 32 bytes a Z85 key stands for."""
    key = _check_z85_key(key, "key")
    cdef bytes k = key.encode("ascii")
    cdef unsigned char out[32]
    if zmq_z85_decode(out, k) == NULL:
        raise ValueError(f"{key!r} is not a valid Z85 key")
    return out[:32]


def _z85_encode(bytes raw):
    """The Z85 text (40 characters) of a 32-byte key."""
    if len(raw) != 32:
        raise ValueError(f"a key is 32 bytes, not {len(raw)}")
    cdef char out[41]
    if zmq_z85_encode(out, raw, 32) == NULL:
        raise ValueError("cannot encode the key as Z85")
    return out[:40].decode("ascii")


# The ZAP handler adds this property, with a value only this process knows,
# to every connection it admits.  libzmq gives ZAP's properties precedence
# over those a peer sends in its own handshake (any peer may send a
# "User-Id"), so a message carrying the mark got its User-Id from our handler.
cdef bytes _ZAP_MARK_NAME = b"X-Pyzmq-Wiring-Zap"
cdef bytes _ZAP_MARK = os.urandom(16).hex().encode("ascii")
cdef bytes _ZAP_METADATA = (bytes([len(_ZAP_MARK_NAME)]) + _ZAP_MARK_NAME
                            + len(_ZAP_MARK).to_bytes(4, "big") + _ZAP_MARK)


cdef class _Zap:
    """The process's ZAP handler: a REP socket at inproc://zeromq.zap.01
    answered by a daemon thread, allowing a CURVE client key per ZAP domain
    (one domain per instance with a secret key)."""

    def run(self):
        cdef zmq_pollitem_t items[2]
        cdef int rc
        try:
            while True:
                _item(&items[0], self.rep, ZMQ_POLLIN)
                _item(&items[1], self.ctl, ZMQ_POLLIN)
                with nogil:
                    rc = zmq_poll(items, 2, -1)
                if rc < 0:
                    if zmq_errno() == EINTR:
                        continue
                    break
                if items[1].revents:
                    break
                if items[0].revents:
                    try:
                        self._answer()
                    except Exception:
                        pass    # _answer replied 500; one bad request never ends the handler
        finally:
            zmq_close(self.rep)
            zmq_close(self.ctl)
            self.rep = self.ctl = NULL

    cdef int _answer(self) except -1:
        cdef zmq_msg_t m
        cdef list frames = []
        cdef int more = 1
        while more:
            zmq_msg_init(&m)
            if zmq_msg_recv(&m, self.rep, ZMQ_DONTWAIT) < 0:
                zmq_msg_close(&m)
                if not frames:
                    return 0
                break
            frames.append(_copy(&m))
            more = zmq_msg_more(&m)
            zmq_msg_close(&m)
        # a REP must answer every request, malformed ones too, or it can
        # never receive again: whatever goes wrong, a reply goes out
        reqid = frames[1] if len(frames) > 1 else b""
        try:
            status, text, user = self._decide(frames)
        except Exception as exc:
            status, text, user = b"500", f"internal error: {type(exc).__name__}".encode(), b""
        cdef list reply = [b"1.0", reqid, status, text, user,
                           _ZAP_METADATA if status == b"200" else b""]
        cdef bytes f
        cdef int i
        for i in range(6):
            f = reply[i]
            # Not checked: a REP's send never waits (libzmq drops a reply
            # to an asker whose pipe is full rather than block, so no
            # EAGAIN and no EINTR), and each connection's ZAP client asks
            # one request at a time, so its pipe holds nothing else.  What
            # is left is ETERM (the context is ending: the next poll ends
            # this thread), and there is nobody to tell.
            zmq_send(self.rep, <char *>f, len(f), ZMQ_SNDMORE if i < 5 else 0)
        return 0

    cdef tuple _decide(self, list frames):
        """(status, status text, User-Id) for one ZAP request: 500 for what
        this handler cannot handle (not ZAP 1.0, not CURVE, malformed), 400
        for a domain or key it does not allow, 200 with the client's public
        key (Z85) as User-Id."""
        if len(frames) < 6 or frames[0] != b"1.0":
            return b"500", b"not a ZAP 1.0 request", b""
        domain, mechanism = frames[2], frames[5]
        if mechanism != b"CURVE":
            return b"500", b"this handler serves CURVE only", b""
        if len(frames) != 7 or len(frames[6]) != 32:
            return b"500", b"CURVE credentials must be one 32-byte key", b""
        allowed = self.policy.get(domain, False)     # one look: domains come and go
        if allowed is False:
            return b"400", b"unknown ZAP domain", b""
        if allowed is not None and frames[6] not in allowed:
            return b"400", b"client key not allowed", b""
        return b"200", b"OK", _z85_encode(frames[6]).encode("ascii")


cdef _Zap _zap = None


def _zap_allow(domain, allowed):
    """Start the ZAP handler if needed; set domain's policy (None: any key,
    else an iterable of 32-byte client keys)."""
    global _zap
    cdef _Zap z = _zap
    cdef long pid = os.getpid()
    if z is None or z.pid != pid:
        z = _Zap()
        z.pid = pid
        z.policy = {}
        try:
            z.rep = zmq_socket(_context(), ZMQ_REP)
            z.ctl = zmq_socket(_context(), ZMQ_PAIR)
            z.ctl_peer = zmq_socket(_context(), ZMQ_PAIR)
            if z.rep == NULL or z.ctl == NULL or z.ctl_peer == NULL:
                _raise_zmq("cannot create the ZAP handler's sockets")
            _bind(z.rep, "inproc://zeromq.zap.01")
            ep = f"inproc://pyzmq-wiring/{pid}/zap-control"
            _bind(z.ctl, ep)
            if zmq_connect(z.ctl_peer, ep.encode()) != 0:
                _raise_zmq("cannot connect the ZAP handler's control socket")
        except BaseException:
            for p in (<size_t>z.rep, <size_t>z.ctl, <size_t>z.ctl_peer):
                if p:
                    zmq_close(<void *>p)
            raise
        z.thread = threading.Thread(target=z.run, daemon=True, name="pyzmq-wiring ZAP")
        z.thread.start()
        _zap = z
    z.policy[domain] = None if allowed is None else frozenset(allowed)


def _zap_forget(domain):
    if _zap is not None:
        _zap.policy.pop(domain, None)


def _zap_running():
    return _zap is not None and _zap.pid == os.getpid() and _zap.thread is not None


def _zap_stop():
    """Stop the ZAP thread and close its sockets (before zmq_ctx_term)."""
    global _zap
    cdef _Zap z = _zap
    _zap = None
    if z is None or z.pid != os.getpid():
        return
    # Not checked, and never waits: ctl_peer's pipe to ctl exists since the
    # connect in _zap_allow and holds nothing else, and the context is not
    # being terminated yet (_term_context calls this first).  DONTWAIT all
    # the same: were the thread gone (its poll failed), a blocking send
    # would wait for ever with the GIL held; then the join returns at once.
    zmq_send(z.ctl_peer, b"STOP", 4, ZMQ_DONTWAIT)
    z.thread.join(5)
    zmq_close(z.ctl_peer)
    z.ctl_peer = NULL
    z.thread = None


def _zap_request(frames, double timeout=2.0):
    """Send one request (a list of bytes frames) to this process's ZAP
    handler from a REQ socket of the shared context and return its reply
    frames; pyzmq.Timeout if none comes.  For tests and diagnostics."""
    cdef void *s = zmq_socket(_context(), ZMQ_REQ)
    if s == NULL:
        _raise_zmq("cannot create a ZAP client socket")
    cdef int ms = <int>(timeout * 1000)
    cdef int rc, i, more = 1
    cdef bytes f
    cdef zmq_msg_t m
    cdef list out = []
    try:
        _setopt(s, ZMQ_LINGER, 0, "cannot set the ZAP client's linger")
        _setopt(s, ZMQ_RCVTIMEO, ms, "cannot set the ZAP client's receive timeout")
        if zmq_connect(s, b"inproc://zeromq.zap.01") != 0:
            _raise_zmq("no ZAP handler in this process")
        for i in range(len(frames)):
            f = frames[i]
            if zmq_send(s, <char *>f, len(f), ZMQ_SNDMORE if i < len(frames) - 1 else 0) < 0:
                _raise_zmq("cannot send the ZAP request")
        while more:
            zmq_msg_init(&m)
            with nogil:
                rc = zmq_msg_recv(&m, s, 0)
            if rc < 0:
                zmq_msg_close(&m)
                if zmq_errno() == EAGAIN:
                    raise Timeout(f"the ZAP handler did not answer within {timeout} s")
                _raise_zmq("cannot receive the ZAP reply")
            out.append(_copy(&m))
            more = zmq_msg_more(&m)
            zmq_msg_close(&m)
        return out
    finally:
        zmq_close(s)


