# cython: language_level=3
"""The C core of pyzmq-wiring: exchanges and queues as libzmq sockets.

This module knows sockets, not names.  ``pyzmq.wiring`` turns names, scopes,
locations and the directory into calls of the ``_``-prefixed methods here;
``send``/``receive`` and their batch forms are the hot path and stay in C.

Socket map (see docs/design.md):

* a queue is one PULL socket bound to an inproc endpoint (and, for a global
  queue, to its TCP location), plus one SUB socket per remote global exchange
  bound to it;
* an exchange is one PUSH socket per queue it connects to, plus, for a global
  exchange, one XPUB socket listening at its location for remote binders.
"""

from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset
from libc.math cimport ceil, INFINITY
from cpython.pyport cimport PY_SSIZE_T_MAX
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING,
                            PyBytes_GET_SIZE, PyBytes_CheckExact)
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_ANY_CONTIGUOUS,
                             PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND)
from cpython.exc cimport PyErr_CheckSignals
from cpython.float cimport PyFloat_CheckExact, PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_Append
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_INCREF

from libzmq cimport *

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN

cdef extern from "errno.h":
    int errno
    enum:
        EACCES
        EPROTO

# the monitor events a CURVE binder watches (libzmq 4.3, zmq.h)
cdef extern from "zmq.h":
    enum:
        ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
        ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH

cdef extern from "zerocopy.h":
    ctypedef struct zw_loan:
        pass
    void zw_give_back(void *data, void *hint) nogil
    zw_loan *zw_lend(object obj)
    void zw_cancel(zw_loan *loan)
    long zw_collect()
    long zw_outstanding

import collections
import os
import threading

from pyzmq.errors import Error, Timeout

# Two-frame messages are never data: data is always one frame.  A binder asks
# the owner of a global exchange to prove its subscription is live by
# subscribing to SYNC_PREFIX + nonce; the owner answers with the two frames
# [topic, b""], which every receiver recognises by their shape and drops.
SYNC_PREFIX = b"\xffpyzmq-wiring-sync:"
cdef bytes _SYNC_PREFIX = SYNC_PREFIX

# Bytes objects at least this large are lent to libzmq instead of copied.
# A compile-time constant, so the send paths compare with an immediate;
# ZERO_COPY_MIN only reports it (assigning to it would change nothing).
cdef enum:
    _ZERO_COPY_MIN = 65536
ZERO_COPY_MIN = _ZERO_COPY_MIN

# The owner looks at its global exchanges' listeners (attaching new binders,
# answering their syncs) whenever it waits, and on the fast path after this
# many sends or receives or this many seconds, whichever comes first.
DEF SERVICE_EVERY = 256
DEF MAX_WAIT_S = 86400.0        # one wait at most; longer timeouts loop
DEF SERVICE_AFTER = 0.001
# A send or receive that has waited FOLLOW_FIRST seconds asks the wiring
# layer whether a remote peer it is bound to moved to another address, and
# then every FOLLOW_EVERY seconds while it waits.  The wiring layer does no
# I/O there: the directory's background thread looks names up.
DEF FOLLOW_FIRST = 1.0
DEF FOLLOW_EVERY = 0.25


# --------------------------------------------------------------------------
# errors: the one place libzmq failures become Python exceptions

cdef int _raise_errno(str what, int err) except -1:
    raise Error(f"{what}: {zmq_strerror(err).decode()}", err)


cdef int _raise_zmq(str what) except -1:
    return _raise_errno(what, zmq_errno())


def libzmq_version():
    """The version of the libzmq this extension is linked against, as 'X.Y.Z'."""
    cdef int major, minor, patch
    zmq_version(&major, &minor, &patch)
    return f"{major}.{minor}.{patch}"


def has(capability):
    """Whether libzmq was built with a capability such as 'curve' or 'ipc'."""
    return bool(zmq_has(capability.encode()))


# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# CURVE keys and the ZAP handler (one per process, in the shared context)

_Z85_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _check_z85_key(key, str what):
    """A CURVE key in Z85 (str of 40 characters) or ValueError/TypeError."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str of 40 Z85 characters, not {type(key).__name__}")
    if len(key) != 40:
        raise ValueError(f"{what} must be 40 Z85 characters (a CURVE key), "
                         f"not {len(key)} characters")
    bad = next((ch for ch in key if ch not in _Z85_CHARS), None)
    if bad is not None:
        raise ValueError(f"{what} holds {bad!r}, which is not a Z85 character")
    return key


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


cdef extern from "zmq.h" nogil:
    # zmq.h has the property getter; the option below only under the draft API
    const char *zmq_msg_gets(const zmq_msg_t *msg, const char *property)
    enum: ZMQ_REQ   # for _zap_request

cdef enum:
    # accepted by libzmq 4.3.4 though zmq.h defines it only as a draft option:
    # without it a CURVE server whose ZAP handler is gone admits any key
    _ZMQ_ZAP_ENFORCE_DOMAIN = 93


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
    cdef void *rep
    cdef void *ctl          # read by the thread: any message stops it
    cdef void *ctl_peer     # written by _zap_stop
    cdef object thread
    cdef dict policy        # domain (bytes) -> None (any key) or frozenset of 32-byte keys
    cdef long pid

    def run(self):
        cdef zmq_pollitem_t items[2]
        cdef int rc
        try:
            while True:
                items[0].socket = self.rep
                items[0].fd = 0
                items[0].events = ZMQ_POLLIN
                items[0].revents = 0
                items[1].socket = self.ctl
                items[1].fd = 0
                items[1].events = ZMQ_POLLIN
                items[1].revents = 0
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
    zmq_send(z.ctl_peer, b"STOP", 4, 0)
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
    cdef int zero = 0
    cdef int rc, i, more = 1
    cdef bytes f
    cdef zmq_msg_t m
    cdef list out = []
    try:
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(int))
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &ms, sizeof(int))
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


def _collect_loans():
    """Release the bytes objects libzmq has finished sending; returns how many."""
    return zw_collect()


def _loans_outstanding():
    return zw_outstanding


# --------------------------------------------------------------------------
# time

cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef double _seconds(object timeout) except -2.0:
    """A timeout's length in seconds, -1.0 for 'wait forever' (None or
    infinity).  TypeError when it is not a number (a bool is not one),
    ValueError when it is negative or NaN."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    cdef double t
    try:
        t = timeout
    except OverflowError:
        t = INFINITY if timeout > 0 else -INFINITY
    if not t >= 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
    if t == INFINITY:
        return -1.0
    return t


cdef double _deadline(object timeout) except -2.0:
    """-1.0 for 'wait forever', else the monotonic time to give up at."""
    cdef double t = _seconds(timeout)
    return t if t < 0 else _now() + t


cdef inline double _earlier(double deadline, double other) noexcept nogil:
    """The sooner of two deadlines, where -1.0 means never."""
    if other < 0:
        return deadline
    if deadline < 0 or other < deadline:
        return other
    return deadline


cdef inline int _check_timeout(object timeout) except -1:
    """Reject a bad timeout even when the call will not wait (and so never
    computes a deadline): the same error on every path.  Free for None,
    one comparison for a float."""
    if timeout is None:
        return 0
    if PyFloat_CheckExact(timeout) and PyFloat_AS_DOUBLE(timeout) >= 0:
        return 0                # NaN fails the comparison: checked below
    _seconds(timeout)
    return 0


cdef inline long _ms_left(double deadline) noexcept nogil:
    if deadline < 0:
        return -1
    cdef double left = deadline - _now()
    if left <= 0:
        return 0
    if left > MAX_WAIT_S:
        return <long>(MAX_WAIT_S * 1000)   # callers loop until the deadline
    return <long>ceil(left * 1000.0)


# --------------------------------------------------------------------------
# received messages

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

cdef class Frame:
    """A received message still held by libzmq: a read-only buffer, no copy.

    Use ``memoryview(frame)``, ``bytes(frame)`` or ``len(frame)``.
    """
    cdef zmq_msg_t msg
    cdef Py_ssize_t shape[1]
    cdef readonly int queue_id

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


# --------------------------------------------------------------------------
# the engine

cdef struct ExchangeSlot:
    void *xpub          # listener for remote binders (global exchange), or NULL
    void **pushes       # one PUSH per queue this exchange connects to
    int npush
    int style           # STYLE_DATA_DISTRIBUTION or STYLE_LOAD_BALANCING
    int next            # load balancing: the push to try first
    unsigned int sends  # fast-path sends since the listener was serviced

cdef struct QueueSlot:
    void *pull          # fed by PUSHes (local exchanges, remote binders), or NULL
    void **socks        # the PULL if any, and one SUB per remote exchange
    int nsock
    int next            # fairness: the socket to try first
    int hwm             # high-water mark of this queue's PULL and SUBs

STYLE_DATA_DISTRIBUTION = 0
STYLE_LOAD_BALANCING = 1

cdef long _engine_serial = 0


cdef Py_ssize_t _id(object o, str what) except? -1:
    """An exchange or queue id from the user: TypeError if not an integer,
    ValueError if no such id could exist."""
    cdef Py_ssize_t v
    try:
        v = o
    except OverflowError:
        raise ValueError(f"unknown {what} id {o}") from None
    return v


cdef int _grow(void ***arr, int n) except -1:
    cdef void **p = <void **>realloc(arr[0], (n + 1) * sizeof(void *))
    if p == NULL:
        raise MemoryError()
    arr[0] = p
    return 0


cdef class _Stash:
    """Messages a bind() read while it waited for its sync answer, as
    (queue id, bytes) in arrival order; receive() hands them out first.
    n is their count, so the fast path tests a C integer instead of asking
    the deque; only these methods change the deque, and each keeps n equal
    to its length."""
    cdef readonly Py_ssize_t n
    cdef object items

    def __cinit__(self):
        self.items = collections.deque()

    def __len__(self):
        return len(self.items)

    cdef int push(self, int qid, bytes m) except -1:
        self.items.append((qid, m))
        self.n += 1
        return 0

    cdef tuple pop(self):
        """The oldest message (IndexError when there is none)."""
        cdef tuple item = self.items.popleft()
        self.n -= 1
        return item

    cdef int truncate(self, Py_ssize_t n) except -1:
        """Drop the newest messages until n are left."""
        while self.n > n:
            self.items.pop()
            self.n -= 1
        return 0

    cdef list take(self, int qid):
        """Remove queue qid's messages; returns them (bytes) in order."""
        cdef list taken = [m for q, m in self.items if q == qid]
        if taken:
            self.items = collections.deque(item for item in self.items if item[0] != qid)
            self.n = len(self.items)
        return taken


cdef class Engine:
    """Sockets of one wiring instance; used by one thread, the one that made it."""

    cdef ExchangeSlot *ex
    cdef int nex
    cdef QueueSlot *qs
    cdef int nq
    cdef int next_q                 # fairness: the queue to try first
    cdef zmq_pollitem_t *items      # every input socket, then every listener
    cdef pollfd *fds                # their libzmq signalling fds, same order
    cdef int nitems
    cdef int ninputs
    cdef zmq_pollitem_t *sitems     # scratch for send waits
    cdef int sitems_cap
    cdef unsigned int recvs         # fast-path receives since listeners were serviced
    cdef double serviced_at         # when listeners were last serviced
    cdef int rcvtimeo               # RCVTIMEO last set on the only input socket
    cdef zmq_msg_t rmsg             # reused by receive()'s fast path
    cdef int single_qid             # the queue of the only input socket
    cdef readonly bint closed
    cdef unsigned long owner        # thread ident of the thread that made it
    cdef int _hwm
    cdef int _linger_ms
    cdef _Stash stash               # messages read while a bind waited
    cdef dict pending_syncs         # eid -> [topic, ...] still to answer
    cdef str prefix                 # inproc endpoint prefix of this instance
    cdef object _relays             # running relay threads (both sides remote)
    cdef bytes _cpub                # CURVE keypair (Z85), or None: made when needed
    cdef bytes _csec
    cdef bint _cserver              # listeners are CURVE servers with that key
    cdef bytes _zap_domain
    cdef public bint following      # the wiring layer has remote bindings to check

    def __cinit__(self, *args, **kwargs):
        global _engine_serial
        _context()
        zmq_msg_init(&self.rmsg)
        self.owner = PyThread_get_thread_ident()
        self._hwm = 1000
        self._linger_ms = 1000
        self.stash = _Stash()
        self.pending_syncs = {}
        self._relays = []
        _engine_serial += 1
        self.prefix = f"inproc://pyzmq-wiring/{os.getpid()}/{_engine_serial}"

    def __dealloc__(self):
        self._close_all()
        zmq_msg_close(&self.rmsg)

    # ---- configuration, checks -------------------------------------------

    def _curve_setup(self, secret, str domain):
        """Make this instance's listeners CURVE servers with this secret key
        (Z85), under ZAP domain `domain`."""
        public = curve_public(secret)
        self._csec = secret.encode("ascii")
        self._cpub = public.encode("ascii")
        self._cserver = True
        self._zap_domain = domain.encode()
        return public

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
        if zmq_setsockopt(s, _ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof(int)) != 0:
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

    def _configure(self, int hwm, int linger_ms):
        if hwm < 0:
            raise ValueError(f"hwm must be >= 0, not {hwm}")
        self._hwm = hwm
        self._linger_ms = linger_ms

    cdef inline int _check(self) except -1:
        if self.closed:
            raise Error("this ZMQ instance is closed")
        if PyThread_get_thread_ident() != self.owner:
            raise Error("this ZMQ instance belongs to the thread that created it; "
                        "make one instance per thread")
        return 0

    def _check_usable(self):
        self._check()

    cdef ExchangeSlot *_exchange(self, Py_ssize_t eid) except NULL:
        if eid < 1 or eid > self.nex:
            raise ValueError(f"unknown exchange id {eid}")
        return &self.ex[eid - 1]

    cdef QueueSlot *_queue(self, Py_ssize_t qid) except NULL:
        if qid < 1 or qid > self.nq:
            raise ValueError(f"unknown queue id {qid}")
        return &self.qs[qid - 1]

    cdef void *_socket(self, int kind, int linger_ms, int hwm) except NULL:
        cdef void *s = zmq_socket(_context(), kind)
        if s == NULL:
            _raise_zmq("cannot create a socket")
        zmq_setsockopt(s, ZMQ_LINGER, &linger_ms, sizeof(int))
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(int))
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(int))
        # An idle connection to a host that vanished (no FIN) is dropped by
        # TCP keepalive after about 20 s (10 s idle, 5 probes 2 s apart);
        # connecting sides then reconnect on their own.  A link outage
        # shorter than that loses nothing; a longer one drops the connection
        # and what the kernels held for it.  Shorter (5 s) lost messages in
        # the rig's 8 s outage test.  Not ZMTP heartbeats: libzmq stops
        # reading a connection whose pipe is full, misses the heartbeat
        # replies and drops a healthy connection (libzmq #3937).
        cdef int on = 1, idle = 10, intvl = 2, cnt = 5
        zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE, &on, sizeof(int))
        zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE_IDLE, &idle, sizeof(int))
        zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE_INTVL, &intvl, sizeof(int))
        zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE_CNT, &cnt, sizeof(int))
        return s

    cdef int _rebuild_items(self) except -1:
        """Lay out the poll set: every queue socket, then every listener."""
        cdef int n = 0, i, j
        for i in range(self.nq):
            n += self.qs[i].nsock
        cdef int ninputs = n
        for i in range(self.nex):
            if self.ex[i].xpub != NULL:
                n += 1
        cdef zmq_pollitem_t *items = <zmq_pollitem_t *>realloc(
            self.items, (n + 1) * sizeof(zmq_pollitem_t))
        if items == NULL:
            raise MemoryError()
        self.items = items
        n = 0
        for i in range(self.nq):
            for j in range(self.qs[i].nsock):
                items[n].socket = self.qs[i].socks[j]
                items[n].fd = 0
                items[n].events = ZMQ_POLLIN
                n += 1
        for i in range(self.nex):
            if self.ex[i].xpub != NULL:
                items[n].socket = self.ex[i].xpub
                items[n].fd = 0
                items[n].events = ZMQ_POLLIN
                n += 1
        cdef pollfd *fds = <pollfd *>realloc(self.fds, (n + 1) * sizeof(pollfd))
        if fds == NULL:
            raise MemoryError()
        self.fds = fds
        cdef size_t fdlen
        for i in range(n):
            fdlen = sizeof(int)
            zmq_getsockopt(items[i].socket, ZMQ_FD, &fds[i].fd, &fdlen)
            fds[i].events = POLLIN
            fds[i].revents = 0
        self.nitems = n
        self.ninputs = ninputs
        self.rcvtimeo = -2          # unknown: set again before blocking
        self.single_qid = 0
        if ninputs == 1:
            for i in range(self.nq):
                if self.qs[i].nsock:
                    self.single_qid = i + 1
        return 0

    # ---- building exchanges and queues (called by pyzmq.wiring) -----------

    def _new_exchange(self, int style=0):
        self._check()
        if style not in (0, 1):
            raise ValueError(f"unknown exchange style {style}")
        cdef ExchangeSlot *p = <ExchangeSlot *>realloc(
            self.ex, (self.nex + 1) * sizeof(ExchangeSlot))
        if p == NULL:
            raise MemoryError()
        self.ex = p
        p = &self.ex[self.nex]
        p.xpub = NULL
        p.pushes = NULL
        p.npush = 0
        p.style = style
        p.next = 0
        p.sends = 0
        self.nex += 1
        return self.nex

    def _exchange_listen(self, Py_ssize_t eid, str endpoint):
        """Make exchange eid listen for remote binders at a TCP endpoint."""
        self._check()
        cdef ExchangeSlot *e = self._exchange(eid)
        if e.xpub != NULL:
            raise Error(f"exchange {eid} already listens")
        cdef void *s = self._socket(ZMQ_XPUB, self._linger_ms, self._hwm)
        cdef int one = 1
        zmq_setsockopt(s, ZMQ_XPUB_NODROP, &one, sizeof(int))
        try:
            self._curve_server_opts(s)
            endpoint = _bind(s, endpoint)
            # instances of this process bind through inproc instead of TCP
            _bind(s, self._exchange_inproc(eid))
        except BaseException:
            zmq_close(s)
            raise
        e.xpub = s
        self._rebuild_items()
        return endpoint

    def _exchange_inproc(self, Py_ssize_t eid):
        return f"{self.prefix}/x{eid}"

    def _exchange_unlisten(self, Py_ssize_t eid):
        """Undo _exchange_listen (its registration failed)."""
        cdef ExchangeSlot *e = self._exchange(eid)
        if e.xpub != NULL:
            zmq_close(e.xpub)
            e.xpub = NULL
            self.pending_syncs.pop(eid, None)
            self._rebuild_items()

    def _exchange_connect(self, Py_ssize_t eid, str endpoint, serverkey=None, int hwm=-1,
                          timeout=None):
        """Give exchange eid a new PUSH connected to a queue's endpoint.

        With serverkey the PUSH is a CURVE client of that key, and this waits
        (up to timeout seconds) for the handshake: a queue whose owner
        refuses this instance's key raises instead of swallowing every
        message.  On any failure the exchange is left as it was."""
        self._check()
        self._exchange(eid)
        cdef bint curve = bool(serverkey)
        cdef double deadline = _deadline(timeout) if curve else -1.0
        cdef void *s = self._socket(ZMQ_PUSH, self._linger_ms, hwm if hwm >= 0 else self._hwm)
        cdef ExchangeSlot *e
        try:
            self._curve_client_opts(s, serverkey)
            self._connect_push(s, endpoint, curve, deadline, "queue")
            # looked up again: Python code (a signal handler) may have run
            # while the handshake was awaited
            e = self._exchange(eid)
            _grow(&e.pushes, e.npush)
        except BaseException:
            _close_now(s)
            raise
        e.pushes[e.npush] = s
        e.npush += 1
        if self.sitems_cap < e.npush + 1:
            self._grow_sitems(e.npush + 1)
        return <size_t>s

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
            item.socket = mon
            item.fd = 0
            item.events = ZMQ_POLLIN
            item.revents = 0
            self._wait(&item, 1, deadline, 0.05)

    cdef int _grow_sitems(self, int n) except -1:
        n = n + self.nitems + 8
        cdef zmq_pollitem_t *p = <zmq_pollitem_t *>realloc(self.sitems, n * sizeof(zmq_pollitem_t))
        if p == NULL:
            raise MemoryError()
        self.sitems = p
        self.sitems_cap = n
        return 0

    def _new_queue(self, int hwm=-1):
        """A queue, with no socket yet: its PULL is made when something will
        push to it (a local exchange, or its global listener), and a queue fed
        only by remote exchanges has just their SUBs."""
        self._check()
        cdef QueueSlot *p = <QueueSlot *>realloc(self.qs, (self.nq + 1) * sizeof(QueueSlot))
        if p == NULL:
            raise MemoryError()
        self.qs = p
        p = &self.qs[self.nq]
        p.socks = NULL
        p.nsock = 0
        p.next = 0
        p.pull = NULL
        p.hwm = hwm if hwm >= 0 else self._hwm
        self.nq += 1
        return self.nq

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
        return f"{self.prefix}/q{qid}"

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
            zmq_unbind(q.pull, ep)

    def _queue_subscribe(self, Py_ssize_t qid, str endpoint, timeout, Engine owner=None,
                         serverkey=None, int hwm=-1):
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
            self._subscribe_and_sync(s, endpoint, qid, deadline, owner, bool(serverkey))
        except BaseException:
            zmq_close(s)
            raise
        cdef QueueSlot *q = &self.qs[qid - 1]
        _grow(&q.socks, q.nsock)
        q.socks[q.nsock] = s
        q.nsock += 1
        self._rebuild_items()
        return <size_t>s

    cdef int _subscribe_and_sync(self, void *s, str endpoint, Py_ssize_t qid,
                                 double deadline, Engine owner=None,
                                 bint curve=False) except -1:
        cdef void *mon = NULL
        cdef Py_ssize_t kept = self.stash.n
        if curve:
            # failures only: a handshake that succeeded is not the end of
            # the wait, the owner's sync answer is
            mon = _monitor(s, f"{self.prefix}/mon{_next_serial()}",
                           _HANDSHAKE_EVENTS & ~ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        try:
            return self._subscribe_and_sync_mon(s, endpoint, qid, deadline, owner, curve, mon)
        except BaseException:
            # the bind failed: what this SUB delivered meanwhile (everything
            # stashed since we started) belongs to no binding
            self.stash.truncate(kept)
            raise
        finally:
            if mon != NULL:
                _unmonitor(s, mon)

    cdef int _subscribe_and_sync_mon(self, void *s, str endpoint, Py_ssize_t qid,
                                     double deadline, Engine owner, bint curve,
                                     void *mon) except -1:
        cdef bytes topic = _SYNC_PREFIX + os.urandom(16)
        cdef bytes ep = endpoint.encode()
        cdef zmq_pollitem_t items[2]
        cdef Handshake h
        memset(&h, 0, sizeof(h))
        if zmq_connect(s, ep) != 0:
            _raise_zmq(f"cannot connect to {endpoint}")
        zmq_setsockopt(s, ZMQ_SUBSCRIBE, b"", 0)
        zmq_setsockopt(s, ZMQ_SUBSCRIBE, <char *>topic, len(topic))
        cdef zmq_msg_t msg
        cdef int rc, more
        cdef bytes first
        while True:
            # answer our own listeners' syncs too, and those of the
            # exchange's owner when it is another instance of this thread:
            # it cannot be inside a call of its own while we wait here
            self._service()
            if owner is not None and not owner.closed and owner.owner == self.owner:
                owner._service()
            items[0].socket = s
            items[0].fd = 0
            items[0].events = ZMQ_POLLIN
            items[0].revents = 0
            items[1].socket = mon
            items[1].fd = 0
            items[1].events = ZMQ_POLLIN
            items[1].revents = 0
            if self._wait(items, 2 if mon != NULL else 1, deadline, 0.05) == 0:
                if deadline >= 0 and _now() >= deadline:
                    if mon != NULL and _handshake_news(mon, &h):
                        _handshake_failed(&h, f"the exchange at {endpoint}")
                    if h.dropped:
                        raise Timeout(f"the exchange at {endpoint} did not confirm the "
                                      f"binding in time (its listener closed the connection "
                                      f"{h.dropped} times during the CURVE handshake: is "
                                      "the key in the directory its owner's?)")
                    raise Timeout(f"the exchange at {endpoint} did not confirm the "
                                  "binding in time (is its owner alive and "
                                  "calling receive() or send()?"
                                  + (" Does it allow this instance's CURVE key?"
                                     if curve else "") + ")")
                continue
            if mon != NULL and items[1].revents and _handshake_news(mon, &h):
                _handshake_failed(&h, f"the exchange at {endpoint}")
            while True:
                zmq_msg_init(&msg)
                rc = zmq_msg_recv(&msg, s, ZMQ_DONTWAIT)
                if rc < 0:
                    zmq_msg_close(&msg)
                    if zmq_errno() == EAGAIN:
                        break
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
                    zmq_setsockopt(s, ZMQ_UNSUBSCRIBE, <char *>topic, len(topic))
                    return 0

    # ---- the owner's duty: let binders in, answer their syncs -------------

    cdef int _service(self) except -1:
        """Read every listener's subscriptions; answer sync requests."""
        cdef int i, rc
        cdef zmq_msg_t msg
        cdef const char *data
        cdef size_t size, plen = len(_SYNC_PREFIX)
        for i in range(self.nex):
            if self.ex[i].xpub == NULL:
                continue
            self.ex[i].sends = 0
            while True:
                zmq_msg_init(&msg)
                rc = zmq_msg_recv(&msg, self.ex[i].xpub, ZMQ_DONTWAIT)
                if rc < 0:
                    zmq_msg_close(&msg)
                    break
                data = <const char *>zmq_msg_data(&msg)
                size = zmq_msg_size(&msg)
                if size > plen + 1 and data[0] == 1 and memcmp(data + 1, <char *>_SYNC_PREFIX, plen) == 0:
                    self.pending_syncs.setdefault(i + 1, []).append(
                        PyBytes_FromStringAndSize(data + 1, size - 1))
                zmq_msg_close(&msg)
        if self.pending_syncs:
            self._answer_syncs()
        if zw_outstanding:
            zw_collect()        # bytes lent to libzmq that it has finished sending
        self.recvs = 0
        self.serviced_at = _now()
        return 0

    cdef int _answer_syncs(self) except -1:
        cdef bytes topic
        cdef void *s
        for eid in list(self.pending_syncs):
            topics = self.pending_syncs[eid]
            s = self.ex[<int>eid - 1].xpub
            while topics:
                topic = topics[0]
                if zmq_send(s, <char *>topic, len(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0:
                    break   # a subscriber is full; try again on the next service
                zmq_send(s, b"", 0, ZMQ_DONTWAIT)
                topics.pop(0)
            if not topics:
                del self.pending_syncs[eid]
        return 0

    cdef double _follow_from(self) noexcept:
        """When a wait starting now should first look for moved peers (-1.0:
        never, the instance has no remote binding)."""
        return _now() + FOLLOW_FIRST if self.following else -1.0

    cdef double _follow(self, Py_ssize_t eid, double check_at) except -2.0:
        """If check_at has come, let the wiring layer re-point the bindings of
        exchange eid (0: of this instance's queues) whose peer moved; returns
        the next check time.  The hook may run any Python code, so the
        instance is checked again afterwards (closed: pyzmq.Error)."""
        if check_at <= 0 or _now() < check_at:
            return check_at
        self._follow_moved(eid)
        self._check()
        return _now() + FOLLOW_EVERY

    def _retarget(self, size_t handle, old_endpoint, str new_endpoint, serverkey=None):
        """Re-point a binding's connecting socket (a handle from
        _exchange_connect or _queue_subscribe) from the old endpoint to the
        new one, as a CURVE client of serverkey or a plain one: drop the old
        connection (and what was queued for it, which could not be delivered
        any more), then connect."""
        self._check()
        cdef void *s = <void *>handle
        cdef int i, j
        cdef bint ours = False
        for i in range(self.nex):
            for j in range(self.ex[i].npush):
                ours = ours or self.ex[i].pushes[j] == s
        for i in range(self.nq):
            for j in range(self.qs[i].nsock):
                ours = ours or self.qs[i].socks[j] == s
        if not ours or s == NULL:
            raise Error("not a binding socket of this instance", EINVAL)
        cdef bytes new_ep = new_endpoint.encode()
        cdef int zero = 0
        if old_endpoint is not None:    # None: a failed re-point left it unconnected
            zmq_disconnect(s, (<str>old_endpoint).encode())     # ENOENT: never connected, fine
        if serverkey:
            self._curve_client_opts(s, serverkey)
        else:                           # back to the NULL mechanism
            zmq_setsockopt(s, ZMQ_CURVE_SERVER, &zero, sizeof(int))
        if zmq_connect(s, new_ep) != 0:
            _raise_zmq(f"cannot connect to {new_endpoint}")

    def serve(self, timeout):
        """Let remote binders in for `timeout` seconds without sending or
        receiving: attaches them to this instance's global exchanges and
        confirms their bind().  (receive() and send() do this too while they
        wait; serve() is for an owner with nothing else to wait on.)"""
        self._check()
        if timeout is None:
            raise TypeError("serve() needs a timeout in seconds")
        cdef double deadline = _deadline(timeout)
        cdef int i, rc, ms
        cdef int nl = self.nitems - self.ninputs
        if nl == 0 and deadline < 0:
            raise Error("serve() would wait forever: this instance has no global exchange")
        while True:
            self._service()
            ms = <int>_ms_left(deadline)
            if ms == 0:
                return
            if nl == 0:
                __import__("time").sleep(ms / 1000.0)
                continue
            with nogil:
                rc = poll(self.fds + self.ninputs, nl, ms)
            if rc < 0:
                if errno != EINTR:
                    raise OSError(errno, "poll failed")
                self._signals()

    # ---- waiting ----------------------------------------------------------

    cdef int _signals(self) except -1:
        """After EINTR: run Python's signal handlers (KeyboardInterrupt and
        the like raise here), then check the instance again, since a handler
        may have closed it."""
        PyErr_CheckSignals()
        return self._check()

    cdef int _wait(self, zmq_pollitem_t *items, int n, double deadline,
                   double slice_s) except -1:
        """Poll with the GIL released until something is ready (returns >0)
        or the deadline passes (0).  Signals are checked on EINTR, so Ctrl-C
        raises KeyboardInterrupt here.  slice_s > 0 caps one poll's length."""
        cdef int rc, err
        cdef long ms, cap
        while True:
            ms = _ms_left(deadline)
            if slice_s > 0:
                cap = <long>(slice_s * 1000)
                if ms < 0 or ms > cap:
                    ms = cap
            with nogil:
                rc = zmq_poll(items, n, ms)
            if rc >= 0:
                return rc
            err = zmq_errno()
            if err != EINTR:
                _raise_errno("poll", err)
            self._signals()

    # ---- send -------------------------------------------------------------

    def send(self, object eid, msg, timeout=None, bint block=True):
        """Send msg (bytes or any contiguous buffer) on exchange eid.

        Fan-out: every queue bound to the exchange gets one copy; with no
        bound queue the message is dropped.  Blocks while a bound queue is
        at its high-water mark, up to timeout seconds (None: no limit),
        then raises pyzmq.Timeout.  With block=False returns False instead of
        waiting.  Returns True once sent.
        """
        self._check()
        _check_timeout(timeout)
        cdef ExchangeSlot *e = self._exchange(_id(eid, "exchange"))
        cdef const char *data
        cdef Py_ssize_t size
        cdef Py_buffer view
        cdef int rc
        cdef void *only
        if PyBytes_CheckExact(msg):
            data = PyBytes_AS_STRING(msg)
            size = PyBytes_GET_SIZE(msg)
            if size >= _ZERO_COPY_MIN:
                return self._send_lent(e, msg, data, size, timeout, block)
            # fast path: one socket, room in its pipe
            only = _only(e)
            if only == NULL and e.npush == 0:
                return True         # nothing bound: dropped, as documented
            if only != NULL and only == e.xpub:
                e.sends += 1
                if e.sends >= SERVICE_EVERY or _now() - self.serviced_at > SERVICE_AFTER:
                    self._service()
            if only != NULL:
                rc = zmq_send(only, data, size, ZMQ_DONTWAIT)
                if rc >= 0:
                    return True
                if zmq_errno() != EAGAIN:
                    _raise_zmq(f"send on exchange {eid}")
            return self._send_slow(e, data, size, timeout, block, NULL)
        _get_buffer(msg, &view)
        try:
            return self._send_slow(e, <const char *>view.buf, view.len, timeout, block, NULL)
        finally:
            PyBuffer_Release(&view)

    cdef object _send_lent(self, ExchangeSlot *e, object msg, const char *data,
                           Py_ssize_t size, object timeout, bint block):
        """Send a large bytes object without copying it."""
        zw_collect()
        cdef zmq_msg_t zm
        cdef zw_loan *loan = zw_lend(msg)
        if loan == NULL:
            raise MemoryError()
        if zmq_msg_init_data(&zm, <void *>data, size, zw_give_back, loan) != 0:
            zw_cancel(loan)
            _raise_zmq("cannot wrap the message")
        cdef void *only = _only(e)
        try:
            if only != NULL and _send_one(only, data, size, &zm, ZMQ_DONTWAIT) >= 0:
                return True
            return self._send_slow(e, data, size, timeout, block, &zm)
        finally:
            zmq_msg_close(&zm)   # drops our reference; libzmq keeps its copies

    cdef object _send_slow(self, ExchangeSlot *e, const char *data, Py_ssize_t size,
                           object timeout, bint block, zmq_msg_t *shared):
        """Every case but the one-socket fast path: several bound queues,
        load balancing, or waiting for room."""
        cdef double deadline = 0.0 if not block else _deadline(timeout)
        cdef int i, n, rc, ready
        cdef zmq_pollitem_t *it
        if e.npush == 0 and e.xpub == NULL:
            return True
        if self.sitems_cap < e.npush + self.nitems + 1:
            self._grow_sitems(e.npush + 1)
        if e.style == 1 and e.npush > 0:
            return self._send_balanced(e, data, size, deadline, shared)
        cdef Py_ssize_t eid = (e - self.ex) + 1
        cdef double check_at = 0.0 if self.following else -1.0    # 0.0: not started
        # Fan-out is all or nothing: wait until every PUSH has room, then send
        # to the listener (which waits for room itself), then to the PUSHes.
        while True:
            n = 0
            for i in range(e.npush):
                self.sitems[n].socket = e.pushes[i]
                self.sitems[n].fd = 0
                self.sitems[n].events = ZMQ_POLLOUT
                self.sitems[n].revents = 0
                n += 1
            if n == 0:
                break
            # can all of them take it now?
            ready = 0
            for i in range(n):
                if _can_send(self.sitems[i].socket):
                    ready += 1
            if ready == n:
                break
            if deadline == 0.0 or (deadline > 0 and _now() >= deadline):
                return self._would_block(block, eid)
            # wait, and keep the listeners served meanwhile
            n = self._add_listeners(n)
            if check_at == 0.0:
                check_at = self._follow_from()
            self._wait(self.sitems, n, _earlier(deadline, check_at), 0)
            self._service()
            check_at = self._follow(eid, check_at)
            e = &self.ex[eid - 1]
        if e.xpub != NULL:
            if not self._send_listener(e.xpub, data, size, deadline, shared):
                return self._would_block(block, eid)
        for i in range(e.npush):
            rc = _send_one(e.pushes[i], data, size, shared, ZMQ_DONTWAIT)
            if rc < 0:
                _raise_zmq("send")
        return True

    cdef object _would_block(self, bint block, Py_ssize_t eid):
        if not block:
            return False
        raise Timeout("send timed out: a bound queue stayed full (at its high-water "
                      "mark: a slow or stalled consumer, or one that is unreachable)"
                      + (self._follow_refusals(eid) if self.following else ""))

    def _follow_refusals(self, eid):
        """Why bindings of exchange eid (0: of this instance's queues) did not
        follow their name, for a Timeout's message ("" if none); the
        wiring layer overrides it."""
        return ""

    cdef int _add_listeners(self, int n) except -1:
        cdef int i
        for i in range(self.nex):
            if self.ex[i].xpub != NULL:
                self.sitems[n].socket = self.ex[i].xpub
                self.sitems[n].fd = 0
                self.sitems[n].events = ZMQ_POLLIN
                self.sitems[n].revents = 0
                n += 1
        return n

    cdef bint _send_listener(self, void *s, const char *data, Py_ssize_t size,
                             double deadline, zmq_msg_t *shared) except -1:
        """Send on an XPUB: NODROP makes it refuse while any subscriber is full,
        and libzmq reports no POLLOUT for XPUB, so wait in short sleeps of
        blocking sends, serving listeners in between."""
        cdef int rc, err, ms
        cdef long left
        rc = _send_one(s, data, size, shared, ZMQ_DONTWAIT)
        if rc >= 0:
            return True
        while True:
            err = zmq_errno()
            if err == EINTR:
                self._signals()
            elif err != EAGAIN:
                _raise_errno("send", err)
            left = _ms_left(deadline)
            if left == 0:
                return False
            ms = 100 if (left < 0 or left > 100) else <int>left
            zmq_setsockopt(s, ZMQ_SNDTIMEO, &ms, sizeof(int))
            with nogil:
                rc = _send_one(s, data, size, shared, 0)
            ms = -1
            zmq_setsockopt(s, ZMQ_SNDTIMEO, &ms, sizeof(int))
            if rc >= 0:
                return True
            self._service()

    cdef object _send_balanced(self, ExchangeSlot *e, const char *data, Py_ssize_t size,
                               double deadline, zmq_msg_t *shared):
        """Load balancing: the next bound queue, round-robin, that has room."""
        cdef int i, k, n
        cdef Py_ssize_t eid = (e - self.ex) + 1
        cdef double check_at = 0.0 if self.following else -1.0    # 0.0: not started
        while True:
            for k in range(e.npush):
                i = (e.next + k) % e.npush
                if _send_one(e.pushes[i], data, size, shared, ZMQ_DONTWAIT) >= 0:
                    e.next = (i + 1) % e.npush
                    return True
                if zmq_errno() != EAGAIN:
                    _raise_zmq("send")
            if deadline == 0.0 or (deadline > 0 and _now() >= deadline):
                return self._would_block(deadline != 0.0, eid)
            for i in range(e.npush):
                self.sitems[i].socket = e.pushes[i]
                self.sitems[i].fd = 0
                self.sitems[i].events = ZMQ_POLLOUT
                self.sitems[i].revents = 0
            n = self._add_listeners(e.npush)
            if check_at == 0.0:
                check_at = self._follow_from()
            self._wait(self.sitems, n, _earlier(deadline, check_at), 0)
            self._service()
            check_at = self._follow(eid, check_at)
            e = &self.ex[eid - 1]

    def send_many(self, object eid_obj, messages, timeout=None):
        """Send every message of an iterable on exchange eid, in order.

        The same as calling send() for each, without a Python call per
        message.  timeout bounds each wait for room; returns the count sent.
        """
        self._check()
        _check_timeout(timeout)
        cdef Py_ssize_t eid = _id(eid_obj, "exchange")
        cdef ExchangeSlot *e = self._exchange(eid)
        cdef void *only = _only(e)
        cdef Py_ssize_t n = 0
        cdef int rc
        if only == e.xpub:
            only = NULL             # the listener's sends go through send()
        for m in messages:
            if only != NULL and PyBytes_CheckExact(m) and PyBytes_GET_SIZE(m) < _ZERO_COPY_MIN:
                rc = zmq_send(only, PyBytes_AS_STRING(m), PyBytes_GET_SIZE(m), ZMQ_DONTWAIT)
                if rc >= 0:
                    n += 1
                    continue
                if zmq_errno() != EAGAIN:
                    _raise_zmq(f"send on exchange {eid}")
            Engine.send(self, eid, m, timeout)   # not a subclass's (async) send
            n += 1
        return n

    # ---- receive ----------------------------------------------------------

    cdef int _try_receive(self, zmq_msg_t *msg) except -2:
        """One non-blocking pass over the queues, fairly.  Returns the queue
        id of a message now in msg, or 0 when every queue is empty."""
        cdef int k, j, qi, si, rc, err
        cdef QueueSlot *q
        cdef int nq = self.nq
        for k in range(nq):
            qi = self.next_q + k
            if qi >= nq:
                qi -= nq
            q = &self.qs[qi]
            j = 0
            while j < q.nsock:
                si = q.next + j
                if si >= q.nsock:
                    si -= q.nsock
                rc = zmq_msg_recv(msg, q.socks[si], ZMQ_DONTWAIT)
                if rc < 0:
                    err = zmq_errno()
                    if err == EAGAIN:
                        j += 1
                        continue
                    _raise_errno("receive", err)
                if zmq_msg_more(msg):
                    # a sync answer meant for another binder, not data: drop
                    # it and look at the same socket again
                    _drop_rest(q.socks[si])
                    continue
                q.next = si + 1 if si + 1 < q.nsock else 0
                self.next_q = qi + 1 if qi + 1 < nq else 0
                return qi + 1
        return 0

    cdef int _receive_msg(self, zmq_msg_t *msg, double deadline) except -2:
        """Wait for a message on any queue; its queue id, or 0 on timeout."""
        cdef int qid
        cdef bint listeners = self.nitems > self.ninputs
        if listeners:
            self.recvs += 1
            if self.recvs >= SERVICE_EVERY or _now() - self.serviced_at > SERVICE_AFTER:
                self._service()
        qid = self._try_receive(msg)
        if qid or deadline == 0.0:
            return qid
        if self.ninputs == 0:
            return self._wait_unbound(deadline)
        if self.ninputs == 1 and not listeners:
            return self._wait_one(msg, deadline)
        cdef int i, rc
        cdef bint serve
        cdef double check_at = self._follow_from()
        while True:
            # every socket was just tried, so its pending commands were
            # processed: its fd turns readable only when something new comes
            rc = self._poll_fds(_earlier(deadline, check_at))
            check_at = self._follow(0, check_at)
            if listeners:
                serve = False
                for i in range(self.ninputs, self.nitems):
                    serve = serve or self.fds[i].revents != 0
                if serve:
                    self._service()
            qid = self._try_receive(msg)
            if qid:
                return qid
            if rc == 0 and deadline >= 0 and _now() >= deadline:
                return 0

    cdef int _poll_fds(self, double deadline) except -1:
        """poll() on the sockets' signalling fds with the GIL released;
        cheaper than zmq_poll, which asks every socket for its events
        before and after.  Signals are checked on EINTR."""
        cdef int rc, err, ms
        while True:
            ms = <int>_ms_left(deadline)
            with nogil:
                rc = poll(self.fds, self.nitems, ms)
            if rc >= 0:
                return rc
            err = errno
            if err != EINTR:
                raise OSError(err, "poll failed")
            self._signals()

    cdef int _wait_one(self, zmq_msg_t *msg, double deadline) except -2:
        """The only input socket, no listener to serve: block in zmq_msg_recv
        itself, which wakes sooner than a poll followed by a receive."""
        cdef void *s = self.items[0].socket
        cdef int rc, err, ms
        cdef double check_at = self._follow_from()
        while True:
            ms = <int>_ms_left(_earlier(deadline, check_at))
            if ms != self.rcvtimeo:
                zmq_setsockopt(s, ZMQ_RCVTIMEO, &ms, sizeof(int))
                self.rcvtimeo = ms
            with nogil:
                rc = zmq_msg_recv(msg, s, 0)
            if rc >= 0:
                if zmq_msg_more(msg):
                    _drop_rest(s)       # a sync answer for another binder
                    continue
                return self.single_qid
            err = zmq_errno()
            if err == EINTR:
                self._signals()
            elif err != EAGAIN:
                _raise_errno("receive", err)
            elif deadline >= 0 and _now() >= deadline:
                return 0
            else:
                check_at = self._follow(0, check_at)
                s = self.items[0].socket    # re-read: the hook ran Python code

    cdef int _wait_unbound(self, double deadline) except -2:
        """No queue has a socket yet: nothing can arrive before another call
        of this thread binds one."""
        if deadline < 0:
            if self.nq == 0:
                raise Error("receive() would wait forever: this instance has no queue")
            raise Error("receive() would wait forever: no queue of this instance "
                        "is bound or global")
        self.serve(max(0.0, deadline - _now()))     # binders may still come in
        return 0

    def receive(self, timeout=None, bint block=True, bint copy=True):
        """The next message from any of this instance's queues, as bytes.

        Fair across queues; order is kept per (exchange, queue) pair.  Waits
        up to timeout seconds (None: no limit) and raises pyzmq.Timeout;
        block=False returns None at once when nothing is there.  copy=False
        returns a Frame (a buffer backed by libzmq's message, no copy).
        """
        self._check()
        _check_timeout(timeout)
        cdef int qid, rc
        if self.stash.n:
            return self._from_stash(copy)[1]
        if copy and self.nitems == 1 and self.ninputs == 1:
            # fast path: one input socket, no listener to serve; the engine's
            # own message object is reused (zmq_msg_recv closes its old content)
            rc = zmq_msg_recv(&self.rmsg, self.items[0].socket, ZMQ_DONTWAIT)
            if rc >= 0 and not zmq_msg_more(&self.rmsg):
                return _copy(&self.rmsg)
            if rc >= 0:
                _drop_rest(self.items[0].socket)     # a sync answer, not data
            elif zmq_errno() != EAGAIN:
                _raise_zmq("receive")
            elif not block:
                return None
            else:
                # nothing there: wait in the socket itself, without trying
                # again first (each empty try costs libzmq a syscall)
                if self._wait_one(&self.rmsg, _deadline(timeout)) == 0:
                    return self._nothing(block, timeout)
                return _copy(&self.rmsg)
        if copy:
            m = _receive_copy(self, _deadline(timeout) if block else 0.0, &qid)
            return self._nothing(block, timeout) if m is None else m
        return self._receive_frame(timeout, block)

    cdef object _nothing(self, bint block, object timeout):
        if not block:
            return None
        raise Timeout(f"no message arrived within {timeout} s"
                      + (self._follow_refusals(0) if self.following else ""))

    cdef object _receive_frame(self, object timeout, bint block):
        cdef Frame f = Frame.__new__(Frame)
        cdef double deadline = _deadline(timeout) if block else 0.0
        cdef int qid = self._receive_msg(&f.msg, deadline)
        if qid == 0:
            return self._nothing(block, timeout)
        f.queue_id = qid
        return f

    cdef tuple _from_stash(self, bint copy):
        cdef tuple item = self.stash.pop()
        if copy:
            return item
        cdef Frame f = Frame.__new__(Frame)
        cdef bytes b = item[1]
        zmq_msg_close(&f.msg)
        zmq_msg_init_size(&f.msg, len(b))
        memcpy(zmq_msg_data(&f.msg), <char *>b, len(b))
        f.queue_id = item[0]
        return (item[0], f)

    def receive2(self, timeout=None, bint block=True, bint copy=True):
        """Like receive(), but returns (queue_id, message); None with
        block=False when nothing is there."""
        self._check()
        _check_timeout(timeout)
        cdef int qid
        if self.stash.n:
            return self._from_stash(copy)
        if not copy:
            f = self._receive_frame(timeout, block)
            return None if f is None else ((<Frame>f).queue_id, f)
        m = _receive_copy(self, _deadline(timeout) if block else 0.0, &qid)
        return self._nothing(block, timeout) if m is None else (qid, m)

    def receive_many(self, object max_count_obj, timeout=None):
        """Up to max_count messages: waits (up to timeout) for the first,
        then takes whatever else is already there.  Returns a list."""
        self._check()
        _check_timeout(timeout)
        cdef Py_ssize_t max_count
        try:
            max_count = max_count_obj
        except OverflowError:
            if max_count_obj < 0:
                raise ValueError(f"max_count must be >= 1, not {max_count_obj}") from None
            max_count = PY_SSIZE_T_MAX      # "up to": as many as there are
        if max_count < 1:
            raise ValueError(f"max_count must be >= 1, not {max_count}")
        cdef list out = []
        cdef int qid
        while self.stash.n and len(out) < max_count:
            out.append(self._from_stash(True)[1])
        if not out:
            m = _receive_copy(self, _deadline(timeout), &qid)
            if m is None:
                raise Timeout(f"no message arrived within {timeout} s"
                              + (self._follow_refusals(0) if self.following else ""))
            out.append(m)
        while len(out) < max_count and self._try_receive(&self.rmsg):
            out.append(_copy(&self.rmsg))
        _release_large(&self.rmsg)
        return out

    # ---- relays: binding two remote global objects --------------------------

    def _relay(self, str exchange_endpoint, str queue_endpoint, timeout, Engine owner=None,
               exchange_key=None, queue_key=None, int hwm=-1):
        """Bind a remote exchange to a remote queue through this process.

        A SUB on the exchange's listener (synced as in _queue_subscribe) and a
        PUSH to the queue, joined by _relay_loop in a thread of its own until
        this instance closes."""
        self._check()
        cdef double deadline = _deadline(timeout)
        cdef _Relay relay = _Relay()
        relay.n = len(self._relays)
        try:
            if hwm < 0:
                hwm = self._hwm
            relay.sub = self._socket(ZMQ_SUB, 0, hwm)
            relay.push = self._socket(ZMQ_PUSH, self._linger_ms, hwm)
            relay.ctl = self._socket(ZMQ_PAIR, 0, 0)
            relay.ctl_peer = self._socket(ZMQ_PAIR, 0, 0)
            # never reuse a name: a refused relay's endpoint may still be
            # bound until libzmq reaps its socket (EADDRINUSE for the next)
            ep = f"{self.prefix}/relay{_next_serial()}".encode()
            if zmq_bind(relay.ctl, ep) != 0 or zmq_connect(relay.ctl_peer, ep) != 0:
                _raise_zmq("cannot set up the relay's control pair")
            self._curve_client_opts(relay.push, queue_key)
            self._curve_client_opts(relay.sub, exchange_key)
            # the queue's side first: a refused PUSH would pass on nothing
            self._connect_push(relay.push, queue_endpoint, bool(queue_key), deadline, "queue")
            self._subscribe_and_sync(relay.sub, exchange_endpoint, 0, deadline, owner,
                                     bool(exchange_key))
        except BaseException:
            relay.close_sockets()
            raise
        # data that arrived while syncing was stashed under queue id 0: it
        # is the relay's, never receive()'s, even if passing it on fails
        cdef bytes m
        for m in self.stash.take(0):
            if _send_one(relay.push, <char *>m, len(m), NULL, ZMQ_DONTWAIT) < 0:
                relay.close_sockets()
                _raise_zmq("relay: cannot pass on what arrived while binding")
        relay.thread = threading.Thread(target=relay.run, daemon=True,
                                        name=f"pyzmq-wiring relay {exchange_endpoint} -> {queue_endpoint}")
        relay.thread.start()
        self._relays.append(relay)

    # ---- closing ----------------------------------------------------------

    def _close(self):
        """Close every socket (outgoing ones linger to deliver what is queued)."""
        if self.closed:
            return
        self._close_all()

    cdef void _close_all(self) noexcept:
        cdef int i, j
        if self.closed:
            return
        self.closed = True
        if self._relays:
            for relay in self._relays:
                (<_Relay>relay).stop()
            self._relays = []
        for i in range(self.nex):
            if self.ex[i].xpub != NULL:
                zmq_close(self.ex[i].xpub)
            for j in range(self.ex[i].npush):
                zmq_close(self.ex[i].pushes[j])
            free(self.ex[i].pushes)
        for i in range(self.nq):
            for j in range(self.qs[i].nsock):
                zmq_close(self.qs[i].socks[j])
            free(self.qs[i].socks)
        free(self.ex)
        free(self.qs)
        free(self.items)
        free(self.fds)
        self.fds = NULL
        free(self.sitems)
        self.ex = NULL
        self.qs = NULL
        self.items = NULL
        self.sitems = NULL
        self.nex = self.nq = self.nitems = self.ninputs = 0

    def _fds(self, object eid_obj=0):
        """The libzmq signalling fds an event loop should watch to wait for a
        receive (every queue socket and listener) or, with eid, for room to
        send on that exchange (its PUSHes and every listener).  An fd turns
        readable when its socket has news; a non-blocking call on that socket
        (or serve(0) for listeners) then takes the news in."""
        self._check()
        cdef Py_ssize_t eid = _id(eid_obj, "exchange") if eid_obj else 0
        cdef int first = self.ninputs if eid else 0
        cdef list out = [self.fds[i].fd for i in range(first, self.nitems)]
        cdef ExchangeSlot *e
        cdef int fd, i
        cdef size_t n
        if eid:
            e = self._exchange(eid)
            for i in range(e.npush):
                n = sizeof(int)
                zmq_getsockopt(e.pushes[i], ZMQ_FD, &fd, &n)
                out.append(fd)
        return out

    def _stashed(self):
        """(count the fast path sees, messages really kept) of the stash,
        for tests: always equal."""
        return self.stash.n, len(self.stash)

    def _counts(self):
        """(exchanges, queues, sockets per queue) for repr and tests."""
        return (self.nex, self.nq, [self.qs[i].nsock for i in range(self.nq)])


cdef inline object _receive_copy(Engine self, double deadline, int *qid):
    """The next message from any of self's queues, copied into bytes (its
    queue id in qid[0]); None when nothing came by the deadline (0.0: do not
    wait).  Received into the engine's reused message, as on the fast path.
    (A function, not a method: methods are called through the vtable and
    are never inlined.)"""
    qid[0] = self._receive_msg(&self.rmsg, deadline)
    if qid[0] == 0:
        return None
    cdef bytes b = _copy(&self.rmsg)
    _release_large(&self.rmsg)
    return b


cdef class _Relay:
    """A proxy thread forwarding one remote exchange to one remote queue."""
    cdef void *sub
    cdef void *push
    cdef void *ctl          # read by the proxy
    cdef void *ctl_peer     # written by the owner to stop it
    cdef int n
    cdef object thread

    def run(self):
        with nogil:
            _relay_loop(self.sub, self.push, self.ctl)

    cdef void stop(self) noexcept:
        if self.thread is not None:
            zmq_send(self.ctl_peer, b"STOP", 4, 0)
            self.thread.join(10)
            if self.thread.is_alive():
                # never close sockets under a thread still using them: leak
                # them instead (the loop only blocks in zmq_poll, which the
                # control message ends, so this is not expected)
                return
            self.thread = None
        self.close_sockets()

    cdef void close_sockets(self) noexcept:
        for s in (<size_t>self.sub, <size_t>self.push, <size_t>self.ctl, <size_t>self.ctl_peer):
            if s:
                zmq_close(<void *>s)
        self.sub = self.push = self.ctl = self.ctl_peer = NULL


cdef void _relay_loop(void *sub, void *push, void *ctl) noexcept nogil:
    """Pass single-frame messages from sub to push until ctl has a message.

    Not zmq_proxy_steerable: libzmq 4.3's proxy blocks in a send to a PUSH
    whose queue is full (its owner stopped or gone) and then never reads
    its control socket, so it could not be stopped.  Here every send is
    non-blocking: a message that does not fit waits, and the loop waits for
    room or for the stop message, whichever comes first.  Multi-frame
    messages (the exchange's answers to binders' syncs) are dropped, as
    every receiver drops them.
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


# --------------------------------------------------------------------------
# small helpers

cdef long _monitor_serial = 0


cdef long _next_serial():
    global _monitor_serial
    _monitor_serial += 1
    return _monitor_serial


cdef void *_monitor(void *s, str endpoint, int events) except NULL:
    """A PAIR receiving s's monitor events of the kinds in `events`.  Call it
    before s connects, so no event is missed."""
    cdef bytes ep = endpoint.encode()
    if zmq_socket_monitor(s, ep, events) != 0:
        _raise_zmq("cannot monitor a socket")
    cdef void *m = zmq_socket(_context(), ZMQ_PAIR)
    cdef int zero = 0
    if m == NULL:
        zmq_socket_monitor(s, NULL, 0)
        _raise_zmq("cannot create a monitor socket")
    zmq_setsockopt(m, ZMQ_LINGER, &zero, sizeof(int))
    if zmq_connect(m, ep) != 0:
        zmq_close(m)
        zmq_socket_monitor(s, NULL, 0)
        _raise_zmq("cannot connect a monitor socket")
    return m


cdef void _unmonitor(void *s, void *mon) noexcept:
    zmq_socket_monitor(s, NULL, 0)
    zmq_close(mon)


# What a CURVE client's monitor has told so far.
cdef struct Handshake:
    bint done           # a handshake succeeded: the link is up
    int refused         # ZAP status of an authentication failure (e.g. 400)
    unsigned int protocol   # ZMQ_PROTOCOL_ERROR_* of a failed handshake
    int dropped         # connections closed during the handshake (no detail)

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


cdef void _close_now(void *s) noexcept:
    """Close a socket that holds nothing worth delivering, without linger."""
    cdef int zero = 0
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(int))
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
    zmq_msg_copy(&m, shared)
    rc = zmq_msg_send(&m, s, flags)
    if rc < 0:
        zmq_msg_close(&m)
    return rc


cdef inline void *_only(ExchangeSlot *e) noexcept:
    """The one socket a message on exchange e goes to, when there is exactly
    one (a single PUSH, or only the listener); else NULL.  Load balancing
    over a single PUSH is the same as sending to it."""
    if e.xpub == NULL and e.npush == 1:
        return e.pushes[0]
    if e.npush == 0:
        return e.xpub
    return NULL


cdef inline bint _can_send(void *s) noexcept:
    cdef int events = 0
    cdef size_t n = sizeof(int)
    zmq_getsockopt(s, ZMQ_EVENTS, &events, &n)
    return (events & ZMQ_POLLOUT) != 0


cdef inline void _drop_rest(void *s) noexcept nogil:
    """Read and discard the remaining frames of a multi-frame message."""
    cdef zmq_msg_t m
    cdef int more = 1
    while more:
        zmq_msg_init(&m)
        if zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0:
            zmq_msg_close(&m)
            return
        more = zmq_msg_more(&m)
        zmq_msg_close(&m)
