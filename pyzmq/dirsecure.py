"""CURVE on the directory connection: the handshake and the sealed frames.

With a secret key, ``zmq_server`` proves to every client that it holds the
key behind the public key the client was given (``directory_key``), each
client proves which key it holds, and every frame after the handshake is
encrypted and authenticated, numbered so that nothing can be replayed,
reordered or dropped unnoticed.  The primitives are libsodium's boxes (the
ones libzmq's CURVE uses), wrapped in ``pyzmq._box``; the message layout is
in docs/directory.md ("Secure connections").

This module is pure, like :mod:`pyzmq.protocol`: the two handshake objects
turn received bodies into bodies to send, and :class:`Channel` seals and
opens frames.  Failures raise :class:`protocol.ProtocolError` with code
``AUTH`` (or ``BAD_HELLO`` for a HELLO that does not parse).

The handshake, with ``S``/``s`` the server's long-term public/secret key,
``C``/``c`` the client's, ``S'``/``C'`` one-connection keys made for it, and
``Box[x](A->B)`` a box only the holders of ``a, B`` or ``b, A`` can make or
open::

    client                                        server
    CURVE_HELLO  C', Box[64 zero bytes](C'->S)    proves the client knows S
                 WELCOME  Box[S'](S->C')          only the holder of s makes it
    INITIATE     Box[C, vouch](C'->S'),
                 vouch = Box[C', S](C->S')        only the holder of c vouches
                 READY  Box[](S'->C')             the server accepted C
    BOX (both ways)  Box[body](C'<->S')           numbered 1, 2, 3, ...

The vouch is boxed to S', not S: a box to S could be made by the holder
of s as well as of c, so a stolen server key would let its thief pose as
any client.  Keys made for one connection are dropped after it (Python
cannot wipe a bytes object, so they stay in freed memory until reused), so
a recording of a session cannot be opened later even with both long-term
secret keys.
"""

import os
import struct

from pyzmq import _box, _zmq
from pyzmq import protocol as p

KEY = _box.KEY_BYTES        # 32
MAC = _box.MAC_BYTES        # 16
_HELLO_PAD = 64             # zero bytes boxed in CURVE_HELLO
_COUNTER = struct.Struct(">Q")


def _label(text):
    raw = text.encode("ascii")
    assert len(raw) <= 16
    return raw.ljust(16, b"-")


# The first 16 bytes of each kind of nonce; the last 8 are sent with the box
# (a counter, or random bytes where a key is used once).  Distinct labels
# keep a box of one kind from being passed off as another, and a frame sent
# one way from being reflected back.
_N_HELLO = _label("pzwdir-hello")
_N_WELCOME = _label("pzwdir-welcome")
_N_INITIATE = _label("pzwdir-initiate")
_N_VOUCH = _label("pzwdir-vouch")
_N_READY = _label("pzwdir-ready")
_N_TO_SERVER = _label("pzwdir-c2s")
_N_TO_CLIENT = _label("pzwdir-s2c")


def decode_key(key, what):
    """Z85 key (40 characters) -> 32 bytes; TypeError/ValueError naming ``what`` if it is not one."""
    if isinstance(key, str):
        key = key.strip()       # a key read from a file ends in a newline
    return _zmq._z85_decode(_zmq._check_z85_key(key, what))


def encode_key(raw):
    """32-byte key -> its 40 Z85 characters."""
    return _zmq._z85_encode(bytes(raw))


def keypair():
    """A new 32-byte keypair ``(public, secret)``."""
    return _box.keypair()


def public_of(secret):
    """The 32-byte public key of a 32-byte secret key."""
    return _box.public_of(secret)


def _auth(message):
    return p.ProtocolError(p.AUTH, message)


class Refused(p.ProtocolError):
    """A client that proved its key, but whose key is not allowed; ``key`` is it (32 bytes)."""

    def __init__(self, message, key):
        super().__init__(p.AUTH, message)
        self.key = key


def _fields(body, sizes, what):
    """Split ``body`` (command byte first) into fields of the given sizes."""
    if len(body) != 1 + sum(sizes):
        raise _auth(f"{what} is {len(body)} bytes long, not {1 + sum(sizes)}")
    out, pos = [], 1
    for n in sizes:
        out.append(bytes(body[pos:pos + n]))
        pos += n
    return out


class Channel:
    """Seals outgoing and opens incoming frame bodies of one secure connection."""

    def __init__(self, key, send_label, recv_label, send_command, recv_command):
        self._key = key
        self._send_label = send_label
        self._recv_label = recv_label
        self._send_command = send_command
        self._recv_command = recv_command
        self._sent = 0
        self._received = 0
        self.overhead = 1 + _COUNTER.size + MAC

    def seal(self, body):
        """The BOX body that carries ``body`` (a plain request or reply body)."""
        self._sent += 1
        counter = _COUNTER.pack(self._sent)
        return bytes([self._send_command]) + counter + _box.seal(self._key, self._send_label + counter,
                                                                 bytes(body))

    def open(self, body):
        """The plain body inside a BOX body; ProtocolError(AUTH) if it is not the next genuine one."""
        if not body or body[0] != self._recv_command:
            got = f"command 0x{body[0]:02x}" if body else "an empty body"
            raise _auth(f"{got} where an encrypted frame (0x{self._recv_command:02x}) was due")
        if len(body) < 1 + _COUNTER.size + MAC + 1:
            raise _auth("an encrypted frame too short to hold a message")
        counter = bytes(body[1:1 + _COUNTER.size])
        (number,) = _COUNTER.unpack(counter)
        if number != self._received + 1:
            raise _auth(f"encrypted frame number {number} where {self._received + 1} was due "
                        "(replayed, reordered or lost)")
        plain = _box.unseal(self._key, self._recv_label + counter, bytes(body[1 + _COUNTER.size:]))
        if plain is None:
            raise _auth("an encrypted frame does not open (changed on the way, or the wrong key)")
        self._received = number
        return plain


class ClientHandshake:
    """The client's side: knows the server's public key, holds its own secret key."""

    def __init__(self, server_public, client_secret):
        self._server = server_public
        self._secret = client_secret
        self._public = _box.public_of(client_secret)
        self.public_key = encode_key(self._public)
        self._eph_public, self._eph_secret = _box.keypair()
        self._to_server = _box.shared_key(server_public, self._eph_secret)   # C' <-> S
        self._session = None

    def hello(self):
        """The CURVE_HELLO body, the first frame on the connection."""
        nonce = os.urandom(8)
        boxed = _box.seal(self._to_server, _N_HELLO + nonce, bytes(_HELLO_PAD))
        return bytes([p.CURVE_HELLO]) + p.MAGIC + bytes([p.VERSION]) + self._eph_public + nonce + boxed

    def initiate(self, welcome):
        """Check the WELCOME body and return the INITIATE body.

        Raises ProtocolError(AUTH) when the WELCOME was not made by the holder
        of the server's secret key.
        """
        nonce, boxed = _fields(welcome, (8, KEY + MAC), "WELCOME")
        server_eph = _box.unseal(self._to_server, _N_WELCOME + nonce, boxed)
        if server_eph is None:
            raise _auth("the directory's WELCOME does not open: it does not hold the secret key "
                        "of the public key given as directory_key (wrong key, or someone in between)")
        try:
            self._session = _box.shared_key(server_eph, self._eph_secret)   # C' <-> S'
        except ValueError:
            raise _auth("the directory sent a degenerate one-connection key") from None
        vouch_nonce = os.urandom(8)
        vouch = _box.seal(_box.shared_key(server_eph, self._secret), _N_VOUCH + vouch_nonce,   # C -> S'
                          self._eph_public + self._server)
        nonce = os.urandom(8)
        boxed = _box.seal(self._session, _N_INITIATE + nonce, self._public + vouch_nonce + vouch)
        return bytes([p.INITIATE]) + nonce + boxed

    def ready(self, ready):
        """Check the READY body and return the connection's :class:`Channel`."""
        nonce, boxed = _fields(ready, (8, MAC), "READY")
        if self._session is None or _box.unseal(self._session, _N_READY + nonce, boxed) is None:
            raise _auth("the directory's READY does not open")
        self._eph_secret = None
        return Channel(self._session, _N_TO_SERVER, _N_TO_CLIENT, p.BOX, p.BOX_REPLY)


class ServerHandshake:
    """The server's side: holds the server's secret key and the keys it admits.

    ``allowed`` is a set of 32-byte client public keys, or None to admit any
    client that completes the handshake (encryption, and the client's key
    known, without a list).
    """

    def __init__(self, server_secret, allowed=None):
        self._secret = server_secret
        self._public = _box.public_of(server_secret)
        self._allowed = allowed
        self._client_eph = None
        self._eph_secret = None
        self._session = None

    def welcome(self, hello):
        """Check a CURVE_HELLO body and return the WELCOME body."""
        if len(hello) != 1 + len(p.MAGIC) + 1 + KEY + 8 + _HELLO_PAD + MAC:
            raise p.ProtocolError(p.BAD_HELLO, f"CURVE_HELLO is {len(hello)} bytes long, "
                                               f"not {1 + len(p.MAGIC) + 1 + KEY + 8 + _HELLO_PAD + MAC}")
        magic, version, client_eph, nonce, boxed = _fields(
            hello, (len(p.MAGIC), 1, KEY, 8, _HELLO_PAD + MAC), "CURVE_HELLO")
        if magic != p.MAGIC:
            raise p.ProtocolError(p.BAD_HELLO, f"CURVE_HELLO magic is {magic!r}, expected {p.MAGIC!r}")
        if version[0] != p.VERSION:
            raise p.ProtocolError(p.BAD_HELLO, f"protocol version {version[0]} is not supported "
                                               f"(only {p.VERSION})")
        try:
            to_client = _box.shared_key(client_eph, self._secret)                # C' <-> S
        except ValueError:
            raise _auth("CURVE_HELLO carries a degenerate key") from None
        if _box.unseal(to_client, _N_HELLO + nonce, boxed) != bytes(_HELLO_PAD):
            raise _auth("CURVE_HELLO does not open: the client was given the wrong public key "
                        "for this directory")
        eph_public, self._eph_secret = _box.keypair()
        self._client_eph = client_eph
        self._session = _box.shared_key(client_eph, self._eph_secret)           # C' <-> S'
        nonce = os.urandom(8)
        return bytes([p.WELCOME]) + nonce + _box.seal(to_client, _N_WELCOME + nonce, eph_public)

    def ready(self, initiate):
        """Check an INITIATE body; return ``(READY body, Channel, client public key)``.

        Raises ProtocolError(AUTH) when the client does not prove its key or
        its key is not allowed.
        """
        if self._session is None:
            raise _auth("INITIATE before CURVE_HELLO")
        nonce, boxed = _fields(initiate, (8, KEY + 8 + 2 * KEY + MAC + MAC), "INITIATE")
        plain = _box.unseal(self._session, _N_INITIATE + nonce, boxed)
        if plain is None:
            raise _auth("INITIATE does not open")
        client, vouch_nonce, vouch = plain[:KEY], plain[KEY:KEY + 8], plain[KEY + 8:]
        try:
            vouched = _box.unseal(_box.shared_key(client, self._eph_secret), _N_VOUCH + vouch_nonce,
                                  vouch)                                        # C -> S'
        except ValueError:
            vouched = None
        if vouched != self._client_eph + self._public:
            raise _auth("the client does not prove that it holds the secret key of the public key it "
                        "presents")
        if self._allowed is not None and client not in self._allowed:
            # the key itself is not in the refusal: it goes out in clear, and
            # the handshake keeps C secret from onlookers (the server logs it)
            raise Refused("this client's key is not allowed by this directory", client)
        self._eph_secret = None
        nonce = os.urandom(8)
        ready = bytes([p.READY]) + nonce + _box.seal(self._session, _N_READY + nonce, b"")
        return ready, Channel(self._session, _N_TO_CLIENT, _N_TO_SERVER, p.BOX_REPLY, p.BOX), client
