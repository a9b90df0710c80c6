"""pyzmq-wiring: the ØMQ 0.3 wiring API over libzmq 4.3.

    import pyzmq
    with pyzmq.ZMQ("localhost") as zmq:           # a running zmq_server
        eid = zmq.create_exchange("E", pyzmq.SCOPE_GLOBAL, "127.0.0.1:5555")
        zmq.create_queue("Q", pyzmq.SCOPE_LOCAL)
        zmq.bind("E", "Q")
        zmq.send(eid, b"hello")
        assert zmq.receive() == b"hello"
"""

from pyzmq.errors import Error, Timeout
from pyzmq._zmq import Frame, libzmq_version as zmq_version
from pyzmq.wiring import (ZMQ, SCOPE_LOCAL, SCOPE_GLOBAL,
                          STYLE_DATA_DISTRIBUTION, STYLE_LOAD_BALANCING,
                          FOLLOW_SAME_KEY, FOLLOW_ANY_KEY, FOLLOW_ANY, FOLLOW_NEVER)
from pyzmq.curve import curve_keypair, curve_public
from pyzmq.directory import DirectoryError

__version__ = "0.1.0"

__all__ = ["ZMQ", "Error", "Timeout", "DirectoryError", "Frame", "SCOPE_LOCAL", "SCOPE_GLOBAL",
           "STYLE_DATA_DISTRIBUTION", "STYLE_LOAD_BALANCING", "zmq_version",
           "FOLLOW_SAME_KEY", "FOLLOW_ANY_KEY", "FOLLOW_ANY", "FOLLOW_NEVER",
           "curve_keypair", "curve_public",
           "__version__"]
