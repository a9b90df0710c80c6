# Declarations of the parts of libzmq 4.3 (zmq.h) that pyzmq-wiring uses.
# One extern block, all nogil: every call may be made with the GIL released.

cdef extern from "zmq.h" nogil:
    # error numbers libzmq adds to errno
    enum:
        EAGAIN
        EINTR
        EINVAL
        ENOENT

    # socket types
    enum:
        ZMQ_SUB
        ZMQ_PUSH
        ZMQ_PULL
        ZMQ_XPUB
        ZMQ_XSUB
        ZMQ_PAIR
        ZMQ_REQ
        ZMQ_REP

    # socket options
    enum:
        ZMQ_LINGER
        ZMQ_SNDHWM
        ZMQ_RCVHWM
        ZMQ_SUBSCRIBE
        ZMQ_UNSUBSCRIBE
        ZMQ_SNDTIMEO
        ZMQ_RCVTIMEO
        ZMQ_LAST_ENDPOINT
        ZMQ_TYPE
        ZMQ_XPUB_NODROP
        ZMQ_EVENTS
        ZMQ_FD
        ZMQ_TCP_KEEPALIVE
        ZMQ_TCP_KEEPALIVE_IDLE
        ZMQ_TCP_KEEPALIVE_INTVL
        ZMQ_TCP_KEEPALIVE_CNT
        ZMQ_CURVE_SERVER
        ZMQ_CURVE_PUBLICKEY
        ZMQ_CURVE_SECRETKEY
        ZMQ_CURVE_SERVERKEY
        ZMQ_ZAP_DOMAIN

    # context options
    enum:
        ZMQ_MAX_SOCKETS
        ZMQ_SOCKET_LIMIT

# accepted by libzmq 4.3.4 although zmq.h defines it only among the draft
# options: without it a CURVE server whose ZAP handler is gone admits any key
cdef enum:
    ZMQ_ZAP_ENFORCE_DOMAIN = 93

cdef extern from "zmq.h" nogil:

    # send/recv flags and poll events
    enum:
        ZMQ_DONTWAIT
        ZMQ_SNDMORE
        ZMQ_POLLIN
        ZMQ_POLLOUT

    # socket monitor events, and the protocol error a binder explains
    enum:
        ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
        ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
        ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH

    int zmq_errno()
    const char *zmq_strerror(int errnum)
    void zmq_version(int *major, int *minor, int *patch)
    int zmq_has(const char *capability)

    void *zmq_ctx_new()
    int zmq_ctx_set(void *context, int option, int optval)
    int zmq_ctx_get(void *context, int option)
    int zmq_ctx_term(void *context)

    ctypedef struct zmq_msg_t:
        unsigned char _[64]     # opaque; zmq.h has the real layout
    ctypedef void zmq_free_fn(void *data, void *hint)

    int zmq_msg_init(zmq_msg_t *msg)
    int zmq_msg_init_size(zmq_msg_t *msg, size_t size)
    int zmq_msg_init_data(zmq_msg_t *msg, void *data, size_t size,
                          zmq_free_fn *ffn, void *hint)
    int zmq_msg_send(zmq_msg_t *msg, void *s, int flags)
    int zmq_msg_recv(zmq_msg_t *msg, void *s, int flags)
    int zmq_msg_close(zmq_msg_t *msg)
    int zmq_msg_copy(zmq_msg_t *dest, zmq_msg_t *src)
    void *zmq_msg_data(zmq_msg_t *msg)
    size_t zmq_msg_size(const zmq_msg_t *msg)
    int zmq_msg_more(const zmq_msg_t *msg)
    # a message property, such as the User-Id the ZAP handler set
    const char *zmq_msg_gets(const zmq_msg_t *msg, const char *property)

    void *zmq_socket(void *context, int type)
    int zmq_close(void *s)
    int zmq_setsockopt(void *s, int option, const void *optval, size_t optvallen)
    int zmq_getsockopt(void *s, int option, void *optval, size_t *optvallen)
    int zmq_bind(void *s, const char *addr)
    int zmq_connect(void *s, const char *addr)
    int zmq_unbind(void *s, const char *addr)
    int zmq_disconnect(void *s, const char *addr)
    int zmq_send(void *s, const void *buf, size_t len, int flags)

    ctypedef struct zmq_pollitem_t:
        void *socket
        int fd
        short events
        short revents
    int zmq_poll(zmq_pollitem_t *items, int nitems, long timeout)

    int zmq_socket_monitor(void *s, const char *addr, int events)


    int zmq_curve_keypair(char *z85_public_key, char *z85_secret_key)
    int zmq_curve_public(char *z85_public_key, const char *z85_secret_key)
    unsigned char *zmq_z85_decode(unsigned char *dest, const char *string)
    char *zmq_z85_encode(char *dest, const unsigned char *data, size_t size)
