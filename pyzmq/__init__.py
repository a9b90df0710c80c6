"""pyzmq-wiring: the ØMQ 0.3 wiring API over libzmq 4.3.

    import pyzmq
    with pyzmq.Directory() as directory:          # a zmq_server child process
        with pyzmq.ZMQ(directory.address) as zmq:
            eid = zmq.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
            zmq.create_queue("Q", pyzmq.SCOPE_LOCAL)
            zmq.bind("E", "Q")
            zmq.send(eid, b"hello")
            assert zmq.receive() == b"hello"

With a zmq_server already running elsewhere: ``pyzmq.ZMQ("host[:port]")``.
"""

from pyzmq.errors import Error, Timeout
from pyzmq._zmq import Frame, libzmq_version as zmq_version
from pyzmq.wiring import (ZMQ, SCOPE_LOCAL, SCOPE_GLOBAL,
                          STYLE_DATA_DISTRIBUTION, STYLE_LOAD_BALANCING,
                          FOLLOW_SAME_KEY, FOLLOW_ANY_KEY, FOLLOW_ANY, FOLLOW_NEVER)
from pyzmq.curve import curve_keypair, curve_public, load_key
from pyzmq.directory import DirectoryError, DirectoryUnreachable
from pyzmq.embedded import Directory

__version__ = "0.1.0"

__all__ = ["ZMQ", "Directory", "Error", "Timeout", "DirectoryError", "DirectoryUnreachable",
           "Frame", "SCOPE_LOCAL", "SCOPE_GLOBAL",
           "STYLE_DATA_DISTRIBUTION", "STYLE_LOAD_BALANCING", "zmq_version",
           "FOLLOW_SAME_KEY", "FOLLOW_ANY_KEY", "FOLLOW_ANY", "FOLLOW_NEVER",
           "curve_keypair", "curve_public", "load_key",
           "__version__"]
