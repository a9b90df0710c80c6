# cython: language_level=3
"""The C core of pyzmq-wiring: exchanges and queues as libzmq sockets.

This module knows sockets, not names.  ``pyzmq.wiring`` turns names, scopes,
locations and the directory into calls of the ``_``-prefixed methods of
``Engine``; ``send``/``receive`` and their batch forms are the hot path and
stay in C.  What the Python layer may call is declared in
``pyzmq/_zmq.pyi``; the C-level structs and classes in ``src/_zmq.pxd``.

One extension module and one compilation unit: this file only includes the
others, one concern each (see docs/design.md, "The files").

Socket map (see docs/design.md):

* a queue is one PULL socket bound to an inproc endpoint (and, for a global
  queue, to its TCP location), plus one SUB socket per remote global exchange
  bound to it;
* an exchange is one PUSH socket per queue it connects to, plus, for a global
  exchange, one XPUB socket listening at its location for remote binders.
"""

cimport cython
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset
from libc.math cimport ceil, INFINITY
from cpython.pyport cimport PY_SSIZE_T_MAX
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.bytes cimport (PyBytes_FromStringAndSize, PyBytes_AS_STRING,
                            PyBytes_GET_SIZE, PyBytes_CheckExact)
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_ANY_CONTIGUOUS,
                             PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND)
from cpython.exc cimport PyErr_CheckSignals
from cpython.float cimport PyFloat_CheckExact, PyFloat_AS_DOUBLE
from cpython.number cimport PyIndex_Check
from cpython.pythread cimport PyThread_get_thread_ident

from libzmq cimport *
from posixpoll cimport pollfd, poll, POLLIN, errno, EACCES, EMFILE, ENOMEM, EPROTO
from service cimport *
from relay cimport *
from zerocopy cimport zw_loan, zw_give_back, zw_lend, zw_cancel, zw_collect, zw_outstanding

import collections
import os
import threading
import warnings

from pyzmq.errors import Error, Timeout

# Two-frame messages are never data: data is always one frame.  A binder asks
# the owner of a global exchange to prove its subscription is live by
# subscribing to SYNC_PREFIX + nonce; the owner answers with the two frames
# [topic, b""], which every receiver recognises by their shape and drops.
SYNC_PREFIX = b"\xffpyzmq-wiring-sync:"
cdef bytes _SYNC_PREFIX = SYNC_PREFIX

# Bytes objects at least this large are lent to libzmq instead of copied
# (_ZERO_COPY_MIN, a compile-time constant in _zmq.pxd, so the send paths
# compare with an immediate); ZERO_COPY_MIN only reports it.
ZERO_COPY_MIN = _ZERO_COPY_MIN

DEF MAX_WAIT_S = 86400.0        # one wait at most; longer timeouts loop
# receive() on one socket: a blocking call back within this long did not
# wait (the message was there), so the next one tries without blocking first
DEF RECV_WAITED_S = 2e-6
# A send or receive that has waited FOLLOW_FIRST seconds asks the wiring
# layer whether a remote peer it is bound to moved to another address, and
# then every FOLLOW_EVERY seconds while it waits.  The wiring layer does no
# I/O there: the directory's background thread looks names up.
DEF FOLLOW_FIRST_S = 1.0
DEF FOLLOW_EVERY_S = 0.25
FOLLOW_FIRST = FOLLOW_FIRST_S
# A wait for binders (wait_bound) looks at the binder counts at least this
# often: the listeners' fds are the service thread's, which takes their
# news in (and the count with it) before the waiting thread may see the fd
# readable, so the fd alone can miss a binder.  The asyncio waits on a
# listener look as often (BOUND_LOOK; a waiting send every 5 ms).
DEF BOUND_LOOK_S = 0.02
BOUND_LOOK = BOUND_LOOK_S
FOLLOW_EVERY = FOLLOW_EVERY_S

include "errors.pyx"        # libzmq failures -> pyzmq.Error
include "checks.pyx"        # argument validation, shared with the Python layer
include "clock.pyx"         # monotonic time, deadlines
include "context.pyx"       # the process-wide context
include "sockets.pyx"       # checked socket options, bind, send one copy, poll items
include "curve.pyx"         # CURVE keys, Z85, the ZAP handler
include "frame.pyx"         # received messages (copies, Frame)
include "monitor.pyx"       # socket monitors, CURVE handshake outcomes
include "stash.pyx"         # messages read while a bind waited
include "core.pyx"          # _Core: slot tables, poll set, waits, lifecycle
include "binding.pyx"       # _Binder: listen, connect, subscribe and sync, service, follow
include "engine.pyx"        # Engine: send and receive, batch forms, serve
include "relay.pyx"         # _Relay: binding two remote global objects
include "drain.pyx"         # close(): waiting until queued messages left; wait_bound
include "stats.pyx"         # ZMQ.stats(): reading the slots' counters
