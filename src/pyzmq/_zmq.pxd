# Cython looks up the declarations of the module it compiles by the
# module's full name, pyzmq._zmq: as pyzmq/_zmq.pxd under an include
# directory (here src/, a PEP 420 namespace directory: no __init__, since
# nothing is imported from it).  They live in src/_zmq.pxd, beside
# src/_zmq.pyx, where cythonize sees them as the .pyx's own declarations
# and rebuilds when they change; this file only includes them.  A Cython
# user cimports the same way: `from pyzmq._zmq cimport Engine`, with
# include/ and src/ on its include path.
include "../_zmq.pxd"
