# The C-level declarations of pyzmq._zmq: its structs, enums and cdef
# classes, with every attribute and C method.  What the Python layer may
# call (def methods and functions) is listed in pyzmq/_zmq.pyi.

from libzmq cimport zmq_msg_t, zmq_pollitem_t
from posixpoll cimport pollfd
from service cimport sv_service
from relay cimport pzr

# Bytes objects at least this large are lent to libzmq instead of copied.
cdef enum:
    _ZERO_COPY_MIN = 65536
    # the largest message libzmq keeps inside its zmq_msg_t (a "very small
    # message", msg.hpp's max_vsm_size on 64-bit): a copy, not a reference
    _VSM_MAX = 33

# What _Core._wait polls when it is given no zmq_pollitem_t: the signalling
# fds of every queue socket, or of the listeners only.
cdef enum:
    FDS_INPUTS = -1
    FDS_LISTENERS = -2

# An exchange's style (pyzmq.STYLE_*).
cdef enum Style:
    DATA_DISTRIBUTION = 0       # every bound queue gets a copy
    LOAD_BALANCING = 1          # each message to one bound queue, round-robin


# Whether an instance still takes messages into its queues: shared with the
# PUSHes of other instances of this process that reach those queues through
# inproc (libzmq lets them send into the pipe of a closed PULL until their
# own thread happens to process the peer's termination: src/core.pyx,
# _Core._withdraw).  Read and written with the GIL held only.
cdef struct Liveness:
    int closing         # the instance's close() began: send nothing more to it
    int refs            # the instance, and each such PUSH, hold one

cdef struct ExchangeSlot:
    void *xpub          # listener for remote binders (global exchange), or NULL
    void **pushes       # one PUSH per queue this exchange connects to
    int npush
    Liveness **peers    # per PUSH: the owner's Liveness when it reaches the queue of
                        # another instance of this process through inproc, else NULL
    int npeers          # how many peers are not NULL (0: the send paths need not look)
    Style style
    int next            # load balancing: the push to try first
    int tag             # names its inproc endpoint: never reused, unlike a dropped slot
    unsigned long long msgs     # messages sent (each counted once, whatever the fan-out)
    unsigned long long nbytes   # their bytes
    unsigned long long dropped  # messages sent while nothing was bound
    double blocked_s    # seconds send() waited for room (a queue at its mark)

cdef struct QueueSlot:
    void *pull          # fed by PUSHes (local exchanges, remote binders), or NULL
    void **socks        # the PULL if any, and one SUB per remote exchange
    int nsock
    int next            # fairness: the socket to try first
    int hwm             # high-water mark of this queue's PULL and SUBs
    unsigned long long received # messages receive() and its kin handed out
    int tag             # names its inproc endpoint: never reused, unlike a dropped slot

# What a CURVE client's monitor has told so far.
cdef struct Handshake:
    bint done           # a handshake succeeded: the link is up
    int refused         # ZAP status of an authentication failure (e.g. 400)
    unsigned int protocol   # ZMQ_PROTOCOL_ERROR_* of a failed handshake
    int dropped         # connections closed during the handshake (no detail)


cdef class _Zap:
    cdef void *rep
    cdef void *ctl          # read by the thread: any message stops it
    cdef void *ctl_peer     # written by _zap_stop
    cdef object thread
    cdef dict policy        # domain (bytes) -> None (any key) or frozenset of 32-byte keys
    cdef long pid
    cdef int _answer(self) except -1
    cdef tuple _decide(self, list frames)


cdef class Frame:
    cdef zmq_msg_t msg
    cdef Py_ssize_t shape[1]
    cdef readonly Py_ssize_t queue_id


cdef class _Stash:
    cdef readonly Py_ssize_t n
    cdef object items
    cdef int push(self, Py_ssize_t qid, bytes m) except -1
    cdef tuple pop(self)
    cdef int truncate(self, Py_ssize_t n) except -1
    cdef list take(self, Py_ssize_t qid)


cdef class BindingHandle:
    cdef void *sock             # the binding's connecting socket; NULL once closed
    cdef readonly long engine   # serial of the engine it belongs to


cdef class _PendingBind:
    cdef void *s                # the binding's socket until it is complete or aborted
    cdef void *mon              # its CURVE monitor, or NULL
    cdef bytes topic            # a SUB's sync topic; None for a CURVE PUSH
    cdef Py_ssize_t id          # the queue (SUB) or exchange (PUSH) it joins
    cdef str what               # how errors name the remote object
    cdef str endpoint
    cdef bint curve
    cdef Handshake h
    cdef Py_ssize_t kept        # the stash's length when it started
    cdef double deadline
    cdef long engine            # serial of the engine it belongs to
    # a relay (both objects remote): its sockets, the queue side's monitor
    cdef object relay           # the _Relay, or None
    cdef void *pmon             # the PUSH's CURVE monitor, or NULL
    cdef Handshake ph
    cdef bint synced            # the SUB has its sync answer
    cdef str qwhat
    cdef str qendpoint
    cdef str label              # the relay's name in close()'s report


cdef class _Relay:
    cdef void *sub          # an XSUB (src/relay.h says why)
    cdef void *push
    cdef void *ctl          # read by the relay thread
    cdef void *ctl_peer     # written by the owner: DRAIN, STOP, DROP
    cdef pzr *r             # the thread's state (src/relay.h): its sockets once it runs
    cdef long n                     # serial in its control endpoint's name
    cdef long pid           # the process that made the sockets
    cdef object thread
    cdef list stashed       # what its SUB delivered while syncing: passed on first
    cdef readonly str label         # how close() names it: "'E' -> 'Q'"
    cdef readonly str qendpoint     # its queue's endpoint
    cdef int watch(self, bint queue_side, str prefix, int state) except -1
    cdef int set_topic(self, bytes topic) except -1
    cdef bint command(self, const char *cmd) noexcept
    cdef void stop(self, bint wait) noexcept
    cdef void close_sockets(self) noexcept
    cdef int load_stash(self) except -1
    cdef void free_stash(self) noexcept


# The sockets of one instance: slot tables, poll set, waits, lifecycle.
cdef class _Core:
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
    cdef int rcvtimeo               # RCVTIMEO last set on the only input socket
    cdef zmq_msg_t rmsg             # reused by receive()'s fast path
    cdef int single_qid             # the queue of the only input socket
    cdef readonly bint closed
    cdef unsigned long owner        # thread ident of the thread that made it
    cdef readonly long pid          # the process that made its sockets
    cdef readonly long serial       # unique per engine in this process
    cdef Py_ssize_t idbase          # serial << ID_SERIAL_SHIFT: ids are idbase (+ ID_QUEUE) + slot
    cdef int made                   # slots made so far (their tags)
    cdef int _hwm
    cdef int _linger_ms
    cdef _Stash stash               # messages read while a bind waited
    cdef sv_service *svc            # the listeners' service thread and lock (src/service.h), or NULL
    cdef str prefix                 # inproc endpoint prefix of this instance
    cdef list _relays               # running relays (both sides remote)
    cdef list _handles              # BindingHandle of every connecting socket
    cdef bytes _cpub                # CURVE keypair (Z85), or None: made when needed
    cdef bytes _csec
    cdef bint _cserver              # listeners are CURVE servers with that key
    cdef readonly bytes _zap_domain # their ZAP domain (pyzmq-wiring/<pid>/<n>), or None
    cdef public bint following      # the wiring layer has remote bindings to check
    cdef Liveness *live             # shared with in-process binders of its queues

    cdef inline int _check(self) except -1
    cdef ExchangeSlot *_exchange(self, Py_ssize_t eid) except NULL
    cdef QueueSlot *_queue(self, Py_ssize_t qid) except NULL
    cdef int _bad_id(self, Py_ssize_t oid, bint queue) except -1
    cdef void *_socket(self, int kind, int linger_ms, int hwm) except NULL
    cdef int _rebuild_items(self) except -1
    cdef int _grow_sitems(self, int n) except -1
    cdef int _signals(self) except -1
    cdef int _wait(self, zmq_pollitem_t *items, int n, double deadline,
                   double slice_s) except -1
    cdef void _close_all(self, bint wait) noexcept


# Binding: listen, connect, subscribe and sync, service, follow, retarget.
cdef class _Binder(_Core):
    cdef int _curve_server_opts(self, void *s) except -1
    cdef int _curve_client_opts(self, void *s, object serverkey) except -1
    cdef BindingHandle _handle(self, void *s)
    cdef int _ensure_service(self) except -1
    cdef int _watch_push(self, void *s, str endpoint, int state) except -1
    cdef int _connect_push(self, void *s, str endpoint, bint curve, double deadline,
                           str what) except -1
    cdef int _await_handshake(self, void *mon, str what, double deadline) except -1
    cdef void *_queue_pull(self, Py_ssize_t qid) except NULL
    cdef int _subscribe_and_sync(self, void *s, str endpoint, Py_ssize_t qid,
                                 double deadline, _Binder owner, bint curve,
                                 str what, bytes topic) except -1
    cdef int _subscribe_and_sync_mon(self, void *s, str endpoint, Py_ssize_t qid,
                                     double deadline, _Binder owner, bint curve,
                                     void *mon, str what, bytes topic) except -1
    cdef int _sync_read(self, void *s, bytes topic, Py_ssize_t qid, str endpoint) except -1
    cdef BindingHandle _attach_sub(self, Py_ssize_t qid, void *s)
    cdef BindingHandle _attach_push(self, Py_ssize_t eid, void *s, str endpoint)
    cdef int _set_peer(self, void *s, _Core owner) except -1
    cdef _Relay _relay_sockets(self, exchange_key, queue_key, int hwm)
    cdef int _relay_go(self, _Relay relay, str exchange_endpoint,
                       str queue_endpoint, str label) except -1
    cdef object _relay_step(self, _PendingBind p)
    cdef int _service(self) except -1
    cdef double _follow_from(self) noexcept
    cdef double _follow(self, Py_ssize_t eid, double check_at) except -2.0


# Sending and receiving: the hot paths and their batch forms.
cdef class Engine(_Binder):
    cdef double _listener_waited    # set by _send_listener: seconds it waited
    cdef bint _rwaited              # receive()'s last call on one socket had to wait
    cdef object _send_lent(self, ExchangeSlot *e, object msg, const char *data,
                           Py_ssize_t size, object timeout, bint block)
    cdef object _send_shared(self, ExchangeSlot *e, zmq_msg_t *zm, const char *data,
                             Py_ssize_t size, object timeout, bint block)
    cdef object _send_slow(self, ExchangeSlot *e, const char *data, Py_ssize_t size,
                           object timeout, bint block, zmq_msg_t *shared)
    cdef object _would_block(self, bint block, Py_ssize_t eid)
    cdef double _wait_room(self, Py_ssize_t eid, int n, double deadline,
                           double check_at) except -2.0
    cdef int _add_listeners(self, int n) except -1
    cdef bint _send_listener(self, void *s, const char *data, Py_ssize_t size,
                             double deadline, zmq_msg_t *shared) except -1
    cdef int _send_xpub(self, void *s, const char *data, Py_ssize_t size,
                        zmq_msg_t *shared, int flags) noexcept
    cdef object _send_balanced(self, ExchangeSlot *e, const char *data, Py_ssize_t size,
                               double deadline, zmq_msg_t *shared)
    cdef int _try_receive(self, zmq_msg_t *msg) except -2
    cdef int _receive_msg(self, zmq_msg_t *msg, double deadline) except -2
    cdef int _wait_one(self, zmq_msg_t *msg, double deadline) except -2
    cdef int _wait_unbound(self, double deadline) except -2
    cdef object _nothing(self, bint block, object timeout)
    cdef object _receive_frame(self, object timeout, bint block)
    cdef tuple _from_stash(self, bint copy)
