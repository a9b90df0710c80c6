# Declarations of src/zerocopy.h: the lock-free hand-back of bytes objects
# lent to libzmq for zero-copy sends.

cdef extern from "zerocopy.h":
    ctypedef struct zw_loan:
        pass
    void zw_give_back(void *data, void *hint) nogil
    zw_loan *zw_lend(object obj)
    void zw_cancel(zw_loan *loan)
    long zw_collect()
    long zw_outstanding
