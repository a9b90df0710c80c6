"""The wire protocol of the name directory (``zmq_server``), see docs/directory.md.

This module is pure: it turns messages into bytes and bytes into messages and
does no I/O.  The server, the client and the wiring layer share it.

A frame is a 4-byte big-endian body length followed by the body; the body is a
command byte followed by the command's fields.  :func:`encode_frame` builds a
frame, :func:`body_length` checks a frame header, :func:`decode_request` and
:func:`decode_reply` parse bodies.  Decoding failures raise
:class:`ProtocolError`, a :class:`ValueError` that carries the error code the
server answers with.

The validators (:func:`validate_name`, :func:`validate_address`,
:func:`validate_key`, :func:`validate_kind`) are public so the wiring layer can
check user input with the same rules and messages the directory applies.
"""

import re
import struct
from typing import NamedTuple, Union

DEFAULT_PORT = 5682

# Frame and field limits.
HEADER_SIZE = 4
MAX_BODY = 4096
MAX_NAME = 255          # bytes of UTF-8
MAX_ADDRESS = 255       # bytes of UTF-8
KEY_LENGTH = 40         # Z85 characters of a CURVE public key
MAX_STR_FIELD = 0xFFFF  # what a 2-byte length prefix can express
MAX_ERROR_TEXT = 1024   # bytes; longer error messages are cut

# Server limits.
MAX_NAMES_PER_CONNECTION = 10_000
MAX_CONNECTIONS = 1024
FRAME_TIMEOUT = 10.0    # seconds to complete a frame once begun (and to send HELLO)

# TCP keepalive the server applies to every connection.
KEEPALIVE_IDLE = 2
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 3

# HELLO contents.
MAGIC = b"ZMQW"
VERSION = 1

# Request command bytes.
HELLO = 0x01
REGISTER = 0x02
LOOKUP = 0x03
UNREGISTER = 0x04
PING = 0x05
CURVE_HELLO = 0x06      # secure connections only, see pyzmq/dirsecure.py
INITIATE = 0x07
BOX = 0x08

# Reply command bytes.
OK = 0x80
FOUND = 0x81
ERROR = 0x82
PONG = 0x83
WELCOME = 0x84          # secure connections only
READY = 0x85
BOX_REPLY = 0x86

# Error codes carried by ERROR replies.
MALFORMED = 1
UNKNOWN_COMMAND = 2
DUPLICATE = 3
NOT_FOUND = 4
NOT_OWNER = 5
BAD_HELLO = 6
LIMIT = 7
AUTH = 8

ERROR_NAMES = {
    MALFORMED: "MALFORMED",
    UNKNOWN_COMMAND: "UNKNOWN_COMMAND",
    DUPLICATE: "DUPLICATE",
    NOT_FOUND: "NOT_FOUND",
    NOT_OWNER: "NOT_OWNER",
    BAD_HELLO: "BAD_HELLO",
    LIMIT: "LIMIT",
    AUTH: "AUTH",
}

# Kinds of global objects.
EXCHANGE = "E"
QUEUE = "Q"
KINDS = (EXCHANGE, QUEUE)

Z85_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_SET = frozenset(Z85_ALPHABET)

_LENGTH = struct.Struct(">I")
_STRLEN = struct.Struct(">H")


class ProtocolError(ValueError):
    """Bytes that break the protocol.  ``code`` is the ERROR code to answer with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# Messages

class Hello(NamedTuple):
    version: int = VERSION


class Register(NamedTuple):
    kind: str
    name: str
    address: str
    key: str = ""


class Lookup(NamedTuple):
    name: str


class Unregister(NamedTuple):
    name: str


class Ping(NamedTuple):
    pass


class Ok(NamedTuple):
    pass


class Found(NamedTuple):
    kind: str
    address: str
    key: str = ""


class ErrorReply(NamedTuple):
    code: int
    message: str


class Pong(NamedTuple):
    pass


Request = Union[Hello, Register, Lookup, Unregister, Ping]
Reply = Union[Ok, Found, ErrorReply, Pong]


# ---------------------------------------------------------------------------
# Validators

def _utf8(value, what):
    """Return ``value`` (a str) as UTF-8 bytes, or raise TypeError/ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {value!r} cannot be encoded as UTF-8") from None


def validate_kind(kind):
    """Check an object kind: ``"E"`` (exchange) or ``"Q"`` (queue).  Return it."""
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, not {type(kind).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not 'E' (exchange) or 'Q' (queue)")
    return kind


def validate_name(name):
    """Check a global object name and return it.

    A name is a str of 1 to 255 bytes once encoded as UTF-8, with no control
    characters (code points below 0x20, and 0x7f).  Raises TypeError when
    ``name`` is not a str and ValueError, saying what is wrong, otherwise.
    """
    raw = _utf8(name, "name")
    if not raw:
        raise ValueError("name is empty; a global name needs 1 to 255 bytes")
    if len(raw) > MAX_NAME:
        raise ValueError(f"name is {len(raw)} bytes long in UTF-8; the limit is {MAX_NAME}")
    for i, ch in enumerate(name):
        if ord(ch) < 0x20 or ch == "\x7f":
            raise ValueError(f"name {name!r} holds control character {ch!r} at position {i}")
    return name


_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9._-]+)?\]\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_WILDCARDS = ("*", "0.0.0.0", "[::]", "[0:0:0:0:0:0:0:0]")


def validate_address(address):
    """Check the ``host:port`` address of a global object and return it.

    The host is a host name, an IPv4 address or a bracketed IPv6 address
    (``[::1]:5555``); it may not be a wildcard (``*``, ``0.0.0.0``, ``[::]``)
    since peers must be able to connect to it.  The port is 1-65535 and the
    whole address 1 to 255 bytes.  Raises TypeError when ``address`` is not a
    str and ValueError, saying what is wrong, otherwise.
    """
    raw = _utf8(address, "address")
    if not raw:
        raise ValueError("address is empty; expected host:port")
    if len(raw) > MAX_ADDRESS:
        raise ValueError(f"address is {len(raw)} bytes long; the limit is {MAX_ADDRESS}")
    if "://" in address:
        raise ValueError(f"address {address!r} must be host:port, without a transport prefix such as tcp://")
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} has no port; expected host:port")
    if not host:
        raise ValueError(f"address {address!r} has no host; expected host:port")
    if host in _WILDCARDS:
        raise ValueError(f"address {address!r} has wildcard host {host!r}; "
                         "register an address that peers can connect to")
    if host.startswith("["):
        if not _IPV6.match(host):
            raise ValueError(f"address {address!r} has a malformed bracketed IPv6 host")
    elif ":" in host:
        raise ValueError(f"address {address!r}: an IPv6 host must be written in brackets, e.g. [::1]:5555")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"address {address!r}: host {host!r} may only hold letters, digits, '.', '-' and '_'")
    if not _PORT.match(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: port {port!r} is not a number from 1 to 65535")
    return address


def validate_key(key):
    """Check a CURVE public key: empty (no encryption) or 40 Z85 characters.  Return it."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if key == "":
        return key
    if len(key) != KEY_LENGTH:
        raise ValueError(f"key is {len(key)} characters long; a Z85 CURVE key has {KEY_LENGTH} (or empty for none)")
    bad = next((ch for ch in key if ch not in _Z85_SET), None)
    if bad is not None:
        raise ValueError(f"key holds {bad!r}, which is not a Z85 character")
    return key


# ---------------------------------------------------------------------------
# Encoding

def pack_str(value):
    """Encode a ``str`` field (a str or bytes) with its 2-byte length prefix.

    Only the prefix limit is enforced here; field limits are the validators' job.
    """
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > MAX_STR_FIELD:
        raise ValueError(f"string field is {len(raw)} bytes; at most {MAX_STR_FIELD} fit")
    return _STRLEN.pack(len(raw)) + raw


def encode_frame(body):
    """Prefix ``body`` with its length; the body must hold 1 to 4096 bytes."""
    if not 1 <= len(body) <= MAX_BODY:
        raise ValueError(f"frame body is {len(body)} bytes; it must hold 1 to {MAX_BODY}")
    return _LENGTH.pack(len(body)) + bytes(body)


def body_length(header):
    """Return the body length a 4-byte frame header announces.

    Raises ProtocolError(MALFORMED) when it is 0 or above 4096: such a stream
    cannot be resynchronised.
    """
    if len(header) != HEADER_SIZE:
        raise ValueError(f"a frame header is {HEADER_SIZE} bytes, got {len(header)}")
    (length,) = _LENGTH.unpack(header)
    if not 1 <= length <= MAX_BODY:
        raise ProtocolError(MALFORMED, f"frame length {length} is outside 1..{MAX_BODY}")
    return length


def encode_request(request):
    """Return the body of a request message, after checking its fields."""
    if isinstance(request, Hello):
        return bytes([HELLO]) + MAGIC + bytes([request.version])
    if isinstance(request, Register):
        return _body(bytes([REGISTER, ord(validate_kind(request.kind))]),
                     validate_name(request.name), validate_address(request.address),
                     validate_key(request.key))
    if isinstance(request, Lookup):
        return _body(bytes([LOOKUP]), validate_name(request.name))
    if isinstance(request, Unregister):
        return _body(bytes([UNREGISTER]), validate_name(request.name))
    if isinstance(request, Ping):
        return bytes([PING])
    raise TypeError(f"not a request message: {request!r}")


def encode_reply(reply):
    """Return the body of a reply message.  An overlong error text is cut."""
    if isinstance(reply, Ok):
        return bytes([OK])
    if isinstance(reply, Found):
        return _body(bytes([FOUND, ord(validate_kind(reply.kind))]),
                     validate_address(reply.address), validate_key(reply.key))
    if isinstance(reply, ErrorReply):
        if not 0 <= reply.code <= 255:
            raise ValueError(f"error code {reply.code} does not fit a byte")
        text = reply.message.encode("utf-8", "replace")[:MAX_ERROR_TEXT]
        return _body(bytes([ERROR, reply.code]), text.decode("utf-8", "ignore"))
    if isinstance(reply, Pong):
        return bytes([PONG])
    raise TypeError(f"not a reply message: {reply!r}")


def _body(head, *strings):
    return head + b"".join(pack_str(s) for s in strings)


# ---------------------------------------------------------------------------
# Decoding

class _Fields:
    """Reads fields off a body; every shortfall is a MALFORMED ProtocolError."""

    def __init__(self, body, what):
        self.body = bytes(body)
        self.pos = 1  # past the command byte
        self.what = what

    def _take(self, n, field):
        end = self.pos + n
        if end > len(self.body):
            raise ProtocolError(MALFORMED, f"{self.what} body ends inside its {field}")
        chunk = self.body[self.pos:end]
        self.pos = end
        return chunk

    def u8(self, field):
        return self._take(1, field)[0]

    def raw(self, n, field):
        return self._take(n, field)

    def text(self, field):
        (n,) = _STRLEN.unpack(self._take(2, f"{field} length"))
        raw = self._take(n, field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(MALFORMED, f"{self.what} {field} is not valid UTF-8") from None

    def end(self):
        extra = len(self.body) - self.pos
        if extra:
            raise ProtocolError(MALFORMED, f"{self.what} body has {extra} unexpected trailing bytes")


def _checked(validator, value, what):
    try:
        return validator(value)
    except ValueError as exc:
        raise ProtocolError(MALFORMED, f"{what}: {exc}") from None


def _kind(byte, what):
    return _checked(validate_kind, chr(byte), what)


def decode_request(body):
    """Parse a request body into a message.

    Raises ProtocolError: UNKNOWN_COMMAND for a command byte that is not a
    request, BAD_HELLO for a HELLO with the wrong magic or version (or that
    does not parse), MALFORMED for anything else that breaks the protocol.
    """
    if not body:
        raise ProtocolError(MALFORMED, "empty body")
    command = body[0]
    if command == HELLO:
        f = _Fields(body, "HELLO")
        try:
            magic = f.raw(len(MAGIC), "magic")
            version = f.u8("version")
            f.end()
        except ProtocolError as exc:
            raise ProtocolError(BAD_HELLO, str(exc)) from None
        if magic != MAGIC:
            raise ProtocolError(BAD_HELLO, f"HELLO magic is {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise ProtocolError(BAD_HELLO, f"protocol version {version} is not supported (only {VERSION})")
        return Hello(version)
    if command == REGISTER:
        f = _Fields(body, "REGISTER")
        kind = f.u8("kind")
        name = f.text("name")
        address = f.text("address")
        key = f.text("key")
        f.end()
        return Register(_kind(kind, "REGISTER"), _checked(validate_name, name, "REGISTER"),
                        _checked(validate_address, address, "REGISTER"),
                        _checked(validate_key, key, "REGISTER"))
    if command in (LOOKUP, UNREGISTER):
        what = "LOOKUP" if command == LOOKUP else "UNREGISTER"
        f = _Fields(body, what)
        name = f.text("name")
        f.end()
        name = _checked(validate_name, name, what)
        return Lookup(name) if command == LOOKUP else Unregister(name)
    if command == PING:
        _Fields(body, "PING").end()
        return Ping()
    raise ProtocolError(UNKNOWN_COMMAND, f"command byte 0x{command:02x} is not a request")


def decode_reply(body):
    """Parse a reply body into a message; raises ProtocolError(MALFORMED) if it does not parse."""
    if not body:
        raise ProtocolError(MALFORMED, "empty body")
    command = body[0]
    if command == OK:
        _Fields(body, "OK").end()
        return Ok()
    if command == FOUND:
        f = _Fields(body, "FOUND")
        kind = f.u8("kind")
        address = f.text("address")
        key = f.text("key")
        f.end()
        return Found(_kind(kind, "FOUND"), _checked(validate_address, address, "FOUND"),
                     _checked(validate_key, key, "FOUND"))
    if command == ERROR:
        f = _Fields(body, "ERROR")
        code = f.u8("code")
        message = f.text("message")
        f.end()
        return ErrorReply(code, message)
    if command == PONG:
        _Fields(body, "PONG").end()
        return Pong()
    raise ProtocolError(MALFORMED, f"command byte 0x{command:02x} is not a reply")
