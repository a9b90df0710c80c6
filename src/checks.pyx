# Argument validation: the one home of the checks of timeouts, marks,
# scopes, styles, keys and ids.  The C paths use the cdef forms; the wiring
# layer, asyncio and the directory client call the def forms, so the same
# bad value gets the same exception and message everywhere.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

SCOPE_LOCAL = 0
SCOPE_GLOBAL = 2
SCOPE_NAMES = {SCOPE_LOCAL: "local", SCOPE_GLOBAL: "global"}

STYLE_DATA_DISTRIBUTION = DATA_DISTRIBUTION
STYLE_LOAD_BALANCING = LOAD_BALANCING
STYLE_NAMES = {STYLE_DATA_DISTRIBUTION: "data distribution",
               STYLE_LOAD_BALANCING: "load balancing"}


cdef double _seconds(object timeout) except -2.0:
    """A timeout's length in seconds, -1.0 for 'wait forever' (None or
    infinity).  TypeError when it is not a number (a bool is not one),
    ValueError when it is negative or NaN."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    cdef double t
    try:
        t = timeout
    except OverflowError:
        t = INFINITY if timeout > 0 else -INFINITY
    if not t >= 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
    if t == INFINITY:
        return -1.0
    return t


cdef inline int _check_timeout(object timeout) except -1:
    """Reject a bad timeout even when the call will not wait (and so never
    computes a deadline): the same error on every path.  Free for None,
    one comparison for a float."""
    if timeout is None:
        return 0
    if PyFloat_CheckExact(timeout) and PyFloat_AS_DOUBLE(timeout) >= 0:
        return 0                # NaN fails the comparison: checked below
    _seconds(timeout)
    return 0


def check_timeout(timeout):
    """A call's timeout: None (or infinity) for no limit, else seconds as a
    float >= 0.  TypeError/ValueError as the C calls raise them."""
    cdef double t = _seconds(timeout)
    return None if t < 0 else t


def check_seconds(value, str what, *, bint positive=False, at_most=None):
    """A duration setting (`what`, e.g. "linger") in seconds as a float:
    a number (not a bool), >= 0 (> 0 and finite with positive=True), at
    most `at_most` seconds when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{what} of {value} seconds is too large") from None
    if positive:
        if not (seconds > 0 and seconds != INFINITY):
            raise ValueError(f"{what} must be a positive, finite number of seconds, not {value!r}")
    elif not seconds >= 0:
        raise ValueError(f"{what} must be >= 0 seconds, not {value!r}")
    if at_most is not None and seconds > at_most:
        limit = "a day (86400 s)" if at_most == 86400 else f"{at_most:g} s"
        raise ValueError(f"{what} must be at most {limit}, not {value}")
    return seconds


def check_hwm(hwm):
    """A high-water mark in messages: an int from 0 (no limit) to 2**31-1."""
    if isinstance(hwm, bool) or not isinstance(hwm, int):
        raise TypeError(f"hwm must be an int, not {type(hwm).__name__}")
    if not 0 <= hwm < 2**31:
        raise ValueError(f"hwm must be from 0 (no limit) to 2**31-1 messages, not {hwm}")
    return hwm


def check_scope(scope):
    """pyzmq.SCOPE_LOCAL or pyzmq.SCOPE_GLOBAL."""
    if isinstance(scope, bool) or not isinstance(scope, int):
        raise TypeError(f"scope must be pyzmq.SCOPE_LOCAL or pyzmq.SCOPE_GLOBAL, "
                        f"not {type(scope).__name__}")
    if scope not in SCOPE_NAMES:
        raise ValueError(f"unknown scope {scope}: use pyzmq.SCOPE_LOCAL or pyzmq.SCOPE_GLOBAL")
    return scope


def check_style(style):
    """pyzmq.STYLE_DATA_DISTRIBUTION or pyzmq.STYLE_LOAD_BALANCING."""
    if isinstance(style, bool) or not isinstance(style, int):
        raise TypeError(f"style must be pyzmq.STYLE_DATA_DISTRIBUTION or "
                        f"pyzmq.STYLE_LOAD_BALANCING, not {type(style).__name__}")
    if style not in STYLE_NAMES:
        raise ValueError(f"unknown exchange style {style}: use pyzmq.STYLE_DATA_DISTRIBUTION "
                         f"or pyzmq.STYLE_LOAD_BALANCING")
    return style


_Z85_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _check_z85_key(key, str what):
    """A CURVE key in Z85 (str of 40 characters, surrounding whitespace
    dropped: a key read from a file ends in a newline), or
    ValueError/TypeError."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str of 40 Z85 characters, not {type(key).__name__}")
    key = key.strip()
    if len(key) != 40:
        raise ValueError(f"{what} must be 40 Z85 characters (a CURVE key), "
                         f"not {len(key)} characters")
    bad = next((ch for ch in key if ch not in _Z85_CHARS), None)
    if bad is not None:
        raise ValueError(f"{what} holds {bad!r}, which is not a Z85 character")
    return key


def check_curve_args(secret_key, allowed_keys):
    """Validate an instance's secret_key/allowed_keys; returns (secret,
    [32-byte keys] or None)."""
    if secret_key is None:
        if allowed_keys is not None:
            raise ValueError("allowed_keys needs secret_key: only an instance whose "
                             "listeners are CURVE servers can check client keys")
        return None, None
    secret_key = _check_z85_key(secret_key, "secret_key")
    if not zmq_has(b"curve"):
        raise Error("secret_key given, but this libzmq was built without CURVE")
    curve_public(secret_key)       # ValueError if it is not a key
    if allowed_keys is None:
        return secret_key, None
    if isinstance(allowed_keys, (str, bytes)):
        raise ValueError("allowed_keys must be an iterable of public keys (Z85 str), "
                         "not a single str or bytes")
    try:
        keys = list(allowed_keys)
    except TypeError:
        raise TypeError(f"allowed_keys must be an iterable of public keys (Z85 str) or "
                        f"None, not {type(allowed_keys).__name__}") from None
    decoded = []
    for k in keys:
        decoded.append(_z85_decode(_check_z85_key(k, "allowed key")))
    return secret_key, decoded


cdef extern from "Python.h":
    bint _PyLong_CheckExact "PyLong_CheckExact" (object o)
    Py_ssize_t _PyLong_AsSsize_t "PyLong_AsSsize_t" (object o) noexcept
    void _PyErr_Clear "PyErr_Clear" () noexcept


cdef inline Py_ssize_t _id(object o, str what) except? -1:
    """An exchange or queue id from the user: TypeError if not an integer,
    ValueError if no such id could exist.  An int is read directly (no
    try block to set up on the send path); anything else, and -1 (which
    may be an overflow), goes through _id_slow."""
    cdef Py_ssize_t v
    if _PyLong_CheckExact(o):
        v = _PyLong_AsSsize_t(o)
        if v != -1:
            return v
        _PyErr_Clear()
    return _id_slow(o, what)


cdef Py_ssize_t _id_slow(object o, str what) except? -1:
    cdef Py_ssize_t v
    if isinstance(o, (str, bytes)):
        # the commonest mistake: the name where the id goes
        raise TypeError(f"{what} id must be the int create_{what}() returned, not the "
                        f"name {o!r}: keep the id, e.g. eid = zmq.create_{what}({o!r})")
    try:
        v = o
    except OverflowError:
        raise ValueError(f"unknown {what} id {o}") from None
    except TypeError:
        raise TypeError(f"{what} id must be the int create_{what}() returned, "
                        f"not {type(o).__name__}") from None
    return v
