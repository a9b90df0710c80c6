# Declarations of src/relay.h: a relay's thread (plain C, no GIL), the
# ints it publishes for its owner, and the close marker both it and
# close() (src/drain.pyx) queue.

from libzmq cimport zmq_msg_t

cdef extern from "relay.h" nogil:
    ctypedef struct sv_watch:
        void *sock
        void *mon
        int fd
        int state
        int ups
    ctypedef struct pzr:
        void *sub
        void *push
        void *ctl
        sv_watch pw
        sv_watch sw
        zmq_msg_t *stash
        int nstash
        char sync_topic[64]
        size_t sync_len
        char end_topic[64]
        size_t end_len
        int phase
        int pstate
        int pups
        int blocked
        int ended
        long long fwd
        long long lost
    enum:
        PZW_MARKER_SIZE
        PZR_RUN
        PZR_DRAIN
        PZR_MARK
        PZR_MARKED
        PZR_LEFT
    char pzw_marker_data[65536]
    void pzw_marker_free(void *data, void *hint)
    int pzw_marker_done(int *flag)
    int pzr_get(int *p)
    long long pzr_get64(long long *p)
    void pzr_run(pzr *r)
