"""CURVE keys for pyzmq-wiring (see docs/security.md).

    public, secret = pyzmq.curve_keypair()
    zmq = pyzmq.ZMQ("localhost", secret_key=secret, allowed_keys=[...])
"""

from pyzmq import _zmq


def curve_keypair():
    """A new CURVE keypair ``(public, secret)``, each 40 Z85 characters."""
    return _zmq.curve_keypair()


def curve_public(secret):
    """The public key (Z85) of a secret key (Z85); ValueError if it is not one."""
    return _zmq.curve_public(secret)


def check_key(key, what="key"):
    """Return key if it is a str of 40 Z85 characters, else raise ValueError."""
    return _zmq._check_z85_key(key, what)
