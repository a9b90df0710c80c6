# Cython finds the declarations of the module pyzmq._zmq under this dotted
# name; they live in _zmq.pxd, beside _zmq.pyx.
include "_zmq.pxd"
