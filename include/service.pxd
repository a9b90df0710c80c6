# Declarations of src/service.h: the engine's service thread, which lets
# remote binders in while the owner thread does anything at all, and the
# mutex the owner holds whenever it uses a listener; and its watches of
# outgoing TCP PUSHes (whether each one's consumer is connected).

from libzmq cimport zmq_msg_t

cdef extern from "service.h" nogil:
    ctypedef struct sv_service:
        pass
    enum:
        SV_SEND_SLICE_MS
        SV_NEW
        SV_UP
        SV_DOWN
        SV_WATCH_EVENTS
    int sv_new(sv_service **out, const char *prefix, size_t plen)
    int sv_add(sv_service *sv, void *xpub, int fd)
    void sv_remove(sv_service *sv, void *xpub)
    void sv_release(sv_service *sv)
    void sv_lock(sv_service *sv)
    void sv_unlock(sv_service *sv)
    void sv_touch_locked(sv_service *sv)
    int sv_serve_locked(sv_service *sv)
    int sv_npending(sv_service *sv)
    int sv_send(sv_service *sv, void *s, const void *data, size_t size, int flags,
                int *binders)
    int sv_subscribers(sv_service *sv, void *xpub)
    int sv_msg_send(sv_service *sv, zmq_msg_t *m, void *s, int flags)
    int sv_watch_add(sv_service *sv, void *sock, void *mon, int fd, int state)
    int sv_watch_remove(sv_service *sv, void *sock)
    int sv_watch_state(sv_service *sv, void *sock, int *ups)
    int sv_watch_reset(sv_service *sv, void *sock, const char *old, const char *new_)
