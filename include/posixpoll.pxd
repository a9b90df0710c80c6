# Declarations of the POSIX calls the C core makes beside libzmq: poll() on
# libzmq's signalling fds, and errno for its failures.

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN

cdef extern from "errno.h" nogil:
    int errno
    enum:
        EACCES
        EMFILE
        ENOMEM
        EPROTO
