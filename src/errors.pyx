# Errors: the one place libzmq failures become Python exceptions
# (pyzmq.Error with the errno), for every return code the C core checks.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

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

