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
    _check_z85_key(secret, "secret key")
    _need_curve()
    cdef bytes sec = secret.encode("ascii")
    cdef char pub[41]
    if zmq_curve_public(pub, sec) != 0:
        raise ValueError("secret key is not a valid Z85 CURVE key")
    return pub[:40].decode("ascii")


def _z85_decode(key):
    """The 32 bytes a Z85 key stands for."""
    _check_z85_key(key, "key")
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
                    self._answer()
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
        # never receive again: refuse what is not a ZAP request
        reqid = frames[1] if len(frames) > 1 else b""
        domain = frames[2] if len(frames) > 2 else b""
        mechanism = frames[5] if len(frames) > 5 else b""
        ok = False
        if mechanism == b"CURVE" and len(frames) >= 7 and domain in self.policy:
            allowed = self.policy.get(domain)
            ok = allowed is None or frames[6] in allowed
        reply = [b"1.0", reqid, b"200" if ok else b"400",
                 b"OK" if ok else b"client key not allowed", b"", b""]
        cdef bytes f
        cdef int i
        for i in range(6):
            f = reply[i]
            zmq_send(self.rep, <char *>f, len(f), ZMQ_SNDMORE if i < 5 else 0)
        return 0


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
    zmq_send(z.ctl_peer, b"STOP", 4, 0)
    z.thread.join(5)
    zmq_close(z.ctl_peer)
    z.ctl_peer = NULL
    z.thread = None


