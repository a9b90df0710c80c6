# Clocks and deadlines: monotonic seconds as C doubles, -1.0 for "never".
# (Included by _zmq.pyx: one extension module, one compilation unit.)


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


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


cdef inline long _ms_left(double deadline) noexcept nogil:
    if deadline < 0:
        return -1
    cdef double left = deadline - _now()
    if left <= 0:
        return 0
    if left > MAX_WAIT_S:
        return <long>(MAX_WAIT_S * 1000)   # callers loop until the deadline
    return <long>ceil(left * 1000.0)
