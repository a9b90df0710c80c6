# cython: language_level=3
"""Public-key boxes from libsodium, for the secure directory connection.

A box is what libzmq's CURVE is made of: X25519 key agreement, then
XSalsa20-Poly1305 authenticated encryption with a 24-byte nonce.  Keys here
are the raw 32 bytes (the directory layer converts from Z85).  The handshake
and framing that use these live in pyzmq/dirsecure.py; this file only wraps
the primitives, with every length checked so that bad input is a ValueError
and never a memory error.
"""

from libc.stdlib cimport malloc, free
from sodium cimport *

KEY_BYTES = crypto_box_PUBLICKEYBYTES
NONCE_BYTES = crypto_box_NONCEBYTES
MAC_BYTES = crypto_box_MACBYTES

if sodium_init() < 0:
    raise ImportError("libsodium failed to initialise")


cdef int _need(bytes value, Py_ssize_t n, str what) except -1:
    if len(value) != n:
        raise ValueError(f"{what} must be {n} bytes, not {len(value)}")
    return 0


def keypair():
    """A fresh keypair ``(public, secret)``, 32 bytes each."""
    cdef unsigned char pk[crypto_box_PUBLICKEYBYTES]
    cdef unsigned char sk[crypto_box_SECRETKEYBYTES]
    crypto_box_keypair(pk, sk)
    try:
        return pk[:crypto_box_PUBLICKEYBYTES], sk[:crypto_box_SECRETKEYBYTES]
    finally:
        sodium_memzero(sk, crypto_box_SECRETKEYBYTES)


def public_of(bytes secret):
    """The public key that belongs to a 32-byte secret key."""
    _need(secret, crypto_box_SECRETKEYBYTES, "a secret key")
    cdef unsigned char pk[crypto_box_PUBLICKEYBYTES]
    if crypto_scalarmult_base(pk, secret) != 0:
        raise ValueError("not a usable secret key")
    return pk[:crypto_box_PUBLICKEYBYTES]


def shared_key(bytes public, bytes secret):
    """The key a box between ``public``'s owner and ``secret``'s owner uses.

    Either side computes the same key from its secret and the other's public
    key.  Raises ValueError for a public key that gives a degenerate result.
    """
    _need(public, crypto_box_PUBLICKEYBYTES, "a public key")
    _need(secret, crypto_box_SECRETKEYBYTES, "a secret key")
    cdef unsigned char k[crypto_box_BEFORENMBYTES]
    if crypto_box_beforenm(k, public, secret) != 0:
        raise ValueError("the public key is degenerate (a small-order point)")
    try:
        return k[:crypto_box_BEFORENMBYTES]
    finally:
        sodium_memzero(k, crypto_box_BEFORENMBYTES)


def seal(bytes key, bytes nonce, bytes plain):
    """Encrypt and authenticate ``plain``; the result is 16 bytes longer."""
    _need(key, crypto_box_BEFORENMBYTES, "a shared key")
    _need(nonce, crypto_box_NONCEBYTES, "a nonce")
    cdef Py_ssize_t n = len(plain) + crypto_box_MACBYTES
    cdef unsigned char *buf = <unsigned char *>malloc(n)
    if buf == NULL:
        raise MemoryError()
    try:
        crypto_box_easy_afternm(buf, plain, len(plain), nonce, key)
        return buf[:n]
    finally:
        free(buf)


def unseal(bytes key, bytes nonce, bytes boxed):
    """Check and decrypt a box made by :func:`seal`; None if it does not open.

    It does not open when the key or nonce differ or a byte was changed.
    """
    _need(key, crypto_box_BEFORENMBYTES, "a shared key")
    _need(nonce, crypto_box_NONCEBYTES, "a nonce")
    cdef Py_ssize_t n = len(boxed) - crypto_box_MACBYTES
    if n < 0:
        return None
    cdef unsigned char *buf = <unsigned char *>malloc(n + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        if crypto_box_open_easy_afternm(buf, boxed, len(boxed), nonce, key) != 0:
            return None
        return buf[:n]
    finally:
        free(buf)
